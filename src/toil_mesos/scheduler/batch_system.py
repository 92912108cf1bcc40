"""``--batchSystem=mesos``: Toil's batch system interface on the Mesos v1 scheduler API.

Toil calls :meth:`issueBatchJob` from its own thread; the Mesos driver calls our scheduler
callbacks from the driver's thread. One lock guards the job table both sides touch, and finished
jobs reach Toil through a queue, so :meth:`getUpdatedBatchJob` blocks without polling. A job leaves
the table the moment its end is known (a terminal update, an agent lost, a kill), which is what
makes every job reported exactly once: a later update for it finds nothing to report.

This batch system ships the workflow's code itself (:mod:`toil_mesos.deploy`), so
:meth:`supportsAutoDeployment` is False and Toil does not zip the code into the job store again.
The bundle is built before the first job is issued, served by a :class:`BundleServer` on the
leader, and fetched by each agent once per executor.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import secrets
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from toil.batchSystems.abstractBatchSystem import (
    EXIT_STATUS_UNAVAILABLE_VALUE,
    AbstractScalableBatchSystem,
    BatchJobExitReason,
    NodeInfo,
    UpdatedBatchJobInfo,
)
from toil.batchSystems.cleanup_support import BatchSystemCleanupSupport

from toil_mesos.deploy import UserModule, build, check_native, locate, scan, user_module_of
from toil_mesos.deploy._environment import PythonEnvironment
from toil_mesos.deploy.scan import Contents
from toil_mesos.errors import BundleError, MesosError
from toil_mesos.images import APPLIANCE_ENV
from toil_mesos.mesos.driver import SchedulerDriver
from toil_mesos.mesos.interface import Scheduler
from toil_mesos.node_report import NodeReport
from toil_mesos.scheduler import options as mesos_options
from toil_mesos.scheduler._agent_files import ExecutorDiagnostics, FailedExecutor
from toil_mesos.scheduler._agent_health import (
    MAX_START_FAILURES,
    AgentHealth,
    StartFailure,
    all_set_aside_message,
    offer_address,
)
from toil_mesos.scheduler._framework import FrameworkRecord, tear_down_previous
from toil_mesos.scheduler._matching import (
    Capacity,
    JobRequest,
    could_ever_fit,
    offer_capacity,
    place_jobs,
)
from toil_mesos.scheduler._task_end import EXECUTOR_ENDED, exit_of, explain_end
from toil_mesos.scheduler._tasks import executor_id_for, executor_info, task_info
from toil_mesos.scheduler.bundle_server import BundleServer
from toil_mesos.task_spec import TaskSpec

__all__ = ["MesosBatchSystem", "exit_of"]

logger = logging.getLogger(__name__)

#: Task states after which Mesos runs nothing more for the task.
_TERMINAL = frozenset(
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
#: How long an idle framework asks the master not to re-offer a declined agent.
_DECLINE_IDLE_SECONDS = 30.0
_DECLINE_BUSY_SECONDS = 2.0
_KILL_WAIT_SECONDS = 60.0
#: How long the leader waits for the agents' diagnoses before stopping a stranded workflow.
_DIAGNOSIS_WAIT_SECONDS = 10.0


@dataclass(slots=True)
class _Job:
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


@dataclass(frozen=True, slots=True)
class _Deployment:
    """What ships for this workflow: the bundle (None when nothing ships) and its contents."""

    sha256: str | None
    url: str | None
    contents: Contents | None


class MesosBatchSystem(BatchSystemCleanupSupport, AbstractScalableBatchSystem):
    """Toil's batch system for Mesos, with auto-deployment done by toil-mesos."""

    @classmethod
    def supportsAutoDeployment(cls) -> bool:
        # We ship the code ourselves; Toil's own path would zip it again into the job store.
        return False

    @classmethod
    def add_options(cls, parser: Any) -> None:
        mesos_options.add_options(parser)

    @classmethod
    def setOptions(cls, setOption: Any) -> None:
        mesos_options.set_options(setOption)

    def __init__(
        self,
        config: Any,
        maxCores: float,
        maxMemory: int,
        maxDisk: int,
        *,
        driver_factory: Any = None,
        bundle_dir: Path | None = None,
        environment: PythonEnvironment | None = None,
    ) -> None:
        super().__init__(config, maxCores, maxMemory, maxDisk)
        # Toil quiets every logger outside its own package; as Toil's batch system we are part
        # of it, so ours follow Toil's --logLevel again.
        logging.getLogger("toil_mesos").setLevel(logging.NOTSET)
        self._options = mesos_options.MesosOptions.from_config(config)
        self._auto_deploy = not _truthy(getattr(config, "disableAutoDeployment", False))
        self._bundle_dir = bundle_dir or _default_bundle_dir()
        self._python_environment = environment
        self._lock = threading.RLock()
        self._ended = threading.Condition(self._lock)
        # None wakes getUpdatedBatchJob when the driver fails, so the failure surfaces at once.
        self._updates: queue.Queue[UpdatedBatchJobInfo | None] = queue.Queue()
        self._jobs: dict[int, _Job] = {}
        self._queued: list[int] = []
        self._tasks: dict[str, int] = {}
        self._killing: set[str] = set()
        self._agents: dict[str, Capacity] = {}
        self._hostnames: dict[str, str] = {}
        self._ignored: set[str] = set()
        self._node_reports: dict[str, NodeReport] = {}
        self._health = AgentHealth()
        self._diagnostics = ExecutorDiagnostics(self._options.executor)
        #: Seconds from issueBatchJob to TASK_RUNNING, per job, summarised at shutdown.
        self._latencies: list[float] = []
        self._suppressed = False
        self._fatal: BaseException | None = None
        self._deployment: _Deployment | None = None
        self._deploy_lock = threading.Lock()
        self._bundle_server: BundleServer | None = None
        self._framework_id: str | None = self._options.framework_id
        #: Names this leader run's tasks and executors apart from any other run's.
        self._run_id = secrets.token_hex(4)
        #: The appliance image agents must run, which every executor checks (None: no check).
        self._appliance = os.environ.get(APPLIANCE_ENV) or None
        if self._appliance:
            logger.info("agents must run the appliance image %s (%s)", self._appliance,
                        APPLIANCE_ENV)
        _hide_toils_auto_deployment_warning()
        framework: dict[str, Any] = {
            "user": self._options.user,
            "name": self._options.name,
            "failover_timeout": 300.0,
            "capabilities": [{"type": "MULTI_ROLE"}, {"type": "TASK_KILLING_STATE"}],
            "roles": [self._options.role or "*"],
        }
        if self._framework_id:
            framework["id"] = {"value": self._framework_id}
        self._previous_sigterm = _end_on_sigterm()
        factory = driver_factory or SchedulerDriver
        self._record = FrameworkRecord(getattr(config, "jobStore", None))
        if getattr(config, "restart", False):
            previous = self._record.read()
            if previous and previous != self._framework_id:
                # The previous leader's tasks must end before any job is issued again.
                tear_down_previous(factory, framework, self._options.endpoint, previous)
        self._driver = factory(_Callbacks(self), framework, self._options.endpoint)
        try:
            self._driver.start()
        except BaseException:
            self._close_server()
            _restore_sigterm(self._previous_sigterm)
            raise

    # ---- Toil's interface ----------------------------------------------------------------------

    def issueBatchJob(
        self,
        command: str,
        job_desc: Any,
        job_environment: Mapping[str, str] | None = None,
    ) -> int:
        self._check_fatal()
        self.check_resource_request(job_desc)
        local = self.handleLocalJob(command, job_desc)
        if local is not None:
            return int(local)
        deployment = self._deploy(job_desc)
        uncovered = self._uncovered_module(job_desc, deployment)
        job_id = int(self.getNextJobID())
        request = JobRequest(
            job_id=job_id,
            cores=float(job_desc.cores),
            memory=int(job_desc.memory),
            disk=int(job_desc.disk),
            preemptible=bool(job_desc.preemptible),
        )
        environment = {**self.environment, **(job_environment or {})}
        job = _Job(job_id, request, command, environment, str(job_desc.jobName))
        with self._lock:
            self._jobs[job_id] = job
            if uncovered is not None:
                self._report(job, 1, BatchJobExitReason.ERROR, uncovered)
                return job_id
            unfit = self._never_fits(request)
            if unfit is not None:
                self._report(job, EXIT_STATUS_UNAVAILABLE_VALUE, BatchJobExitReason.ERROR, unfit)
                return job_id
            self._queued.append(job_id)
            if self._suppressed:
                self._suppressed = False
                self._driver.reviveOffers()
        logger.debug("issued job %d (%s): %s", job_id, job.name, command)
        return job_id

    def killBatchJobs(self, jobIDs: list[int]) -> None:
        self.killLocalJobs(jobIDs)
        deadline = time.monotonic() + _KILL_WAIT_SECONDS
        waiting: list[str] = []
        with self._lock:
            for job_id in jobIDs:
                job = self._jobs.pop(job_id, None)
                if job is None:
                    continue
                if job_id in self._queued:
                    self._queued.remove(job_id)
                if job.task_id is not None:
                    self._killing.add(job.task_id)
                    waiting.append(job.task_id)
                    self._driver.killTask({"value": job.task_id},
                                          {"value": job.agent_id} if job.agent_id else None)
            # A bounded wait for the tasks to end, so Toil may reissue without overlap.
            while any(t in self._killing for t in waiting):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning("tasks %s did not confirm their kill within %.0f s",
                                   [t for t in waiting if t in self._killing], _KILL_WAIT_SECONDS)
                    break
                self._ended.wait(remaining)

    def getIssuedBatchJobIDs(self) -> list[int]:
        with self._lock:
            return [*self._jobs, *self.getIssuedLocalJobIDs()]

    def getRunningBatchJobIDs(self) -> dict[int, float]:
        now = time.monotonic()
        with self._lock:
            running = {j.job_id: now - j.started for j in self._jobs.values() if j.started}
        running.update(self.getRunningLocalJobIDs())
        return running

    def getUpdatedBatchJob(self, maxWait: int) -> UpdatedBatchJobInfo | None:
        self._check_fatal()
        local = self.getUpdatedLocalJob(0)
        if local is not None:
            return local
        try:
            update = self._updates.get(timeout=maxWait)
        except queue.Empty:
            return None
        self._check_fatal()
        return update

    def shutdown(self) -> None:
        """Tear the framework down (its executors stop) and release the server and threads."""
        self._log_latencies()
        self.shutdownLocal()
        try:
            self._driver.stop(failover=False)
            self._driver.join(timeout=30)
        except MesosError as exc:
            logger.warning("the Mesos driver ended with an error: %s", exc)
        finally:
            self._close_server()
            self._diagnostics.close()
            _restore_sigterm(self._previous_sigterm)

    def _log_latencies(self) -> None:
        with self._lock:
            latencies = sorted(self._latencies)
        if not latencies:
            return
        def at(fraction: float) -> float:
            return latencies[min(len(latencies) - 1, math.ceil(fraction * len(latencies)) - 1)]

        logger.info(
            "%d jobs started on Mesos; issue-to-running latency: median %.3f s, p95 %.3f s, "
            "max %.3f s", len(latencies), at(0.5), at(0.95), latencies[-1],
        )

    def getNodes(self, preemptible: bool | None = None, timeout: int = 600) -> dict[str, NodeInfo]:
        """Each agent this framework has seen: what its executor last reported, else offers."""
        with self._lock:
            nodes = {}
            for agent_id, capacity in self._agents.items():
                if preemptible is not None and capacity.preemptible != preemptible:
                    continue
                jobs = [j for j in self._jobs.values() if j.agent_id == agent_id]
                report = self._node_reports.get(agent_id)
                cores = report.cores if report else capacity.millicores / 1000
                memory = report.memory if report else capacity.mem_mib * 1024 * 1024
                requested_cores = sum(j.request.cores for j in jobs)
                requested_memory = sum(j.request.memory for j in jobs)
                nodes[self._hostnames.get(agent_id, agent_id)] = NodeInfo(
                    coresUsed=(report.load if report else requested_cores) / max(cores, 1e-9),
                    memoryUsed=requested_memory / max(memory, 1),
                    coresTotal=cores,
                    memoryTotal=memory,
                    requestedCores=requested_cores,
                    requestedMemory=requested_memory,
                    workers=report.workers if report else len(jobs),
                )
            return nodes

    def nodeInUse(self, nodeIP: str) -> bool:
        with self._lock:
            return any(j.hostname == nodeIP for j in self._jobs.values())

    def ignoreNode(self, nodeAddress: str) -> None:
        with self._lock:
            self._ignored.add(nodeAddress)

    def unignoreNode(self, nodeAddress: str) -> None:
        with self._lock:
            self._ignored.discard(nodeAddress)

    # ---- deployment ----------------------------------------------------------------------------

    def _deploy(self, job_desc: Any) -> _Deployment:
        """Build and serve the bundle once, before the first job; a failure stops the workflow.

        The build has a lock of its own: holding the scheduler's lock for seconds would stall
        the driver's callbacks (offers, updates) meanwhile.
        """
        with self._deploy_lock:
            if self._deployment is None:
                deployment = self._build_and_serve(job_desc)
                with self._lock:
                    self._deployment = deployment
            return self._deployment

    def _build_and_serve(self, job_desc: Any) -> _Deployment:
        if not self._auto_deploy:
            logger.info("auto-deployment is disabled: the workflow's code must already be "
                        "importable on every agent")
            return _Deployment(None, None, None)
        module = user_module_of(sys.modules["__main__"]) or _module_of(job_desc)
        try:
            plan = locate(module, environment=self._python_environment,
                          options=self._options.deploy)
            contents = scan(plan, self._options.deploy)
            check_native(contents, self._options.deploy.native, option="--mesosNativeCode",
                         exclude_option="--mesosBundleExclude")
            if not contents.files:
                logger.info("nothing to ship: the workflow's code comes with the agents")
                return _Deployment(None, None, contents)
            bundle = build(contents, self._bundle_dir)
        except BundleError as exc:
            raise BundleError(
                f"{exc}\nNo job of this workflow has run. Fix the problem, then run the "
                "same command with --restart (the job store is kept), or `toil clean` the "
                "job store and run it again."
            ) from None
        host, port = self._bundle_endpoint()
        self._bundle_server = BundleServer(host, port)
        self._bundle_server.add(bundle.path)
        url = self._bundle_server.url(bundle.sha256, host=self._advertised_host(host))
        logger.info(
            "shipping the workflow's code to the agents: bundle %s (%d roots, %d files, "
            "%d bytes) from %s",
            bundle.sha256[:12], len(contents.roots), len(contents.files),
            contents.total_bytes, url.split("/bundles/")[0],
        )
        return _Deployment(bundle.sha256, url, contents)

    def _uncovered_module(self, job_desc: Any, deployment: _Deployment) -> str | None:
        name = _module_name_of(job_desc)
        if name is None or deployment.sha256 is None or deployment.contents is None:
            return None
        if deployment.contents.ships_module(name):
            return None
        return (f"the job's module {name!r} is not in the workflow's bundle (it was not "
                "under any root the leader shipped); run the workflow so that every job's "
                "module ships with it, e.g. `python -m` from the project root")

    def _bundle_endpoint(self) -> tuple[str, int]:
        address = self._options.bundle_address
        if address:
            _, _, port = address.rpartition(":") if ":" in address else (address, "", "0")
            return "0.0.0.0", int(port or 0)
        return _route_to(self._options.endpoint), 0

    def _advertised_host(self, bound: str) -> str:
        address = self._options.bundle_address
        if address:
            return address.rpartition(":")[0] if ":" in address else address
        return bound

    def _close_server(self) -> None:
        if self._bundle_server is not None:
            self._bundle_server.close()
            self._bundle_server = None

    # ---- scheduler callbacks (the driver's thread) ----------------------------------------------

    def _registered(self, framework_id: str) -> None:
        with self._lock:
            self._framework_id = framework_id
        self._record.write(framework_id)
        logger.info("registered with the Mesos master at %s as framework %s",
                    self._options.endpoint, framework_id)

    def _offers(self, driver: Any, offers: list[Any]) -> None:
        with self._lock:
            usable = []
            for offer in offers:
                agent_id = str(offer["agent_id"]["value"])
                self._hostnames[agent_id] = str(offer.get("hostname") or agent_id)
                self._health.offered(agent_id, self._hostnames[agent_id], offer_address(offer))
                if not any(j.agent_id == agent_id for j in self._jobs.values()):
                    self._agents[agent_id] = offer_capacity(offer)  # an idle agent: all of it
                if self._health.is_set_aside(agent_id):
                    driver.declineOffer([offer["id"]], {"refuse_seconds": _DECLINE_IDLE_SECONDS})
                elif self._hostnames[agent_id] in self._ignored:
                    driver.declineOffer([offer["id"]], {"refuse_seconds": _DECLINE_BUSY_SECONDS})
                else:
                    usable.append(offer)
            queued = [self._jobs[i].request for i in self._queued]
            placement = place_jobs(usable, queued)
            unused = list(placement.unused)
            for index, jobs in placement.launches.items():
                jobs = self._within_allowance(usable[index], jobs)
                if jobs:
                    self._launch(driver, usable[index], jobs)
                else:
                    unused.append(index)
            idle = not self._queued
            for index in unused:
                driver.declineOffer(
                    [usable[index]["id"]],
                    {"refuse_seconds": _DECLINE_IDLE_SECONDS if idle else _DECLINE_BUSY_SECONDS},
                )
            for job in placement.unplaced:
                reason = self._never_fits(job)
                if reason is not None:
                    self._queued.remove(job.job_id)
                    self._report(self._jobs[job.job_id], EXIT_STATUS_UNAVAILABLE_VALUE,
                                 BatchJobExitReason.ERROR, reason)
            if not self._queued and not self._suppressed:
                self._suppressed = True
                driver.suppressOffers()

    def _launch(self, driver: Any, offer: Any, jobs: Sequence[JobRequest]) -> None:
        deployment = self._deployment or _Deployment(None, None, None)
        executor = executor_info(
            executor_id=executor_id_for(self._run_id, deployment.sha256),
            framework_id=self._framework_id,
            command=shlex.split(self._options.executor),
            bundle_url=deployment.url,
            bundle_sha256=deployment.sha256,
            environment={"PYTHONUNBUFFERED": "1"},
        )
        tasks = []
        for request in jobs:
            job = self._jobs[request.job_id]
            attempt = self._health.attempt(job.job_id)
            task_id = f"toil-{self._run_id}-{job.job_id}" + (f"-{attempt}" if attempt else "")
            spec = TaskSpec(
                job_id=job.job_id,
                command=job.command,
                environment=job.environment,
                bundle_sha256=deployment.sha256,
                python="{}.{}".format(*sys.version_info[:2]),
                toil=_installed_toil(),
                cleanup=dict(self.workerCleanupInfo._asdict()),
                appliance=self._appliance,
            )
            tasks.append(task_info(job=request, name=job.name, task_id=task_id, offer=offer,
                                   executor=executor, spec=spec))
            job.task_id = task_id
            job.agent_id = str(offer["agent_id"]["value"])
            job.hostname = str(offer.get("hostname") or job.agent_id)
            self._tasks[task_id] = job.job_id
            self._queued.remove(job.job_id)
        driver.launchTasks([offer["id"]], tasks)
        logger.debug("launched %d tasks on %s", len(tasks), offer.get("hostname"))

    def _status(self, status: Any) -> None:
        task_id = str(status["task_id"]["value"])
        state = str(status.get("state"))
        with self._lock:
            if state in _TERMINAL and task_id in self._killing:
                self._killing.discard(task_id)
                self._ended.notify_all()
            job_id = self._tasks.get(task_id)
            job = self._jobs.get(job_id) if job_id is not None else None
            if job is None:
                return
            if state == "TASK_RUNNING" and job.started is None:
                job.started = time.monotonic()
                self._latencies.append(job.started - job.issued)
                self._health.started(str(job.agent_id))
            if state not in _TERMINAL:
                return
            if job.started is None and self._start_failed(job, status):
                return  # it never ran: back in the queue, Toil is not charged a retry
            if job.started is not None:
                self._health.ended(str(job.agent_id),
                                   executor_died=str(status.get("reason")) in EXECUTOR_ENDED)
            exit_status, reason = exit_of(status)
            message = str(status.get("message") or "")
            if self._is_fetch_failure(status):
                url = self._deployment.url if self._deployment else None
                server = url.split("/bundles/")[0] if url else "this leader"
                self._fatal = BundleError(
                    f"the agent on {job.hostname} could not fetch the workflow's code from "
                    f"{server}: {message}. Set --mesosBundleAddress (or "
                    "TOIL_MESOS_BUNDLE_ADDRESS) to an address and port of this leader that the "
                    "agents can reach."
                )
                self._updates.put(UpdatedBatchJobInfo(
                    jobID=job.job_id, exitStatus=EXIT_STATUS_UNAVAILABLE_VALUE,
                    exitReason=BatchJobExitReason.ERROR, wallTime=None, backing_id=task_id))
                del self._jobs[job.job_id]
                return
            if reason is not BatchJobExitReason.FINISHED:
                logger.warning("job %d (%s) ended as %s on %s: %s", job.job_id, job.name, state,
                               job.hostname, explain_end(status))
            self._report(job, exit_status, reason, None)

    def _framework_message(self, agent_id: str, data: str) -> None:
        report = NodeReport.decode(data)
        if report is None:
            logger.debug("ignoring a framework message from agent %s", agent_id)
            return
        with self._lock:
            self._node_reports[agent_id] = report
            self._hostnames.setdefault(agent_id, report.hostname)

    def _agent_lost(self, agent_id: str) -> None:
        with self._lock:
            self._agents.pop(agent_id, None)
            self._node_reports.pop(agent_id, None)
            label = self._health.label(agent_id)
            if self._health.lost(agent_id):
                logger.warning("agent %s, set aside, was lost: it is tried again if it comes "
                               "back", label)
            for job in [j for j in self._jobs.values() if j.agent_id == agent_id]:
                self._report(job, EXIT_STATUS_UNAVAILABLE_VALUE, BatchJobExitReason.LOST,
                             f"agent lost: {label} was lost")

    def _driver_error(self, message: str) -> None:
        with self._lock:
            self._fatal = MesosError(f"the Mesos master refused the framework: {message}")
        self._updates.put_nowait(None)

    # ---- helpers (caller holds the lock) ---------------------------------------------------------

    def _report(self, job: _Job, exit_status: int, reason: BatchJobExitReason,
                message: str | None) -> None:
        """Report a job's end to Toil: exactly once, because it leaves the table here."""
        if self._jobs.pop(job.job_id, None) is None:
            return
        if job.job_id in self._queued:
            self._queued.remove(job.job_id)
        if message:
            logger.error("job %d (%s): %s", job.job_id, job.name, message)
        wall = time.monotonic() - job.started if job.started else None
        self._updates.put(UpdatedBatchJobInfo(jobID=job.job_id, exitStatus=exit_status,
                                              exitReason=reason, wallTime=wall,
                                              backing_id=job.task_id))

    def _within_allowance(self, offer: Any, jobs: Sequence[JobRequest]) -> Sequence[JobRequest]:
        """The jobs an agent on probation may get now (one at a time after a failed start, none
        while the failure is read from its sandbox)."""
        agent_id = str(offer["agent_id"]["value"])
        if self._diagnostics.pending(agent_id):
            return ()
        in_flight = sum(1 for j in self._jobs.values() if j.agent_id == agent_id)
        allowance = self._health.allowance(agent_id, in_flight)
        return jobs if allowance is None else jobs[:allowance]

    def _start_failed(self, job: _Job, status: Any) -> bool:
        """A task that ended before it ran because its executor did not start or ended.

        The agent's sandbox is read (off this thread) to say why, the failure counts against
        the agent, and the job goes back to the queue: it never ran, so Toil is not charged a
        retry. Returns False when this is not such an end, or the job went back too often.
        """
        reason = str(status.get("reason") or "")
        launch_failed = (reason == "REASON_CONTAINER_LAUNCH_FAILED"
                         and not self._is_fetch_failure(status))
        if (reason not in EXECUTOR_ENDED and not launch_failed) or job.agent_id is None:
            return False
        agent_id = job.agent_id
        executor = status.get("executor_id")
        executor_id = (str(executor["value"]) if isinstance(executor, dict) and "value" in executor
                       else executor_id_for(self._run_id, self._deployment.sha256
                                            if self._deployment else None))
        outcome = self._health.start_failed(agent_id)
        if outcome in (StartFailure.COUNTED, StartFailure.SET_ASIDE):  # not a crash: explain it
            self._diagnostics.request(FailedExecutor(
                agent_id=agent_id, hostname=job.hostname or agent_id,
                address=self._health.address(agent_id), framework_id=self._framework_id or "",
                executor_id=executor_id))
        if outcome is StartFailure.SET_ASIDE:
            logger.error(
                "agent %s is set aside: this workflow's executor failed to start there %d "
                "times (%s); it gets no more tasks of this workflow unless it re-registers",
                self._health.label(agent_id), MAX_START_FAILURES,
                self._diagnostics.summary(agent_id) or "why is being read from its sandbox")
            if self._health.all_set_aside():
                self._updates.put_nowait(None)  # wake Toil's thread: _check_fatal stops it
        if not self._health.may_requeue(job.job_id):
            return False
        if job.task_id is not None:
            self._tasks.pop(job.task_id, None)
        job.task_id = job.agent_id = job.hostname = None
        self._queued.append(job.job_id)
        if self._suppressed:
            self._suppressed = False
            self._driver.reviveOffers()
        logger.info("job %d (%s) goes back to the queue: the executor on %s ended before it "
                    "ran (%s: %s)", job.job_id, job.name, self._health.label(agent_id),
                    reason, status.get("message") or "no message")
        return True

    def _stranded_error(self) -> MesosError:
        """Every agent is set aside: the error that stops the workflow, with each one's reason."""
        with self._lock:
            agents = self._health.set_aside()
            labels = {agent_id: self._health.label(agent_id) for agent_id in agents}
        diagnoses = self._diagnostics.wait(agents, _DIAGNOSIS_WAIT_SECONDS)
        return MesosError(all_set_aside_message(agents, diagnoses, labels))

    def _never_fits(self, job: JobRequest) -> str | None:
        if not self._agents or could_ever_fit(job, self._agents.values()):
            return None
        return (f"job {job.job_id} needs {job.cores} cores, {job.memory} bytes of memory and "
                f"{job.disk} bytes of disk, which no agent of this cluster has")

    def _is_fetch_failure(self, status: Any) -> bool:
        return (str(status.get("reason")) == "REASON_CONTAINER_LAUNCH_FAILED"
                and "fetch" in str(status.get("message") or "").lower())

    def _check_fatal(self) -> None:
        with self._lock:
            fatal = self._fatal
            stranded = fatal is None and self._health.all_set_aside()
        if stranded:
            stop = self._stranded_error()  # waits for the diagnoses, so not under the lock
            with self._lock:
                self._fatal = fatal = self._fatal or stop
        if fatal is not None:
            raise fatal


