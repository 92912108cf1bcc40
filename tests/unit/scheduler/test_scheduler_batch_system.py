"""The batch system's bookkeeping against a recording driver: no Mesos, no processes.

The callbacks are fed by hand, in the shapes the master sends (offers, updates), so every rule
is checked on its own: packing, exact exit statuses, kills that are never reported, exactly-once
reporting, agent loss, jobs that can never fit, a fetch failure that stops the workflow.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from scheduler_fakes import (
    GIB,
    RecordingDriver,
    batch_system,
    config,
    driver_of,
    job,
    offer,
    running,
    status,
)
from toil.batchSystems.abstractBatchSystem import BatchJobExitReason

from toil_mesos.errors import BundleError
from toil_mesos.scheduler.batch_system import MesosBatchSystem, exit_of
from toil_mesos.task_spec import TaskSpec


def exit_data(exit_status: int | None) -> str:
    document = {"exit_status": exit_status, "failure": None}
    return base64.b64encode(json.dumps(document).encode()).decode()


@pytest.fixture
def system() -> Iterator[MesosBatchSystem]:
    with running() as batch:
        yield batch


def test_framework_keeps_toils_names_and_subscribes_at_once(system):
    driver = driver_of(system)
    assert driver.master == "127.0.0.1:5050" and driver.names()[0] == "start"
    assert driver.framework["name"] == "toil"
    assert {"type": "MULTI_ROLE"} in driver.framework["capabilities"]
    assert MesosBatchSystem.supportsAutoDeployment() is False
    assert MesosBatchSystem.supportsWorkerCleanup() is True


def test_a_job_runs_and_is_reported_exactly_once(system):
    driver = driver_of(system)
    job_id = system.issueBatchJob("echo hi", job())
    assert system.getIssuedBatchJobIDs() == [job_id]
    driver.scheduler.resourceOffers(driver, [offer()])
    [task] = driver.launched()
    assert task["agent_id"] == {"value": "a1"} and "executor" in task
    driver.scheduler.statusUpdate(driver, status(task, "TASK_RUNNING"))
    assert list(system.getRunningBatchJobIDs()) == [job_id]
    driver.scheduler.statusUpdate(driver, status(task, "TASK_FINISHED", data=exit_data(0)))
    driver.scheduler.statusUpdate(driver, status(task, "TASK_FINISHED", data=exit_data(0)))
    update = system.getUpdatedBatchJob(maxWait=1)
    assert (update.jobID, update.exitStatus, update.exitReason) == (
        job_id, 0, BatchJobExitReason.FINISHED)
    assert update.wallTime is not None and update.backing_id == task["task_id"]["value"]
    assert system.getUpdatedBatchJob(maxWait=0) is None
    assert system.getIssuedBatchJobIDs() == [] and system.getRunningBatchJobIDs() == {}


@pytest.mark.parametrize(("value", "expected"), [
    ("quay.io/me/toil-mesos:1.0", "quay.io/me/toil-mesos:1.0"), ("", None), (None, None)])
def test_every_task_names_the_appliance_the_leader_expects(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("TOIL_MESOS_APPLIANCE", raising=False)
    else:
        monkeypatch.setenv("TOIL_MESOS_APPLIANCE", value)
    with running() as batch:
        # Read once, when the batch system starts.
        monkeypatch.setenv("TOIL_MESOS_APPLIANCE", "changed-later:1")
        driver = driver_of(batch)
        batch.issueBatchJob("echo a", job("a"))
        batch.issueBatchJob("echo b", job("b"))
        driver.scheduler.resourceOffers(driver, [offer()])
        specs = [TaskSpec.from_json(base64.b64decode(t["data"])) for t in driver.launched()]
        assert [s.appliance for s in specs] == [expected, expected]


def test_the_workers_exact_exit_status_is_reported(system):
    driver = driver_of(system)
    job_id = system.issueBatchJob("exit 23", job())
    driver.scheduler.resourceOffers(driver, [offer()])
    [task] = driver.launched()
    driver.scheduler.statusUpdate(driver, status(task, "TASK_FAILED", data=exit_data(23),
                                                 message="the worker exited with status 23"))
    update = system.getUpdatedBatchJob(maxWait=1)
    assert (update.jobID, update.exitStatus, update.exitReason) == (
        job_id, 23, BatchJobExitReason.FAILED)


def test_two_one_core_jobs_share_a_two_core_agent_and_the_rest_waits(system):
    driver = driver_of(system)
    for name in "abc":
        system.issueBatchJob(f"echo {name}", job(name))
    driver.scheduler.resourceOffers(driver, [offer()])
    assert len(driver.launched()) == 2
    assert "suppress" not in driver.names()  # one job still waits for an offer


def test_idle_offers_are_declined_and_offers_suppressed_then_revived(system):
    driver = driver_of(system)
    driver.scheduler.resourceOffers(driver, [offer()])
    assert ("decline", {"refuse_seconds": 30.0}) in driver.calls
    assert driver.names()[-1] == "suppress"
    system.issueBatchJob("true", job())
    assert driver.names()[-1] == "revive"


def test_killed_jobs_are_never_reported_and_kill_waits_for_the_end(system):
    driver = driver_of(system)
    job_id = system.issueBatchJob("sleep 1000", job())
    driver.scheduler.resourceOffers(driver, [offer()])
    [task] = driver.launched()
    driver.scheduler.statusUpdate(driver, status(task, "TASK_RUNNING"))
    killer = threading.Thread(target=system.killBatchJobs, args=([job_id],))
    killer.start()
    assert driver.killed.wait(10)
    assert killer.is_alive()  # waiting for the task to end
    driver.scheduler.statusUpdate(driver, status(task, "TASK_KILLED"))
    killer.join(10)
    assert not killer.is_alive()
    assert system.getRunningBatchJobIDs() == {} and system.getIssuedBatchJobIDs() == []
    assert system.getUpdatedBatchJob(maxWait=0) is None
    system.killBatchJobs([10_000])  # unknown ids are ignored


def test_a_queued_job_is_killed_without_asking_mesos(system):
    driver = driver_of(system)
    job_id = system.issueBatchJob("true", job())
    system.killBatchJobs([job_id])
    assert "kill" not in driver.names()
    driver.scheduler.resourceOffers(driver, [offer()])
    assert driver.launched() == []


def test_a_lost_agent_fails_its_jobs_as_lost_once(system):
    driver = driver_of(system)
    job_id = system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, [offer()])
    [task] = driver.launched()
    driver.scheduler.agentLost(driver, {"value": "a1"})
    driver.scheduler.statusUpdate(driver, status(task, "TASK_LOST"))
    update = system.getUpdatedBatchJob(maxWait=1)
    assert (update.jobID, update.exitReason) == (job_id, BatchJobExitReason.LOST)
    assert system.getUpdatedBatchJob(maxWait=0) is None


def test_a_job_no_agent_can_hold_fails_instead_of_waiting_for_ever(system):
    driver = driver_of(system)
    driver.scheduler.resourceOffers(driver, [offer(cpus=2, mem=4096)])
    job_id = system.issueBatchJob("true", job(memory=6 * GIB))  # within --maxMemory
    update = system.getUpdatedBatchJob(maxWait=1)
    assert (update.jobID, update.exitReason) == (job_id, BatchJobExitReason.ERROR)


def test_non_preemptible_jobs_avoid_preemptible_agents(system):
    driver = driver_of(system)
    system.issueBatchJob("true", job(preemptible=False))
    spot = offer()
    spot["attributes"] = [{"name": "preemptible", "type": "TEXT", "text": {"value": "true"}}]
    driver.scheduler.resourceOffers(driver, [spot])
    assert driver.launched() == []


def test_a_fetch_failure_stops_the_workflow_naming_the_fix(system):
    driver = driver_of(system)
    system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, [offer()])
    [task] = driver.launched()
    driver.scheduler.statusUpdate(driver, status(
        task, "TASK_FAILED", reason="REASON_CONTAINER_LAUNCH_FAILED",
        message="Failed to launch container: Failed to fetch all URIs for container 'c'"))
    with pytest.raises(BundleError, match="--mesosBundleAddress"):
        system.getUpdatedBatchJob(maxWait=1)


@pytest.mark.parametrize(
    ("status_fields", "expected"),
    [
        ({"state": "TASK_FINISHED"}, (0, BatchJobExitReason.FINISHED)),
        ({"state": "TASK_FAILED", "data": exit_data(3)}, (3, BatchJobExitReason.FAILED)),
        ({"state": "TASK_FAILED", "data": exit_data(-9)}, (137, BatchJobExitReason.FAILED)),
        ({"state": "TASK_FAILED"}, (255, BatchJobExitReason.FAILED)),
        ({"state": "TASK_FAILED", "reason": "REASON_EXECUTOR_TERMINATED"},
         (255, BatchJobExitReason.LOST)),
        ({"state": "TASK_LOST"}, (255, BatchJobExitReason.LOST)),
        ({"state": "TASK_GONE"}, (255, BatchJobExitReason.LOST)),
        ({"state": "TASK_KILLED"}, (255, BatchJobExitReason.KILLED)),
        ({"state": "TASK_ERROR"}, (255, BatchJobExitReason.ERROR)),
    ],
)
def test_task_states_map_to_toils_exit_reasons(status_fields, expected):
    assert exit_of(status_fields) == expected


def test_options_keep_toils_names_and_read_the_environment(monkeypatch):
    from argparse import ArgumentParser

    from toil_mesos.scheduler.options import add_options

    monkeypatch.setenv("TOIL_MESOS_BUNDLE_ADDRESS", "10.1.2.3:7000")
    parser = ArgumentParser()
    add_options(parser)
    args = parser.parse_args(["--mesosMaster", "m:5051", "--mesosRole", "r"])
    assert (args.mesos_endpoint, args.mesos_role, args.mesos_name) == ("m:5051", "r", "toil")
    assert args.mesos_bundle_address == "10.1.2.3:7000"
    assert "TOIL_MESOS_ENDPOINT" in parser.format_help()


class PreviousFrameworkDriver(RecordingDriver):
    """Plays a master that still has the previous leader's task t-old running."""

    log: ClassVar[list[str]] = []

    def start(self) -> None:
        super().start()
        if "id" in self.framework:
            self.log.append(f"failover {self.framework['id']['value']}")
            self.scheduler.registered(self, self.framework["id"], {})
        else:
            self.log.append("new framework")

    def reconcileTasks(self, tasks: Any) -> None:
        self.scheduler.statusUpdate(self, {"task_id": {"value": "t-old"}, "state": "TASK_RUNNING",
                                           "reason": "REASON_RECONCILIATION",
                                           "agent_id": {"value": "a1"}})

    def killTask(self, task_id: Any, agent_id: Any = None) -> None:
        self.log.append(f"kill {task_id['value']}")
        self.scheduler.statusUpdate(self, {"task_id": task_id, "state": "TASK_KILLED"})

    def stop(self, failover: bool = False) -> None:
        self.log.append(f"stop failover={failover}")


