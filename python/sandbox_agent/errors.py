"""The exception hierarchy, one class per Error.Code of proto/agent.proto.

Every error the agent answers with becomes an instance of the class of its
code, carrying ``code`` (the name, e.g. "NOT_FOUND"), ``message`` (the
agent's text, naming what was wrong with what) and ``os_errno`` (the errno
behind it, 0 if none). Where a built-in exception means the same thing the
class subclasses it too, so ``except FileNotFoundError`` catches a missing
file on the agent's side as it would a local one.
"""
from __future__ import annotations

from typing import Dict, Type

__all__ = [
    "SandboxAgentError", "InvalidArgument", "NotFound", "AlreadyExists",
    "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Unauthenticated", "Unimplemented", "Cancelled", "InternalError",
    "Unavailable", "IoError", "ProtocolError", "DeadlineExceeded",
    "ConnectionLost", "error_class", "error_from_code",
]


class SandboxAgentError(Exception):
    """An error answered by the agent, or met on the way to it."""

    code: str = "CODE_UNSPECIFIED"

    def __init__(self, message: str = "", *, code: str | None = None,
                 os_errno: int = 0) -> None:
        if issubclass(type(self), OSError):
            # OSError's own constructor fills errno/strerror from (errno, text).
            super().__init__(os_errno, message)
        else:
            super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.os_errno = os_errno

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, self.code, self.os_errno))


def _rebuild(cls: Type[SandboxAgentError], message: str, code: str,
             os_errno: int) -> SandboxAgentError:
    return cls(message, code=code, os_errno=os_errno)


class InvalidArgument(SandboxAgentError, ValueError):
    """The request is malformed or names something impossible."""
    code = "INVALID_ARGUMENT"


class NotFound(SandboxAgentError, FileNotFoundError):
    """No such file, directory, process, command or user."""
    code = "NOT_FOUND"


class AlreadyExists(SandboxAgentError, FileExistsError):
    code = "ALREADY_EXISTS"


class PermissionDenied(SandboxAgentError, PermissionError):
    code = "PERMISSION_DENIED"


class ResourceExhausted(SandboxAgentError):
    """A limit of the agent or the machine: connections, processes, disk..."""
    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(SandboxAgentError):
    """The target is in the wrong state (a directory where a file was
    expected, a process that already exited)."""
    code = "FAILED_PRECONDITION"


class Unauthenticated(SandboxAgentError):
    """The agent wants a token, and this one is missing or wrong."""
    code = "UNAUTHENTICATED"


class Unimplemented(SandboxAgentError, NotImplementedError):
    """The agent does not know this operation (it is older than the client)."""
    code = "UNIMPLEMENTED"


class Cancelled(SandboxAgentError):
    code = "CANCELLED"


class InternalError(SandboxAgentError):
    code = "INTERNAL"


class Unavailable(SandboxAgentError, ConnectionError):
    """The agent cannot serve the request now (it is shutting down), or the
    connection to it is gone."""
    code = "UNAVAILABLE"


class IoError(SandboxAgentError, OSError):
    """An I/O error on the agent's side, or data that arrived corrupted."""
    code = "IO_ERROR"


class ProtocolError(SandboxAgentError):
    """A frame was malformed; the connection is closed."""
    code = "PROTOCOL_ERROR"


class DeadlineExceeded(SandboxAgentError, TimeoutError):
    """The call took longer than its timeout; it was cancelled on the agent."""
    code = "DEADLINE_EXCEEDED"


class ConnectionLost(Unavailable):
    """The connection closed while the call was in flight, or before it was
    made. Every call pending on that connection raises it."""


_BY_CODE: Dict[str, Type[SandboxAgentError]] = {
    cls.code: cls for cls in (
        InvalidArgument, NotFound, AlreadyExists, PermissionDenied,
        ResourceExhausted, FailedPrecondition, Unauthenticated, Unimplemented,
        Cancelled, InternalError, Unavailable, IoError, ProtocolError,
        DeadlineExceeded)
}


def error_class(code: str) -> Type[SandboxAgentError]:
    """The class for an Error.Code name; SandboxAgentError for a code this
    client does not know (a newer agent)."""
    return _BY_CODE.get(code, SandboxAgentError)


def error_from_code(code: str, message: str, os_errno: int = 0) -> SandboxAgentError:
    return error_class(code)(message, code=code, os_errno=os_errno)
