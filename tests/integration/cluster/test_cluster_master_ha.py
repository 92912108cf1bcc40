"""Mini-masters that elect a leader through a real ZooKeeper, and authenticate frameworks.

Checked against the ha/ and auth/ transcripts: a non-leader answers every scheduler call with a
bare 307 to the leader (scheme-relative, hostname, ``/master`` prefix), validating nothing; the
election data is compact JSON MasterInfo; a new leader accepts the same framework id; missing
or wrong credentials get the recorded 401, a principal mismatch the recorded 400.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from master_helpers import call, recorded, request
from tests import zk_fixture

from toil_mesos.cluster._master_election import MasterElection
from toil_mesos.cluster._zookeeper import ZooKeeperServer
from toil_mesos.cluster.master import MasterServer
from toil_mesos.mesos import Credentials, DriverStatus, SchedulerDriver
from toil_mesos.mesos._master_spec import ZooKeeperMasters
from toil_mesos.mesos._scheduler_state import AuthenticationRefused
from toil_mesos.mesos.interface import Scheduler

zookeeper = zk_fixture.zookeeper
WAIT = 15.0
SECRET = "s3cret-for-tests"
INFO = {"user": "root", "name": "ha-test", "roles": ["*"], "failover_timeout": 120.0,
        "capabilities": [{"type": "MULTI_ROLE"}]}


def _start(zk: ZooKeeperServer | None, path: str, **kwargs: Any) -> MasterServer:
    server = MasterServer(heartbeat_interval=15.0, offer_interval=0.2, agent_timeout=5.0, **kwargs)
    if zk is not None:
        server.election = MasterElection(
            ZooKeeperMasters(hosts=zk.hosts, path=path), server.info_data(), session_timeout=4.0
        )
        server.election.start()
    server.start()
    return server


def _stop(server: MasterServer) -> None:
    server.stop(timeout=5.0)
    if server.election is not None:
        server.election.stop()


@pytest.fixture
def pair(
    zookeeper: ZooKeeperServer, request: pytest.FixtureRequest
) -> Iterator[list[MasterServer]]:
    path = f"/mesos-{request.node.name[:40]}"
    servers = [_start(zookeeper, path)]
    servers.append(_start(zookeeper, path))
    try:
        yield servers
    finally:
        for server in servers:
            _stop(server)


def _names(response: Any) -> list[str]:
    return [name for name, _ in response.headers]


def test_non_leader_redirects_like_mesos(
    pair: list[MasterServer], zookeeper: ZooKeeperServer
) -> None:
    leader, other = pair
    assert leader.election is not None and leader.election.is_leader
    assert other.election is not None and not other.election.is_leader
    recorded_head = recorded("ha/calls/05_SUBSCRIBE_nonleader.response.http").split(b"\r\n\r\n")[0]
    recorded_names = [line.split(b":")[0].decode() for line in recorded_head.split(b"\r\n")[1:]]
    assert recorded_names == ["Date", "Location", "Content-Length"]
    location = f"//localhost:{leader.port}/master/api/v1/scheduler"
    subscribe = {"type": "SUBSCRIBE", "subscribe": {"framework_info": INFO}}
    decline = {"type": "DECLINE", "framework_id": {"value": "made-up"},
               "decline": {"offer_ids": [{"value": "made-up"}]}}
    for response in (
        call(other.address, subscribe),
        call(other.address, decline, stream_id="made-up"),  # no validation first
        request(other.address, "GET", "/api/v1/scheduler"),
    ):
        assert (response.status, response.body) == (307, b"")
        assert _names(response) == recorded_names
        assert response.header("Location") == location
        assert response.header("Content-Length") == "0"
    assert request(other.address, "GET", "/state").header("Location") == (
        f"//localhost:{leader.port}/master/state"
    )
    for server in (leader, other):
        redirect = request(server.address, "GET", "/master/redirect")
        assert (redirect.status, redirect.header("Location")) == (307, f"//localhost:{leader.port}")
    assert request(other.address, "GET", "/health").status == 200
    # The election data: compact JSON MasterInfo, sorted keys, as Mesos writes it.
    client = KazooClient(hosts=zookeeper.hosts)
    client.start(timeout=WAIT)
    try:
        path = f"/mesos-{'test_non_leader_redirects_like_mesos'}"
        children = sorted(client.get_children(path))
        assert [c.rsplit("_", 1)[0] for c in children] == ["json.info", "json.info"]
        data, _ = client.get(f"{path}/{children[0]}")
        assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
        assert json.loads(data)["address"] == {
            "hostname": "localhost", "ip": "127.0.0.1", "port": leader.port}
        assert json.loads(data)["ip"] == 16777343  # 127.0.0.1 as Mesos packs it (transcript)
    finally:
        client.stop()
        client.close()


class _Recorder(Scheduler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.cond = threading.Condition()

    def _add(self, name: str, value: Any = None) -> None:
        with self.cond:
            self.events.append((name, value))
            self.cond.notify_all()

    def wait_for(self, name: str, count: int = 1) -> None:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: sum(n == name for n, _ in self.events) >= count, WAIT * 2
            )
        assert ok, self.events

    def registered(self, driver: Any, frameworkId: Any, masterInfo: Any) -> None:
        self._add("registered", (frameworkId["value"], masterInfo["port"]))

    def reregistered(self, driver: Any, masterInfo: Any) -> None:
        self._add("reregistered", masterInfo["port"])

    def disconnected(self, driver: Any) -> None:
        self._add("disconnected")

    def error(self, driver: Any, message: str) -> None:
        self._add("error", message)


@pytest.mark.parametrize("form", ["list", "zk"])
def test_driver_follows_the_new_leader(
    pair: list[MasterServer], zookeeper: ZooKeeperServer, form: str,
    request: pytest.FixtureRequest,
) -> None:
    leader, other = pair
    endpoint = (f"{other.address},{leader.address}" if form == "list"
                else f"zk://{zookeeper.hosts}/mesos-{request.node.name[:40]}")
    recorder = _Recorder()
    driver = SchedulerDriver(recorder, INFO, endpoint, stop_timeout=5.0, backoff_max=1.0)
    driver.start()
    try:
        recorder.wait_for("registered")
        framework_id, port = recorder.events[0][1]
        assert port == leader.port  # the list began with the non-leader: its 307 was followed
        _stop(leader)  # its streams end and its election member goes at once
        recorder.wait_for("reregistered")
        assert ("reregistered", other.port) in recorder.events
        assert driver.framework_id == framework_id
        state = other.state_json()
        assert [f["id"] for f in state["frameworks"]] == [framework_id]
    finally:
        assert driver.stop() is DriverStatus.DRIVER_STOPPED


@pytest.fixture
def secured() -> Iterator[MasterServer]:
    server = _start(None, "", credentials={"toil": SECRET})
    try:
        yield server
    finally:
        _stop(server)


def _subscribe(principal: str | None = "toil") -> dict[str, Any]:
    info = dict(INFO) if principal is None else {**INFO, "principal": principal}
    return {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}


@pytest.mark.parametrize("authorization", [
    None, "Basic dG9pbDp3cm9uZy1zZWNyZXQ=", "Basic bm9ib2R5OnMzY3JldC1mb3ItdGVzdHM=",
    "Bearer abc.def.ghi", "Basic %%%"])
def test_missing_or_wrong_credentials_get_the_recorded_401(
    secured: MasterServer, authorization: str | None
) -> None:
    headers = [("Content-Type", "application/json"), ("Accept", "application/json")]
    if authorization is not None:
        headers.append(("Authorization", authorization))
    response = request(secured.address, "POST", "/api/v1/scheduler",
                       json.dumps(_subscribe()).encode(), headers)
    raw = recorded("auth/calls/01_SUBSCRIBE_no_authorization.response.http")
    head, body = raw.split(b"\r\n\r\n", 1)
    names = [line.split(b":")[0].decode() for line in head.split(b"\r\n")[1:]]
    assert (response.status, response.body) == (401, body)
    assert _names(response) == names
    assert response.header("WWW-Authenticate") == 'Basic realm="mesos-master-scheduler"'


def test_principal_mismatch_is_400_and_a_missing_one_is_filled_in(secured: MasterServer) -> None:
    headers = [("Content-Type", "application/json"), ("Accept", "application/json"),
               ("Authorization", "Basic dG9pbDpzM2NyZXQtZm9yLXRlc3Rz")]
    response = request(secured.address, "POST", "/api/v1/scheduler",
                       json.dumps(_subscribe("someone-else")).encode(), headers)
    assert response.status == 400
    assert response.body.decode() == (
        "Failed to validate scheduler::Call: Authenticated principal 'toil' does not match "
        "principal 'someone-else' set in `FrameworkInfo`"
    )
    recorder = _Recorder()
    driver = SchedulerDriver(recorder, INFO, secured.address, stop_timeout=5.0,
                             credentials=Credentials("toil", SECRET))
    driver.start()
    try:
        recorder.wait_for("registered")
        (framework,) = secured.state_json()["frameworks"]
        assert framework["principal"] == "toil"
    finally:
        driver.stop()


def test_a_wrong_secret_stops_the_driver(secured: MasterServer) -> None:
    recorder = _Recorder()
    driver = SchedulerDriver(recorder, {**INFO, "principal": "toil"}, secured.address,
                             stop_timeout=5.0, credentials=Credentials("toil", "wrong-secret"))
    driver.start()
    with pytest.raises(AuthenticationRefused, match="--mesosSecretFile"):
        driver.join(WAIT)
    assert secured.state_json()["frameworks"] == []
