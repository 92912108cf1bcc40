"""The Mesos scheduler callbacks: offers become launches, updates become Toil's job results.

They run on the driver's thread under the job table's lock, so Toil's leader waits while they
run: each costs O(offers + tasks launched) or O(1) per update, never a walk over the queue.
Offers not used in a round are declined together, in one DECLINE per filter.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from toil.batchSystems.abstractBatchSystem import (
    EXIT_STATUS_UNAVAILABLE_VALUE,
    BatchJobExitReason,
)

from toil_mesos.errors import MesosError
from toil_mesos.mesos import SubscriptionState
from toil_mesos.mesos.interface import Scheduler
from toil_mesos.node_report import NodeReport
from toil_mesos.scheduler._agent_files import ExecutorDiagnostics, FailedExecutor
from toil_mesos.scheduler._agent_health import (
    MAX_START_FAILURES,
    AgentHealth,
    StartFailure,
    offer_address,
)
from toil_mesos.scheduler._carving import UNRESERVED, NotEnoughResources, restricted
from toil_mesos.scheduler._deployment import NOTHING_SHIPS, Deployer
from toil_mesos.scheduler._job_table import Job, JobTable
from toil_mesos.scheduler._matching import Capacity, JobRequest, offer_capacity
from toil_mesos.scheduler._placement import warm_first
from toil_mesos.scheduler._task_end import EXECUTOR_ENDED, exit_of, explain_end
from toil_mesos.scheduler._tasks import TaskBuilder, is_single_task_executor

__all__ = ["DriverCallbacks"]

logger = logging.getLogger(__name__)

#: Task states after which Mesos runs nothing more for the task.
TERMINAL = frozenset(
    {
        "TASK_FINISHED",
        "TASK_FAILED",
        "TASK_KILLED",
        "TASK_ERROR",
        "TASK_LOST",
        "TASK_DROPPED",
        "TASK_GONE",
        "TASK_GONE_BY_OPERATOR",
        "TASK_UNREACHABLE",
        "TASK_UNKNOWN",
    }
)
#: How long after a re-subscription the launched tasks are reconciled (agents re-register with
#: a new leading master within about a second: ha/ transcript).
RECONCILE_AFTER_RESUBSCRIBE = 10.0
#: How long an idle framework asks the master not to re-offer a declined agent.
_DECLINE_IDLE_SECONDS = 30.0
_DECLINE_BUSY_SECONDS = 2.0


class DriverCallbacks(Scheduler):
    """What the batch system does when the master speaks (the driver's thread)."""

    def __init__(self, table: JobTable, deployer: Deployer, tasks: TaskBuilder, *,
                 health: AgentHealth, diagnostics: ExecutorDiagnostics,
                 framework_id: str | None, endpoint: str,
                 on_registered: Callable[[str], None], role: str = UNRESERVED) -> None:
        self._table = table
        #: The framework's role: offers are cut down to what it may use (``_carving``).
        self._role = role
        self._health = health
        self._diagnostics = diagnostics
        self._deployer = deployer
        self._tasks = tasks
        self._endpoint = endpoint
        self._on_registered = on_registered
        self.framework_id = framework_id
        #: Whether offers are suppressed (the queue was empty); issueBatchJob revives them.
        self.suppressed = False
        #: Set when the workflow must stop; Toil's calls raise it.
        self.fatal: BaseException | None = None
        self._reconcile_timer: threading.Timer | None = None

    def registered(self, driver: Any, frameworkId: Any, masterInfo: Any) -> None:
        framework_id = str(frameworkId["value"])
        with self._table.lock:
            self.framework_id = framework_id
        self._on_registered(framework_id)
        logger.info("registered with the Mesos master at %s as framework %s",
                    self._endpoint, framework_id)

    def reregistered(self, driver: Any, masterInfo: Any) -> None:
        logger.info("re-registered with the Mesos master; reconciling running tasks in %.0f s",
                    RECONCILE_AFTER_RESUBSCRIBE)
        # A new leading master learns tasks from its agents as they re-register; asking about a
        # task before its agent did would get TASK_LOST for a task that runs. So the explicit
        # RECONCILE waits; it finds launches lost with the old master, and agents that never
        # came back.
        if self._reconcile_timer is not None:
            self._reconcile_timer.cancel()
        timer = threading.Timer(RECONCILE_AFTER_RESUBSCRIBE, self._reconcile_launched, (driver,))
        timer.name = "toil-mesos-reconcile"
        timer.daemon = True
        self._reconcile_timer = timer
        timer.start()

    def disconnected(self, driver: Any) -> None:
        # A reconciliation timed for the subscription just lost would go to whichever master
        # comes next, before its agents re-register, and make running tasks TASK_LOST: the next
        # re-registration times its own.
        if self._reconcile_timer is not None:
            self._reconcile_timer.cancel()
            self._reconcile_timer = None

    def _reconcile_launched(self, driver: Any, agent_id: str | None = None) -> None:
        """Explicit RECONCILE of the launched tasks (those of *agent_id* only, if given)."""
        state = getattr(driver, "subscription_state", SubscriptionState.SUBSCRIBED)
        if state is not SubscriptionState.SUBSCRIBED:
            logger.debug("no reconciliation: not subscribed (%s)", state.value)
            return
        with self._table.lock:
            tasks = [
                {"task_id": {"value": task_id}, "agent_id": {"value": job.agent_id}}
                for task_id, job_id in self._table.tasks.items()
                if (job := self._table.jobs.get(job_id)) is not None and job.agent_id
                and agent_id in (None, job.agent_id)
            ]
        if not tasks:
            return
        logger.info("reconciling %d launched tasks%s with the Mesos master", len(tasks),
                    "" if agent_id is None else f" on agent {agent_id}")
        try:
            driver.reconcileTasks(tasks)
        except MesosError as exc:  # the driver has ended meanwhile
            logger.debug("no reconciliation: %s", exc)

    # ---- offers ----------------------------------------------------------------------------

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        table = self._table
        with table.lock:
            capacities, held_back, set_aside = self._usable_offers(offers)
            deployment = self._deployer.deployment or NOTHING_SHIPS
            pairs = warm_first(list(capacities.values()), table.warm_agents(deployment.sha256))
            launches = table.queue.place([capacity for _, capacity in pairs],
                                         elsewhere=self._room_elsewhere(offers, pairs))
            for index, jobs in launches.items():
                self._launch(driver, pairs[index][0], self._within_allowance(pairs[index][0], jobs))
            refuse = _DECLINE_BUSY_SECONDS if len(table.queue) else _DECLINE_IDLE_SECONDS
            unused = [o["id"] for i, (o, _) in enumerate(pairs) if i not in launches]
            self._decline(driver, set_aside, _DECLINE_IDLE_SECONDS)
            self._decline(driver, held_back, _DECLINE_BUSY_SECONDS)
            self._decline(driver, unused, refuse)
            for request in table.queue.take_never_fitting():
                table.report(table.jobs[request.job_id], EXIT_STATUS_UNAVAILABLE_VALUE,
                             BatchJobExitReason.ERROR, never_fits_message(request))
            if not len(table.queue) and not self.suppressed:
                self.suppressed = True
                driver.suppressOffers()

    def _usable_offers(
        self, offers: list[Any]
    ) -> tuple[dict[int, tuple[Any, Capacity]], list[Any], list[Any]]:
        """Note what each offer says about its agent; split off offers of ignored hosts, of
        agents on probation that may get nothing now, and of agents set aside.

        Returns the usable offers with their capacities (by ``id()`` of the offer, in order),
        the ids of the offers held back for now, and those of the agents set aside.
        """
        table = self._table
        usable: dict[int, tuple[Any, Capacity]] = {}
        held_back: list[Any] = []
        set_aside: list[Any] = []
        changed = False
        for offer in (restricted(o, self._role) for o in offers):
            agent_id = str(offer["agent_id"]["value"])
            hostname = table.hostnames[agent_id] = str(offer.get("hostname") or agent_id)
            self._health.offered(agent_id, hostname, offer_address(offer))
            capacity = offer_capacity(offer)
            # An idle agent offers all of itself; one with nothing for this role (everything
            # reserved for others) is not an agent of this framework at all.
            if table.is_idle(agent_id) and (capacity.millicores or capacity.mem_mib):
                changed |= table.note_capacity(agent_id, dataclasses.replace(capacity))
            if self._health.is_set_aside(agent_id):
                set_aside.append(offer["id"])
            elif hostname in table.ignored or self._allowance(agent_id) == 0:
                held_back.append(offer["id"])
            else:
                usable[id(offer)] = (offer, capacity)
        if changed:
            table.queue.set_agents(table.agents.values())
        return usable, held_back, set_aside

    def _room_elsewhere(self, offers: list[Any],
                        pairs: list[tuple[Any, Capacity]]) -> list[Capacity]:
        """In a round with GPU offers: the room that agents without GPUs which offered nothing
        now are known to have, so jobs without GPUs wait for them instead of a GPU agent."""
        if not any(capacity.gpus > 0 for _, capacity in pairs):
            return []
        table = self._table
        exclude = {str(o["agent_id"]["value"]) for o in offers}
        exclude.update(a for a in table.agents
                       if self._health.is_set_aside(a) or table.hostnames.get(a) in table.ignored)
        return table.room_without_gpus(exclude)

    def _allowance(self, agent_id: str) -> int | None:
        """How many more tasks an agent may get now: after a failed start one at a time, and
        none while that failure is read from its sandbox (None: no limit)."""
        if self._diagnostics.pending(agent_id):
            return 0
        return self._health.allowance(agent_id, len(self._table.on_agent.get(agent_id, ())))

    def _within_allowance(self, offer: Any, jobs: list[JobRequest]) -> list[JobRequest]:
        """The placed jobs an agent on probation may get; the rest go back to the queue."""
        allowance = self._allowance(str(offer["agent_id"]["value"]))
        if allowance is None or allowance >= len(jobs):
            return jobs
        for request in jobs[allowance:]:
            self._table.queue.add(request)
        return jobs[:allowance]

    @staticmethod
    def _decline(driver: Any, offer_ids: list[Any], refuse_seconds: float) -> None:
        if offer_ids:
            driver.declineOffer(offer_ids, {"refuse_seconds": refuse_seconds})

    def _launch(self, driver: Any, offer: Any, jobs: Sequence[JobRequest]) -> None:
        table = self._table
        deployment = self._deployer.deployment or NOTHING_SHIPS
        executor = self._tasks.executor(framework_id=self.framework_id,
                                        bundle_url=deployment.url,
                                        bundle_sha256=deployment.sha256)
        agent_id = str(offer["agent_id"]["value"])
        hostname = str(offer.get("hostname") or agent_id)
        entries = []
        for request in jobs:
            job = table.jobs[request.job_id]
            entries.append((request, job.name, job.command, job.environment))
        try:
            tasks = self._tasks.tasks(offer=offer, jobs=entries, executor=executor,
                                      bundle_sha256=deployment.sha256,
                                      attempt_of=self._health.attempt)
        except NotEnoughResources as exc:  # placement and carving disagree: nothing launches
            logger.error("no tasks launched on %s: %s", hostname, exc)
            for request in jobs:
                table.queue.add(request)
            self._decline(driver, [offer["id"]], _DECLINE_BUSY_SECONDS)
            return
        for request, task in zip(jobs, tasks, strict=True):
            table.launched(table.jobs[request.job_id], task["task_id"]["value"], agent_id,
                           hostname)
        driver.launchTasks([offer["id"]], tasks)
        logger.debug("launched %d tasks on %s", len(tasks), hostname)

    # ---- updates ---------------------------------------------------------------------------

    def statusUpdate(self, driver: Any, update: Any) -> None:
        task_id = str(update["task_id"]["value"])
        state = str(update.get("state"))
        table = self._table
        with table.lock:
            if state in TERMINAL and task_id in table.killing:
                table.killing.discard(task_id)
                table.ended.notify_all()
            job = table.job_of_task(task_id)
            if job is None:
                return
            if state == "TASK_RUNNING" and job.started is None:
                table.mark_running(job)
                self._health.started(str(job.agent_id))
            if state not in TERMINAL:
                return
            if job.started is None and self._start_failed(driver, job, update):
                return  # it never ran: back in the queue, Toil is not charged a retry
            if job.started is not None:
                self._health.ended(str(job.agent_id),
                                   executor_died=str(update.get("reason")) in EXECUTOR_ENDED)
            exit_status, reason = exit_of(update)
            message = str(update.get("message") or "")
            if _is_fetch_failure(update):
                self.fatal = self._deployer.fetch_failure(job.hostname, message)
                table.report(job, EXIT_STATUS_UNAVAILABLE_VALUE, BatchJobExitReason.ERROR, None)
                return
            if reason is not BatchJobExitReason.FINISHED:
                logger.warning("job %d (%s) ended as %s on %s: %s", job.job_id, job.name, state,
                               job.hostname, explain_end(update))
            table.report(job, exit_status, reason, None)

    def frameworkMessage(self, driver: Any, executorId: Any, agentId: Any, message: str) -> None:
        agent_id = str(agentId["value"])
        report = NodeReport.decode(message)
        if report is None:
            logger.debug("ignoring a framework message from agent %s", agent_id)
            return
        with self._table.lock:
            self._table.node_reports[agent_id] = report
            self._table.hostnames.setdefault(agent_id, report.hostname)
        if getattr(report, "resubscribed", False):  # read with getattr, like staged_bundles
            # An executor re-subscribed with its restarted agent, which has registered with
            # the master again (the agent forwards messages only then): what the agent
            # recovered is known, and tasks it did not are reported, so ask about its tasks.
            logger.info("agent %s (%s) recovered after a restart; reconciling its tasks",
                        report.hostname, agent_id)
            self._reconcile_launched(driver, agent_id)

    def executorLost(self, driver: Any, executorId: Any, agentId: Any,
                     status: int | None) -> None:
        executor_id = str(executorId["value"]) if isinstance(executorId, dict) else None
        if agentId is not None and executor_id and is_single_task_executor(executor_id):
            # A GPU task's own executor: the agent's shared executor lives on, and exiting
            # (status 0) once its task is over is how this one ends, not a failure.
            if status == 0:
                logger.debug("executor %s ended after its task", executor_id)
            else:
                self._diagnostics.exited(str(agentId["value"]), status)
            return
        if agentId is not None:
            agent_id = str(agentId["value"])
            with self._table.lock:
                self._table.executor_agents.discard(agent_id)
            self._diagnostics.exited(agent_id, status)

    def agentLost(self, driver: Any, agentId: Any) -> None:
        agent_id = str(agentId["value"])
        table = self._table
        with table.lock:
            label = self._health.label(agent_id)
            if self._health.lost(agent_id):
                logger.warning("agent %s, set aside, was lost: it is tried again if it comes "
                               "back", label)
            for job in table.jobs_on(agent_id):
                table.report(job, EXIT_STATUS_UNAVAILABLE_VALUE, BatchJobExitReason.LOST,
                             f"agent lost: {label} was lost")
            table.forget_agent(agent_id)

    def _start_failed(self, driver: Any, job: Job, status: Any) -> bool:
        """A task that ended before it ran because its executor did not start or ended.

        The agent's sandbox is read (off this thread) to say why, the failure counts against
        the agent, and the job goes back to the queue: it never ran, so Toil is not charged a
        retry. Returns False when this is not such an end, or the job went back too often.
        """
        reason = str(status.get("reason") or "")
        launch_failed = (reason == "REASON_CONTAINER_LAUNCH_FAILED"
                         and not _is_fetch_failure(status))
        if (reason not in EXECUTOR_ENDED and not launch_failed) or job.agent_id is None:
            return False
        agent_id = job.agent_id
        health = self._health
        executor = status.get("executor_id")
        deployment = self._deployer.deployment or NOTHING_SHIPS
        executor_id = (str(executor["value"]) if isinstance(executor, dict) and "value" in executor
                       else self._tasks.executor_id(
                           deployment.sha256, job.task_id if job.request.gpus else None))
        outcome = health.start_failed(agent_id)
        if outcome in (StartFailure.COUNTED, StartFailure.SET_ASIDE):  # not a crash: explain it
            self._diagnostics.request(FailedExecutor(
                agent_id=agent_id, hostname=job.hostname or agent_id,
                address=health.address(agent_id), framework_id=self.framework_id or "",
                executor_id=executor_id))
        if outcome is StartFailure.SET_ASIDE:
            logger.error(
                "agent %s is set aside: this workflow's executor failed to start there %d "
                "times (%s); it gets no more tasks of this workflow unless it re-registers",
                health.label(agent_id), MAX_START_FAILURES,
                self._diagnostics.summary(agent_id) or "why is being read from its sandbox")
            if health.all_set_aside():
                self._table.updates.put_nowait(None)  # wake Toil's thread: _check_fatal stops it
        if not health.may_requeue(job.job_id):
            return False
        self._table.requeue(job)
        if self.suppressed:
            self.suppressed = False
            driver.reviveOffers()
        logger.info("job %d (%s) goes back to the queue: the executor on %s ended before it "
                    "ran (%s: %s)", job.job_id, job.name, health.label(agent_id),
                    reason, status.get("message") or "no message")
        return True

    def error(self, driver: Any, message: str) -> None:
        logger.error("Mesos error: %s", message)
        self.fatal = MesosError(f"the Mesos master refused the framework: {message}")
        self._table.updates.put_nowait(None)


def never_fits_message(job: JobRequest) -> str:
    if not job.gpus:
        return (f"job {job.job_id} needs {job.cores} cores, {job.memory} bytes of memory and "
                f"{job.disk} bytes of disk, which no agent of this cluster has")
    return (f"job {job.job_id} needs {job.gpus} GPUs with {job.cores} cores, {job.memory} "
            f"bytes of memory and {job.disk} bytes of disk on one agent, which no agent of "
            "this cluster has (agents offer GPUs as the 'gpus' resource, e.g. Mesos agents "
            "with --isolation=gpu/nvidia, or `toil-mesos cluster up --gpus N`)")


def _is_fetch_failure(status: Any) -> bool:
    return (str(status.get("reason")) == "REASON_CONTAINER_LAUNCH_FAILED"
            and "fetch" in str(status.get("message") or "").lower())
