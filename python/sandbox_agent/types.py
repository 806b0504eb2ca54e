"""Plain, typed results of the agent's operations.

Each is a dataclass built from the agent's protobuf message; nothing here
talks to the agent. Times are kept as the agent sends them (nanoseconds since
the epoch, ``*_unix_nano``) and also offered in seconds (``*_at``), like
``time.time()``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

from . import agent_pb2 as pb

__all__ = [
    "CommandResult", "Process", "Probe", "RestartPolicy", "Limits", "ProcessExit", "ProcessInfo", "OutputEvent",
    "OutputGap", "FollowedOutput", "Entry", "DirectoryListing", "FileContent",
    "WriteResult", "DownloadResult", "FsEvent", "QuiesceResult", "RestoredResult",
    "LifecycleEvent", "Info", "Pong", "HelloReply",
]

_STREAMS = {pb.STREAM_UNSPECIFIED: "", pb.STDOUT: "stdout", pb.STDERR: "stderr",
            pb.PTY: "pty"}
# "file", "directory", "symlink", "fifo", "socket", "char_device", ...: the
# enum's names, so a type added to the proto needs no change here.
_TYPES = {v: k.lower() for k, v in pb.FileType.items()}
_TYPES[pb.TYPE_UNSPECIFIED] = ""
_STATES = {pb.STATE_UNSPECIFIED: "", pb.RUNNING: "running", pb.EXITED: "exited"}


def _seconds(ns: int) -> float:
    return ns / 1e9


@dataclass(frozen=True)
class ProcessExit:
    """How a process ended. A process killed by a signal has ``signal`` set
    and ``exit_code`` 128 + signal, as a shell reports it."""
    exit_code: int
    signal: int = 0
    core_dumped: bool = False
    timed_out: bool = False
    ended_at_unix_nano: int = 0
    total_output_bytes: int = 0
    # From the process's cgroup, when it had one.
    oom_killed: bool = False
    cpu_user_nano: int = 0
    cpu_system_nano: int = 0
    memory_peak_bytes: int = 0

    @property
    def ended_at(self) -> float:
        return _seconds(self.ended_at_unix_nano)

    @staticmethod
    def _from_pb(m: pb.ProcessExit) -> ProcessExit:
        return ProcessExit(exit_code=m.exit_code, signal=m.signal,
                           core_dumped=m.core_dumped, timed_out=m.timed_out,
                           ended_at_unix_nano=m.ended_at_unix_nano,
                           total_output_bytes=m.total_output_bytes, oom_killed=m.oom_killed,
                           cpu_user_nano=m.cpu_user_nano, cpu_system_nano=m.cpu_system_nano,
                           memory_peak_bytes=m.memory_peak_bytes)


@dataclass(frozen=True)
class OutputEvent:
    """A piece of a process's output: ``data`` of one ``stream`` ("stdout",
    "stderr" or "pty"), at ``sequence`` in the combined output."""
    stream: str
    data: bytes
    sequence: int
    offset: int
    timestamp_unix_nano: int

    is_gap = False
    is_service_event = False

    @property
    def line(self) -> str:
        """The data as text (UTF-8, undecodable bytes replaced); with
        ``lines=True`` one whole line, ending with its newline."""
        return self.data.decode("utf-8", "replace")

    @property
    def timestamp(self) -> float:
        return _seconds(self.timestamp_unix_nano)

    @staticmethod
    def _from_pb(m: pb.OutputEvent) -> OutputEvent:
        return OutputEvent(stream=_STREAMS.get(m.stream, str(m.stream)), data=m.data,
                           sequence=m.sequence, offset=m.offset,
                           timestamp_unix_nano=m.timestamp_unix_nano)


@dataclass(frozen=True)
class OutputGap:
    """Output the agent no longer had when this follower reached it:
    ``skipped_bytes`` of ``stream`` ("" for both), from ``from_sequence`` up to
    ``to_sequence``, where delivery resumed. Reported, never silent."""
    stream: str
    skipped_bytes: int
    from_sequence: int
    to_sequence: int

    is_gap = True
    is_service_event = False
    data = b""
    line = ""

    @property
    def sequence(self) -> int:
        return self.from_sequence

    @staticmethod
    def _from_pb(m: pb.OutputGap) -> OutputGap:
        return OutputGap(stream=_STREAMS.get(m.stream, str(m.stream)),
                         skipped_bytes=m.skipped_bytes,
                         from_sequence=m.from_sequence, to_sequence=m.to_sequence)


@dataclass(frozen=True)
class ServiceEvent:
    """A service's run changing, in its place among the output of a follow
    (``is_service_event``): ``kind`` "ready" (the run's ready probe passed),
    "exited" (the run ended, ``exit`` says how; the service goes on, so the
    stream does too) or "restarted" (the next run started: its ``pid`` and
    the ``restarts`` so far, which jump by more than one when this follower
    fell more than 64 runs behind). ``at_unix_nano``: when it happened. The
    service's last exit ends the stream as ``exit``, as for any process."""
    kind: str
    at_unix_nano: int
    pid: int = 0
    restarts: int = 0
    exit: Optional[ProcessExit] = None

    is_gap = False
    is_service_event = True
    stream = ""
    data = b""
    line = ""

    @property
    def timestamp(self) -> float:
        return _seconds(self.at_unix_nano)

    @staticmethod
    def _from_pb(r: pb.Response) -> Optional[ServiceEvent]:
        """The service event of a follow's response; None for any other."""
        kind = r.WhichOneof("result")
        if kind == "ready":
            return ServiceEvent("ready", r.ready.at_unix_nano)
        if kind == "restarted":
            return ServiceEvent("restarted", r.restarted.at_unix_nano, pid=r.restarted.pid,
                                restarts=r.restarted.restarts)
        if kind == "exit" and not r.done:
            x = ProcessExit._from_pb(r.exit)
            return ServiceEvent("exited", x.ended_at_unix_nano, exit=x)
        return None


Output = Union[OutputEvent, OutputGap, ServiceEvent]


@dataclass
class FollowedOutput:
    """Everything ``follow_output`` collected: the events in order (gaps and
    a service's events included) and the exit. Iterating it iterates the
    events."""
    events: List[Output]
    exit: Optional[ProcessExit]

    def __iter__(self) -> Iterator[Output]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, i: int) -> Output:
        return self.events[i]

    @property
    def value(self) -> List[Output]:
        return self.events

    @property
    def stdout(self) -> bytes:
        return b"".join(e.data for e in self.events if e.stream in ("stdout", "pty"))

    @property
    def stderr(self) -> bytes:
        return b"".join(e.data for e in self.events if e.stream == "stderr")


