"""The shape queue places exactly as the straightforward packer did, on many small cases.

``reference_place`` below is the packer the batch system used before the shape queue: every
queued job, sorted largest first (oldest first among equals), into the first offer with room.
Seeded random cases (sizes from a small menu so shapes repeat, mixed preemptible agents and
jobs) must give the same jobs in the same offers in the same order, the same leftovers, and the
same never-fits verdicts.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from toil_mesos.scheduler._matching import Capacity, JobRequest, could_ever_fit, offer_capacity
from toil_mesos.scheduler._placement import ShapeQueue, place_jobs

MIB = 1024**2


def reference_place(
    offers: Sequence[dict[str, Any]], queued: Iterable[JobRequest]
) -> tuple[dict[int, list[int]], list[int]]:
    capacities = [offer_capacity(o) for o in offers]
    launches: dict[int, list[int]] = {}
    unplaced: list[int] = []
    for job in sorted(queued, key=lambda j: (j.size, -j.job_id), reverse=True):
        index = next((i for i, c in enumerate(capacities) if c.fits(job)), None)
        if index is None:
            unplaced.append(job.job_id)
            continue
        capacities[index].take(job)
        launches.setdefault(index, []).append(job.job_id)
    return launches, unplaced


def offer(cpus: float, mem: float, disk: float, preemptible: bool) -> dict[str, Any]:
    return {
        "id": {"value": "o"},
        "agent_id": {"value": "a"},
        "resources": [{"name": n, "type": "SCALAR", "scalar": {"value": v}}
                      for n, v in (("cpus", cpus), ("mem", mem), ("disk", disk))],
        "attributes": [{"name": "preemptible", "type": "TEXT",
                        "text": {"value": str(preemptible).lower()}}],
    }


def random_case(rng: random.Random) -> tuple[list[dict[str, Any]], list[JobRequest]]:
    offers = [
        offer(rng.choice([0, 0.5, 1, 2, 3, 4, 16]), rng.choice([0, 256, 1024, 4096]),
              rng.choice([0, 512, 4096]), rng.random() < 0.3)
        for _ in range(rng.randint(0, 6))
    ]
    jobs = [
        JobRequest(job_id=i, cores=rng.choice([0.1, 0.5, 1, 2, 5]),
                   memory=rng.choice([1, 100 * MIB, 1024 * MIB, 3000 * MIB]),
                   disk=rng.choice([0, MIB, 600 * MIB]), preemptible=rng.random() < 0.4)
        for i in rng.sample(range(1, 200), rng.randint(0, 25))
    ]
    jobs.sort(key=lambda j: j.job_id)  # ids grow as Toil issues them
    return offers, jobs


@pytest.mark.parametrize("seed", range(40))
def test_shape_queue_places_as_the_reference_does(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        offers, jobs = random_case(rng)
        expected_launches, expected_unplaced = reference_place(offers, jobs)
        placement = place_jobs(offers, jobs)
        launches = {i: [j.job_id for j in js] for i, js in placement.launches.items()}
        assert launches == expected_launches
        assert [j.job_id for j in placement.unplaced] == expected_unplaced
        assert list(placement.unused) == [i for i in range(len(offers))
                                          if i not in expected_launches]


@pytest.mark.parametrize("seed", range(10))
def test_rounds_on_a_kept_queue_match_the_reference(seed: int) -> None:
    """Several rounds with removals in between, as the batch system drives it."""
    rng = random.Random(1000 + seed)
    shapes = ShapeQueue()
    queued: dict[int, JobRequest] = {}
    next_id = 1
    for _ in range(30):
        for _ in range(rng.randint(0, 8)):
            job = JobRequest(job_id=next_id, cores=rng.choice([0.5, 1, 2]),
                             memory=rng.choice([MIB, 1024 * MIB]), disk=0,
                             preemptible=rng.random() < 0.5)
            next_id += 1
            shapes.add(job)
            queued[job.job_id] = job
        for job_id in rng.sample(sorted(queued), min(len(queued), rng.randint(0, 2))):
            assert shapes.remove(job_id) is queued.pop(job_id)  # a kill while queued
        offers, _ = random_case(rng)
        expected, _ = reference_place(offers, queued.values())
        launches = shapes.place([offer_capacity(o) for o in offers])
        assert {i: [j.job_id for j in js] for i, js in launches.items()} == expected
        for job_ids in expected.values():
            for job_id in job_ids:
                del queued[job_id]
                assert job_id not in shapes
        assert len(shapes) == len(queued)
        assert sorted(j.job_id for j in shapes) == sorted(queued)


@pytest.mark.parametrize("seed", range(10))
def test_never_fits_matches_could_ever_fit(seed: int) -> None:
    rng = random.Random(5000 + seed)
    for _ in range(20):
        offers, jobs = random_case(rng)
        agents = [offer_capacity(o) for o in offers]
        shapes = ShapeQueue()
        shapes.set_agents(agents)
        for job in jobs:
            shapes.add(job)
        expected = [j.job_id for j in jobs if agents and not could_ever_fit(j, agents)]
        assert [j.job_id for j in jobs if shapes.never_fits(j)] == expected
        assert sorted(j.job_id for j in shapes.take_never_fitting()) == expected
        assert len(shapes) == len(jobs) - len(expected)


def test_fit_verdicts_are_redone_when_the_agents_change() -> None:
    shapes = ShapeQueue()
    big = JobRequest(job_id=1, cores=8, memory=MIB, disk=0)
    assert not shapes.never_fits(big)  # no agent known yet: nothing is judged
    shapes.set_agents([Capacity(4000, 1024, 1024, False)])
    assert shapes.never_fits(big)
    shapes.set_agents([Capacity(4000, 1024, 1024, False), Capacity(16000, 1024, 1024, False)])
    assert not shapes.never_fits(big)


def test_a_round_stops_at_shapes_that_no_longer_fit() -> None:
    """100,000 queued one-core jobs and one 16-core offer: 16 launched, the rest untouched."""
    shapes = ShapeQueue()
    for i in range(1, 100_001):
        shapes.add(JobRequest(job_id=i, cores=1, memory=MIB, disk=0))
    launches = shapes.place([Capacity(16_000, 65_536, 65_536, False)])
    assert [j.job_id for j in launches[0]] == list(range(1, 17))
    assert len(shapes) == 100_000 - 16


# ---- GPUs --------------------------------------------------------------------------------------


def reference_place_with_gpus(
    offers: Sequence[dict[str, Any]], queued: Iterable[JobRequest],
    elsewhere: Sequence[Capacity] = (),
) -> tuple[dict[int, list[int]], list[int]]:
    """The straightforward packer with GPUs: GPU jobs first (more GPUs first), then as above;
    each job into the first offer with room, trying agents without GPUs before those with,
    and those only if no room *elsewhere* (agents without GPUs, not offering) fits the job."""
    capacities = [offer_capacity(o) for o in offers]
    order = ([i for i, c in enumerate(capacities) if not c.gpus]
             + [i for i, c in enumerate(capacities) if c.gpus])
    gpu_agent = [bool(c.gpus) for c in capacities]  # even once this round took its GPUs
    launches: dict[int, list[int]] = {}
    unplaced: list[int] = []
    for job in sorted(queued, key=lambda j: (j.gpus, j.size, -j.job_id), reverse=True):
        waits = not job.gpus and any(room.fits(job) for room in elsewhere)
        index = next((i for i in order if capacities[i].fits(job)
                      and not (waits and gpu_agent[i])), None)
        if index is None:
            unplaced.append(job.job_id)
            continue
        capacities[index].take(job)
        launches.setdefault(index, []).append(job.job_id)
    return launches, unplaced


def gpu_offer(cpus: float, mem: float, gpus: float, preemptible: bool = False) -> dict[str, Any]:
    made = offer(cpus, mem, 4096, preemptible)
    if gpus:
        made["resources"].append({"name": "gpus", "type": "SCALAR", "scalar": {"value": gpus}})
    return made


def random_gpu_case(rng: random.Random) -> tuple[list[dict[str, Any]], list[JobRequest]]:
    offers = [gpu_offer(rng.choice([0, 1, 2, 4]), rng.choice([0, 1024, 4096]),
                        rng.choice([0, 0, 1, 2, 4]), rng.random() < 0.2)
              for _ in range(rng.randint(0, 6))]
    jobs = [
        JobRequest(job_id=i, cores=rng.choice([0.5, 1, 2]), memory=rng.choice([MIB, 1024 * MIB]),
                   disk=0, preemptible=rng.random() < 0.3, gpus=rng.choice([0, 0, 0, 1, 2]))
        for i in sorted(rng.sample(range(1, 200), rng.randint(0, 25)))
    ]
    return offers, jobs


@pytest.mark.parametrize("seed", range(30))
def test_with_gpus_the_shape_queue_places_as_the_reference_does(seed: int) -> None:
    rng = random.Random(9000 + seed)
    for _ in range(50):
        offers, jobs = random_gpu_case(rng)
        expected_launches, expected_unplaced = reference_place_with_gpus(offers, jobs)
        placement = place_jobs(offers, jobs)
        launches = {i: [j.job_id for j in js] for i, js in placement.launches.items()}
        assert launches == expected_launches
        assert [j.job_id for j in placement.unplaced] == expected_unplaced


@pytest.mark.parametrize("seed", range(20))
def test_with_room_elsewhere_the_shape_queue_places_as_the_reference_does(seed: int) -> None:
    rng = random.Random(8000 + seed)
    for _ in range(50):
        offers, jobs = random_gpu_case(rng)
        elsewhere = [Capacity(rng.choice([0, 500, 1000, 2000]), rng.choice([0, 1024]), 4096,
                              rng.random() < 0.3) for _ in range(rng.randint(0, 2))]
        expected_launches, expected_unplaced = reference_place_with_gpus(offers, jobs, elsewhere)
        shapes = ShapeQueue()
        for job in jobs:
            shapes.add(job)
        launches = shapes.place([offer_capacity(o) for o in offers], elsewhere=elsewhere)
        assert {i: [j.job_id for j in js] for i, js in launches.items()} == expected_launches
        assert [j.job_id for j in shapes] == expected_unplaced


@pytest.mark.parametrize("seed", range(10))
def test_with_gpus_never_fits_matches_could_ever_fit(seed: int) -> None:
    rng = random.Random(7000 + seed)
    for _ in range(20):
        offers, jobs = random_gpu_case(rng)
        agents = [offer_capacity(o) for o in offers]
        shapes = ShapeQueue()
        shapes.set_agents(agents)
        for job in jobs:
            shapes.add(job)
        expected = [j.job_id for j in jobs if agents and not could_ever_fit(j, agents)]
        assert [j.job_id for j in jobs if shapes.never_fits(j)] == expected


def test_gpu_jobs_only_fit_agents_with_enough_gpus() -> None:
    gpu_job = JobRequest(job_id=1, cores=1, memory=MIB, disk=0, gpus=2)
    assert not Capacity(4000, 1024, 1024, False).fits(gpu_job)
    assert not Capacity(4000, 1024, 1024, False, 1).fits(gpu_job)
    assert Capacity(4000, 1024, 1024, False, 2).fits(gpu_job)
    shapes = ShapeQueue()
    shapes.set_agents([Capacity(4000, 1024, 1024, False, 1)])
    assert shapes.never_fits(gpu_job)
    shapes.set_agents([Capacity(4000, 1024, 1024, False, 1), Capacity(1000, 64, 0, False, 4)])
    assert not shapes.never_fits(gpu_job)


def test_plain_jobs_fill_plain_agents_first_and_spill_onto_gpu_agents() -> None:
    shapes = ShapeQueue()
    for i in range(1, 5):
        shapes.add(JobRequest(job_id=i, cores=1, memory=MIB, disk=0))
    gpu_agent, plain_agent = Capacity(2000, 64, 64, False, 1), Capacity(2000, 64, 64, False)
    launches = shapes.place([gpu_agent, plain_agent])
    assert {i: [j.job_id for j in js] for i, js in launches.items()} == {1: [1, 2], 0: [3, 4]}


def test_gpu_jobs_go_first_so_plain_jobs_do_not_take_the_gpu_agents_cores() -> None:
    """A plain job issued before a GPU job would spill onto the GPU agent's last core."""
    shapes = ShapeQueue()
    shapes.add(JobRequest(job_id=1, cores=2, memory=MIB, disk=0))  # bigger, and older
    shapes.add(JobRequest(job_id=2, cores=1, memory=MIB, disk=0, gpus=1))
    launches = shapes.place([Capacity(2000, 64, 64, False, 1)])
    assert [j.job_id for j in launches[0]] == [2]
    assert [j.job_id for j in shapes] == [1]


