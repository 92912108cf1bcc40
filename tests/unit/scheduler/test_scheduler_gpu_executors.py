"""Each GPU task gets an executor of its own; the others share one per agent.

Mesos' GPU isolator gives the devices to the executor's container, so GPU tasks that shared an
executor would each see all of its GPUs. A recording driver stands in for the master: GPU tasks
must carry distinct executor ids (the shared id plus their task id) marked single-task, with the
shared command and bundle URI; tasks without GPUs must carry the one shared ExecutorInfo. A
GPU task's executor that exits after its task must leave the agent's bookkeeping alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from scheduler_fakes import GIB, RecordingDriver, driver_of, gpu, job, offer, running

from toil_mesos.executor._lifetime import SINGLE_TASK_ENV
from toil_mesos.scheduler._tasks import is_single_task_executor, single_task_executor
from toil_mesos.scheduler.batch_system import MesosBatchSystem


@pytest.fixture
def system() -> Iterator[MesosBatchSystem]:
    with running(max_cores=16, max_memory=64 * GIB) as batch:
        yield batch


def environment_of(executor: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["value"] for v in executor["command"]["environment"]["variables"]}


def launched(system: MesosBatchSystem) -> tuple[RecordingDriver, list[dict[str, Any]],
                                                list[dict[str, Any]]]:
    driver = driver_of(system)
    for gpus in (1, 2, 0, 0):
        system.issueBatchJob("true", job(accelerators=[gpu(gpus)] if gpus else []))
    driver.scheduler.resourceOffers(driver, [offer("a", cpus=8, mem=16384, disk=16384, gpus=4)])
    on_gpus = [t for t in driver.launched()
               if any(r["name"] == "gpus" for r in t["resources"])]
    plain = [t for t in driver.launched() if t not in on_gpus]
    assert len(on_gpus) == 2 and len(plain) == 2
    return driver, on_gpus, plain


def test_each_gpu_task_gets_its_own_executor_and_the_others_share_one(system):
    _, on_gpus, plain = launched(system)
    shared = plain[0]["executor"]
    assert plain[1]["executor"] == shared
    assert SINGLE_TASK_ENV not in environment_of(shared)
    assert not is_single_task_executor(shared["executor_id"]["value"])
    ids = [t["executor"]["executor_id"]["value"] for t in on_gpus]
    assert ids == [f"{shared['executor_id']['value']}.{t['task_id']['value']}" for t in on_gpus]
    assert len(set(ids)) == 2 and all(is_single_task_executor(i) for i in ids)
    for task in on_gpus:
        own = task["executor"]
        assert environment_of(own) == {**environment_of(shared), SINGLE_TASK_ENV: "1"}
        assert own["command"]["value"] == shared["command"]["value"]
        assert own["command"].get("uris") == shared["command"].get("uris")
        assert {k: v for k, v in own.items() if k not in ("executor_id", "command")} == \
            {k: v for k, v in shared.items() if k not in ("executor_id", "command")}


def test_the_shared_executor_info_is_not_changed_by_a_gpu_tasks_own() -> None:
    shared = {"executor_id": {"value": "toil-r-abc"}, "type": "CUSTOM",
              "command": {"value": "x", "environment": {"variables": [
                  {"name": "PYTHONUNBUFFERED", "value": "1"}]}}}
    own = single_task_executor(shared, "toil-r-3")
    assert own["executor_id"] == {"value": "toil-r-abc.toil-r-3"}
    assert shared["command"]["environment"]["variables"] == [  # type: ignore[index]
        {"name": "PYTHONUNBUFFERED", "value": "1"}]


def test_a_gpu_tasks_executor_ending_after_its_task_leaves_the_agent_alone(system):
    driver, on_gpus, plain = launched(system)
    callbacks = driver.scheduler
    table = system._table
    own_id = on_gpus[0]["executor"]["executor_id"]
    callbacks.executorLost(driver, own_id, {"value": "a"}, 0)
    assert "a" in table.executor_agents  # the shared executor there is still warm
    assert system._diagnostics._wait_statuses == {}  # no exit recorded against the agent
    # The shared executor's end is still noticed.
    callbacks.executorLost(driver, plain[0]["executor"]["executor_id"], {"value": "a"}, 0)
    assert "a" not in table.executor_agents
    assert system._diagnostics._wait_statuses == {"a": 0}


def test_a_gpu_tasks_executor_failing_is_still_recorded_for_the_diagnosis(system):
    driver, on_gpus, _ = launched(system)
    driver.scheduler.executorLost(driver, on_gpus[0]["executor"]["executor_id"],
                                  {"value": "a"}, 256)
    assert system._diagnostics._wait_statuses == {"a": 256}
