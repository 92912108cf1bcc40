"""Parsing events: RecordIO records in, typed events (``_event_types``) out.

Parsing validates only what the protocol needs (the type, the ids the state machines use) and
raises :class:`~toil_mesos.errors.RemoteProtocolError` on anything else malformed. An event
type we do not know becomes :class:`UnknownEvent` rather than an error, because Mesos adds
event types over time (``UPDATE_OPERATION_STATUS`` arrived in 1.6).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from addict import Dict

from toil_mesos.errors import RemoteProtocolError
from toil_mesos.mesos._event_types import (
    Acknowledged,
    AgentId,
    Error,
    ExecutorEvent,
    ExecutorId,
    ExecutorMessage,
    ExecutorSubscribed,
    Failure,
    FrameworkId,
    Heartbeat,
    InverseOffers,
    Kill,
    Launch,
    LaunchGroup,
    Message,
    OfferId,
    Offers,
    Rescind,
    RescindInverseOffer,
    SchedulerEvent,
    Shutdown,
    Subscribed,
    TaskId,
    UnknownEvent,
    Update,
    UpdateOperationStatus,
)
from toil_mesos.mesos._recordio import (
    DEFAULT_MAX_RECORD_SIZE,
    END_OF_STREAM,
    NEED_DATA,
    RecordIODecoder,
    Sentinel,
)

__all__ = [
    "EventStream",
    "parse_executor_event",
    "parse_scheduler_event",
]

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
