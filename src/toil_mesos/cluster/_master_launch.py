"""ACCEPT: offers taken, tasks checked as Mesos checks them, and launched on the agent.

:class:`TaskLauncher` takes the accepted offers from the :class:`Allocator`, checks each task in
the order of ``validation::task::validate`` (an invalid task gets TASK_ERROR with the recorded
message and no ``uuid``), records the valid ones and sends RUN_TASK to the agent. What is left
of the offers is refused for the ACCEPT's ``refuse_seconds``, as Mesos does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from toil_mesos.cluster._executor_info import (
    comparable_executor_info,
    incompatible_executor_message,
)
from toil_mesos.cluster._master_agents import Agents
from toil_mesos.cluster._master_allocation import Allocator, refuse_seconds
from toil_mesos.cluster._master_model import (
    AgentRecord,
    FrameworkRecord,
    Output,
    TaskRecord,
    event,
    id_of,
    update_event,
    value_of,
)
from toil_mesos.cluster._master_tasks import master_status
from toil_mesos.cluster._offers import ResourceBag, ResourceError

__all__ = ["TaskLauncher"]

logger = logging.getLogger(__name__)

_NOTHING = ResourceBag()


class TaskLauncher:
    """The ACCEPT call: offer checks, task checks, RUN_TASK."""

    def __init__(
        self, agents: Agents, allocator: Allocator, *, wall_clock: Callable[[], float]
    ) -> None:
        self._agents = agents
        self._allocator = allocator
        self._wall = wall_clock

    def accept(
        self, framework: FrameworkRecord, body: Mapping[str, Any], now: float
    ) -> list[Output]:
        """ACCEPT: launch the LAUNCH operations' tasks on the offers' agent."""
        offer_ids = [value_of(o) or "" for o in body.get("offer_ids") or []]
        operations = [op for op in body.get("operations") or [] if isinstance(op, Mapping)]
        error, offers = self._allocator.take(framework.framework_id, offer_ids)
        if error is not None:
            return self._invalid_offers(framework, offer_ids, operations, error)

        agent = self._agents[offers[0].agent_id]
        remaining = ResourceBag()
        for offer in offers:
            remaining = remaining + offer.resources
        outputs: list[Output] = []
        for operation in operations:
            if operation.get("type") != "LAUNCH":
                logger.warning(
                    "Ignoring %s operation from framework %s: only LAUNCH is supported",
                    operation.get("type"),
                    framework.framework_id,
                )
                continue
            for task_info in _task_infos(operation):
                remaining, launched = self._launch(framework, agent, task_info, remaining)
                outputs.extend(launched)
        if not remaining.is_empty():
            refuse = refuse_seconds(body.get("filters"))
            self._allocator.refuse(framework, agent.agent_id, remaining, refuse, now)
        self._allocator.wake()
        return outputs

    def _invalid_offers(
        self,
        framework: FrameworkRecord,
        offer_ids: Sequence[str],
        operations: Sequence[Mapping[str, Any]],
        error: str,
    ) -> list[Output]:
        logger.warning("ACCEPT call used invalid offers %s: %s", offer_ids, error)
        state = "TASK_DROPPED" if framework.partition_aware else "TASK_LOST"
        outputs: list[Output] = []
        for operation in operations:
            if operation.get("type") != "LAUNCH":
                continue
            for task_info in _task_infos(operation):
                if not isinstance(task_info, Mapping):
                    continue
                status = master_status(
                    self._wall(),
                    task_id=value_of(task_info.get("task_id")) or "",
                    state=state,
                    message=f"Task launched with invalid offers: {error}",
                    reason="REASON_INVALID_OFFERS",
                    agent_id=value_of(task_info.get("agent_id")),
                )
                outputs.append(update_event(framework, status))
        return outputs

    def _launch(
        self,
        framework: FrameworkRecord,
        agent: AgentRecord,
        raw_task: Any,
        remaining: ResourceBag,
    ) -> tuple[ResourceBag, list[Output]]:
        if not isinstance(raw_task, Mapping):
            return remaining, []
        role = framework.role
        task: dict[str, Any] = json.loads(json.dumps(raw_task))  # deep copy, JSON only
        task["resources"] = _inject(task.get("resources"), role)
        executor = task.get("executor")
        if isinstance(executor, dict):
            executor.setdefault("framework_id", id_of(framework.framework_id))
            executor["resources"] = _inject(executor.get("resources"), role)
        error, consumed = _task_error(framework, agent, task, remaining)
        task_id = value_of(task.get("task_id")) or ""
        if error is not None:
            logger.info(
                "Task %s of framework %s is invalid: %s", task_id, framework.framework_id, error
            )
            status = master_status(
                self._wall(),
                task_id=task_id,
                state="TASK_ERROR",
                message=error,
                reason="REASON_TASK_INVALID",
                agent_id=value_of(task.get("agent_id")),
            )
            return remaining, [update_event(framework, status)]
        task["agent_id"] = id_of(agent.agent_id)
        executor_id = value_of(executor.get("executor_id")) if isinstance(executor, dict) else None
        if isinstance(executor, dict) and executor_id is not None:
            agent.executors.setdefault((framework.framework_id, executor_id), executor)
        framework.tasks[task_id] = TaskRecord(
            info=task,
            framework_id=framework.framework_id,
            agent_id=agent.agent_id,
            executor_id=executor_id,
            resources=ResourceBag.from_json(task["resources"]),
            role=role,
        )
        logger.info(
            "Launching task %s of framework %s on agent %s",
            task_id,
            framework.framework_id,
            agent.agent_id,
        )
        outputs: list[Output] = []
        if agent.stream_id is not None:
            outputs.append(
                event(
                    agent.stream_id,
                    "RUN_TASK",
                    framework_id=id_of(framework.framework_id),
                    framework_info=framework.info,
                    task=task,
                )
            )
        return remaining - consumed, outputs


def _task_infos(operation: Mapping[str, Any]) -> list[Any]:
    return list((operation.get("launch") or {}).get("task_infos") or [])


def _task_error(
    framework: FrameworkRecord,
    agent: AgentRecord,
    task: Mapping[str, Any],
    offered: ResourceBag,
) -> tuple[str | None, ResourceBag]:
    """Mesos' ``validation::task::validate`` in its order; returns (error, consumed)."""
    error, total = _task_shape_error(framework, agent, task)
    if error is not None:
        return error, _NOTHING
    if not offered.contains(total):
        return (
            f"Total resources {total.describe(framework.role)} required by task and its"
            f" executor is more than available {offered.describe(framework.role)}"
        ), _NOTHING
    return None, total


