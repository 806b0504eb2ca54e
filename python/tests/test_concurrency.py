"""Many calls on one connection: the protocol multiplexes by request id.
Times are printed, never asserted."""
from __future__ import annotations

import asyncio
import sys
import time
from typing import Awaitable, TypeVar

from conftest import AgentProc

from sandbox_agent import AsyncAgent

T = TypeVar("T")


async def _bounded(what: str, aw: Awaitable[T], address: str) -> T:
    """aw, or a failure that says what the agent was doing if it takes more
    than two minutes (far beyond any run here)."""
    try:
        return await asyncio.wait_for(aw, 120)
    except asyncio.TimeoutError:
        async with await AsyncAgent.connect(address, timeout=10) as probe:
            info = await probe.info()
            running = [p.pid for p in await probe.list_processes()]
        raise AssertionError(f"{what}: not done in 120 s; the agent has {info.open_connections} "
                             f"connections, {info.running_processes} running processes "
                             f"{running[:20]}, {info.kept_processes} kept") from None


def _say(text: str) -> None:
    sys.stdout.write(f"\n{text}\n")
    sys.stdout.flush()


async def test_1000_runs_on_one_connection(agent: AsyncAgent) -> None:
    t = time.perf_counter()
    results = await _bounded("1000 runs", asyncio.gather(*(agent.run("echo", [str(i)])
                                                           for i in range(1000))), agent.address)
    secs = time.perf_counter() - t
    _say(f"1000 concurrent runs on one connection: {secs:.2f} s ({1000 / secs:.0f} runs/s)")
    # Each answer reached the call that asked for it.
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(1000)]
    assert all(r.exit_code == 0 for r in results)
    assert len({r.pid for r in results}) == 1000
    assert agent._conn.pending() == 0


async def test_one_connection_against_100(agent_proc: AgentProc) -> None:
    """The same 1000 runs over 100 connections (10 each), and 100 runs on one
    connection against 100 runs each on a connection of its own."""
    async def on_own_connection(runs: int) -> list[bytes]:
        async with await AsyncAgent.connect(agent_proc.address) as a:
            return [r.stdout for r in await asyncio.gather(*(a.run("echo", ["x"]) for _ in range(runs)))]

    t = time.perf_counter()
    outs = await _bounded("1000 runs on 100 connections",
                          asyncio.gather(*(on_own_connection(10) for _ in range(100))),
                          agent_proc.address)
    many = time.perf_counter() - t
    assert sum(len(o) for o in outs) == 1000 and all(x == b"x\n" for o in outs for x in o)

    async with await AsyncAgent.connect(agent_proc.address) as a:
        t = time.perf_counter()
        one = await _bounded("1000 runs", asyncio.gather(*(a.run("echo", ["x"]) for _ in range(1000))),
                             agent_proc.address)
        single = time.perf_counter() - t
        assert all(r.stdout == b"x\n" for r in one)
        t = time.perf_counter()
        await _bounded("100 runs", asyncio.gather(*(a.run("true") for _ in range(100))),
                       agent_proc.address)
        single100 = time.perf_counter() - t
    t = time.perf_counter()
    await _bounded("100 runs on 100 connections",
                   asyncio.gather(*(on_own_connection(1) for _ in range(100))), agent_proc.address)
    own100 = time.perf_counter() - t
    _say(f"1000 runs: one connection {single:.2f} s, 100 connections {many:.2f} s\n"
         f"100 runs: one connection {single100:.3f} s, 100 connections (connect, Hello, run, close) "
         f"{own100:.3f} s")


async def test_mixed_calls_interleave(agent: AsyncAgent, workspace: str) -> None:
    """Streams, unary calls and file transfers in flight together."""
    p = await agent.start_process("sh", ["-c", "for i in $(seq 200); do echo line $i; done"])
    data = bytes(range(256)) * 40000
    write = agent.write_file(f"{workspace}/f", data)
    follow = agent.follow_output(p.pid)
    pings = [agent.ping(str(i).encode()) for i in range(50)]
    w, out, *pongs = await asyncio.gather(write, follow, *pings)
    assert w.bytes_written == len(data)
    assert [e.line for e in out] == [f"line {i}\n" for i in range(1, 201)]
    assert [x.payload for x in pongs] == [str(i).encode() for i in range(50)]
    assert await agent.read_file(f"{workspace}/f") == data
