"""Tasks and their status updates, as the master sees them.

:class:`Tasks` keeps each framework's tasks (on its :class:`FrameworkRecord`): it applies the
status updates agents forward, forwards acknowledgements back to the agent, moves a task to
the completed ones once its terminal update is acknowledged (or needs no acknowledgement),
learns the tasks of an agent that registers with a restarted master, and reports the tasks of
a lost agent TASK_LOST or TASK_UNREACHABLE. Statuses the master makes itself come from
:func:`master_status` (``SOURCE_MASTER``, no ``uuid``: nothing to acknowledge).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from toil_mesos.cluster._master_agents import Agents
from toil_mesos.cluster._master_allocation import Allocator
from toil_mesos.cluster._master_frameworks import Frameworks
from toil_mesos.cluster._master_model import (
    AgentRecord,
    FrameworkRecord,
    Output,
    Send,
    TaskRecord,
    event,
    id_of,
    update_event,
    value_of,
)
from toil_mesos.cluster._offers import ResourceBag, ResourceError

__all__ = ["Tasks", "master_status", "shutdown_framework_event"]

logger = logging.getLogger(__name__)

#: ``--max_completed_tasks_per_framework``.
_MAX_COMPLETED_TASKS: Final = 1000


def master_status(
    timestamp: float,
    *,
    task_id: str,
    state: str,
    message: str,
    reason: str,
    agent_id: str | None,
    executor_id: str | None = None,
    container_status: Any = None,
    unreachable_time: float | None = None,
) -> dict[str, Any]:
    """A status made by the master: SOURCE_MASTER, no uuid (recorded field order)."""
    status: dict[str, Any] = {
        "task_id": id_of(task_id),
        "state": state,
        "message": message,
        "source": "SOURCE_MASTER",
        "reason": reason,
    }
    if agent_id is not None:
        status["agent_id"] = id_of(agent_id)
    if executor_id is not None:
        status["executor_id"] = id_of(executor_id)
    status["timestamp"] = timestamp
    if unreachable_time is not None:
        status["unreachable_time"] = {"nanoseconds": int(unreachable_time * 1e9)}
    if container_status is not None:
        status["container_status"] = container_status
    return status


class Tasks:
    """Status updates, acknowledgements and completion of the frameworks' tasks."""

    def __init__(
        self,
        frameworks: Frameworks,
        agents: Agents,
        allocator: Allocator,
        *,
        wall_clock: Callable[[], float],
    ) -> None:
        self._frameworks = frameworks
        self._agents = agents
        self._allocator = allocator
        self._wall = wall_clock

    def update(self, framework: FrameworkRecord | None, body: Mapping[str, Any]) -> list[Output]:
        """An agent's UPDATE: record the status and forward it to the framework."""
        status = body.get("status")
        if framework is None or not isinstance(status, Mapping):
            logger.warning(
                "Dropping status update for unknown framework %s", body.get("framework_id")
            )
            return []
        task = framework.tasks.get(value_of(status.get("task_id")) or "")
        if task is not None:
            was_terminal = task.terminal
            task.latest = dict(status)
            task.state = str(status.get("state", task.state))
            task.statuses.append(dict(status))
            if task.terminal and not was_terminal:
                self._allocator.wake()
            if task.terminal and not status.get("uuid"):
                # Nothing to acknowledge: the task is done as far as the master is concerned.
                self.complete(framework, task)
        if framework.stream_id is None:
            logger.info(
                "Framework %s is disconnected; the agent will resend the update",
                framework.framework_id,
            )
            return []
        return [update_event(framework, status)]

    def acknowledge(
        self, framework: FrameworkRecord, body: Mapping[str, Any], now: float
    ) -> list[Output]:
        """ACKNOWLEDGE: forward it to the agent; an acknowledged terminal update completes."""
        task_id = value_of(body.get("task_id")) or ""
        ack_uuid = body.get("uuid")
        outputs: list[Output] = []
        agent = self._agents.connected(value_of(body.get("agent_id")))
        if agent is not None:
            outputs.append(
                event(
                    agent.stream_id,
                    "ACKNOWLEDGE",
                    framework_id=id_of(framework.framework_id),
                    task_id=id_of(task_id),
                    uuid=ack_uuid,
                )
            )
        task = framework.tasks.get(task_id)
        if (
            task is not None
            and task.terminal
            and task.latest is not None
            and task.latest.get("uuid") == ack_uuid
        ):
            self.complete(framework, task)
        return outputs

    def complete(self, framework: FrameworkRecord, task: TaskRecord) -> None:
        """The task is done: keep it among the framework's last completed tasks."""
        framework.tasks.pop(task.task_id, None)
        framework.completed_tasks.append(task)
        del framework.completed_tasks[:-_MAX_COMPLETED_TASKS]
        self._allocator.wake()

    def kill_all(self, framework: FrameworkRecord) -> None:
        """The framework is removed: its tasks end as TASK_KILLED."""
        for task in list(framework.tasks.values()):
            task.state = "TASK_KILLED"
            self.complete(framework, task)

    # -- agents coming and going --------------------------------------------------------------

    def adopt(
        self, agent: AgentRecord, executors: Iterable[Any], was_unreachable: bool, now: float
    ) -> list[Output]:
        """Learn what a (re-)registering agent runs.

        An agent's ``executors`` teach a restarted master the frameworks and tasks it lost. An
        agent coming back from UNREACHABLE keeps the tasks of partition-aware frameworks; for
        the others, whose tasks were already reported LOST, it is told to shut the framework
        down, as it is for frameworks that were removed.
        """
        outputs: list[Output] = []
        shut: set[str] = set()

        def shut_down(framework_id: str) -> None:
            if framework_id not in shut:
                shut.add(framework_id)
                outputs.append(shutdown_framework_event(agent, framework_id))

        for state in executors:
            if not isinstance(state, Mapping):
                continue
            framework_id = value_of(state.get("framework_id"))
            if framework_id is None:
                continue
            if self._frameworks.is_removed(framework_id):
                shut_down(framework_id)
                continue
            framework = self._frameworks.get(framework_id)
            if framework is None:
                framework = self._frameworks.recover(
                    framework_id, state.get("framework_info") or {}, now=now
                )
                logger.info("Recovered framework %s from agent %s", framework_id, agent.agent_id)
            if was_unreachable and not framework.partition_aware:
                shut_down(framework_id)
                continue
            self._adopt_executor(agent, framework, state)
        return outputs

    def unknown_to_agent(self, agent: AgentRecord, executors: Iterable[Any]) -> list[Output]:
        """Tasks this master launched on a re-registering agent that the agent does not know.

        A RUN_TASK can be lost: sent on the stream of an agent that was dying, or racing its
        re-registration. Mesos' master then asks the agent to reconcile those tasks
        (``Master::reconcileKnownSlave``) and the agent answers TASK_LOST, or TASK_DROPPED for
        partition-aware frameworks ("Reconciliation: task unknown to the agent",
        ``REASON_RECONCILIATION``). Without that the task would stay STAGING for ever, and a
        framework's reconciliation would keep being told so. Here the master says it directly,
        and only for tasks it never had an update for: a task the agent ran has its own
        updates, resent by the agent, to end it.
        """
        reported = {
            (value_of(state.get("framework_id")), value_of(task.get("task_id")))
            for state in executors
            if isinstance(state, Mapping)
            for task in state.get("tasks") or ()
            if isinstance(task, Mapping)
        }
        outputs: list[Output] = []
        for framework in self._frameworks:
            unknown = [
                t for t in framework.tasks.values()
                if t.agent_id == agent.agent_id and t.state == "TASK_STAGING" and not t.statuses
                and (framework.framework_id, t.task_id) not in reported
            ]
            for task in unknown:
                state = "TASK_DROPPED" if framework.partition_aware else "TASK_LOST"
                logger.warning("Task %s of framework %s unknown to agent %s on re-registration",
                               task.task_id, framework.framework_id, agent.agent_id)
                outputs += self._end_by_master(
                    framework, task, state, "Reconciliation: task unknown to the agent",
                    "REASON_RECONCILIATION",
                )
        return outputs

    def _end_by_master(
        self, framework: FrameworkRecord, task: TaskRecord, state: str, message: str, reason: str
    ) -> list[Output]:
        """End *task* with a status the master makes; the UPDATE if the framework listens."""
        status = master_status(
            self._wall(),
            task_id=task.task_id,
            state=state,
            message=message,
            reason=reason,
            agent_id=task.agent_id,
            executor_id=task.executor_id,
        )
        task.state, task.latest = state, status
        task.statuses.append(status)
        self.complete(framework, task)
        return [update_event(framework, status)] if framework.stream_id is not None else []

    def _adopt_executor(
        self, agent: AgentRecord, framework: FrameworkRecord, state: Mapping[str, Any]
    ) -> None:
        executor_info = state.get("executor_info")
        tasks = [t for t in state.get("tasks") or [] if isinstance(t, Mapping)]
        statuses = [s for s in state.get("statuses") or [] if isinstance(s, Mapping)]
        executor_id = None
        if isinstance(executor_info, Mapping) and not any("command" in t for t in tasks):
            executor_id = value_of(executor_info.get("executor_id"))
            if executor_id is not None:
                agent.executors[(framework.framework_id, executor_id)] = dict(executor_info)
        for task_info in tasks:
            task_id = value_of(task_info.get("task_id")) or ""
            framework.unreachable_tasks.pop(task_id, None)
            latest = None
            for status in statuses:
                if value_of(status.get("task_id")) == task_id:
                    latest = dict(status)
            try:
                resources = ResourceBag.from_json(task_info.get("resources") or [])
            except ResourceError:
                resources = ResourceBag()
            framework.tasks[task_id] = TaskRecord(
                info=dict(task_info),
                framework_id=framework.framework_id,
                agent_id=agent.agent_id,
                executor_id=executor_id,
                resources=resources,
                role=framework.role,
                state=str(latest.get("state", "TASK_STAGING")) if latest else "TASK_STAGING",
                latest=latest,
                statuses=[latest] if latest else [],
            )

    def agent_disconnected(self, agent: AgentRecord) -> list[Output]:
        """The agent's stream broke: tasks of frameworks that do not checkpoint are lost now.

        Such a framework's executors cannot survive the agent's restart (they exit when their
        agent goes away, and a recovering agent kills what is left), so Mesos' master removes
        them at once (``Master::disconnect``, ``removeFramework(slave, framework)``): TASK_LOST,
        ``REASON_AGENT_DISCONNECTED``. Checkpointing frameworks' tasks wait for the agent to
        re-register or be marked unreachable.
        """
        outputs: list[Output] = []
        hostname = str(agent.info.get("hostname") or agent.agent_id)
        for framework in self._frameworks:
            if framework.info.get("checkpoint") is True:
                continue
            tasks = [t for t in framework.tasks.values() if t.agent_id == agent.agent_id]
            for task in tasks:
                outputs += self._end_by_master(
                    framework, task, "TASK_LOST", f"Agent {hostname} disconnected",
                    "REASON_AGENT_DISCONNECTED",
                )
            for key in [k for k in agent.executors if k[0] == framework.framework_id]:
                del agent.executors[key]
        if outputs:
            self._allocator.wake()
        return outputs

    def agent_unreachable(self, agent: AgentRecord) -> list[Output]:
        """The agent's tasks become TASK_UNREACHABLE (partition-aware) or TASK_LOST."""
        outputs: list[Output] = []
        for framework in self._frameworks:
            for task in [t for t in framework.tasks.values() if t.agent_id == agent.agent_id]:
                state = "TASK_UNREACHABLE" if framework.partition_aware else "TASK_LOST"
                status = master_status(
                    self._wall(),
                    task_id=task.task_id,
                    state=state,
                    message="health check timed out",
                    reason="REASON_AGENT_REMOVED",
                    agent_id=agent.agent_id,
                    executor_id=task.executor_id,
                    unreachable_time=agent.unreachable_time,
                )
                task.state = state
                task.latest = status
                task.statuses.append(status)
                del framework.tasks[task.task_id]
                framework.unreachable_tasks[task.task_id] = task
                if framework.stream_id is not None:
                    outputs.append(update_event(framework, status))
        return outputs


def shutdown_framework_event(agent: AgentRecord, framework_id: str) -> Send:
    """SHUTDOWN_FRAMEWORK for *framework_id* on the agent's stream."""
    return event(agent.stream_id, "SHUTDOWN_FRAMEWORK", framework_id=id_of(framework_id))
