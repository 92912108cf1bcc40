"""The ZooKeeper master detector against a real ZooKeeper server on loopback.

Masters are played by kazoo clients that publish what Mesos masters publish (ha/ transcript):
an ephemeral sequential ``json.info_`` member with compact JSON MasterInfo under ``/mesos``.
Closing a client's session removes its member at once, as the session expiry does after a
master's death.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from kazoo.client import KazooClient
from tests import zk_fixture
from tests.unit.mesos.test_mesos_scheduler_driver import (
    INFO,
    WAIT,
    FakeSleep,
    Recorder,
    stream,
    stream_requests,
    subscribed_record,
)
from tests.zk_fixture import free_port

from toil_mesos.cluster._zookeeper import ZooKeeperServer
from toil_mesos.errors import ConnectError
from toil_mesos.mesos import DriverStatus, SchedulerDriver, parse_master_spec
from toil_mesos.mesos._master_detection import ZooKeeperDetector
from toil_mesos.mesos._master_spec import ZooKeeperMasters
from toil_mesos.mesos._transport import BLOCK, ScriptedTransport

zookeeper = zk_fixture.zookeeper


def _master_info(port: int) -> bytes:
    info = {
        "address": {"hostname": "localhost", "ip": "127.0.0.1", "port": port},
        "hostname": "localhost",
        "id": f"master-{port}",
        "ip": 16777343,
        "pid": f"master@127.0.0.1:{port}",
        "port": port,
        "version": "1.12.0",
    }
    return json.dumps(info, sort_keys=True, separators=(",", ":")).encode()


class FakeMaster:
    """A ZooKeeper session holding one election member, as a Mesos master does."""

    def __init__(self, hosts: str, path: str, port: int) -> None:
        self.client = KazooClient(hosts=hosts)
        self.client.start(timeout=WAIT)
        self.client.ensure_path(path)
        self.member = self.client.create(
            f"{path}/json.info_", _master_info(port), ephemeral=True, sequence=True
        )

    def die(self) -> None:
        self.client.stop()
        self.client.close()


class Changes:
    def __init__(self) -> None:
        self.seen: list[str | None] = []
        self._cond = threading.Condition()

    def __call__(self, url: str | None) -> None:
        with self._cond:
            self.seen.append(url)
            self._cond.notify_all()

    def wait_for(self, url: str | None) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: self.seen and self.seen[-1] == url, WAIT)
        assert ok, f"leaders seen: {self.seen}"


def test_detector_follows_the_lowest_member(zookeeper: ZooKeeperServer) -> None:
    path = "/mesos-follow"
    m1 = FakeMaster(zookeeper.hosts, path, 5050)
    m2 = FakeMaster(zookeeper.hosts, path, 5052)
    assert m1.member < m2.member
    detector = ZooKeeperDetector(ZooKeeperMasters(hosts=zookeeper.hosts, path=path))
    changes = Changes()
    try:
        detector.start(changes)
        changes.wait_for("http://127.0.0.1:5050")
        assert detector.next_master() == "http://127.0.0.1:5050"
        m2.die()  # a non-leader leaving changes nothing
        m3 = FakeMaster(zookeeper.hosts, path, 5054)
        m1.die()
        changes.wait_for("http://127.0.0.1:5054")
        assert detector.next_master() == "http://127.0.0.1:5054"
        assert changes.seen == ["http://127.0.0.1:5050", "http://127.0.0.1:5054"]
        m3.die()
        changes.wait_for(None)
    finally:
        detector.close()


def test_detector_waits_for_the_first_master(zookeeper: ZooKeeperServer) -> None:
    path = "/mesos-later"
    detector = ZooKeeperDetector(ZooKeeperMasters(hosts=zookeeper.hosts, path=path))
    changes = Changes()
    try:
        detector.start(changes)
        assert detector.next_master() is None
        master = FakeMaster(zookeeper.hosts, path, 5060)
        # The znode did not exist when the detector started: asking again finds the leader.
        assert detector.next_master() == "http://127.0.0.1:5060"
        master.die()
    finally:
        detector.close()


def test_unreachable_zookeeper_names_the_option() -> None:
    spec = parse_master_spec(f"zk://127.0.0.1:{free_port()}/mesos")
    assert isinstance(spec, ZooKeeperMasters)
    detector = ZooKeeperDetector(spec, connect_timeout=1.0)
    with pytest.raises(ConnectError, match="--mesosEndpoint"):
        detector.start(lambda url: None)


def test_driver_moves_with_the_election(zookeeper: ZooKeeperServer) -> None:
    """A zk:// endpoint end to end: the driver subscribes to the leader ZooKeeper names and
    moves to the next one when the leader's session ends."""
    path = "/mesos-driver"
    m1 = FakeMaster(zookeeper.hosts, path, 5050)
    m2 = FakeMaster(zookeeper.hosts, path, 5052)
    first = stream(subscribed_record(), BLOCK, stream_id="s1")
    transport = ScriptedTransport([first, stream(subscribed_record(), BLOCK, stream_id="s2")])
    recorder = Recorder()
    driver = SchedulerDriver(
        recorder, INFO, f"zk://{zookeeper.hosts}{path}", transport=transport,
        sleep=FakeSleep(), stop_timeout=WAIT,
    )
    driver.start()
    try:
        recorder.wait_for(lambda names: "registered" in names)
        m1.die()
        recorder.wait_for(lambda names: "reregistered" in names)
        assert first.aborted
        urls: list[Any] = [r.url for r in stream_requests(transport)]
        assert urls == [
            "http://127.0.0.1:5050/api/v1/scheduler",
            "http://127.0.0.1:5052/api/v1/scheduler",
        ]
    finally:
        assert driver.stop() is DriverStatus.DRIVER_STOPPED
        m2.die()