@dataclass
class CommandResult:
    """The result of ``run``: the exit and the whole output."""
    pid: int
    exit_code: int
    signal: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    core_dumped: bool = False
    started_at_unix_nano: int = 0
    ended_at_unix_nano: int = 0
    gaps: List[OutputGap] = field(default_factory=list)
    oom_killed: bool = False
    cpu_user_nano: int = 0
    cpu_system_nano: int = 0
    memory_peak_bytes: int = 0

    @property
    def value(self) -> CommandResult:
        return self

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.signal == 0


@dataclass(frozen=True)
class Process:
    """A started process. ``pid`` names it in every later call."""
    pid: int
    tag: str
    command: str
    args: List[str]
    started_at_unix_nano: int

    @property
    def started_at(self) -> float:
        return _seconds(self.started_at_unix_nano)


_SERVICE_STATES = {v: k.lower() for k, v in pb.ServiceState.items()}
_SERVICE_STATES[pb.SERVICE_STATE_UNSPECIFIED] = ""


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    tag: str
    command: str
    args: List[str]
    cwd: str
    user: str
    state: str  # "running" or "exited"
    exit: Optional[ProcessExit]
    started_at_unix_nano: int
    ended_at_unix_nano: int
    stdout_bytes: int
    stderr_bytes: int
    pty_bytes: int
    pty: bool
    stdin_pipe: bool
    lossless: bool
    oldest_sequence: int
    next_sequence: int
    # Services (a restart policy or probes); zero otherwise.
    restarts: int = 0
    service_state: str = ""  # "starting", "ready", "unhealthy", "backing_off", "stopped", "failed"
    last_exit: Optional[ProcessExit] = None
    next_restart_unix_nano: int = 0
    last_probe_error: str = ""
    output_window: int = 0
    # The process's cgroup ("" without cgroups) and its figures.
    cgroup: str = ""
    cpu_user_nano: int = 0
    cpu_system_nano: int = 0
    memory_current_bytes: int = 0
    memory_peak_bytes: int = 0
    pids_current: int = 0
    oom_killed: bool = False

    @property
    def status(self) -> str:
        return self.state

    @property
    def running(self) -> bool:
        return self.state == "running"

    @staticmethod
    def _from_pb(m: pb.ProcessInfo) -> ProcessInfo:
        return ProcessInfo(
            pid=m.pid, tag=m.tag, command=m.command, args=list(m.args), cwd=m.cwd,
            user=m.user, state=_STATES.get(m.state, str(m.state)),
            exit=ProcessExit._from_pb(m.exit) if m.HasField("exit") else None,
            started_at_unix_nano=m.started_at_unix_nano,
            ended_at_unix_nano=m.ended_at_unix_nano, stdout_bytes=m.stdout_bytes,
            stderr_bytes=m.stderr_bytes, pty_bytes=m.pty_bytes, pty=m.pty,
            stdin_pipe=m.stdin_mode == pb.STDIN_PIPE, lossless=m.lossless,
            oldest_sequence=m.oldest_sequence, next_sequence=m.next_sequence,
            restarts=m.restarts, service_state=_SERVICE_STATES.get(m.service_state, ""),
            last_exit=ProcessExit._from_pb(m.last_exit) if m.HasField("last_exit") else None,
            next_restart_unix_nano=m.next_restart_unix_nano,
            last_probe_error=m.last_probe_error, output_window=m.output_window,
            cgroup=m.cgroup, cpu_user_nano=m.cpu_user_nano, cpu_system_nano=m.cpu_system_nano,
            memory_current_bytes=m.memory_current_bytes, memory_peak_bytes=m.memory_peak_bytes,
            pids_current=m.pids_current, oom_killed=m.oom_killed)


