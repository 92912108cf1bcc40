"""Agent recovery: after a restart with the same work dir, find the executors that kept running.

What Mesos does (``agent-recovery.md``), and so this agent: it rereads its checkpoint
(:mod:`._agent_checkpoint`) before registering; executors of frameworks that checkpoint and
still run are given ``--executor-reregistration-timeout`` to re-subscribe (they retry on their
own within ``MESOS_RECOVERY_TIMEOUT``), with their tasks and unacknowledged status updates as
they were; executors that died meanwhile, or do not re-subscribe in time, are shut down and
their unfinished tasks reported lost (TASK_GONE for partition-aware frameworks). Executors of
frameworks that do not checkpoint are killed. Only then does the agent register, with the same
agent id, so the master gets back every executor and task that survived.
"""

from __future__ import annotations

import logging
import os
import select
import signal

from toil_mesos.cluster._agent_checkpoint import CheckpointedExecutor
from toil_mesos.cluster._agent_executors import Executors
from toil_mesos.cluster._agent_model import (
    LOGGER_NAME,
    AgentCore,
    ExecutorPhase,
    ExecutorRecord,
    FrameworkRecord,
    TaskRecord,
)
from toil_mesos.cluster._executors import process_start_time, signal_session
from toil_mesos.cluster._status_updates import TERMINAL_STATES
from toil_mesos.mesos._gpu_devices import devices_of

__all__ = ["RecoveredProcess", "Recovery", "lost_state"]

logger = logging.getLogger(LOGGER_NAME)


class RecoveredProcess:
    """An executor started by an earlier run of the agent, found again after a restart.

    It is not this agent's child, so its exit status cannot be known: :meth:`wait` and
    :meth:`poll` return 0 once it is gone. It is signalled only while its pid still has the
    recorded start time, so a reused pid is never touched.
    """

    def __init__(self, pid: int, start_time: int) -> None:
        self._pid = pid
        self._start_time = start_time

    def __repr__(self) -> str:
        return f"<RecoveredProcess pid={self._pid} running={self.running()}>"

    @classmethod
    def find(cls, pid: int, start_time: int) -> RecoveredProcess | None:
        """The process if it still runs, else ``None``."""
        found = cls(pid, start_time)
        return found if found.running() else None

    @property
    def pid(self) -> int:
        return self._pid

    def running(self) -> bool:
        return process_start_time(self._pid) == self._start_time

    def wait(self, timeout: float | None = None) -> int | None:
        """0 once the process is gone (status unknown), ``None`` on timeout."""
        try:
            fd = os.pidfd_open(self._pid)
        except ProcessLookupError:
            return 0
        try:
            if not self.running():
                return 0
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            ready = poller.poll(None if timeout is None else max(0.0, timeout) * 1000)
            return 0 if ready else None
        finally:
            os.close(fd)

    def poll(self) -> int | None:
        return None if self.running() else 0

    def signal(self, sig: signal.Signals) -> None:
        """Signal the executor's whole session, if it is still the process recorded."""
        if self.running():
            signal_session(self._pid, sig)


def lost_state(framework_info: dict[str, object]) -> str:
    """What a task is when its executor did not survive the agent's restart."""
    capabilities = framework_info.get("capabilities")
    aware = isinstance(capabilities, list) and any(
        isinstance(c, dict) and c.get("type") == "PARTITION_AWARE" for c in capabilities
    )
    return "TASK_GONE" if aware else "TASK_LOST"


class Recovery:
    """Reads the checkpoint at start and decides what each checkpointed executor becomes."""

    def __init__(self, core: AgentCore, executors: Executors) -> None:
        self._core = core
        self._executors = executors

    def recover(self) -> None:
        """Recover the agent id and executors (before registering); a first start has none.

        Sets ``core.recovered`` at once when nothing waits for a re-subscription; otherwise
        the timer thread sets it (:meth:`check_done`).
        """
        core = self._core
        agent_id = core.store.agent_id()
        if agent_id is None:
            core.recovered.set()
            return
        with core.cond:
            core.agent_id = agent_id
            recovered = [self._recover(saved) for saved in core.store.load()]
            waiting = sum(1 for r in recovered if r is not None and r.recovering)
        logger.info(
            "recovered agent %s from %s: %d executors to wait for",
            agent_id,
            core.store.directory,
            waiting,
        )
        self.check_done()

    def check_done(self) -> None:
        """Set ``core.recovered`` once no recovered executor waits to re-subscribe."""
        core = self._core
        if core.recovered.is_set():
            return
        with core.cond:
            if any(e.recovering for e in core.executors()):
                return
        logger.info("recovery complete: registering with the master")
        core.recovered.set()

    def _recover(self, saved: CheckpointedExecutor) -> ExecutorRecord | None:
        core = self._core
        process = RecoveredProcess.find(saved.pid, saved.start_time)
        if not saved.checkpoint:
            if process is not None:
                logger.warning(
                    "killing executor %s (pid %d) of framework %s, which does not checkpoint",
                    saved.executor_id,
                    saved.pid,
                    saved.framework_id,
                )
                process.signal(signal.SIGKILL)
            core.store.remove(saved.container_id)
            return None
        framework = core.frameworks.get(saved.framework_id)
        if framework is None:
            framework = FrameworkRecord(framework_id=saved.framework_id, info=saved.framework_info)
            core.frameworks[saved.framework_id] = framework
        executor = ExecutorRecord(
            framework_id=saved.framework_id,
            executor_id=saved.executor_id,
            container_id=saved.container_id,
            info=saved.info,
            sandbox=saved.sandbox,
            phase=ExecutorPhase.REGISTERING,
            process=process,
            start_time=saved.start_time,
            for_command_task=saved.for_command_task,
            termination_state=lost_state(saved.framework_info),
        )
        now = core.clock()
        for task in saved.tasks:
            record = TaskRecord(
                info=task.info,
                state=task.state,
                statuses=[] if task.latest is None else [task.latest],
            )
            (executor.launched if task.delivered else executor.queued)[record.task_id] = record
            if record.state not in TERMINAL_STATES:
                # Its GPU devices (named in its TaskInfo) are still in use.
                core.gpus.hold(record.task_id, devices_of(record.info) or [])
            core.updates.restore(
                saved.framework_id, record.task_id, pending=task.pending, seen=task.seen, now=now
            )
        framework.executors[saved.executor_id] = executor
        core.latest_run[(saved.framework_id, saved.executor_id)] = executor
        if process is None:
            logger.warning(
                "executor %s of framework %s ended while the agent was away",
                saved.executor_id,
                saved.framework_id,
            )
            self._executors.terminated(
                executor,
                status=None,
                reason="REASON_EXECUTOR_TERMINATED",
                message="Executor did not survive the agent's restart",
            )
            return executor
        executor.recovering = True
        executor.registration_deadline = now + core.config.executor_reregistration_timeout
        self._executors.watch(executor)
        logger.info(
            "waiting for executor %s (pid %d) of framework %s to re-subscribe",
            saved.executor_id,
            saved.pid,
            saved.framework_id,
        )
        return executor