class _Callbacks(Scheduler):
    """The Mesos scheduler callbacks, forwarded to the batch system."""

    def __init__(self, batch_system: MesosBatchSystem) -> None:
        self._batch_system = batch_system

    def registered(self, driver: Any, frameworkId: Any, masterInfo: Any) -> None:
        self._batch_system._registered(str(frameworkId["value"]))

    def reregistered(self, driver: Any, masterInfo: Any) -> None:
        logger.info("re-registered with the Mesos master")

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        self._batch_system._offers(driver, offers)

    def statusUpdate(self, driver: Any, update: Any) -> None:
        self._batch_system._status(update)

    def frameworkMessage(self, driver: Any, executorId: Any, agentId: Any,
                         message: str) -> None:
        self._batch_system._framework_message(str(agentId["value"]), message)

    def agentLost(self, driver: Any, agentId: Any) -> None:
        self._batch_system._agent_lost(str(agentId["value"]))

    def executorLost(self, driver: Any, executorId: Any, agentId: Any,
                     status: int | None) -> None:
        if agentId is not None:
            self._batch_system._diagnostics.exited(str(agentId["value"]), status)

    def error(self, driver: Any, message: str) -> None:
        logger.error("Mesos error: %s", message)
        self._batch_system._driver_error(message)


def _module_name_of(job_desc: Any) -> str | None:
    """The name of the user module a job was defined in (None for Toil's own and bodiless)."""
    has_body = getattr(job_desc, "has_body", None)
    if has_body is None or not has_body():
        return None
    name = str(job_desc.get_body()[1].name)
    return None if name == "toil" or name.startswith("toil.") else name