def _ms(seconds: Optional[float]) -> int:
    return 0 if seconds is None else max(1, int(seconds * 1000))


@dataclass(frozen=True)
class Probe:
    """How the agent tells that a service is ready (``ready=``) or healthy
    (``health=``): make one with Probe.tcp, Probe.http, Probe.exec or
    Probe.output. Times are in seconds (None: the agent's default)."""
    kind: str
    port: int = 0
    host: str = ""
    path: str = ""
    status_min: int = 0
    status_max: int = 0
    host_header: str = ""
    command: str = ""
    args: Tuple[str, ...] = ()
    contains: str = ""
    line_prefix: str = ""
    interval: Optional[float] = None
    timeout: Optional[float] = None
    failure_threshold: int = 0
    initial_delay: Optional[float] = None

    @staticmethod
    def tcp(port: int, host: str = "", **timing: Any) -> Probe:
        """Ready when a TCP connection to host (default 127.0.0.1):port opens."""
        return Probe("tcp", port=port, host=host, **timing)

    @staticmethod
    def http(port: int, path: str = "/", *, host: str = "", status_min: int = 0,
             status_max: int = 0, host_header: str = "", **timing: Any) -> Probe:
        """Ready when GET path answers a status in [status_min, status_max]
        (default 200..399)."""
        return Probe("http", port=port, path=path, host=host, status_min=status_min,
                     status_max=status_max, host_header=host_header, **timing)

    @staticmethod
    def exec(command: str, args: Sequence[str] = (), **timing: Any) -> Probe:
        """Ready when command exits 0."""
        return Probe("exec", command=command, args=tuple(args), **timing)

    @staticmethod
    def output(contains: str = "", line_prefix: str = "", **timing: Any) -> Probe:
        """Ready when the run's output contains a string, or a line starting
        with line_prefix."""
        return Probe("output", contains=contains, line_prefix=line_prefix, **timing)

    def _to_pb(self) -> pb.Probe:
        m = pb.Probe(interval_ms=_ms(self.interval), timeout_ms=_ms(self.timeout),
                     failure_threshold=self.failure_threshold,
                     initial_delay_ms=_ms(self.initial_delay))
        if self.kind == "tcp":
            m.tcp.CopyFrom(pb.TcpProbe(port=self.port, host=self.host))
        elif self.kind == "http":
            m.http.CopyFrom(pb.HttpProbe(port=self.port, path=self.path,
                                         status_min=self.status_min, status_max=self.status_max,
                                         host_header=self.host_header, host=self.host))
        elif self.kind == "exec":
            m.exec.CopyFrom(pb.ExecProbe(command=self.command, args=list(self.args)))
        elif self.kind == "output":
            m.output.CopyFrom(pb.OutputProbe(contains=self.contains, line_prefix=self.line_prefix))
        else:
            raise ValueError(f"probe kind {self.kind!r}: expected tcp, http, exec or output")
        return m


