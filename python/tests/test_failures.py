"""A connection that dies mid-call fails every pending call, never hangs;
a call with a timeout is cancelled on the agent."""
from __future__ import annotations

import asyncio
import gc
import signal
import time
from typing import List

import pytest
from conftest import AgentProc, kill_groups

import sandbox_agent as sa
from sandbox_agent import Agent, AsyncAgent


async def _until(cond, secs: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + secs
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_agent_killed_mid_call(workspace: str) -> None:
    a = AgentProc()
    pids: List[int] = []
    try:
        agent = await AsyncAgent.connect(a.address)
        cats = [await agent.start_process("cat", stdin_mode="pipe") for _ in range(3)]
        pids += [c.pid for c in cats]
        # Each of these exits by itself once the agent's end of its pipes is gone.
        ticker = ["sh", "-c", "while :; do echo x; sleep 0.1; done"]
        pending = [
            *(agent.wait(c.pid) for c in cats),
            agent.follow_output(cats[0].pid),
            *(agent.run(ticker[0], ticker[1:]) for _ in range(20)),
            agent.read_file("/dev/zero", length=64 << 30),
            agent.write_file(f"{workspace}/never", _endless()),
        ]
        tasks = [asyncio.ensure_future(c) for c in pending]
        stream = agent.stream_output(cats[1].pid)
        watch = agent.watch(a.dir)

        async def drain_stream() -> None:
            async for _ in stream:
                pass

        async def drain_watch() -> None:
            async for _ in watch:
                pass
        tasks += [asyncio.ensure_future(drain_stream()), asyncio.ensure_future(drain_watch())]
        await _until(lambda: agent._conn.pending() >= len(tasks))
        await asyncio.sleep(0.3)
        assert not any(t.done() for t in tasks)

        a.proc.kill()
        t0 = time.monotonic()
        done, not_done = await asyncio.wait(tasks, timeout=20)
        assert not not_done, f"{len(not_done)} calls still hang after the agent died"
        for t in done:
            assert isinstance(t.exception(), sa.ConnectionLost), repr(t.exception())
        print(f"\n{len(tasks)} pending calls failed {time.monotonic() - t0:.3f} s after the kill")
        with pytest.raises(sa.ConnectionLost):
            await agent.ping()
        assert isinstance(sa.ConnectionLost("x"), ConnectionError)
        await agent.close()
    finally:
        kill_groups(pids)
        a.proc.wait(10)
        a.stop()


async def _endless():  # type: ignore[no-untyped-def]
    while True:
        yield b"\0" * (1 << 20)
        await asyncio.sleep(0.01)


async def test_client_close_fails_pending_calls(agent_proc: AgentProc) -> None:
    agent = await AsyncAgent.connect(agent_proc.address)
    p = await agent.start_process("sleep", ["30"])
    pending = asyncio.ensure_future(agent.wait(p.pid))
    await asyncio.sleep(0.05)
    await agent.close()
    with pytest.raises(sa.ConnectionLost):
        await asyncio.wait_for(pending, 10)
    async with await AsyncAgent.connect(agent_proc.address) as other:
        assert (await other.get_process(p.pid)).running, "processes outlive connections"
        await other.send_signal(p.pid, signal.SIGKILL)


async def test_timeout_cancels_on_the_agent(agent: AsyncAgent) -> None:
    """request_timeout raises DeadlineExceeded (a TimeoutError) and sends
    Cancel: the agent ends the request (CANCELLED), which is the only way a
    follow of a running process ends before its exit."""
    p = await agent.start_process("sleep", ["30"])
    t0 = time.monotonic()
    with pytest.raises(sa.DeadlineExceeded) as ei:
        await agent.follow_output(p.pid, request_timeout=0.3)
    assert isinstance(ei.value, TimeoutError) and time.monotonic() - t0 < 10
    await _until(lambda: agent._conn.pending() == 0)

    with pytest.raises(TimeoutError):
        await agent.wait(p.pid, request_timeout=0.2)
    await _until(lambda: agent._conn.pending() == 0)

    # Cancelling the awaiting task does the same.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(agent.wait(p.pid), 0.2)
    await _until(lambda: agent._conn.pending() == 0)

    # So does leaving a stream early and dropping it.
    ticker = await agent.start_process("sh", ["-c", "while :; do echo x; sleep 0.05; done"])
    async for _ in agent.stream_output(ticker.pid):
        break
    stream = agent.stream_output(ticker.pid)
    await asyncio.sleep(0.1)
    del stream
    gc.collect()
    await _until(lambda: agent._conn.pending() == 0)

    # The connection is as good as before.
    for pid in (p.pid, ticker.pid):
        await agent.send_signal(pid, signal.SIGKILL, group=True)
        assert (await agent.wait(pid, request_timeout=10)).signal == signal.SIGKILL


async def test_upload_timeout_leaves_nothing(agent: AsyncAgent, workspace: str) -> None:
    """An upload cut by its timeout mid-frame: the frame is finished, the
    upload cancelled on the agent, nothing put in place, and the connection
    carries on."""
    async def slow():  # type: ignore[no-untyped-def]
        for _ in range(1000):
            yield b"y" * (3 << 20)
            await asyncio.sleep(0.02)
    with pytest.raises(sa.DeadlineExceeded):
        await agent.write_file(f"{workspace}/partial", slow(), request_timeout=0.5)
    await _until(lambda: agent._conn.pending() == 0)
    assert (await agent.ping(b"after")).payload == b"after"
    # The temporary file goes once the agent's worker has seen the cancel.
    for _ in range(500):
        if not (await agent.list_directory(workspace)).entries:
            break
        await asyncio.sleep(0.02)
    assert [e.name for e in await agent.list_directory(workspace)] == []


def test_sync_timeout_and_lost_connection() -> None:
    a = AgentProc()
    try:
        with Agent.connect(a.address) as agent:
            p = agent.start_process("sleep", ["30"])
            with pytest.raises(sa.DeadlineExceeded):
                agent.wait(p.pid, request_timeout=0.2)
            agent.send_signal(p.pid, signal.SIGKILL)
            assert agent.wait(p.pid).signal == signal.SIGKILL
            a.proc.kill()
            a.proc.wait(10)
            with pytest.raises(sa.ConnectionLost):
                agent.ping()
    finally:
        a.stop()
