"""Lifecycle: quiesce (only as a dry run here: a real freeze would stop
every writer of this machine's disk), thaw, restored and watch_lifecycle."""
from __future__ import annotations

import asyncio

import pytest
from conftest import AgentProc

import sandbox_agent as sa
from sandbox_agent import Agent, AsyncAgent


async def test_quiesce_dry_run_and_thaw(agent: AsyncAgent) -> None:
    q = await agent.quiesce(dry_run=True)
    assert all(m.startswith("/") for m in q.frozen)
    assert (await agent.info()).frozen == []  # nothing was frozen
    assert await agent.thaw() == []           # nothing to thaw is no error
    with pytest.raises(sa.InvalidArgument):
        await agent.quiesce(["relative/path"], dry_run=True)


async def test_restored_and_its_event(agent: AsyncAgent) -> None:
    before = await agent.info()
    async with agent.watch_lifecycle() as events:
        r = await agent.restored(generation=before.generation + 7,
                                 env={"SA_RESTORED_MARK": "yes"})
        assert r.previous_generation == before.generation and r.thawed == []
        assert r.clock_step_nano == 0 and r.hook_failures == []
        ev = await asyncio.wait_for(events.__anext__(), 30)
    assert ev.kind == "restored" and ev.source == "request"
    assert ev.generation == before.generation + 7
    after = await agent.info()
    assert after.generation == before.generation + 7 and after.restores == before.restores + 1
    # The environment given is every later process's.
    assert (await agent.run("sh", ["-c", "echo $SA_RESTORED_MARK"])).stdout == b"yes\n"
    with pytest.raises(sa.InvalidArgument):
        await agent.restored(entropy=b"too short")
    with pytest.raises(sa.InvalidArgument):
        await agent.restored(unix_time=0.5)  # before 2000: refused, the clock untouched


def test_sync_lifecycle(agent_proc: AgentProc) -> None:
    with Agent.connect(agent_proc.address) as agent:
        assert isinstance(agent.quiesce(dry_run=True).frozen, list)
        assert agent.thaw() == []
        gen = agent.info().generation
        assert agent.restored(generation=gen + 1).previous_generation == gen
