"""The toil-mesos executor: one per workflow per agent, running Toil's worker for each task.

For each LAUNCH it reads the task spec (JSON, never evaluated), checks that the leader expects
the appliance image this agent runs and that the leader's Python and Toil match its own, stages
the workflow's bundle (verified, extracted once per content hash, shared by every executor on
the agent), and runs the worker command with the staged roots first on ``PYTHONPATH``. It
reports TASK_RUNNING once the worker has started, then exactly one of TASK_FINISHED,
TASK_FAILED or TASK_KILLED: each task's lifecycle is a small state machine, so no path can
report a task twice.

Staging and waiting happen on one thread per task, never on the driver's thread, so a slow
download or a long job holds back no other event.

An executor the scheduler made for one task (a GPU task: :mod:`toil_mesos.executor._lifetime`)
exits by itself once that task's terminal update is acknowledged; the others run until the
agent shuts them down.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from toil_mesos.deploy.manifest import ARCHIVE_SUFFIX
from toil_mesos.deploy.stage import StagedBundle, default_cache_dir, stage, staged_hashes
from toil_mesos.errors import BundleError, MesosError
from toil_mesos.executor._lifetime import SingleTaskLifetime, single_task
from toil_mesos.executor._supervisor import (
    WorkerExit,
    WorkerProcess,
    describe_exit,
    find_toil_worker,
    worker_command,
)
from toil_mesos.images import APPLIANCE_ENV, same_image
from toil_mesos.mesos._executor_env import parse_duration
from toil_mesos.mesos._gpu_devices import devices_of
from toil_mesos.mesos.interface import Executor
from toil_mesos.node_report import measure_node
from toil_mesos.task_spec import TaskSpec, TaskSpecError

__all__ = ["BUNDLE_ROOTS_ENV", "NODE_REPORT_ENV", "TaskPhase", "ToilExecutor", "gpu_environment",
           "status_data"]

logger = logging.getLogger(__name__)

#: The staged roots, for processes that a job starts: Toil's worker replaces ``PYTHONPATH`` with
#: the leader's value for them, but leaves variables the leader did not set alone.
BUNDLE_ROOTS_ENV = "TOIL_MESOS_BUNDLE_ROOTS"

_DEFAULT_GRACE = 5.0
#: How often an executor reports its node to the scheduler, and the variable that changes it.
NODE_REPORT_ENV = "TOIL_MESOS_NODE_REPORT_SECONDS"
_NODE_REPORT_SECONDS = 30.0
_CLEANUP_TIMEOUT = 300.0
_CLEANUP_CODE = (
    "import json, sys\n"
    "from toil.batchSystems.abstractBatchSystem import BatchSystemSupport, WorkerCleanupInfo\n"
    "BatchSystemSupport.workerCleanup(WorkerCleanupInfo(**json.loads(sys.argv[1])))\n"
)


class TaskPhase(enum.Enum):
    """Where one task is; the terminal phases are reported exactly once."""

    STAGING = "staging"
    RUNNING = "running"
    FINISHED = "TASK_FINISHED"
    FAILED = "TASK_FAILED"
    KILLED = "TASK_KILLED"

    @property
    def terminal(self) -> bool:
        return self in (TaskPhase.FINISHED, TaskPhase.FAILED, TaskPhase.KILLED)


#: The only moves a task makes. A kill can come at any time before the end.
_TRANSITIONS: frozenset[tuple[TaskPhase, TaskPhase]] = frozenset(
    {
        (TaskPhase.STAGING, TaskPhase.RUNNING),
        (TaskPhase.STAGING, TaskPhase.FAILED),
        (TaskPhase.STAGING, TaskPhase.KILLED),
        (TaskPhase.RUNNING, TaskPhase.FINISHED),
        (TaskPhase.RUNNING, TaskPhase.FAILED),
        (TaskPhase.RUNNING, TaskPhase.KILLED),
    }
)


def status_data(*, exit_status: int | None, failure: str | None = None) -> str:
    """The ``TaskStatus.data`` the scheduler reads: the worker's exact exit status, as JSON.

    ``failure`` names what failed before the worker ran (``task-spec``, ``appliance``,
    ``version``, ``staging``, ``worker-start``); None when the worker ran.
    """
    document = {"exit_status": exit_status, "failure": failure}
    return base64.b64encode(json.dumps(document).encode()).decode("ascii")


@dataclass(slots=True)
class _Task:
    task_id: str
    phase: TaskPhase = TaskPhase.STAGING
    worker: WorkerProcess | None = None
    kill_requested: bool = False
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class ToilExecutor(Executor):
    """The executor's callbacks. Environment, cache and Toil's worker are injectable for tests."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        cache_dir: Path | None = None,
        toil_worker: Path | None = None,
        toil_version: str | None = None,
        appliance: str | None = None,
    ) -> None:
        # appliance: the image this agent runs; None reads TOIL_MESOS_APPLIANCE from env, and
        # an empty string means that no image is known (nothing is checked).
        self._env = dict(os.environ if env is None else env)
        self._sandbox = Path(self._env.get("MESOS_SANDBOX") or os.getcwd())
        self._cache_dir = cache_dir or default_cache_dir()
        self._toil_worker = toil_worker
        self._toil_version = toil_version if toil_version is not None else _installed_toil()
        self._python = "{}.{}".format(*sys.version_info[:2])
        self._appliance = (self._env.get(APPLIANCE_ENV) if appliance is None else appliance) or None
        grace = self._env.get("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD")
        self._grace = parse_duration(grace) if grace else _DEFAULT_GRACE
        self._tasks: dict[str, _Task] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._report_interval = float(self._env.get(NODE_REPORT_ENV) or _NODE_REPORT_SECONDS)
        self._reporter: threading.Thread | None = None
        #: Toil's cleanup info and the environment of the last worker, for the end of the node.
        self._cleanup: tuple[Mapping[str, str | None], dict[str, str]] | None = None
        #: One staged bundle per hash, kept (with its cache lease) until the executor exits.
        self._staged: dict[str, StagedBundle] = {}
        #: Set when this executor runs one task and exits after it.
        self._lifetime = SingleTaskLifetime() if single_task(self._env) else None

    # ---- callbacks (the driver's thread) -----------------------------------------------------

    def registered(self, driver: Any, executorInfo: Any, frameworkInfo: Any,
                   agentInfo: Any) -> None:
        hostname = str((agentInfo or {}).get("hostname") or socket.gethostname())
        self._reporter = threading.Thread(target=self._report_node, args=(driver, hostname),
                                          name="node-report", daemon=True)
        self._reporter.start()

    def disconnected(self, driver: Any) -> None:
        # With checkpointing the driver re-subscribes for MESOS_RECOVERY_TIMEOUT; the workers
        # keep running meanwhile, and their ends go out once the agent is back.
        with self._lock:
            running = sum(1 for t in self._tasks.values() if not t.phase.terminal)
        logger.warning("the agent went away; %d tasks keep running while the executor "
                       "re-subscribes", running)

    def reregistered(self, driver: Any, agentInfo: Any) -> None:
        # The agent is back and registered with the master: tell the scheduler at once, so it
        # reconciles this agent's tasks.
        hostname = str((agentInfo or {}).get("hostname") or socket.gethostname())
        logger.info("re-subscribed with the restarted agent on %s", hostname)
        with self._lock:
            workers = sum(1 for t in self._tasks.values() if t.phase is TaskPhase.RUNNING)
        report = measure_node(hostname, workers, appliance=self._appliance,
                              staged_bundles=staged_hashes(self._cache_dir))
        try:
            driver.sendFrameworkMessage(dataclasses.replace(report, resubscribed=True).encode())
        except MesosError as exc:
            logger.debug("cannot send the node report: %s", exc)

    def _report_node(self, driver: Any, hostname: str) -> None:
        """Tell the scheduler about this node now and then, until shutdown."""
        while not self._stopping.is_set():
            with self._lock:
                workers = sum(1 for t in self._tasks.values() if t.phase is TaskPhase.RUNNING)
            try:
                report = measure_node(hostname, workers, appliance=self._appliance,
                                      staged_bundles=staged_hashes(self._cache_dir))
                driver.sendFrameworkMessage(report.encode())
            except MesosError as exc:
                logger.debug("cannot send the node report: %s", exc)
                return
            self._stopping.wait(self._report_interval)

    def launchTask(self, driver: Any, task: Any) -> None:
        task_id = str(task["task_id"]["value"])
        record = _Task(task_id)
        with self._lock:
            if task_id in self._tasks:
                logger.error("task %s launched twice; ignoring the second launch", task_id)
                return
            self._tasks[task_id] = record
        if self._lifetime is not None:
            self._lifetime.launched(task_id)
        record.thread = threading.Thread(
            target=self._run, args=(driver, record, task), name=f"task-{task_id}", daemon=True
        )
        record.thread.start()

    def killTask(self, driver: Any, taskId: Any) -> None:
        task_id = str(taskId["value"] if isinstance(taskId, Mapping) else taskId)
        with self._lock:
            record = self._tasks.get(task_id)
        if record is None:
            logger.warning("asked to kill unknown task %s", task_id)
            return
        self._request_kill(record)

    def acknowledged(self, driver: Any, taskId: Any, uuid: str) -> None:
        task_id = str(taskId["value"] if isinstance(taskId, Mapping) else taskId)
        if self._lifetime is not None and self._lifetime.acknowledged(task_id, uuid):
            self._exit_soon(driver)

    def _exit_soon(self, driver: Any) -> None:
        """A single-task executor's task is over and the agent has its end: clean up, stop.

        Off the driver's thread: Toil's cleanup runs a process, and ``stop`` waits for the
        driver, which must keep serving the agent meanwhile.
        """
        logger.info("this executor's task has ended and the agent has its end: exiting")
        threading.Thread(target=self._exit_after_task, args=(driver,), name="exit",
                         daemon=True).start()

    def _exit_after_task(self, driver: Any) -> None:
        self._stopping.set()
        self._end_of_node_cleanup()
        driver.stop()

    def shutdown(self, driver: Any) -> None:
        """Kill every task and wait (bounded) until each has reported its end."""
        self._stopping.set()
        with self._lock:
            records = list(self._tasks.values())
        for record in records:
            self._request_kill(record)
        for record in records:
            if record.thread is not None:
                record.thread.join(timeout=self._grace + 10)
        self._end_of_node_cleanup()

    def _end_of_node_cleanup(self) -> None:
        """Run Toil's worker cleanup once no worker of this workflow is left on the node.

        A worker that was killed leaves its deferred functions behind; Toil runs them here,
        and they import the user's code, so the cleanup runs in a child process with the
        bundle first on its path (and an exception in user code cannot reach the executor).
        """
        with self._lock:
            cleanup = self._cleanup
        if cleanup is None:
            return
        info, env = cleanup
        logs = self._sandbox / "tasks"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            with (logs / "cleanup.stdout").open("ab") as out, \
                    (logs / "cleanup.stderr").open("ab") as err:
                done = subprocess.run(
                    [sys.executable, "-c", _CLEANUP_CODE, json.dumps(dict(info))],
                    env=env, cwd=logs, stdout=out, stderr=err, timeout=_CLEANUP_TIMEOUT,
                    check=False,
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.warning("Toil's end-of-node cleanup did not finish: %s", exc)
            return
        if done.returncode == 0:
            logger.info("ran Toil's end-of-node cleanup for workflow %s", info["workflow_id"])
        else:
            logger.warning("Toil's end-of-node cleanup exited with %d; see %s",
                           done.returncode, logs / "cleanup.stderr")

    # ---- one thread per task -----------------------------------------------------------------

    def _run(self, driver: Any, record: _Task, task: Any) -> None:
        try:
            self._run_task(driver, record, task)
        except Exception as exc:  # a thread's top level: report, never die silently
            logger.exception("task %s failed inside the executor", record.task_id)
            self._finish(driver, record, TaskPhase.FAILED, f"executor error: {exc}",
                         exit_status=None, failure="executor")

    def _run_task(self, driver: Any, record: _Task, task: Any) -> None:
        try:
            spec = TaskSpec.from_json(base64.b64decode(str(task.get("data") or ""),
                                                       validate=True))
        except (TaskSpecError, binascii.Error, ValueError) as exc:
            self._finish(driver, record, TaskPhase.FAILED, f"bad task data: {exc}",
                         exit_status=None, failure="task-spec")
            return
        mismatch = self._appliance_mismatch(spec)
        if mismatch:
            self._finish(driver, record, TaskPhase.FAILED, mismatch, exit_status=None,
                         failure="appliance")
            return
        mismatch = self._version_mismatch(spec)
        if mismatch:
            self._finish(driver, record, TaskPhase.FAILED, mismatch, exit_status=None,
                         failure="version")
            return
        try:
            roots = self._stage(spec)
        except BundleError as exc:
            self._finish(driver, record, TaskPhase.FAILED, f"cannot stage the bundle: {exc}",
                         exit_status=None, failure="staging")
            return
        if spec.cleanup is not None:
            with self._lock:
                self._cleanup = (spec.cleanup, self._worker_env(spec, roots, record.task_id))
        worker = self._start_worker(driver, record, spec, roots, devices_of(task))
        if worker is None:
            return
        ended = worker.wait()
        assert ended is not None  # no timeout: wait() returns only when the worker has ended
        self._report_exit(driver, record, ended)

    def _appliance_mismatch(self, spec: TaskSpec) -> str | None:
        # Checked before the versions: a different image explains any version difference, and
        # its message says which image to use.
        if not spec.appliance or not self._appliance:
            return None
        if same_image(spec.appliance, self._appliance):
            return None
        return (
            f"this agent runs the appliance image {self._appliance} but the leader expects "
            f"{spec.appliance} ({APPLIANCE_ENV} on the leader); start the agents from "
            f"{spec.appliance}, or set {APPLIANCE_ENV} on the leader to {self._appliance}"
        )

    def _version_mismatch(self, spec: TaskSpec) -> str | None:
        if spec.python != self._python:
            return (
                f"the leader runs Python {spec.python} but this agent's toil-mesos runs "
                f"Python {self._python}; use an appliance image with Python {spec.python}"
            )
        if spec.toil and self._toil_version and spec.toil != self._toil_version:
            return (
                f"the leader runs Toil {spec.toil} but this agent has Toil "
                f"{self._toil_version}; use the same Toil version on the leader and the agents"
            )
        return None

    def _stage(self, spec: TaskSpec) -> tuple[Path, ...]:
        if spec.bundle_sha256 is None:
            return ()
        archive = self._sandbox / f"{spec.bundle_sha256}{ARCHIVE_SUFFIX}"
        staged = stage(archive, spec.bundle_sha256, cache_dir=self._cache_dir)
        with self._lock:
            return self._staged.setdefault(staged.sha256, staged).roots

    def _start_worker(
        self, driver: Any, record: _Task, spec: TaskSpec, roots: tuple[Path, ...],
        gpu_devices: list[str] | None = None,
    ) -> WorkerProcess | None:
        env = self._worker_env(spec, roots, record.task_id)
        env.update(gpu_environment(gpu_devices))
        try:
            toil_worker = self._toil_worker or find_toil_worker()
        except FileNotFoundError as exc:
            self._finish(driver, record, TaskPhase.FAILED, str(exc), exit_status=None,
                         failure="worker-start")
            return None
        logs = self._sandbox / "tasks" / record.task_id
        logs.mkdir(parents=True, exist_ok=True)
        with record.lock:
            if record.kill_requested:
                self._finish_locked(driver, record, TaskPhase.KILLED, "killed before it started",
                                    exit_status=None, failure=None)
                return None
            try:
                record.worker = WorkerProcess(
                    worker_command(spec.command, toil_worker), env=env, cwd=logs,
                    stdout=logs / "stdout", stderr=logs / "stderr",
                )
            except OSError as exc:
                self._finish_locked(driver, record, TaskPhase.FAILED,
                                    f"cannot start the worker: {exc}", exit_status=None,
                                    failure="worker-start")
                return None
            self._move(record, TaskPhase.RUNNING)
            driver.sendStatusUpdate(self._status(record, "TASK_RUNNING"))
            return record.worker

    def _worker_env(self, spec: TaskSpec, roots: tuple[Path, ...], task_id: str) -> dict[str, str]:
        env = dict(self._env)
        env.update(spec.environment)
        staged = os.pathsep.join(str(r) for r in roots)
        if staged:
            existing = env.get("PYTHONPATH")
            env["PYTHONPATH"] = staged + (os.pathsep + existing if existing else "")
            env[BUNDLE_ROOTS_ENV] = staged
        # Agent-local scratch: the job store may be shared, temporary directories never are.
        scratch = self._sandbox / "toil"
        for name, sub in (("TMPDIR", "tmp"), ("TOIL_WORKDIR", "work"),
                          ("TOIL_COORDINATION_DIR", "coordination")):
            path = scratch / sub
            path.mkdir(parents=True, exist_ok=True)
            env[name] = str(path)
        env["TOIL_MESOS_TASK_ID"] = task_id
        return env

    def _report_exit(self, driver: Any, record: _Task, ended: WorkerExit) -> None:
        with record.lock:
            if record.kill_requested:
                self._finish_locked(driver, record, TaskPhase.KILLED, "killed",
                                    exit_status=ended.status, failure=None)
            elif ended.succeeded:
                self._finish_locked(driver, record, TaskPhase.FINISHED, "worker exited with 0",
                                    exit_status=0, failure=None)
            else:
                self._finish_locked(driver, record, TaskPhase.FAILED,
                                    describe_exit(ended.status, ended.stderr_tail),
                                    exit_status=ended.status, failure=None)

    def _request_kill(self, record: _Task) -> None:
        with record.lock:
            if record.phase.terminal or record.kill_requested:
                return
            record.kill_requested = True
            worker = record.worker
        if worker is not None:
            # Off the driver's thread: stopping waits up to the grace period.
            threading.Thread(target=worker.stop, args=(self._grace,),
                             name=f"kill-{record.task_id}", daemon=True).start()

    # ---- reporting ---------------------------------------------------------------------------

    def _finish(self, driver: Any, record: _Task, phase: TaskPhase, message: str, *,
                exit_status: int | None, failure: str | None) -> None:
        with record.lock:
            if record.kill_requested and not record.phase.terminal:
                phase, message = TaskPhase.KILLED, "killed"
            self._finish_locked(driver, record, phase, message, exit_status=exit_status,
                                failure=failure)

    def _finish_locked(self, driver: Any, record: _Task, phase: TaskPhase, message: str, *,
                       exit_status: int | None, failure: str | None) -> None:
        if record.phase.terminal:
            logger.debug("task %s already ended as %s", record.task_id, record.phase.value)
            return
        self._move(record, phase)
        level = logging.INFO if phase is TaskPhase.FINISHED else logging.WARNING
        logger.log(level, "task %s: %s (%s)", record.task_id, phase.value, message)
        status = self._status(record, phase.value)
        status["message"] = message
        status["data"] = status_data(exit_status=exit_status, failure=failure)
        sent = driver.sendStatusUpdate(status)
        uuid = sent.get("uuid") if isinstance(sent, Mapping) else None
        if self._lifetime is not None and uuid is not None \
                and self._lifetime.terminal_sent(record.task_id, str(uuid)):
            self._exit_soon(driver)  # the agent's ACKNOWLEDGED overtook this record

    @staticmethod
    def _move(record: _Task, phase: TaskPhase) -> None:
        if (record.phase, phase) not in _TRANSITIONS:
            raise RuntimeError(f"task {record.task_id}: {record.phase} -> {phase} is not allowed")
        record.phase = phase

    def _status(self, record: _Task, state: str) -> dict[str, Any]:
        status: dict[str, Any] = {"task_id": {"value": record.task_id}, "state": state}
        executor_id = self._env.get("MESOS_EXECUTOR_ID")
        if executor_id:
            status["executor_id"] = {"value": executor_id}
        return status


def gpu_environment(devices: list[str] | None) -> dict[str, str]:
    """What tells a worker's CUDA programs which GPUs are the task's, when the agent said so.

    ``CUDA_VISIBLE_DEVICES`` for CUDA itself, and ``SINGULARITYENV_CUDA_VISIBLE_DEVICES`` so
    that containers Toil runs through Singularity get it too (as Toil's own batch systems set
    them). Nothing when the agent named no devices: the agent's own setting then stands.

    >>> gpu_environment(["0", "2"])["CUDA_VISIBLE_DEVICES"]
    '0,2'
    >>> gpu_environment(None)
    {}
    """
    if devices is None:
        return {}
    visible = ",".join(devices)
    return {"CUDA_VISIBLE_DEVICES": visible, "SINGULARITYENV_CUDA_VISIBLE_DEVICES": visible}


def _installed_toil() -> str | None:
    try:
        return metadata.version("toil")
    except metadata.PackageNotFoundError:
        return None
