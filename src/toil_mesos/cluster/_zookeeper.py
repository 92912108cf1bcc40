"""A standalone ZooKeeper server on loopback, for masters that elect a leader through it.

It runs Debian's ``zookeeper`` package (``/usr/share/java/zookeeper.jar``, installed by
``scripts/system-deps``) as ``ZooKeeperServerMain PORT DATADIR TICK``: one server, its own data
directory, no admin HTTP server, bound to one address (127.0.0.1 unless told otherwise: a
cluster whose agents have network namespaces binds it to the host's address on their bridge).
It is stopped by its PID, never by name. :func:`zookeeper_command` and :func:`answers` are
what the cluster launcher uses to run one as a detached daemon.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = [
    "ZOOKEEPER_JAR",
    "ZOOKEEPER_MAIN",
    "ZooKeeperServer",
    "answers",
    "zookeeper_available",
    "zookeeper_command",
]

logger = logging.getLogger(__name__)

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
#: The standalone server's main class; its arguments are ``PORT DATADIR TICK_MS``.
ZOOKEEPER_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"
_CONF_DIR = Path("/etc/zookeeper/conf")
#: ZooKeeper grants session timeouts between 2 and 20 ticks: one second per tick lets masters
#: ask for anything from 2 s (quick failover in tests) to 20 s. The default 3 s tick would
#: raise a 4 s request to 6 s.
_TICK_MS = 1000


def zookeeper_available() -> str | None:
    """None if a ZooKeeper server can be started here, else why not (for a skip reason)."""
    if shutil.which("java") is None:
        return "java is not installed (scripts/system-deps installs zookeeper and its JRE)"
    if not ZOOKEEPER_JAR.is_file():
        return f"{ZOOKEEPER_JAR} is missing: run scripts/system-deps (Debian package zookeeper)"
    return None


def answers(host: str, port: int, timeout: float) -> bool:
    """Whether a server on *host*:*port* answers ZooKeeper's ``srvr`` four-letter command."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"srvr")
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"Zookeeper version")
    except OSError:
        return False


def zookeeper_command(host: str, port: int, data_dir: Path) -> list[str]:
    """The argv of one standalone server on *host*:*port* keeping its data in *data_dir*.

    ``java`` is given by its full path (the launcher spawns without a ``PATH`` search); the
    data directory is the second word after the class name, which is how ``cluster down``
    finds it again.

    :raises RuntimeError: when no server can be started here (see :func:`zookeeper_available`).
    """
    problem = zookeeper_available()
    java = shutil.which("java")
    if problem is not None or java is None:
        raise RuntimeError(f"cannot start ZooKeeper: {problem}")
    return [
        java, "-Xmx128m", "-cp", f"{_CONF_DIR}:{ZOOKEEPER_JAR}",
        "-Dzookeeper.admin.enableServer=false",
        "-Dzookeeper.4lw.commands.whitelist=srvr,ruok",
        f"-Dzookeeper.clientPortAddress={host}",
        ZOOKEEPER_MAIN,
        str(port), str(data_dir), str(_TICK_MS),
    ]


class ZooKeeperServer:
    """One ZooKeeper server process on ``host:port`` (loopback by default), data in *data_dir*."""

    def __init__(
        self, data_dir: Path, port: int, *, log_file: Path | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.host = host
        self._log_file = log_file or data_dir / "zookeeper.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        pid = None if self._process is None else self._process.pid
        return f"<ZooKeeperServer {self.hosts} pid={pid}>"

    @property
    def hosts(self) -> str:
        """The ``host:port`` a client connects to."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._process is None else self._process.pid

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers.

        :raises RuntimeError: if it cannot start or does not answer within *timeout*; the
            message points at its log.
        """
        command = zookeeper_command(self.host, self.port, self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self._log_file, "ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "ZOO_LOG_DIR": str(self.data_dir)},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if answers(self.host, self.port, 1.0):
                logger.info("ZooKeeper up on %s (pid %d)", self.hosts, self._process.pid)
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"ZooKeeper on {self.hosts} did not answer within {timeout:g}s; see {self._log_file}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server by its PID (TERM, then KILL after *timeout*)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout)
