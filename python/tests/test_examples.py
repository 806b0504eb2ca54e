"""The examples of the sandbox SDK's async page, pointed at a local agent:
only the line that connects differs. Then the same calls, blocking."""
from __future__ import annotations

import asyncio
import inspect
import os
import signal
import threading

import pytest
from conftest import AgentProc

import sandbox_agent as sa
from sandbox_agent import Agent, AsyncAgent

TICKER = """
import time
for i in range(5):
    print(f"Processing item {i+1}/5", flush=True)
    time.sleep(0.05)
"""


async def test_run_hello(agent_proc: AgentProc) -> None:
    sandbox = await AsyncAgent.connect(agent_proc.address)
    try:
        result = await sandbox.run("python3", ["-c", "print('hello')"])
        print(result.stdout)
    finally:
        await sandbox.close()
    assert result.stdout == b"hello\n"
    assert result.stderr == b""
    assert result.exit_code == 0 and result.signal == 0 and result.pid > 0


async def test_async_with_and_gather(agent_proc: AgentProc) -> None:
    async def evaluate(i: int) -> int:
        async with await AsyncAgent.connect(agent_proc.address) as sandbox:
            result = await sandbox.run("python3", ["-c", f"print({i} * {i})"])
            return int(result.stdout)

    results = await asyncio.gather(*(evaluate(i) for i in range(6)))
    assert results == [i * i for i in range(6)]


async def test_gather_on_one_connection(agent: AsyncAgent) -> None:
    results = await asyncio.gather(*(agent.run("sh", ["-c", f"echo {i}; echo e{i} >&2; exit {i % 3}"])
                                     for i in range(20)))
    for i, r in enumerate(results):
        assert (r.stdout, r.stderr, r.exit_code) == (f"{i}\n".encode(), f"e{i}\n".encode(), i % 3)


async def test_follow_output_of_a_ticking_process(agent: AsyncAgent) -> None:
    proc = await agent.start_process("python3", ["-c", TICKER])
    print(f"PID: {proc.pid}")
    lines = []
    for event in await agent.follow_output(proc.pid):
        print(event.line, end="")
        lines.append(event.line)
    assert lines == [f"Processing item {i}/5\n" for i in range(1, 6)]


async def test_stream_output_live(agent: AsyncAgent) -> None:
    """Events arrive while the process runs, in order, each with its
    stream, sequence and timestamp; the stream ends with the exit."""
    proc = await agent.start_process("sh", ["-c", "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three"])
    stream = agent.stream_output(proc.pid)
    seen = []
    async for event in stream:
        if not seen:
            assert (await agent.get_process(proc.pid)).running, "first line came before the exit"
        seen.append((event.stream, event.line, event.sequence))
    assert seen == [("stdout", "one\n", 0), ("stderr", "two\n", 4), ("stdout", "three\n", 8)]
    assert stream.exit is not None and stream.exit.exit_code == 0


async def test_http_server_stopped_by_sigterm(agent: AsyncAgent) -> None:
    proc = await agent.start_process("python3", ["-m", "http.server", "0", "--bind", "127.0.0.1"],
                                     env={"PYTHONUNBUFFERED": "1"})
    async with agent.stream_output(proc.pid) as out:
        async for event in out:
            if "Serving HTTP" in event.line:
                break
    await agent.send_signal(proc.pid, signal.SIGTERM)
    exit = await agent.wait(proc.pid, request_timeout=30)
    assert exit.signal == signal.SIGTERM
    assert exit.exit_code == 128 + signal.SIGTERM


async def test_workspace_file(agent: AsyncAgent, workspace: str) -> None:
    path = f"{workspace}/data.csv"
    await agent.write_file(path, b"name,score\nAlice,95\n")
    content = await agent.read_file(path)
    print(content.value.decode())
    assert content == b"name,score\nAlice,95\n" and content.value == content
    await agent.mkdir(f"{workspace}/sub")
    listing = await agent.list_directory(workspace)
    for entry in listing.value.entries:
        print(entry.name, entry.is_dir, entry.size)
    by_name = {e.name: e for e in listing.entries}
    assert sorted(by_name) == ["data.csv", "sub"]
    assert by_name["data.csv"].is_dir is False and by_name["data.csv"].size == 20
    assert by_name["data.csv"].path == path and by_name["data.csv"].mode == 0o644
    assert by_name["sub"].is_dir is True