def test_restart_ends_the_previous_frameworks_tasks_before_anything_else(monkeypatch):
    from toil_mesos.scheduler import batch_system as module

    monkeypatch.setattr(module.FrameworkRecord, "read", lambda self: "fw-old")
    written: list[str] = []
    monkeypatch.setattr(module.FrameworkRecord, "write", lambda self, fid: written.append(fid))
    PreviousFrameworkDriver.log = []
    cfg = config()
    cfg.restart = True
    with running(cfg, driver=PreviousFrameworkDriver) as batch:
        assert PreviousFrameworkDriver.log == [
            "failover fw-old", "kill t-old", "stop failover=False", "new framework"]
        batch._driver.scheduler.registered(batch._driver, {"value": "fw-new"}, {})
        assert written == ["fw-new"]


def test_a_fresh_start_does_not_touch_a_previous_framework(monkeypatch):
    from toil_mesos.scheduler import batch_system as module

    monkeypatch.setattr(module.FrameworkRecord, "read", lambda self: "fw-old")
    PreviousFrameworkDriver.log = []
    batch = batch_system(driver=PreviousFrameworkDriver)
    batch.shutdown()
    assert PreviousFrameworkDriver.log[0] == "new framework"


def test_get_nodes_uses_what_executors_report(system):
    from toil_mesos.node_report import NodeReport

    driver = driver_of(system)
    system.issueBatchJob("sleep 100", job(cores=1, memory=GIB))
    driver.scheduler.resourceOffers(driver, [offer()])
    [node] = system.getNodes().values()
    assert (node.coresTotal, node.requestedCores, node.workers) == (2.0, 1.0, 1)
    report = NodeReport(hostname="host-a1", cores=8, memory=32 * GIB, load=2.0, workers=3)
    driver.scheduler.frameworkMessage(driver, {"value": "e"}, {"value": "a1"}, report.encode())
    driver.scheduler.frameworkMessage(driver, {"value": "e"}, {"value": "a1"}, "not-a-report")
    node = system.getNodes()["host-a1"]
    assert (node.coresTotal, node.memoryTotal, node.workers, node.coresUsed) == (
        8, 32 * GIB, 3, 0.25)
    assert system.nodeInUse("host-a1") and not system.nodeInUse("host-other")
    assert system.getNodes(preemptible=True) == {}


