"""Start, inspect and stop a mini-cluster: one master and N agents as detached processes.

What ``toil-mesos cluster up/status/down`` and :class:`toil_mesos.cluster.testing.MiniCluster`
share. A cluster lives in a work directory::

    DIR/cluster.json        what runs: written atomically once every daemon is ready
    DIR/logs/*.log          each daemon's stdout and stderr (kept after ``down``, for post-mortems)
    DIR/run/*.ready         the daemons' ready files (see ``_protocol``)
    DIR/master/, DIR/agents/<i>/   the daemons' own work dirs (sandboxes, caches)

Why processes are identified by pid *and* start time: ``cluster down`` may run long after
``up``, from another process, when a recorded pid may belong to someone else. A pid is only
signalled through a pidfd opened while ``/proc/PID/stat`` still shows the recorded start time,
so a reused pid is never touched.

Why waits use pidfds and inotify: a daemon dying before it is ready must fail ``up`` at once
with its log, and a ready file should be noticed when it is renamed into place, not on the next
tick of a sleep loop. Every wait still has a deadline.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import secrets
import select
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import toil_mesos
from toil_mesos.cluster._cleanup import remove_daemon_products
from toil_mesos.cluster._isolation import (
    IsolationError,
    MountIsolation,
    Network,
    create_network,
    minimal_roots,
    mount_isolation_unavailable,
    mount_namespace_of,
    net_namespace_of,
    netns_unavailable,
    pids_in_mount_namespace,
    resolve_hide_paths,
)
from toil_mesos.errors import MesosError

__all__ = [
    "CLUSTER_FILE",
    "AgentRecord",
    "Cluster",
    "ClusterError",
    "ClusterOptions",
    "ClusterRecord",
    "ClusterStatus",
    "DaemonRecord",
    "ProcessRef",
    "down",
    "read_record",
    "status",
    "up",
]

logger = logging.getLogger(__name__)

CLUSTER_FILE: Final = "cluster.json"
_LOCK_FILE: Final = ".cluster.lock"
_FORMAT: Final = 1

#: Long enough for Python to start and an agent to register on a loaded 2-core machine; the
#: target for 3 agents is under 5 s.
DEFAULT_READY_TIMEOUT: Final = 60.0
#: SIGTERM grace: an agent first gives its executors their shutdown grace period (Mesos'
#: default is 5 s), so this must be longer than that.
DEFAULT_STOP_TIMEOUT: Final = 20.0
#: After SIGKILL the kernel frees a process at once; waiting longer means it is stuck in D state.
_KILL_WAIT: Final = 10.0
#: Ready waits wake at least this often, in case inotify is unavailable or a daemon writes its
#: ready file in place rather than renaming it.
_SAFETY_POLL: Final = 0.5
_LOG_TAIL_BYTES: Final = 3000

#: Each agent offers its own port range so that tasks of agents sharing the host's network
#: (no ``--netns``) cannot collide.
_PORTS_BASE: Final = 31000
_PORTS_PER_AGENT: Final = 100


class ClusterError(MesosError):
    """``cluster up/status/down`` cannot do what was asked; the message says what to fix."""


# --- processes --------------------------------------------------------------------------------


def _read_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of ``pid``, or None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


@dataclass(frozen=True, slots=True)
class ProcessRef:
    """A process we started: its pid and its start time, which together never repeat."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        """The process running as ``pid`` now, or None when there is none."""
        stat = _read_stat(pid)
        return None if stat is None else cls(pid, stat[1])

    def running(self) -> bool:
        """Whether this very process still runs (a zombie or a reused pid does not count)."""
        stat = _read_stat(self.pid)
        return stat is not None and stat[1] == self.start_time and stat[0] not in "ZXx"

    def _pidfd(self) -> int | None:
        """A pidfd for this process, checked against the start time *after* opening it.

        Opening first pins the process: if the start time still matches then, the descriptor
        refers to the process we started, however long ago, and signals through it cannot
        reach a process that reused the pid.
        """
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return None
        stat = _read_stat(self.pid)
        if stat is None or stat[1] != self.start_time:
            os.close(fd)
            return None
        return fd

    def send(self, sig: signal.Signals) -> bool:
        """Send ``sig`` if this process still exists; returns whether it was sent."""
        fd = self._pidfd()
        if fd is None:
            return False
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            return False
        finally:
            os.close(fd)
        logger.debug("sent %s to pid %s", sig.name, self.pid)
        return True

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to exit; reap it if it is our child.

        Returns whether it has exited.
        """
        fd = self._pidfd()
        if fd is None:
            return True
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if not poller.poll(max(0.0, timeout) * 1000):
                return False
        finally:
            os.close(fd)
        self.reap()
        return True

    def reap(self) -> int | None:
        """Collect the exit status if this exited process is our child; None otherwise."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return None
        return os.waitstatus_to_exitcode(status) if pid == self.pid else None


def _spawn(argv: Sequence[str], log: Path) -> ProcessRef:
    """Start ``argv`` detached: a session of its own, stdin from /dev/null, output to ``log``.

    ``posix_spawn`` rather than ``subprocess.Popen``: the daemons must outlive ``cluster up``,
    and a Popen object dropped while its child runs is a resource leak Python warns about.
    Every descriptor we hold is close-on-exec (PEP 446), so the daemon inherits only these three.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        pid = os.posix_spawn(
            argv[0], list(argv), dict(os.environ), file_actions=actions, setsid=True
        )
    except OSError as exc:
        raise ClusterError(f"could not start {argv[0]}: {exc}") from exc
    ref = ProcessRef.of(pid)
    if ref is None:  # cannot happen: an unreaped child keeps its /proc entry
        raise ClusterError(f"process {pid} vanished right after it was started")
    return ref


