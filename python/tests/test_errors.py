"""Every Error.Code has its exception class, with the built-in it means;
and the agent's real errors arrive as those classes."""
from __future__ import annotations

import asyncio
import errno
import os
import pickle
import signal

import pytest
from conftest import AgentProc

import sandbox_agent as sa
from sandbox_agent import AsyncAgent, agent_pb2 as pb
from sandbox_agent.errors import error_class, error_from_code

BUILTIN = {
    "INVALID_ARGUMENT": ValueError,
    "NOT_FOUND": FileNotFoundError,
    "ALREADY_EXISTS": FileExistsError,
    "PERMISSION_DENIED": PermissionError,
    "UNIMPLEMENTED": NotImplementedError,
    "UNAVAILABLE": ConnectionError,
    "IO_ERROR": OSError,
    "DEADLINE_EXCEEDED": TimeoutError,
}


def test_every_code_has_its_class() -> None:
    names = [n for n in pb.Error.Code.keys() if n != "CODE_UNSPECIFIED"]
    assert len(names) >= 14
    classes = set()
    for name in names:
        cls = error_class(name)
        assert cls is not sa.SandboxAgentError, f"{name} has no class of its own"
        assert issubclass(cls, sa.SandboxAgentError) and cls.code == name
        assert getattr(sa, cls.__name__) is cls, f"{cls.__name__} is not exported"
        e = error_from_code(name, f"what went wrong ({name})", 5)
        assert type(e) is cls and e.code == name and e.os_errno == 5
        assert e.message == f"what went wrong ({name})" and str(e) == f"{name}: {e.message}"
        if name in BUILTIN:
            assert isinstance(e, BUILTIN[name]), name
        if isinstance(e, OSError):
            assert e.errno == 5
        again = pickle.loads(pickle.dumps(e))
        assert type(again) is cls and again.message == e.message and again.os_errno == 5
        classes.add(cls)
    assert len(classes) == len(names)
    # A code from a newer agent is still a SandboxAgentError.
    e = error_from_code("SOMETHING_NEW", "m")
    assert type(e) is sa.SandboxAgentError and e.code == "SOMETHING_NEW"
    assert issubclass(sa.ConnectionLost, sa.Unavailable)


async def test_errors_from_the_agent(agent: AsyncAgent, workspace: str) -> None:
    with pytest.raises(sa.NotFound) as ei:
        await agent.read_file(f"{workspace}/missing")
    assert isinstance(ei.value, FileNotFoundError) and ei.value.os_errno == errno.ENOENT
    assert f"{workspace}/missing" in ei.value.message
    with pytest.raises(FileNotFoundError):
        await agent.run("/no/such/command")
    with pytest.raises(sa.NotFound):
        await agent.wait(999999999)

    await agent.mkdir(f"{workspace}/d")
    with pytest.raises(FileExistsError) as ei2:
        await agent.mkdir(f"{workspace}/d")
    assert isinstance(ei2.value, sa.AlreadyExists) and ei2.value.os_errno == errno.EEXIST

    with pytest.raises(sa.FailedPrecondition) as ei3:
        await agent.read_file(f"{workspace}/d")
    assert ei3.value.os_errno == errno.EISDIR

    p = await agent.start_process("sleep", ["30"])
    with pytest.raises(ValueError) as ei4:
        await agent.send_signal(p.pid, 999)
    assert isinstance(ei4.value, sa.InvalidArgument)
    with pytest.raises(sa.FailedPrecondition):
        await agent.resize_pty(p.pid, 24, 80)
    await agent.send_signal(p.pid, "KILL")
    assert (await agent.wait(p.pid)).signal == signal.SIGKILL

    p = await agent.start_process("sh", ["-c", "exec 0<&-; sleep 5"], stdin_mode="pipe")
    with pytest.raises(sa.IoError) as ei5:
        for _ in range(50):  # until the shell has closed its stdin
            await agent.write_stdin(p.pid, b"x" * 100000)
            await asyncio.sleep(0.05)
    assert ei5.value.os_errno == errno.EPIPE
    await agent.send_signal(p.pid, signal.SIGKILL)

    with pytest.raises(sa.Unimplemented):
        r = pb.Request()
        r.ParseFromString(b"\x9a\x06\x00")  # op 99, which no agent has
        call = agent._conn.start(r)
        await agent._conn.next(call)

    # Cancel, sent as any client would: the stream ends with CANCELLED.
    p = await agent.start_process("sleep", ["30"])
    call = agent._conn.start(pb.Request(follow=pb.FollowOutput(pid=p.pid)))
    agent._conn.start(pb.Request(cancel=pb.Cancel(target_id=call.id)))
    with pytest.raises(sa.Cancelled):
        await agent._conn.next(call)
    await agent.send_signal(p.pid, signal.SIGKILL)


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs a root agent")
async def test_permission_denied(agent: AsyncAgent, workspace: str) -> None:
    os.chmod(workspace, 0o755)
    with pytest.raises(PermissionError) as ei:
        await agent.write_file(f"{workspace}/x", b"1", user="nobody")
    assert isinstance(ei.value, sa.PermissionDenied) and ei.value.os_errno == errno.EACCES


async def test_resource_exhausted() -> None:
    a = AgentProc("--max-processes", "1")
    try:
        async with await AsyncAgent.connect(a.address) as agent:
            p = await agent.start_process("sleep", ["30"])
            with pytest.raises(sa.ResourceExhausted):
                await agent.start_process("sleep", ["30"])
            await agent.send_signal(p.pid, signal.SIGKILL)
    finally:
        assert a.stop() == 0


async def test_unauthenticated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_AGENT_TOKEN", "s3cret")
    a = AgentProc()
    try:
        with pytest.raises(sa.Unauthenticated):
            await AsyncAgent.connect(a.address, token="wrong")
        monkeypatch.delenv("SANDBOX_AGENT_TOKEN")
        with pytest.raises(sa.Unauthenticated):
            await AsyncAgent.connect(a.address)
        async with await AsyncAgent.connect(a.address, token="s3cret") as agent:
            assert (await agent.ping(b"ok")).payload == b"ok"
    finally:
        assert a.stop() == 0


async def test_protocol_error_fails_the_connection(agent: AsyncAgent) -> None:
    """A response of id 0 speaks for the connection: every call in flight,
    and every later one, raises it."""
    p = await agent.start_process("sleep", ["30"])
    pending = asyncio.ensure_future(agent.wait(p.pid))
    await asyncio.sleep(0.05)
    assert agent._conn._transport is not None
    agent._conn._transport.write(b"\x80\x00\x00\x00\x00")  # unknown flag bits
    with pytest.raises(sa.ProtocolError):
        await asyncio.wait_for(pending, 10)
    with pytest.raises(sa.ProtocolError):
        await agent.ping()
    async with await AsyncAgent.connect(agent.address) as other:
        await other.send_signal(p.pid, signal.SIGKILL)


async def test_invalid_arguments_caught_before_sending(agent: AsyncAgent) -> None:
    with pytest.raises(sa.InvalidArgument):
        await agent.run("echo", "not a list")  # type: ignore[arg-type]
    with pytest.raises(sa.InvalidArgument):
        await agent.write_file("/tmp/x", b"", write_mode="sideways")
    with pytest.raises(sa.InvalidArgument):
        await agent.ping(b"x" * (5 << 20))
    assert (await agent.ping(b"still fine")).payload == b"still fine"