def test_room_elsewhere_keeps_plain_jobs_off_gpu_offers_only_for_shapes_that_fit_there() -> None:
    shapes = ShapeQueue()
    shapes.add(JobRequest(job_id=1, cores=1, memory=MIB, disk=0))
    shapes.add(JobRequest(job_id=2, cores=4, memory=MIB, disk=0))
    shapes.add(JobRequest(job_id=3, cores=1, memory=MIB, disk=0, gpus=1))
    gpu_agent = Capacity(8000, 64, 64, False, 1)
    launches = shapes.place([gpu_agent], elsewhere=[Capacity(2000, 64, 64, False)])
    # The 1-core job fits the other agent and waits; the 4-core one does not, and the GPU
    # job goes first.
    assert [j.job_id for j in launches[0]] == [3, 2]
    assert [j.job_id for j in shapes] == [1]


def test_room_elsewhere_on_a_preemptible_agent_does_not_hold_back_a_plain_job() -> None:
    shapes = ShapeQueue()
    shapes.add(JobRequest(job_id=1, cores=1, memory=MIB, disk=0, preemptible=False))
    launches = shapes.place([Capacity(2000, 64, 64, False, 1)],
                            elsewhere=[Capacity(2000, 64, 64, True)])
    assert [j.job_id for j in launches[0]] == [1]
