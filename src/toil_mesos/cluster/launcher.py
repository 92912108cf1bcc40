"""Start, inspect and stop a mini-cluster: masters and agents as detached processes.

What ``toil-mesos cluster up/status/down`` and :class:`toil_mesos.cluster.testing.MiniCluster`
share. A cluster lives in a work directory::

    DIR/cluster.json        what runs: written atomically once every daemon is ready
    DIR/logs/*.log          each daemon's stdout and stderr (kept after ``down``, for post-mortems)
    DIR/run/*.ready         the daemons' ready files (see ``_protocol``)
    DIR/master/, DIR/agents/<i>/   the daemons' own work dirs (sandboxes, caches)
    DIR/masters/<i>/, DIR/zookeeper/   with --masters N --zk: each master's, ZooKeeper's data

This module holds the commands (:func:`up`, :func:`status`, :func:`down`) and names the
launcher's public API; the parts live in ``_cluster_options`` (every option, and what it needs
of the machine), ``_supervision`` (daemon processes), ``_cluster_record`` (``cluster.json`` and
its lock) and ``_cluster`` (the :class:`Cluster` itself). Isolation is ``_isolation``.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toil_mesos.cluster._cleanup import remove_daemon_products
from toil_mesos.cluster._cluster import Cluster
from toil_mesos.cluster._cluster_masters import leading_master
from toil_mesos.cluster._cluster_options import (
    DEFAULT_READY_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    DEFAULT_ZK_SESSION_TIMEOUT,
    ClusterError,
    ClusterOptions,
)
from toil_mesos.cluster._cluster_record import (
    CLUSTER_FILE,
    AgentRecord,
    ClusterRecord,
    DaemonRecord,
    locked,
    read_record,
)
from toil_mesos.cluster._supervision import ProcessRef, teardown

__all__ = [
    "CLUSTER_FILE",
    "DEFAULT_READY_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "DEFAULT_ZK_SESSION_TIMEOUT",
    "AgentRecord",
    "Cluster",
    "ClusterError",
    "ClusterOptions",
    "ClusterRecord",
    "ClusterStatus",
    "DaemonRecord",
    "ProcessRef",
    "down",
    "master_addresses",
    "read_record",
    "status",
    "up",
]


def up(work_dir: Path | str, options: ClusterOptions | None = None) -> ClusterRecord:
    """``cluster up``: start a cluster in ``work_dir`` that outlives this process."""
    cluster = Cluster(work_dir, options)
    record = cluster.start()
    cluster.detach()
    return record


@dataclass(frozen=True, kw_only=True)
class ClusterStatus:
    """``cluster status``: the record, which recorded processes run, who leads, and the
    leading master's view.

    ``leader`` is the name of the leading master (``master 2``), as ZooKeeper says when the
    masters elect one; ``leader_error`` says why it is unknown (ZooKeeper unreachable, no
    master elected).
    """

    record: ClusterRecord
    running: Mapping[str, bool]
    state: Mapping[str, Any] | None
    state_error: str | None
    leader: str | None = None
    leader_error: str | None = None

    @property
    def healthy(self) -> bool:
        """Whether every recorded daemon runs and a master leads."""
        return all(self.running.values()) and self.leader is not None

    @property
    def roles(self) -> dict[str, str]:
        """Each master's name to ``leading``, ``standby`` or ``down``."""
        roles = {}
        for name in master_addresses(self.record):
            alive = self.running.get(name, False)
            if name == self.leader:
                # A killed leader leads on until its ZooKeeper session expires.
                roles[name] = "leading" if alive else "down (leading until its session expires)"
            else:
                roles[name] = "standby" if alive else "down"
        return roles


def master_addresses(record: ClusterRecord) -> dict[str, str]:
    """Each master's name (``master``, or ``master 1``..) to its ``HOST:PORT``, in order."""
    daemons = sorted((d for d in record.daemons if d.role == "master"), key=lambda d: d.index)
    if not daemons:
        return {"master": record.master}
    return {d.name: address for d, address in zip(daemons, record.masters, strict=False)}


def _leader(
    record: ClusterRecord, running: Mapping[str, bool], timeout: float
) -> tuple[str | None, str | None]:
    """(name of the leading master, None) or (None, why it is not known)."""
    addresses = master_addresses(record)
    if not record.endpoint.startswith("zk://"):
        name = next(iter(addresses))
        return (name, None) if running.get(name, False) else (None, f"{name} is down")
    try:
        leading = leading_master(record.endpoint, addresses, timeout=timeout)
    except ConnectionError as exc:
        return None, str(exc)
    if leading is None:
        return None, f"none of this cluster's masters leads in {record.endpoint}"
    return leading, None


def status(work_dir: Path | str, *, timeout: float = 5.0) -> ClusterStatus | None:
    """``cluster status``: None when ``work_dir`` has no cluster."""
    record = read_record(Path(work_dir))
    if record is None:
        return None
    running = {d.name: d.process.running() for d in record.daemons}
    leader, leader_error = _leader(record, running, timeout)
    address = record.master if leader is None else master_addresses(record)[leader]
    state: Mapping[str, Any] | None = None
    error: str | None = None
    # No proxy: the master is on loopback or on the cluster's own bridge, never elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{address}/state", timeout=timeout) as answer:
            state = json.loads(answer.read())
    except (OSError, ValueError) as exc:
        error = str(exc)
    return ClusterStatus(
        record=record,
        running=running,
        state=state,
        state_error=error,
        leader=leader,
        leader_error=leader_error,
    )


def down(work_dir: Path | str, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> list[str]:
    """``cluster down``: stop the cluster in ``work_dir`` and undo what ``up`` made.

    Idempotent: with no cluster recorded it says so and does nothing. Logs are kept; the
    sandboxes and fetcher caches the daemons made are removed (see ``_cleanup``).
    """
    path = Path(work_dir).expanduser().resolve()
    if not (path / CLUSTER_FILE).exists():
        return [f"no cluster in {path}: nothing to do"]
    with locked(path):
        record = read_record(path)
        if record is None:
            return [f"no cluster in {path}: nothing to do"]
        done = teardown(record, timeout=timeout)
        done += remove_daemon_products(path, [(d.role, d.argv) for d in record.daemons])
        (path / CLUSTER_FILE).unlink(missing_ok=True)
        shutil.rmtree(path / "run", ignore_errors=True)
    done.append(f"removed {path / CLUSTER_FILE}")
    return done
