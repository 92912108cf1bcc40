"""Agents set aside after failed executor starts, and tried again when they come back.

First the bookkeeping on its own (a fake clock, no threads), then the batch system's use of it
against the recording driver of ``scheduler_fakes``: a job whose executor never
started goes back to the queue instead of reaching Toil, an agent on probation gets one task at
a time, a set-aside agent's offers are declined, and when every agent is set aside the workflow
stops with each agent's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from scheduler_fakes import RecordingDriver, driver_of, job, offer, running, status
from toil.batchSystems.abstractBatchSystem import BatchJobExitReason

from toil_mesos.errors import MesosError
from toil_mesos.scheduler._agent_diagnosis import classify
from toil_mesos.scheduler._agent_health import (
    CRASH_WINDOW_SECONDS,
    EXTRA_REQUEUES_PER_JOB,
    MAX_START_FAILURES,
    AgentHealth,
    StartFailure,
    all_set_aside_message,
    offer_address,
)
from toil_mesos.scheduler.batch_system import MesosBatchSystem


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health_with(*agents: str) -> tuple[AgentHealth, Clock]:
    clock = Clock()
    health = AgentHealth(clock=clock)
    for index, agent_id in enumerate(agents):
        health.offered(agent_id, "localhost", f"127.0.0.1:{5051 + index}")
    return health, clock


def test_two_start_failures_in_a_row_set_an_agent_aside():
    health, _ = health_with("S0", "S1")
    assert health.allowance("S0", in_flight=0) is None  # a fresh agent: no limit
    assert health.start_failed("S0") is StartFailure.COUNTED
    assert health.allowance("S0", in_flight=0) == 1 and health.allowance("S0", in_flight=1) == 0
    assert health.start_failed("S0") is StartFailure.SET_ASIDE
    assert health.is_set_aside("S0") and health.allowance("S0", in_flight=0) == 0
    assert health.start_failed("S0") is StartFailure.IGNORED
    assert not health.all_set_aside()  # S1 is fine
    assert health.set_aside() == ["S0"]


def test_a_task_that_runs_clears_the_count():
    health, _ = health_with("S0")
    health.start_failed("S0")
    health.started("S0")
    assert health.allowance("S0", in_flight=5) is None
    health.ended("S0", executor_died=False)
    assert health.start_failed("S0") is StartFailure.COUNTED  # one again, not two


def test_an_executor_that_crashes_with_running_tasks_is_not_a_failed_start():
    health, clock = health_with("S0")
    health.started("S0")
    assert health.start_failed("S0") is StartFailure.CRASH  # a task still runs there
    health.ended("S0", executor_died=True)
    assert health.start_failed("S0") is StartFailure.CRASH  # the same crash, just after
    clock.now += CRASH_WINDOW_SECONDS + 1
    assert health.start_failed("S0") is StartFailure.COUNTED


def test_every_agent_set_aside_is_all_set_aside_and_none_known_is_not():
    health, _ = health_with()
    assert not health.all_set_aside()
    health, _ = health_with("S0", "S1")
    for agent_id in ("S0", "S1"):
        health.start_failed(agent_id)
        health.start_failed(agent_id)
    assert health.all_set_aside()


def test_a_new_agent_id_on_the_same_address_replaces_the_set_aside_one(caplog):
    health, _ = health_with("S0", "S1")
    health.start_failed("S0")
    health.start_failed("S0")
    health.start_failed("S1")
    health.start_failed("S1")
    caplog.set_level(logging.WARNING)
    assert health.offered("S0-new", "localhost", "127.0.0.1:5051") == "S0"
    assert not health.is_set_aside("S0-new") and not health.all_set_aside()
    assert health.set_aside() == ["S1"]
    assert "re-registered as agent S0-new" in caplog.text


def test_a_lost_agent_is_forgotten_and_fresh_when_it_offers_again():
    health, _ = health_with("S0", "S1")
    health.start_failed("S0")
    health.start_failed("S0")
    assert health.lost("S0") is True
    assert health.lost("S1") is False
    health.offered("S0", "localhost", "127.0.0.1:5051")
    assert not health.is_set_aside("S0") and health.allowance("S0", in_flight=0) is None


def test_a_job_goes_back_to_the_queue_until_every_agent_could_be_set_aside_and_no_more():
    health, _ = health_with("S0", "S1", "S2")
    bound = MAX_START_FAILURES * 3 + EXTRA_REQUEUES_PER_JOB
    assert [health.may_requeue(7) for _ in range(bound + 1)] == [True] * bound + [False]
    assert health.attempt(7) == bound + 1 and health.attempt(8) == 0


def test_the_stop_message_names_each_agent_and_its_reason():
    diagnosis = classify("sh: 1: /opt/x/toil-mesos: not found\n", executor_command="x y")
    text = all_set_aside_message(["S0", "S1"], {"S0": diagnosis},
                                 {"S0": "node1 (agent S0)", "S1": "node2 (agent S1)"})
    assert "- agent node1 (agent S0): command not found" in text
    assert "    sh: 1: /opt/x/toil-mesos: not found" in text
    assert "- agent node2 (agent S1): its executor's stderr could not be read in time" in text
    assert "--restart" in text


def test_the_agents_address_comes_from_the_offers_url():
    recorded = {"url": {"scheme": "http", "path": "/slave(1)",
                        "address": {"hostname": "localhost", "ip": "127.0.0.1", "port": 5051}}}
    assert offer_address(recorded) == "127.0.0.1:5051"
    assert offer_address({"url": {"address": {"hostname": "n1", "port": 5051}}}) == "n1:5051"
    assert offer_address({"url": {"address": {"ip": "10.0.0.1"}}}) is None


# ---- in the batch system ---------------------------------------------------------------------

def executor_failed(task: dict[str, Any]) -> dict[str, Any]:
    """The update an agent sends for a task whose executor ended (as recorded)."""
    return status(task, "TASK_FAILED", reason="REASON_EXECUTOR_TERMINATED",
                  source="SOURCE_AGENT", message="Executor terminated",
                  executor_id=task["executor"]["executor_id"])


@pytest.fixture
def system() -> Iterator[MesosBatchSystem]:
    with running() as batch:
        yield batch


def offer_again(system: MesosBatchSystem, driver: RecordingDriver, agent: str, n: int) -> None:
    """An offer from the agent once its failure has been read (the read blocks new tasks)."""
    system._diagnostics.wait([agent], timeout=10)
    driver.scheduler.resourceOffers(driver, [offer(agent, offer_id=f"{agent}-{n}")])


def test_a_job_whose_executor_never_started_goes_back_to_the_queue(system):
    driver = driver_of(system)
    job_id = system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, [offer("a1")])
    [first] = driver.launched()
    driver.scheduler.statusUpdate(driver, executor_failed(first))
    assert system.getUpdatedBatchJob(maxWait=0) is None  # Toil is not charged a retry
    assert system.getIssuedBatchJobIDs() == [job_id]
    driver.scheduler.resourceOffers(driver, [offer("a2", offer_id="o2")])
    second = driver.launched()[-1]
    assert second["agent_id"] == {"value": "a2"}
    assert second["task_id"]["value"] != first["task_id"]["value"]  # a new id per attempt
    driver.scheduler.statusUpdate(driver, status(second, "TASK_RUNNING"))
    driver.scheduler.statusUpdate(driver, executor_failed(first))  # a late duplicate: ignored
    assert list(system.getRunningBatchJobIDs()) == [job_id]


def test_an_agent_on_probation_gets_one_task_and_then_is_set_aside(system, caplog):
    driver = driver_of(system)
    for name in "abcd":
        system.issueBatchJob(f"echo {name}", job(name))
    driver.scheduler.resourceOffers(driver, [offer("a1")])
    assert len(driver.launched()) == 2  # a fresh agent: no limit
    driver.scheduler.resourceOffers(driver, [offer("a2", offer_id="o2")])
    caplog.set_level(logging.INFO)
    driver.scheduler.statusUpdate(driver, executor_failed(driver.launched()[0]))
    offer_again(system, driver, "a1", 1)
    assert len(driver.launched()) == 4  # one task is still in flight there: nothing more
    driver.scheduler.statusUpdate(driver, executor_failed(driver.launched()[1]))
    assert system._health.is_set_aside("a1")
    offer_again(system, driver, "a1", 2)
    assert len(driver.launched()) == 4 and driver.calls[-1][0] == "decline"
    assert "is set aside: this workflow's executor failed to start there 2 times" in caplog.text
    assert system.getUpdatedBatchJob(maxWait=0) is None


def test_every_agent_set_aside_stops_the_workflow_with_each_reason(system):
    driver = driver_of(system)
    # Every agent is known from its offers (declined: nothing to run yet) before any fails.
    driver.scheduler.resourceOffers(driver, [offer(a, offer_id=f"{a}-idle") for a in
                                             ("a1", "a2", "a3")])
    system.issueBatchJob("true", job())
    for agent in ("a1", "a2", "a3"):
        for attempt in range(2):
            offer_again(system, driver, agent, attempt)
            task = driver.launched()[-1]
            assert task["agent_id"] == {"value": agent}
            driver.scheduler.statusUpdate(driver, executor_failed(task))
            if agent != "a3" or attempt == 0:
                assert system.getUpdatedBatchJob(maxWait=0) is None  # never reaches Toil
    assert len(driver.launched()) == 6
    with pytest.raises(MesosError, match="no agent of this cluster can start") as caught:
        system.getUpdatedBatchJob(maxWait=1)
    message = str(caught.value)
    assert all(f"host-{agent}" in message for agent in ("a1", "a2", "a3"))
    assert "no offer gave the agent's address" in message  # these offers carry no url
    with pytest.raises(MesosError):
        system.issueBatchJob("true", job())


def test_a_crash_under_running_jobs_loses_them_but_sets_nothing_aside(system):
    driver = driver_of(system)
    for name in "abc":
        system.issueBatchJob(f"echo {name}", job(name))
    driver.scheduler.resourceOffers(driver, [offer("a1")])
    running, waiting = driver.launched()
    driver.scheduler.statusUpdate(driver, status(running, "TASK_RUNNING"))
    driver.scheduler.statusUpdate(driver, executor_failed(waiting))
    driver.scheduler.statusUpdate(driver, executor_failed(running))
    update = system.getUpdatedBatchJob(maxWait=1)
    assert update.exitReason is BatchJobExitReason.LOST
    assert system.getUpdatedBatchJob(maxWait=0) is None  # the waiting one went back
    assert not system._health.is_set_aside("a1")
    assert system._health.allowance("a1", in_flight=0) is None
    assert system._diagnostics.wait(["a1"], timeout=1) == {}  # a crash is not a failed start


def test_a_lost_agent_says_agent_lost(system, caplog):
    driver = driver_of(system)
    system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, [offer("a1")])
    caplog.set_level(logging.ERROR)
    driver.scheduler.agentLost(driver, {"value": "a1"})
    assert system.getUpdatedBatchJob(maxWait=1).exitReason is BatchJobExitReason.LOST
    assert "agent lost: host-a1 (agent a1) was lost" in caplog.text
