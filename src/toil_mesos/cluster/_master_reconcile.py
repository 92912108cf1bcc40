"""Reconciliation: what the master answers when a framework asks for its tasks' states.

Implicit reconciliation (no tasks named) sends the latest state of every task the master
knows; explicit reconciliation answers for each named task, and for a task it does not know
chooses by where the task's agent is (``Master::reconcile``): the agent is registered (the task
is gone), known but unreachable, or unknown. Partition-aware frameworks get the precise states
(TASK_GONE, TASK_UNREACHABLE, TASK_UNKNOWN), the others TASK_LOST (recorded messages).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from toil_mesos.cluster._master_agents import Agents
from toil_mesos.cluster._master_model import (
    FrameworkRecord,
    Output,
    TaskRecord,
    update_event,
    value_of,
)
from toil_mesos.cluster._master_tasks import master_status

__all__ = ["Reconciler"]

#: For a task the master does not know: (partition-aware state, message), by where its
#: agent is.
_UNKNOWN_TASK: Final[Mapping[str, tuple[str, str]]] = {
    "registered": ("TASK_GONE", "Reconciliation: Task is unknown to the agent"),
    "unreachable": ("TASK_UNREACHABLE", "Reconciliation: Task is unreachable"),
    "unknown": ("TASK_UNKNOWN", "Reconciliation: Task is unknown"),
}


class Reconciler:
    """RECONCILE, and KILL of a task the master does not know."""

    def __init__(self, agents: Agents, *, wall_clock: Callable[[], float]) -> None:
        self._agents = agents
        self._wall = wall_clock

    def reconcile(
        self, framework: FrameworkRecord, body: Mapping[str, Any], now: float
    ) -> list[Output]:
        """RECONCILE: implicit (no tasks) or explicit (the tasks named)."""
        tasks = body.get("tasks") or []
        if not tasks:
            return [
                update_event(framework, self._latest_state(t))
                for t in list(framework.tasks.values())
            ]
        outputs: list[Output] = []
        for item in tasks:
            if isinstance(item, Mapping):
                task_id = value_of(item.get("task_id")) or ""
                outputs.extend(
                    self.reconcile_one(framework, task_id, value_of(item.get("agent_id")))
                )
        return outputs

    def reconcile_one(
        self, framework: FrameworkRecord, task_id: str, agent_id: str | None
    ) -> list[Output]:
        """The state of one task, known or not."""
        task = framework.tasks.get(task_id)
        if task is not None:
            return [update_event(framework, self._latest_state(task))]
        unreachable_time = None
        if agent_id is not None and self._agents.registered(agent_id):
            where = "registered"
        elif agent_id is not None and agent_id in self._agents:
            where = "unreachable"
            unreachable_time = self._agents[agent_id].unreachable_time
        else:
            where = "unknown"
        state, message = _UNKNOWN_TASK[where]
        status = master_status(
            self._wall(),
            task_id=task_id,
            state=state if framework.partition_aware else "TASK_LOST",
            message=message,
            reason="REASON_RECONCILIATION",
            agent_id=agent_id,
            unreachable_time=unreachable_time,
        )
        return [update_event(framework, status)]

    def _latest_state(self, task: TaskRecord) -> dict[str, Any]:
        latest = task.latest or {}
        return master_status(
            self._wall(),
            task_id=task.task_id,
            state=task.state,
            message="Reconciliation: Latest task state",
            reason="REASON_RECONCILIATION",
            agent_id=task.agent_id,
            executor_id=task.executor_id,
            container_status=latest.get("container_status"),
        )
