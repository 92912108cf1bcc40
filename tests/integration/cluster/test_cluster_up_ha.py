"""``toil-mesos cluster up --masters 3 --zk``: masters electing a leader through the cluster's
own ZooKeeper, followed by frameworks and agents; ``cluster status`` names the leader.

The whole story through the command line: ``up`` prints the ``zk://`` URL; a framework given it
registers with the leader and gets the agent's offers; ``status`` names the leader and the two
standbys; the leader is SIGKILLed; ``status`` names the new leader, the framework re-registers
with it under the same id and the agent's offers come from it; ``down`` stops everything,
ZooKeeper included, and removes ZooKeeper's data. The twin, one master without ZooKeeper, has
no leader once its master is killed and its framework never re-registers. ``--credentials``
reaches every master.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from launcher_helpers import become_subreaper, cli, processes_mentioning, reap

from toil_mesos.cluster._zookeeper import zookeeper_available
from toil_mesos.cluster.testing import cluster_work_dir
from toil_mesos.mesos import Credentials, DriverStatus, SchedulerDriver
from toil_mesos.mesos._scheduler_state import AuthenticationRefused
from toil_mesos.mesos.interface import Scheduler

pytestmark = pytest.mark.integration

INFO = {"user": "root", "name": "ha-cluster-test", "roles": ["*"], "failover_timeout": 120.0,
        "capabilities": [{"type": "MULTI_ROLE"}]}
#: Every wait here ends as soon as its condition holds; this only bounds a broken run.
WAIT = 60.0
#: How long the twin's framework is given to re-register with a master that stays dead.
TWIN_WAIT = 10.0


@pytest.fixture
def work_dir() -> Iterator[Path]:
    if zookeeper_available() is not None:
        pytest.skip(str(zookeeper_available()))
    become_subreaper(True)  # the daemons outlive `cluster up`: reap them here
    try:
        with cluster_work_dir("toil-mesos-up-ha-") as path:
            yield path
    finally:
        become_subreaper(False)


class _Recorder(Scheduler):
    """Registrations and the agents whose offers arrived, with the master that sent them."""

    def __init__(self) -> None:
        self.registrations: list[tuple[str, int]] = []  # ("registered"/"reregistered", port)
        self.offers: list[tuple[int, str]] = []  # (master port, agent id)
        self.port = 0
        self.cond = threading.Condition()

    def wait_for(self, predicate: Any, timeout: float = WAIT) -> bool:
        with self.cond:
            return bool(self.cond.wait_for(predicate, timeout))

    def registered(self, driver: Any, frameworkId: Any, masterInfo: Any) -> None:
        with self.cond:
            self.port = int(masterInfo["port"])
            self.registrations.append(("registered", self.port))
            self.cond.notify_all()

    def reregistered(self, driver: Any, masterInfo: Any) -> None:
        with self.cond:
            self.port = int(masterInfo["port"])
            self.registrations.append(("reregistered", self.port))
            self.cond.notify_all()

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        with self.cond:
            self.offers.extend((self.port, str(o["agent_id"]["value"])) for o in offers)
            self.cond.notify_all()
        driver.declineOffer([o["id"] for o in offers], {"refuse_seconds": 1.0})


def _status(target: Path) -> tuple[int, dict[str, Any]]:
    done = cli("cluster", "status", "--work-dir", str(target), "--json")
    return done.returncode, json.loads(done.stdout)


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _wait_status(target: Path, predicate: Any) -> dict[str, Any]:
    """``cluster status --json`` once *predicate* holds of it (polled, bounded by WAIT)."""
    deadline = time.monotonic() + WAIT
    while True:
        report = _status(target)[1]
        if predicate(report):
            return report
        assert time.monotonic() < deadline, report
        time.sleep(0.5)


def test_three_masters_elect_fail_over_and_leave_nothing(work_dir: Path) -> None:
    target = work_dir / "cluster"
    up = cli("cluster", "up", "--work-dir", str(target), "--masters", "3", "--zk",
             "--zk-session-timeout", "2", "--agents", "1")
    assert up.returncode == 0, up.stderr
    endpoint = up.stdout.strip()
    assert re.fullmatch(r"zk://127\.0\.0\.1:\d+/mesos", endpoint), up.stdout
    record = json.loads((target / "cluster.json").read_text())
    pids = {d["role"] + (f" {d['index']}" if d["role"] == "master" else ""): d["pid"]
            for d in record["daemons"]}
    zookeeper_pid = pids["zookeeper"]
    driver: SchedulerDriver | None = None
    try:
        code, report = _status(target)
        assert code == 0, report
        leader = report["leader"]
        assert sorted(report["masters"].values()) == ["leading", "standby", "standby"]
        assert report["masters"][leader] == "leading"
        addresses = dict(zip(["master 1", "master 2", "master 3"], record["masters"],
                             strict=True))
        text = cli("cluster", "status", "--work-dir", str(target)).stdout
        assert re.search(rf"^{leader} +{re.escape(addresses[leader])} .* alive  leading$",
                         text, re.MULTILINE), text
        assert f"zookeeper {endpoint[len('zk://'):].split('/')[0]}" in text

        recorder = _Recorder()
        driver = SchedulerDriver(recorder, INFO, endpoint, stop_timeout=5.0, backoff_max=1.0)
        driver.start()
        agent_id = record["agents"][0]["id"]
        first = _port(addresses[leader])
        assert recorder.wait_for(lambda: (first, agent_id) in recorder.offers), recorder.offers
        assert recorder.registrations == [("registered", first)]

        os.kill(pids[leader], signal.SIGKILL)
        after = _wait_status(target, lambda r: r["leader"] not in (None, leader))
        new = after["leader"]
        assert after["masters"][leader] == "down"
        assert after["masters"][new] == "leading"
        second = _port(addresses[new])
        # The framework follows the new leader under the same id, and so does the agent.
        assert recorder.wait_for(lambda: (second, agent_id) in recorder.offers), (
            recorder.registrations, recorder.offers)
        assert ("reregistered", second) in recorder.registrations
        state = _status(target)[1]["state"]  # read from the new leader
        assert [f["id"] for f in state["frameworks"]] == [driver.framework_id]
    finally:
        if driver is not None:
            assert driver.stop() is DriverStatus.DRIVER_STOPPED
        down = cli("cluster", "down", "--work-dir", str(target))
        reap(list(pids.values()))
    assert down.returncode == 0, down.stderr
    assert f"stopped zookeeper (pid {zookeeper_pid})" in down.stdout
    assert processes_mentioning(str(target)) == []
    assert not (target / "zookeeper").exists()
    assert not (target / "masters").exists()
    assert not (target / "cluster.json").exists()


def test_twin_one_master_without_zookeeper_has_no_leader_once_killed(work_dir: Path) -> None:
    target = work_dir / "cluster"
    up = cli("cluster", "up", "--work-dir", str(target), "--agents", "1")
    assert up.returncode == 0, up.stderr
    address = up.stdout.strip()
    record = json.loads((target / "cluster.json").read_text())
    pids = [d["pid"] for d in record["daemons"]]
    driver: SchedulerDriver | None = None
    try:
        assert _status(target)[1]["masters"] == {"master": "leading"}
        recorder = _Recorder()
        driver = SchedulerDriver(recorder, INFO, address, stop_timeout=5.0, backoff_max=1.0)
        driver.start()
        assert recorder.wait_for(lambda: recorder.offers), "no offer from the lone master"
        os.kill(record["master_pid"], signal.SIGKILL)
        code, report = _status(target)
        assert code == 1
        assert report["leader"] is None and report["masters"] == {"master": "down"}
        assert "master is down" in report["leader_error"]
        assert not recorder.wait_for(lambda: len(recorder.registrations) > 1, TWIN_WAIT)
    finally:
        if driver is not None:
            driver.stop()
        down = cli("cluster", "down", "--work-dir", str(target))
        reap(pids)
    assert down.returncode == 0, down.stderr


def test_several_masters_without_zookeeper_are_refused(work_dir: Path) -> None:
    target = work_dir / "cluster"
    done = cli("cluster", "up", "--work-dir", str(target), "--masters", "3")
    assert done.returncode == 2
    assert "--masters 3 needs ZooKeeper to elect the leader: add --zk" in done.stderr
    assert done.stdout == ""
    assert processes_mentioning(str(target)) == []
    assert not (target / "cluster.json").exists()


def test_credentials_reach_every_master(work_dir: Path) -> None:
    target = work_dir / "cluster"
    secrets = work_dir / "credentials.json"
    secrets.write_text(json.dumps({"credentials": [{"principal": "toil", "secret": "s3cret"}]}))
    up = cli("cluster", "up", "--work-dir", str(target), "--masters", "2", "--zk",
             "--agents", "1", "--credentials", str(secrets))
    assert up.returncode == 0, up.stderr
    endpoint = up.stdout.strip()
    record = json.loads((target / "cluster.json").read_text())
    pids = [d["pid"] for d in record["daemons"]]
    masters = [d for d in record["daemons"] if d["role"] == "master"]
    try:
        assert len(masters) == 2
        assert all(d["argv"][d["argv"].index("--credentials") + 1] == str(secrets)
                   for d in masters)
        refused = SchedulerDriver(_Recorder(), {**INFO, "principal": "toil"}, endpoint,
                                  stop_timeout=5.0, credentials=Credentials("toil", "wrong"))
        refused.start()
        with pytest.raises(AuthenticationRefused, match="--mesosSecretFile"):
            refused.join(WAIT)
        recorder = _Recorder()
        driver = SchedulerDriver(recorder, INFO, endpoint, stop_timeout=5.0,
                                 credentials=Credentials("toil", "s3cret"))
        driver.start()
        try:
            assert recorder.wait_for(lambda: recorder.offers), recorder.registrations
        finally:
            driver.stop()
    finally:
        down = cli("cluster", "down", "--work-dir", str(target))
        reap(pids)
    assert down.returncode == 0, down.stderr
