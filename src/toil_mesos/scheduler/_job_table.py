"""Every job the batch system knows, indexed so that each question costs O(its answer).

Toil's leader and the driver's callbacks both touch this table, under its one lock. A job
leaves the table the moment its end is known (a terminal update, a lost agent, a kill): that is
what makes every job reported exactly once, since a later update for it finds nothing. Jobs wait
in a :class:`~toil_mesos.scheduler._placement.ShapeQueue`; launched jobs are indexed by task,
by agent and by host, and started ones are kept apart, so nothing here scans all jobs.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from toil.batchSystems.abstractBatchSystem import BatchJobExitReason, UpdatedBatchJobInfo

from toil_mesos.node_report import NodeReport
from toil_mesos.scheduler._matching import Capacity, JobRequest
from toil_mesos.scheduler._placement import ShapeQueue

__all__ = ["Job", "JobTable"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    job_id: int
    request: JobRequest
    command: str
    environment: dict[str, str]
    name: str
    task_id: str | None = None
    agent_id: str | None = None
    hostname: str | None = None
    started: float | None = None
    issued: float = field(default_factory=time.monotonic)


class JobTable:
    """Jobs, the queue, agents and the updates for Toil; callers hold :attr:`lock`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.ended = threading.Condition(self.lock)
        # None wakes getUpdatedBatchJob when the driver fails, so the failure surfaces at once.
        self.updates: queue.Queue[UpdatedBatchJobInfo | None] = queue.Queue()
        self.jobs: dict[int, Job] = {}
        self.queue = ShapeQueue()
        self.tasks: dict[str, int] = {}
        self.killing: set[str] = set()
        self.started: dict[int, Job] = {}
        self.on_agent: dict[str, set[int]] = {}
        self.on_host: Counter[str] = Counter()
        #: Each agent's whole capacity, from its last offer while it ran nothing of ours.
        self.agents: dict[str, Capacity] = {}
        self.hostnames: dict[str, str] = {}
        self.ignored: set[str] = set()
        self.node_reports: dict[str, NodeReport] = {}
        #: Agents where an executor of this run has been started (until it or they are lost).
        self.executor_agents: set[str] = set()
        #: Seconds from issueBatchJob to TASK_RUNNING, per job, summarised at shutdown.
        self.latencies: list[float] = []

    # ---- a job's life --------------------------------------------------------------------------

    def add(self, job: Job) -> None:
        self.jobs[job.job_id] = job

    def enqueue(self, job: Job) -> None:
        self.queue.add(job.request)

    def launched(self, job: Job, task_id: str, agent_id: str, hostname: str) -> None:
        job.task_id, job.agent_id, job.hostname = task_id, agent_id, hostname
        self.tasks[task_id] = job.job_id
        self.on_agent.setdefault(agent_id, set()).add(job.job_id)
        self.on_host[hostname] += 1
        self.executor_agents.add(agent_id)

    def requeue(self, job: Job) -> None:
        """Put a launched job that never ran back in the queue, under no task and no agent."""
        self._unplace(job)
        job.task_id = job.agent_id = job.hostname = None
        self.queue.add(job.request)

    def mark_running(self, job: Job) -> None:
        if job.started is None:
            job.started = time.monotonic()
            self.started[job.job_id] = job
            self.latencies.append(job.started - job.issued)

    def job_of_task(self, task_id: str) -> Job | None:
        job_id = self.tasks.get(task_id)
        return None if job_id is None else self.jobs.get(job_id)

    def remove(self, job_id: int) -> Job | None:
        """Take a job out of every index (None if it had already left)."""
        job = self.jobs.pop(job_id, None)
        if job is None:
            return None
        self.queue.remove(job_id)
        self.started.pop(job_id, None)
        self._unplace(job)
        return job

    def _unplace(self, job: Job) -> None:
        """Take a job out of the task, agent and host indexes."""
        job_id = job.job_id
        if job.task_id is not None:
            self.tasks.pop(job.task_id, None)
        if job.agent_id is not None:
            on_agent = self.on_agent.get(job.agent_id)
            if on_agent is not None:
                on_agent.discard(job_id)
                if not on_agent:
                    del self.on_agent[job.agent_id]
        if job.hostname is not None:
            self.on_host[job.hostname] -= 1
            if self.on_host[job.hostname] <= 0:
                del self.on_host[job.hostname]

    def report(self, job: Job, exit_status: int, reason: BatchJobExitReason,
               message: str | None) -> None:
        """Report a job's end to Toil: exactly once, because it leaves the table here."""
        if self.remove(job.job_id) is None:
            return
        if message:
            logger.error("job %d (%s): %s", job.job_id, job.name, message)
        wall = time.monotonic() - job.started if job.started else None
        self.updates.put(UpdatedBatchJobInfo(jobID=job.job_id, exitStatus=exit_status,
                                             exitReason=reason, wallTime=wall,
                                             backing_id=job.task_id))

    # ---- agents ----------------------------------------------------------------------------

    def jobs_on(self, agent_id: str) -> list[Job]:
        return [self.jobs[i] for i in self.on_agent.get(agent_id, ())]

    def is_idle(self, agent_id: str) -> bool:
        return agent_id not in self.on_agent

    def note_capacity(self, agent_id: str, capacity: Capacity) -> bool:
        """Record an idle agent's whole capacity; True if that changed what agents exist."""
        if self.agents.get(agent_id) == capacity:
            return False
        self.agents[agent_id] = capacity
        return True

    def room_without_gpus(self, exclude: set[str]) -> list[Capacity]:
        """What known agents without GPUs (but those in *exclude*) have left: their whole
        capacity less what this workflow's tasks there asked for.

        An estimate (other frameworks' tasks are not counted), used only to keep jobs without
        GPUs off GPU agents while such room exists; asked only in rounds with GPU offers.
        """
        rooms = []
        for agent_id, capacity in self.agents.items():
            if capacity.gpus or agent_id in exclude:
                continue
            room = dataclasses.replace(capacity)
            for job_id in self.on_agent.get(agent_id, ()):
                room.take(self.jobs[job_id].request)
            if room.millicores > 0:
                rooms.append(room)
        return rooms

    def forget_agent(self, agent_id: str) -> None:
        self.agents.pop(agent_id, None)
        self.node_reports.pop(agent_id, None)
        self.executor_agents.discard(agent_id)
        self.queue.set_agents(self.agents.values())

    def warm_agents(self, bundle_sha256: str | None) -> set[str]:
        """Agents that start a task of this workflow soonest: its executor runs there, or the
        agent reported this bundle as staged already."""
        warm = set(self.executor_agents)
        if bundle_sha256 is not None:
            for agent_id, report in self.node_reports.items():
                if bundle_sha256 in (getattr(report, "staged_bundles", None) or ()):
                    warm.add(agent_id)
        return warm
