"""AsyncAgent: the agent's operations as asyncio coroutines.

One AsyncAgent is one connection; any number of calls may be in flight on it
at once (``asyncio.gather`` of a thousand ``run``s shares one socket). Every
method takes ``request_timeout`` (seconds, None: no limit): when it passes,
the request is cancelled on the agent (``Cancel``) and DeadlineExceeded is
raised. Cancelling the awaiting task cancels the request the same way.
"""
from __future__ import annotations

import asyncio
import collections
import os
import signal as _signal
import stat as _stat
import time
import weakref
import zlib
from typing import (Any, AsyncIterable, AsyncIterator, Awaitable, BinaryIO,
                    Callable, Deque, Generic, Iterable, List, Mapping, Optional,
                    Sequence, Tuple, TypeVar, Union)

from . import agent_pb2 as pb
from ._address import default_address, open_socket
from ._conn import Call, Connection
from ._tunnel import Forwarder, open_tunnel
from .errors import (ConnectionLost, DeadlineExceeded, InvalidArgument,
                     IoError, SandboxAgentError)
from .types import (CommandResult, DirectoryListing, DownloadResult, Entry, FileContent,
                    FollowedOutput, FsEvent, HelloReply, Info, Output,
                    LifecycleEvent, Limits, OutputEvent, OutputGap, Pong, Probe, Process,
                    ProcessExit, ProcessInfo, QuiesceResult, RestartPolicy, RestoredResult,
                    ServiceEvent, WriteResult, _ms)

