"""Offer packing and task building: pure functions, checked against recorded offers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from toil_mesos.scheduler._matching import (
    JobRequest,
    could_ever_fit,
    offer_capacity,
)
from toil_mesos.scheduler._placement import place_jobs
from toil_mesos.scheduler._tasks import executor_id_for, executor_info, task_info
from toil_mesos.task_spec import TaskSpec

TRANSCRIPTS = Path(__file__).resolve().parents[3].parent / "shared" / "mesos-transcripts"
GIB = 1024**3
MIB = 1024**2


def recorded_offer() -> dict:  # type: ignore[type-arg]
    events = sorted((TRANSCRIPTS / "scheduler" / "fw1_main" / "events").glob("*_OFFERS*.json"))
    if not events:
        pytest.skip(f"no recorded offers under {TRANSCRIPTS}")
    return json.loads(events[0].read_text())["offers"]["offers"][0]  # type: ignore[no-any-return]


def offer(cpus: float, mem: float, disk: float, *, preemptible: bool | None = None) -> dict:  # type: ignore[type-arg]
    attributes = []
    if preemptible is not None:
        attributes.append({"name": "preemptible", "type": "TEXT",
                           "text": {"value": str(preemptible).lower()}})
    return {
        "id": {"value": "o"},
        "agent_id": {"value": "a"},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
            {"name": "disk", "type": "SCALAR", "scalar": {"value": disk}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 9}]}},
        ],
        "attributes": attributes,
    }


def job(job_id: int, cores: float = 1, memory: int = 2 * GIB, disk: int = 2 * GIB,
        preemptible: bool = False) -> JobRequest:
    return JobRequest(job_id=job_id, cores=cores, memory=memory, disk=disk,
                      preemptible=preemptible)


def test_capacity_of_a_recorded_offer():
    capacity = offer_capacity(recorded_offer())
    assert capacity.millicores > 0 and capacity.mem_mib > 0 and capacity.disk_mib > 0
    assert not capacity.preemptible


def test_two_one_core_jobs_fill_a_two_core_agent():
    placement = place_jobs([offer(2, 4096, 8192)], [job(1), job(2), job(3)])
    assert [j.job_id for j in placement.launches[0]] == [1, 2]
    assert [j.job_id for j in placement.unplaced] == [3]
    assert placement.unused == []


def test_largest_jobs_are_placed_first_across_offers():
    offers = [offer(1, 1024, 1024), offer(4, 8192, 8192)]
    jobs = [job(1, cores=0.5, memory=100 * MIB, disk=MIB),
            job(2, cores=4, memory=4 * GIB, disk=MIB),
            job(3, cores=1, memory=512 * MIB, disk=MIB)]
    placement = place_jobs(offers, jobs)
    assert [j.job_id for j in placement.launches[1]] == [2]
    assert [j.job_id for j in placement.launches[0]] == [3]
    assert [j.job_id for j in placement.unplaced] == [1]


@pytest.mark.parametrize(
    ("memory", "fits"),
    [(1024 * MIB, True), (1024 * MIB + 1, False)],  # memory is rounded up to whole MiB
)
def test_memory_is_compared_in_whole_mib_rounded_up(memory, fits):
    placement = place_jobs([offer(1, 1024, 10)], [job(1, memory=memory, disk=MIB)])
    assert bool(placement.launches) is fits


def test_cores_are_compared_in_thousandths():
    placement = place_jobs([offer(1.8, 4096, 4096)], [job(i, cores=0.6, memory=MIB, disk=MIB)
                                                    for i in range(4)])
    assert len(placement.launches[0]) == 3


def test_non_preemptible_jobs_never_land_on_preemptible_agents():
    offers = [offer(4, 8192, 8192, preemptible=True)]
    placement = place_jobs(offers, [job(1), job(2, preemptible=True)])
    assert [j.job_id for j in placement.launches[0]] == [2]
    assert [j.job_id for j in placement.unplaced] == [1]


def test_unused_offers_are_listed_for_declining():
    placement = place_jobs([offer(1, 10, 10), offer(1, 10, 10)], [])
    assert placement.unused == [0, 1] and not placement.launches


def test_a_job_no_agent_could_ever_hold_is_recognised():
    agents = [offer_capacity(offer(2, 4096, 8192))]
    assert could_ever_fit(job(1), agents)
    assert not could_ever_fit(job(2, cores=3), agents)
    assert not could_ever_fit(job(3, memory=5 * GIB), agents)


def test_task_info_carries_the_executor_the_bundle_and_json_data():
    sha = "c" * 64
    executor = executor_info(
        executor_id=executor_id_for("wf", sha), framework_id="fw-1",
        command=["/opt/venv/bin/python", "-m", "toil_mesos.executor"],
        bundle_url=f"http://10.0.0.1:8000/bundles/s/{sha}.tar.zst", bundle_sha256=sha,
        environment={"TOIL_MESOS_BUNDLE_CACHE": "/var/cache"},
    )
    spec = TaskSpec(job_id=5, command="_toil_worker x", bundle_sha256=sha, python="3.11")
    recorded = recorded_offer()
    info = task_info(job=job(5, cores=1, memory=GIB + 1, disk=GIB), name="job5",
                     task_id="t-5", offer=recorded, executor=executor, spec=spec)
    assert "command" not in info  # Mesos refuses a task with both a command and an executor
    assert info["agent_id"] == recorded["agent_id"]
    resources = {r["name"]: r["scalar"]["value"] for r in info["resources"]}
    assert resources == {"cpus": 1.0, "mem": 1025.0, "disk": 1024.0}
    assert all(r["allocation_info"] == {"role": "*"} for r in info["resources"])
    uri = info["executor"]["command"]["uris"][0]
    assert (uri["cache"], uri["extract"], uri["output_file"]) == (True, False, f"{sha}.tar.zst")
    assert info["executor"]["command"]["value"] == "/opt/venv/bin/python -m toil_mesos.executor"
    assert TaskSpec.from_json(base64.b64decode(info["data"])) == spec
    assert "resources" not in info["executor"]  # the executor takes no resources of its own


@pytest.mark.parametrize("sha", [None, "ab" * 32])
def test_task_builder_builds_what_task_info_builds(sha: str | None) -> None:
    from toil_mesos.scheduler._tasks import TaskBuilder, installed_toil

    builder = TaskBuilder(run_id="r1", executor_command=["toil-mesos", "executor"],
                          cleanup={"work_dir": None, "workflow_id": "w"}, appliance="img:1")
    executor = builder.executor(framework_id="fw", bundle_url="http://h/b", bundle_sha256=sha)
    shared_env = {"B": "2", "A": "1 é"}
    jobs = [(job(7, cores=0.5, memory=3 * MIB + 1, disk=MIB), "n7", 'run "x" \\ y', shared_env),
            (job(8), "n8", "true", shared_env),
            (job(9, cores=2), "n9", "false", {"Z": "z"})]
    the_offer = recorded_offer()
    for resource in the_offer["resources"]:  # room for all three jobs at once
        if resource["type"] == "SCALAR":
            resource["scalar"]["value"] *= 8
    built = builder.tasks(offer=the_offer, jobs=jobs, executor=executor, bundle_sha256=sha)
    for (request, name, command, environment), task in zip(jobs, built, strict=True):
        spec = TaskSpec(job_id=request.job_id, command=command, environment=environment,
                        bundle_sha256=sha, python="{}.{}".format(*__import__("sys").version_info),
                        toil=installed_toil(), cleanup={"work_dir": None, "workflow_id": "w"},
                        appliance="img:1")
        expected = task_info(job=request, name=name, task_id=f"toil-r1-{request.job_id}",
                             offer=the_offer, executor=executor, spec=spec)
        assert json.loads(json.dumps(task)) == expected
        assert base64.b64decode(task["data"]) == spec.to_json()
