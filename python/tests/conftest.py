"""Fixtures: the real agent (AGENT_BIN) on a temporary unix socket, and
clients connected to it."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import AsyncIterator, Iterator, List

import pytest

from sandbox_agent import AsyncAgent

AGENT_BIN = os.environ.get("AGENT_BIN", "")


class AgentProc:
    """One agent process listening on a unix socket in a directory of its own."""

    def __init__(self, *extra: str) -> None:
        if not AGENT_BIN:
            raise RuntimeError("AGENT_BIN is not set: run these tests through ctest")
        self.dir = tempfile.mkdtemp(prefix="sa-py-")
        self.sock = os.path.join(self.dir, "agent.sock")
        self.address = "unix:" + self.sock
        self.log = os.path.join(self.dir, "agent.log")
        r, w = os.pipe()
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [AGENT_BIN, "--listen", self.address, "--ready-fd", str(w), *extra],
                pass_fds=(w,), stdout=log, stderr=log)
        os.close(w)
        try:
            ready = os.read(r, 16)
        finally:
            os.close(r)
        if not ready:
            self.proc.wait(10)
            raise RuntimeError(f"agent did not start: {open(self.log).read()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode


@pytest.fixture(scope="module")
def agent_proc() -> Iterator[AgentProc]:
    a = AgentProc()
    yield a
    rc = a.stop()
    assert rc == 0, f"agent exited {rc}"


@pytest.fixture
async def agent(agent_proc: AgentProc) -> AsyncIterator[AsyncAgent]:
    async with await AsyncAgent.connect(agent_proc.address, timeout=30) as a:
        yield a


@pytest.fixture
def workspace(agent_proc: AgentProc) -> Iterator[str]:
    """A scratch directory for file tests, removed afterwards."""
    d = tempfile.mkdtemp(prefix="ws-", dir=agent_proc.dir)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def kill_groups(pids: List[int]) -> None:
    """Cleanup for processes left running by a test whose agent is gone."""
    import signal
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
