"""The queue of jobs waiting for offers, grouped by shape, and the packing of offers from it.

A leader with 100,000 queued jobs must answer an offer round in milliseconds, so nothing here
walks the queue. Jobs are grouped by *shape* (GPUs, cores in thousandths, memory and disk in MiB,
preemptible), first in first out within a shape. Packing goes through sizes largest first,
which places jobs in exactly the order :func:`~toil_mesos.scheduler._matching.place_jobs`
does (size descending, then oldest first), and each job goes into the first offer with room.
Capacities only shrink during a round, so once an offer is too small for a shape it stays too
small: each shape keeps a cursor into the offers that only moves forward, and once no offer
fits a shape the rest of that shape is skipped. A round costs O(shapes x offers + jobs
launched), whatever the length of the queue.

Whether a shape could *ever* fit (some agent's whole capacity holds it) is decided once per
shape, again only when the set of agent capacities changes.

GPUs come first in a size, so a round places GPU jobs before any other: they can only go to
agents with GPUs, and must find them before other jobs have taken those agents' cores. Jobs
that ask for no GPU try the offers of agents without GPUs first and go to an agent with GPUs
only when no other offer has room (Mesos' advice for frameworks that declare
``GPU_RESOURCES``: keep GPU machines free for GPU work). That is a stable reordering of the
offers, GPU agents last, done once per round, so the cursors and the cost above are unchanged.
Offers of different agents come in different rounds, so "no other offer has room" is not only
this round's offers: a caller may pass the room that agents without GPUs are known to have
although they offered nothing now (``elsewhere``); a job of a shape that fits there waits for
them rather than take a GPU agent. That shortens the shape's cursor range, nothing more.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

from toil_mesos.scheduler._matching import Capacity, JobRequest, offer_capacity

__all__ = ["Placement", "Shape", "ShapeQueue", "gpu_agents_last", "place_jobs", "shape_of",
           "warm_first"]

#: (GPUs, millicores, memory MiB, disk MiB, preemptible): what a job needs, as offers are
#: compared.
Shape: TypeAlias = tuple[int, int, int, int, bool]
_Size: TypeAlias = tuple[int, int, int, int]
_T = TypeVar("_T")


def shape_of(job: JobRequest) -> Shape:
    return (job.gpus, *job.size, job.preemptible)


def _fits(capacity: Capacity, size: _Size, preemptible: bool) -> bool:
    if capacity.preemptible and not preemptible:
        return False
    return (size[0] <= capacity.gpus and size[1] <= capacity.millicores
            and size[2] <= capacity.mem_mib and size[3] <= capacity.disk_mib)


def _take(capacity: Capacity, size: _Size) -> None:
    capacity.gpus -= size[0]
    capacity.millicores -= size[1]
    capacity.mem_mib -= size[2]
    capacity.disk_mib -= size[3]


def gpu_agents_last(capacities: Sequence[Capacity]) -> list[int]:
    """The offer indices in the order packing tries them: agents without GPUs first.

    A job without GPUs then lands on an agent with GPUs only when no other offer has room;
    a GPU job fits no agent without GPUs, so for it the order changes nothing. Stable within
    each group, so warm agents stay first among their kind.

    >>> gpu_agents_last([Capacity(1000, 1, 1, False, 1), Capacity(1000, 1, 1, False)])
    [1, 0]
    """
    plain = [i for i, c in enumerate(capacities) if c.gpus <= 0]
    if len(plain) == len(capacities):
        return plain
    return plain + [i for i, c in enumerate(capacities) if c.gpus > 0]


class ShapeQueue:
    """Queued jobs by shape, FIFO within a shape; O(1) add and remove, packing per offer round."""

    def __init__(self) -> None:
        self._shapes: dict[Shape, OrderedDict[int, JobRequest]] = {}
        self._shape_of: dict[int, Shape] = {}
        self._sizes: list[_Size] | None = []  # distinct sizes, largest first; None: re-sort
        #: Shapes known to fit no agent (only while the agent capacities stay the same).
        self._never: set[Shape] = set()
        self._fit_known: set[Shape] = set()
        self._agent_sizes: frozenset[tuple[int, int, int, int, bool]] = frozenset()

    def __len__(self) -> int:
        return len(self._shape_of)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._shape_of

    def __iter__(self) -> Iterator[JobRequest]:
        """Every queued job, in the order packing would take them (for tests and reports)."""
        for size in self._sorted_sizes():
            yield from self._merged(size)

    def add(self, job: JobRequest) -> None:
        shape = shape_of(job)
        jobs = self._shapes.get(shape)
        if jobs is None:
            jobs = self._shapes[shape] = OrderedDict()
            if not any(s[:4] == shape[:4] for s in self._shapes if s != shape):
                self._sizes = None
        jobs[job.job_id] = job
        self._shape_of[job.job_id] = shape

    def remove(self, job_id: int) -> JobRequest | None:
        """Take a job out (launched, killed, failed); None if it was not queued."""
        shape = self._shape_of.pop(job_id, None)
        if shape is None:
            return None
        return self._shapes[shape].pop(job_id)

    # ---- could a shape ever fit ------------------------------------------------------------

    def set_agents(self, agents: Iterable[Capacity]) -> None:
        """The whole capacity of every known agent; fit verdicts are redone only on change."""
        sizes = frozenset((a.gpus, a.millicores, a.mem_mib, a.disk_mib, a.preemptible)
                          for a in agents)
        if sizes != self._agent_sizes:
            self._agent_sizes = sizes
            self._never.clear()
            self._fit_known.clear()

    def never_fits(self, job: JobRequest) -> bool:
        """True when agents are known and none of them could ever hold *job*."""
        return self._never_fits(shape_of(job))

    def _never_fits(self, shape: Shape) -> bool:
        if not self._agent_sizes:
            return False
        if shape not in self._fit_known:
            self._fit_known.add(shape)
            size = shape[:4]
            if not any(_fits(Capacity(c, m, d, p, g), size, shape[4])
                       for g, c, m, d, p in self._agent_sizes):
                self._never.add(shape)
        return shape in self._never

    def take_never_fitting(self) -> list[JobRequest]:
        """Remove and return every queued job that no known agent could ever hold."""
        doomed: list[JobRequest] = []
        for shape, jobs in self._shapes.items():
            if jobs and self._never_fits(shape):
                doomed.extend(jobs.values())
        for job in doomed:
            self.remove(job.job_id)
        return doomed

    # ---- packing ---------------------------------------------------------------------------

    def place(self, capacities: Sequence[Capacity], *,
              elsewhere: Sequence[Capacity] = ()) -> dict[int, list[JobRequest]]:
        """Pack queued jobs into *capacities* (shrinking them); placed jobs leave the queue.

        Returns the jobs per offer index, each list in placing order. Offers of agents with
        GPUs are tried last (:func:`gpu_agents_last`), and not at all for jobs without GPUs
        that fit the room *elsewhere* (agents without GPUs that offered nothing this round).
        """
        launches: dict[int, list[JobRequest]] = {}
        if not capacities or not self._shape_of:
            return launches
        order = gpu_agents_last(capacities)
        capacities = [capacities[i] for i in order]
        plain = sum(1 for c in capacities if c.gpus <= 0)
        for size in self._sorted_sizes():
            # Per preemptible flag: its jobs, the first offer that may still fit them, and
            # the end of the offers they may take.
            queues = [q for q in (self._shapes.get((*size, False)), self._shapes.get((*size, True)))
                      if q]
            ends = [self._end(size, next(iter(q.values())).preemptible, capacities, plain,
                              elsewhere) for q in queues]
            cursors = [0] * len(queues)
            while queues:
                # The oldest head of the live flags goes next (the reference order).
                which = min(range(len(queues)), key=lambda i: next(iter(queues[i])))
                jobs = queues[which]
                job = jobs[next(iter(jobs))]
                index, count = cursors[which], ends[which]
                while index < count and not _fits(capacities[index], size, job.preemptible):
                    index += 1
                if index == count:
                    # Nothing fits this shape now, nor will this round: the rest of it waits.
                    del queues[which], cursors[which], ends[which]
                    continue
                cursors[which] = index
                _take(capacities[index], size)
                launches.setdefault(order[index], []).append(job)
                self.remove(job.job_id)
                if not jobs:
                    del queues[which], cursors[which], ends[which]
        return launches

    @staticmethod
    def _end(size: _Size, preemptible: bool, capacities: Sequence[Capacity], plain: int,
             elsewhere: Sequence[Capacity]) -> int:
        """How many of the (GPU agents last) offers jobs of this size and flag may take: all,
        or only those without GPUs when the job asks for none and fits *elsewhere*."""
        if plain == len(capacities) or size[0] or not elsewhere:
            return len(capacities)
        if any(_fits(room, size, preemptible) for room in elsewhere):
            return plain  # an agent without GPUs has room for it: wait for that one's offer
        return len(capacities)

    def _sorted_sizes(self) -> list[_Size]:
        if self._sizes is None:
            self._sizes = sorted({s[:4] for s in self._shapes}, reverse=True)
        return self._sizes

    def _merged(self, size: _Size) -> Iterator[JobRequest]:
        """The jobs of one size, oldest first across both preemptible flags (a lazy merge)."""
        plain = self._shapes.get((*size, False))
        spot = self._shapes.get((*size, True))
        if not spot:
            yield from list(plain.values()) if plain else ()
            return
        if not plain:
            yield from list(spot.values())
            return
        left, right = iter(list(plain.values())), iter(list(spot.values()))
        a, b = next(left, None), next(right, None)
        while a is not None and b is not None:
            if a.job_id < b.job_id:
                yield a
                a = next(left, None)
            else:
                yield b
                b = next(right, None)
        while a is not None:
            yield a
            a = next(left, None)
        while b is not None:
            yield b
            b = next(right, None)


@dataclass(frozen=True, slots=True)
class Placement:
    """Which jobs go into which offer (by offer index), and which offers are left unused."""

    launches: Mapping[int, Sequence[JobRequest]] = field(default_factory=dict)
    unused: Sequence[int] = ()
    unplaced: Sequence[JobRequest] = ()


def place_jobs(offers: Sequence[Mapping[str, Any]], queued: Iterable[JobRequest]) -> Placement:
    """Place *queued* jobs into *offers*, largest first; return what goes where.

    A one-shot form of :meth:`ShapeQueue.place`, for callers that hold no queue.
    """
    shapes = ShapeQueue()
    for job in queued:
        shapes.add(job)
    launches = shapes.place([offer_capacity(o) for o in offers])
    unused = [i for i in range(len(offers)) if i not in launches]
    return Placement(launches=launches, unused=unused, unplaced=list(shapes))


def warm_first(offers: Sequence[_T], warm: Set[str]) -> list[_T]:
    """*offers* with those of warm agents first, each group in its own order.

    A warm agent (this workflow's executor runs there, or it has the bundle staged) starts a
    task without fetching the bundle, so when several offers fit a job the warm one wins;
    offers of equal warmth keep the master's order, so packing stays as it was without them.
    Items are v1 Offers, or tuples whose first element is one.
    """
    if not warm:
        return list(offers)
    hot = [o for o in offers if _agent_of(o) in warm]
    if not hot:
        return list(offers)
    return hot + [o for o in offers if _agent_of(o) not in warm]


def _agent_of(item: Any) -> str:
    offer = item[0] if isinstance(item, tuple) else item
    return str(offer["agent_id"]["value"])
