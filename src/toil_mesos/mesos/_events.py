"""Typed events and calls of the Mesos v1 scheduler and executor HTTP APIs.

Events are what the master or agent streams to us; calls are what we POST. Each is a small
frozen, slotted, keyword-only dataclass that the state machines dispatch on. The Mesos payloads
inside them (Offer, TaskInfo, TaskStatus, ExecutorInfo, ...) stay in their JSON wire shape as
``addict.Dict``: the protobuf JSON mapping is their schema, and re-modelling it here would only
drift from Mesos (see ``include/mesos/v1/scheduler/scheduler.proto`` and
``include/mesos/v1/executor/executor.proto``).

Parsing validates only what the protocol needs (the type, the ids the state machines use) and
raises :class:`~toil_mesos.errors.RemoteProtocolError` on anything else malformed. An event
type we do not know becomes :class:`UnknownEvent` rather than an error, because Mesos adds
event types over time (``UPDATE_OPERATION_STATUS`` arrived in 1.6).

Where the scheduler and executor APIs use the same name for different shapes, the executor
class carries an ``Executor`` prefix (``ExecutorSubscribed``, ``ExecutorMessage``). Calls carry a
``Call`` suffix so that, for example, the scheduler's ``KILL`` call and the executor's ``KILL``
event can live in one module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NewType, TypeAlias

from addict import Dict

from toil_mesos.errors import LocalProtocolError, RemoteProtocolError
from toil_mesos.mesos._recordio import (
    DEFAULT_MAX_RECORD_SIZE,
    END_OF_STREAM,
    NEED_DATA,
    RecordIODecoder,
    Sentinel,
)

__all__ = [
    "AcceptCall",
    "AcknowledgeCall",
    "Acknowledged",
    "AgentId",
    "DeclineCall",
    "Error",
    "EventStream",
    "ExecutorCall",
    "ExecutorEvent",
    "ExecutorId",
    "ExecutorMessage",
    "ExecutorMessageCall",
    "ExecutorSubscribeCall",
    "ExecutorSubscribed",
    "Failure",
    "FrameworkId",
    "Heartbeat",
    "InverseOffers",
    "Kill",
    "KillCall",
    "Launch",
    "LaunchGroup",
    "Message",
    "MessageCall",
    "OfferId",
    "Offers",
    "ReconcileCall",
    "Rescind",
    "RescindInverseOffer",
    "ReviveCall",
    "SchedulerCall",
    "SchedulerEvent",
    "Shutdown",
    "ShutdownCall",
    "SubscribeCall",
    "Subscribed",
    "SuppressCall",
    "TaskId",
    "TeardownCall",
    "UnknownEvent",
    "Update",
    "UpdateCall",
    "UpdateOperationStatus",
    "as_tuple",
    "encode_executor_call",
    "encode_scheduler_call",
    "id_value",
    "offer_ids_of",
    "parse_executor_event",
    "parse_scheduler_event",
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


# --------------------------------------------------------------------------------------------
# Parsing


def _decode_json(record: bytes) -> Any:
    try:
        obj = json.loads(record, object_hook=Dict)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RemoteProtocolError(f"event is not JSON: {record[:64]!r}") from exc
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"event is not a JSON object: {record[:64]!r}")
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        raise RemoteProtocolError(f"event has no 'type': {record[:64]!r}")
    return obj


def _section(obj: Any, *path: str) -> Any:
    """The JSON object at *path* inside the event *obj*, e.g. ``("update", "status")``."""
    value = obj
    for depth, name in enumerate(path):
        value = value.get(name)
        if not isinstance(value, dict):
            where = ".".join(path[: depth + 1])
            raise RemoteProtocolError(f"{obj['type']} event has no {where!r} object")
    return value


def _required_id(obj: Any, name: str, where: str) -> str:
    value = _optional_id(obj, name, where)
    if value is None:
        raise RemoteProtocolError(f"{where} has no {name!r}")
    return value


def _optional_id(obj: Any, name: str, where: str) -> str | None:
    if name not in obj:
        return None
    ident = obj[name]
    if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
        raise RemoteProtocolError(f"{where} has a malformed {name!r}: {ident!r}")
    return str(ident["value"])


def _required_str(obj: Any, name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise RemoteProtocolError(f"{where} has no string {name!r}")
    return value


def _list(obj: Any, name: str, where: str) -> tuple[Any, ...]:
    value = obj.get(name, [])
    if not isinstance(value, list):
        raise RemoteProtocolError(f"{where} has a non-list {name!r}")
    return tuple(value)


def _parse_subscribed(obj: Any) -> Subscribed:
    sub = _section(obj, "subscribed")
    interval = sub.get("heartbeat_interval_seconds")
    # NaN and Infinity are valid JSON to Python's parser, and either would mean "never late".
    if interval is not None and (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not math.isfinite(interval)
        or interval <= 0
    ):
        raise RemoteProtocolError(f"SUBSCRIBED has a bad heartbeat interval {interval!r}")
    return Subscribed(
        framework_id=FrameworkId(_required_id(sub, "framework_id", "SUBSCRIBED")),
        heartbeat_interval=None if interval is None else float(interval),
        master_info=sub.get("master_info", Dict()),
    )


def _parse_update(obj: Any) -> Update:
    status = _section(obj, "update", "status")
    uuid = status.get("uuid")
    if uuid is not None and not isinstance(uuid, str):
        raise RemoteProtocolError(f"UPDATE has a non-string uuid {uuid!r}")
    return Update(
        task_id=TaskId(_required_id(status, "task_id", "UPDATE status")),
        state=_required_str(status, "state", "UPDATE status"),
        uuid=uuid or None,
        status=status,
    )


def _parse_message(obj: Any) -> Message:
    msg = _section(obj, "message")
    return Message(
        agent_id=AgentId(_required_id(msg, "agent_id", "MESSAGE")),
        executor_id=ExecutorId(_required_id(msg, "executor_id", "MESSAGE")),
        data=_required_str(msg, "data", "MESSAGE"),
    )


def _parse_failure(obj: Any) -> Failure:
    fail = _section(obj, "failure")
    status = fail.get("status")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise RemoteProtocolError(f"FAILURE has a non-integer status {status!r}")
    agent = _optional_id(fail, "agent_id", "FAILURE")
    executor = _optional_id(fail, "executor_id", "FAILURE")
    return Failure(
        agent_id=None if agent is None else AgentId(agent),
        executor_id=None if executor is None else ExecutorId(executor),
        status=status,
    )


def _parse_error(obj: Any) -> Error:
    return Error(message=_required_str(_section(obj, "error"), "message", "ERROR"))


_SCHEDULER_PARSERS: dict[str, Callable[[Any], SchedulerEvent]] = {
    "SUBSCRIBED": _parse_subscribed,
    "OFFERS": lambda o: Offers(offers=_list(_section(o, "offers"), "offers", "OFFERS")),
    "INVERSE_OFFERS": lambda o: InverseOffers(
        inverse_offers=_list(_section(o, "inverse_offers"), "inverse_offers", "INVERSE_OFFERS")
    ),
    "RESCIND": lambda o: Rescind(
        offer_id=OfferId(_required_id(_section(o, "rescind"), "offer_id", "RESCIND"))
    ),
    "RESCIND_INVERSE_OFFER": lambda o: RescindInverseOffer(
        inverse_offer_id=OfferId(
            _required_id(
                _section(o, "rescind_inverse_offer"), "inverse_offer_id", "RESCIND_INVERSE_OFFER"
            )
        )
    ),
    "UPDATE": _parse_update,
    "UPDATE_OPERATION_STATUS": lambda o: UpdateOperationStatus(
        status=_section(o, "update_operation_status", "status")
    ),
    "MESSAGE": _parse_message,
    "FAILURE": _parse_failure,
    "ERROR": _parse_error,
    "HEARTBEAT": lambda o: Heartbeat(),
}


def parse_scheduler_event(record: bytes) -> SchedulerEvent:
    """Turn one RecordIO record from ``/api/v1/scheduler`` into a typed event.

    :raises RemoteProtocolError: if the record is not a JSON object with a ``type``, or a known
        event lacks a field the protocol relies on.
    """
    obj = _decode_json(record)
    parser = _SCHEDULER_PARSERS.get(obj["type"])
    if parser is None:
        return UnknownEvent(type=obj["type"], raw=obj)
    return parser(obj)


def _parse_executor_subscribed(obj: Any) -> ExecutorSubscribed:
    sub = _section(obj, "subscribed")
    for name in ("executor_info", "framework_info", "agent_info"):
        _section(obj, "subscribed", name)
    return ExecutorSubscribed(
        executor_info=sub["executor_info"],
        framework_info=sub["framework_info"],
        agent_info=sub["agent_info"],
        container_id=_optional_id(sub, "container_id", "SUBSCRIBED"),
    )


def _parse_launch(obj: Any) -> Launch:
    task = _section(obj, "launch", "task")
    return Launch(task_id=TaskId(_required_id(task, "task_id", "LAUNCH task")), task=task)


def _parse_launch_group(obj: Any) -> LaunchGroup:
    group = _section(obj, "launch_group", "task_group")
    tasks = _list(group, "tasks", "LAUNCH_GROUP task_group")
    ids = []
    for task in tasks:
        if not isinstance(task, dict):
            raise RemoteProtocolError(f"LAUNCH_GROUP has a non-object task {task!r}")
        ids.append(TaskId(_required_id(task, "task_id", "LAUNCH_GROUP task")))
    return LaunchGroup(task_ids=tuple(ids), tasks=tasks)


def _parse_kill(obj: Any) -> Kill:
    kill = _section(obj, "kill")
    return Kill(
        task_id=TaskId(_required_id(kill, "task_id", "KILL")), kill_policy=kill.get("kill_policy")
    )


def _parse_acknowledged(obj: Any) -> Acknowledged:
    ack = _section(obj, "acknowledged")
    return Acknowledged(
        task_id=TaskId(_required_id(ack, "task_id", "ACKNOWLEDGED")),
        uuid=_required_str(ack, "uuid", "ACKNOWLEDGED"),
    )


_EXECUTOR_PARSERS: dict[str, Callable[[Any], ExecutorEvent]] = {
    "SUBSCRIBED": _parse_executor_subscribed,
    "LAUNCH": _parse_launch,
    "LAUNCH_GROUP": _parse_launch_group,
    "KILL": _parse_kill,
    "ACKNOWLEDGED": _parse_acknowledged,
    "MESSAGE": lambda o: ExecutorMessage(
        data=_required_str(_section(o, "message"), "data", "MESSAGE")
    ),
    "SHUTDOWN": lambda o: Shutdown(),
    "ERROR": _parse_error,
    "HEARTBEAT": lambda o: Heartbeat(),
}


def parse_executor_event(record: bytes) -> ExecutorEvent:
    """Turn one RecordIO record from ``/api/v1/executor`` into a typed event.

    :raises RemoteProtocolError: as :func:`parse_scheduler_event`.
    """
    obj = _decode_json(record)
    parser = _EXECUTOR_PARSERS.get(obj["type"])
    if parser is None:
        return UnknownEvent(type=obj["type"], raw=obj)
    return parser(obj)


class EventStream:
    """RecordIO decoder plus event parser: bytes in, typed events out.

    ``parse`` is :func:`parse_scheduler_event` or :func:`parse_executor_event`. Any error leaves
    the stream in its decoder's sticky ``ERROR`` state.
    """

    __slots__ = ("_decoder", "_error", "_parse")

    def __init__(
        self,
        parse: Callable[[bytes], Any],
        *,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    ) -> None:
        self._decoder = RecordIODecoder(max_record_size=max_record_size)
        self._parse = parse
        self._error: RemoteProtocolError | None = None

    def __repr__(self) -> str:
        return f"<EventStream {self._decoder!r}>"

    def feed(self, data: bytes) -> None:
        """Buffer bytes from the stream; ``b""`` means the peer closed it."""
        self._decoder.feed(data)

    def next_event(self) -> Any | Sentinel:
        """Return the next event, ``NEED_DATA`` or ``END_OF_STREAM``.

        :raises RemoteProtocolError: on bad framing or a bad event; sticky.
        """
        if self._error is not None:
            raise RemoteProtocolError(f"event stream is unusable: {self._error}")
        record = self._decoder.next_record()
        if record is NEED_DATA or record is END_OF_STREAM:
            return record
        assert isinstance(record, bytes)
        try:
            return self._parse(record)
        except RemoteProtocolError as exc:
            self._error = exc
            raise


# --------------------------------------------------------------------------------------------
# Scheduler calls (scheduler.proto, message Call)


def id_value(ident: str | Mapping[str, Any]) -> str:
    """Accept an id as pymesos callers pass it (``{"value": ...}``) or as a plain string.

    >>> id_value({"value": "T1"}), id_value("T1")
    ('T1', 'T1')

    :raises LocalProtocolError: for anything else.
    """
    if isinstance(ident, str):
        value: Any = ident
    elif isinstance(ident, Mapping):
        value = ident.get("value")
    else:
        value = None
    if not isinstance(value, str) or not value:
        raise LocalProtocolError(f"not a Mesos id: {ident!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeCall:
    """``SUBSCRIBE``: ``framework_info`` as given by the caller; the id is added on re-subscribe."""

    framework_info: Payload = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TeardownCall:
    """``TEARDOWN``: remove the framework, killing all its tasks."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptCall:
    """``ACCEPT``: use offers for ``operations`` (v1 ``Offer.Operation`` objects)."""

    offer_ids: tuple[OfferId, ...]
    operations: tuple[Payload, ...] = field(repr=False)
    filters: Payload | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeclineCall:
    """``DECLINE``: refuse offers, for ``filters.refuse_seconds`` (Mesos default 5 s)."""

    offer_ids: tuple[OfferId, ...]
    filters: Payload | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviveCall:
    """``REVIVE``: clear offer filters and resume offers (for ``roles``, or all roles)."""

    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SuppressCall:
    """``SUPPRESS``: stop offers (for ``roles``, or all roles) until REVIVE."""

    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class KillCall:
    """``KILL``: kill a task; ``agent_id`` lets the master find tasks it has not seen."""

    task_id: TaskId
    agent_id: AgentId | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownCall:
    """``SHUTDOWN``: stop one custom executor."""

    executor_id: ExecutorId
    agent_id: AgentId


