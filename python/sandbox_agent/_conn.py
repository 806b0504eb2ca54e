"""One connection to the agent: frames, request ids, and the calls in flight.

Requests and responses are length-prefixed frames (docs/PROTOCOL.md). Every
call gets a fresh request id (never 0, never reused on a connection) and a
queue its responses are sorted into as they arrive, so any number of calls
share one connection. Nothing here blocks: responses are parsed in the
protocol's data_received callback and handed to whoever waits for them.

Memory is bounded: a streaming call whose unread responses exceed
STREAM_HIGH bytes pauses reading from the socket (the agent then stops
producing for this connection too, as its flow control promises) until that
call's reader has caught up to STREAM_LOW. Writers wait for the socket
(drain) before sending more file data.
"""
from __future__ import annotations

import asyncio
import collections
import struct
import zlib
from typing import Deque, Dict, List, Optional, Set, Tuple

from . import agent_pb2 as pb
from .errors import (ConnectionLost, DeadlineExceeded, InvalidArgument,
                     ProtocolError, SandboxAgentError, error_from_code)

_HEADER = struct.Struct(">BI")
FLAG_ZLIB = 0x01
DEFAULT_MAX_FRAME = 4 << 20
# The most a response may be on the wire, whatever the agent says: a guard
# against a corrupt length, checked before anything is allocated for it.
_MAX_INCOMING = 256 << 20
STREAM_HIGH = 8 << 20
STREAM_LOW = 2 << 20
_WRITE_SLICE = 256 << 10
CLOSE_FLUSH = 10.0

_CODE_NAMES = {v: k for k, v in pb.Error.Code.items()}


def code_name(code: int) -> str:
    return _CODE_NAMES.get(code, f"CODE_{code}")


def raise_for_error(r: pb.Response) -> None:
    if r.WhichOneof("result") == "error":
        e = r.error
        raise error_from_code(code_name(e.code), e.message, e.os_errno)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_file_data(req_id: int, data_len: int, more: bool) -> Tuple[bytes, bytes]:
    """Request{id, write_data: FileData{data, more}} without copying the
    data through the protobuf library: returns the bytes that go before the
    data (frame header included) and after it. Field numbers: Request.id 1,
    Request.write_data 32, FileData.data 1, FileData.more 2."""
    inner_prefix = b"\x0a" + _varint(data_len) if data_len else b""
    inner_suffix = b"\x10\x01" if more else b""
    inner_len = len(inner_prefix) + data_len + len(inner_suffix)
    outer = b"\x08" + _varint(req_id) + b"\x82\x02" + _varint(inner_len)
    payload_len = len(outer) + inner_len
    return _HEADER.pack(0, payload_len) + outer + inner_prefix, inner_suffix


