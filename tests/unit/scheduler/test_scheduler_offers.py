"""Offer rounds against a recording driver: unused offers declined together, warm agents first."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from scheduler_fakes import GIB, RecordingDriver, driver_of, job, offer, running, status

from toil_mesos.node_report import NodeReport
from toil_mesos.scheduler.batch_system import MesosBatchSystem


@pytest.fixture
def system() -> Iterator[MesosBatchSystem]:
    with running(max_cores=16, max_memory=64 * GIB) as batch:
        yield batch


def offers(*agents: str) -> list[dict[str, Any]]:
    return [offer(a) for a in agents]


def test_unused_offers_are_declined_in_one_call(system):
    driver = driver_of(system)
    system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, offers("a1", "a2", "a3", "a4"))
    declines = driver.declines()
    assert declines == [(["o-a2", "o-a3", "o-a4"], {"refuse_seconds": 30.0})]
    assert ["o-a1"] in driver.launch_offers


def test_offers_of_ignored_hosts_are_declined_together_apart_from_idle_ones(system):
    driver = driver_of(system)
    system.ignoreNode("host-a1")
    system.ignoreNode("host-a2")
    system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, offers("a1", "a2", "a3", "a4"))
    declines = driver.declines()
    assert declines == [(["o-a1", "o-a2"], {"refuse_seconds": 2.0}),
                        (["o-a4"], {"refuse_seconds": 30.0})]
    assert ["o-a3"] in driver.launch_offers


def launched_on(driver: RecordingDriver) -> list[str]:
    return [t["agent_id"]["value"] for t in driver.launched()]


def test_an_agent_running_our_executor_is_preferred(system):
    driver = driver_of(system)
    first = system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, offers("a2"))
    assert launched_on(driver) == ["a2"]
    system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, offers("a1", "a2", "a3"))
    assert launched_on(driver) == ["a2", "a2"]  # a1 comes first, but a2 has the executor
    assert first is not None


def test_an_agent_lost_is_no_longer_warm(system):
    driver = driver_of(system)
    system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, offers("a2"))
    driver.scheduler.agentLost(driver, {"value": "a2"})
    system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, offers("a1", "a2"))
    assert launched_on(driver) == ["a2", "a1"]


class StagedReport:
    """A node report as agents send it once they list staged bundles."""

    def __init__(self, staged: tuple[str, ...]) -> None:
        self.hostname = "host"
        self.staged_bundles = staged


def test_an_agent_with_the_bundle_staged_is_preferred(system, monkeypatch):
    driver = driver_of(system)
    sha = "ab" * 32
    monkeypatch.setattr(system._deployer, "deployment",
                        type(system._deployer.deploy(job()))(sha, "http://x/bundles/y", None))
    monkeypatch.setattr(NodeReport, "decode", staticmethod(
        lambda data: StagedReport((base64.b64decode(data).decode(),))))
    driver.scheduler.frameworkMessage(driver, {"value": "e"}, {"value": "a3"},
                                      base64.b64encode(sha.encode()).decode())
    driver.scheduler.frameworkMessage(driver, {"value": "e"}, {"value": "a2"},
                                      base64.b64encode(b"other").decode())
    system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, offers("a1", "a2", "a3"))
    assert launched_on(driver) == ["a3"]


def test_without_warm_agents_the_masters_order_holds(system):
    driver = driver_of(system)
    for _ in range(3):
        system.issueBatchJob("true", job(cores=2))
    driver.scheduler.resourceOffers(driver, offers("a3", "a1", "a2"))
    assert launched_on(driver) == ["a3", "a1", "a2"]


def test_running_and_issued_ids_follow_the_jobs(system):
    driver = driver_of(system)
    ids = [system.issueBatchJob("true", job()) for _ in range(3)]
    driver.scheduler.resourceOffers(driver, offers("a1"))
    tasks = driver.launched()
    assert sorted(system.getIssuedBatchJobIDs()) == sorted(ids)
    assert system.getRunningBatchJobIDs() == {}
    driver.scheduler.statusUpdate(driver, status(tasks[0], "TASK_RUNNING"))
    assert list(system.getRunningBatchJobIDs()) == [ids[0]]
    assert system.nodeInUse("host-a1")
    driver.scheduler.statusUpdate(driver, status(tasks[0], "TASK_FINISHED"))
    driver.scheduler.statusUpdate(driver, status(tasks[1], "TASK_FAILED"))
    assert system.getRunningBatchJobIDs() == {}
    assert sorted(system.getIssuedBatchJobIDs()) == [ids[2]]
    system.killBatchJobs([ids[2]])
    assert system.getIssuedBatchJobIDs() == []
    assert not system.nodeInUse("host-a1")
