"""The daemons of a mini-cluster (ZooKeeper, masters, agents) and waiting for them to be ready.

A daemon is ready when it has written its ready file (its pid, address and, for an agent, its
id). Waiting is bounded and fails fast: a daemon that exits, or the lone master dying while
agents start, is reported at once with the end of its log, not as a timeout. An agent meant to
be isolated is checked to really be in its namespaces before it counts as ready.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toil_mesos.cluster._cluster_options import ClusterError
from toil_mesos.cluster._cluster_record import DaemonRecord, daemon_name
from toil_mesos.cluster._isolation import (
    MountIsolation,
    Network,
    mount_namespace_of,
    net_namespace_of,
)
from toil_mesos.cluster._supervision import (
    SAFETY_POLL,
    DirectoryWatch,
    ProcessRef,
    log_tail,
    read_ready,
)

__all__ = ["Daemon", "check_alive", "wait_ready"]


@dataclass(kw_only=True)
class Daemon:
    """One daemon slot (a master, an agent, ZooKeeper) and its current process."""

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
        return daemon_name(self.role, self.index)

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


def wait_ready(
    daemons: Sequence[Daemon],
    *,
    run_dir: Path,
    timeout: float,
    lone_master: Daemon | None,
    isolation: MountIsolation | None,
    network: Network | None,
) -> None:
    """Wait for every daemon's ready file; fail fast when one exits, bounded by *timeout*.

    *lone_master*, when the cluster has one master that is not among *daemons*, is watched
    too: agents cannot register with a dead master, and the error should say so.
    """
    deadline = time.monotonic() + timeout
    pending = list(daemons)
    watch = DirectoryWatch(run_dir)
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
                ready = read_ready(daemon.ready_file)
                if ready is not None:
                    _accept_ready(daemon, ready, isolation, network)
                    pending.remove(daemon)
                else:
                    check_alive(daemon)
            if lone_master is not None and lone_master not in daemons:
                check_alive(lone_master, while_waiting_for=pending)
            if not pending:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterError(
                    f"{', '.join(d.name for d in pending)} not ready after "
                    f"{timeout:g} s (no ready file "
                    f"{pending[0].ready_file}); see {pending[0].log}:\n"
                    f"{log_tail(pending[0].log)}"
                )
            poller.poll(min(remaining, SAFETY_POLL) * 1000)
            watch.drain()
    finally:
        watch.close()
        for fd in pidfds:
            os.close(fd)


def check_alive(daemon: Daemon, *, while_waiting_for: Sequence[Daemon] = ()) -> None:
    """Raise ClusterError, with the end of its log, if *daemon*'s process has exited."""
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
        f"{daemon.name} exited{how} {when}; see {daemon.log}:\n{log_tail(daemon.log)}"
    )


def _accept_ready(
    daemon: Daemon,
    ready: dict[str, Any],
    isolation: MountIsolation | None,
    network: Network | None,
) -> None:
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
        _check_isolated(daemon, isolation, network)


def _check_isolated(
    daemon: Daemon, isolation: MountIsolation | None, network: Network | None
) -> None:
    """Never pretend: an agent meant to be isolated must really be in its namespaces."""
    assert daemon.process is not None
    pid = daemon.process.pid
    if isolation is not None:
        inode = mount_namespace_of(pid)
        if inode is None or inode == mount_namespace_of(os.getpid()):
            raise ClusterError(f"{daemon.name} (pid {pid}) is not in a private mount namespace")
        if inode not in daemon.mount_namespaces:
            daemon.mount_namespaces.append(inode)
    if network is not None:
        expected = network.namespace_inode(daemon.index)
        if expected is None or net_namespace_of(pid) != expected:
            raise ClusterError(
                f"{daemon.name} (pid {pid}) is not in its network namespace "
                f"{network.namespaces[daemon.index]}"
            )
