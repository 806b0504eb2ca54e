"""Agent: the blocking counterpart of AsyncAgent, method for method.

It owns an event loop running in a thread of its own and runs the async
methods there; there is no second implementation of the protocol. Any
thread may call it. Interrupting a call (KeyboardInterrupt) cancels its
request on the agent.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import signal as _signal
import threading
from typing import (Coroutine, Generic, Iterator, List, Mapping, Optional,
                    Sequence, Tuple, TypeVar, Union)

from ._tunnel import Forwarder
from .aio import AsyncAgent, AsyncStream, OutputStream, PathArg, Progress, WriteData
from .errors import SandboxAgentError
from .types import (CommandResult, DirectoryListing, DownloadResult, Entry, FileContent,
                    FollowedOutput, FsEvent, HelloReply, Info, Output, Pong,
                    LifecycleEvent, Limits, Probe, Process, ProcessExit, ProcessInfo,
                    QuiesceResult, RestartPolicy, RestoredResult, WriteResult)

__all__ = ["Agent", "Stream", "SyncOutputStream", "Tunnel", "SyncForwarder"]

T = TypeVar("T")


class _LoopThread:
    """An event loop in a daemon thread, stopped by close()."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="sandbox-agent-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[object, object, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking Agent call from inside its own event loop")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except BaseException:
            # KeyboardInterrupt and the like: the task is cancelled, which
            # cancels its request on the agent.
            if not fut.done():
                fut.cancel()
                try:
                    fut.result(timeout=5)
                except (concurrent.futures.CancelledError, Exception):
                    pass
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Stream(Generic[T]):
    """A blocking iterator over an AsyncStream; close() stops it early."""

    def __init__(self, lt: _LoopThread, s: AsyncStream[T]) -> None:
        self._lt = lt
        self._s = s

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return self._lt.run(self._next())
        except StopAsyncIteration:
            raise StopIteration from None

    async def _next(self) -> T:
        return await self._s.__anext__()

    def close(self) -> None:
        self._lt.run(self._s.aclose())

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncOutputStream(Stream[Output]):
    def __init__(self, lt: _LoopThread, s: OutputStream) -> None:
        super().__init__(lt, s)
        self._out = s

    @property
    def exit(self) -> Optional[ProcessExit]:
        return self._out.exit


class Tunnel:
    """A blocking tunnel: the sync face of open_tunnel's reader and writer."""

    def __init__(self, lt: _LoopThread, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self._lt = lt
        self.reader = reader
        self.writer = writer

    def send(self, data: bytes) -> None:
        """Writes all of data (waiting while the agent's window is full)."""
        async def go() -> None:
            self.writer.write(data)
            await self.writer.drain()
        self._lt.run(go())

    def recv(self, n: int = 65536) -> bytes:
        """Up to n bytes; b"" once the target has closed its side."""
        return self._lt.run(self.reader.read(n))

    def recv_all(self) -> bytes:
        """Everything until the target closes its side."""
        return self._lt.run(self.reader.read())

    def shutdown_write(self) -> None:
        """Half-closes: the target sees EOF; its answer still arrives."""
        async def go() -> None:
            self.writer.write_eof()
        self._lt.run(go())

    def close(self) -> None:
        async def go() -> None:
            self.writer.close()
        self._lt.run(go())

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncForwarder:
    """forward()'s listener, blocking: ``port``, ``close()``."""

    def __init__(self, lt: _LoopThread, f: Forwarder) -> None:
        self._lt = lt
        self.forwarder = f

    @property
    def port(self) -> int:
        return self.forwarder.port

    @property
    def errors(self) -> List[SandboxAgentError]:
        return self.forwarder.errors

    def close(self) -> None:
        self._lt.run(self.forwarder.close())

    def __enter__(self) -> SyncForwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Agent:
    """A blocking connection to one agent: ``with Agent.connect() as agent:``.
    Every method of AsyncAgent, with the same name and parameters."""

    def __init__(self, address: Optional[str] = None, token: Optional[str] = None,
                 timeout: Optional[float] = 30.0, *, compress: Optional[bool] = None,
                 client_name: str = "sandbox_agent.py") -> None:
        self._lt = _LoopThread()
        try:
            self._a: AsyncAgent = self._lt.run(AsyncAgent.connect(
                address, token, timeout, compress=compress, client_name=client_name))
        except BaseException:
            self._lt.close()
            raise

    @classmethod
    def connect(cls, address: Optional[str] = None, token: Optional[str] = None,
                timeout: Optional[float] = 30.0, *, compress: Optional[bool] = None,
                client_name: str = "sandbox_agent.py") -> Agent:
        return cls(address, token, timeout, compress=compress, client_name=client_name)

    def close(self) -> None:
        if not self._lt.loop.is_closed():
            self._lt.run(self._a.close())
            self._lt.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> str:
        return self._a.address

    @property
    def closed(self) -> bool:
        return self._a.closed

    @property
    def capabilities(self) -> List[str]:
        return self._a.capabilities

    @property
    def hello(self) -> HelloReply:
        return self._a.hello

    def _run(self, coro: Coroutine[object, object, T]) -> T:
        return self._lt.run(coro)

    # ------------------------------------------------------------ control

    def ping(self, payload: bytes = b"", *, request_timeout: Optional[float] = None) -> Pong:
        return self._run(self._a.ping(payload, request_timeout=request_timeout))

    def info(self, *, request_timeout: Optional[float] = None) -> Info:
        return self._run(self._a.info(request_timeout=request_timeout))

    # ------------------------------------------------------------ processes

    def run(self, command: str, args: Sequence[str] = (), *,
            env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
            user: Optional[str] = None, timeout: Optional[float] = None,
            stdin: Optional[Union[bytes, str]] = None, tag: Optional[str] = None,
            clear_env: bool = False, pty: Union[bool, Tuple[int, int]] = False,
            kill_grace: Optional[float] = None, limits: Optional[Limits] = None,
            request_timeout: Optional[float] = None) -> CommandResult:
        return self._run(self._a.run(command, args, env=env, cwd=cwd, user=user, timeout=timeout,
                                     stdin=stdin, tag=tag, clear_env=clear_env, pty=pty,
                                     kill_grace=kill_grace, limits=limits,
                                     request_timeout=request_timeout))

    def start_process(self, command: str, args: Sequence[str] = (), *,
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
        return self._run(self._a.start_process(
            command, args, env=env, cwd=cwd, user=user, timeout=timeout, tag=tag,
            stdin_mode=stdin_mode, clear_env=clear_env, pty=pty, term=term, kill_grace=kill_grace,
            output_window=output_window, lossless=lossless, restart=restart, ready=ready,
            health=health, limits=limits, request_timeout=request_timeout))

    def follow_output(self, pid: int, *, from_sequence: int = 0, lines: bool = True,
                      tag: Optional[str] = None, no_wait: bool = False,
                      request_timeout: Optional[float] = None) -> FollowedOutput:
        return self._run(self._a.follow_output(pid, from_sequence=from_sequence, lines=lines,
                                               tag=tag, no_wait=no_wait,
                                               request_timeout=request_timeout))

    def stream_output(self, pid: int, *, from_sequence: int = 0, lines: bool = True,
                      tag: Optional[str] = None, no_wait: bool = False) -> SyncOutputStream:
        async def make() -> OutputStream:
            return self._a.stream_output(pid, from_sequence=from_sequence, lines=lines, tag=tag,
                                         no_wait=no_wait)
        return SyncOutputStream(self._lt, self._run(make()))

    def wait(self, pid: int, *, request_timeout: Optional[float] = None) -> ProcessExit:
        return self._run(self._a.wait(pid, request_timeout=request_timeout))

    def send_signal(self, pid: int, sig: Union[int, _signal.Signals, str], *,
                    group: bool = False, tree: bool = False,
                    request_timeout: Optional[float] = None) -> None:
        return self._run(self._a.send_signal(pid, sig, group=group, tree=tree,
                                             request_timeout=request_timeout))

    def freeze_processes(self, *, thaw_after: Optional[float] = None,
                         request_timeout: Optional[float] = None) -> None:
        return self._run(self._a.freeze_processes(thaw_after=thaw_after,
                                                  request_timeout=request_timeout))

    def thaw_processes(self, *, request_timeout: Optional[float] = None) -> None:
        return self._run(self._a.thaw_processes(request_timeout=request_timeout))

    def write_stdin(self, pid: int, data: Union[bytes, str], *,
                    request_timeout: Optional[float] = None) -> None:
        return self._run(self._a.write_stdin(pid, data, request_timeout=request_timeout))

    def close_stdin(self, pid: int, *, request_timeout: Optional[float] = None) -> None:
        return self._run(self._a.close_stdin(pid, request_timeout=request_timeout))

    def resize_pty(self, pid: int, rows: int, cols: int, *,
                   request_timeout: Optional[float] = None) -> None:
        return self._run(self._a.resize_pty(pid, rows, cols, request_timeout=request_timeout))

    def list_processes(self, include_exited: bool = False, *,
                       request_timeout: Optional[float] = None) -> List[ProcessInfo]:
        return self._run(self._a.list_processes(include_exited, request_timeout=request_timeout))

    def get_process(self, pid: int = 0, *, tag: Optional[str] = None,
                    request_timeout: Optional[float] = None) -> ProcessInfo:
        return self._run(self._a.get_process(pid, tag=tag, request_timeout=request_timeout))

    def wait_ready(self, pid: int = 0, *, tag: Optional[str] = None,
                   timeout: Optional[float] = None,
                   request_timeout: Optional[float] = None) -> ProcessInfo:
        return self._run(self._a.wait_ready(pid, tag=tag, timeout=timeout,
                                            request_timeout=request_timeout))

    def stop_service(self, tag: str, *, sig: Union[int, _signal.Signals, str] = _signal.SIGTERM,
                     grace: Optional[float] = None,
                     request_timeout: Optional[float] = None) -> ProcessInfo:
        return self._run(self._a.stop_service(tag, sig=sig, grace=grace,
                                              request_timeout=request_timeout))

    def forget_process(self, pid: int, *, request_timeout: Optional[float] = None) -> None:
        return self._run(self._a.forget_process(pid, request_timeout=request_timeout))

    # ------------------------------------------------------------ files

    def read_file(self, path: PathArg, *, offset: int = 0, length: int = 0,
                  user: Optional[str] = None,
                  request_timeout: Optional[float] = None) -> FileContent:
        return self._run(self._a.read_file(path, offset=offset, length=length, user=user,
                                           request_timeout=request_timeout))

    def download(self, path: PathArg, local_path: PathArg, *, offset: int = 0,
                 length: int = 0, user: Optional[str] = None,
                 progress: Optional[Progress] = None,
                 request_timeout: Optional[float] = None) -> DownloadResult:
        return self._run(self._a.download(path, local_path, offset=offset, length=length,
                                          user=user, progress=progress,
                                          request_timeout=request_timeout))

    def write_file(self, path: PathArg, data: WriteData, *, mode: Optional[int] = None,
                   write_mode: str = "truncate", make_parents: bool = False,
                   atomic: Optional[bool] = None, owner: Optional[str] = None,
                   sync: bool = False, user: Optional[str] = None,
                   progress: Optional[Progress] = None,
                   request_timeout: Optional[float] = None) -> WriteResult:
        return self._run(self._a.write_file(path, data, mode=mode, write_mode=write_mode,
                                            make_parents=make_parents, atomic=atomic, owner=owner,
                                            sync=sync, user=user, progress=progress,
                                            request_timeout=request_timeout))

    def upload(self, local_path: PathArg, path: PathArg, *, mode: Optional[int] = None,
               make_parents: bool = False, owner: Optional[str] = None,
               user: Optional[str] = None, progress: Optional[Progress] = None,
               request_timeout: Optional[float] = None) -> WriteResult:
        return self._run(self._a.upload(local_path, path, mode=mode, make_parents=make_parents,
                                        owner=owner, user=user, progress=progress,
                                        request_timeout=request_timeout))

    def list_directory(self, path: PathArg, depth: int = 1, *, include_hidden: bool = True,
                       user: Optional[str] = None,
                       request_timeout: Optional[float] = None) -> DirectoryListing:
        return self._run(self._a.list_directory(path, depth, include_hidden=include_hidden,
                                                user=user, request_timeout=request_timeout))

    def stat(self, path: PathArg, *, follow_symlinks: bool = False, user: Optional[str] = None,
             request_timeout: Optional[float] = None) -> Entry:
        return self._run(self._a.stat(path, follow_symlinks=follow_symlinks, user=user,
                                      request_timeout=request_timeout))

    def mkdir(self, path: PathArg, *, parents: bool = False, mode: int = 0,
              user: Optional[str] = None, request_timeout: Optional[float] = None) -> Entry:
        return self._run(self._a.mkdir(path, parents=parents, mode=mode, user=user,
                                       request_timeout=request_timeout))

    def remove(self, path: PathArg, *, recursive: bool = False, user: Optional[str] = None,
               request_timeout: Optional[float] = None) -> None:
        return self._run(self._a.remove(path, recursive=recursive, user=user,
                                        request_timeout=request_timeout))

    def rename(self, source: PathArg, destination: PathArg, *, overwrite: bool = False,
               make_parents: bool = False, user: Optional[str] = None,
               request_timeout: Optional[float] = None) -> Entry:
        return self._run(self._a.rename(source, destination, overwrite=overwrite,
                                        make_parents=make_parents, user=user,
                                        request_timeout=request_timeout))

    def symlink(self, path: PathArg, target: PathArg, *, overwrite: bool = False,
                user: Optional[str] = None, request_timeout: Optional[float] = None) -> Entry:
        return self._run(self._a.symlink(path, target, overwrite=overwrite, user=user,
                                         request_timeout=request_timeout))

    def set_attributes(self, path: PathArg, *, mode: Optional[int] = None,
                       mtime: Optional[float] = None, follow_symlinks: bool = False,
                       user: Optional[str] = None,
                       request_timeout: Optional[float] = None) -> Entry:
        return self._run(self._a.set_attributes(path, mode=mode, mtime=mtime,
                                                follow_symlinks=follow_symlinks, user=user,
                                                request_timeout=request_timeout))

    def quiesce(self, mounts: Sequence[str] = (), *, thaw_after: Optional[float] = None,
                dry_run: bool = False,
                request_timeout: Optional[float] = None) -> QuiesceResult:
        return self._run(self._a.quiesce(mounts, thaw_after=thaw_after, dry_run=dry_run,
                                         request_timeout=request_timeout))

    def thaw(self, *, request_timeout: Optional[float] = None) -> List[str]:
        return self._run(self._a.thaw(request_timeout=request_timeout))

    def restored(self, *, unix_time: Optional[float] = None, entropy: bytes = b"",
                 generation: int = 0, env: Optional[Mapping[str, str]] = None,
                 request_timeout: Optional[float] = None) -> RestoredResult:
        return self._run(self._a.restored(unix_time=unix_time, entropy=entropy,
                                          generation=generation, env=env,
                                          request_timeout=request_timeout))

    def watch_lifecycle(self) -> Stream[LifecycleEvent]:
        async def make() -> AsyncStream[LifecycleEvent]:
            return self._a.watch_lifecycle()
        return Stream(self._lt, self._run(make()))

    def open_tunnel(self, target: str, *, window: int = 0, user: Optional[str] = None,
                    request_timeout: Optional[float] = None) -> Tunnel:
        r, w = self._run(self._a.open_tunnel(target, window=window, user=user,
                                             request_timeout=request_timeout))
        return Tunnel(self._lt, r, w)

    def forward(self, local_port: int, target: str, *, bind: str = "127.0.0.1",
                window: int = 0, user: Optional[str] = None) -> SyncForwarder:
        return SyncForwarder(self._lt, self._run(self._a.forward(local_port, target, bind=bind,
                                                                 window=window, user=user)))

    def watch(self, path: PathArg, *, recursive: bool = False,
              user: Optional[str] = None) -> Stream[FsEvent]:
        async def make() -> AsyncStream[FsEvent]:
            return self._a.watch(path, recursive=recursive, user=user)
        return Stream(self._lt, self._run(make()))
