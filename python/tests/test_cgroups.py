"""Limits, cgroup figures, tree signals and freezing, where the agent has
cgroups (the "cgroups" capability); without them the same calls are
FailedPrecondition, never ignored."""
from __future__ import annotations

import asyncio
import signal
import time

import pytest

import sandbox_agent as sa
from sandbox_agent import AsyncAgent, Limits


async def test_limits_and_figures(agent: AsyncAgent) -> None:
    if "cgroups" not in agent.capabilities:
        with pytest.raises(sa.FailedPrecondition):
            await agent.run("true", limits=Limits(pids_max=8))
        pytest.skip("this agent has no cgroups: limits are refused, as checked")
    # pids.max 8: a shell that forks 20 background sleeps meets the limit
    # (where the pids controller is enabled; else the refusal names it).
    try:
        r = await agent.run("sh", ["-c", "for i in $(seq 20); do sleep 5 & done; echo started"],
                            limits=Limits(pids_max=8), timeout=30)
        assert r.exit_code != 0 or b"fork" in r.stderr.lower() or b"resource" in r.stderr.lower()
    except sa.FailedPrecondition as e:
        assert "pids" in e.message
    p = await agent.start_process("sh", ["-c", "sleep 30 & sleep 30 & wait"])
    info = await agent.get_process(p.pid)
    deadline = time.monotonic() + 60  # until the shell has forked both sleeps
    while info.pids_current < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        info = await agent.get_process(p.pid)
    assert info.cgroup and info.pids_current == 3
    # A tree signal reaches every member, whatever its group.
    await agent.send_signal(p.pid, signal.SIGKILL, tree=True)
    x = await agent.wait(p.pid, request_timeout=30)
    assert x.signal == signal.SIGKILL
    # The killed sleeps leave soon after their shell (a machine under load
    # may take seconds); the count is the cgroup's now, also after the exit.
    deadline = time.monotonic() + 60
    while (await agent.get_process(p.pid)).pids_current != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert (await agent.get_process(p.pid)).pids_current == 0


async def test_freeze_and_thaw_processes(agent: AsyncAgent) -> None:
    if "cgroups" not in agent.capabilities:
        with pytest.raises(sa.FailedPrecondition):
            await agent.freeze_processes(thaw_after=5)
        pytest.skip("this agent has no cgroups: freezing is refused, as checked")
    p = await agent.start_process("sh", ["-c", "while :; do echo t; sleep 0.02; done"])
    try:
        await agent.freeze_processes(thaw_after=30)
        before = (await agent.get_process(p.pid)).next_sequence
        await asyncio.sleep(0.3)
        assert (await agent.get_process(p.pid)).next_sequence == before, "output while frozen"
        assert (await agent.ping(b"alive")).payload == b"alive"  # the agent is not frozen
        await agent.thaw_processes()
        deadline = time.monotonic() + 60
        while (await agent.get_process(p.pid)).next_sequence <= before and \
                time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert (await agent.get_process(p.pid)).next_sequence > before
    finally:
        await agent.send_signal(p.pid, signal.SIGKILL, group=True)
