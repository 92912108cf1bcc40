"""``GET /state``: everything the master knows, in the recorded ``master_state`` shape.

Read-only: :class:`StateRenderer` reads the frameworks, agents and offers and renders them
with Mesos' v0 names (``slaves``, ``slave_id``) and figures (``used_resources`` without
empty port ranges, counts as floats), as the recorded master does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from toil_mesos.cluster._master_agents import Agents
from toil_mesos.cluster._master_allocation import Allocator
from toil_mesos.cluster._master_frameworks import Frameworks
from toil_mesos.cluster._master_model import (
    AGENT_CAPABILITIES,
    MASTER_CAPABILITIES,
    MESOS_VERSION,
    AgentLifecycle,
    AgentRecord,
    FrameworkLifecycle,
    FrameworkRecord,
    MasterConfig,
    TaskRecord,
    value_of,
)
from toil_mesos.cluster._offers import DEFAULT_ROLE, ResourceBag, ResourceError

__all__ = ["StateRenderer"]


class StateRenderer:
    """Renders ``/state`` from the master's parts."""

    def __init__(
        self,
        config: MasterConfig,
        frameworks: Frameworks,
        agents: Agents,
        allocator: Allocator,
        *,
        start_time: float,
    ) -> None:
        self._config = config
        self._frameworks = frameworks
        self._agents = agents
        self._allocator = allocator
        self._start_time = start_time

    def render(self) -> dict[str, Any]:
        """``GET /state`` in the recorded ``master_state`` shape (v0 names)."""
        cfg = self._config
        pid = f"master@{cfg.ip}:{cfg.port}"
        agents = self._agents.in_order()
        return {
            "version": MESOS_VERSION,
            "build_date": "",
            "build_time": 0.0,
            "build_user": "",
            "start_time": self._start_time,
            "elected_time": self._start_time,
            "id": cfg.master_id,
            "pid": pid,
            "hostname": cfg.hostname,
            "capabilities": list(MASTER_CAPABILITIES),
            "activated_slaves": float(
                sum(a.state is not AgentLifecycle.UNREACHABLE for a in agents)
            ),
            "deactivated_slaves": 0.0,
            "unreachable_slaves": float(sum(a.state is AgentLifecycle.UNREACHABLE for a in agents)),
            "leader": pid,
            "leader_info": {
                "id": cfg.master_id,
                "pid": pid,
                "port": cfg.port,
                "hostname": cfg.hostname,
            },
            "log_dir": cfg.work_dir,
            "flags": {
                "agent_timeout": f"{cfg.agent_timeout}secs",
                "allocation_interval": f"{cfg.offer_interval}secs",
                "heartbeat_interval": f"{cfg.heartbeat_interval}secs",
                "ip": cfg.ip,
                "port": str(cfg.port),
                "work_dir": cfg.work_dir,
            },
            "slaves": [
                self._agent_state(a) for a in agents if a.state is not AgentLifecycle.UNREACHABLE
            ],
            "recovered_slaves": [],
            "frameworks": [self._framework_state(f) for f in self._frameworks.in_order()],
            "completed_frameworks": [self._framework_state(f) for f in self._frameworks.completed],
            "orphan_tasks": [],
            "unregistered_frameworks": [],
        }

    def _agent_state(self, agent: AgentRecord) -> dict[str, Any]:
        used = self._allocator.used(agent)
        return {
            "id": agent.agent_id,
            "hostname": agent.hostname,
            "port": agent.port,
            "attributes": _attributes_state(agent.info.get("attributes") or []),
            "pid": f"slave(1)@{agent.address}",
            "registered_time": agent.registered_time,
            "resources": agent.total.to_state(),
            "used_resources": _without_ranges(used.to_state()),
            "offered_resources": _without_ranges(self._allocator.offered(agent).to_state()),
            "reserved_resources": {
                role: agent.total.reserved_only(role).to_state()
                for role in agent.total.roles()
            },
            "unreserved_resources": agent.total.usable_by(DEFAULT_ROLE).to_state(),
            "active": agent.state is AgentLifecycle.CONNECTED,
            "deactivated": False,
            "version": MESOS_VERSION,
            "capabilities": list(AGENT_CAPABILITIES),
        }

    def _framework_state(self, framework: FrameworkRecord) -> dict[str, Any]:
        used = ResourceBag()
        for task in framework.tasks.values():
            if not task.terminal:
                used = used + task.resources
        executors = []
        for agent in self._agents:
            for (framework_id, _executor_id), executor in agent.executors.items():
                if framework_id == framework.framework_id:
                    executors.append(_executor_state(executor, agent.agent_id))
                    with contextlib.suppress(ResourceError):
                        used = used + ResourceBag.from_json(executor.get("resources") or [])
        offered = ResourceBag()
        offers = []
        for offer in self._allocator.offers_of(framework.framework_id):
            offered = offered + offer.resources
            offers.append(
                {
                    "id": offer.offer_id,
                    "framework_id": offer.framework_id,
                    "slave_id": offer.agent_id,
                    "resources": offer.resources.to_state(),
                }
            )
        info = framework.info
        return {
            "id": framework.framework_id,
            "name": info.get("name", ""),
            "used_resources": _without_ranges(used.to_state()),
            "offered_resources": _without_ranges(offered.to_state()),
            "capabilities": framework.capabilities,
            "hostname": info.get("hostname", ""),
            "webui_url": info.get("webui_url", ""),
            "active": framework.state is FrameworkLifecycle.CONNECTED,
            "connected": framework.state is FrameworkLifecycle.CONNECTED,
            "recovered": framework.state is FrameworkLifecycle.RECOVERED,
            "user": info.get("user", ""),
            **({"principal": info["principal"]} if info.get("principal") else {}),
            "failover_timeout": framework.failover_timeout,
            "checkpoint": bool(info.get("checkpoint", False)),
            "registered_time": framework.registered_time,
            "unregistered_time": framework.unregistered_time,
            "resources": _without_ranges((used + offered).to_state()),
            "roles": [framework.role],
            "tasks": [_task_state(t) for t in framework.tasks.values()],
            "unreachable_tasks": [_task_state(t) for t in framework.unreachable_tasks.values()],
            "completed_tasks": [_task_state(t) for t in framework.completed_tasks],
            "offers": offers,
            "executors": executors,
            "offer_constraints": {},
        }


