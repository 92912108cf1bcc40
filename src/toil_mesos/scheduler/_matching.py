"""What jobs need and what offers hold, in the units Mesos compares them in.

The packing is in :mod:`toil_mesos.scheduler._placement`: jobs are placed largest first (GPUs,
then cores, memory and disk), each into the first offer with room left, so big jobs are not
starved by many small ones. Cores are compared in thousandths and memory and disk in whole MiB,
rounded up, exactly as the tasks will ask for them, so a job never fits here and then fails
Mesos' own check. A job that is not preemptible never goes to an agent whose ``preemptible``
attribute is true; a preemptible job may go anywhere (as in Toil's own Mesos batch system).

GPUs are Mesos' ``gpus`` scalar, counted in whole devices (the agent's GPU isolator hands out
devices, never fractions). A job asking for none fits an agent with GPUs too; the packing only
tries such agents after the others (:mod:`~toil_mesos.scheduler._placement`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Capacity",
    "JobRequest",
    "could_ever_fit",
    "mib",
    "millicores",
    "offer_capacity",
]

_MIB = 1024 * 1024


def mib(size_bytes: int) -> int:
    """Bytes to whole MiB, rounded up (Mesos' ``mem`` and ``disk`` are MiB).

    >>> mib(1), mib(1024 * 1024), mib(1024 * 1024 + 1)
    (1, 1, 2)
    """
    return max(0, math.ceil(size_bytes / _MIB))


def millicores(cores: float) -> int:
    """Cores in thousandths, rounded up: how much of an offer's ``cpus`` a job takes.

    >>> millicores(1), millicores(0.1), millicores(1.0001)
    (1000, 100, 1001)
    """
    return math.ceil(round(cores * 1000, 6))


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRequest:
    """What one queued job needs."""

    job_id: int
    cores: float
    memory: int
    disk: int
    preemptible: bool = False
    #: Whole GPUs (the ``gpus`` resource); 0 for a job without GPU accelerators.
    gpus: int = 0

    size: tuple[int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: packing compares sizes far more often than jobs are made.
        object.__setattr__(self, "size", _size(self.cores, self.memory, self.disk))


@dataclass(slots=True)
class Capacity:
    """What is left of one offer, in the units jobs are compared in."""

    millicores: int
    mem_mib: int
    disk_mib: int
    preemptible: bool
    gpus: int = 0

    def fits(self, job: JobRequest) -> bool:
        cores, memory, disk = job.size
        if self.preemptible and not job.preemptible:
            return False
        return (cores <= self.millicores and memory <= self.mem_mib and disk <= self.disk_mib
                and job.gpus <= self.gpus)

    def take(self, job: JobRequest) -> None:
        cores, memory, disk = job.size
        self.millicores -= cores
        self.mem_mib -= memory
        self.disk_mib -= disk
        self.gpus -= job.gpus


@functools.lru_cache(maxsize=1024)
def _size(cores: float, memory: int, disk: int) -> tuple[int, int, int]:
    # Most workflows have a handful of job sizes; a queue of 100,000 computes each once.
    return (millicores(cores), mib(memory), mib(disk))


def offer_capacity(offer: Mapping[str, Any]) -> Capacity:
    """The scalar resources of a v1 Offer, and whether its agent is preemptible."""
    totals = {"cpus": 0.0, "mem": 0.0, "disk": 0.0, "gpus": 0.0}
    for resource in offer.get("resources") or ():
        name = resource.get("name")
        if name in totals and resource.get("type", "SCALAR") == "SCALAR":
            totals[name] += float((resource.get("scalar") or {}).get("value", 0.0))
    return Capacity(
        millicores=math.floor(round(totals["cpus"] * 1000, 6)),
        mem_mib=math.floor(totals["mem"]),
        disk_mib=math.floor(totals["disk"]),
        preemptible=_is_preemptible(offer.get("attributes") or ()),
        gpus=math.floor(round(totals["gpus"], 6)),
    )


def _is_preemptible(attributes: Iterable[Mapping[str, Any]]) -> bool:
    for attribute in attributes:
        if attribute.get("name") != "preemptible":
            continue
        if attribute.get("type") == "TEXT":
            return str((attribute.get("text") or {}).get("value", "")).lower() == "true"
        if attribute.get("type") == "SCALAR":
            return float((attribute.get("scalar") or {}).get("value", 0)) != 0
    return False


def could_ever_fit(job: JobRequest, agents: Iterable[Capacity]) -> bool:
    """Whether some agent's whole capacity could hold *job* (else it would wait for ever)."""
    return any(agent.fits(job) for agent in agents)
