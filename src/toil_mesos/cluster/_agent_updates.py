"""The executor API and status updates: what executors say, and what reaches the master.

``POST /api/v1/executor`` calls (SUBSCRIBE, UPDATE, MESSAGE) are checked as the recorded agent
checked them (``executor-http-api.md``) and answered with an :class:`ExecutorCallResult`.
Every status update, the executors' and the ones the agent makes itself (SOURCE_AGENT), goes
through the reliable :class:`~._status_updates.StatusUpdateManager`: resent until the
framework acknowledges it, one task's updates in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from toil_mesos.cluster._agent_model import (
    JSON,
    LOGGER_NAME,
    AgentCore,
    ExecutorCallResult,
    ExecutorEventStream,
    ExecutorPhase,
    ExecutorRecord,
    FrameworkRecord,
    TaskRecord,
    new_status_uuid,
    ordered,
    value_of,
)
from toil_mesos.cluster._status_updates import TERMINAL_STATES, StreamState

__all__ = ["StatusUpdates", "validate_status"]

logger = logging.getLogger(LOGGER_NAME)

#: Fields of TaskStatus in the order Mesos 1.12 printed them (recorded UPDATE events).
_STATUS_ORDER: Final = (
    "task_id",
    "state",
    "message",
    "source",
    "reason",
    "data",
    "agent_id",
    "executor_id",
    "timestamp",
    "uuid",
    "healthy",
    "check_status",
    "labels",
    "container_status",
    "unreachable_time",
    "limitation",
)

_INVALID: Final = "Failed to validate executor::Call: "


def validate_status(status: Any) -> str | None:
    """Why an executor's TaskStatus is refused, or ``None`` (the recorded agent's checks)."""
    if not isinstance(status, dict):
        return "Expecting 'status' to be present"
    if value_of(status.get("task_id")) is None:
        return "Expecting 'task_id' to be present"
    if "state" not in status:
        return "Expecting 'state' to be present"
    if not status.get("uuid"):
        return "Expecting 'uuid' to be present"
    if status["state"] == "TASK_STAGING":
        return "Executor is not allowed to send TASK_STAGING status update"
    if status.get("source", "SOURCE_EXECUTOR") != "SOURCE_EXECUTOR":
        return "Received Status update for task with invalid source"
    return None


class StatusUpdates:
    """The executor API, and every status update on its way to the master.

    :param agent_info: ``AgentInfo`` for SUBSCRIBED (from the master link).
    """

    def __init__(self, core: AgentCore, *, agent_info: Callable[[], JSON]) -> None:
        self._core = core
        self._agent_info = agent_info

    # -- updates ------------------------------------------------------------------------------

    def agent_update(
        self, executor: ExecutorRecord, task: TaskRecord, *, state: str, reason: str, message: str
    ) -> None:
        """A status update the agent itself generates (SOURCE_AGENT), reliably delivered."""
        status: JSON = {
            "task_id": {"value": task.task_id},
            "state": state,
            "message": message,
            "source": "SOURCE_AGENT",
            "reason": reason,
            "agent_id": {"value": self._core.agent_id},
            "executor_id": {"value": executor.executor_id},
            "timestamp": self._core.wall(),
            "uuid": new_status_uuid(),
        }
        self._take(executor, task, status)

    def _take(self, executor: ExecutorRecord, task: TaskRecord | None, status: JSON) -> None:
        core = self._core
        if task is not None:
            task.state = str(status["state"])
            task.statuses.append(status)
        if status.get("state") in TERMINAL_STATES:
            # Before the master hears of the end and offers the devices again.
            core.gpus.release(str(status["task_id"]["value"]))
        update = {"framework_id": {"value": executor.framework_id}, "status": status}
        _, forwards = core.updates.update(update, now=core.clock())
        core.forward_updates(forwards)
        core.checkpoint(executor)
        core.cond.notify_all()

    def on_acknowledge(self, body: JSON) -> None:
        """The master's ACKNOWLEDGE: the next update may go; a terminal one completes its task."""
        core = self._core
        framework_id = str(body["framework_id"]["value"])
        task_id = str(body["task_id"]["value"])
        ack_uuid = str(body["uuid"])
        with core.cond:
            core.forward_updates(
                core.updates.acknowledge(framework_id, task_id, ack_uuid, now=core.clock())
            )
            framework = core.frameworks.get(framework_id)
            if framework is None:
                return
            closed = core.updates.state(framework_id, task_id) is StreamState.CLOSED
            for executor in framework.executors.values():
                task = executor.launched.get(task_id)
                if task is not None and closed:
                    # The terminal update was acknowledged: the task is complete.
                    executor.completed.append(executor.launched.pop(task_id))
                if task is not None:
                    core.checkpoint(executor)

    # -- executor API -------------------------------------------------------------------------

    def executor_call(self, call: JSON) -> ExecutorCallResult:
        """Handle one ``/api/v1/executor`` call (validation as the recorded agent did it)."""
        kind = call.get("type")
        if kind not in ("SUBSCRIBE", "UPDATE", "MESSAGE"):
            return ExecutorCallResult(status=400, error=_INVALID + "Expecting 'type' to be present")
        for name in ("executor_id", "framework_id"):
            if value_of(call.get(name)) is None:
                return ExecutorCallResult(
                    status=400, error=_INVALID + f"Expecting '{name}' to be present"
                )
        framework_id = str(value_of(call["framework_id"]))
        executor_id = str(value_of(call["executor_id"]))
        core = self._core
        with core.cond:
            framework = core.frameworks.get(framework_id)
            if framework is None:
                return ExecutorCallResult(status=400, error="Framework cannot be found")
            executor = framework.executors.get(executor_id)
            if executor is None:
                return ExecutorCallResult(status=400, error="Executor cannot be found")
            if kind == "SUBSCRIBE":
                return self._subscribe(framework, executor, call.get("subscribe", {}))
            if executor.phase not in (ExecutorPhase.RUNNING, ExecutorPhase.TERMINATING):
                return ExecutorCallResult(status=403, error="Executor is not subscribed")
            if kind == "MESSAGE":
                core.call_master(
                    "MESSAGE",
                    framework_id={"value": framework_id},
                    executor_id={"value": executor_id},
                    data=call.get("message", {}).get("data", ""),
                )
                return ExecutorCallResult(status=202)
            status = call.get("update", {}).get("status")
            problem = validate_status(status)
            if problem is not None:
                return ExecutorCallResult(status=400, error=_INVALID + problem)
            assert status is not None
            ack = self._executor_update(executor, status)
            return ExecutorCallResult(status=202, after=(ack,))

    def _executor_update(self, executor: ExecutorRecord, status: JSON) -> JSON:
        forwarded = dict(status)
        forwarded["agent_id"] = {"value": self._core.agent_id}
        forwarded.setdefault("timestamp", self._core.wall())
        container_status: JSON = {
            "container_id": {"value": executor.container_id},
            "network_infos": [
                {"ip_addresses": [{"protocol": "IPv4", "ip_address": self._core.config.host}]}
            ],
        }
        if executor.process is not None:
            container_status["executor_pid"] = executor.process.pid
        forwarded["container_status"] = container_status
        forwarded = ordered(forwarded, _STATUS_ORDER)
        task_id = str(status["task_id"]["value"])
        task = executor.find(task_id)
        if task is None:
            for done in executor.completed:
                if done.task_id == task_id:
                    task = done
        self._take(executor, task, forwarded)
        return {
            "type": "ACKNOWLEDGED",
            "acknowledged": {"task_id": {"value": task_id}, "uuid": status["uuid"]},
        }

    def _subscribe(
        self, framework: FrameworkRecord, executor: ExecutorRecord, subscribe: JSON
    ) -> ExecutorCallResult:
        if executor.phase not in (ExecutorPhase.REGISTERING, ExecutorPhase.RUNNING):
            return ExecutorCallResult(
                status=400, error=f"Executor is {executor.phase.value.lower()}"
            )
        if executor.stream is not None:
            executor.stream.close()
        stream = ExecutorEventStream()
        executor.stream = stream
        executor.phase = ExecutorPhase.RUNNING
        executor.registration_deadline = None
        if executor.recovering:
            # Back: from now on its death fails its tasks, as any executor's would.
            executor.recovering = False
            executor.termination_state = None
            logger.info("recovered executor %s re-subscribed", executor.executor_id)
        else:
            logger.info("executor %s subscribed", executor.executor_id)
        stream.send(
            {
                "type": "SUBSCRIBED",
                "subscribed": {
                    "executor_info": executor.info,
                    "framework_info": framework.info,
                    "agent_info": self._agent_info(),
                    "container_id": {"value": executor.container_id},
                },
            }
        )
        # Tasks the executor already has (it got LAUNCH before a reconnection) are not sent
        # again; updates it never saw acknowledged are taken again (duplicates are dropped).
        for task_info in subscribe.get("unacknowledged_tasks", []):
            task_id = str(task_info.get("task_id", {}).get("value", ""))
            if task_id in executor.queued:
                executor.launched[task_id] = executor.queued.pop(task_id)
        for update in subscribe.get("unacknowledged_updates", []):
            status = update.get("status")
            if validate_status(status) is None:
                assert status is not None
                stream.send(self._executor_update(executor, status))
        for task_id in list(executor.queued):
            task = executor.queued.pop(task_id)
            executor.launched[task_id] = task
            stream.send({"type": "LAUNCH", "launch": {"task": task.info}})
        self._core.checkpoint(executor)
        self._core.cond.notify_all()
        return ExecutorCallResult(status=200, stream=stream)

    def stream_ended(self, stream: ExecutorEventStream) -> None:
        """The executor's subscription connection closed."""
        with self._core.cond:
            for executor in self._core.executors():
                if executor.stream is stream:
                    executor.stream = None
                    logger.info("executor %s disconnected", executor.executor_id)
