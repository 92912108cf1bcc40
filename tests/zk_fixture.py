"""A real ZooKeeper server on loopback for the tests that need one (skipped where the machine
has no ``zookeeper`` package: ``scripts/system-deps`` installs it)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from toil_mesos.cluster._zookeeper import ZooKeeperServer, zookeeper_available


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """One ZooKeeper server per test module, stopped by its PID at the end."""
    reason = zookeeper_available()
    if reason is not None:
        pytest.skip(reason)
    server = ZooKeeperServer(tmp_path_factory.mktemp("zk"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
