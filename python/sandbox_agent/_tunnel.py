"""Tunnels: byte streams to a TCP port or unix socket reached from inside the
guest, multiplexed on the agent connection (OpenTunnel), as asyncio
StreamReader/StreamWriter pairs; and forward(), a local listener whose
connections each go through a tunnel.

Flow control both ways is the protocol's credits: the agent sends at most
the tunnel's window beyond what was credited back (credit goes back as the
StreamReader takes the data, and is held while it is paused), and the client
keeps at most agent_window bytes unacknowledged (writes beyond that wait in
the transport, which pauses the writer's drain() past a high-water mark).
"""
from __future__ import annotations

import asyncio
import collections
from typing import Any, Deque, List, Optional, Tuple

from . import agent_pb2 as pb
from ._conn import Call, Connection
from .errors import ConnectionLost, SandboxAgentError

__all__ = ["TunnelTransport", "open_tunnel", "Forwarder"]

_SEND_MAX = 256 << 10  # one TunnelSend's data
_WRITE_HIGH = 1 << 20
_WRITE_LOW = 256 << 10


class TunnelTransport(asyncio.Transport):
    """The transport under a tunnel's StreamReader/StreamWriter."""

    def __init__(self, conn: Connection, call: Call, opened: pb.TunnelOpened,
                 protocol: asyncio.StreamReaderProtocol, target: str) -> None:
        super().__init__(extra={"peername": opened.remote_address,
                                "sockname": opened.local_address, "target": target})
        self._conn = conn
        self._call = call
        self._protocol = protocol
        self.tunnel_id = opened.tunnel_id
        self._send_allowed = opened.agent_window  # bytes we may still have outstanding
        self._out: Deque[bytes] = collections.deque()
        self._out_bytes = 0
        self._eof_wanted = False
        self._eof_sent = False
        self._closing = False
        self._write_paused = False
        self._read_paused = False
        self._owed_credit = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed_reason = ""
        self._reader_task = asyncio.ensure_future(self._read_loop())

    # ---------------------------------------------------------- incoming

    async def _read_loop(self) -> None:
        exc: Optional[Exception] = None
        try:
            while True:
                r = await self._conn.next(self._call)
                kind = r.WhichOneof("result")
                if kind == "tunnel_data":
                    d = r.tunnel_data
                    if d.credit:
                        self._send_allowed += d.credit
                        self._pump()
                    if d.data:
                        self.bytes_in += len(d.data)
                        if not self._closing:
                            self._protocol.data_received(d.data)
                        self._credit(len(d.data))
                    if d.eof:
                        self._protocol.eof_received()
                elif kind == "tunnel_closed":
                    c = r.tunnel_closed
                    self.closed_reason = c.reason
                    if c.os_errno and not self._closing:
                        exc = ConnectionResetError(c.os_errno, f"tunnel: {c.reason}")
                if r.done:
                    return
        except SandboxAgentError as e:
            exc = e
        except asyncio.CancelledError:
            pass  # abort(): the tunnel ends here
        finally:
            self._conn.abandon(self._call)
            self._closing = True
            self._out.clear()
            self._out_bytes = 0
            self._protocol.connection_lost(exc)

    def _credit(self, n: int) -> None:
        """Returns n bytes of window to the agent, unless the reader is
        paused: then the credit waits, and so does the agent."""
        self._owed_credit += n
        if not self._read_paused:
            self._send_window()

    def _send_window(self) -> None:
        if self._owed_credit and not self._call.finished:
            credit, self._owed_credit = self._owed_credit, 0
            try:
                self._conn.send_on(self._call, pb.Request(tunnel_window=pb.TunnelWindow(
                    tunnel_id=self.tunnel_id, credit=credit)))
            except SandboxAgentError:
                pass

    def pause_reading(self) -> None:
        self._read_paused = True

    def resume_reading(self) -> None:
        self._read_paused = False
        self._send_window()

    def is_reading(self) -> bool:
        return not self._read_paused

    # ---------------------------------------------------------- outgoing

    def write(self, data: Any) -> None:
        if self._eof_wanted or self._closing:
            raise RuntimeError("write to a tunnel after write_eof() or close()")
        b = bytes(data)
        if not b:
            return
        self._out.append(b)
        self._out_bytes += len(b)
        self._pump()
        if not self._write_paused and self._out_bytes > _WRITE_HIGH:
            self._write_paused = True
            self._protocol.pause_writing()

    def _pump(self) -> None:
        """Sends what the agent's window allows."""
        if self._call.finished:
            return
        try:
            while self._out and self._send_allowed > 0:
                head = self._out[0]
                n = min(len(head), self._send_allowed, _SEND_MAX)
                piece, rest = head[:n], head[n:]
                if rest:
                    self._out[0] = rest
                else:
                    self._out.popleft()
                self._out_bytes -= n
                self._send_allowed -= n
                self.bytes_out += n
                last = not self._out and self._eof_wanted
                self._conn.send_on(self._call, pb.Request(tunnel_send=pb.TunnelSend(
                    tunnel_id=self.tunnel_id, data=piece, eof=last)))
                if last:
                    self._eof_sent = True
            if not self._out and self._eof_wanted and not self._eof_sent:
                self._eof_sent = True
                self._conn.send_on(self._call, pb.Request(tunnel_send=pb.TunnelSend(
                    tunnel_id=self.tunnel_id, eof=True)))
        except SandboxAgentError:
            return
        if self._write_paused and self._out_bytes <= _WRITE_LOW:
            self._write_paused = False
            self._protocol.resume_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._eof_wanted = True
        self._pump()

    def get_write_buffer_size(self) -> int:
        return self._out_bytes

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        pass

    # ---------------------------------------------------------- closing

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Sends what is buffered (as the window allows) and the eof; the
        tunnel ends when the target closes its side too. Incoming data is
        dropped from now on."""
        if self._closing:
            return
        self._closing = True
        if not self._eof_wanted:
            self._eof_wanted = True
            self._pump()

    def abort(self) -> None:
        """Ends the tunnel at once (Cancel on the agent)."""
        self._closing = True
        self._out.clear()
        self._out_bytes = 0
        self._reader_task.cancel()


async def open_tunnel(conn: Connection, target: str, window: int, user: Optional[str],
                      deadline: Optional[float]) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    call = conn.start(pb.Request(open_tunnel=pb.OpenTunnel(target=target, window=window,
                                                           user=user or "")))
    try:
        r = await conn.next(call, deadline)
    except BaseException:
        conn.abandon(call)
        raise
    if r.WhichOneof("result") != "tunnel_opened":
        conn.abandon(call)
        raise ConnectionLost(f"open_tunnel {target}: the agent answered {r.WhichOneof('result')}")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    transport = TunnelTransport(conn, call, r.tunnel_opened, protocol, target)
    protocol.connection_made(transport)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await src.read(1 << 16)
            if not data:
                break
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (OSError, SandboxAgentError, RuntimeError):
        dst.close()


class Forwarder:
    """A local listener whose every connection goes through its own tunnel
    to target, on the agent connection that made it (as ssh -L does).
    ``port`` is the local port (useful when 0 was asked for); ``errors``
    keeps why connections were refused. Close it to stop listening; the
    connections in progress end with it."""

    def __init__(self, conn: Connection, target: str, window: int, user: Optional[str]) -> None:
        self._conn = conn
        self.target = target
        self._window = window
        self._user = user
        self._server: Optional[asyncio.base_events.Server] = None
        self._tasks: "set[asyncio.Task[None]]" = set()
        self.errors: List[SandboxAgentError] = []
        self.connections = 0

    async def _start(self, host: str, port: int) -> Forwarder:
        self._server = await asyncio.start_server(self._accepted, host, port)
        name = self._server.sockets[0].getsockname()
        self.address: Tuple[str, int] = (str(name[0]), int(name[1]))
        return self

    @property
    def port(self) -> int:
        return self.address[1]

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        try:
            try:
                treader, twriter = await open_tunnel(self._conn, self.target, self._window,
                                                     self._user, None)
            except SandboxAgentError as e:
                self.errors.append(e)
                writer.transport.abort()
                return
            try:
                await asyncio.gather(_pipe(reader, twriter), _pipe(treader, writer))
            finally:
                twriter.close()
                writer.close()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Forwarder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