def _task_shape_error(
    framework: FrameworkRecord, agent: AgentRecord, task: Mapping[str, Any]
) -> tuple[str | None, ResourceBag]:
    """Everything but the resources' fit: (error, what task and new executor use)."""
    task_id = value_of(task.get("task_id"))
    if not task_id:
        return "Task has an invalid TaskID: ID must not be empty", _NOTHING
    if task_id in framework.tasks:
        return f"Task has duplicate ID: {task_id}", _NOTHING
    if task_id in framework.unreachable_tasks:
        return f"Task reuses the ID of an unreachable task: {task_id}", _NOTHING
    task_agent = value_of(task.get("agent_id"))
    if task_agent != agent.agent_id:
        return (
            f"Task uses invalid agent {task_agent or ''} while agent {agent.agent_id} is expected"
        ), _NOTHING
    if not task.get("resources"):
        return "Task uses no resources", _NOTHING
    try:
        total = ResourceBag.from_json(task["resources"])
    except ResourceError as exc:
        return f"Task uses invalid resources: {exc}", _NOTHING
    error = _allocation_error(framework, task)
    if error is not None:
        return error, _NOTHING
    has_executor = isinstance(task.get("executor"), Mapping)
    if has_executor == isinstance(task.get("command"), Mapping):
        return (
            "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present"
        ), _NOTHING
    if not has_executor:
        return None, total
    executor = task["executor"]
    executor_id = value_of(executor.get("executor_id"))
    if not executor_id:
        return "Task has an invalid ExecutorID: ID must not be empty", _NOTHING
    try:
        executor_resources = ResourceBag.from_json(executor.get("resources") or [])
    except ResourceError as exc:
        return f"Executor uses invalid resources: {exc}", _NOTHING
    if executor.get("type", "CUSTOM") != "CUSTOM":
        return "'ExecutorInfo.type' must be 'CUSTOM'", _NOTHING
    if not isinstance(executor.get("command"), Mapping):
        return "'ExecutorInfo.command' must be set", _NOTHING
    existing = agent.executors.get((framework.framework_id, executor_id))
    if existing is None:
        return None, total + executor_resources
    if comparable_executor_info(existing) != comparable_executor_info(executor):
        return incompatible_executor_message(existing, executor), _NOTHING
    return None, total


def _allocation_error(framework: FrameworkRecord, task: Mapping[str, Any]) -> str | None:
    """A task's (and its executor's) resources must all be allocated to the framework's role.

    Mesos refuses resources allocated to several roles in one task, and to a role the
    framework is not subscribed to; the master fills in a missing ``allocation_info`` first.
    """
    executor = task.get("executor")
    resources = list(task.get("resources") or [])
    if isinstance(executor, Mapping):
        resources += list(executor.get("resources") or [])
    roles = sorted(
        {
            str((r.get("allocation_info") or {}).get("role"))
            for r in resources
            if isinstance(r, Mapping)
        }
    )
    if roles and roles != [framework.role]:
        return (
            f"Task's resources are allocated to role(s) {', '.join(roles)} but the framework is"
            f" subscribed to role {framework.role}"
        )
    return None


def _inject(resources: Any, role: str) -> list[dict[str, Any]]:
    out = []
    for resource in resources or []:
        if isinstance(resource, dict):
            resource.setdefault("allocation_info", {"role": role})
            out.append(resource)
    return out