class Call:
    """A request in flight and the responses that arrived for it."""

    __slots__ = ("id", "queue", "buffered", "waiter", "exc", "finished", "discard")

    def __init__(self, req_id: int) -> None:
        self.id = req_id
        self.queue: Deque[Tuple[pb.Response, int]] = collections.deque()
        self.buffered = 0
        self.waiter: Optional[asyncio.Future[None]] = None
        self.exc: Optional[BaseException] = None
        self.finished = False  # the done response arrived, or the connection is gone
        self.discard = False  # abandoned: responses are dropped until done

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class Connection(asyncio.Protocol):
    def __init__(self, address: str) -> None:
        self.address = address
        self.max_frame = DEFAULT_MAX_FRAME
        self._transport: Optional[asyncio.Transport] = None
        self._buf = bytearray()
        self._calls: Dict[int, Call] = {}
        self._next_id = 1
        self._closed_exc: Optional[SandboxAgentError] = None
        self._lost = asyncio.get_running_loop().create_future()
        self._write_paused = False
        self._drain_waiters: Deque[asyncio.Future[None]] = collections.deque()
        self._full: Set[Call] = set()
        self._read_paused = False
        # While a frame is written in slices (send_file_data), the frames of
        # other calls are held here, and one such frame is written at a time.
        self._held: Optional[List[Tuple[bytes, ...]]] = None
        self._slicing = asyncio.Lock()

    # ---------------------------------------------------------- transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=1 << 20, low=256 << 10)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        end_all = len(buf)
        while end_all - pos >= 5:
            flags, n = _HEADER.unpack_from(buf, pos)
            if flags & ~FLAG_ZLIB or n > _MAX_INCOMING:
                self._fail(ProtocolError(
                    f"the agent at {self.address} sent a malformed frame "
                    f"(flags {flags:#x}, length {n})"))
                return
            if end_all - pos - 5 < n:
                break
            payload = bytes(buf[pos + 5:pos + 5 + n])
            pos += 5 + n
            if flags & FLAG_ZLIB:
                d = zlib.decompressobj()
                try:
                    payload = d.decompress(payload, _MAX_INCOMING)
                except zlib.error as e:
                    self._fail(ProtocolError(f"corrupt compressed frame from the agent: {e}"))
                    return
            r = pb.Response()
            try:
                r.ParseFromString(payload)
            except Exception as e:  # the library's DecodeError
                self._fail(ProtocolError(f"undecodable response from the agent: {e}"))
                return
            self._deliver(r, n)
        if pos:
            del buf[:pos]

    def _deliver(self, r: pb.Response, size: int) -> None:
        if r.id == 0:
            # About the connection itself (a protocol error, a refusal at
            # accept); the agent closes the connection after it.
            e = r.error
            self._closed_exc = error_from_code(code_name(e.code), e.message, e.os_errno)
            return
        call = self._calls.get(r.id)
        if call is None:
            return
        if r.done:
            del self._calls[r.id]
            call.finished = True
        if call.discard:
            return
        call.queue.append((r, size))
        call.buffered += size
        if call.buffered > STREAM_HIGH and not call.finished:
            self._full.add(call)
            if not self._read_paused and self._transport is not None:
                self._read_paused = True
                self._transport.pause_reading()
        call._wake()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        why = self._closed_exc
        if why is None:
            detail = f": {exc}" if exc else ""
            why = ConnectionLost(f"connection to the agent at {self.address} closed{detail}")
        self._fail(why)
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        while self._drain_waiters:
            w = self._drain_waiters.popleft()
            if not w.done():
                w.set_result(None)

    def _fail(self, why: SandboxAgentError) -> None:
        """Ends every call in flight with why; later calls raise it too."""
        if self._closed_exc is None:
            self._closed_exc = why
        calls = list(self._calls.values())
        self._calls.clear()
        self._full.clear()
        for call in calls:
            call.finished = True
            if call.exc is None:
                call.exc = self._closed_exc
            call._wake()
        while self._drain_waiters:
            w = self._drain_waiters.popleft()
            if not w.done():
                w.set_result(None)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    # ---------------------------------------------------------- requests

    @property
    def closed(self) -> bool:
        return self._closed_exc is not None or self._transport is None or self._transport.is_closing()

    def pending(self) -> int:
        """Requests in flight whose final response has not arrived."""
        return len(self._calls)

    def _check_open(self) -> asyncio.Transport:
        if self._closed_exc is not None:
            raise type(self._closed_exc)(self._closed_exc.message, code=self._closed_exc.code,
                                         os_errno=self._closed_exc.os_errno)
        t = self._transport
        if t is None or t.is_closing():
            raise ConnectionLost(f"connection to the agent at {self.address} is closed")
        return t

    def start(self, req: pb.Request) -> Call:
        """Sends req with a fresh id and returns its call."""
        t = self._check_open()
        req_id = self._next_id
        req.id = req_id
        data = self._serialize(req)
        self._next_id = req_id + 1 if req_id < (1 << 64) - 1 else 1
        call = Call(req_id)
        self._calls[req_id] = call
        self._write_frame(t, data)
        return call

    def send_on(self, call: Call, req: pb.Request) -> None:
        """Sends req with call's id: a message that belongs to a request in
        flight (TunnelSend, TunnelWindow) and gets no response of its own."""
        t = self._check_open()
        req.id = call.id
        self._write_frame(t, self._serialize(req))

    def _serialize(self, req: pb.Request) -> bytes:
        data: bytes = req.SerializeToString()
        if len(data) > self.max_frame:
            raise InvalidArgument(f"request of {len(data)} bytes exceeds the agent's "
                                  f"maximum frame of {self.max_frame} bytes")
        return data

    def _write_frame(self, t: asyncio.Transport, data: bytes) -> None:
        frame = (_HEADER.pack(0, len(data)) + data,) if len(data) < 65536 else \
            (_HEADER.pack(0, len(data)), data)
        if self._held is not None:
            self._held.append(frame)  # after the frame being written in slices
        else:
            for part in frame:
                t.write(part)

    async def send_file_data(self, call: Call, data: bytes, more: bool) -> None:
        """One write_data request for call's upload, handed to the socket in
        slices as it takes them: the transport's buffer stays small (asyncio
        moves its whole buffer after every partial send)."""
        async with self._slicing:
            t = self._check_open()
            if call.finished:
                return  # the agent already answered (an error): stop sending
            prefix, suffix = encode_file_data(call.id, len(data), more)
            # Frames of other calls wait until this one is whole.
            self._held = []
            mv = memoryview(data)
            pos = 0
            try:
                t.write(prefix)
                while pos < len(mv):
                    if self._write_paused:
                        await self.drain()
                    t.write(mv[pos:pos + _WRITE_SLICE])
                    pos += _WRITE_SLICE
                if suffix:
                    t.write(suffix)
            except asyncio.CancelledError:
                # Never half a frame: the agent would read the next frame's
                # bytes as this one's and close the connection.
                if not t.is_closing():
                    t.write(mv[pos:])
                    if suffix:
                        t.write(suffix)
                raise
            finally:
                held, self._held = self._held, None
                if not t.is_closing():
                    for frame in held:
                        for part in frame:
                            t.write(part)

    async def drain(self) -> None:
        if self._write_paused and self._closed_exc is None:
            w = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(w)
            await w
        self._check_open()

    async def next(self, call: Call, deadline: Optional[float] = None) -> pb.Response:
        """The next response of call (raising its Error as an exception).
        deadline: loop time after which DeadlineExceeded is raised."""
        while not call.queue:
            if call.exc is not None:
                raise call.exc
            if call.finished:
                raise ConnectionLost(f"request {call.id} ended without a response")
            loop = asyncio.get_running_loop()
            w: asyncio.Future[None] = loop.create_future()
            call.waiter = w
            timer = None
            if deadline is not None:
                timer = loop.call_at(deadline, _expire, w)
            try:
                await w
            finally:
                call.waiter = None
                if timer is not None:
                    timer.cancel()
        r, size = call.queue.popleft()
        call.buffered -= size
        if self._read_paused and call in self._full and call.buffered <= STREAM_LOW:
            self._full.discard(call)
            if not self._full and self._transport is not None:
                self._read_paused = False
                self._transport.resume_reading()
        raise_for_error(r)
        return r

    def abandon(self, call: Call) -> None:
        """The caller no longer wants call's responses: a call still in flight
        is cancelled on the agent (Cancel) and its responses are dropped
        until its final one."""
        if call.finished or call.discard:
            return
        call.discard = True
        call.queue.clear()
        call.buffered = 0
        if call in self._full:
            self._full.discard(call)
            if not self._full and self._read_paused and self._transport is not None:
                self._read_paused = False
                self._transport.resume_reading()
        if self.closed:
            return
        try:
            c = self.start(pb.Request(cancel=pb.Cancel(target_id=call.id)))
        except SandboxAgentError:
            return
        c.discard = True  # its Ack (or NOT_FOUND for a unary call) is not needed

    async def close(self) -> None:
        """Closes the connection once what was sent is written; an agent
        that does not read it within CLOSE_FLUSH seconds is cut off."""
        t = self._transport
        if t is not None and not t.is_closing():
            if self._closed_exc is None:
                self._closed_exc = ConnectionLost(
                    f"connection to the agent at {self.address} closed by the client")
            t.close()
        if t is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._lost), CLOSE_FLUSH)
            except asyncio.TimeoutError:
                t.abort()
                await asyncio.shield(self._lost)


def _expire(w: asyncio.Future[None]) -> None:
    if not w.done():
        w.set_exception(DeadlineExceeded("the call's timeout passed; it was cancelled on the agent"))
