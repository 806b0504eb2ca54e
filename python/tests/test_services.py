"""Services: restart policies, ready probes, wait_ready and stop_service."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest

import sandbox_agent as sa
from sandbox_agent import Agent, AsyncAgent, Probe, RestartPolicy
from conftest import AgentProc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_http_service_ready_then_stopped(agent: AsyncAgent) -> None:
    port = _free_port()
    proc = await agent.start_process(
        "python3", ["-m", "http.server", str(port), "--bind", "127.0.0.1"], tag="web",
        restart="on_failure", ready=Probe.http(port, "/", interval=0.05))
    info = await agent.wait_ready(tag="web", timeout=30)
    assert info.pid == proc.pid and info.service_state == "ready" and info.running
    assert (await agent.get_process(tag="web")).pid == proc.pid
    stopped = await agent.stop_service("web", grace=5)
    assert stopped.service_state == "stopped" and not stopped.running
    assert stopped.exit is not None and stopped.exit.signal == 15
    assert stopped.restarts == 0


async def test_crash_loop_gives_up(agent: AsyncAgent) -> None:
    await agent.start_process("sh", ["-c", "echo run; exit 3"], tag="crashy",
                              restart=RestartPolicy("on_failure", max_restarts=2,
                                                    backoff_initial=0.02, backoff_max=0.05))
    info = await agent.get_process(tag="crashy")
    deadline = time.monotonic() + 30
    while info.service_state != "failed" and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        info = await agent.get_process(tag="crashy")
    assert info.service_state == "failed" and info.restarts == 2
    assert info.last_exit is not None and info.last_exit.exit_code == 3
    with pytest.raises(sa.FailedPrecondition) as ei:
        await agent.wait_ready(tag="crashy", timeout=30)
    assert "exit" in ei.value.message


async def test_stream_output_says_each_run_of_a_service(agent: AsyncAgent) -> None:
    """A follow of a service carries its runs: each run's output, its
    readiness, its exit and the next run's start, typed and in order; the
    last exit ends the stream."""
    proc = await agent.start_process(
        "sh", ["-c", "echo run; exit 3"], tag="twice-restarted",
        restart=RestartPolicy("on_failure", max_restarts=2, backoff_initial=0.02,
                              backoff_max=0.05),
        ready=Probe.output(contains="run"))
    seen = []
    stream = agent.stream_output(0, tag="twice-restarted")
    async with stream:
        async for ev in stream:
            if ev.is_service_event:
                assert isinstance(ev, sa.ServiceEvent)
                seen.append(ev.kind)
                assert ev.at_unix_nano > 0 and ev.timestamp > 0
                assert ev.data == b"" and ev.line == "" and not ev.is_gap
                if ev.kind == "exited":
                    assert ev.exit is not None and ev.exit.exit_code == 3
                if ev.kind == "restarted":
                    assert ev.pid > 0 and ev.pid != proc.pid
                    assert ev.restarts == seen.count("restarted")
            else:
                assert isinstance(ev, sa.OutputEvent)
                seen.append(ev.line)
    run = ["run\n", "ready"]
    assert seen == run + ["exited", "restarted"] + run + ["exited", "restarted"] + run
    assert stream.exit is not None and stream.exit.exit_code == 3
    # follow_output collects the same, the last exit apart.
    got = await agent.follow_output(0, tag="twice-restarted")
    assert [e.kind if isinstance(e, sa.ServiceEvent) else e.line for e in got] == seen
    assert got.exit is not None and got.exit.exit_code == 3
    assert got.stdout == b"run\n" * 3


async def test_wait_ready_deadline_from_the_agent(agent: AsyncAgent) -> None:
    await agent.start_process("sleep", ["30"], tag="never-ready",
                              ready=Probe.output(contains="never printed"))
    with pytest.raises(sa.DeadlineExceeded) as ei:
        await agent.wait_ready(tag="never-ready", timeout=0.2)
    assert "not ready within" in ei.value.message
    info = await agent.stop_service("never-ready", sig="KILL")
    assert info.exit is not None and info.exit.signal == 9


async def test_service_errors(agent: AsyncAgent) -> None:
    with pytest.raises(sa.NotFound):
        await agent.stop_service("no-such-service")
    with pytest.raises(sa.InvalidArgument):
        await agent.wait_ready()
    with pytest.raises(sa.InvalidArgument):
        await agent.start_process("true", restart="sometimes")
    with pytest.raises(sa.InvalidArgument):
        await agent.start_process("true", ready=Probe("carrier-pigeon"))


def test_sync_services(agent_proc: AgentProc) -> None:
    with Agent.connect(agent_proc.address) as agent:
        agent.start_process("sh", ["-c", "echo listening; exec sleep 30"], tag="s",
                            restart="always", ready=Probe.output(line_prefix="listen"))
        assert agent.wait_ready(tag="s", timeout=30).service_state == "ready"
        assert agent.stop_service("s").service_state == "stopped"
