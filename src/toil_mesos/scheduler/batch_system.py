"""``--batchSystem=mesos``: Toil's batch system interface on the Mesos v1 scheduler API.

Toil calls :meth:`issueBatchJob` from its own thread; the Mesos driver calls our scheduler
callbacks (:mod:`~toil_mesos.scheduler._callbacks`) from the driver's thread. Both touch one
:class:`~toil_mesos.scheduler._job_table.JobTable` under its lock, and finished jobs reach Toil
through a queue, so :meth:`getUpdatedBatchJob` blocks without polling and without the lock.
Every call here costs O(1) per job or O(size of its answer), whatever the queue's length.

This batch system ships the workflow's code itself (:mod:`toil_mesos.deploy`, wired in
:mod:`~toil_mesos.scheduler._deployment`), so :meth:`supportsAutoDeployment` is False and Toil
does not zip the code into the job store again.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import queue
import secrets
import shlex
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toil.batchSystems.abstractBatchSystem import (
    EXIT_STATUS_UNAVAILABLE_VALUE,
    AbstractScalableBatchSystem,
    BatchJobExitReason,
    InsufficientSystemResources,
    NodeInfo,
    UpdatedBatchJobInfo,
)
from toil.batchSystems.cleanup_support import BatchSystemCleanupSupport

from toil_mesos.deploy._environment import PythonEnvironment
from toil_mesos.errors import MesosError
from toil_mesos.images import APPLIANCE_ENV
from toil_mesos.mesos.driver import SchedulerDriver
from toil_mesos.scheduler import options as mesos_options
from toil_mesos.scheduler._accelerators import gpus_of, refusal, unchecked_models
from toil_mesos.scheduler._agent_files import ExecutorDiagnostics
from toil_mesos.scheduler._agent_health import AgentHealth, all_set_aside_message
from toil_mesos.scheduler._callbacks import DriverCallbacks, never_fits_message
from toil_mesos.scheduler._carving import UNRESERVED
from toil_mesos.scheduler._deployment import Deployer, default_bundle_dir
from toil_mesos.scheduler._framework import FrameworkRecord, tear_down_previous
from toil_mesos.scheduler._job_table import Job, JobTable
from toil_mesos.scheduler._linked_imports import warn_about_linked_imports
from toil_mesos.scheduler._matching import JobRequest
from toil_mesos.scheduler._task_end import exit_of
from toil_mesos.scheduler._tasks import TaskBuilder

__all__ = ["LeaderTerminated", "MesosBatchSystem", "exit_of"]

logger = logging.getLogger(__name__)

_KILL_WAIT_SECONDS = 60.0
#: How long the leader waits for the agents' diagnoses before stopping a stranded workflow.
_DIAGNOSIS_WAIT_SECONDS = 10.0


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
        self._table = JobTable()
        self._deployer = Deployer(
            self._options,
            auto_deploy=not _truthy(getattr(config, "disableAutoDeployment", False)),
            bundle_dir=bundle_dir or default_bundle_dir(),
            environment=environment,
        )
        #: The appliance image agents must run, which every executor checks (None: no check).
        appliance = os.environ.get(APPLIANCE_ENV) or None
        if appliance:
            logger.info("agents must run the appliance image %s (%s)", appliance, APPLIANCE_ENV)
        # The run id names this leader run's tasks and executors apart from any other run's.
        tasks = TaskBuilder(run_id=secrets.token_hex(4),
                            executor_command=shlex.split(self._options.executor),
                            cleanup=self.workerCleanupInfo._asdict(), appliance=appliance,
                            role=self._options.role or UNRESERVED)
        self._record = FrameworkRecord(getattr(config, "jobStore", None))
        self._health = AgentHealth()
        self._diagnostics = ExecutorDiagnostics(self._options.executor)
        self._callbacks = DriverCallbacks(self._table, self._deployer, tasks,
                                          health=self._health, diagnostics=self._diagnostics,
                                          framework_id=self._options.framework_id,
                                          endpoint=self._options.endpoint,
                                          on_registered=self._record.write,
                                          role=self._options.role or UNRESERVED)
        #: The environment jobs share unless they bring their own (one copy, not one per job).
        self._shared_environment: dict[str, str] = dict(self.environment)
        #: GPU models jobs named, already warned about (Mesos cannot check them).
        self._unchecked_models: set[str] = set()
        _hide_toils_auto_deployment_warning()
        warn_about_linked_imports(config, self._options.deploy.shared_paths)
        framework: dict[str, Any] = {
            "user": self._options.user,
            "name": self._options.name,
            "failover_timeout": 300.0,
            # Agents keep this workflow's executors across their restarts (agent-recovery.md).
            "checkpoint": self._options.checkpoint,
            # RESERVATION_REFINEMENT: offers may then hold refined reservations too, in the
            # ``reservations`` format; tasks repeat the offer's fields, so either format works.
            # GPU_RESOURCES: a master offers agents with GPUs only to frameworks that say they
            # know them; jobs without GPUs keep off those agents while others have room.
            "capabilities": [{"type": "MULTI_ROLE"}, {"type": "TASK_KILLING_STATE"},
                             {"type": "RESERVATION_REFINEMENT"}, {"type": "GPU_RESOURCES"}],
            "roles": [self._options.role or UNRESERVED],
        }
        if self._options.framework_id:
            framework["id"] = {"value": self._options.framework_id}
        if self._options.credentials is not None:
            framework["principal"] = self._options.credentials.principal
        self._previous_sigterm = _end_on_sigterm()
        factory = driver_factory or functools.partial(
            SchedulerDriver, credentials=self._options.credentials, ca_cert=self._options.ca_cert
        )
        if getattr(config, "restart", False):
            previous = self._record.read()
            if previous and previous != self._options.framework_id:
                # The previous leader's tasks must end before any job is issued again.
                tear_down_previous(factory, framework, self._options.endpoint, previous)
        self._driver = factory(self._callbacks, framework, self._options.endpoint)
        try:
            self._driver.start()
        except BaseException:
            self._deployer.close()
            self._diagnostics.close()
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
        deployment = self._deployer.deploy(job_desc)
        uncovered = self._deployer.uncovered_module(job_desc, deployment)
        job_id = int(self.getNextJobID())
        accelerators = getattr(job_desc, "accelerators", None) or []
        request = JobRequest(
            job_id=job_id,
            cores=float(job_desc.cores),
            memory=int(job_desc.memory),
            disk=int(job_desc.disk),
            preemptible=bool(job_desc.preemptible),
            gpus=gpus_of(accelerators),
        )
        self._note_unchecked_models(accelerators)
        job = Job(job_id, request, command, self._environment_for(job_environment),
                  str(job_desc.jobName))
        table = self._table
        with table.lock:
            table.add(job)
            if uncovered is not None:
                table.report(job, 1, BatchJobExitReason.ERROR, uncovered)
                return job_id
            if table.queue.never_fits(request):
                table.report(job, EXIT_STATUS_UNAVAILABLE_VALUE, BatchJobExitReason.ERROR,
                             never_fits_message(request))
                return job_id
            table.enqueue(job)
            if self._callbacks.suppressed:
                self._callbacks.suppressed = False
                self._driver.reviveOffers()
        logger.debug("issued job %d (%s): %s", job_id, job.name, command)
        return job_id

    def _check_accelerator_request(self, requirer: Any) -> None:
        """Refuse, as Toil's batch systems do, accelerators Mesos can never provide.

        Called by ``check_resource_request`` at the start of :meth:`issueBatchJob`, so such a
        job stops the workflow at once with Toil's ``InsufficientSystemResources``, naming
        the job and the accelerator. GPUs are checked against the agents later, per offer.
        """
        for accelerator in requirer.accelerators:
            problem = refusal(accelerator)
            if problem is not None:
                raise InsufficientSystemResources(
                    requirer, "accelerators",
                    details=[f"The accelerator {dict(accelerator)} cannot be provided: "
                             f"{problem}."],
                )

    def _note_unchecked_models(self, accelerators: Any) -> None:
        for model in unchecked_models(accelerators):
            if model not in self._unchecked_models:
                self._unchecked_models.add(model)
                logger.warning("jobs ask for GPU model %r, which Mesos offers do not describe: "
                               "they get the GPUs of whichever agent has them free", model)

    def _environment_for(self, job_environment: Mapping[str, str] | None) -> dict[str, str]:
        if self._shared_environment != self.environment:
            self._shared_environment = dict(self.environment)  # setEnv() since the last job
        if not job_environment:
            return self._shared_environment
        return {**self._shared_environment, **job_environment}

    def killBatchJobs(self, jobIDs: list[int]) -> None:
        self.killLocalJobs(jobIDs)
        deadline = time.monotonic() + _KILL_WAIT_SECONDS
        waiting: list[str] = []
        table = self._table
        with table.lock:
            for job_id in jobIDs:
                job = table.remove(job_id)
                if job is None or job.task_id is None:
                    continue
                table.killing.add(job.task_id)
                waiting.append(job.task_id)
                self._driver.killTask({"value": job.task_id},
                                      {"value": job.agent_id} if job.agent_id else None)
            # A bounded wait for the tasks to end, so Toil may reissue without overlap.
            while any(t in table.killing for t in waiting):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning("tasks %s did not confirm their kill within %.0f s",
                                   [t for t in waiting if t in table.killing],
                                   _KILL_WAIT_SECONDS)
                    break
                table.ended.wait(remaining)

    def getIssuedBatchJobIDs(self) -> list[int]:
        with self._table.lock:
            issued = list(self._table.jobs)
        return [*issued, *self.getIssuedLocalJobIDs()]

    def getRunningBatchJobIDs(self) -> dict[int, float]:
        now = time.monotonic()
        with self._table.lock:
            running = {i: now - j.started for i, j in self._table.started.items() if j.started}
        running.update(self.getRunningLocalJobIDs())
        return running

    def getUpdatedBatchJob(self, maxWait: int) -> UpdatedBatchJobInfo | None:
        # No lock here: the queue is thread-safe, and a long offer round must not hold Toil up.
        self._check_fatal()
        local = self.getUpdatedLocalJob(0)
        if local is not None:
            return local
        try:
            update = self._table.updates.get(timeout=maxWait)
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
            self._deployer.close()
            self._diagnostics.close()
            _restore_sigterm(self._previous_sigterm)

    def _log_latencies(self) -> None:
        with self._table.lock:
            latencies = sorted(self._table.latencies)
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
        table = self._table
        with table.lock:
            nodes = {}
            for agent_id, capacity in table.agents.items():
                if preemptible is not None and capacity.preemptible != preemptible:
                    continue
                jobs = table.jobs_on(agent_id)
                report = table.node_reports.get(agent_id)
                cores = report.cores if report else capacity.millicores / 1000
                memory = report.memory if report else capacity.mem_mib * 1024 * 1024
                requested_cores = sum(j.request.cores for j in jobs)
                requested_memory = sum(j.request.memory for j in jobs)
                nodes[table.hostnames.get(agent_id, agent_id)] = NodeInfo(
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
        with self._table.lock:
            return nodeIP in self._table.on_host

    def ignoreNode(self, nodeAddress: str) -> None:
        with self._table.lock:
            self._table.ignored.add(nodeAddress)

    def unignoreNode(self, nodeAddress: str) -> None:
        with self._table.lock:
            self._table.ignored.discard(nodeAddress)

    def _check_fatal(self) -> None:
        with self._table.lock:
            fatal = self._callbacks.fatal
            stranded = fatal is None and self._health.all_set_aside()
        if stranded:
            stop = self._stranded_error()  # waits for the diagnoses, so not under the lock
            with self._table.lock:
                self._callbacks.fatal = fatal = self._callbacks.fatal or stop
        if fatal is not None:
            raise fatal

    def _stranded_error(self) -> MesosError:
        """Every agent is set aside: the error that stops the workflow, with each one's reason."""
        with self._table.lock:
            agents = self._health.set_aside()
            labels = {agent_id: self._health.label(agent_id) for agent_id in agents}
        diagnoses = self._diagnostics.wait(agents, _DIAGNOSIS_WAIT_SECONDS)
        return MesosError(all_set_aside_message(agents, diagnoses, labels))


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


def _truthy(value: Any) -> bool:
    """Toil keeps ``--disableAutoDeployment VALUE`` as a raw string, so parse it here."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


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

