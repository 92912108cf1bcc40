"""What the master asks of the agent's tasks: RUN_TASK, KILL_TASK, MESSAGE, SHUTDOWN_*.

A task goes to its executor (a new container for a new executor, the agent's own command
executor for a command task): straight to a subscribed executor as LAUNCH, otherwise queued
until the executor subscribes. A task for an executor that is terminating is lost (dropped for
partition-aware frameworks), and a queued task killed before delivery ends TASK_KILLED, as the
recorded agent reported them.
"""

from __future__ import annotations

import copy
import logging

from toil_mesos.cluster._agent_executors import Executors
from toil_mesos.cluster._agent_model import (
    JSON,
    LOGGER_NAME,
    AgentCore,
    ExecutorPhase,
    FrameworkRecord,
    TaskRecord,
    normalise_executor_info,
)
from toil_mesos.cluster._agent_updates import StatusUpdates
from toil_mesos.cluster._executors import command_executor_info
from toil_mesos.mesos._gpu_devices import task_gpus, with_devices

__all__ = ["TaskEvents"]

logger = logging.getLogger(LOGGER_NAME)


class TaskEvents:
    """The master's task and executor events, applied to the agent's executors."""

    def __init__(self, core: AgentCore, executors: Executors, updates: StatusUpdates) -> None:
        self._core = core
        self._executors = executors
        self._updates = updates

    def on_run_task(self, body: JSON) -> None:
        core = self._core
        framework_id = str(body["framework_id"]["value"])
        framework_info = dict(body.get("framework_info", {}))
        framework_info.setdefault("id", {"value": framework_id})
        task = copy.deepcopy(body["task"])
        with core.cond:
            task = self._with_gpu_devices(task)
            framework = core.frameworks.get(framework_id)
            if framework is None:
                framework = FrameworkRecord(framework_id=framework_id, info=framework_info)
                core.frameworks[framework_id] = framework
            else:
                framework.info = framework_info
            if "executor" in task:
                info = normalise_executor_info(task["executor"], framework_id)
                task["executor"] = info
            else:
                info = command_executor_info(task, framework_id=framework_id)
            executor_id = str(info["executor_id"]["value"])
            executor = framework.executors.get(executor_id)
            record = TaskRecord(info=task)
            if executor is not None and executor.phase in (
                ExecutorPhase.TERMINATING,
                ExecutorPhase.TERMINATED,
            ):
                partition_aware = any(
                    c.get("type") == "PARTITION_AWARE"
                    for c in framework.info.get("capabilities", [])
                )
                executor.completed.append(record)
                self._updates.agent_update(
                    executor,
                    record,
                    state="TASK_DROPPED" if partition_aware else "TASK_LOST",
                    reason="REASON_EXECUTOR_TERMINATED",
                    message="Executor terminating",
                )
                return
            if executor is None:
                executor = self._executors.new(framework_id, executor_id, info)
                executor.for_command_task = "executor" not in task
                framework.executors[executor_id] = executor
                executor.queued[record.task_id] = record
                self._executors.launch(executor)
            elif executor.phase is ExecutorPhase.RUNNING and executor.stream is not None:
                executor.launched[record.task_id] = record
                executor.stream.send({"type": "LAUNCH", "launch": {"task": task}})
            else:
                executor.queued[record.task_id] = record
            core.checkpoint(executor)
            logger.info(
                "task %s of framework %s goes to executor %s (%s)",
                record.task_id,
                framework_id,
                executor_id,
                executor.phase.value,
            )

    def _with_gpu_devices(self, task: JSON) -> JSON:
        """The task, naming the GPU devices it gets here if it asks for ``gpus``.

        Freed when its terminal status update is taken (``StatusUpdates``).
        """
        count = task_gpus(task)
        if not count:
            return task
        devices = self._core.gpus.assign(str(task["task_id"]["value"]), count)
        return task if devices is None else with_devices(task, devices)

    def on_kill_task(self, body: JSON) -> None:
        core = self._core
        framework_id = str(body["framework_id"]["value"])
        task_id = str(body["task_id"]["value"])
        with core.cond:
            framework = core.frameworks.get(framework_id)
            executors = [] if framework is None else list(framework.executors.values())
            for executor in executors:
                if task_id in executor.queued:
                    task = executor.queued.pop(task_id)
                    executor.completed.append(task)
                    self._updates.agent_update(
                        executor,
                        task,
                        state="TASK_KILLED",
                        reason="REASON_TASK_KILLED_DURING_LAUNCH",
                        message="Killed before delivery to the executor",
                    )
                    if not executor.queued and not executor.launched:
                        self._executors.shut_down(executor)
                    return
                if task_id in executor.launched:
                    if executor.stream is not None:
                        kill = {"type": "KILL", "kill": {"task_id": {"value": task_id}}}
                        executor.stream.send(kill)
                    return
        logger.warning("asked to kill unknown task %s of framework %s", task_id, framework_id)

    def on_framework_message(self, body: JSON) -> None:
        core = self._core
        framework_id = str(body["framework_id"]["value"])
        executor_id = str(body["executor_id"]["value"])
        with core.cond:
            executor = core.live_executor(framework_id, executor_id)
            if executor is None or executor.stream is None:
                logger.warning(
                    "dropping a message for executor %s: it is not subscribed", executor_id
                )
                return
            executor.stream.send({"type": "MESSAGE", "message": {"data": body.get("data", "")}})

    def on_shutdown_framework(self, body: JSON) -> None:
        core = self._core
        framework_id = str(body["framework_id"]["value"])
        with core.cond:
            framework = core.frameworks.get(framework_id)
            if framework is None:
                return
            logger.info("shutting down framework %s", framework_id)
            framework.shutting_down = True
            core.updates.forget_framework(framework_id)
            for executor in list(framework.executors.values()):
                self._executors.shut_down(executor)
            core.maybe_complete_framework(framework)

    def on_shutdown_executor(self, body: JSON) -> None:
        core = self._core
        framework_id = str(body["framework_id"]["value"])
        executor_id = str(body["executor_id"]["value"])
        with core.cond:
            executor = core.live_executor(framework_id, executor_id)
            if executor is not None:
                self._executors.shut_down(executor)