async def test_info_and_ping(agent: AsyncAgent, agent_proc: AgentProc) -> None:
    info = await agent.info()
    assert info.agent_pid == agent_proc.proc.pid and info.cpu_count > 0
    pong = await agent.ping(b"\x00hi")
    assert pong.payload == b"\x00hi" and pong.round_trip > 0
    assert "process" in agent.capabilities


async def test_stdin_env_cwd_timeout(agent: AsyncAgent, workspace: str) -> None:
    r = await agent.run("sh", ["-c", "cat; echo $FOO; pwd"], stdin=b"in\n", env={"FOO": "bar"},
                        cwd=workspace)
    assert r.stdout == f"in\nbar\n{workspace}\n".encode()
    r = await agent.run("sleep", ["30"], timeout=0.2)
    assert r.timed_out and r.signal == signal.SIGTERM
    p = await agent.start_process("cat", stdin_mode="pipe")
    await agent.write_stdin(p.pid, "piped\n")
    await agent.close_stdin(p.pid)
    assert (await agent.wait(p.pid)).exit_code == 0
    assert [e.line for e in await agent.follow_output(p.pid)] == ["piped\n"]
    assert p.pid in [x.pid for x in await agent.list_processes(include_exited=True)]
    await agent.forget_process(p.pid)
    assert p.pid not in [x.pid for x in await agent.list_processes(include_exited=True)]


async def test_files_round(agent: AsyncAgent, workspace: str, tmp_path: "os.PathLike[str]") -> None:
    local = os.path.join(tmp_path, "local.bin")
    data = os.urandom(3 * 1024 * 1024 + 17)
    with open(local, "wb") as f:
        f.write(data)
    marks = []
    w = await agent.upload(local, f"{workspace}/a/b.bin", make_parents=True,
                           progress=lambda done, total: marks.append((done, total)))
    assert w.bytes_written == len(data) and w.entry is not None and w.entry.size == len(data)
    assert marks[-1] == (len(data), len(data))
    back = os.path.join(tmp_path, "back.bin")
    d = await agent.download(f"{workspace}/a/b.bin", back)
    assert d.size == len(data) and open(back, "rb").read() == data
    assert await agent.read_file(f"{workspace}/a/b.bin", offset=10, length=5) == data[10:15]

    async def pieces():
        for i in range(3):
            yield f"{i};".encode()
    await agent.write_file(f"{workspace}/gen", pieces())
    await agent.write_file(f"{workspace}/gen", [b"x", b"y"], write_mode="append")
    assert await agent.read_file(f"{workspace}/gen") == b"0;1;2;xy"
    e = await agent.rename(f"{workspace}/gen", f"{workspace}/gen2")
    assert e.name == "gen2" and (await agent.stat(f"{workspace}/gen2")).size == 8
    await agent.remove(f"{workspace}/a", recursive=True)
    names = [x.name for x in await agent.list_directory(workspace, depth=3)]
    assert names == ["gen2"]
    # A name that is not UTF-8 goes, and comes back, as its bytes.
    raw = os.fsencode(workspace) + b"/caf\xe9"
    await agent.write_file(raw, b"!")
    [entry] = [e for e in (await agent.list_directory(workspace)).entries if e.name != "gen2"]
    assert entry.name_raw == b"caf\xe9" and entry.raw_path == raw and entry.name == "caf\ufffd"
    assert await agent.read_file(entry.raw_path) == b"!"