@dataclass(frozen=True)
class Limits:
    """Limits of a started process, enforced by its cgroup (the agent's
    ``cgroups`` capability): memory in bytes, cpu_max in millicores (1000:
    one CPU), weights 1..10000. None: unset (the agent's default). A limit
    whose controller is missing is FailedPrecondition, never ignored."""
    memory_max: Optional[int] = None
    memory_swap_max: Optional[int] = None
    memory_high: Optional[int] = None
    pids_max: Optional[int] = None
    cpu_max_millicores: Optional[int] = None
    cpu_weight: Optional[int] = None
    io_weight: Optional[int] = None

    def _to_pb(self) -> pb.Limits:
        return pb.Limits(memory_max_bytes=self.memory_max or 0,
                         memory_swap_max_bytes=self.memory_swap_max or 0,
                         memory_high_bytes=self.memory_high or 0, pids_max=self.pids_max or 0,
                         cpu_max_millicores=self.cpu_max_millicores or 0,
                         cpu_weight=self.cpu_weight or 0, io_weight=self.io_weight or 0)


_RESTART_MODES = {"never": pb.RestartPolicy.NEVER, "on_failure": pb.RestartPolicy.ON_FAILURE,
                  "always": pb.RestartPolicy.ALWAYS}


@dataclass(frozen=True)
class RestartPolicy:
    """When the agent starts a service again: mode "on_failure" (an exit
    code other than 0, a signal, a timeout, unhealthy) or "always"; at most
    max_restarts times in a row (0: no limit), backing off from
    backoff_initial to backoff_max seconds; a run that lasts reset_after
    seconds resets the count."""
    mode: str = "on_failure"
    max_restarts: int = 0
    backoff_initial: Optional[float] = None
    backoff_max: Optional[float] = None
    reset_after: Optional[float] = None

    def _to_pb(self) -> pb.RestartPolicy:
        if self.mode not in _RESTART_MODES:
            raise ValueError(f"restart mode {self.mode!r}: expected one of {sorted(_RESTART_MODES)}")
        return pb.RestartPolicy(mode=_RESTART_MODES[self.mode], max_restarts=self.max_restarts,
                                backoff_initial_ms=_ms(self.backoff_initial),
                                backoff_max_ms=_ms(self.backoff_max),
                                reset_after_ms=_ms(self.reset_after))


def _name(s: str, raw: bytes) -> Union[str, bytes]:
    return raw if raw else s


@dataclass(frozen=True)
class Entry:
    """A file, directory, symlink or other node on the agent's side.
    ``path_raw``/``name_raw`` hold the exact bytes when the name is not valid
    UTF-8 (``name``/``path`` then show it with U+FFFD); pass ``raw_path`` to
    other calls to act on such an entry."""
    name: str
    path: str
    type: str  # "file", "directory", "symlink", "fifo", "socket", "char_device", "block_device"
    size: int
    mode: int
    uid: int
    gid: int
    owner: str
    group: str
    mtime_unix_nano: int
    symlink_target: str
    nlink: int
    inode: int
    name_raw: bytes = b""
    path_raw: bytes = b""
    rdev_major: int = 0
    rdev_minor: int = 0

    @property
    def is_dir(self) -> bool:
        return self.type == "directory"

    @property
    def is_file(self) -> bool:
        return self.type == "file"

    @property
    def is_symlink(self) -> bool:
        return self.type == "symlink"

    @property
    def mtime(self) -> float:
        return _seconds(self.mtime_unix_nano)

    @property
    def raw_path(self) -> Union[str, bytes]:
        """The path to give back to the agent: exact bytes when needed."""
        return _name(self.path, self.path_raw)

    @staticmethod
    def _from_pb(m: pb.Entry) -> Entry:
        return Entry(name=m.name, path=m.path, type=_TYPES.get(m.type, str(m.type)),
                     size=m.size, mode=m.mode, uid=m.uid, gid=m.gid, owner=m.owner,
                     group=m.group, mtime_unix_nano=m.mtime_unix_nano,
                     symlink_target=m.symlink_target, nlink=m.nlink, inode=m.inode,
                     name_raw=m.name_raw, path_raw=m.path_raw,
                     rdev_major=m.rdev_major, rdev_minor=m.rdev_minor)


@dataclass
class DirectoryListing:
    """The result of ``list_directory``; ``.value.entries`` reads as
    ``.entries``."""
    path: str
    entries: List[Entry]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def value(self) -> DirectoryListing:
        return self


class FileContent(bytes):
    """A file's content: a ``bytes`` (``.value`` is the same bytes)."""

    @property
    def value(self) -> bytes:
        return bytes(self)


