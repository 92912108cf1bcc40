"""GPUs through the batch system: accelerators become ``gpus``, GPU agents kept for GPU jobs.

A recording driver stands in for the master. Jobs with GPU accelerators must launch only on
offers that hold ``gpus`` and ask for them in their task resources; jobs without must keep off
GPU agents while another offer has room; a GPU job no agent can hold fails at once, naming the
GPUs; other accelerator kinds stop the workflow in ``issueBatchJob`` with Toil's
``InsufficientSystemResources``, as Toil's own batch systems refuse them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from scheduler_fakes import GIB, driver_of, gpu, job, offer, running
from toil.batchSystems.abstractBatchSystem import BatchJobExitReason, InsufficientSystemResources

from toil_mesos.scheduler._accelerators import gpus_of, refusal, unchecked_models
from toil_mesos.scheduler.batch_system import MesosBatchSystem


@pytest.fixture
def system() -> Iterator[MesosBatchSystem]:
    with running(max_cores=16, max_memory=64 * GIB) as batch:
        yield batch


def gpus_in(task: dict[str, Any]) -> list[float]:
    return [r["scalar"]["value"] for r in task["resources"] if r["name"] == "gpus"]


def test_the_framework_declares_gpu_resources(system):
    assert {"type": "GPU_RESOURCES"} in driver_of(system).framework["capabilities"]


def test_a_gpu_job_asks_for_gpus_and_lands_only_on_the_gpu_agent(system):
    driver = driver_of(system)
    system.issueBatchJob("true", job(accelerators=[gpu(2)]))
    system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, [offer("plain"), offer("gpu", gpus=2)])
    placed = {"gpu-job" if gpus_in(task) else "plain-job": offer_id
              for offer_id, task in driver.launches()}
    assert placed == {"gpu-job": "o-gpu", "plain-job": "o-plain"}
    gpu_task = next(t for _, t in driver.launches() if gpus_in(t))
    assert gpus_in(gpu_task) == [2.0]


def test_jobs_without_gpus_keep_off_gpu_agents_while_others_have_room(system):
    driver = driver_of(system)
    for _ in range(3):
        system.issueBatchJob("true", job())
    # The GPU agent comes first in the master's order; one-core jobs still go elsewhere first.
    driver.scheduler.resourceOffers(driver, [offer("gpu", gpus=1), offer("plain")])
    assert [offer_id for offer_id, _ in driver.launches()] == ["o-plain", "o-plain", "o-gpu"]
    assert all(not gpus_in(task) for _, task in driver.launches())


def test_jobs_without_gpus_wait_for_an_agent_without_gpus_known_to_have_room(system):
    """Offers of different agents come in different rounds: a round with only a GPU agent's
    offer must not take a job that an agent without GPUs, busy offering nothing now, has
    room for; once that agent is full, the GPU agent's spare cores are used."""
    driver = driver_of(system)
    system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, [offer("plain")])  # 2 cores, 1 taken now
    system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, [offer("gpu", gpus=1)])
    assert [offer_id for offer_id, _ in driver.launches()] == ["o-plain"]
    assert driver.declined() == ["o-gpu"]
    driver.scheduler.resourceOffers(driver, [offer("plain", cpus=1)])  # its last core
    system.issueBatchJob("true", job())
    driver.scheduler.resourceOffers(driver, [offer("gpu", gpus=1)])
    assert [offer_id for offer_id, _ in driver.launches()] == ["o-plain", "o-plain", "o-gpu"]


def test_a_gpu_job_is_not_placed_on_an_agent_without_enough_gpus(system):
    driver = driver_of(system)
    system.issueBatchJob("true", job(accelerators=[gpu(2)]))
    driver.scheduler.resourceOffers(driver, [offer("gpu-big", gpus=2)])  # learn the agents
    driver.forget()
    system.issueBatchJob("true", job(accelerators=[gpu(2)]))
    driver.scheduler.resourceOffers(driver, [offer("plain"), offer("gpu-small", gpus=1)])
    assert driver.launches() == []
    assert sorted(driver.declined()) == ["o-gpu-small", "o-plain"]


def test_a_gpu_job_no_agent_could_hold_fails_at_once_naming_the_gpus(system):
    driver = driver_of(system)
    driver.scheduler.resourceOffers(driver, [offer("plain"), offer("gpu", gpus=1)])
    job_id = system.issueBatchJob("true", job(accelerators=[gpu(2)]))
    update = system.getUpdatedBatchJob(maxWait=1)
    assert update is not None and update.jobID == job_id
    assert update.exitReason is BatchJobExitReason.ERROR
    assert driver.launches() == []


def test_a_never_fitting_gpu_job_message_says_where_gpus_come_from(system, caplog):
    driver = driver_of(system)
    driver.scheduler.resourceOffers(driver, [offer("plain")])
    with caplog.at_level("ERROR", logger="toil_mesos"):
        system.issueBatchJob("true", job(accelerators=[gpu(1)]))
    assert "needs 1 GPUs" in caplog.text and "'gpus' resource" in caplog.text


@pytest.mark.parametrize(("accelerator", "fragment"), [
    ({"kind": "fpga", "count": 1}, "kind 'fpga'"),
    ({"kind": "turbo-encabulator", "count": 1}, "kind 'turbo-encabulator'"),
    (gpu(1, brand="amd"), "brand 'amd'"),
    (gpu(1, api="opencl"), "API 'opencl'"),
])
def test_accelerators_mesos_cannot_provide_stop_the_workflow_at_issue(system, accelerator,
                                                                       fragment):
    with pytest.raises(InsufficientSystemResources) as raised:
        system.issueBatchJob("true", job(accelerators=[accelerator]))
    assert "cannot be provided" in str(raised.value) and fragment in str(raised.value)
    assert system.getIssuedBatchJobIDs() == []


def test_nvidia_cuda_gpus_are_accepted(system):
    system.check_resource_request(job(accelerators=[gpu(1, brand="nvidia", api="cuda")]))


def test_a_named_model_is_warned_about_once(system, caplog):
    with caplog.at_level("WARNING", logger="toil_mesos"):
        system.issueBatchJob("true", job(accelerators=[gpu(1, model="nvidia-tesla-k80")]))
        system.issueBatchJob("true", job(accelerators=[gpu(1, model="nvidia-tesla-k80")]))
    assert caplog.text.count("nvidia-tesla-k80") == 1


@pytest.mark.parametrize(("accelerators", "expected"), [
    ([], 0),
    ([gpu(1)], 1),
    ([gpu(2), gpu(3, api="cuda")], 5),
    ([{"kind": "gpu"}], 1),
])
def test_gpus_of_sums_the_gpu_counts(accelerators, expected):
    assert gpus_of(accelerators) == expected


@pytest.mark.parametrize(("accelerator", "fragment"), [
    ({"kind": "fpga", "count": 1}, "kind 'fpga'"),
    (gpu(1, brand="AMD"), "brand 'AMD'"),
    (gpu(1, api="opencl"), "API 'opencl'"),
    ({"kind": "gpu", "count": 0}, "count 0"),
    ({"kind": "gpu", "count": 1.5}, "count 1.5"),
])
def test_refusal_names_what_is_at_fault(accelerator, fragment):
    problem = refusal(accelerator)
    assert problem is not None and fragment in problem


def test_brand_and_api_are_case_blind_and_models_are_listed():
    assert refusal(gpu(1, brand="NVIDIA", api="CUDA")) is None
    assert unchecked_models([gpu(1, model="a100"), gpu(1), {"kind": "fpga", "model": "x"}]) \
        == ["a100"]
