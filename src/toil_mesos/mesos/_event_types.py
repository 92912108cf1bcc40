"""The events of the Mesos v1 scheduler and executor HTTP APIs, and the ids they carry.

Events are what the master or agent streams to us: each a small frozen, slotted, keyword-only
dataclass that the state machines dispatch on. The Mesos payloads inside them (Offer, TaskInfo,
TaskStatus, ExecutorInfo, ...) stay in their JSON wire shape as ``addict.Dict``: the protobuf
JSON mapping is their schema, and re-modelling it here would only drift from Mesos (see
``include/mesos/v1/scheduler/scheduler.proto`` and ``include/mesos/v1/executor/executor.proto``).
Where the scheduler and executor APIs use the same name for different shapes, the executor
class carries an ``Executor`` prefix (``ExecutorSubscribed``, ``ExecutorMessage``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NewType, TypeAlias

__all__ = [
    "Acknowledged",
    "AgentId",
    "Error",
    "ExecutorEvent",
    "ExecutorId",
    "ExecutorMessage",
    "ExecutorSubscribed",
    "Failure",
    "FrameworkId",
    "Heartbeat",
    "InverseOffers",
    "Kill",
    "Launch",
    "LaunchGroup",
    "Message",
    "OfferId",
    "Offers",
    "Payload",
    "Rescind",
    "RescindInverseOffer",
    "SchedulerEvent",
    "Shutdown",
    "Subscribed",
    "TaskId",
    "UnknownEvent",
    "Update",
    "UpdateOperationStatus",
]

FrameworkId = NewType("FrameworkId", str)
AgentId = NewType("AgentId", str)
TaskId = NewType("TaskId", str)
OfferId = NewType("OfferId", str)
ExecutorId = NewType("ExecutorId", str)

#: A Mesos JSON object as parsed (``addict.Dict``) or as given by a caller (any mapping).
Payload: TypeAlias = Mapping[str, Any]

# --------------------------------------------------------------------------------------------
# Events shared by both streams


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """``HEARTBEAT``: the peer is alive. Only its arrival time matters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    """``ERROR``: the master or agent gave up on us; ``message`` says why."""

    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownEvent:
    """An event whose ``type`` this client does not know; kept whole for logging."""

    type: str
    raw: Any = field(repr=False)


# --------------------------------------------------------------------------------------------
# Scheduler events (scheduler.proto, message Event)


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribed:
    """``SUBSCRIBED``: the first event of a scheduler subscription.

    ``heartbeat_interval`` is ``None`` when the master did not announce one; then no heartbeat
    deadline applies.
    """

    framework_id: FrameworkId
    heartbeat_interval: float | None
    master_info: Any = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Offers:
    """``OFFERS``: resource offers, each an ``addict.Dict`` in the v1 ``Offer`` shape."""

    offers: tuple[Any, ...] = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class InverseOffers:
    """``INVERSE_OFFERS``: requests to give resources back (maintenance)."""

    inverse_offers: tuple[Any, ...] = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rescind:
    """``RESCIND``: an offer is no longer valid."""

    offer_id: OfferId


@dataclass(frozen=True, slots=True, kw_only=True)
class RescindInverseOffer:
    """``RESCIND_INVERSE_OFFER``: an inverse offer is no longer valid."""

    inverse_offer_id: OfferId


@dataclass(frozen=True, slots=True, kw_only=True)
class Update:
    """``UPDATE``: a task status.

    ``uuid`` is ``None`` for updates the master generates itself (reconciliation, TASK_ERROR,
    unknown tasks): those must not be acknowledged (transcripts, fw1 calls 24-28).
    """

    task_id: TaskId
    state: str
    uuid: str | None
    status: Any = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateOperationStatus:
    """``UPDATE_OPERATION_STATUS``: status of an offer operation (not used by Toil)."""

    status: Any = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """``MESSAGE``: a framework message from an executor; ``data`` stays base64 as on the wire."""

    agent_id: AgentId
    executor_id: ExecutorId
    data: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """``FAILURE``: an agent (no ``executor_id``) or an executor was lost.

    ``status`` is a raw wait status: 35072 means ``137 << 8`` (transcripts, fw1 event 057).
    """

    agent_id: AgentId | None
    executor_id: ExecutorId | None
    status: int | None


SchedulerEvent: TypeAlias = (
    Subscribed
    | Offers
    | InverseOffers
    | Rescind
    | RescindInverseOffer
    | Update
    | UpdateOperationStatus
    | Message
    | Failure
    | Error
    | Heartbeat
    | UnknownEvent
)


# --------------------------------------------------------------------------------------------
# Executor events (executor.proto, message Event)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorSubscribed:
    """``SUBSCRIBED`` on the executor stream: who we are and where we run."""

    executor_info: Any = field(repr=False)
    framework_info: Any = field(repr=False)
    agent_info: Any = field(repr=False)
    container_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """``LAUNCH``: run one task (a v1 ``TaskInfo``)."""

    task_id: TaskId
    task: Any = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchGroup:
    """``LAUNCH_GROUP``: run a group of tasks together."""

    task_ids: tuple[TaskId, ...]
    tasks: tuple[Any, ...] = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Kill:
    """``KILL``: kill one task; ``kill_policy`` may shorten the grace period."""

    task_id: TaskId
    kill_policy: Any = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Acknowledged:
    """``ACKNOWLEDGED``: the agent has taken our update ``uuid`` for ``task_id``.

    This comes from the agent, not from the scheduler's ACKNOWLEDGE (transcripts, executor E2:
    T12 was acknowledged here 30 s before the scheduler acknowledged it).
    """

    task_id: TaskId
    uuid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorMessage:
    """``MESSAGE`` to the executor; ``data`` stays base64 as on the wire."""

    data: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Shutdown:
    """``SHUTDOWN``: kill every task, send their terminal updates, then exit."""


ExecutorEvent: TypeAlias = (
    ExecutorSubscribed
    | Launch
    | LaunchGroup
    | Kill
    | Acknowledged
    | ExecutorMessage
    | Shutdown
    | Error
    | Heartbeat
    | UnknownEvent
)