def _without_ranges(state: dict[str, float | str]) -> dict[str, float | str]:
    # ``used_resources`` and ``offered_resources`` list ports only when some are held.
    return {k: v for k, v in state.items() if not (isinstance(v, str) and v == "[]")}


def _attributes_state(attributes: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attribute in attributes:
        if not isinstance(attribute, Mapping) or not isinstance(attribute.get("name"), str):
            continue
        kind = attribute.get("type")
        if kind == "TEXT":
            out[attribute["name"]] = (attribute.get("text") or {}).get("value", "")
        elif kind == "SCALAR":
            out[attribute["name"]] = float((attribute.get("scalar") or {}).get("value", 0.0))
        elif kind == "RANGES":
            spans = (attribute.get("ranges") or {}).get("range", [])
            out[attribute["name"]] = (
                "[" + ", ".join(f"{r.get('begin')}-{r.get('end')}" for r in spans) + "]"
            )
    return out


def _task_state(task: TaskRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": task.task_id,
        "name": task.info.get("name", ""),
        "framework_id": task.framework_id,
        "executor_id": task.executor_id or "",
        "slave_id": task.agent_id,
        "state": task.state,
        "resources": _without_ranges(task.resources.to_state()),
        "role": task.role,
        "statuses": [],
    }
    for status in task.statuses:
        entry: dict[str, Any] = {"state": status.get("state"), "timestamp": status.get("timestamp")}
        container = status.get("container_status")
        if isinstance(container, Mapping):
            entry["container_status"] = {k: v for k, v in container.items() if k != "executor_pid"}
        out["statuses"].append(entry)
    return out


def _executor_state(executor: Mapping[str, Any], agent_id: str) -> dict[str, Any]:
    command = executor.get("command") or {}
    try:
        resources = ResourceBag.from_json(executor.get("resources") or [])
    except ResourceError:
        resources = ResourceBag()
    return {
        "executor_id": value_of(executor.get("executor_id")) or "",
        "name": executor.get("name", ""),
        "framework_id": value_of(executor.get("framework_id")) or "",
        "command": {
            "value": command.get("value", ""),
            "argv": list(command.get("arguments") or []),
            "uris": [
                {"value": u.get("value", ""), "executable": bool(u.get("executable", False))}
                for u in command.get("uris") or []
                if isinstance(u, Mapping)
            ],
        },
        "resources": _without_ranges(resources.to_state()),
        "role": DEFAULT_ROLE,
        "type": executor.get("type", "CUSTOM"),
        "slave_id": agent_id,
    }