@dataclass(frozen=True)
class WriteResult:
    bytes_written: int
    crc32: int
    entry: Optional[Entry]

    @property
    def value(self) -> WriteResult:
        return self


@dataclass(frozen=True)
class DownloadResult:
    """What ``download`` copied: ``size`` bytes with ``crc32`` (checked
    against the agent's), and the file's Entry as the agent saw it."""
    size: int
    crc32: int
    entry: Optional[Entry]


@dataclass(frozen=True)
class QuiesceResult:
    """What quiesce froze (mount points), and how long the sync, the
    freezes and the pre-checkpoint hooks took (seconds); the agent thaws by
    itself after thaw_after seconds."""
    frozen: List[str]
    sync_seconds: float
    freeze_seconds: float
    hooks_seconds: float
    thaw_after: float

    @staticmethod
    def _from_pb(m: pb.QuiesceResult) -> QuiesceResult:
        return QuiesceResult(list(m.frozen), m.sync_nanos / 1e9, m.freeze_nanos / 1e9,
                             m.hooks_nanos / 1e9, m.thaw_after_ms / 1000)


@dataclass(frozen=True)
class RestoredResult:
    """What restored did: the clock's step (ns), the generation before, the
    mounts thawed, and the post-restore hooks that failed."""
    clock_step_nano: int
    previous_generation: int
    thawed: List[str]
    hook_failures: List[str]

    @staticmethod
    def _from_pb(m: pb.RestoredResult) -> RestoredResult:
        return RestoredResult(m.clock_step_nano, m.previous_generation, list(m.thawed),
                              list(m.hook_failures))


_LIFECYCLE_KINDS = {v: k.lower() for k, v in pb.LifecycleEvent.Kind.items()}


@dataclass(frozen=True)
class LifecycleEvent:
    """One of watch_lifecycle's events: kind "quiesced", "thawed",
    "restored" or "clock_stepped"; source says what caused it ("request",
    "timer", "vmgenid", "clock", ...)."""
    kind: str
    generation: int
    clock_step_nano: int
    at_unix_nano: int
    source: str
    mounts: List[str]
    restores: int

    @staticmethod
    def _from_pb(m: pb.LifecycleEvent) -> LifecycleEvent:
        return LifecycleEvent(_LIFECYCLE_KINDS.get(m.kind, str(m.kind)), m.generation,
                              m.clock_step_nano, m.at_unix_nano, m.source, list(m.mounts),
                              m.restores)


_FS_KINDS = {v: k.lower() for k, v in pb.FsEvent.Kind.items()}


@dataclass(frozen=True)
class FsEvent:
    """One change seen by ``watch``: ``kind`` is "create", "modify",
    "delete", "rename" (``old_path`` -> ``path``), "attrib" or "overflow"
    (events were lost: rescan)."""
    kind: str
    path: str
    entry: Optional[Entry]
    old_path: str = ""
    path_raw: bytes = b""
    old_path_raw: bytes = b""

    @staticmethod
    def _from_pb(m: pb.FsEvent) -> FsEvent:
        return FsEvent(kind=_FS_KINDS.get(m.kind, str(m.kind)), path=m.path,
                       entry=Entry._from_pb(m.entry) if m.HasField("entry") else None,
                       old_path=m.old_path, path_raw=m.path_raw,
                       old_path_raw=m.old_path_raw)


@dataclass(frozen=True)
class Info:
    agent_version: str
    protocol_version: int
    hostname: str
    kernel_release: str
    arch: str
    agent_pid: int
    agent_uptime_nano: int
    boot_time_unix_nano: int
    cpu_count: int
    memory_total_bytes: int
    memory_available_bytes: int
    load_1: float
    load_5: float
    load_15: float
    open_connections: int
    running_processes: int
    kept_processes: int
    kept_output_bytes: int
    agent_rss_bytes: int
    open_tunnels: int = 0
    generation: int = 0
    restores: int = 0
    frozen: List[str] = field(default_factory=list)
    last_restore_unix_nano: int = 0

    @property
    def value(self) -> Info:
        return self

    @staticmethod
    def _from_pb(m: pb.Info) -> Info:
        return Info(**{f: list(v) if f == "frozen" else v
                       for f in Info.__dataclass_fields__ for v in (getattr(m, f),)})


@dataclass(frozen=True)
class Pong:
    payload: bytes
    agent_time_unix_nano: int
    round_trip: float  # seconds, measured by the client


@dataclass(frozen=True)
class HelloReply:
    protocol_version: int
    agent_version: str
    max_frame_size: int
    capabilities: List[str]
