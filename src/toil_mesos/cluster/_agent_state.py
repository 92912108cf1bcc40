"""The agent's ``GET /state``, in the recorded shape (v0 names: ``slave_id``, ``pid``)."""

from __future__ import annotations

import json
from pathlib import Path

from toil_mesos.cluster._agent_model import (
    JSON,
    AgentCore,
    ExecutorRecord,
    FrameworkRecord,
    TaskRecord,
)
from toil_mesos.cluster._executors import format_duration
from toil_mesos.cluster._resources import (
    attributes_summary,
    reserved_full,
    reserved_summary,
    resources_summary,
    unreserved,
)

__all__ = ["AgentStateRenderer"]


class AgentStateRenderer:
    """Renders ``/state`` from the agent's frameworks and executors.

    :param fetcher_cache_dir: the fetcher cache's directory, for ``flags``.
    """

    def __init__(self, core: AgentCore, *, fetcher_cache_dir: Path) -> None:
        self._core = core
        self._fetcher_cache_dir = fetcher_cache_dir

    def render(self) -> JSON:
        core = self._core
        config = core.config
        with core.cond:
            frameworks = [self._framework_state(f) for f in core.frameworks.values()]
            completed = [self._framework_state(f) for f in core.completed_frameworks]
        resources = config.resources
        return {
            "version": "1.12.0",
            "start_time": core.start_time,
            "id": core.agent_id or "",
            "pid": f"slave(1)@{core.address}",
            "hostname": config.hostname,
            "capabilities": ["MULTI_ROLE", "HIERARCHICAL_ROLE", "RESERVATION_REFINEMENT"],
            "resources": resources_summary(resources),
            "reserved_resources": reserved_summary(resources),
            "unreserved_resources": resources_summary(unreserved(resources)),
            "reserved_resources_full": reserved_full(resources),
            "unreserved_resources_full": unreserved(resources),
            "attributes": attributes_summary(config.attributes),
            "master_hostname": config.master.rsplit(":", 1)[0],
            "flags": self._flags(),
            "frameworks": frameworks,
            "completed_frameworks": completed,
        }

    def _flags(self) -> JSON:
        """The ``flags`` of ``/state``; like Mesos, a flag that was not given is left out."""
        config = self._core.config
        flags: JSON = {
            "attributes": config.attributes_flag,
            "executor_registration_timeout": format_duration(config.executor_registration_timeout),
            "executor_shutdown_grace_period": format_duration(
                config.executor_shutdown_grace_period
            ),
            "fetcher_cache_dir": str(self._fetcher_cache_dir),
            "fetcher_stall_timeout": format_duration(config.fetcher_timeout),
            "hostname": config.hostname,
            "ip": config.host,
            "master": config.master,
            "port": str(self._core.port),
            "resources": config.resources_flag,
            "work_dir": str(config.work_dir),
        }
        if config.executor_environment_variables is not None:
            flags["executor_environment_variables"] = json.dumps(
                dict(config.executor_environment_variables)
            )
        return dict(sorted(flags.items()))

    def _framework_state(self, framework: FrameworkRecord) -> JSON:
        info = framework.info
        return {
            "id": framework.framework_id,
            "name": info.get("name", ""),
            "user": info.get("user", ""),
            "failover_timeout": info.get("failover_timeout", 0.0),
            "checkpoint": info.get("checkpoint", False),
            "hostname": info.get("hostname", ""),
            "roles": info.get("roles", [info.get("role", "*")]),
            "executors": [self._executor_state(e) for e in framework.executors.values()],
            "completed_executors": [self._executor_state(e) for e in framework.completed_executors],
        }

    def _executor_state(self, executor: ExecutorRecord) -> JSON:
        all_resources = list(executor.info.get("resources", []))
        for task in list(executor.launched.values()):
            all_resources.extend(task.info.get("resources", []))
        return {
            "id": executor.executor_id,
            "name": executor.info.get("name", ""),
            "source": executor.info.get("source", ""),
            "container": executor.container_id,
            "directory": str(executor.sandbox),
            "resources": resources_summary(all_resources),
            "role": "*",
            "type": executor.info.get("type", "DEFAULT"),
            "tasks": [self._task_state(executor, t) for t in executor.launched.values()],
            "queued_tasks": [self._task_state(executor, t) for t in executor.queued.values()],
            "completed_tasks": [self._task_state(executor, t) for t in executor.completed],
        }

    def _task_state(self, executor: ExecutorRecord, task: TaskRecord) -> JSON:
        statuses = []
        for status in task.statuses:
            entry: JSON = {"state": status["state"], "timestamp": status.get("timestamp")}
            if "container_status" in status:
                container = dict(status["container_status"])
                container.pop("executor_pid", None)
                entry["container_status"] = container
            statuses.append(entry)
        return {
            "id": task.task_id,
            "name": task.info.get("name", ""),
            "framework_id": executor.framework_id,
            "executor_id": executor.executor_id,
            "slave_id": self._core.agent_id or "",
            "state": task.state,
            "resources": resources_summary(task.info.get("resources", [])),
            "role": "*",
            "statuses": statuses,
        }