@dataclass(frozen=True, slots=True, kw_only=True)
class AcknowledgeCall:
    """``ACKNOWLEDGE``: confirm a status update that carried a ``uuid``."""

    agent_id: AgentId
    task_id: TaskId
    uuid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileCall:
    """``RECONCILE``: ask for the latest state of ``tasks`` (empty means all, implicitly)."""

    tasks: tuple[tuple[TaskId, AgentId | None], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageCall:
    """``MESSAGE``: send base64 ``data`` to an executor."""

    agent_id: AgentId
    executor_id: ExecutorId
    data: str


SchedulerCall: TypeAlias = (
    SubscribeCall
    | TeardownCall
    | AcceptCall
    | DeclineCall
    | ReviveCall
    | SuppressCall
    | KillCall
    | ShutdownCall
    | AcknowledgeCall
    | ReconcileCall
    | MessageCall
)


def _idobj(value: str) -> dict[str, str]:
    return {"value": value}


def _plain(obj: Any) -> Any:
    # addict.Dict is a dict subclass, so json can write it; copying through json also detaches
    # the call from a caller who keeps mutating their Dict after handing it to us.
    return json.loads(json.dumps(obj))


def _call_payload(call: SchedulerCall) -> tuple[str, dict[str, Any] | None]:
    match call:
        case SubscribeCall():
            return "SUBSCRIBE", None  # built by encode_scheduler_call
        case TeardownCall():
            return "TEARDOWN", None
        case AcceptCall(offer_ids=offer_ids, operations=operations, filters=filters):
            body: dict[str, Any] = {
                "offer_ids": [_idobj(o) for o in offer_ids],
                "operations": [_plain(op) for op in operations],
            }
            if filters is not None:
                body["filters"] = _plain(filters)
            return "ACCEPT", body
        case DeclineCall(offer_ids=offer_ids, filters=filters):
            body = {"offer_ids": [_idobj(o) for o in offer_ids]}
            if filters is not None:
                body["filters"] = _plain(filters)
            return "DECLINE", body
        case ReviveCall(roles=roles):
            return "REVIVE", ({"roles": list(roles)} if roles else None)
        case SuppressCall(roles=roles):
            return "SUPPRESS", ({"roles": list(roles)} if roles else None)
        case KillCall(task_id=task_id, agent_id=agent_id):
            body = {"task_id": _idobj(task_id)}
            if agent_id is not None:
                body["agent_id"] = _idobj(agent_id)
            return "KILL", body
        case ShutdownCall(executor_id=executor_id, agent_id=agent_id):
            return "SHUTDOWN", {"executor_id": _idobj(executor_id), "agent_id": _idobj(agent_id)}
        case AcknowledgeCall(agent_id=agent_id, task_id=task_id, uuid=uuid):
            return "ACKNOWLEDGE", {
                "agent_id": _idobj(agent_id),
                "task_id": _idobj(task_id),
                "uuid": uuid,
            }
        case ReconcileCall(tasks=tasks):
            entries = []
            for task_id, agent_id in tasks:
                entry = {"task_id": _idobj(task_id)}
                if agent_id is not None:
                    entry["agent_id"] = _idobj(agent_id)
                entries.append(entry)
            return "RECONCILE", {"tasks": entries}
        case MessageCall(agent_id=agent_id, executor_id=executor_id, data=data):
            return "MESSAGE", {
                "agent_id": _idobj(agent_id),
                "executor_id": _idobj(executor_id),
                "data": data,
            }
    raise LocalProtocolError(f"not a scheduler call: {call!r}")  # pragma: no cover


def _dumps(body: Mapping[str, Any]) -> bytes:
    # json's default separators, which are also what the recorded requests used: the encoded
    # calls of the transcripts compare byte for byte.
    return json.dumps(body).encode("utf-8")


def encode_scheduler_call(call: SchedulerCall, *, framework_id: str | None) -> bytes:
    """Encode *call* as the JSON body of ``POST /api/v1/scheduler``.

    Key order follows the recorded requests (``type``, ``framework_id``, then the payload).
    For SUBSCRIBE, a known *framework_id* goes both into ``framework_info.id`` and the top-level
    ``framework_id``: that is what makes the master treat it as a re-subscription
    (scheduler-http-api.md, SUBSCRIBE).

    :raises LocalProtocolError: if a non-SUBSCRIBE call has no framework id.
    """
    kind, payload = _call_payload(call)
    body: dict[str, Any] = {"type": kind}
    if isinstance(call, SubscribeCall):
        info = _plain(call.framework_info)
        if framework_id is not None:
            info["id"] = _idobj(framework_id)
            body["framework_id"] = _idobj(framework_id)
        body["subscribe"] = {"framework_info": info}
        return _dumps(body)
    if framework_id is None:
        raise LocalProtocolError(f"{kind} needs a framework id; subscribe first")
    body["framework_id"] = _idobj(framework_id)
    if payload is not None:
        body[kind.lower()] = payload
    return _dumps(body)


# --------------------------------------------------------------------------------------------
# Executor calls (executor.proto, message Call)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorSubscribeCall:
    """``SUBSCRIBE`` from an executor, with what the agent has not acknowledged yet."""

    unacknowledged_tasks: tuple[Payload, ...] = field(default=(), repr=False)
    unacknowledged_updates: tuple[Payload, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateCall:
    """``UPDATE``: a task status; it must carry a fresh ``uuid``."""

    status: Payload = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorMessageCall:
    """``MESSAGE`` from the executor to its scheduler; ``data`` is base64."""

    data: str


ExecutorCall: TypeAlias = ExecutorSubscribeCall | UpdateCall | ExecutorMessageCall


def encode_executor_call(call: ExecutorCall, *, executor_id: str, framework_id: str) -> bytes:
    """Encode *call* as the JSON body of ``POST /api/v1/executor``.

    Each unacknowledged update is sent as a ``Call.Update`` (``{"status": ...}``), which is what
    executor.proto declares for ``Subscribe.unacknowledged_updates``.
    """
    body: dict[str, Any] = {"type": "", "executor_id": _idobj(executor_id)}
    body["framework_id"] = _idobj(framework_id)
    match call:
        case ExecutorSubscribeCall(unacknowledged_tasks=tasks, unacknowledged_updates=updates):
            body["type"] = "SUBSCRIBE"
            body["subscribe"] = {
                "unacknowledged_tasks": [_plain(t) for t in tasks],
                "unacknowledged_updates": [{"status": _plain(s)} for s in updates],
            }
        case UpdateCall(status=status):
            body["type"] = "UPDATE"
            body["update"] = {"status": _plain(status)}
        case ExecutorMessageCall(data=data):
            body["type"] = "MESSAGE"
            body["message"] = {"data": data}
        case _:  # pragma: no cover
            raise LocalProtocolError(f"not an executor call: {call!r}")
    return _dumps(body)


def offer_ids_of(offer_ids: str | Mapping[str, Any] | Iterable[Any]) -> tuple[OfferId, ...]:
    """Normalise one offer id or a sequence of them, as pymesos accepted both."""
    if isinstance(offer_ids, str | Mapping):
        return (OfferId(id_value(offer_ids)),)
    return tuple(OfferId(id_value(o)) for o in offer_ids)


def as_tuple(items: Sequence[Any] | Any) -> tuple[Any, ...]:
    """One mapping or a sequence of them, as a tuple."""
    if isinstance(items, Mapping):
        return (items,)
    return tuple(items)
