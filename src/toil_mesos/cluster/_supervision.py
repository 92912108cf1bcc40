"""Daemon processes: start them detached, signal them safely, wait for them, stop them.

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
import json
import logging
import os
import select
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from toil_mesos.cluster._cluster_options import ClusterError
from toil_mesos.cluster._isolation import IsolationError, Network, pids_in_mount_namespace

if TYPE_CHECKING:
    from toil_mesos.cluster._cluster_record import ClusterRecord, DaemonRecord

__all__ = [
    "KILL_WAIT",
    "SAFETY_POLL",
    "DirectoryWatch",
    "ProcessRef",
    "log_tail",
    "read_ready",
    "spawn",
    "stop_all",
    "teardown",
]

logger = logging.getLogger("toil_mesos.cluster.launcher")

#: After SIGKILL the kernel frees a process at once; waiting longer means it is stuck in D state.
KILL_WAIT: Final = 10.0
#: Ready waits wake at least this often, in case inotify is unavailable or a daemon writes its
#: ready file in place rather than renaming it.
SAFETY_POLL: Final = 0.5
_LOG_TAIL_BYTES: Final = 3000


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


def spawn(argv: Sequence[str], log: Path) -> ProcessRef:
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


def stop_all(processes: Sequence[ProcessRef], timeout: float) -> None:
    """SIGTERM, wait up to ``timeout`` in all, then SIGKILL what is left and wait again."""
    for process in processes:
        process.send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    stubborn = [p for p in processes if not p.wait(deadline - time.monotonic())]
    for process in stubborn:
        logger.warning("pid %s ignored SIGTERM for %.0f s: sending SIGKILL", process.pid, timeout)
        process.send(signal.SIGKILL)
    for process in stubborn:
        if not process.wait(KILL_WAIT):
            logger.error("pid %s survived SIGKILL for %.0f s", process.pid, KILL_WAIT)


def log_tail(log: Path) -> str:
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return "(no log)"


# --- waiting for ready files ---

_IN_CLOSE_WRITE: Final = 0x00000008
_IN_MOVED_TO: Final = 0x00000080


class DirectoryWatch:
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


def read_ready(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not there yet (or, if a daemon wrote it in place, not complete yet)
    return data if isinstance(data, dict) else None


# --- stopping a recorded cluster ---


def teardown(record: ClusterRecord, *, timeout: float) -> list[str]:
    """Stop a recorded cluster's processes (agents, masters, then ZooKeeper), what the agents
    left, and its network.

    Returns lines saying what was done. Only recorded processes are signalled, each checked
    against its start time; then processes still inside the agents' private namespaces, which
    only the agents can have started (executors a killed agent left behind).
    """
    done: list[str] = []
    agents = [d for d in record.daemons if d.role == "agent"]
    masters = [d for d in record.daemons if d.role == "master"]
    zookeeper = [d for d in record.daemons if d.role == "zookeeper"]
    for group in (agents, masters, zookeeper):
        live = [d for d in group if d.process.running()]
        stop_all([d.process for d in group], timeout)
        done.extend(f"stopped {d.name} (pid {d.pid})" for d in live)
        if group is agents:
            leftovers = _leftovers(agents, record.network)
            if leftovers:
                logger.warning(
                    "stopping %d processes the agents left in their namespaces: %s",
                    len(leftovers),
                    ", ".join(str(p.pid) for p in leftovers),
                )
                stop_all(leftovers, 0.0)
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