__all__ = ["AsyncAgent", "AsyncStream", "OutputStream", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 1

T = TypeVar("T")
PathArg = Union[str, bytes, "os.PathLike[str]"]
Progress = Callable[[int, Optional[int]], None]
WriteData = Union[bytes, bytearray, memoryview, BinaryIO, AsyncIterable[bytes], Iterable[bytes]]

_WRITE_MODES = {"truncate": pb.TRUNCATE, "append": pb.APPEND, "create_new": pb.CREATE_NEW}


def _path(p: PathArg) -> Tuple[str, bytes]:
    """(string, raw bytes) for a path field: names that are not valid UTF-8
    (bytes, or str holding surrogate escapes from os.fsdecode) go as raw."""
    p = os.fspath(p)
    if isinstance(p, bytes):
        try:
            return p.decode("utf-8"), b""
        except UnicodeDecodeError:
            return "", p
    try:
        p.encode("utf-8")
        return p, b""
    except UnicodeEncodeError:
        return "", p.encode("utf-8", "surrogateescape")


def _deadline(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    return asyncio.get_running_loop().time() + timeout


def _signum(sig: Union[int, _signal.Signals, str]) -> int:
    if isinstance(sig, str):
        name = sig.upper()
        return int(getattr(_signal, name if name.startswith("SIG") else "SIG" + name))
    return int(sig)


class AsyncStream(Generic[T]):
    """The responses of a streaming request, converted, as an async iterator.

    ``aclose()`` (or leaving ``async with``) cancels the request on the agent;
    so does dropping the last reference to an unfinished stream."""

    def __init__(self, conn: Connection, call: Call,
                 convert: Callable[[pb.Response], Iterable[T]]) -> None:
        self._conn = conn
        self._call = call
        self._convert = convert
        self._ready: Deque[T] = collections.deque()
        self._ended = False
        self._finalizer = weakref.finalize(self, _abandon_later, asyncio.get_running_loop(),
                                           conn, call)

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        while not self._ready:
            if self._ended:
                raise StopAsyncIteration
            try:
                r = await self._conn.next(self._call)
            except BaseException:
                self._ended = True
                self._conn.abandon(self._call)
                raise
            if r.done:
                self._ended = True
                self._finalizer.detach()
            self._ready.extend(self._convert(r))
        return self._ready.popleft()

    async def aclose(self) -> None:
        self._ended = True
        self._finalizer.detach()
        self._conn.abandon(self._call)

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _abandon_later(loop: asyncio.AbstractEventLoop, conn: Connection, call: Call) -> None:
    try:
        loop.call_soon_threadsafe(conn.abandon, call)
    except RuntimeError:
        pass  # the loop is closed: so is the connection


def _output_events(r: pb.Response, lines: bool) -> List[Output]:
    """The events of one response. With lines, one event per line: the
    agent may send several whole lines in one event."""
    kind = r.WhichOneof("result")
    if kind == "gap":
        return [OutputGap._from_pb(r.gap)]
    if kind != "output":
        sev = ServiceEvent._from_pb(r)
        return [sev] if sev is not None else []
    ev = OutputEvent._from_pb(r.output)
    if not lines or ev.data.count(b"\n") <= 1:
        return [ev]
    out: List[Output] = []
    pos = 0
    for piece in ev.data.splitlines(keepends=True):
        out.append(OutputEvent(ev.stream, piece, ev.sequence + pos, ev.offset + pos,
                               ev.timestamp_unix_nano))
        pos += len(piece)
    return out


class OutputStream(AsyncStream[Output]):
    """Output events and gaps of a process as they happen, and a service's
    events (ServiceEvent: ready, a run's exit, a restart) in their place;
    ``exit`` is set once the stream has ended with the process's exit."""

    def __init__(self, conn: Connection, call: Call, lines: bool) -> None:
        self.exit: Optional[ProcessExit] = None
        self._lines = lines
        super().__init__(conn, call, self._events)

    def _events(self, r: pb.Response) -> List[Output]:
        if r.WhichOneof("result") == "exit" and r.done:
            self.exit = ProcessExit._from_pb(r.exit)
        return _output_events(r, self._lines)


class AsyncAgent:
    """A connection to one agent. Use ``await AsyncAgent.connect(...)``,
    ideally as ``async with await AsyncAgent.connect() as agent:``."""

    def __init__(self, conn: Connection, hello: HelloReply) -> None:
        self._conn = conn
        self.hello = hello

    # ------------------------------------------------------------ connection

    @classmethod
    async def connect(cls, address: Optional[str] = None, token: Optional[str] = None,
                      timeout: Optional[float] = 30.0, *, compress: Optional[bool] = None,
                      client_name: str = "sandbox_agent.py") -> AsyncAgent:
        """Connects and says Hello. address as sandboxctl takes it
        (``unix:/path``, a bare path, ``tcp:HOST:PORT``, ``vsock:CID:PORT``;
        None: $SANDBOX_AGENT_ADDR, else the agent's default socket). token:
        the agent's token (None: $SANDBOX_AGENT_TOKEN). compress: ask for
        compressed responses (None: over tcp and vsock only, as sandboxctl).
        timeout bounds connecting and the Hello."""
        addr = address or default_address()
        if token is None:
            token = os.environ.get("SANDBOX_AGENT_TOKEN", "")

        async def open_() -> AsyncAgent:
            sock, kind = await open_socket(addr)
            loop = asyncio.get_running_loop()
            try:
                if kind == "unix":
                    _, conn = await loop.create_unix_connection(lambda: Connection(addr), sock=sock)
                else:
                    _, conn = await loop.create_connection(lambda: Connection(addr), sock=sock)
            except BaseException:
                sock.close()
                raise
            try:
                z = compress if compress is not None else kind != "unix"
                call = conn.start(pb.Request(hello=pb.Hello(
                    protocol_version=PROTOCOL_VERSION, token=token or "",
                    client_name=client_name, accept_zlib=z)))
                r = await conn.next(call)
                h = r.hello
                if h.max_frame_size:
                    conn.max_frame = h.max_frame_size
                return cls(conn, HelloReply(h.protocol_version, h.agent_version,
                                            h.max_frame_size, list(h.capabilities)))
            except BaseException:
                await conn.close()
                raise

        if timeout is None:
            return await open_()
        try:
            return await asyncio.wait_for(open_(), timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"connect to {addr}: no answer within {timeout} s") from None

    async def close(self) -> None:
        """Closes the connection; calls still in flight raise ConnectionLost.
        Processes started through it keep running."""
        await self._conn.close()

    async def __aenter__(self) -> AsyncAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def address(self) -> str:
        return self._conn.address

    @property
    def closed(self) -> bool:
        return self._conn.closed

    @property
    def capabilities(self) -> List[str]:
        return self.hello.capabilities

    # ------------------------------------------------------------ plumbing

    async def _call(self, req: pb.Request, request_timeout: Optional[float]) -> pb.Response:
        """A request answered by one response."""
        call = self._conn.start(req)
        try:
            return await self._conn.next(call, _deadline(request_timeout))
        finally:
            self._conn.abandon(call)

    async def _collect(self, req: pb.Request, request_timeout: Optional[float],
                       each: Callable[[pb.Response], None]) -> None:
        """A streaming request, every response given to each, until done."""
        call = self._conn.start(req)
        deadline = _deadline(request_timeout)
        try:
            while True:
                r = await self._conn.next(call, deadline)
                each(r)
                if r.done:
                    return
        finally:
            self._conn.abandon(call)

    def _stream(self, req: pb.Request, convert: Callable[[pb.Response], Iterable[T]]) -> AsyncStream[T]:
        return AsyncStream(self._conn, self._conn.start(req), convert)

    # ------------------------------------------------------------ control

    async def ping(self, payload: bytes = b"", *, request_timeout: Optional[float] = None) -> Pong:
        t0 = time.perf_counter()
        r = await self._call(pb.Request(ping=pb.Ping(payload=payload)), request_timeout)
        return Pong(r.pong.payload, r.pong.agent_time_unix_nano, time.perf_counter() - t0)

    async def info(self, *, request_timeout: Optional[float] = None) -> Info:
        r = await self._call(pb.Request(info=pb.GetInfo()), request_timeout)
        return Info._from_pb(r.info)

    # ------------------------------------------------------------ processes

    @staticmethod
    def _start_req(command: str, args: Sequence[str], env: Optional[Mapping[str, str]],
                   cwd: Optional[str], user: Optional[str], timeout: Optional[float],
                   tag: Optional[str], clear_env: bool, stdin_pipe: bool,
                   pty: Union[bool, Tuple[int, int]], term: Optional[str],
                   kill_grace: Optional[float], output_window: Optional[int],
                   lossless: bool, restart: Union[str, RestartPolicy, None] = None,
                   ready: Optional[Probe] = None,
                   health: Optional[Probe] = None,
                   limits: Optional[Limits] = None) -> pb.StartProcess:
        if isinstance(args, (str, bytes)):
            raise InvalidArgument("args must be a sequence of strings, not one string")
        sp = pb.StartProcess(command=command, args=[str(a) for a in args],
                             env=dict(env or {}), clear_env=clear_env, cwd=cwd or "",
                             user=user or "", tag=tag or "", lossless=lossless,
                             stdin_mode=pb.STDIN_PIPE if stdin_pipe else pb.STDIN_NULL)
        sp.timeout_ms = _ms(timeout)
        sp.kill_grace_ms = _ms(kill_grace)
        if output_window is not None:
            sp.output_window = output_window
        if pty:
            rows, cols = pty if isinstance(pty, tuple) else (24, 80)
            sp.pty.CopyFrom(pb.Pty(rows=rows, cols=cols, term=term or ""))
        try:
            if restart is not None:
                policy = RestartPolicy(restart) if isinstance(restart, str) else restart
                sp.restart.CopyFrom(policy._to_pb())
            if ready is not None:
                sp.ready.CopyFrom(ready._to_pb())
            if health is not None:
                sp.health.CopyFrom(health._to_pb())
            if limits is not None:
                sp.limits.CopyFrom(limits._to_pb())
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        return sp

    async def run(self, command: str, args: Sequence[str] = (), *,
                  env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                  user: Optional[str] = None, timeout: Optional[float] = None,
                  stdin: Optional[Union[bytes, str]] = None, tag: Optional[str] = None,
                  clear_env: bool = False, pty: Union[bool, Tuple[int, int]] = False,
                  kill_grace: Optional[float] = None, limits: Optional[Limits] = None,
                  request_timeout: Optional[float] = None) -> CommandResult:
        """Runs command to its end and returns its exit and whole output, in
        one round trip. timeout: seconds after which the agent stops the
        process (SIGTERM to its group, SIGKILL kill_grace later; the result
        then has timed_out). stdin: data written to the process's stdin,
        which is then closed."""
        sp = self._start_req(command, args, env, cwd, user, timeout, tag, clear_env,
                             stdin is not None, pty, None, kill_grace, None, False,
                             limits=limits)
        sp.follow = True
        call = self._conn.start(pb.Request(start=sp))
        deadline = _deadline(request_timeout)
        out: List[bytes] = []
        err: List[bytes] = []
        gaps: List[OutputGap] = []
        pid = 0
        started = 0
        feeder: Optional[asyncio.Task[None]] = None
        try:
            while True:
                r = await self._conn.next(call, deadline)
                kind = r.WhichOneof("result")
                if kind == "started":
                    pid, started = r.started.pid, r.started.started_at_unix_nano
                    if stdin is not None:
                        # Fed beside the output, so a process that writes
                        # before it reads never waits on us.
                        feeder = asyncio.ensure_future(self._feed(pid, stdin))
                elif kind == "output":
                    (err if r.output.stream == pb.STDERR else out).append(r.output.data)
                elif kind == "gap":
                    gaps.append(OutputGap._from_pb(r.gap))
                elif kind == "exit":
                    x = r.exit
                    if feeder is not None:
                        await _settle(feeder)
                    return CommandResult(pid=pid, exit_code=x.exit_code, signal=x.signal,
                                         stdout=b"".join(out), stderr=b"".join(err),
                                         timed_out=x.timed_out, core_dumped=x.core_dumped,
                                         started_at_unix_nano=started,
                                         ended_at_unix_nano=x.ended_at_unix_nano, gaps=gaps,
                                         oom_killed=x.oom_killed, cpu_user_nano=x.cpu_user_nano,
                                         cpu_system_nano=x.cpu_system_nano,
                                         memory_peak_bytes=x.memory_peak_bytes)
                if r.done:
                    raise ConnectionLost(f"run of {command!r}: the agent ended the request without an exit")
        finally:
            self._conn.abandon(call)
            if feeder is not None and not feeder.done():
                feeder.cancel()

    async def _feed(self, pid: int, data: Union[bytes, str]) -> None:
        b = data.encode() if isinstance(data, str) else bytes(data)
        step = max(1, self._conn.max_frame - 1024)
        try:
            for i in range(0, len(b), step):
                await self.write_stdin(pid, b[i:i + step])
        except SandboxAgentError:
            pass  # the process closed its stdin or exited: what it read is its business
        try:
            await self.close_stdin(pid)
        except SandboxAgentError:
            pass

    async def start_process(self, command: str, args: Sequence[str] = (), *,
                            env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                            user: Optional[str] = None, timeout: Optional[float] = None,
                            tag: Optional[str] = None, stdin_mode: str = "null",
                            clear_env: bool = False, pty: Union[bool, Tuple[int, int]] = False,
                            term: Optional[str] = None, kill_grace: Optional[float] = None,
                            output_window: Optional[int] = None, lossless: bool = False,
                            restart: Union[str, RestartPolicy, None] = None,
                            ready: Optional[Probe] = None, health: Optional[Probe] = None,
                            limits: Optional[Limits] = None,
                            request_timeout: Optional[float] = None) -> Process:
        """Starts command in the background; its output is kept by the agent
        for follow_output/stream_output. stdin_mode: "null" or "pipe" (then
        write_stdin/close_stdin). pty: True or (rows, cols) for a terminal.
        A service: restart ("on_failure", "always" or a RestartPolicy), a
        ready probe (then wait_ready) and a health probe; stop_service ends
        it. limits: the process's cgroup limits (Limits)."""
        if stdin_mode not in ("null", "pipe"):
            raise InvalidArgument(f"stdin_mode {stdin_mode!r}: expected 'null' or 'pipe'")
        sp = self._start_req(command, args, env, cwd, user, timeout, tag, clear_env,
                             stdin_mode == "pipe", pty, term, kill_grace, output_window, lossless,
                             restart, ready, health, limits)
        r = await self._call(pb.Request(start=sp), request_timeout)
        return Process(pid=r.started.pid, tag=tag or "", command=command,
                       args=list(sp.args), started_at_unix_nano=r.started.started_at_unix_nano)

    @staticmethod
    def _follow_req(pid: int, tag: Optional[str], from_sequence: int, lines: bool,
                    no_wait: bool) -> pb.Request:
        return pb.Request(follow=pb.FollowOutput(pid=pid, tag=tag or "", from_sequence=from_sequence,
                                                 lines=lines, no_wait=no_wait))

    async def follow_output(self, pid: int, *, from_sequence: int = 0, lines: bool = True,
                            tag: Optional[str] = None, no_wait: bool = False,
                            request_timeout: Optional[float] = None) -> FollowedOutput:
        """The process's output from from_sequence until it exits (no_wait:
        until what is kept now), collected: events in order, gaps included,
        and the exit. lines: whole lines per event. pid 0 with tag: the
        newest process with that tag."""
        events: List[Output] = []
        res = FollowedOutput(events, None)

        def each(r: pb.Response) -> None:
            if r.WhichOneof("result") == "exit" and r.done:
                res.exit = ProcessExit._from_pb(r.exit)
            events.extend(_output_events(r, lines))

        await self._collect(self._follow_req(pid, tag, from_sequence, lines, no_wait),
                            request_timeout, each)
        return res

    def stream_output(self, pid: int, *, from_sequence: int = 0, lines: bool = True,
                      tag: Optional[str] = None, no_wait: bool = False) -> OutputStream:
        """The process's output as it happens: an async iterator of
        OutputEvent and OutputGap (and, for a service, ServiceEvent: its
        runs' readiness, exits and restarts), ending when the process exits
        (its exit is then the stream's ``exit``). Close it (``aclose``, ``async with``) to
        stop following early."""
        return OutputStream(self._conn, self._conn.start(
            self._follow_req(pid, tag, from_sequence, lines, no_wait)), lines)

    async def wait(self, pid: int, *, request_timeout: Optional[float] = None) -> ProcessExit:
        """Waits for the process to exit and its output to be collected."""
        r = await self._call(pb.Request(wait=pb.WaitProcess(pid=pid)), request_timeout)
        return ProcessExit._from_pb(r.exit)

    async def send_signal(self, pid: int, sig: Union[int, _signal.Signals, str], *,
                          group: bool = False, tree: bool = False,
                          request_timeout: Optional[float] = None) -> None:
        """Signals the process (group: its whole process group; tree: every
        process in its cgroup, whatever its group or session)."""
        await self._call(pb.Request(signal=pb.SendSignal(pid=pid, signal=_signum(sig), group=group,
                                                         tree=tree)), request_timeout)

    async def freeze_processes(self, *, thaw_after: Optional[float] = None,
                               request_timeout: Optional[float] = None) -> None:
        """Freezes every started process at once (the agent keeps running);
        thaw_after: seconds after which the agent thaws them by itself."""
        await self._call(pb.Request(freeze_processes=pb.FreezeProcesses(
            thaw_after_ms=_ms(thaw_after))),
            request_timeout)

    async def thaw_processes(self, *, request_timeout: Optional[float] = None) -> None:
        await self._call(pb.Request(thaw_processes=pb.ThawProcesses()), request_timeout)

    async def write_stdin(self, pid: int, data: Union[bytes, str], *,
                          request_timeout: Optional[float] = None) -> None:
        """Returns once all of data is in the process's stdin pipe."""
        b = data.encode() if isinstance(data, str) else bytes(data)
        await self._call(pb.Request(write_stdin=pb.WriteStdin(pid=pid, data=b)), request_timeout)

    async def close_stdin(self, pid: int, *, request_timeout: Optional[float] = None) -> None:
        await self._call(pb.Request(close_stdin=pb.CloseStdin(pid=pid)), request_timeout)

    async def resize_pty(self, pid: int, rows: int, cols: int, *,
                         request_timeout: Optional[float] = None) -> None:
        await self._call(pb.Request(resize=pb.ResizePty(pid=pid, rows=rows, cols=cols)),
                         request_timeout)

    async def list_processes(self, include_exited: bool = False, *,
                             request_timeout: Optional[float] = None) -> List[ProcessInfo]:
        procs: List[ProcessInfo] = []

        def each(r: pb.Response) -> None:
            if r.WhichOneof("result") == "processes":
                procs.extend(ProcessInfo._from_pb(p) for p in r.processes.processes)

        await self._collect(pb.Request(list_processes=pb.ListProcesses(include_exited=include_exited)),
                            request_timeout, each)
        return procs

    async def get_process(self, pid: int = 0, *, tag: Optional[str] = None,
                          request_timeout: Optional[float] = None) -> ProcessInfo:
        """The process's record; pid 0 with tag: the service (or newest
        process) with that tag."""
        r = await self._call(pb.Request(get_process=pb.GetProcess(pid=pid, tag=tag or "")),
                             request_timeout)
        return ProcessInfo._from_pb(r.process)

    async def wait_ready(self, pid: int = 0, *, tag: Optional[str] = None,
                         timeout: Optional[float] = None,
                         request_timeout: Optional[float] = None) -> ProcessInfo:
        """Waits until the process (pid, or the service with tag) passes its
        ready probe; a process without one is ready while it runs. timeout:
        the agent gives up after that many seconds (DeadlineExceeded, with
        the service's state and last probe error); a run that ends before it
        is ready for good is FailedPrecondition."""
        r = await self._call(pb.Request(wait_ready=pb.WaitReady(
            pid=pid, tag=tag or "", timeout_ms=_ms(timeout))),
            request_timeout)
        return ProcessInfo._from_pb(r.process)

    async def stop_service(self, tag: str, *, sig: Union[int, _signal.Signals, str] = _signal.SIGTERM,
                           grace: Optional[float] = None,
                           request_timeout: Optional[float] = None) -> ProcessInfo:
        """Stops the service with tag for good (no restart): sig to its run,
        SIGKILL grace seconds later (None: the start's kill_grace). Returns
        its record once it has ended."""
        r = await self._call(pb.Request(stop_service=pb.StopService(
            tag=tag, signal=_signum(sig), grace_ms=_ms(grace))),
            request_timeout)
        return ProcessInfo._from_pb(r.process)

    async def forget_process(self, pid: int, *, request_timeout: Optional[float] = None) -> None:
        """Drops an exited process's record and output from the agent."""
        await self._call(pb.Request(forget=pb.ForgetProcess(pid=pid)), request_timeout)

    # ------------------------------------------------------------ files

    def _chunk_size(self) -> int:
        # A FileData request is the data plus a dozen bytes of framing.
        return max(4096, min(self._conn.max_frame - 1024, 4 << 20))

    async def _read_chunks(self, path: PathArg, offset: int, length: int, user: Optional[str],
                           request_timeout: Optional[float],
                           end: Optional[List[DownloadResult]] = None) -> AsyncIterator[bytes]:
        """The file's data, chunk by chunk, checked against the agent's size
        and CRC-32 at the end (IoError when they differ); the result is
        appended to end."""
        s, raw = _path(path)
        call = self._conn.start(pb.Request(read_file=pb.ReadFile(
            path=s, path_raw=raw, offset=offset, length=length, user=user or "")))
        deadline = _deadline(request_timeout)
        crc = 0
        got = 0
        try:
            while True:
                r = await self._conn.next(call, deadline)
                kind = r.WhichOneof("result")
                if kind == "chunk":
                    data = r.chunk.data
                    crc = zlib.crc32(data, crc)
                    got += len(data)
                    yield data
                elif kind == "file_end":
                    fe = r.file_end
                    if fe.size != got or fe.crc32 != crc:
                        raise IoError(f"read {path!r}: received {got} bytes with CRC-32 {crc:08x}, "
                                      f"the agent sent {fe.size} with {fe.crc32:08x}")
                    if end is not None:
                        end.append(DownloadResult(got, crc, Entry._from_pb(fe.entry)
                                                  if fe.HasField("entry") else None))
                if r.done:
                    return
        finally:
            self._conn.abandon(call)

    async def read_file(self, path: PathArg, *, offset: int = 0, length: int = 0,
                        user: Optional[str] = None,
                        request_timeout: Optional[float] = None) -> FileContent:
        """The file's content (from offset, length bytes; 0: to the end), as
        bytes. For large files use download(), which keeps memory flat."""
        parts = [c async for c in self._read_chunks(path, offset, length, user, request_timeout)]
        return FileContent(b"".join(parts))

    async def download(self, path: PathArg, local_path: PathArg, *, offset: int = 0,
                       length: int = 0, user: Optional[str] = None,
                       progress: Optional[Progress] = None,
                       request_timeout: Optional[float] = None) -> DownloadResult:
        """Copies the agent's file to local_path chunk by chunk (memory stays
        at a few chunks whatever the size); returns its size and CRC-32.
        progress(done_bytes, total_bytes) is called after every chunk. A
        failed copy leaves no partial regular file behind."""
        total: Optional[int] = None
        if progress is not None:
            try:
                total = max(0, (await self.stat(path, follow_symlinks=True, user=user)).size - offset)
                if length:
                    total = min(total, length)
            except SandboxAgentError:
                total = None
        loop = asyncio.get_running_loop()
        f = open(local_path, "wb")
        done = 0
        end: List[DownloadResult] = []
        try:
            async for chunk in self._read_chunks(path, offset, length, user, request_timeout, end):
                await loop.run_in_executor(None, f.write, chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            f.close()
            return end[0]
        except BaseException:
            f.close()
            if os.path.isfile(local_path):
                os.unlink(local_path)
            raise

    async def _chunks_of(self, data: WriteData) -> AsyncIterator[bytes]:
        step = self._chunk_size()
        if isinstance(data, (bytes, bytearray, memoryview)):
            mv = memoryview(data).cast("B")
            for i in range(0, len(mv), step):
                yield bytes(mv[i:i + step])
            return
        if hasattr(data, "read"):
            loop = asyncio.get_running_loop()
            f: Any = data
            while True:
                b = await loop.run_in_executor(None, f.read, step)
                if not b:
                    return
                yield bytes(b)
        pending = bytearray()
        if hasattr(data, "__aiter__"):
            src: Any = data
            async for piece in src:
                pending += piece
                while len(pending) >= step:
                    yield bytes(pending[:step])
                    del pending[:step]
        else:
            for piece in data:
                pending += piece
                while len(pending) >= step:
                    yield bytes(pending[:step])
                    del pending[:step]
        if pending:
            yield bytes(pending)

    async def write_file(self, path: PathArg, data: WriteData, *, mode: Optional[int] = None,
                         write_mode: str = "truncate", make_parents: bool = False,
                         atomic: Optional[bool] = None, owner: Optional[str] = None,
                         sync: bool = False, user: Optional[str] = None,
                         progress: Optional[Progress] = None,
                         request_timeout: Optional[float] = None) -> WriteResult:
        """Writes data (bytes, a binary file object, or an iterable or async
        iterable of bytes) to the agent's path, streamed in chunks: memory
        stays at a few chunks whatever the size. write_mode: "truncate",
        "append" or "create_new". By default (truncate, create_new) the file
        appears whole or not at all. The data's CRC-32 is checked by the
        agent (for bytes, before the file is put in place). request_timeout
        bounds the whole upload."""
        coro = self._write_file(path, data, mode, write_mode, make_parents, atomic, owner, sync,
                                user, progress)
        if request_timeout is None:
            return await coro
        try:
            return await asyncio.wait_for(coro, request_timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"write {path!r}: not done within {request_timeout} s; "
                                   "cancelled on the agent") from None

    async def _write_file(self, path: PathArg, data: WriteData, mode: Optional[int],
                          write_mode: str, make_parents: bool, atomic: Optional[bool],
                          owner: Optional[str], sync: bool, user: Optional[str],
                          progress: Optional[Progress]) -> WriteResult:
        if write_mode not in _WRITE_MODES:
            raise InvalidArgument(f"write_mode {write_mode!r}: expected one of {sorted(_WRITE_MODES)}")
        s, raw = _path(path)
        wf = pb.WriteFile(path=s, path_raw=raw, write_mode=_WRITE_MODES[write_mode],
                          make_parents=make_parents, owner=owner or "", sync=sync, user=user or "")
        if mode is not None:
            wf.mode = mode
        if atomic is not None:
            wf.atomic = atomic
        total: Optional[int] = None
        if isinstance(data, (bytes, bytearray, memoryview)):
            total = memoryview(data).nbytes
            wf.expected_crc32 = zlib.crc32(data)
        it = self._chunks_of(data).__aiter__()
        crc = 0
        sent = 0
        cur = await _anext(it)
        nxt = await _anext(it) if cur is not None else None
        wf.data = cur or b""
        wf.more = nxt is not None
        if cur:
            crc = zlib.crc32(cur, crc)
            sent += len(cur)
        call = self._conn.start(pb.Request(write_file=wf))
        try:
            if progress is not None:
                progress(sent, total)
            while nxt is not None and not call.finished:
                cur = nxt
                nxt = await _anext(it)
                await self._conn.send_file_data(call, cur, nxt is not None)
                crc = zlib.crc32(cur, crc)
                sent += len(cur)
                await self._conn.drain()
                if progress is not None:
                    progress(sent, total)
            r = await self._conn.next(call)
        finally:
            self._conn.abandon(call)
            close = getattr(it, "aclose", None)
            if close is not None:
                await close()
        w = r.written
        if w.bytes_written != sent or w.crc32 != crc:
            raise IoError(f"write {path!r}: sent {sent} bytes with CRC-32 {crc:08x}, the agent "
                          f"wrote {w.bytes_written} with {w.crc32:08x}")
        return WriteResult(w.bytes_written, w.crc32,
                           Entry._from_pb(w.entry) if w.HasField("entry") else None)

    async def upload(self, local_path: PathArg, path: PathArg, *, mode: Optional[int] = None,
                     make_parents: bool = False, owner: Optional[str] = None,
                     user: Optional[str] = None, progress: Optional[Progress] = None,
                     request_timeout: Optional[float] = None) -> WriteResult:
        """Copies local_path to the agent's path, chunk by chunk, atomically;
        mode defaults to the local file's permission bits."""
        with open(local_path, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size if _stat.S_ISREG(st.st_mode) else None

            def prog(done: int, _total: Optional[int]) -> None:
                if progress is not None:
                    progress(done, size)

            return await self.write_file(path, f, mode=st.st_mode & 0o7777 if mode is None else mode,
                                         make_parents=make_parents, owner=owner, user=user,
                                         progress=prog, request_timeout=request_timeout)

    async def list_directory(self, path: PathArg, depth: int = 1, *, include_hidden: bool = True,
                             user: Optional[str] = None,
                             request_timeout: Optional[float] = None) -> DirectoryListing:
        """The directory's entries (depth levels deep, depth first):
        subdirectories first, then the rest, each in byte order."""
        s, raw = _path(path)
        entries: List[Entry] = []

        def each(r: pb.Response) -> None:
            if r.WhichOneof("result") == "entries":
                entries.extend(Entry._from_pb(e) for e in r.entries.entries)

        await self._collect(pb.Request(list_dir=pb.ListDirectory(
            path=s, path_raw=raw, depth=depth, include_hidden=include_hidden, user=user or "")),
            request_timeout, each)
        return DirectoryListing(os.fsdecode(os.fspath(path)), entries)

    async def stat(self, path: PathArg, *, follow_symlinks: bool = False, user: Optional[str] = None,
                   request_timeout: Optional[float] = None) -> Entry:
        s, raw = _path(path)
        r = await self._call(pb.Request(stat=pb.Stat(path=s, path_raw=raw, user=user or "",
                                                     follow_symlinks=follow_symlinks)),
                             request_timeout)
        return Entry._from_pb(r.entry)

    async def mkdir(self, path: PathArg, *, parents: bool = False, mode: int = 0,
                    user: Optional[str] = None, request_timeout: Optional[float] = None) -> Entry:
        s, raw = _path(path)
        r = await self._call(pb.Request(mkdir=pb.MakeDirectory(path=s, path_raw=raw, parents=parents,
                                                               mode=mode, user=user or "")),
                             request_timeout)
        return Entry._from_pb(r.entry)

    async def remove(self, path: PathArg, *, recursive: bool = False, user: Optional[str] = None,
                     request_timeout: Optional[float] = None) -> None:
        s, raw = _path(path)
        await self._call(pb.Request(remove=pb.Remove(path=s, path_raw=raw, recursive=recursive,
                                                     user=user or "")), request_timeout)

    async def rename(self, source: PathArg, destination: PathArg, *, overwrite: bool = False,
                     make_parents: bool = False, user: Optional[str] = None,
                     request_timeout: Optional[float] = None) -> Entry:
        s, sraw = _path(source)
        d, draw = _path(destination)
        r = await self._call(pb.Request(rename=pb.Rename(
            source=s, source_raw=sraw, destination=d, destination_raw=draw, overwrite=overwrite,
            make_parents=make_parents, user=user or "")), request_timeout)
        return Entry._from_pb(r.entry)

    async def symlink(self, path: PathArg, target: PathArg, *, overwrite: bool = False,
                      user: Optional[str] = None,
                      request_timeout: Optional[float] = None) -> Entry:
        """Makes path a symbolic link to target (stored as given)."""
        s, raw = _path(path)
        t, traw = _path(target)
        r = await self._call(pb.Request(symlink=pb.MakeSymlink(
            path=s, path_raw=raw, target=t, target_raw=traw, overwrite=overwrite,
            user=user or "")), request_timeout)
        return Entry._from_pb(r.entry)

    async def set_attributes(self, path: PathArg, *, mode: Optional[int] = None,
                             mtime: Optional[float] = None, follow_symlinks: bool = False,
                             user: Optional[str] = None,
                             request_timeout: Optional[float] = None) -> Entry:
        """Sets the permission bits and/or the modification time (seconds
        since the epoch, like time.time()); what is None stays."""
        s, raw = _path(path)
        sa = pb.SetAttributes(path=s, path_raw=raw, follow_symlinks=follow_symlinks,
                              user=user or "")
        if mode is not None:
            sa.mode = mode
        if mtime is not None:
            sa.mtime_unix_nano = int(round(mtime * 1e9))
        r = await self._call(pb.Request(set_attributes=sa), request_timeout)
        return Entry._from_pb(r.entry)

    # ------------------------------------------------------------ lifecycle

    async def quiesce(self, mounts: Sequence[str] = (), *, thaw_after: Optional[float] = None,
                      dry_run: bool = False,
                      request_timeout: Optional[float] = None) -> QuiesceResult:
        """Before a snapshot: runs the pre-checkpoint hooks, syncs, and
        freezes mounts (none named: every local writable file system), all
        or nothing. The agent thaws by itself after thaw_after seconds (None:
        its --thaw-after-ms). dry_run: only say what would be frozen."""
        q = pb.Quiesce(mounts=list(mounts), dry_run=dry_run, thaw_after_ms=_ms(thaw_after))
        r = await self._call(pb.Request(quiesce=q), request_timeout)
        return QuiesceResult._from_pb(r.quiesced)

    async def thaw(self, *, request_timeout: Optional[float] = None) -> List[str]:
        """Thaws what quiesce froze; returns the mount points thawed."""
        r = await self._call(pb.Request(thaw=pb.Thaw()), request_timeout)
        return list(r.thawed.thawed)

    async def restored(self, *, unix_time: Optional[float] = None, entropy: bytes = b"",
                       generation: int = 0, env: Optional[Mapping[str, str]] = None,
                       request_timeout: Optional[float] = None) -> RestoredResult:
        """After a restore or resume: steps the clock to unix_time (seconds,
        like time.time(); None: leave it), mixes entropy (32..4096 bytes) into
        the kernel's pool and reseeds it, records generation, merges env into
        the environment of processes started from now on, thaws, and runs
        the post-restore hooks."""
        m = pb.Restored(entropy=entropy, generation=generation, env=dict(env or {}))
        if unix_time is not None:
            m.unix_time_nano = int(round(unix_time * 1e9))
        r = await self._call(pb.Request(restored=m), request_timeout)
        return RestoredResult._from_pb(r.restore_done)

    def watch_lifecycle(self) -> AsyncStream[LifecycleEvent]:
        """Quiesces, thaws, restores and clock steps as they happen, until
        closed."""
        def convert(r: pb.Response) -> List[LifecycleEvent]:
            return [LifecycleEvent._from_pb(r.lifecycle)] if r.WhichOneof("result") == "lifecycle" else []
        return self._stream(pb.Request(watch_lifecycle=pb.WatchLifecycle()), convert)

    # ------------------------------------------------------------ tunnels

    async def open_tunnel(self, target: str, *, window: int = 0, user: Optional[str] = None,
                          request_timeout: Optional[float] = None
                          ) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A byte stream to target ("tcp:HOST:PORT", "tcp::PORT" for the
        guest's localhost, "unix:/path") reached from inside the guest,
        multiplexed on this connection, as an asyncio StreamReader and
        StreamWriter. ``writer.write_eof()`` half-closes; ``writer.close()``
        sends what is buffered and the eof; ``writer.transport.abort()``
        ends it at once. window: bytes the agent may send ahead (0: its
        default, 256 KiB). user: connect to a unix socket as that user."""
        return await open_tunnel(self._conn, target, window, user, _deadline(request_timeout))

    async def forward(self, local_port: int, target: str, *, bind: str = "127.0.0.1",
                      window: int = 0, user: Optional[str] = None) -> Forwarder:
        """Listens on bind:local_port (0: a free port, then ``.port``) and
        carries every connection to target through a tunnel of its own on
        this connection, like ``ssh -L`` or ``sandboxctl forward``. Close the
        Forwarder (``await f.close()``, ``async with``) to stop."""
        return await Forwarder(self._conn, target, window, user)._start(bind, local_port)

    def watch(self, path: PathArg, *, recursive: bool = False,
              user: Optional[str] = None) -> AsyncStream[FsEvent]:
        """Changes under path as they happen, an async iterator of FsEvent
        that runs until closed (``aclose``, ``async with``)."""
        s, raw = _path(path)

        def convert(r: pb.Response) -> List[FsEvent]:
            return [FsEvent._from_pb(r.fs_event)] if r.WhichOneof("result") == "fs_event" else []

        return self._stream(pb.Request(watch=pb.WatchPath(path=s, path_raw=raw, recursive=recursive,
                                                          user=user or "")), convert)


async def _anext(it: AsyncIterator[bytes]) -> Optional[bytes]:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None


async def _settle(t: Awaitable[None]) -> None:
    try:
        await t
    except SandboxAgentError:
        pass