def _stop_all(processes: Sequence[ProcessRef], timeout: float) -> None:
    """SIGTERM, wait up to ``timeout`` in all, then SIGKILL what is left and wait again."""
    for process in processes:
        process.send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    stubborn = [p for p in processes if not p.wait(deadline - time.monotonic())]
    for process in stubborn:
        logger.warning("pid %s ignored SIGTERM for %.0f s: sending SIGKILL", process.pid, timeout)
        process.send(signal.SIGKILL)
    for process in stubborn:
        if not process.wait(_KILL_WAIT):
            logger.error("pid %s survived SIGKILL for %.0f s", process.pid, _KILL_WAIT)


def _log_tail(log: Path) -> str:
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return "(no log)"


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AgentRecord:
    """One agent as ``cluster.json`` shows it: Mesos agent id, ``HOST:PORT``, the agent's pid."""

    id: str
    address: str
    pid: int


@dataclass(frozen=True, kw_only=True)
class DaemonRecord:
    """What teardown needs about one daemon: who it is, how it was started, what it made.

    ``mount_namespaces`` holds every private mount namespace this agent slot has had (one per
    start), so that executors a killed agent left behind are found and stopped at teardown;
    ``first_start_time`` bounds that search to processes started since.
    """

    role: str  # "master" or "agent"
    index: int
    pid: int
    start_time: int
    first_start_time: int
    argv: tuple[str, ...]
    log: str
    ready_file: str
    mount_namespaces: tuple[int, ...] = ()

    @property
    def process(self) -> ProcessRef:
        """The recorded process."""
        return ProcessRef(self.pid, self.start_time)

    @property
    def name(self) -> str:
        """``master`` or ``agent <i>``, for messages."""
        return "master" if self.role == "master" else f"agent {self.index}"

    def to_json(self) -> dict[str, object]:
        """This record as ``cluster.json`` keeps it."""
        return {
            "role": self.role,
            "index": self.index,
            "pid": self.pid,
            "start_time": self.start_time,
            "first_start_time": self.first_start_time,
            "argv": list(self.argv),
            "log": self.log,
            "ready_file": self.ready_file,
            "mount_namespaces": list(self.mount_namespaces),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DaemonRecord:
        """Read back :meth:`to_json` (KeyError/TypeError/ValueError when malformed)."""
        return cls(
            role=str(data["role"]),
            index=int(data["index"]),
            pid=int(data["pid"]),
            start_time=int(data["start_time"]),
            first_start_time=int(data["first_start_time"]),
            argv=tuple(str(a) for a in data["argv"]),
            log=str(data["log"]),
            ready_file=str(data["ready_file"]),
            mount_namespaces=tuple(int(n) for n in data.get("mount_namespaces", ())),
        )


@dataclass(frozen=True, kw_only=True)
class ClusterRecord:
    """The contents of ``cluster.json``.

    The first three keys are the public schema (``master``, ``master_pid``, ``agents``); the
    rest is what ``cluster down`` needs to undo everything ``up`` did.
    """

    master: str
    master_pid: int
    agents: tuple[AgentRecord, ...]
    cluster_id: str
    work_dir: str
    daemons: tuple[DaemonRecord, ...]
    isolation: MountIsolation | None
    network: Network | None
    options: Mapping[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The JSON document, public keys first."""
        isolation = (
            None
            if self.isolation is None
            else {
                "private_tmp": self.isolation.private_tmp,
                "hide": [str(p) for p in self.isolation.hide],
                "keep": [str(p) for p in self.isolation.keep],
                "staging": None if self.isolation.staging is None else str(self.isolation.staging),
            }
        )
        return {
            "master": self.master,
            "master_pid": self.master_pid,
            "agents": [{"id": a.id, "address": a.address, "pid": a.pid} for a in self.agents],
            "format": _FORMAT,
            "cluster_id": self.cluster_id,
            "work_dir": self.work_dir,
            "options": dict(self.options),
            "isolation": isolation,
            "network": None if self.network is None else self.network.to_json(),
            "daemons": [d.to_json() for d in self.daemons],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClusterRecord:
        """Read back :meth:`to_json` (KeyError/TypeError/ValueError when malformed)."""
        isolation = data.get("isolation")
        network = data.get("network")
        return cls(
            master=str(data["master"]),
            master_pid=int(data["master_pid"]),
            agents=tuple(
                AgentRecord(id=str(a["id"]), address=str(a["address"]), pid=int(a["pid"]))
                for a in data["agents"]
            ),
            cluster_id=str(data["cluster_id"]),
            work_dir=str(data["work_dir"]),
            daemons=tuple(DaemonRecord.from_json(d) for d in data["daemons"]),
            isolation=None
            if isolation is None
            else MountIsolation(
                private_tmp=bool(isolation["private_tmp"]),
                hide=tuple(Path(p) for p in isolation["hide"]),
                keep=tuple(Path(p) for p in isolation.get("keep", ())),
                staging=None if isolation.get("staging") is None else Path(isolation["staging"]),
            ),
            network=None if network is None else Network.from_json(network),
            options=dict(data.get("options", {})),
        )


def read_record(work_dir: Path) -> ClusterRecord | None:
    """The cluster recorded in ``work_dir``, or None when there is no ``cluster.json``."""
    path = Path(work_dir) / CLUSTER_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot read {path}: {exc}") from exc
    try:
        return ClusterRecord.from_json(data)
    except (KeyError, TypeError, ValueError, IsolationError) as exc:
        raise ClusterError(f"{path} is not a cluster record ({exc!r}); remove it by hand") from exc


def _write_json_atomically(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- waiting for ready files ------------------------------------------------------------------

_IN_CLOSE_WRITE: Final = 0x00000008
_IN_MOVED_TO: Final = 0x00000080


class _DirectoryWatch:
    """An inotify watch on one directory, so a ready file landing there wakes the waiter.

    Best effort: where inotify cannot be had, :meth:`fileno` is -1 and the waiter falls back on
    its periodic wake-up.
    """

    def __init__(self, directory: Path) -> None:
        self._fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        except (OSError, AttributeError):
            return
        if fd < 0:
            return
        if (
            int(libc.inotify_add_watch(fd, os.fsencode(directory), _IN_CLOSE_WRITE | _IN_MOVED_TO))
            < 0
        ):
            os.close(fd)
            return
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._fd >= 0 and os.read(self._fd, 65536):
                pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _read_ready(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not there yet (or, if a daemon wrote it in place, not complete yet)
    return data if isinstance(data, dict) else None


# --- options ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    """How big the cluster is and how its agents are isolated (``cluster up``'s options).

    ``private_tmp`` None means "when the machine can" (root and a working ``unshare``), which
    is what ``cluster up`` does; False turns it off for callers that know their agents must
    share ``/tmp``; True insists. ``master_command`` and ``agent_command`` replace
    ``python -P -m toil_mesos.cluster.master`` (``agent``) before the protocol's arguments:
    the launcher's own tests run it with stand-in daemons. ``executor_env`` becomes every
    agent's ``--executor-environment-variables`` (None: the flag is not given).
    """

    agents: int = 1
    cpus: float = 2.0
    mem: int = 4096
    disk: int = 8192
    hide: tuple[Path, ...] = ()
    netns: bool = False
    private_tmp: bool | None = None
    ready_timeout: float = DEFAULT_READY_TIMEOUT
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    master_args: tuple[str, ...] = ()
    agent_args: tuple[str, ...] = ()
    python: str = sys.executable
    master_command: tuple[str, ...] = ()
    agent_command: tuple[str, ...] = ()
    executor_env: Mapping[str, str] | None = None

    def validate(self) -> None:
        """Raise ClusterError naming the first bad option."""
        if self.agents < 1:
            raise ClusterError(f"--agents must be at least 1, not {self.agents}")
        if not self.cpus > 0:
            raise ClusterError(f"--cpus must be positive, not {self.cpus}")
        if self.mem <= 0:
            raise ClusterError(f"--mem must be positive (MB), not {self.mem}")
        if self.disk < 0:
            raise ClusterError(f"--disk must not be negative (MB), not {self.disk}")
        if not self.ready_timeout > 0:
            raise ClusterError(f"--timeout must be positive, not {self.ready_timeout}")

    def resources(self, index: int) -> str:
        """The agent's ``--resources`` string (see ``_protocol``)."""
        low = _PORTS_BASE + index * _PORTS_PER_AGENT
        cpus = int(self.cpus) if float(self.cpus).is_integer() else self.cpus
        return f"cpus:{cpus};mem:{self.mem};disk:{self.disk};ports:[{low}-{low + 99}]"

    def to_json(self) -> dict[str, object]:
        """The options as ``cluster.json`` records them (for people reading it)."""
        return {
            "agents": self.agents,
            "cpus": self.cpus,
            "mem": self.mem,
            "disk": self.disk,
            "hide": [str(p) for p in self.hide],
            "netns": self.netns,
        }


def _isolation_for(options: ClusterOptions) -> MountIsolation | None:
    """The agents' mount isolation, or None; raises when it is asked for and impossible."""
    try:
        hide = resolve_hide_paths(options.hide)
    except IsolationError as exc:
        raise ClusterError(str(exc)) from None
    if options.netns:
        reason = netns_unavailable()
        if reason is not None:
            raise ClusterError(f"--netns is impossible here: {reason}")
    reason = mount_isolation_unavailable()
    if hide and reason is not None:
        raise ClusterError(f"--hide needs a private mount namespace per agent: {reason}")
    if options.private_tmp and reason is not None:
        raise ClusterError(f"a private /tmp for agents is impossible here: {reason}")
    if options.private_tmp is False and hide:
        raise ClusterError("--hide needs agents' private mount namespaces; private_tmp=False")
    if reason is not None or options.private_tmp is False:
        if reason is not None:
            logger.info("agents share the host's mounts: %s", reason)
        return None
    for needed, what in (
        (Path(sys.prefix), "the Python environment agents run from"),
        (Path(toil_mesos.__file__).resolve().parent, "the toil_mesos package"),
        (Path(options.python).resolve().parent, "the Python interpreter"),
    ):
        for path in hide:
            if needed.resolve().is_relative_to(path):
                raise ClusterError(
                    f"--hide {str(path)!r} would hide {what} ({needed}) from the agents"
                )
    return MountIsolation(hide=hide, private_tmp=True, keep=_needed_under_tmp(options))


def _needed_under_tmp(options: ClusterOptions) -> tuple[Path, ...]:
    """What agents need from the host's ``/tmp`` to run: Python, this package, their command.

    Usually nothing. A checkout and virtualenv cloned under ``/tmp`` (as CI may do) would
    otherwise vanish under the agents' fresh ``/tmp`` and no agent could start.
    """
    package_root = Path(toil_mesos.__file__).resolve().parent.parent
    candidates = [
        Path(sys.prefix).resolve(),
        Path(sys.base_prefix).resolve(),
        Path(options.python).resolve().parent,
        package_root,
        *(
            Path(a).resolve()
            for a in options.agent_command
            if a.startswith("/") and Path(a).exists()
        ),
    ]
    tmp = Path("/tmp").resolve()
    return minimal_roots([p for p in candidates if p.is_relative_to(tmp) and p != tmp])


def _check_work_dir(work_dir: Path, isolation: MountIsolation | None) -> None:
    """Refuse a work dir that agents would see privately (so not share with the leader)."""
    if isolation is None:
        return
    for private in isolation.private_roots():
        if work_dir.is_relative_to(private):
            why = (
                "agents get a private /tmp"
                if private == Path("/tmp")
                else f"--hide {str(private)!r} covers it for agents"
            )
            raise ClusterError(
                f"--work-dir {str(work_dir)!r} is refused: {why}, so job stores and sandboxes "
                "there would not be shared between the leader and the agents; "
                "use a directory elsewhere (e.g. under /var/tmp)"
            )


@contextlib.contextmanager
def _locked(work_dir: Path) -> Iterator[int]:
    """Hold the work dir's lock: one ``up``/``down`` (or one MiniCluster) at a time.

    Non-blocking: a second command fails at once with a message rather than waiting.
    """
    fd = os.open(work_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise ClusterError(
                f"another cluster command (or a MiniCluster) is working on {work_dir} now"
            ) from None
        yield fd
    finally:
        os.close(fd)


# --- the cluster ------------------------------------------------------------------------------


@dataclass(kw_only=True)
class _Daemon:
    """One daemon slot (the master, or agent ``index``) and its current process."""

    role: str
    index: int
    argv: list[str]
    log: Path
    ready_file: Path
    process: ProcessRef | None = None
    first_start_time: int | None = None
    ready: dict[str, Any] = field(default_factory=dict)
    mount_namespaces: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "master" if self.role == "master" else f"agent {self.index}"

    def record(self) -> DaemonRecord:
        assert self.process is not None and self.first_start_time is not None
        return DaemonRecord(
            role=self.role,
            index=self.index,
            pid=self.process.pid,
            start_time=self.process.start_time,
            first_start_time=self.first_start_time,
            argv=tuple(self.argv),
            log=str(self.log),
            ready_file=str(self.ready_file),
            mount_namespaces=tuple(self.mount_namespaces),
        )


class Cluster:
    """A mini-cluster in ``work_dir``: start it, stop or restart its parts, tear it down.

    :meth:`start` is all or nothing: if any daemon fails to become ready, everything started
    is stopped and every namespace and link made is removed before the error propagates.
    ``cluster up`` calls :meth:`start` then :meth:`detach`, leaving the daemons running;
    :class:`~toil_mesos.cluster.testing.MiniCluster` keeps the object and calls :meth:`close`.
    """

    def __init__(self, work_dir: Path | str, options: ClusterOptions | None = None) -> None:
        self.options = options or ClusterOptions()
        self.work_dir = Path(work_dir).expanduser().resolve()
        self.cluster_id = secrets.token_hex(3)
        self.isolation: MountIsolation | None = None
        self.network: Network | None = None
        self.master: _Daemon | None = None
        self.agents: list[_Daemon] = []
        self._lock: contextlib.ExitStack | None = None
        self._owns_record = False  # True once we hold the lock and any old record is gone
        self._made: list[Path] = []

    def __repr__(self) -> str:
        state = "running" if self.master and self.master.process else "stopped"
        return f"<Cluster {self.cluster_id} {state} agents={len(self.agents)} {self.work_dir}>"

    # -- lifecycle --

    def start(self) -> ClusterRecord:
        """Check options, start the master and the agents, wait until all are ready.

        Raises ClusterError (nothing left running) on bad options, a busy work dir, a daemon
        that exits or is not ready before the timeout, or isolation that cannot be had.
        """
        self.options.validate()
        self.isolation = _isolation_for(self.options)
        _check_work_dir(self.work_dir, self.isolation)
        if self.work_dir.exists() and not self.work_dir.is_dir():
            raise ClusterError(f"--work-dir {str(self.work_dir)!r} is not a directory")
        # The work dir itself stays on failure: its logs/ explain what went wrong.
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._lock = contextlib.ExitStack()
        try:
            self._lock.enter_context(_locked(self.work_dir))
            self._clear_stale_record()
            self._owns_record = True
            return self._start_all()
        except BaseException:
            self.close()
            for path in reversed(self._made):
                shutil.rmtree(path, ignore_errors=True)
            self._made.clear()
            raise

    def _clear_stale_record(self) -> None:
        record = read_record(self.work_dir)
        if record is None:
            return
        alive = [d.name for d in record.daemons if d.process.running()]
        if alive:
            raise ClusterError(
                f"the work dir is busy: {self.work_dir / CLUSTER_FILE} records a running cluster "
                f"({', '.join(alive)} alive); run `toil-mesos cluster down --work-dir "
                f"{self.work_dir}` first"
            )
        logger.warning("%s records a dead cluster: cleaning up after it", CLUSTER_FILE)
        _teardown(record, timeout=self.options.stop_timeout)
        (self.work_dir / CLUSTER_FILE).unlink(missing_ok=True)

    def _start_all(self) -> ClusterRecord:
        started = time.monotonic()
        run = self.work_dir / "run"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()
        self._made.append(run)
        if self.options.netns:
            try:
                self.network = create_network(self.cluster_id, self.options.agents)
            except IsolationError as exc:
                raise ClusterError(str(exc)) from exc
        host = self.network.host_address if self.network else "127.0.0.1"
        master_dir = self._make_dir(self.work_dir / "master")
        self.master = _Daemon(
            role="master",
            index=0,
            log=self.work_dir / "logs" / "master.log",
            ready_file=run / "master.ready",
            argv=[
                *self._command("master"),
                "--host",
                host,
                "--port",
                "0",
                "--work-dir",
                str(master_dir),
                "--ready-file",
                str(run / "master.ready"),
                *self.options.master_args,
            ],
        )
        self._launch(self.master)
        self._wait_ready([self.master])
        # Restarts must come back on the same port: agents and frameworks know only it.
        port = self.master.ready["address"].rpartition(":")[2]
        self.master.argv[self.master.argv.index("--port") + 1] = port
        if self.isolation is not None and self.isolation.keep:
            staging = self._make_dir(run / "tmp-staging")
            self.isolation = replace(self.isolation, staging=staging)
        self.agents = [self._agent(i) for i in range(self.options.agents)]
        for agent in self.agents:
            self._launch(agent)
        self._wait_ready(self.agents)
        record = self.record()
        _write_json_atomically(self.work_dir / CLUSTER_FILE, record.to_json())
        logger.info(
            "cluster %s up in %.2f s: master %s, %d agents",
            self.cluster_id,
            time.monotonic() - started,
            record.master,
            len(record.agents),
        )
        return record

    def _command(self, role: str) -> list[str]:
        custom = self.options.master_command if role == "master" else self.options.agent_command
        # -P: `python -m` would put the working directory first on sys.path.
        return list(custom) or [self.options.python, "-P", "-m", f"toil_mesos.cluster.{role}"]

    def _make_dir(self, path: Path) -> Path:
        if not path.exists():
            path.mkdir(parents=True)
            self._made.append(path)
        return path

    def _agent(self, index: int) -> _Daemon:
        assert self.master is not None
        run = self.work_dir / "run"
        host = self.network.addresses[index] if self.network else "127.0.0.1"
        work_dir = self._make_dir(self._make_dir(self.work_dir / "agents") / str(index))
        argv = [
            *self._command("agent"),
            "--master",
            str(self.master.ready["address"]),
            "--host",
            host,
            "--port",
            "0",
            "--work-dir",
            str(work_dir),
            "--ready-file",
            str(run / f"agent-{index}.ready"),
            "--resources",
            self.options.resources(index),
        ]
        if self.options.executor_env is not None:
            argv += [
                "--executor-environment-variables",
                json.dumps(dict(self.options.executor_env), sort_keys=True),
            ]
        argv += self.options.agent_args
        if self.isolation is not None:
            argv = self.isolation.wrap(argv)
        if self.network is not None:
            argv = self.network.wrap(index, argv)
        return _Daemon(
            role="agent",
            index=index,
            argv=argv,
            ready_file=run / f"agent-{index}.ready",
            log=self.work_dir / "logs" / f"agent-{index}.log",
        )

    def _launch(self, daemon: _Daemon) -> None:
        daemon.ready_file.unlink(missing_ok=True)
        daemon.ready = {}
        logger.debug("starting %s: %s", daemon.name, daemon.argv)
        daemon.process = _spawn(daemon.argv, daemon.log)
        if daemon.first_start_time is None:
            daemon.first_start_time = daemon.process.start_time

    def _wait_ready(self, daemons: Sequence[_Daemon]) -> None:
        """Wait for every daemon's ready file; fail fast when one exits, bounded by the timeout."""
        deadline = time.monotonic() + self.options.ready_timeout
        pending = list(daemons)
        watch = _DirectoryWatch(self.work_dir / "run")
        poller = select.poll()
        pidfds: list[int] = []
        try:
            if watch.fileno() >= 0:
                poller.register(watch.fileno(), select.POLLIN)
            for daemon in pending:
                assert daemon.process is not None
                with contextlib.suppress(ProcessLookupError):
                    pidfds.append(os.pidfd_open(daemon.process.pid))
                    poller.register(pidfds[-1], select.POLLIN)
            while pending:
                for daemon in list(pending):
                    ready = _read_ready(daemon.ready_file)
                    if ready is not None:
                        self._accept_ready(daemon, ready)
                        pending.remove(daemon)
                    else:
                        self._check_alive(daemon)
                if self.master is not None and self.master not in daemons:
                    # Agents cannot register with a dead master: say so, not "timed out".
                    self._check_alive(self.master, while_waiting_for=pending)
                if not pending:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClusterError(
                        f"{', '.join(d.name for d in pending)} not ready after "
                        f"{self.options.ready_timeout:g} s (no ready file "
                        f"{pending[0].ready_file}); see {pending[0].log}:\n"
                        f"{_log_tail(pending[0].log)}"
                    )
                poller.poll(min(remaining, _SAFETY_POLL) * 1000)
                watch.drain()
        finally:
            watch.close()
            for fd in pidfds:
                os.close(fd)

    def _check_alive(self, daemon: _Daemon, *, while_waiting_for: Sequence[_Daemon] = ()) -> None:
        assert daemon.process is not None
        if daemon.process.running():
            return
        code = daemon.process.reap()
        how = "" if code is None else f" with status {code}"
        when = (
            f"while {', '.join(d.name for d in while_waiting_for)} started"
            if while_waiting_for
            else "before it was ready"
        )
        raise ClusterError(
            f"{daemon.name} exited{how} {when}; see {daemon.log}:\n{_log_tail(daemon.log)}"
        )

    def _accept_ready(self, daemon: _Daemon, ready: dict[str, Any]) -> None:
        """Take a daemon's ready file, after checking it is the process we started, isolated."""
        assert daemon.process is not None
        if ready.get("pid") != daemon.process.pid:
            raise ClusterError(
                f"{daemon.name}'s ready file {daemon.ready_file} names pid {ready.get('pid')}, "
                f"but the process started is {daemon.process.pid}; cluster.json would be wrong"
            )
        if not isinstance(ready.get("address"), str):
            raise ClusterError(f"{daemon.name}'s ready file has no address: {ready!r}")
        if daemon.role == "agent" and not isinstance(ready.get("id"), str):
            raise ClusterError(f"{daemon.name}'s ready file has no agent id: {ready!r}")
        daemon.ready = ready
        if daemon.role == "agent":
            self._check_isolated(daemon)

    def _check_isolated(self, daemon: _Daemon) -> None:
        """Never pretend: an agent meant to be isolated must really be in its namespaces."""
        assert daemon.process is not None
        pid = daemon.process.pid
        if self.isolation is not None:
            inode = mount_namespace_of(pid)
            if inode is None or inode == mount_namespace_of(os.getpid()):
                raise ClusterError(f"{daemon.name} (pid {pid}) is not in a private mount namespace")
            if inode not in daemon.mount_namespaces:
                daemon.mount_namespaces.append(inode)
        if self.network is not None:
            expected = self.network.namespace_inode(daemon.index)
            if expected is None or net_namespace_of(pid) != expected:
                raise ClusterError(
                    f"{daemon.name} (pid {pid}) is not in its network namespace "
                    f"{self.network.namespaces[daemon.index]}"
                )

    def record(self) -> ClusterRecord:
        """What ``cluster.json`` says about this cluster now."""
        assert self.master is not None and self.master.process is not None
        daemons = [self.master, *self.agents]
        return ClusterRecord(
            master=str(self.master.ready["address"]),
            master_pid=self.master.process.pid,
            agents=tuple(
                AgentRecord(
                    id=str(a.ready.get("id", "")),
                    address=str(a.ready.get("address", "")),
                    pid=a.process.pid if a.process else 0,
                )
                for a in self.agents
            ),
            cluster_id=self.cluster_id,
            work_dir=str(self.work_dir),
            daemons=tuple(d.record() for d in daemons if d.process is not None),
            isolation=self.isolation,
            network=self.network,
            options=self.options.to_json(),
        )

    def _write_record(self) -> None:
        _write_json_atomically(self.work_dir / CLUSTER_FILE, self.record().to_json())

    # -- parts, for fault injection --

    def _daemon(self, which: str | int) -> _Daemon:
        if which == "master":
            if self.master is None:
                raise ClusterError("the cluster has no master: it was not started")
            return self.master
        if isinstance(which, int) and 0 <= which < len(self.agents):
            return self.agents[which]
        raise ClusterError(f"no such daemon: {which!r} (agents are 0..{len(self.agents) - 1})")

    def stop(
        self,
        which: str | int,
        *,
        sig: signal.Signals = signal.SIGTERM,
        timeout: float | None = None,
    ) -> None:
        """Stop the master (``"master"``) or agent ``which`` with ``sig``, waiting for its exit.

        SIGKILL follows if it has not exited after ``timeout`` (default: the stop timeout).
        Executors a SIGKILLed agent leaves behind keep running, as on a real agent crash;
        :meth:`close` stops them.
        """
        daemon = self._daemon(which)
        if daemon.process is None:
            return
        timeout = self.options.stop_timeout if timeout is None else timeout
        daemon.process.send(sig)
        if not daemon.process.wait(timeout):
            logger.warning("%s did not exit on %s: sending SIGKILL", daemon.name, sig.name)
            daemon.process.send(signal.SIGKILL)
            daemon.process.wait(_KILL_WAIT)

    def restart(self, which: str | int) -> None:
        """Start the master or agent ``which`` again (same address for the master) and wait.

        Stops it first if it still runs. ``cluster.json`` is rewritten with the new pid.
        """
        daemon = self._daemon(which)
        if daemon.process is not None and daemon.process.running():
            self.stop(which)
        self._launch(daemon)
        try:
            self._wait_ready([daemon])
        finally:
            self._write_record()

    def running(self, which: str | int) -> bool:
        """Whether the master or agent ``which`` runs now."""
        daemon = self._daemon(which)
        return daemon.process is not None and daemon.process.running()

    # -- teardown --

    def detach(self) -> None:
        """Leave the daemons running and forget them (``cluster up`` exiting)."""
        self._owns_record = False
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def close(self) -> None:
        """Stop everything, remove namespaces, links and ``cluster.json``; idempotent.

        Logs and the daemons' work dirs (sandboxes) are kept, for post-mortems.
        """
        try:
            daemons = [d for d in (self.master, *self.agents) if d and d.process]
            if daemons or self.network is not None:
                record = ClusterRecord(
                    master="",
                    master_pid=0,
                    agents=(),
                    cluster_id=self.cluster_id,
                    work_dir=str(self.work_dir),
                    daemons=tuple(d.record() for d in daemons),
                    isolation=self.isolation,
                    network=self.network,
                )
                _teardown(record, timeout=self.options.stop_timeout)
            self.network = None
            for daemon in daemons:
                daemon.process = None
            if self._owns_record:
                (self.work_dir / CLUSTER_FILE).unlink(missing_ok=True)
                shutil.rmtree(self.work_dir / "run", ignore_errors=True)
                self._owns_record = False
        finally:
            self.detach()


def _teardown(record: ClusterRecord, *, timeout: float) -> list[str]:
    """Stop a recorded cluster's processes (agents first), what they left, and its network.

    Returns lines saying what was done. Only recorded processes are signalled, each checked
    against its start time; then processes still inside the agents' private namespaces, which
    only the agents can have started (executors a killed agent left behind).
    """
    done: list[str] = []
    agents = [d for d in record.daemons if d.role == "agent"]
    masters = [d for d in record.daemons if d.role == "master"]
    for group in (agents, masters):
        live = [d for d in group if d.process.running()]
        _stop_all([d.process for d in group], timeout)
        done.extend(f"stopped {d.name} (pid {d.pid})" for d in live)
        if group is agents:
            leftovers = _leftovers(agents, record.network)
            if leftovers:
                logger.warning(
                    "stopping %d processes the agents left in their namespaces: %s",
                    len(leftovers),
                    ", ".join(str(p.pid) for p in leftovers),
                )
                _stop_all(leftovers, 0.0)
                done.append(f"stopped {len(leftovers)} processes left in agents' namespaces")
    if record.network is not None:
        try:
            removed = record.network.destroy()
        except IsolationError as exc:
            raise ClusterError(str(exc)) from exc
        done.extend(f"removed {what}" for what in removed)
    return done


def _leftovers(agents: Sequence[DaemonRecord], network: Network | None) -> list[ProcessRef]:
    found: dict[int, ProcessRef] = {}
    for agent in agents:
        for inode in agent.mount_namespaces:
            for pid in pids_in_mount_namespace(inode):
                ref = ProcessRef.of(pid)
                if ref is not None and ref.start_time >= agent.first_start_time:
                    found[pid] = ref
    if network is not None:
        for pid in network.leftover_pids():
            ref = ProcessRef.of(pid)
            if ref is not None:
                found[pid] = ref
    return [p for p in found.values() if p.running()]


# --- the commands -----------------------------------------------------------------------------


def up(work_dir: Path | str, options: ClusterOptions | None = None) -> ClusterRecord:
    """``cluster up``: start a cluster in ``work_dir`` that outlives this process."""
    cluster = Cluster(work_dir, options)
    record = cluster.start()
    cluster.detach()
    return record


@dataclass(frozen=True, kw_only=True)
class ClusterStatus:
    """``cluster status``: the record, which recorded processes run, and the master's view."""

    record: ClusterRecord
    running: Mapping[str, bool]
    state: Mapping[str, Any] | None
    state_error: str | None

    @property
    def healthy(self) -> bool:
        """Whether every recorded daemon runs."""
        return all(self.running.values())


def status(work_dir: Path | str, *, timeout: float = 5.0) -> ClusterStatus | None:
    """``cluster status``: None when ``work_dir`` has no cluster."""
    record = read_record(Path(work_dir))
    if record is None:
        return None
    running = {d.name: d.process.running() for d in record.daemons}
    state: Mapping[str, Any] | None = None
    error: str | None = None
    # No proxy: the master is on loopback or on the cluster's own bridge, never elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{record.master}/state", timeout=timeout) as answer:
            state = json.loads(answer.read())
    except (OSError, ValueError) as exc:
        error = str(exc)
    return ClusterStatus(record=record, running=running, state=state, state_error=error)


def down(work_dir: Path | str, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> list[str]:
    """``cluster down``: stop the cluster in ``work_dir`` and undo what ``up`` made.

    Idempotent: with no cluster recorded it says so and does nothing. Logs are kept; the
    sandboxes and fetcher caches the daemons made are removed (see ``_cleanup``).
    """
    path = Path(work_dir).expanduser().resolve()
    if not (path / CLUSTER_FILE).exists():
        return [f"no cluster in {path}: nothing to do"]
    with _locked(path):
        record = read_record(path)
        if record is None:
            return [f"no cluster in {path}: nothing to do"]
        done = _teardown(record, timeout=timeout)
        done += remove_daemon_products(path, [(d.role, d.argv) for d in record.daemons])
        (path / CLUSTER_FILE).unlink(missing_ok=True)
        shutil.rmtree(path / "run", ignore_errors=True)
    done.append(f"removed {path / CLUSTER_FILE}")
    return done
