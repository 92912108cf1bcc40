"""A standalone ZooKeeper server on loopback, for masters that elect a leader through it.

It runs Debian's ``zookeeper`` package (``/usr/share/java/zookeeper.jar``, installed by
``scripts/system-deps``) as ``ZooKeeperServerMain PORT DATADIR``: one server, its own data
directory, no admin HTTP server, bound to 127.0.0.1. It is stopped by its PID, never by name.
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

__all__ = ["ZOOKEEPER_JAR", "ZooKeeperServer", "zookeeper_available"]

logger = logging.getLogger(__name__)

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
_CONF_DIR = Path("/etc/zookeeper/conf")


def zookeeper_available() -> str | None:
    """None if a ZooKeeper server can be started here, else why not (for a skip reason)."""
    if shutil.which("java") is None:
        return "java is not installed (scripts/system-deps installs zookeeper and its JRE)"
    if not ZOOKEEPER_JAR.is_file():
        return f"{ZOOKEEPER_JAR} is missing: run scripts/system-deps (Debian package zookeeper)"
    return None


def _answers(port: int, timeout: float) -> bool:
    """Whether a server on *port* answers ZooKeeper's ``srvr`` four-letter command."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"srvr")
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"Zookeeper version")
    except OSError:
        return False


class ZooKeeperServer:
    """One ZooKeeper server process on ``127.0.0.1:port`` with data under *data_dir*."""

    def __init__(self, data_dir: Path, port: int, *, log_file: Path | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self._log_file = log_file or data_dir / "zookeeper.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        pid = None if self._process is None else self._process.pid
        return f"<ZooKeeperServer 127.0.0.1:{self.port} pid={pid}>"

    @property
    def hosts(self) -> str:
        """The ``host:port`` a client connects to."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._process is None else self._process.pid

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers.

        :raises RuntimeError: if it cannot start or does not answer within *timeout*; the
            message points at its log.
        """
        problem = zookeeper_available()
        if problem is not None:
            raise RuntimeError(f"cannot start ZooKeeper: {problem}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        classpath = f"{_CONF_DIR}:{ZOOKEEPER_JAR}"
        command = [
            "java", "-Xmx128m", "-cp", classpath,
            "-Dzookeeper.admin.enableServer=false",
            "-Dzookeeper.4lw.commands.whitelist=srvr,ruok",
            "-Dzookeeper.clientPortAddress=127.0.0.1",
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(self.port), str(self.data_dir),
        ]
        with open(self._log_file, "ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "ZOO_LOG_DIR": str(self.data_dir)},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if _answers(self.port, 1.0):
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
