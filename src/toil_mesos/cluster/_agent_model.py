"""What the agent's parts share: its records, and :class:`AgentCore`, the state they guard.

The agent is threaded (``agent.py`` lists its threads); every part reads and changes the
records below only while holding ``AgentCore.cond``, and nothing blocks while holding it. Each
part owns one concern (``_agent_link``, ``_agent_executors``, ``_agent_tasks``,
``_agent_updates``, ``_agent_state``, ``_agent_files``, ``_agent_http``) and reaches the others
only through the core and the few methods the façade (``agent.Agent``) wires together.
"""

from __future__ import annotations

import base64
import copy
import enum
import json
import logging
import queue
import signal
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, Protocol

from toil_mesos.cluster._agent_checkpoint import (
    CheckpointedExecutor,
    CheckpointedTask,
    CheckpointStore,
)
from toil_mesos.cluster._agent_config import AgentConfig
from toil_mesos.cluster._agent_gpus import GpuDevices, gpus_in
from toil_mesos.cluster._status_updates import StatusUpdateManager
from toil_mesos.mesos._recordio import encode_record

__all__ = [
    "JSON",
    "LOGGER_NAME",
    "AgentCall",
    "AgentCore",
    "ContainerProcess",
    "ExecutorCallResult",
    "ExecutorEventStream",
    "ExecutorPhase",
    "ExecutorRecord",
    "FrameworkRecord",
    "TaskRecord",
    "new_status_uuid",
    "normalise_executor_info",
    "ordered",
    "value_of",
]

#: Every part of the agent logs under the agent's name.
LOGGER_NAME: Final = "toil_mesos.cluster.agent"
logger = logging.getLogger(LOGGER_NAME)

JSON = dict[str, Any]

_COMMAND_ORDER: Final = ("uris", "environment", "shell", "value", "arguments", "user")


class ExecutorPhase(enum.Enum):
    """Lifecycle of one executor container on this agent."""

    LAUNCHING = "LAUNCHING"  # sandbox and fetcher
    REGISTERING = "REGISTERING"  # process started, waiting for SUBSCRIBE
    RUNNING = "RUNNING"  # subscribed
    TERMINATING = "TERMINATING"  # SHUTDOWN sent or being killed
    TERMINATED = "TERMINATED"


class ContainerProcess(Protocol):
    """An executor's process: one the agent started (``ExecutorProcess``), or one an earlier
    run of the agent started and this one recovered (``RecoveredProcess``)."""

    @property
    def pid(self) -> int: ...

    def wait(self, timeout: float | None = None) -> int | None: ...

    def poll(self) -> int | None: ...

    def signal(self, sig: signal.Signals) -> None: ...


