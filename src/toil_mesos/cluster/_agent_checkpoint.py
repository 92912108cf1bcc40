"""The agent's checkpoint: what a restarted agent needs to find its executors and tasks again.

A Mesos agent checkpoints its own id, and for frameworks that ask for it
(``FrameworkInfo.checkpoint``) their executors, tasks and unacknowledged status updates, so
that after a restart with the same work dir it can reconnect to the executors that kept
running (``agent-recovery.md``). Its containerizer also records every container's pid, which
lets a restarted agent kill the executors of frameworks that do not checkpoint.

This module is the store and its records, with no knowledge of the agent's threads. Layout,
under ``<work_dir>/meta`` (after Mesos' meta directory)::

    agent.json                        {"agent_id": ...}
    executors/<container_id>.json     one executor container: framework, process, tasks

Each file is replaced atomically (write, then rename). No ``fsync``: the checkpoint is for an
agent process that dies, not for a machine that loses power (a reboot kills the executors).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["CHECKPOINT_VERSION", "CheckpointStore", "CheckpointedExecutor", "CheckpointedTask"]

logger = logging.getLogger("toil_mesos.cluster.agent")

#: Bumped when a record's shape changes; records of another version are not recovered.
CHECKPOINT_VERSION: Final = 1

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointedTask:
    """One task of a checkpointed executor."""

    info: JSON
    state: str
    #: The last status taken for the task (what REGISTER reports), if any.
    latest: JSON | None
    #: Whether the executor was given the task (LAUNCH), or it still waits for SUBSCRIBE.
    delivered: bool
    #: Updates (the agent's ``UPDATE`` bodies) the framework has not acknowledged, oldest first.
    pending: tuple[JSON, ...]
    #: Uuids of every status taken, so that an executor's resent update is a duplicate.
    seen: tuple[str, ...]

    def to_json(self) -> JSON:
        return {
            "info": self.info,
            "state": self.state,
            "latest": self.latest,
            "delivered": self.delivered,
            "pending": list(self.pending),
            "seen": list(self.seen),
        }

    @classmethod
    def from_json(cls, doc: Any) -> CheckpointedTask:
        """:raises ValueError: when *doc* is not a task record."""
        if not isinstance(doc, dict) or not isinstance(doc.get("info"), dict):
            raise ValueError(f"not a task record: {doc!r:.200}")
        latest = doc.get("latest")
        return cls(
            info=doc["info"],
            state=str(doc.get("state", "TASK_STAGING")),
            latest=latest if isinstance(latest, dict) else None,
            delivered=bool(doc.get("delivered", True)),
            pending=tuple(u for u in doc.get("pending", []) if isinstance(u, dict)),
            seen=tuple(str(u) for u in doc.get("seen", [])),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointedExecutor:
    """One executor container as the agent last checkpointed it."""

    framework_id: str
    framework_info: JSON
    executor_id: str
    container_id: str
    info: JSON
    sandbox: Path
    #: The executor's pid and its start time (``/proc/PID/stat``): together they never repeat.
    pid: int
    start_time: int
    for_command_task: bool
    tasks: tuple[CheckpointedTask, ...]

    @property
    def checkpoint(self) -> bool:
        """Whether the framework asked for checkpointing (only then is it recovered)."""
        return self.framework_info.get("checkpoint") is True

    def to_json(self) -> JSON:
        return {
            "version": CHECKPOINT_VERSION,
            "framework_id": self.framework_id,
            "framework_info": self.framework_info,
            "executor_id": self.executor_id,
            "container_id": self.container_id,
            "info": self.info,
            "sandbox": str(self.sandbox),
            "pid": self.pid,
            "start_time": self.start_time,
            "for_command_task": self.for_command_task,
            "tasks": [t.to_json() for t in self.tasks],
        }

    @classmethod
    def from_json(cls, doc: Any) -> CheckpointedExecutor:
        """:raises ValueError: when *doc* is not an executor record of this version."""
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if doc.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"version {doc.get('version')!r}, expected {CHECKPOINT_VERSION}")
        try:
            return cls(
                framework_id=str(doc["framework_id"]),
                framework_info=dict(doc["framework_info"]),
                executor_id=str(doc["executor_id"]),
                container_id=str(doc["container_id"]),
                info=dict(doc["info"]),
                sandbox=Path(doc["sandbox"]),
                pid=int(doc["pid"]),
                start_time=int(doc["start_time"]),
                for_command_task=bool(doc.get("for_command_task", False)),
                tasks=tuple(CheckpointedTask.from_json(t) for t in doc.get("tasks", [])),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or malformed field: {exc}") from None


class CheckpointStore:
    """The checkpoint files under ``<work_dir>/meta``."""

    def __init__(self, work_dir: Path) -> None:
        self.directory = work_dir / "meta"
        self._executors = self.directory / "executors"

    def __repr__(self) -> str:
        return f"<CheckpointStore {self.directory}>"

    def agent_id(self) -> str | None:
        """The agent id checkpointed by an earlier run, or ``None`` (a first start)."""
        path = self.directory / "agent.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.error("ignoring the unreadable agent checkpoint %s: %s", path, exc)
            return None
        agent_id = doc.get("agent_id") if isinstance(doc, dict) else None
        return agent_id if isinstance(agent_id, str) and agent_id else None

    def save_agent_id(self, agent_id: str) -> None:
        _write_atomically(self.directory / "agent.json", {"agent_id": agent_id})

    def save(self, executor: CheckpointedExecutor) -> None:
        _write_atomically(self._executors / f"{executor.container_id}.json", executor.to_json())

    def remove(self, container_id: str) -> None:
        (self._executors / f"{container_id}.json").unlink(missing_ok=True)

    def load(self) -> list[CheckpointedExecutor]:
        """Every checkpointed executor; an unreadable record is logged (naming it) and moved
        aside as ``*.bad``, never half recovered."""
        if not self._executors.is_dir():
            return []
        found: list[CheckpointedExecutor] = []
        for path in sorted(self._executors.glob("*.json")):
            try:
                found.append(CheckpointedExecutor.from_json(json.loads(path.read_text("utf-8"))))
            except (OSError, ValueError) as exc:
                logger.error("cannot recover the executor checkpointed in %s: %s", path, exc)
                path.replace(path.with_suffix(".bad"))
        return found


def _write_atomically(path: Path, doc: JSON) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)
