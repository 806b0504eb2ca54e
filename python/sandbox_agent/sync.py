"""Agent: the blocking counterpart of AsyncAgent, method for method.

It owns an event loop running in a thread of its own and runs the async
methods there; there is no second implementation of the protocol. Any
thread may call it. Interrupting a call (KeyboardInterrupt) cancels its
request on the agent.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from typing import (TYPE_CHECKING, Any, Callable, Coroutine, Generic, Iterator, List,
                    Optional, Tuple, TypeVar)

from ._tunnel import Forwarder
from .aio import AsyncAgent, AsyncStream, OutputStream
from .errors import SandboxAgentError
from .types import FsEvent, HelloReply, LifecycleEvent, Output, ProcessExit

__all__ = ["Agent", "Stream", "SyncOutputStream", "Tunnel", "SyncForwarder"]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")
if TYPE_CHECKING:
    # Only the type checker needs them (annotations are not evaluated at run
    # time), so Python 3.9 needs no typing_extensions.
    from typing_extensions import Concatenate, ParamSpec
    P = ParamSpec("P")


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


def _blocking(f: Callable[Concatenate[AsyncAgent, P], Coroutine[Any, Any, T]]
              ) -> Callable[Concatenate[Agent, P], T]:
    """Agent's method for AsyncAgent's coroutine method f: the same
    parameters, run on the agent's loop thread until it returns."""
    @functools.wraps(f)
    def method(self: Agent, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._lt.run(f(self._a, *args, **kwargs))
    method.__qualname__ = "Agent." + f.__name__
    return method


def _blocking_to(f: Callable[Concatenate[AsyncAgent, P], Coroutine[Any, Any, T]],
                 wrap: Callable[[_LoopThread, T], R]) -> Callable[Concatenate[Agent, P], R]:
    """The same, for a result that needs the loop thread to be used (a
    tunnel's reader and writer, a forwarder): wrap(loop thread, result)."""
    @functools.wraps(f)
    def method(self: Agent, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return wrap(self._lt, self._lt.run(f(self._a, *args, **kwargs)))
    method.__qualname__ = "Agent." + f.__name__
    return method


def _on_loop(f: Callable[Concatenate[AsyncAgent, P], S],
             wrap: Callable[[_LoopThread, S], R]) -> Callable[Concatenate[Agent, P], R]:
    """Agent's method for AsyncAgent's method f that returns a stream: f
    runs on the loop thread (the stream's request is sent from there), and
    wrap makes the stream a blocking one."""
    @functools.wraps(f)
    def method(self: Agent, /, *args: P.args, **kwargs: P.kwargs) -> R:
        async def make() -> S:
            return f(self._a, *args, **kwargs)
        return wrap(self._lt, self._lt.run(make()))
    method.__qualname__ = "Agent." + f.__name__
    return method


def _tunnel_of(lt: _LoopThread, rw: Tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> Tunnel:
    return Tunnel(lt, rw[0], rw[1])


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

    # Every method below is AsyncAgent's, run on the loop thread: its
    # parameters and documentation are AsyncAgent's, declared once there.

    # ------------------------------------------------------------ control

    ping = _blocking(AsyncAgent.ping)
    info = _blocking(AsyncAgent.info)

    # ------------------------------------------------------------ processes

    run = _blocking(AsyncAgent.run)
    start_process = _blocking(AsyncAgent.start_process)
    follow_output = _blocking(AsyncAgent.follow_output)
    stream_output = _on_loop(AsyncAgent.stream_output, SyncOutputStream)
    wait = _blocking(AsyncAgent.wait)
    send_signal = _blocking(AsyncAgent.send_signal)
    freeze_processes = _blocking(AsyncAgent.freeze_processes)
    thaw_processes = _blocking(AsyncAgent.thaw_processes)
    write_stdin = _blocking(AsyncAgent.write_stdin)
    close_stdin = _blocking(AsyncAgent.close_stdin)
    resize_pty = _blocking(AsyncAgent.resize_pty)
    list_processes = _blocking(AsyncAgent.list_processes)
    get_process = _blocking(AsyncAgent.get_process)
    wait_ready = _blocking(AsyncAgent.wait_ready)
    stop_service = _blocking(AsyncAgent.stop_service)
    forget_process = _blocking(AsyncAgent.forget_process)

    # ------------------------------------------------------------ files

    read_file = _blocking(AsyncAgent.read_file)
    download = _blocking(AsyncAgent.download)
    write_file = _blocking(AsyncAgent.write_file)
    upload = _blocking(AsyncAgent.upload)
    list_directory = _blocking(AsyncAgent.list_directory)
    stat = _blocking(AsyncAgent.stat)
    mkdir = _blocking(AsyncAgent.mkdir)
    remove = _blocking(AsyncAgent.remove)
    rename = _blocking(AsyncAgent.rename)
    symlink = _blocking(AsyncAgent.symlink)
    set_attributes = _blocking(AsyncAgent.set_attributes)
    watch = _on_loop(AsyncAgent.watch, Stream[FsEvent])

    # ------------------------------------------------------------ lifecycle

    quiesce = _blocking(AsyncAgent.quiesce)
    thaw = _blocking(AsyncAgent.thaw)
    restored = _blocking(AsyncAgent.restored)
    watch_lifecycle = _on_loop(AsyncAgent.watch_lifecycle, Stream[LifecycleEvent])

    # ------------------------------------------------------------ tunnels

    open_tunnel = _blocking_to(AsyncAgent.open_tunnel, _tunnel_of)
    forward = _blocking_to(AsyncAgent.forward, SyncForwarder)