class ExecutorEventStream:
    """Events for one subscribed executor, written by its HTTP handler thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue()
        self.closed = False

    def send(self, event: JSON) -> None:
        if not self.closed:
            self.queue.put(encode_record(json.dumps(event, separators=(",", ":")).encode()))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put(None)


@dataclass(slots=True, kw_only=True)
class TaskRecord:
    """A task on this agent: as launched, its state and the statuses it sent."""

    info: JSON
    state: str = "TASK_STAGING"
    statuses: list[JSON] = field(default_factory=list)

    @property
    def task_id(self) -> str:
        return str(self.info["task_id"]["value"])


@dataclass(slots=True, kw_only=True)
class ExecutorRecord:
    """One executor container: its sandbox, process, stream, tasks and timers."""

    framework_id: str
    executor_id: str
    container_id: str
    info: JSON
    sandbox: Path
    phase: ExecutorPhase = ExecutorPhase.LAUNCHING
    process: ContainerProcess | None = None
    #: The process's start time (``/proc/PID/stat``), checkpointed with its pid.
    start_time: int | None = None
    stream: ExecutorEventStream | None = None
    queued: dict[str, TaskRecord] = field(default_factory=dict)
    launched: dict[str, TaskRecord] = field(default_factory=dict)
    completed: list[TaskRecord] = field(default_factory=list)
    registration_deadline: float | None = None
    kill_at: float | None = None
    sigkill_at: float | None = None
    termination_reason: str | None = None
    termination_message: str | None = None
    cancel_fetch: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    #: Made by the agent for a command task (the built-in command executor).
    for_command_task: bool = False
    #: Recovered after an agent restart and not re-subscribed yet.
    recovering: bool = False
    #: Its checkpoint was written (for frameworks that do not checkpoint, once is enough).
    checkpointed: bool = False
    #: What its unfinished tasks become when it ends (TASK_FAILED unless recovery lost it).
    termination_state: str | None = None

    def __repr__(self) -> str:
        return (
            f"<Executor {self.executor_id!r} framework={self.framework_id!r}"
            f" phase={self.phase.value} queued={len(self.queued)} launched={len(self.launched)}>"
        )

    def find(self, task_id: str) -> TaskRecord | None:
        return self.launched.get(task_id) or self.queued.get(task_id)

    @property
    def timer_deadlines(self) -> list[float]:
        return [
            d for d in (self.registration_deadline, self.kill_at, self.sigkill_at) if d is not None
        ]


@dataclass(slots=True, kw_only=True)
class FrameworkRecord:
    """A framework with executors on this agent."""

    framework_id: str
    info: JSON
    executors: dict[str, ExecutorRecord] = field(default_factory=dict)
    completed_executors: list[ExecutorRecord] = field(default_factory=list)
    shutting_down: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorCallResult:
    """What the HTTP layer answers to one ``/api/v1/executor`` call."""

    status: int
    #: ``text/plain`` reason of an error answer.
    error: str = ""
    #: The new subscription (SUBSCRIBE answered 200).
    stream: ExecutorEventStream | None = None
    #: Events for the executor's stream once the answer is written (ACKNOWLEDGED).
    after: tuple[JSON, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentCall:
    """One call for the master, posted in order by the sender thread."""

    kind: str
    body: JSON
    attempts: int = 0


class AgentCore:
    """The state every part of the agent shares, and the one lock that guards it.

    :param clock: monotonic clock for deadlines.
    :param wall_clock: clock for status timestamps.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.clock = clock
        self.wall = wall_clock
        self.cond = threading.Condition(threading.RLock())
        self.stopping = threading.Event()
        #: Set while the master link is up and registered.
        self.registered = threading.Event()
        self.agent_id: str | None = None
        self.frameworks: dict[str, FrameworkRecord] = {}
        self.completed_frameworks: list[FrameworkRecord] = []
        #: The latest run of each (framework id, executor id), for ``/files`` paths.
        self.latest_run: dict[tuple[str, str], ExecutorRecord] = {}
        self.updates = StatusUpdateManager(retry_interval=config.status_update_retry_seconds)
        self.outbox: queue.Queue[AgentCall] = queue.Queue()
        self.server: ThreadingHTTPServer | None = None
        self.start_time = wall_clock()
        self.store = CheckpointStore(config.work_dir)
        #: Set once recovered executors have re-subscribed or timed out (at once on a first
        #: start): the agent registers with the master only then, as Mesos does.
        self.recovered = threading.Event()
        #: The GPU devices (``gpus`` in ``--resources``) and the tasks holding them.
        self.gpus = GpuDevices(gpus_in(config.resources))

    @property
    def address_or_none(self) -> str | None:
        if self.server is None:
            return None
        return f"{self.config.host}:{self.server.server_address[1]}"

    @property
    def address(self) -> str:
        """``IP:PORT`` of the agent's HTTP API (the bound port when ``--port 0``)."""
        address = self.address_or_none
        if address is None:
            raise RuntimeError("the agent has not been started")
        return address

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def executors(self) -> list[ExecutorRecord]:
        """Every live executor of every framework."""
        return [e for f in self.frameworks.values() for e in f.executors.values()]

    def live_executor(self, framework_id: str, executor_id: str) -> ExecutorRecord | None:
        framework = self.frameworks.get(framework_id)
        return None if framework is None else framework.executors.get(executor_id)

    def maybe_complete_framework(self, framework: FrameworkRecord) -> None:
        """A framework being shut down is complete once its last executor is gone."""
        if framework.shutting_down and not framework.executors:
            self.frameworks.pop(framework.framework_id, None)
            self.completed_frameworks.append(framework)

    def checkpoint(self, executor: ExecutorRecord) -> None:
        """Write *executor*'s checkpoint (lock held): its process, tasks and pending updates.

        Every started executor is checkpointed, so that a restarted agent can kill the
        executors of frameworks that do not checkpoint (their pid, once, and no tasks); only
        the others are recovered, and only their records follow every change.
        """
        framework = self.frameworks.get(executor.framework_id)
        if (
            executor.process is None
            or executor.start_time is None
            or executor.phase is ExecutorPhase.TERMINATED
            or framework is None
        ):
            return
        recovered = framework.info.get("checkpoint") is True
        if executor.checkpointed and not recovered:
            return
        executor.checkpointed = True
        tasks = [(t, False) for t in executor.queued.values()] if recovered else []
        tasks += [(t, True) for t in executor.launched.values()] if recovered else []
        self.store.save(
            CheckpointedExecutor(
                framework_id=executor.framework_id,
                framework_info=framework.info,
                executor_id=executor.executor_id,
                container_id=executor.container_id,
                info=executor.info,
                sandbox=executor.sandbox,
                pid=executor.process.pid,
                start_time=executor.start_time,
                for_command_task=executor.for_command_task,
                tasks=tuple(
                    CheckpointedTask(
                        info=task.info,
                        state=task.state,
                        latest=task.statuses[-1] if task.statuses else None,
                        delivered=delivered,
                        pending=tuple(
                            self.updates.unacknowledged(executor.framework_id, task.task_id)
                        ),
                        seen=tuple(str(s["uuid"]) for s in task.statuses if s.get("uuid")),
                    )
                    for task, delivered in tasks
                ),
            )
        )

    def call_master(self, kind: str, **body: Any) -> None:
        """Queue an agent call ``{"type": KIND, "kind": body}`` for the sender thread."""
        self.outbox.put(AgentCall(kind=kind, body={"type": kind, kind.lower(): body}))

    def forward_updates(self, forwards: Sequence[Any]) -> None:
        """Queue the status updates the update manager says to send (lock held).

        Not while unregistered: they stay in flight, and the registration resends every
        update in flight once (a queued copy would reach the master twice).
        """
        if not self.registered.is_set():
            return
        for forward in forwards:
            self.call_master("UPDATE", **forward.update)

    def spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        """A daemon thread running *target*, logging (not losing) an exception that kills it."""
        thread = threading.Thread(target=_guard(name, target), name=name, daemon=True)
        thread.start()
        return thread


