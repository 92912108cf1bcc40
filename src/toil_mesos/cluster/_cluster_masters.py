"""The cluster's masters: their command lines, the cluster's own ZooKeeper, who leads.

A lone master needs nothing but its address; masters that elect a leader (``--masters N``)
are given the ``zk://`` URL, the session timeout and the credentials by :func:`master_argv`.
``cluster up --zk`` starts one ZooKeeper server for the masters' election. Unlike the other
daemons it writes no ready file, so it is ready when it answers ZooKeeper's ``srvr`` command;
it is spawned like them (detached, recorded by pid and start time) so that ``cluster down``,
from another process, stops it and removes its data. Who leads is asked of ZooKeeper, as the
frameworks and agents do, and named as ``cluster status`` names masters.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from toil_mesos.cluster._cluster_options import ClusterError, ClusterOptions
from toil_mesos.cluster._master_election import current_leader
from toil_mesos.cluster._supervision import ProcessRef, log_tail, spawn, stop_all
from toil_mesos.cluster._zookeeper import answers, zookeeper_command
from toil_mesos.mesos._master_spec import ZooKeeperMasters, parse_master_spec

__all__ = ["ZK_PATH", "leading_master", "master_argv", "start_zookeeper"]

#: The masters' election znode in the cluster's own ZooKeeper (Mesos' usual one).
ZK_PATH: Final = "/mesos"
#: How often a starting server is asked whether it answers (the wait also ends if it dies).
_POLL: Final = 0.2


def master_argv(
    command: list[str],
    options: ClusterOptions,
    *,
    host: str,
    work_dir: Path,
    ready: Path,
    zk: str | None,
) -> list[str]:
    """A master's command line (``_protocol``), listening on a port of its own choosing; the
    launcher pins that port after the first start, so a restarted master keeps it."""
    argv = [
        *command,
        "--host", host,
        "--port", "0",
        "--work-dir", str(work_dir),
        "--ready-file", str(ready),
    ]  # fmt: skip
    if zk is not None:
        argv += ["--zk", zk, "--zk-session-timeout", f"{options.zk_session_timeout:g}"]
    if options.credentials is not None:
        argv += ["--credentials", str(options.credentials.resolve())]
    return argv + list(options.master_args)


def _free_port(host: str) -> int:
    # ZooKeeper cannot report a port it picked itself, so one is chosen for it.
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_zookeeper(
    data_dir: Path, host: str, log: Path, *, timeout: float
) -> tuple[list[str], ProcessRef, int]:
    """Start a server on *host* keeping its data in *data_dir*; wait until it answers.

    Returns its argv, its process and its port.

    :raises ClusterError: when it cannot start, exits, or does not answer within *timeout*
        (it is stopped then), with the tail of its log.
    """
    port = _free_port(host)
    try:
        argv = zookeeper_command(host, port, data_dir)
    except RuntimeError as exc:
        raise ClusterError(f"--zk: {exc}") from None
    process = spawn(argv, log)
    deadline = time.monotonic() + timeout
    while not answers(host, port, 1.0):
        problem = None
        if not process.running():
            code = process.reap()
            problem = "exited" + ("" if code is None else f" with status {code}")
        elif time.monotonic() > deadline:
            problem = f"did not answer on {host}:{port} within {timeout:g} s"
        if problem is not None:
            stop_all([process], 5.0)
            raise ClusterError(f"zookeeper {problem}; see {log}:\n{log_tail(log)}")
        process.wait(_POLL)  # returns at once if it dies
    return argv, process, port


def leading_master(endpoint: str, masters: Mapping[str, str], *, timeout: float) -> str | None:
    """The name (a key of *masters*, name to ``HOST:PORT``) of the master leading in the
    election at *endpoint* (``zk://``), or None while none of them leads.

    :raises ConnectionError: when ZooKeeper does not answer.
    """
    spec = parse_master_spec(endpoint)
    if not isinstance(spec, ZooKeeperMasters):
        raise ValueError(f"not a zk:// endpoint: {endpoint!r}")
    address = current_leader(spec, timeout=timeout)
    return next((name for name, where in masters.items() if where == address), None)
