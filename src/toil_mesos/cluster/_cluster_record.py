"""The cluster record, ``cluster.json``: what runs, written once every daemon is ready.

``cluster status`` and ``cluster down`` read it, possibly long after ``up`` and from another
process; it names every daemon by pid and start time (``_supervision.ProcessRef``), and the
namespaces and network made for the agents, so that ``down`` undoes exactly what ``up`` made.
A lock file keeps one ``up``/``down`` (or one MiniCluster) at a time per work dir.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from toil_mesos.cluster._cluster_options import ClusterError
from toil_mesos.cluster._isolation import IsolationError, MountIsolation, Network
from toil_mesos.cluster._supervision import ProcessRef

__all__ = [
    "CLUSTER_FILE",
    "AgentRecord",
    "ClusterRecord",
    "DaemonRecord",
    "daemon_name",
    "locked",
    "read_record",
    "write_json_atomically",
]

CLUSTER_FILE: Final = "cluster.json"
_LOCK_FILE: Final = ".cluster.lock"
_FORMAT: Final = 1


def daemon_name(role: str, index: int) -> str:
    """How messages and ``cluster status`` name a daemon.

    A lone master is ``master`` (index 0); masters electing a leader are ``master 1`` to
    ``master N``; agents are ``agent 0`` up; the cluster's ZooKeeper is ``zookeeper``.

    >>> daemon_name("master", 0), daemon_name("master", 2), daemon_name("agent", 0)
    ('master', 'master 2', 'agent 0')
    """
    if role == "master":
        return "master" if index == 0 else f"master {index}"
    return role if role == "zookeeper" else f"{role} {index}"


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

    role: str  # "master", "agent" or "zookeeper"
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
        """``master``, ``master <i>``, ``agent <i>`` or ``zookeeper``, for messages."""
        return daemon_name(self.role, self.index)

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

    The first three keys are the public schema (``master``, ``master_pid``, ``agents``), then
    ``endpoint`` (what to give frameworks: the ``zk://`` URL when the masters elect a leader,
    else the master's address) and ``masters`` (every master's address; ``master`` is the
    first); the rest is what ``cluster down`` needs to undo everything ``up`` did.
    """

    master: str
    master_pid: int
    agents: tuple[AgentRecord, ...]
    endpoint: str = ""
    masters: tuple[str, ...] = ()
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
            "endpoint": self.endpoint or self.master,
            "masters": list(self.masters or (self.master,)),
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
            endpoint=str(data.get("endpoint") or data["master"]),
            masters=tuple(str(m) for m in data.get("masters") or (data["master"],)),
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


def write_json_atomically(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(work_dir: Path) -> Iterator[int]:
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