def test_issue_to_running_latency_is_summarised_at_shutdown(caplog):
    batch = batch_system()
    driver = driver_of(batch)
    batch.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, [offer()])
    [task] = driver.launched()
    driver.scheduler.statusUpdate(driver, status(task, "TASK_RUNNING"))
    with caplog.at_level("INFO", logger="toil_mesos"):
        batch.shutdown()
    assert "1 jobs started on Mesos; issue-to-running latency: median" in caplog.text


# ---- roles and reserved resources --------------------------------------------------------------


def reserved_offer(role: str, allocation_role: str, cpus: float = 2) -> dict[str, Any]:
    """An agent whose cpus, mem and disk are all statically reserved for *role*."""
    reserved = offer("a9", cpus=cpus, offer_id="o-reserved")
    reserved["allocation_info"] = {"role": allocation_role}
    for resource in reserved["resources"]:
        resource["reservations"] = [{"type": "STATIC", "role": role}]
        resource["allocation_info"] = {"role": allocation_role}
    return reserved


def test_with_a_role_jobs_run_on_resources_reserved_for_it(monkeypatch):
    cfg = config()
    cfg.mesos_role = "toil"
    with running(cfg) as batch:
        driver = driver_of(batch)
        assert driver.framework["roles"] == ["toil"]
        assert {"type": "RESERVATION_REFINEMENT"} in driver.framework["capabilities"]
        batch.issueBatchJob("true", job())
        driver.scheduler.resourceOffers(driver, [reserved_offer("toil", "toil")])
        [task] = driver.launched()
        assert {r["name"]: r["reservations"] for r in task["resources"]} == {
            n: [{"type": "STATIC", "role": "toil"}] for n in ("cpus", "mem", "disk")}
        assert all(r["allocation_info"] == {"role": "toil"} for r in task["resources"])