def _guard(name: str, target: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            target()
        except Exception:
            logger.critical("thread %s died", name, exc_info=True)

    return run


def ordered(obj: JSON, order: Sequence[str]) -> JSON:
    """*obj* with the keys in *order* first (recorded field orders)."""
    out = {k: obj[k] for k in order if k in obj}
    out.update((k, v) for k, v in obj.items() if k not in out)
    return out


def normalise_executor_info(info: JSON, framework_id: str) -> JSON:
    """Fill ``framework_id`` and ``command.shell`` as the agent did in the recorded SUBSCRIBED."""
    info = copy.deepcopy(info)
    info["framework_id"] = {"value": framework_id}
    command = dict(info.get("command", {}))
    command.setdefault("shell", True)
    info["command"] = ordered(command, _COMMAND_ORDER)
    return ordered(info, ("type", "executor_id", "framework_id", "command"))


def new_status_uuid() -> str:
    """A status update's ``uuid``: 16 random bytes, base64 as in v1 JSON."""
    return base64.b64encode(uuid.uuid4().bytes).decode("ascii")


def value_of(obj: Any) -> str | None:
    """``obj["value"]`` of a v1 id object, ``None`` when *obj* is not one."""
    if isinstance(obj, dict) and isinstance(obj.get("value"), str):
        return str(obj["value"])
    return None
