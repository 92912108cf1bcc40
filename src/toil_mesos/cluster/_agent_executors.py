"""Executor containers: sandbox, fetcher, process, timers, shutdown and death.

Each executor gets an ``executor-<id>`` thread that makes its sandbox, runs the fetcher,
starts the process in a session of its own and waits for it; the timer thread calls
:meth:`Executors.timers` for registration timeouts and kill deadlines (SIGTERM, then SIGKILL
after :data:`KILL_ESCALATION_SECONDS`). When an executor dies its unfinished tasks fail, and the
master hears EXECUTOR_EXITED (not for the agent's own command executors, as in Mesos).
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from typing import Final

from toil_mesos.cluster._agent_config import AgentConfig
from toil_mesos.cluster._agent_model import (
    JSON,
    LOGGER_NAME,
    AgentCore,
    ExecutorPhase,
    ExecutorRecord,
)
from toil_mesos.cluster._agent_updates import StatusUpdates
from toil_mesos.cluster._executors import (
    ExecutorProcess,
    executor_environment,
    format_duration,
    make_sandbox,
    process_start_time,
    sandbox_path,
)
from toil_mesos.cluster._fetcher import Fetcher, FetchError
from toil_mesos.cluster._status_updates import TERMINAL_STATES

__all__ = ["KILL_ESCALATION_SECONDS", "Executors"]

logger = logging.getLogger(LOGGER_NAME)

#: Between SIGTERM and SIGKILL when the agent stops an executor's session.
KILL_ESCALATION_SECONDS: Final = 2.0
_LAUNCH_FAILED: Final = "REASON_CONTAINER_LAUNCH_FAILED"


class Executors:
    """Starts, watches, times and stops executor containers."""

    def __init__(self, core: AgentCore, fetcher: Fetcher, updates: StatusUpdates) -> None:
        self._core = core
        self._fetcher = fetcher
        self._updates = updates

    def new(self, framework_id: str, executor_id: str, info: JSON) -> ExecutorRecord:
        """A new container for *executor_id* (not started: see :meth:`launch`)."""
        core = self._core
        assert core.agent_id is not None
        container_id = str(uuid.uuid4())
        sandbox = sandbox_path(
            core.config.work_dir,
            agent_id=core.agent_id,
            framework_id=framework_id,
            executor_id=executor_id,
            container_id=container_id,
        )
        executor = ExecutorRecord(
            framework_id=framework_id,
            executor_id=executor_id,
            container_id=container_id,
            info=info,
            sandbox=sandbox,
        )
        core.latest_run[(framework_id, executor_id)] = executor
        return executor

    def launch(self, executor: ExecutorRecord) -> None:
        """Start the executor's thread: sandbox, fetcher, process."""
        name = f"executor-{executor.executor_id}"
        executor.thread = self._core.spawn(name, lambda: self._run(executor))

    def _run(self, executor: ExecutorRecord) -> None:
        """Sandbox, fetcher, process; then wait for the process and report its death."""
        try:
            make_sandbox(executor.sandbox)
        except OSError as exc:
            message = f"Failed to launch container: Failed to create the sandbox: {exc}"
            self.terminated(executor, status=256, reason=_LAUNCH_FAILED, message=message)
            return
        uris = list(executor.info.get("command", {}).get("uris", []))
        with open(executor.sandbox / "stderr", "a", encoding="utf-8") as log:
            try:
                self._fetcher.fetch(
                    uris,
                    sandbox=executor.sandbox,
                    container_id=executor.container_id,
                    log=log,
                    cancelled=executor.cancel_fetch,
                )
            except FetchError as exc:
                message = f"Failed to launch container: {exc}"
                self.terminated(executor, status=256, reason=_LAUNCH_FAILED, message=message)
                return
        process = self._start_process(executor)
        if process is None:
            return
        status: int | None = None
        while status is None:
            status = process.wait(timeout=0.5)
        logger.info("executor %s exited with wait status %d", executor.executor_id, status)
        self.terminated(executor, status=status)

    def watch(self, executor: ExecutorRecord) -> None:
        """Wait, on a thread of its own, for a recovered executor's process to end.

        It is not the agent's child: its exit status is unknown, and the master hears none.
        """
        process = executor.process
        assert process is not None

        def run() -> None:
            while process.wait(timeout=0.5) is None:
                pass
            logger.info("recovered executor %s (pid %d) ended", executor.executor_id, process.pid)
            self.terminated(executor, status=None)

        executor.thread = self._core.spawn(f"executor-{executor.executor_id}", run)

    def _start_process(self, executor: ExecutorRecord) -> ExecutorProcess | None:
        """Start the executor's process and checkpoint it (lock taken here)."""
        core = self._core
        config = core.config
        with core.cond:
            if executor.phase is not ExecutorPhase.LAUNCHING or core.stopping.is_set():
                message = "Failed to launch container: Container destroyed while fetching"
                self.terminated(
                    executor, status=int(signal.SIGKILL), reason=_LAUNCH_FAILED, message=message
                )
                return None
            assert core.agent_id is not None
            framework = core.frameworks.get(executor.framework_id)
            checkpoint = framework is not None and framework.info.get("checkpoint") is True
            env = executor_environment(
                executor_id=executor.executor_id,
                framework_id=executor.framework_id,
                agent_id=core.agent_id,
                agent_address=core.address,
                sandbox=executor.sandbox,
                shutdown_grace_period=config.executor_shutdown_grace_period,
                command=executor.info.get("command", {}),
                variables=config.executor_environment_variables,
                recovery=(
                    (config.recovery_timeout, _backoff_max(config))
                    if checkpoint
                    else None
                ),
            )
            try:
                process = ExecutorProcess.start(
                    command=str(executor.info.get("command", {}).get("value", "")),
                    env=env,
                    sandbox=executor.sandbox,
                )
            except OSError as exc:
                message = f"Failed to launch container: {exc}"
                self.terminated(executor, status=256, reason=_LAUNCH_FAILED, message=message)
                return None
            executor.process = process
            executor.start_time = process_start_time(process.pid)
            executor.phase = ExecutorPhase.REGISTERING
            executor.registration_deadline = core.clock() + config.executor_registration_timeout
            core.checkpoint(executor)
            core.cond.notify_all()
            logger.info(
                "started executor %s (pid %d) in %s",
                executor.executor_id,
                process.pid,
                executor.sandbox,
            )
            return process

    def terminated(
        self,
        executor: ExecutorRecord,
        *,
        status: int | None,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """The executor is gone: its unfinished tasks fail (or are lost, for an executor that
        did not survive the agent's restart) and the master hears of it (*status* is the raw
        wait status, ``None`` when unknown)."""
        core = self._core
        with core.cond:
            if executor.phase is ExecutorPhase.TERMINATED:
                return
            executor.phase = ExecutorPhase.TERMINATED
            executor.recovering = False
            executor.registration_deadline = executor.kill_at = executor.sigkill_at = None
            core.store.remove(executor.container_id)
            if executor.stream is not None:
                executor.stream.close()
            framework = core.frameworks.get(executor.framework_id)
            report = not core.stopping.is_set() and (
                framework is not None and not framework.shutting_down
            )
            # Like Mesos, no ExitedExecutorMessage for the executors the agent made itself for
            # command tasks (the recorded command task T6 brought the scheduler no FAILURE).
            if report and not executor.for_command_task:
                exited: JSON = {
                    "framework_id": {"value": executor.framework_id},
                    "executor_id": {"value": executor.executor_id},
                }
                if status is not None:
                    exited["status"] = status
                core.call_master("EXECUTOR_EXITED", **exited)
            reason = reason or executor.termination_reason or "REASON_EXECUTOR_TERMINATED"
            message = message or executor.termination_message or "Executor terminated"
            for task in list(executor.launched.values()) + list(executor.queued.values()):
                if report and task.state not in TERMINAL_STATES:
                    state = executor.termination_state or "TASK_FAILED"
                    self._updates.agent_update(
                        executor, task, state=state, reason=reason, message=message
                    )
                executor.completed.append(task)
            executor.launched.clear()
            executor.queued.clear()
            if framework is not None:
                if framework.executors.get(executor.executor_id) is executor:
                    del framework.executors[executor.executor_id]
                framework.completed_executors.append(executor)
                core.maybe_complete_framework(framework)
            core.cond.notify_all()

    # -- stopping -----------------------------------------------------------------------------

    def shut_down(self, executor: ExecutorRecord) -> None:
        """SHUTDOWN to a subscribed executor and a kill after the grace period; others die now."""
        if executor.phase in (ExecutorPhase.TERMINATING, ExecutorPhase.TERMINATED):
            return
        core = self._core
        now = core.clock()
        if executor.phase is ExecutorPhase.RUNNING and executor.stream is not None:
            logger.info("sending SHUTDOWN to executor %s", executor.executor_id)
            executor.stream.send({"type": "SHUTDOWN"})
            executor.kill_at = now + core.config.executor_shutdown_grace_period
        else:
            executor.kill_at = now
            executor.cancel_fetch.set()
        executor.phase = ExecutorPhase.TERMINATING
        core.cond.notify_all()

    def timers(self, executor: ExecutorRecord, now: float) -> None:
        """Registration timeout and kill deadlines (timer thread, lock held)."""
        if (
            executor.phase is ExecutorPhase.REGISTERING
            and executor.registration_deadline is not None
            and executor.registration_deadline <= now
        ):
            executor.registration_deadline = None
            config = self._core.config
            if executor.recovering:
                timeout = config.executor_reregistration_timeout
                executor.termination_reason = "REASON_EXECUTOR_REREGISTRATION_TIMEOUT"
                executor.termination_message = (
                    f"Executor did not reregister within {format_duration(timeout)}"
                )
            else:
                timeout = config.executor_registration_timeout
                executor.termination_reason = "REASON_EXECUTOR_REGISTRATION_TIMEOUT"
                executor.termination_message = (
                    f"Executor did not register within {format_duration(timeout)}"
                )
            logger.warning(
                "executor %s did not subscribe within %.1f s; killing it",
                executor.executor_id,
                timeout,
            )
            executor.phase = ExecutorPhase.TERMINATING
            executor.kill_at = now
        if executor.kill_at is not None and executor.kill_at <= now:
            executor.kill_at = None
            if executor.process is not None:
                logger.info("sending SIGTERM to executor %s", executor.executor_id)
                executor.process.signal(signal.SIGTERM)
                executor.sigkill_at = now + KILL_ESCALATION_SECONDS
            else:
                executor.cancel_fetch.set()
        if executor.sigkill_at is not None and executor.sigkill_at <= now:
            executor.sigkill_at = None
            if executor.process is not None:
                logger.warning("sending SIGKILL to executor %s", executor.executor_id)
                executor.process.signal(signal.SIGKILL)

    def stop_all(self) -> None:
        """The agent stops: every executor gets SHUTDOWN, its grace period, SIGTERM, SIGKILL."""
        core = self._core
        grace = core.config.executor_shutdown_grace_period
        with core.cond:
            executors = core.executors()
            for executor in executors:
                executor.cancel_fetch.set()
                if executor.stream is not None and executor.phase is ExecutorPhase.RUNNING:
                    executor.stream.send({"type": "SHUTDOWN"})
                elif executor.process is not None:
                    executor.process.signal(signal.SIGTERM)
                executor.phase = ExecutorPhase.TERMINATING
            core.cond.notify_all()
        _wait_processes(executors, grace)
        for sig, wait in ((signal.SIGTERM, KILL_ESCALATION_SECONDS), (signal.SIGKILL, 2.0)):
            alive = [e for e in executors if e.process is not None and e.process.poll() is None]
            for executor in alive:
                assert executor.process is not None
                logger.warning("sending %s to executor %s", sig.name, executor.executor_id)
                executor.process.signal(sig)
            _wait_processes(alive, wait)
        for executor in executors:
            # Sweep the session once more: children that outlived their executor.
            if executor.process is not None:
                executor.process.signal(signal.SIGKILL)
            if executor.thread is not None:
                executor.thread.join(timeout=2.0)
            if executor.stream is not None:
                executor.stream.close()
            # Stopped, not crashed: nothing is left to recover.
            core.store.remove(executor.container_id)


def _backoff_max(config: AgentConfig) -> float:
    """``MESOS_SUBSCRIPTION_BACKOFF_MAX``: executors retry often enough to re-subscribe well
    within the re-registration timeout after the agent is back (Mesos' 2 s bound at most)."""
    return min(2.0, config.executor_reregistration_timeout / 2)


def _wait_processes(executors: list[ExecutorRecord], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for executor in executors:
        if executor.process is not None:
            executor.process.wait(timeout=max(0.0, deadline - time.monotonic()))
