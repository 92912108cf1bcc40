"""Start, inspect and stop a mini-cluster: one master and N agents as detached processes.

What ``toil-mesos cluster up/status/down`` and :class:`toil_mesos.cluster.testing.MiniCluster`
share. A cluster lives in a work directory::

    DIR/cluster.json        what runs: written atomically once every daemon is ready
    DIR/logs/*.log          each daemon's stdout and stderr (kept after ``down``, for post-mortems)
    DIR/run/*.ready         the daemons' ready files (see ``_protocol``)
    DIR/master/, DIR/agents/<i>/   the daemons' own work dirs (sandboxes, caches)

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

from toil_mesos.cluster._cluster import Cluster
from toil_mesos.cluster._cluster_options import (
    DEFAULT_READY_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
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

    Idempotent: with no cluster recorded it says so and does nothing. Logs and the daemons'
    work dirs are kept.
    """
    path = Path(work_dir).expanduser().resolve()
    if not (path / CLUSTER_FILE).exists():
        return [f"no cluster in {path}: nothing to do"]
    with locked(path):
        record = read_record(path)
        if record is None:
            return [f"no cluster in {path}: nothing to do"]
        done = teardown(record, timeout=timeout)
        (path / CLUSTER_FILE).unlink(missing_ok=True)
        shutil.rmtree(path / "run", ignore_errors=True)
    done.append(f"removed {path / CLUSTER_FILE}")
    return done