def _module_of(job_desc: Any) -> UserModule | None:
    """The user module a job was defined in, from Toil's record of it (None for Toil's own)."""
    has_body = getattr(job_desc, "has_body", None)
    if has_body is None or not has_body():
        return None
    descriptor = job_desc.get_body()[1]
    name = str(descriptor.name)
    if name == "toil" or name.startswith("toil."):
        return None
    base = Path(descriptor.dirPath).joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            mode = "module" if "." in name else "script"
            return UserModule(name, candidate, mode)  # type: ignore[arg-type]
    return None


def _route_to(endpoint: str) -> str:
    """This host's address on its route to the master (no packet is sent)."""
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host or endpoint, int(port or 5050)))
            return str(probe.getsockname()[0])
    except OSError as exc:
        raise BundleError(
            f"cannot find this leader's address on its route to the Mesos master {endpoint!r} "
            f"({exc.strerror or exc}); check --mesosEndpoint, or set --mesosBundleAddress"
        ) from None


class LeaderTerminated(SystemExit):
    """SIGTERM reached the leader: unwind so Toil's ``finally`` calls shutdown() (TEARDOWN)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise LeaderTerminated(128 + signum)


def _end_on_sigterm() -> Any:
    """On SIGTERM, unwind the leader instead of dying at once, so the framework is torn down
    and its tasks stop now rather than when the failover timeout expires.

    Only from the main thread and only over the default action: a handler someone else
    installed is theirs. Returns what to restore in shutdown().
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    signal.signal(signal.SIGTERM, _raise_terminated)
    return signal.SIG_DFL


def _restore_sigterm(previous: Any) -> None:
    if (
        previous is not None
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is _raise_terminated
    ):
        signal.signal(signal.SIGTERM, previous)


def _default_bundle_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "toil-mesos" / "builds"


def _truthy(value: Any) -> bool:
    """Toil keeps ``--disableAutoDeployment VALUE`` as a raw string, so parse it here."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _installed_toil() -> str | None:
    try:
        return metadata.version("toil")
    except metadata.PackageNotFoundError:
        return None


class _DropToilsAutoDeploymentWarning(logging.Filter):
    """Toil warns that a batch system without auto-deployment needs the code on every worker;
    with toil-mesos that is false (we ship it, and log what), so that one line is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Batch system does not support auto-deployment")


_FILTER = _DropToilsAutoDeploymentWarning()


def _hide_toils_auto_deployment_warning() -> None:
    common = logging.getLogger("toil.common")
    if _FILTER not in common.filters:
        common.addFilter(_FILTER)

