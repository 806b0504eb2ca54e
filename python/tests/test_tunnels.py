"""Tunnels: open_tunnel as asyncio streams (with the protocol's flow
control both ways), forward(local_port, target), and their errors."""
from __future__ import annotations

import asyncio
import os
import socket

import pytest
from conftest import AgentProc

import sandbox_agent as sa
from sandbox_agent import Agent, AsyncAgent

ECHO = """
import socket, sys, threading
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
print("listening", flush=True)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.shutdown(socket.SHUT_WR)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve(agent: AsyncAgent, args: list[str]) -> int:
    """Starts a server in the agent and returns its pid once it printed a line."""
    p = await agent.start_process(args[0], args[1:], env={"PYTHONUNBUFFERED": "1"})
    async with agent.stream_output(p.pid) as out:
        async for _ in out:
            break
    return p.pid


async def test_echo_through_a_unix_socket(agent: AsyncAgent, workspace: str) -> None:
    path = f"{workspace}/echo.sock"
    pid = await _serve(agent, ["python3", "-c", ECHO, path])
    try:
        reader, writer = await agent.open_tunnel(f"unix:{path}", window=64 << 10)
        assert writer.get_extra_info("peername") == path
        # 8 MiB each way through a 64 KiB window and the agent's 256 KiB:
        # both directions at once, or the echo server would block.
        data = os.urandom(8 << 20)

        async def send() -> None:
            writer.write(data)
            await writer.drain()
            writer.write_eof()

        _, back = await asyncio.gather(send(), reader.read())
        assert back == data
        writer.close()
        await writer.wait_closed()
        # Several tunnels at once on the one connection, beside other calls.
        pairs = await asyncio.gather(*(agent.open_tunnel(f"unix:{path}") for _ in range(5)))

        async def one(i: int, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bytes:
            w.write(f"tunnel {i}".encode())
            w.write_eof()
            return await r.read()
        outs = await asyncio.gather(*(one(i, r, w) for i, (r, w) in enumerate(pairs)),
                                    agent.ping(b"between"))
        assert outs[:5] == [f"tunnel {i}".encode() for i in range(5)]
        await asyncio.sleep(0.1)
        assert (await agent.info()).open_tunnels == 0
    finally:
        await agent.send_signal(pid, "KILL")


async def test_http_server_and_forward(agent: AsyncAgent) -> None:
    port = _free_port()
    pid = await _serve(agent, ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"])
    try:
        reader, writer = await agent.open_tunnel(f"tcp::{port}")
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.0 200 OK")
        writer.close()

        async with await agent.forward(0, f"tcp:127.0.0.1:{port}") as fwd:
            assert fwd.port > 0

            async def get() -> bytes:
                r, w = await asyncio.open_connection("127.0.0.1", fwd.port)
                w.write(b"GET / HTTP/1.0\r\n\r\n")
                body = await r.read()
                w.close()
                return body
            bodies = await asyncio.gather(*(get() for _ in range(5)))
            assert all(b.startswith(b"HTTP/1.0 200 OK") for b in bodies)
            assert fwd.connections == 5 and not fwd.errors
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", fwd.port)
    finally:
        await agent.send_signal(pid, "KILL")


async def test_tunnel_errors(agent: AsyncAgent, workspace: str) -> None:
    with pytest.raises(sa.Unavailable):
        await agent.open_tunnel(f"tcp:127.0.0.1:{_free_port()}")  # refused
    with pytest.raises(FileNotFoundError):
        await agent.open_tunnel(f"unix:{workspace}/nothing-listens")
    with pytest.raises(sa.InvalidArgument):
        await agent.open_tunnel("carrier-pigeon:1")
    # A refused forward closes that one local connection, and says why.
    async with await agent.forward(0, f"tcp:127.0.0.1:{_free_port()}") as fwd:
        r, w = await asyncio.open_connection("127.0.0.1", fwd.port)
        assert await r.read() == b""
        w.close()
        for _ in range(200):
            if fwd.errors:
                break
            await asyncio.sleep(0.01)
        assert isinstance(fwd.errors[0], sa.Unavailable)
    assert (await agent.ping(b"ok")).payload == b"ok"


async def test_tunnel_ends_with_its_connection(agent_proc: AgentProc, workspace: str) -> None:
    path = f"{workspace}/echo2.sock"
    async with await AsyncAgent.connect(agent_proc.address) as other:
        pid = await _serve(other, ["python3", "-c", ECHO, path])
    agent = await AsyncAgent.connect(agent_proc.address)
    reader, writer = await agent.open_tunnel(f"unix:{path}")
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    await agent.close()
    with pytest.raises(sa.ConnectionLost):
        await asyncio.wait_for(reader.read(), 10)
    async with await AsyncAgent.connect(agent_proc.address) as other:
        await other.send_signal(pid, "KILL")


def test_sync_tunnel(agent_proc: AgentProc) -> None:
    path = os.path.join(agent_proc.dir, "echo3.sock")
    with Agent.connect(agent_proc.address) as agent:
        p = agent.start_process("python3", ["-c", ECHO, path], env={"PYTHONUNBUFFERED": "1"})
        with agent.stream_output(p.pid) as out:
            next(iter(out))
        with agent.open_tunnel(f"unix:{path}") as t:
            t.send(b"hello")
            t.shutdown_write()
            assert t.recv_all() == b"hello"
        agent.send_signal(p.pid, "KILL")