def test_without_the_role_reserved_offers_are_declined_and_nothing_launches(system):
    driver = driver_of(system)
    job_id = system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, [reserved_offer("toil", "*")])
    assert driver.launched() == [] and "decline" in driver.names()
    # The job waits (it is not failed as "never fits": the agent never offered it anything).
    assert system.getIssuedBatchJobIDs() == [job_id]
    assert system.getUpdatedBatchJob(0) is None


def test_the_framework_checkpoints_unless_told_not_to(monkeypatch):
    from argparse import ArgumentParser

    from toil_mesos.errors import MesosError
    from toil_mesos.scheduler.options import MesosOptions, add_options

    def parsed(*argv: str) -> Any:
        parser = ArgumentParser()
        add_options(parser)
        return parser.parse_args(list(argv))

    assert parsed().mesos_checkpoint is True
    assert parsed("--no-mesosCheckpoint").mesos_checkpoint is False
    monkeypatch.setenv("TOIL_MESOS_CHECKPOINT", "0")
    assert parsed().mesos_checkpoint is False
    assert parsed("--mesosCheckpoint").mesos_checkpoint is True
    monkeypatch.setenv("TOIL_MESOS_CHECKPOINT", "sometimes")
    with pytest.raises(MesosError, match="TOIL_MESOS_CHECKPOINT='sometimes'"):
        parsed()
    monkeypatch.delenv("TOIL_MESOS_CHECKPOINT")

    cfg = config()
    assert MesosOptions.from_config(cfg).checkpoint is True
    cfg.mesos_checkpoint = False
    assert MesosOptions.from_config(cfg).checkpoint is False
    with running(cfg) as batch:
        assert driver_of(batch).framework["checkpoint"] is False


def test_checkpointing_is_on_by_default(system):
    assert driver_of(system).framework["checkpoint"] is True


def test_an_agent_recovered_after_a_restart_has_its_tasks_reconciled():
    from toil_mesos.node_report import NodeReport

    with running() as batch:
        driver = driver_of(batch)
        for _ in range(2):
            batch.issueBatchJob("sleep 100", job(cores=1, memory=GIB))
        driver.scheduler.resourceOffers(driver, [offer("a1", cpus=1, offer_id="o1"),
                                                 offer("a2", cpus=1, offer_id="o2")])
        on_a1 = [t["task_id"]["value"] for t in driver.launched()
                 if t["agent_id"]["value"] == "a1"]
        report = NodeReport(hostname="host-a1", cores=2, memory=GIB, load=0.0, workers=1)
        driver.scheduler.frameworkMessage(driver, {"value": "e"}, {"value": "a1"},
                                          report.encode())
        assert "reconcile" not in driver.names()  # an ordinary report
        recovered = NodeReport.decode(dataclasses.replace(report, resubscribed=True).encode())
        assert recovered is not None and recovered.resubscribed
        driver.scheduler.frameworkMessage(driver, {"value": "e"}, {"value": "a1"},
                                          recovered.encode())
        [asked] = driver.reconciles()
        assert asked == [{"task_id": {"value": t}, "agent_id": {"value": "a1"}} for t in on_a1]
        assert len(on_a1) == 1 and len(driver.launched()) == 2