async def test_symlink_and_attributes(agent: AsyncAgent, workspace: str) -> None:
    await agent.write_file(f"{workspace}/target", b"abc")
    link = await agent.symlink(f"{workspace}/link", "target")
    assert link.is_symlink and link.symlink_target == "target"
    with pytest.raises(sa.AlreadyExists):
        await agent.symlink(f"{workspace}/link", "elsewhere")
    assert await agent.read_file(f"{workspace}/link") == b"abc"
    e = await agent.set_attributes(f"{workspace}/target", mode=0o600, mtime=1_000_000_000.5)
    assert e.mode == 0o600 and e.mtime == 1_000_000_000.5
    assert (await agent.stat(f"{workspace}/target")).mtime_unix_nano == 1_000_000_000_500_000_000
    os.mkfifo(f"{workspace}/fifo")
    assert (await agent.stat(f"{workspace}/fifo")).type == "fifo"
    null = await agent.stat("/dev/null")
    assert null.type == "char_device" and (null.rdev_major, null.rdev_minor) == (1, 3)


async def _poke(agent: AsyncAgent, path: str) -> None:
    """Writes path every 50 ms: the watch reports nothing from before its
    kernel watches are in place, and no message says when that is."""
    for _ in range(400):
        await agent.write_file(path, b"x")
        await asyncio.sleep(0.05)


async def test_watch(agent: AsyncAgent, workspace: str) -> None:
    async with agent.watch(workspace) as events:
        poker = asyncio.ensure_future(_poke(agent, f"{workspace}/new"))
        try:
            async for ev in events:
                if ev.path == f"{workspace}/new" and ev.kind == "rename":
                    break
        finally:
            poker.cancel()
    # An atomic write: a temporary file renamed into place.
    assert ev.old_path.startswith(f"{workspace}/.sa-tmp") and ev.entry is not None
    assert ev.entry.size == 1


def test_sync_examples(agent_proc: AgentProc, tmp_path: "os.PathLike[str]") -> None:
    ws = os.path.join(agent_proc.dir, "sync-ws")
    with Agent.connect(agent_proc.address) as sandbox:
        result = sandbox.run("python3", ["-c", "print('hello')"])
        assert result.stdout == b"hello\n"
        proc = sandbox.start_process("python3", ["-c", TICKER])
        assert [e.line for e in sandbox.follow_output(proc.pid)] == \
            [f"Processing item {i}/5\n" for i in range(1, 6)]
        proc = sandbox.start_process("python3", ["-m", "http.server", "0", "--bind", "127.0.0.1"],
                                     env={"PYTHONUNBUFFERED": "1"})
        with sandbox.stream_output(proc.pid) as out:
            for event in out:
                if "Serving HTTP" in event.line:
                    break
        sandbox.send_signal(proc.pid, signal.SIGTERM)
        assert sandbox.wait(proc.pid).signal == signal.SIGTERM
        sandbox.write_file(f"{ws}/data.csv", b"name,score\nAlice,95\n", make_parents=True)
        assert sandbox.read_file(f"{ws}/data.csv").value == b"name,score\nAlice,95\n"
        [entry] = sandbox.list_directory(ws).value.entries
        assert (entry.name, entry.is_dir, entry.size) == ("data.csv", False, 20)
        assert sandbox.info().agent_pid == agent_proc.proc.pid
        with sandbox.watch(ws) as events:
            stop = threading.Event()

            def poke() -> None:
                with Agent.connect(agent_proc.address) as other:
                    while not stop.wait(0.05):
                        other.write_file(f"{ws}/poke", b"x")
            t = threading.Thread(target=poke)
            t.start()
            try:
                assert any(ev.path == f"{ws}/poke" for ev in events)
            finally:
                stop.set()
                t.join()
        sandbox.remove(f"{ws}/data.csv")
        try:
            sandbox.read_file(f"{ws}/data.csv")
            raise AssertionError("no error")
        except FileNotFoundError as e:
            assert isinstance(e, sa.NotFound) and e.os_errno == 2


def test_sync_mirrors_async() -> None:
    """Agent has every public method of AsyncAgent, with the same parameters."""
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {n: inspect.signature(f) for n, f in vars(cls).items()
                if callable(f) and not n.startswith("_") and not isinstance(f, staticmethod)}
    a, s = public(AsyncAgent), public(Agent)
    assert sorted(a) == sorted(s)
    for name, sig in a.items():
        assert list(sig.parameters.values()) == list(s[name].parameters.values()), name
    ca = inspect.signature(AsyncAgent.connect)
    cs = inspect.signature(Agent.connect)
    assert list(ca.parameters.values()) == list(cs.parameters.values())
