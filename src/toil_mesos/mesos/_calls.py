"""The calls of the Mesos v1 scheduler and executor HTTP APIs, and their JSON encoding.

Calls are what we POST: each a small frozen, slotted, keyword-only dataclass, encoded by
:func:`encode_scheduler_call` or :func:`encode_executor_call`. They carry a ``Call`` suffix so
that, for example, the scheduler's ``KILL`` call and the executor's ``KILL`` event
(``_event_types.Kill``) do not share a name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from toil_mesos.errors import LocalProtocolError
from toil_mesos.mesos._event_types import (
    AgentId,
    ExecutorId,
    OfferId,
    Payload,
    TaskId,
)

__all__ = [
    "AcceptCall",
    "AcknowledgeCall",
    "DeclineCall",
    "ExecutorCall",
    "ExecutorMessageCall",
    "ExecutorSubscribeCall",
    "KillCall",
    "MessageCall",
    "ReconcileCall",
    "ReviveCall",
    "SchedulerCall",
    "ShutdownCall",
    "SubscribeCall",
    "SuppressCall",
    "TeardownCall",
    "UpdateCall",
    "as_tuple",
    "encode_executor_call",
    "encode_scheduler_call",
    "id_value",
    "offer_ids_of",
]

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
