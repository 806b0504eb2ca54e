"""sandbox_agent: a client for sandbox-agent, asyncio first.

    import asyncio
    from sandbox_agent import AsyncAgent

    async def main():
        async with await AsyncAgent.connect("unix:/run/sandbox-agent.sock") as agent:
            result = await agent.run("python3", ["-c", "print('hello')"])
            print(result.stdout)

    asyncio.run(main())

``Agent`` is the same client, blocking. Errors are subclasses of
``SandboxAgentError``, one per Error.Code (``NotFound`` is also a
``FileNotFoundError``, ``PermissionDenied`` a ``PermissionError``, ...).
The protocol is docs/PROTOCOL.md; the messages come from proto/agent.proto,
compiled into ``sandbox_agent.agent_pb2`` when the package is built.
"""
from .aio import PROTOCOL_VERSION, AsyncAgent, AsyncStream, OutputStream
from .errors import (AlreadyExists, Cancelled, ConnectionLost, DeadlineExceeded,
                     FailedPrecondition, InternalError, InvalidArgument, IoError,
                     NotFound, PermissionDenied, ProtocolError, ResourceExhausted,
                     SandboxAgentError, Unauthenticated, Unavailable, Unimplemented,
                     error_class)
from ._tunnel import Forwarder
from .sync import Agent, Stream, SyncForwarder, SyncOutputStream, Tunnel
from .types import (CommandResult, DirectoryListing, DownloadResult, Entry, FileContent,
                    FollowedOutput, FsEvent, HelloReply, Info, OutputEvent,
                    LifecycleEvent, Limits, OutputGap, Pong, Probe, Process, ProcessExit,
                    ProcessInfo, QuiesceResult, RestartPolicy, RestoredResult, ServiceEvent,
                    WriteResult)

__version__ = "0.1.0"

__all__ = [
    "AsyncAgent", "Agent", "AsyncStream", "OutputStream",
    "Stream", "SyncOutputStream", "Forwarder", "SyncForwarder", "Tunnel", "PROTOCOL_VERSION",
    "SandboxAgentError", "InvalidArgument", "NotFound", "AlreadyExists",
    "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Unauthenticated",
    "Unimplemented", "Cancelled", "InternalError", "Unavailable", "IoError",
    "ProtocolError", "DeadlineExceeded", "ConnectionLost", "error_class",
    "CommandResult", "DirectoryListing", "DownloadResult", "Entry", "FileContent", "FollowedOutput",
    "FsEvent", "HelloReply", "Info", "OutputEvent", "OutputGap", "Pong", "Probe", "Process",
    "ProcessExit", "ProcessInfo", "RestartPolicy", "WriteResult", "QuiesceResult",
    "RestoredResult", "LifecycleEvent", "Limits", "ServiceEvent",
]
