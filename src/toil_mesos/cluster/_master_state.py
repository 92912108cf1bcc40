"""The mini-cluster master as a sans-I/O state machine: frameworks, agents, offers, tasks.

Inputs are parsed calls (a framework's SUBSCRIBE and other scheduler calls, an agent's
registration and calls), stream closures and the passage of time (:meth:`MasterState.tick`).
Outputs are :data:`Output` values: :class:`Send` one event (a JSON object) on a stream, or
:class:`Close` a stream with the chunked last-chunk. The HTTP shell (``master.py``) owns the
sockets and threads; it feeds inputs in under one lock and writes outputs out. Nothing here
reads a clock: monotonic ``now`` comes in as an argument, and status timestamps come from an
injected wall clock, so every rule below is tested without sockets, threads or sleeps.

Behaviour follows the Mesos 1.12 master (``src/master/master.cpp``, ``validation.cpp``,
``http.cpp``) and the recorded transcripts in ``shared/mesos-transcripts``, which win where
they differ from the docs: error texts, the shape of SUBSCRIBED, OFFERS and UPDATE events,
reconciliation states, reasons and messages, TASK_ERROR for invalid tasks with no ``uuid``.

Lifecycles are tables (:data:`FRAMEWORK_TRANSITIONS`, :data:`AGENT_TRANSITIONS`); an input that
is not in the table for the current state is our own bug and raises ``LocalProtocolError``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import itertools
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from toil_mesos.cluster._offers import DEFAULT_ROLE, ResourceBag, ResourceError
from toil_mesos.errors import LocalProtocolError, MesosError

__all__ = [
    "AGENT_TRANSITIONS",
    "FRAMEWORK_TRANSITIONS",
    "MESOS_VERSION",
    "TERMINAL_STATES",
    "AgentLifecycle",
    "AgentRegistration",
    "CallRejected",
    "Close",
    "FrameworkLifecycle",
    "HeaderLookup",
    "MasterConfig",
    "MasterState",
    "Output",
    "Send",
    "Subscription",
    "executor_info_text",
    "parse_agent_call",
    "parse_scheduler_request",
]

logger = logging.getLogger(__name__)

MESOS_VERSION: Final = "1.12.0"

#: Task states after which the task holds no resources (``protobuf::isTerminalState``).
TERMINAL_STATES: Final = frozenset(
    {
        "TASK_FINISHED",
        "TASK_FAILED",
        "TASK_KILLED",
        "TASK_LOST",
        "TASK_ERROR",
        "TASK_DROPPED",
        "TASK_GONE",
        "TASK_GONE_BY_OPERATOR",
    }
)

SCHEDULER_CALL_TYPES: Final = frozenset(
    {
        "SUBSCRIBE",
        "TEARDOWN",
        "ACCEPT",
        "DECLINE",
        "ACCEPT_INVERSE_OFFERS",
        "DECLINE_INVERSE_OFFERS",
        "REVIVE",
        "KILL",
        "SHUTDOWN",
        "ACKNOWLEDGE",
        "ACKNOWLEDGE_OPERATION_STATUS",
        "RECONCILE",
        "RECONCILE_OPERATIONS",
        "MESSAGE",
        "REQUEST",
        "SUPPRESS",
        "UPDATE_FRAMEWORK",
    }
)

#: The call field each call type must carry (``validation::scheduler::call::validate``).
_REQUIRED_FIELD: Final = {
    "ACCEPT": "accept",
    "DECLINE": "decline",
    "ACCEPT_INVERSE_OFFERS": "accept_inverse_offers",
    "DECLINE_INVERSE_OFFERS": "decline_inverse_offers",
    "KILL": "kill",
    "SHUTDOWN": "shutdown",
    "ACKNOWLEDGE": "acknowledge",
    "ACKNOWLEDGE_OPERATION_STATUS": "acknowledge_operation_status",
    "RECONCILE": "reconcile",
    "RECONCILE_OPERATIONS": "reconcile_operations",
    "MESSAGE": "message",
    "REQUEST": "request",
    "UPDATE_FRAMEWORK": "update_framework",
}

_MASTER_CAPABILITIES: Final = ("AGENT_UPDATE", "AGENT_DRAINING", "QUOTA_V2")
_AGENT_CAPABILITIES: Final = (
    "MULTI_ROLE",
    "HIERARCHICAL_ROLE",
    "RESERVATION_REFINEMENT",
    "RESOURCE_PROVIDER",
    "RESIZE_VOLUME",
    "AGENT_OPERATION_FEEDBACK",
    "AGENT_DRAINING",
    "TASK_RESOURCE_LIMITS",
)

#: Mesos' default ``Filters.refuse_seconds``.
DEFAULT_REFUSE_SECONDS: Final = 5.0
#: ``--min_allocatable_resources=cpus:0.01|mem:32`` (the recorded master's default).
_MIN_CPUS: Final = 0.01
_MIN_MEM: Final = 32.0
#: ``--max_completed_tasks_per_framework``.
_MAX_COMPLETED_TASKS: Final = 1000
#: ``--max_completed_frameworks``.
_MAX_COMPLETED_FRAMEWORKS: Final = 50


# ---------------------------------------------------------------------------------------------
# Outputs and errors


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Write *event* as one RecordIO record on the stream *stream_id*."""

    stream_id: str
    event: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    """End the stream *stream_id* with the chunked last-chunk."""

    stream_id: str


Output = Send | Close


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    """The answer to a SUBSCRIBE: the new stream's id, and what to send (on it and others)."""

    stream_id: str
    framework_id: str | None
    outputs: tuple[Output, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRegistration:
    """The answer to an agent's REGISTER: its stream id, its agent id, and what to send."""

    stream_id: str
    agent_id: str
    outputs: tuple[Output, ...]


class CallRejected(MesosError):
    """A request the master answers with an HTTP error instead of 202.

    ``message`` is the exact ``text/plain`` body Mesos sends (recorded), ``headers`` any extra
    response headers (``Allow`` for 405).
    """

    def __init__(
        self, status: int, message: str, *, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.headers = headers


# ---------------------------------------------------------------------------------------------
# Lifecycle tables


class FrameworkLifecycle(enum.Enum):
    """Where a framework is: subscribed, within its failover timeout, or learned from agents."""

    CONNECTED = "CONNECTED"
    DISCONNECTED = "DISCONNECTED"
    #: Known only from an agent's registration after a master restart; not yet subscribed.
    RECOVERED = "RECOVERED"
    REMOVED = "REMOVED"


class AgentLifecycle(enum.Enum):
    """Where an agent is: streaming, gone for less than ``agent_timeout``, or lost."""

    CONNECTED = "CONNECTED"
    DISCONNECTED = "DISCONNECTED"
    UNREACHABLE = "UNREACHABLE"


_F = FrameworkLifecycle
_A = AgentLifecycle

FRAMEWORK_TRANSITIONS: Final[Mapping[tuple[FrameworkLifecycle, str], FrameworkLifecycle]] = {
    (_F.CONNECTED, "subscribe"): _F.CONNECTED,  # failover onto a new stream
    (_F.CONNECTED, "stream_closed"): _F.DISCONNECTED,
    (_F.CONNECTED, "teardown"): _F.REMOVED,
    (_F.DISCONNECTED, "subscribe"): _F.CONNECTED,
    (_F.DISCONNECTED, "failover_timeout"): _F.REMOVED,
    (_F.RECOVERED, "subscribe"): _F.CONNECTED,
    (_F.RECOVERED, "failover_timeout"): _F.REMOVED,
}

AGENT_TRANSITIONS: Final[Mapping[tuple[AgentLifecycle, str], AgentLifecycle]] = {
    (_A.CONNECTED, "register"): _A.CONNECTED,  # re-registration onto a new stream
    (_A.CONNECTED, "stream_closed"): _A.DISCONNECTED,
    (_A.DISCONNECTED, "register"): _A.CONNECTED,
    (_A.DISCONNECTED, "timeout"): _A.UNREACHABLE,
    (_A.UNREACHABLE, "register"): _A.CONNECTED,
}


_S = TypeVar("_S", FrameworkLifecycle, AgentLifecycle)


def _next(table: Mapping[tuple[_S, str], _S], state: _S, event: str, what: str) -> _S:
    try:
        return table[(state, event)]
    except KeyError:
        raise LocalProtocolError(f"{what}: no transition for {event!r} in state {state}") from None


# ---------------------------------------------------------------------------------------------
# Request parsing (the HTTP-level checks of ``Master::Http::scheduler``)


def _media_accepted(accept: str | None, media: str) -> bool:
    if accept is None or not accept.strip():
        return True
    kind = media.split("/")[0]
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        candidate = fields[0].lower()
        quality = 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if quality > 0 and candidate in (media, f"{kind}/*", "*/*"):
            return True
    return False


def _json_error(body: bytes) -> str | None:
    try:
        json.loads(body)
    except UnicodeDecodeError as exc:
        return f"syntax error at line 1 near: {body[exc.start : exc.start + 32]!r}"
    except json.JSONDecodeError as exc:
        return f"syntax error at line {exc.lineno} near: {exc.doc[exc.pos :]}"
    return None


class HeaderLookup(Protocol):
    """Request headers, looked up by name (``http.client.HTTPMessage``, or a dict in tests)."""

    def get(self, name: str, /) -> str | None: ...


def parse_scheduler_request(method: str, headers: HeaderLookup, body: bytes) -> dict[str, Any]:
    """Check a request to ``/api/v1/scheduler`` as Mesos does, and return the call.

    *headers* must look names up case-insensitively (``http.client.HTTPMessage`` does). The
    checks run in Mesos' order: method, Content-Type, JSON, call validation, Accept (SUBSCRIBE
    only), Mesos-Stream-Id on a SUBSCRIBE. An unknown ``type`` string counts as a missing type,
    because Mesos' JSON-to-protobuf conversion drops unknown enum values (recorded).

    :raises CallRejected: with the recorded status and message.
    """
    if method != "POST":
        raise CallRejected(
            405,
            f"405 Method Not Allowed. Expecting one of {{ 'POST' }}, but received '{method}'.",
            headers=(("Allow", "POST"),),
        )
    content_type = headers.get("Content-Type")
    if content_type is None:
        raise CallRejected(400, "Expecting 'Content-Type' to be present")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise CallRejected(
            415, "Expecting 'Content-Type' of application/json or application/x-protobuf"
        )
    error = _json_error(body)
    if error is not None:
        raise CallRejected(400, f"Failed to parse body into JSON: {error}")
    call = json.loads(body)
    if not isinstance(call, dict):
        raise CallRejected(
            400, "Failed to convert JSON into Call protobuf: Expecting a JSON object"
        )
    problem = _validate_call(call)
    if problem is not None:
        raise CallRejected(400, f"Failed to validate scheduler::Call: {problem}")
    if call["type"] == "SUBSCRIBE":
        if not _media_accepted(headers.get("Accept"), "application/json"):
            raise CallRejected(
                406, "Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'"
            )
        if headers.get("Mesos-Stream-Id") is not None:
            raise CallRejected(
                400, "Subscribe calls should not include the 'Mesos-Stream-Id' header"
            )
    return call


def _validate_call(call: dict[str, Any]) -> str | None:
    kind = call.get("type")
    if kind not in SCHEDULER_CALL_TYPES:
        return "Expecting 'type' to be present"
    if kind == "SUBSCRIBE":
        subscribe = call.get("subscribe")
        if not isinstance(subscribe, dict):
            return "Expecting 'subscribe' to be present"
        info = subscribe.get("framework_info")
        if not isinstance(info, dict):
            return "Not initialized: subscribe.framework_info"
        if _value(info.get("id")) != _value(call.get("framework_id")):
            return "'framework_id' differs from 'subscribe.framework_info.id'"
        return None
    if _value(call.get("framework_id")) is None:
        return "Expecting 'framework_id' to be present"
    required = _REQUIRED_FIELD.get(kind)
    if required is not None and not isinstance(call.get(required), dict):
        return f"Expecting '{required}' to be present"
    return None


def parse_agent_call(body: bytes) -> dict[str, Any]:
    """Parse a call on ``/internal/agent/call`` (``_protocol.AGENT_CALLS``).

    :raises CallRejected: 400 naming what is wrong.
    """
    try:
        call = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CallRejected(400, f"Failed to parse body into JSON: {exc}") from None
    if not isinstance(call, dict):
        raise CallRejected(400, f"Expecting a JSON object, got {call!r}")
    kind = call.get("type")
    key = kind.lower() if isinstance(kind, str) else None
    if kind not in ("UPDATE", "MESSAGE", "EXECUTOR_EXITED") or key is None:
        raise CallRejected(400, f"Unknown agent call type {kind!r}")
    if not isinstance(call.get(key), dict):
        raise CallRejected(400, f"Expecting '{key}' to be present")
    return call


# ---------------------------------------------------------------------------------------------
# Helpers on v1 JSON


def _value(obj: Any) -> str | None:
    """The ``value`` of an ID object (``{"value": "..."}``), or ``None``."""
    if isinstance(obj, Mapping):
        value = obj.get("value")
        return value if isinstance(value, str) else None
    return None


def _id(value: str) -> dict[str, str]:
    return {"value": value}


def _ipv4_uint32(ip: str) -> int:
    # ``MasterInfo.ip`` is the address in network byte order read as a little-endian uint32
    # (recorded: 127.0.0.1 -> 16777343).
    try:
        parts = [int(p) for p in ip.split(".")]
    except ValueError:
        return 0
    if len(parts) != 4 or not all(0 <= p <= 255 for p in parts):
        return 0
    return parts[0] | parts[1] << 8 | parts[2] << 16 | parts[3] << 24


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        return address, 0


# Protobuf text format of an ExecutorInfo, for the "not compatible" TASK_ERROR message. Mesos
# prints fields in field-number order; these tables give that order for the messages an
# ExecutorInfo usually holds (unknown fields follow in JSON order).
_FIELD_ORDER: Final[Mapping[str, tuple[str, ...]]] = {
    "ExecutorInfo": (
        "executor_id",
        "data",
        "resources",
        "command",
        "framework_id",
        "name",
        "source",
        "container",
        "discovery",
        "shutdown_grace_period",
        "labels",
        "type",
    ),
    "Resource": (
        "name",
        "type",
        "scalar",
        "ranges",
        "set",
        "role",
        "disk",
        "reservation",
        "revocable",
        "shared",
        "allocation_info",
        "provider_id",
        "reservations",
    ),
    "CommandInfo": ("uris", "environment", "value", "user", "shell", "arguments"),
    "URI": ("value", "executable", "extract", "cache", "output_file"),
    "Environment": ("variables",),
    "Variable": ("name", "value", "type", "secret"),
    "Ranges": ("range",),
    "Range": ("begin", "end"),
}
_CHILD_TYPE: Final[Mapping[str, str]] = {
    "resources": "Resource",
    "command": "CommandInfo",
    "uris": "URI",
    "environment": "Environment",
    "variables": "Variable",
    "ranges": "Ranges",
    "range": "Range",
}
_ENUM_FIELDS: Final = frozenset({"type"})
_BYTES_FIELDS: Final = frozenset({"data"})


def _text_scalar(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if name in _ENUM_FIELDS and re.fullmatch(r"[A-Z][A-Z0-9_]*", text):
        return text
    if name in _BYTES_FIELDS:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = text.encode()
    else:
        raw = text.encode()
    escaped = "".join(
        chr(b)
        if 32 <= b < 127 and chr(b) not in "\"\\'"
        else ("\\" + chr(b) if chr(b) in "\"\\'" else f"\\{b:03o}")
        for b in raw
    )
    return f'"{escaped}"'


def _text_message(obj: Mapping[str, Any], kind: str, indent: str) -> list[str]:
    order = _FIELD_ORDER.get(kind, ())
    keys = [k for k in order if k in obj] + [k for k in obj if k not in order]
    lines: list[str] = []
    for key in keys:
        values = obj[key] if isinstance(obj[key], list) else [obj[key]]
        for value in values:
            if isinstance(value, Mapping):
                lines.append(f"{indent}{key} {{")
                lines.extend(_text_message(value, _CHILD_TYPE.get(key, key), indent + "  "))
                lines.append(f"{indent}}}")
            else:
                lines.append(f"{indent}{key}: {_text_scalar(key, value)}")
    return lines


def executor_info_text(executor: Mapping[str, Any]) -> str:
    """An ExecutorInfo in protobuf text format, as ``stringify(ExecutorInfo)`` prints it.

    >>> print(executor_info_text({"executor_id": {"value": "E1"}, "type": "CUSTOM"}), end="")
    executor_id {
      value: "E1"
    }
    type: CUSTOM
    """
    return "".join(line + "\n" for line in _text_message(executor, "ExecutorInfo", ""))


# ---------------------------------------------------------------------------------------------
# Records (mutable bookkeeping owned by MasterState)


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterConfig:
    """What the master says about itself, and its timers (seconds)."""

    master_id: str
    ip: str = "127.0.0.1"
    port: int = 5050
    hostname: str = "localhost"
    heartbeat_interval: float = 15.0
    offer_interval: float = 1.0
    agent_timeout: float = 10.0
    work_dir: str = ""


@dataclass(slots=True, kw_only=True)
class _Task:
    info: dict[str, Any]
    framework_id: str
    agent_id: str
    executor_id: str | None
    resources: ResourceBag
    role: str
    state: str = "TASK_STAGING"
    latest: dict[str, Any] | None = None
    statuses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def task_id(self) -> str:
        return _value(self.info.get("task_id")) or ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(slots=True, kw_only=True)
class _Offer:
    offer_id: str
    framework_id: str
    agent_id: str
    resources: ResourceBag


@dataclass(slots=True, kw_only=True)
class _Filter:
    resources: ResourceBag
    expires: float


@dataclass(slots=True, kw_only=True)
class _Framework:
    framework_id: str
    info: dict[str, Any]
    state: FrameworkLifecycle
    stream_id: str | None = None
    registered_time: float = 0.0
    unregistered_time: float = 0.0
    disconnected_at: float | None = None
    next_heartbeat: float | None = None
    suppressed: bool = False
    filters: dict[str, list[_Filter]] = field(default_factory=dict)
    tasks: dict[str, _Task] = field(default_factory=dict)
    unreachable_tasks: dict[str, _Task] = field(default_factory=dict)
    completed_tasks: list[_Task] = field(default_factory=list)
    order: int = 0

    @property
    def capabilities(self) -> list[str]:
        caps = self.info.get("capabilities") or []
        return [
            c["type"] for c in caps if isinstance(c, Mapping) and isinstance(c.get("type"), str)
        ]

    @property
    def partition_aware(self) -> bool:
        return "PARTITION_AWARE" in self.capabilities

    @property
    def role(self) -> str:
        roles = self.info.get("roles")
        if isinstance(roles, list) and roles and isinstance(roles[0], str):
            return roles[0]
        role = self.info.get("role")
        return role if isinstance(role, str) and role else DEFAULT_ROLE

    @property
    def failover_timeout(self) -> float:
        value = self.info.get("failover_timeout", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0


@dataclass(slots=True, kw_only=True)
class _Agent:
    agent_id: str
    info: dict[str, Any]
    address: str
    total: ResourceBag
    state: AgentLifecycle
    stream_id: str | None
    registered_time: float
    disconnected_at: float | None = None
    unreachable_time: float | None = None
    next_heartbeat: float | None = None
    #: (framework id, executor id) -> ExecutorInfo as launched.
    executors: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    order: int = 0

    @property
    def hostname(self) -> str:
        hostname = self.info.get("hostname")
        return hostname if isinstance(hostname, str) and hostname else self.ip

    @property
    def ip(self) -> str:
        return _split_address(self.address)[0]

    @property
    def port(self) -> int:
        return _split_address(self.address)[1]


# ---------------------------------------------------------------------------------------------
# The state machine


class MasterState:
    """Everything the master knows, and every rule it applies.

    Not thread-safe: the HTTP shell serialises all calls under one lock.

    :param config: identity and timers.
    :param wall_clock: seconds since the epoch, for status and registration timestamps.
    :param new_uuid: stream ids (``Mesos-Stream-Id``); injected so tests get stable ids.
    """

    def __init__(
        self,
        config: MasterConfig,
        *,
        wall_clock: Callable[[], float],
        new_uuid: Callable[[], str] | None = None,
        start_time: float | None = None,
    ) -> None:
        self.config = config
        self._wall = wall_clock
        self._new_uuid = new_uuid or (lambda: str(uuid.uuid4()))
        self._start_time = wall_clock() if start_time is None else start_time
        self._frameworks: dict[str, _Framework] = {}
        self._completed_frameworks: list[_Framework] = []
        self._removed_framework_ids: set[str] = set()
        self._agents: dict[str, _Agent] = {}
        self._offers: dict[str, _Offer] = {}
        self._framework_ids = itertools.count()
        self._agent_ids = itertools.count()
        self._offer_ids = itertools.count()
        self._order = itertools.count()
        self._next_allocation: float | None = None
        self._allocate_soon = True

    def __repr__(self) -> str:
        return (
            f"<MasterState id={self.config.master_id} frameworks={len(self._frameworks)}"
            f" agents={len(self._agents)} offers={len(self._offers)}>"
        )

    # -- framework subscription ---------------------------------------------------------------

    @property
    def master_info(self) -> dict[str, Any]:
        """``MasterInfo`` as SUBSCRIBED carries it (recorded shape)."""
        cfg = self.config
        return {
            "id": cfg.master_id,
            "ip": _ipv4_uint32(cfg.ip),
            "port": cfg.port,
            "pid": f"master@{cfg.ip}:{cfg.port}",
            "hostname": cfg.hostname,
            "version": MESOS_VERSION,
            "address": {"hostname": cfg.hostname, "ip": cfg.ip, "port": cfg.port},
            "capabilities": [{"type": c} for c in _MASTER_CAPABILITIES],
        }

    def subscribe(self, call: Mapping[str, Any], *, now: float) -> Subscription:
        """A validated SUBSCRIBE call: open a stream for it.

        A new framework gets ``<master-id>-NNNN``; a framework id the master knows fails over
        (the old stream gets ERROR "Framework failed over" and is closed); an unknown id is a
        framework re-subscribing after a master restart and is accepted; a removed id gets
        ERROR "Framework has been removed" on the new stream, which then closes.
        """
        stream_id = self._new_uuid()
        info = dict(call["subscribe"]["framework_info"])
        caps = {c.get("type") for c in info.get("capabilities") or [] if isinstance(c, dict)}
        if "roles" in info and "MULTI_ROLE" not in caps:
            return self._refuse_subscription(
                stream_id,
                "'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE"
                " capable",
            )
        requested = _value(info.get("id"))
        if requested is not None and requested in self._removed_framework_ids:
            return self._refuse_subscription(stream_id, "Framework has been removed")

        outputs: list[Output] = []
        framework = self._frameworks.get(requested) if requested else None
        if framework is None:
            framework_id = requested or self._new_framework_id()
            info["id"] = _id(framework_id)
            framework = _Framework(
                framework_id=framework_id,
                info=info,
                state=FrameworkLifecycle.CONNECTED,
                registered_time=self._wall(),
                order=next(self._order),
            )
            self._frameworks[framework_id] = framework
            logger.info("Framework %s (%s) subscribed", framework_id, info.get("name"))
        else:
            framework_id = framework.framework_id
            old_stream = framework.stream_id
            framework.state = _next(
                FRAMEWORK_TRANSITIONS, framework.state, "subscribe", f"framework {framework_id}"
            )
            if old_stream is not None:
                outputs.append(
                    Send(
                        stream_id=old_stream,
                        event={"type": "ERROR", "error": {"message": "Framework failed over"}},
                    )
                )
                outputs.append(Close(stream_id=old_stream))
            info["id"] = _id(framework_id)
            framework.info = info
            if not framework.registered_time:
                framework.registered_time = self._wall()
            framework.disconnected_at = None
            self._remove_offers_of(framework)
            logger.info("Framework %s failed over to stream %s", framework_id, stream_id)
        framework.stream_id = stream_id
        framework.suppressed = bool(
            set(call["subscribe"].get("suppressed_roles") or []) & {framework.role}
        )
        framework.filters.clear()
        framework.next_heartbeat = now + self.config.heartbeat_interval
        outputs.append(
            Send(
                stream_id=stream_id,
                event={
                    "type": "SUBSCRIBED",
                    "subscribed": {
                        "framework_id": _id(framework_id),
                        "heartbeat_interval_seconds": float(self.config.heartbeat_interval),
                        "master_info": self.master_info,
                    },
                },
            )
        )
        outputs.append(Send(stream_id=stream_id, event={"type": "HEARTBEAT"}))
        self._allocate_soon = True
        return Subscription(stream_id=stream_id, framework_id=framework_id, outputs=tuple(outputs))

    def _refuse_subscription(self, stream_id: str, message: str) -> Subscription:
        logger.warning("Refusing subscription: %s", message)
        return Subscription(
            stream_id=stream_id,
            framework_id=None,
            outputs=(
                Send(stream_id=stream_id, event={"type": "ERROR", "error": {"message": message}}),
                Close(stream_id=stream_id),
            ),
        )

    def _new_framework_id(self) -> str:
        while True:
            candidate = f"{self.config.master_id}-{next(self._framework_ids):04d}"
            if candidate not in self._frameworks and candidate not in self._removed_framework_ids:
                return candidate

    def framework_stream_closed(self, stream_id: str, *, now: float) -> list[Output]:
        """A framework's SUBSCRIBE connection ended (client gone, or we closed it)."""
        framework = self._framework_by_stream(stream_id)
        if framework is None:
            return []
        framework.state = _next(
            FRAMEWORK_TRANSITIONS, framework.state, "stream_closed", framework.framework_id
        )
        framework.stream_id = None
        framework.disconnected_at = now
        framework.unregistered_time = self._wall()
        framework.next_heartbeat = None
        self._remove_offers_of(framework)
        logger.info(
            "Framework %s disconnected; failover timeout %ss",
            framework.framework_id,
            framework.failover_timeout,
        )
        return []

    def _framework_by_stream(self, stream_id: str) -> _Framework | None:
        for framework in self._frameworks.values():
            if framework.stream_id == stream_id:
                return framework
        return None

    # -- scheduler calls ----------------------------------------------------------------------

    def call(self, call: Mapping[str, Any], *, stream_id: str | None, now: float) -> list[Output]:
        """A validated non-SUBSCRIBE call (see :func:`parse_scheduler_request`).

        :raises CallRejected: for an unknown framework, a framework that is not subscribed, a
            missing or wrong ``Mesos-Stream-Id`` (recorded messages).
        """
        framework_id = _value(call.get("framework_id")) or ""
        framework = self._frameworks.get(framework_id)
        if framework is None:
            raise CallRejected(400, "Framework cannot be found")
        if framework.state is not FrameworkLifecycle.CONNECTED:
            raise CallRejected(403, "Framework is not subscribed")
        if stream_id is None:
            raise CallRejected(
                400, "All non-subscribe calls should include the 'Mesos-Stream-Id' header"
            )
        if stream_id != framework.stream_id:
            raise CallRejected(
                400,
                f"The stream ID '{stream_id}' included in this request didn't match the stream"
                f" ID currently associated with framework ID {framework_id}",
            )
        kind = call["type"]
        handler = self._CALL_HANDLERS.get(kind)
        if handler is None:
            logger.info("Ignoring %s call from framework %s", kind, framework_id)
            return []
        body = call.get(kind.lower())
        return handler(self, framework, body if isinstance(body, Mapping) else {}, now)

    def _teardown(self, framework: _Framework, body: Mapping[str, Any], now: float) -> list[Output]:
        framework.state = _next(
            FRAMEWORK_TRANSITIONS, framework.state, "teardown", framework.framework_id
        )
        logger.info("Framework %s tore itself down", framework.framework_id)
        return self._remove_framework(framework)

    def _revive(self, framework: _Framework, body: Mapping[str, Any], now: float) -> list[Output]:
        framework.suppressed = False
        framework.filters.clear()
        self._allocate_soon = True
        return []

    def _suppress(self, framework: _Framework, body: Mapping[str, Any], now: float) -> list[Output]:
        framework.suppressed = True
        return []

    def _decline(self, framework: _Framework, body: Mapping[str, Any], now: float) -> list[Output]:
        refuse = _refuse_seconds(body.get("filters"))
        for offer_id in (_value(o) for o in body.get("offer_ids") or []):
            offer = self._offers.get(offer_id or "")
            if offer is None or offer.framework_id != framework.framework_id:
                logger.warning("Ignoring decline of offer %s: no longer valid", offer_id)
                continue
            del self._offers[offer.offer_id]
            self._add_filter(framework, offer.agent_id, offer.resources, refuse, now)
        return []

    def _kill(self, framework: _Framework, body: Mapping[str, Any], now: float) -> list[Output]:
        task_id = _value(body.get("task_id")) or ""
        task = framework.tasks.get(task_id)
        if task is None:
            # Mesos reconciles an unknown task explicitly (recorded: TASK_LOST "Reconciliation:
            # Task is unknown to the agent").
            return self._reconcile_one(framework, task_id, _value(body.get("agent_id")))
        agent = self._agents.get(task.agent_id)
        if agent is None or agent.stream_id is None:
            logger.warning("Cannot kill task %s: agent %s is not connected", task_id, task.agent_id)
            return []
        return [
            Send(
                stream_id=agent.stream_id,
                event={
                    "type": "KILL_TASK",
                    "kill_task": {
                        "framework_id": _id(framework.framework_id),
                        "task_id": _id(task_id),
                    },
                },
            )
        ]

    def _shutdown(self, framework: _Framework, body: Mapping[str, Any], now: float) -> list[Output]:
        agent = self._agents.get(_value(body.get("agent_id")) or "")
        if agent is None or agent.stream_id is None:
            return []
        return [
            Send(
                stream_id=agent.stream_id,
                event={
                    "type": "SHUTDOWN_EXECUTOR",
                    "shutdown_executor": {
                        "framework_id": _id(framework.framework_id),
                        "executor_id": body.get("executor_id"),
                    },
                },
            )
        ]

    def _acknowledge(
        self, framework: _Framework, body: Mapping[str, Any], now: float
    ) -> list[Output]:
        task_id = _value(body.get("task_id")) or ""
        ack_uuid = body.get("uuid")
        outputs: list[Output] = []
        agent = self._agents.get(_value(body.get("agent_id")) or "")
        if agent is not None and agent.stream_id is not None:
            outputs.append(
                Send(
                    stream_id=agent.stream_id,
                    event={
                        "type": "ACKNOWLEDGE",
                        "acknowledge": {
                            "framework_id": _id(framework.framework_id),
                            "task_id": _id(task_id),
                            "uuid": ack_uuid,
                        },
                    },
                )
            )
        task = framework.tasks.get(task_id)
        if (
            task is not None
            and task.terminal
            and task.latest is not None
            and task.latest.get("uuid") == ack_uuid
        ):
            self._complete_task(framework, task)
        return outputs

    def _reconcile(
        self, framework: _Framework, body: Mapping[str, Any], now: float
    ) -> list[Output]:
        tasks = body.get("tasks") or []
        if not tasks:
            return [
                self._send_update(framework, self._latest_state(t))
                for t in list(framework.tasks.values())
            ]
        outputs: list[Output] = []
        for item in tasks:
            if isinstance(item, Mapping):
                task_id = _value(item.get("task_id")) or ""
                outputs.extend(
                    self._reconcile_one(framework, task_id, _value(item.get("agent_id")))
                )
        return outputs

    def _message(self, framework: _Framework, body: Mapping[str, Any], now: float) -> list[Output]:
        agent = self._agents.get(_value(body.get("agent_id")) or "")
        if agent is None or agent.stream_id is None:
            logger.warning("Dropping framework message for unknown agent %s", body.get("agent_id"))
            return []
        return [
            Send(
                stream_id=agent.stream_id,
                event={
                    "type": "MESSAGE",
                    "message": {
                        "framework_id": _id(framework.framework_id),
                        "executor_id": body.get("executor_id"),
                        "data": body.get("data", ""),
                    },
                },
            )
        ]

    # -- reconciliation -----------------------------------------------------------------------

    def _status(
        self,
        *,
        task_id: str,
        state: str,
        message: str,
        reason: str,
        agent_id: str | None,
        executor_id: str | None = None,
        container_status: Any = None,
        unreachable_time: float | None = None,
    ) -> dict[str, Any]:
        """A status made by the master: SOURCE_MASTER, no uuid (recorded field order)."""
        status: dict[str, Any] = {
            "task_id": _id(task_id),
            "state": state,
            "message": message,
            "source": "SOURCE_MASTER",
            "reason": reason,
        }
        if agent_id is not None:
            status["agent_id"] = _id(agent_id)
        if executor_id is not None:
            status["executor_id"] = _id(executor_id)
        status["timestamp"] = self._wall()
        if unreachable_time is not None:
            status["unreachable_time"] = {"nanoseconds": int(unreachable_time * 1e9)}
        if container_status is not None:
            status["container_status"] = container_status
        return status

    def _latest_state(self, task: _Task) -> dict[str, Any]:
        latest = task.latest or {}
        return self._status(
            task_id=task.task_id,
            state=task.state,
            message="Reconciliation: Latest task state",
            reason="REASON_RECONCILIATION",
            agent_id=task.agent_id,
            executor_id=task.executor_id,
            container_status=latest.get("container_status"),
        )

    def _reconcile_one(
        self, framework: _Framework, task_id: str, agent_id: str | None
    ) -> list[Output]:
        task = framework.tasks.get(task_id)
        pa = framework.partition_aware
        if task is not None:
            status = self._latest_state(task)
        elif agent_id is not None and self._agent_registered(agent_id):
            status = self._status(
                task_id=task_id,
                state="TASK_GONE" if pa else "TASK_LOST",
                message="Reconciliation: Task is unknown to the agent",
                reason="REASON_RECONCILIATION",
                agent_id=agent_id,
            )
        elif agent_id is not None and agent_id in self._agents:
            status = self._status(
                task_id=task_id,
                state="TASK_UNREACHABLE" if pa else "TASK_LOST",
                message="Reconciliation: Task is unreachable",
                reason="REASON_RECONCILIATION",
                agent_id=agent_id,
                unreachable_time=self._agents[agent_id].unreachable_time,
            )
        else:
            status = self._status(
                task_id=task_id,
                state="TASK_UNKNOWN" if pa else "TASK_LOST",
                message="Reconciliation: Task is unknown",
                reason="REASON_RECONCILIATION",
                agent_id=agent_id,
            )
        return [self._send_update(framework, status)]

    def _agent_registered(self, agent_id: str) -> bool:
        # Mesos keeps an agent "registered" until it is marked unreachable; a broken stream
        # within the agent timeout is the same as a missed ping.
        agent = self._agents.get(agent_id)
        return agent is not None and agent.state is not AgentLifecycle.UNREACHABLE

    def _send_update(self, framework: _Framework, status: Mapping[str, Any]) -> Send:
        return Send(
            stream_id=framework.stream_id or "",
            event={"type": "UPDATE", "update": {"status": status}},
        )

    # -- ACCEPT -------------------------------------------------------------------------------

    def _accept(self, framework: _Framework, body: Mapping[str, Any], now: float) -> list[Output]:
        offer_ids = [_value(o) or "" for o in body.get("offer_ids") or []]
        operations = [op for op in body.get("operations") or [] if isinstance(op, Mapping)]
        error = self._validate_offers(framework, offer_ids)
        if error is not None:
            return self._accept_invalid_offers(framework, offer_ids, operations, error)

        offers = [self._offers.pop(offer_id) for offer_id in offer_ids]
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
            for task_info in (operation.get("launch") or {}).get("task_infos") or []:
                remaining, launched = self._launch(framework, agent, task_info, remaining)
                outputs.extend(launched)
        if not remaining.is_empty():
            refuse = _refuse_seconds(body.get("filters"))
            self._add_filter(framework, agent.agent_id, remaining, refuse, now)
        self._allocate_soon = True
        return outputs

    def _validate_offers(self, framework: _Framework, offer_ids: Sequence[str]) -> str | None:
        if not offer_ids:
            return "No offers specified"
        seen: set[str] = set()
        for offer_id in offer_ids:
            if offer_id in seen:
                return f"Duplicate offer {offer_id} in offer list"
            seen.add(offer_id)
        for offer_id in offer_ids:
            if offer_id not in self._offers:
                return f"Offer {offer_id} is no longer valid"
        for offer_id in offer_ids:
            owner = self._offers[offer_id].framework_id
            if owner != framework.framework_id:
                return (
                    f"Offer {offer_id} has invalid framework {owner} while framework"
                    f" {framework.framework_id} is expected"
                )
        first_agent = self._offers[offer_ids[0]].agent_id
        for offer_id in offer_ids:
            agent_id = self._offers[offer_id].agent_id
            if agent_id != first_agent:
                return (
                    f"Aggregated offers must belong to one single agent. Offer {offer_id} uses"
                    f" agent {agent_id} and agent {first_agent}"
                )
        return None

    def _accept_invalid_offers(
        self,
        framework: _Framework,
        offer_ids: Sequence[str],
        operations: Sequence[Mapping[str, Any]],
        error: str,
    ) -> list[Output]:
        for offer_id in offer_ids:
            offer = self._offers.get(offer_id)
            if offer is not None and offer.framework_id == framework.framework_id:
                del self._offers[offer_id]  # discarded: resources back, no filter
                self._allocate_soon = True
        logger.warning("ACCEPT call used invalid offers %s: %s", offer_ids, error)
        state = "TASK_DROPPED" if framework.partition_aware else "TASK_LOST"
        outputs: list[Output] = []
        for operation in operations:
            if operation.get("type") != "LAUNCH":
                continue
            for task_info in (operation.get("launch") or {}).get("task_infos") or []:
                if not isinstance(task_info, Mapping):
                    continue
                status = self._status(
                    task_id=_value(task_info.get("task_id")) or "",
                    state=state,
                    message=f"Task launched with invalid offers: {error}",
                    reason="REASON_INVALID_OFFERS",
                    agent_id=_value(task_info.get("agent_id")),
                )
                outputs.append(self._send_update(framework, status))
        return outputs

    def _launch(
        self,
        framework: _Framework,
        agent: _Agent,
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
            executor.setdefault("framework_id", _id(framework.framework_id))
            executor["resources"] = _inject(executor.get("resources"), role)
        error, consumed = self._validate_task(framework, agent, task, remaining)
        task_id = _value(task.get("task_id")) or ""
        if error is not None:
            logger.info(
                "Task %s of framework %s is invalid: %s", task_id, framework.framework_id, error
            )
            status = self._status(
                task_id=task_id,
                state="TASK_ERROR",
                message=error,
                reason="REASON_TASK_INVALID",
                agent_id=_value(task.get("agent_id")),
            )
            return remaining, [self._send_update(framework, status)]
        task["agent_id"] = _id(agent.agent_id)
        executor_id = _value(executor.get("executor_id")) if isinstance(executor, dict) else None
        if isinstance(executor, dict) and executor_id is not None:
            agent.executors.setdefault((framework.framework_id, executor_id), executor)
        framework.tasks[task_id] = _Task(
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
                Send(
                    stream_id=agent.stream_id,
                    event={
                        "type": "RUN_TASK",
                        "run_task": {
                            "framework_id": _id(framework.framework_id),
                            "framework_info": framework.info,
                            "task": task,
                        },
                    },
                )
            )
        return remaining - consumed, outputs

    def _validate_task(
        self,
        framework: _Framework,
        agent: _Agent,
        task: Mapping[str, Any],
        offered: ResourceBag,
    ) -> tuple[str | None, ResourceBag]:
        """Mesos' ``validation::task::validate`` in its order; returns (error, consumed)."""
        task_id = _value(task.get("task_id"))
        if not task_id:
            return "Task has an invalid TaskID: ID must not be empty", ResourceBag()
        if task_id in framework.tasks:
            return f"Task has duplicate ID: {task_id}", ResourceBag()
        if task_id in framework.unreachable_tasks:
            return f"Task reuses the ID of an unreachable task: {task_id}", ResourceBag()
        task_agent = _value(task.get("agent_id"))
        if task_agent != agent.agent_id:
            return (
                f"Task uses invalid agent {task_agent or ''} while agent {agent.agent_id} is"
                " expected"
            ), ResourceBag()
        if not task.get("resources"):
            return "Task uses no resources", ResourceBag()
        try:
            total = ResourceBag.from_json(task["resources"])
        except ResourceError as exc:
            return f"Task uses invalid resources: {exc}", ResourceBag()
        has_executor = isinstance(task.get("executor"), Mapping)
        has_command = isinstance(task.get("command"), Mapping)
        if has_executor == has_command:
            return (
                "Task should have at least one (but not both) of CommandInfo or ExecutorInfo"
                " present"
            ), ResourceBag()
        if has_executor:
            executor = task["executor"]
            executor_id = _value(executor.get("executor_id"))
            if not executor_id:
                return "Task has an invalid ExecutorID: ID must not be empty", ResourceBag()
            try:
                executor_resources = ResourceBag.from_json(executor.get("resources") or [])
            except ResourceError as exc:
                return f"Executor uses invalid resources: {exc}", ResourceBag()
            if executor.get("type", "CUSTOM") != "CUSTOM":
                return "'ExecutorInfo.type' must be 'CUSTOM'", ResourceBag()
            if not isinstance(executor.get("command"), Mapping):
                return "'ExecutorInfo.command' must be set", ResourceBag()
            existing = agent.executors.get((framework.framework_id, executor_id))
            if existing is not None and _comparable(existing) != _comparable(executor):
                line = "-" * 60
                return (
                    "ExecutorInfo is not compatible with existing ExecutorInfo with same"
                    f" ExecutorID.\n{line}\nExisting ExecutorInfo:\n"
                    f"{executor_info_text(existing)}\n{line}\nExecutorInfo:\n"
                    f"{executor_info_text(executor)}\n{line}\n"
                ), ResourceBag()
            if existing is None:
                total = total + executor_resources
        if not offered.contains(total):
            return (
                f"Total resources {total.describe(framework.role)} required by task and its"
                f" executor is more than available {offered.describe(framework.role)}"
            ), ResourceBag()
        return None, total

    # -- agents -------------------------------------------------------------------------------

    def register_agent(self, body: Mapping[str, Any], *, now: float) -> AgentRegistration:
        """An agent's REGISTER (``_protocol``): answer REGISTERED on a new stream.

        An agent id the master knows keeps its identity (its old stream, if still open, is
        closed); an unknown id is an agent re-registering with a restarted master, and its
        ``executors`` teach the master the frameworks and tasks it lost. An agent coming back
        from UNREACHABLE keeps the tasks of partition-aware frameworks; for the others, whose
        tasks were already reported LOST, it is told to shut the framework down.

        :raises CallRejected: 400 when the body is not a REGISTER.
        """
        register = body.get("register") if isinstance(body, Mapping) else None
        if body.get("type") != "REGISTER" or not isinstance(register, Mapping):
            raise CallRejected(400, "Expecting a 'REGISTER' call with 'register' present")
        agent_info = register.get("agent_info")
        address = register.get("address")
        if not isinstance(agent_info, Mapping) or not isinstance(address, str):
            raise CallRejected(400, "Expecting 'register.agent_info' and 'register.address'")
        try:
            total = ResourceBag.from_json(agent_info.get("resources") or [])
        except ResourceError as exc:
            raise CallRejected(400, f"Invalid agent resources: {exc}") from None

        stream_id = self._new_uuid()
        outputs: list[Output] = []
        requested = _value(agent_info.get("id"))
        agent = self._agents.get(requested) if requested else None
        info = dict(agent_info)
        if agent is None:
            agent_id = requested or f"{self.config.master_id}-S{next(self._agent_ids)}"
            info["id"] = _id(agent_id)
            agent = _Agent(
                agent_id=agent_id,
                info=info,
                address=address,
                total=total,
                state=AgentLifecycle.CONNECTED,
                stream_id=stream_id,
                registered_time=self._wall(),
                order=next(self._order),
            )
            self._agents[agent_id] = agent
            logger.info("Agent %s at %s registered", agent_id, address)
            shutdown_non_pa = False
        else:
            agent_id = agent.agent_id
            was = agent.state
            agent.state = _next(AGENT_TRANSITIONS, agent.state, "register", f"agent {agent_id}")
            if agent.stream_id is not None:
                outputs.append(Close(stream_id=agent.stream_id))
            info["id"] = _id(agent_id)
            agent.info, agent.address, agent.total = info, address, total
            agent.stream_id = stream_id
            agent.disconnected_at = None
            shutdown_non_pa = was is AgentLifecycle.UNREACHABLE
            agent.unreachable_time = None
            logger.info("Agent %s at %s re-registered (was %s)", agent_id, address, was.value)
        agent.next_heartbeat = now + self.config.heartbeat_interval
        outputs.append(
            Send(
                stream_id=stream_id,
                event={
                    "type": "REGISTERED",
                    "registered": {
                        "agent_id": _id(agent_id),
                        "heartbeat_interval_seconds": float(self.config.heartbeat_interval),
                    },
                },
            )
        )
        outputs.extend(self._adopt(agent, register.get("executors") or [], shutdown_non_pa, now))
        self._allocate_soon = True
        return AgentRegistration(stream_id=stream_id, agent_id=agent_id, outputs=tuple(outputs))

    def _adopt(
        self, agent: _Agent, executors: Iterable[Any], shutdown_non_pa: bool, now: float
    ) -> list[Output]:
        """Learn what an (re-)registering agent runs."""
        outputs: list[Output] = []
        shut: set[str] = set()
        for state in executors:
            if not isinstance(state, Mapping):
                continue
            framework_id = _value(state.get("framework_id"))
            if framework_id is None or framework_id in self._removed_framework_ids:
                if framework_id is not None and framework_id not in shut:
                    shut.add(framework_id)
                    outputs.append(self._shutdown_framework_event(agent, framework_id))
                continue
            framework = self._frameworks.get(framework_id)
            if framework is None:
                info = dict(state.get("framework_info") or {})
                info["id"] = _id(framework_id)
                framework = _Framework(
                    framework_id=framework_id,
                    info=info,
                    state=FrameworkLifecycle.RECOVERED,
                    disconnected_at=now,
                    order=next(self._order),
                )
                self._frameworks[framework_id] = framework
                logger.info("Recovered framework %s from agent %s", framework_id, agent.agent_id)
            if shutdown_non_pa and not framework.partition_aware:
                if framework_id not in shut:
                    shut.add(framework_id)
                    outputs.append(self._shutdown_framework_event(agent, framework_id))
                continue
            executor_info = state.get("executor_info")
            tasks = [t for t in state.get("tasks") or [] if isinstance(t, Mapping)]
            statuses = [s for s in state.get("statuses") or [] if isinstance(s, Mapping)]
            executor_id = None
            if isinstance(executor_info, Mapping) and not any("command" in t for t in tasks):
                executor_id = _value(executor_info.get("executor_id"))
                if executor_id is not None:
                    agent.executors[(framework_id, executor_id)] = dict(executor_info)
            for task_info in tasks:
                task_id = _value(task_info.get("task_id")) or ""
                framework.unreachable_tasks.pop(task_id, None)
                latest = None
                for status in statuses:
                    if _value(status.get("task_id")) == task_id:
                        latest = dict(status)
                try:
                    resources = ResourceBag.from_json(task_info.get("resources") or [])
                except ResourceError:
                    resources = ResourceBag()
                task = _Task(
                    info=dict(task_info),
                    framework_id=framework_id,
                    agent_id=agent.agent_id,
                    executor_id=executor_id,
                    resources=resources,
                    role=framework.role,
                    state=str(latest.get("state", "TASK_STAGING")) if latest else "TASK_STAGING",
                    latest=latest,
                    statuses=[latest] if latest else [],
                )
                framework.tasks[task_id] = task
        return outputs

    def _shutdown_framework_event(self, agent: _Agent, framework_id: str) -> Send:
        return Send(
            stream_id=agent.stream_id or "",
            event={
                "type": "SHUTDOWN_FRAMEWORK",
                "shutdown_framework": {"framework_id": _id(framework_id)},
            },
        )

    def agent_stream_closed(self, stream_id: str, *, now: float) -> list[Output]:
        """An agent's registration stream ended; the agent timeout starts."""
        agent = self._agent_by_stream(stream_id)
        if agent is None:
            return []
        agent.state = _next(AGENT_TRANSITIONS, agent.state, "stream_closed", agent.agent_id)
        agent.stream_id = None
        agent.disconnected_at = now
        agent.next_heartbeat = None
        # Offers on an agent that may be gone are rescinded at once (Mesos deactivates a
        # disconnected agent); its resources come back when it re-registers.
        outputs = self._rescind_offers_on(agent)
        logger.warning("Agent %s disconnected", agent.agent_id)
        return outputs

    def _agent_by_stream(self, stream_id: str) -> _Agent | None:
        for agent in self._agents.values():
            if agent.stream_id == stream_id:
                return agent
        return None

    def agent_call(
        self, call: Mapping[str, Any], *, stream_id: str | None, now: float
    ) -> list[Output]:
        """An agent's UPDATE, MESSAGE or EXECUTOR_EXITED (see :func:`parse_agent_call`).

        :raises CallRejected: 404 when the stream id is unknown (the agent must register again).
        """
        agent = self._agent_by_stream(stream_id) if stream_id else None
        if agent is None:
            raise CallRejected(404, f"Unknown agent stream id {stream_id!r}: register again")
        kind = call["type"]
        body = call[kind.lower()]
        framework_id = _value(body.get("framework_id")) or ""
        framework = self._frameworks.get(framework_id)
        if kind == "UPDATE":
            return self._agent_update(agent, framework, body)
        if kind == "MESSAGE":
            if framework is None or framework.stream_id is None:
                logger.warning("Dropping executor message for framework %s", framework_id)
                return []
            return [
                Send(
                    stream_id=framework.stream_id,
                    event={
                        "type": "MESSAGE",
                        "message": {
                            "agent_id": _id(agent.agent_id),
                            "executor_id": body.get("executor_id"),
                            "data": body.get("data", ""),
                        },
                    },
                )
            ]
        executor_id = _value(body.get("executor_id")) or ""
        if agent.executors.pop((framework_id, executor_id), None) is not None:
            self._allocate_soon = True
        if framework is None or framework.stream_id is None:
            return []
        return [
            Send(
                stream_id=framework.stream_id,
                event={
                    "type": "FAILURE",
                    "failure": {
                        "agent_id": _id(agent.agent_id),
                        "executor_id": _id(executor_id),
                        "status": body.get("status"),
                    },
                },
            )
        ]

    def _agent_update(
        self, agent: _Agent, framework: _Framework | None, body: Mapping[str, Any]
    ) -> list[Output]:
        status = body.get("status")
        if framework is None or not isinstance(status, Mapping):
            logger.warning(
                "Dropping status update for unknown framework %s", body.get("framework_id")
            )
            return []
        task_id = _value(status.get("task_id")) or ""
        task = framework.tasks.get(task_id)
        if task is not None:
            was_terminal = task.terminal
            task.latest = dict(status)
            task.state = str(status.get("state", task.state))
            task.statuses.append(dict(status))
            if task.terminal and not was_terminal:
                self._allocate_soon = True
            if task.terminal and not status.get("uuid"):
                # Nothing to acknowledge: the task is done as far as the master is concerned.
                self._complete_task(framework, task)
        if framework.stream_id is None:
            logger.info(
                "Framework %s is disconnected; the agent will resend the update",
                framework.framework_id,
            )
            return []
        return [self._send_update(framework, status)]

    # -- removal ------------------------------------------------------------------------------

    def _complete_task(self, framework: _Framework, task: _Task) -> None:
        framework.tasks.pop(task.task_id, None)
        framework.completed_tasks.append(task)
        del framework.completed_tasks[:-_MAX_COMPLETED_TASKS]
        self._allocate_soon = True

    def _remove_offers_of(self, framework: _Framework) -> None:
        for offer in [o for o in self._offers.values() if o.framework_id == framework.framework_id]:
            del self._offers[offer.offer_id]
            self._allocate_soon = True

    def _rescind_offers_on(self, agent: _Agent) -> list[Output]:
        outputs: list[Output] = []
        for offer in [o for o in self._offers.values() if o.agent_id == agent.agent_id]:
            del self._offers[offer.offer_id]
            framework = self._frameworks.get(offer.framework_id)
            if framework is not None and framework.stream_id is not None:
                outputs.append(
                    Send(
                        stream_id=framework.stream_id,
                        event={"type": "RESCIND", "rescind": {"offer_id": _id(offer.offer_id)}},
                    )
                )
        return outputs

    def _remove_framework(self, framework: _Framework) -> list[Output]:
        """Teardown or failover timeout: shut it down everywhere and forget it."""
        outputs: list[Output] = []
        if framework.stream_id is not None:
            outputs.append(Close(stream_id=framework.stream_id))
            framework.stream_id = None
        framework.state = FrameworkLifecycle.REMOVED
        self._remove_offers_of(framework)
        for agent in self._agents.values():
            if agent.stream_id is not None:
                outputs.append(self._shutdown_framework_event(agent, framework.framework_id))
            for key in [k for k in agent.executors if k[0] == framework.framework_id]:
                del agent.executors[key]
        for task in list(framework.tasks.values()):
            task.state = "TASK_KILLED"
            self._complete_task(framework, task)
        framework.unregistered_time = self._wall()
        del self._frameworks[framework.framework_id]
        self._removed_framework_ids.add(framework.framework_id)
        self._completed_frameworks.append(framework)
        del self._completed_frameworks[:-_MAX_COMPLETED_FRAMEWORKS]
        self._allocate_soon = True
        return outputs

    def _agent_lost(self, agent: _Agent, now: float) -> list[Output]:
        """No stream for ``agent_timeout``: Mesos' ``markUnreachable`` + ``__removeSlave``."""
        agent.state = _next(AGENT_TRANSITIONS, agent.state, "timeout", agent.agent_id)
        agent.unreachable_time = self._wall()
        logger.warning("Agent %s is unreachable: health check timed out", agent.agent_id)
        outputs: list[Output] = []
        for framework in self._frameworks.values():
            for task in [t for t in framework.tasks.values() if t.agent_id == agent.agent_id]:
                state = "TASK_UNREACHABLE" if framework.partition_aware else "TASK_LOST"
                status = self._status(
                    task_id=task.task_id,
                    state=state,
                    message="health check timed out",
                    reason="REASON_AGENT_REMOVED",
                    agent_id=agent.agent_id,
                    executor_id=task.executor_id,
                    unreachable_time=agent.unreachable_time,
                )
                task.state = state
                task.latest = status
                task.statuses.append(status)
                del framework.tasks[task.task_id]
                framework.unreachable_tasks[task.task_id] = task
                if framework.stream_id is not None:
                    outputs.append(self._send_update(framework, status))
        agent.executors.clear()
        outputs.extend(self._rescind_offers_on(agent))
        for framework in self._frameworks.values():
            if framework.stream_id is not None:
                outputs.append(
                    Send(
                        stream_id=framework.stream_id,
                        event={"type": "FAILURE", "failure": {"agent_id": _id(agent.agent_id)}},
                    )
                )
        return outputs

    # -- time ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest monotonic time at which :meth:`tick` has something to do."""
        if self._allocate_soon:
            return float("-inf")
        deadlines: list[float] = []
        if self._next_allocation is not None:
            deadlines.append(self._next_allocation)
        for framework in self._frameworks.values():
            if framework.next_heartbeat is not None:
                deadlines.append(framework.next_heartbeat)
            if framework.disconnected_at is not None:
                deadlines.append(framework.disconnected_at + framework.failover_timeout)
        for agent in self._agents.values():
            if agent.next_heartbeat is not None:
                deadlines.append(agent.next_heartbeat)
            if agent.state is AgentLifecycle.DISCONNECTED and agent.disconnected_at is not None:
                deadlines.append(agent.disconnected_at + self.config.agent_timeout)
        return min(deadlines, default=None)

    def tick(self, now: float) -> list[Output]:
        """Do what is due at *now*: heartbeats, timeouts, and an allocation round."""
        outputs: list[Output] = []
        for framework in list(self._frameworks.values()):
            # A framework recovered from agents after a master restart gets the same grace,
            # counted from when the master learned of it.
            if (
                framework.state in (FrameworkLifecycle.DISCONNECTED, FrameworkLifecycle.RECOVERED)
                and framework.disconnected_at is not None
                and now >= framework.disconnected_at + framework.failover_timeout
            ):
                framework.state = _next(
                    FRAMEWORK_TRANSITIONS,
                    framework.state,
                    "failover_timeout",
                    framework.framework_id,
                )
                logger.info("Framework %s failover timeout expired", framework.framework_id)
                outputs.extend(self._remove_framework(framework))
        for agent in list(self._agents.values()):
            if (
                agent.state is AgentLifecycle.DISCONNECTED
                and agent.disconnected_at is not None
                and now >= agent.disconnected_at + self.config.agent_timeout
            ):
                outputs.extend(self._agent_lost(agent, now))
        interval = self.config.heartbeat_interval
        for framework in self._frameworks.values():
            if framework.next_heartbeat is not None and now >= framework.next_heartbeat:
                framework.next_heartbeat = now + interval
                if framework.stream_id is not None:
                    outputs.append(Send(stream_id=framework.stream_id, event={"type": "HEARTBEAT"}))
        for agent in self._agents.values():
            if agent.next_heartbeat is not None and now >= agent.next_heartbeat:
                agent.next_heartbeat = now + interval
                if agent.stream_id is not None:
                    outputs.append(Send(stream_id=agent.stream_id, event={"type": "HEARTBEAT"}))
        if self._allocate_soon or (
            self._next_allocation is not None and now >= self._next_allocation
        ):
            outputs.extend(self._allocate(now))
        elif self._next_allocation is None:
            self._next_allocation = now + self.config.offer_interval
        return outputs

    # -- allocation ---------------------------------------------------------------------------

    def available(self, agent_id: str) -> ResourceBag:
        """An agent's total minus what tasks, executors and outstanding offers hold."""
        agent = self._agents[agent_id]
        return agent.total - self._used(agent) - self._offered(agent)

    def _used(self, agent: _Agent) -> ResourceBag:
        used = ResourceBag()
        for executor in agent.executors.values():
            try:
                used = used + ResourceBag.from_json(executor.get("resources") or [])
            except ResourceError:
                continue
        for framework in self._frameworks.values():
            for task in framework.tasks.values():
                if task.agent_id == agent.agent_id and not task.terminal:
                    used = used + task.resources
        return used

    def _offered(self, agent: _Agent) -> ResourceBag:
        offered = ResourceBag()
        for offer in self._offers.values():
            if offer.agent_id == agent.agent_id:
                offered = offered + offer.resources
        return offered

    def _add_filter(
        self,
        framework: _Framework,
        agent_id: str,
        resources: ResourceBag,
        refuse_seconds: float,
        now: float,
    ) -> None:
        if refuse_seconds > 0 and not resources.is_empty():
            framework.filters.setdefault(agent_id, []).append(
                _Filter(resources=resources, expires=now + refuse_seconds)
            )
        self._allocate_soon = True

    def _filtered(
        self, framework: _Framework, agent_id: str, offer: ResourceBag, now: float
    ) -> bool:
        filters = [f for f in framework.filters.get(agent_id, []) if f.expires > now]
        framework.filters[agent_id] = filters
        # Mesos' resource filter: refuse only what is contained in what was refused.
        return any(f.resources.contains(offer) for f in filters)

    def _allocate(self, now: float) -> list[Output]:
        self._allocate_soon = False
        self._next_allocation = now + self.config.offer_interval
        frameworks = [
            f
            for f in sorted(self._frameworks.values(), key=lambda f: f.order)
            if f.state is FrameworkLifecycle.CONNECTED and not f.suppressed
        ]
        if not frameworks:
            return []
        batches: dict[str, list[dict[str, Any]]] = {}
        for agent in sorted(self._agents.values(), key=lambda a: a.order):
            if agent.state is not AgentLifecycle.CONNECTED:
                continue
            available = self.available(agent.agent_id)
            if available.scalar("cpus") < _MIN_CPUS and available.scalar("mem") < _MIN_MEM:
                continue
            candidates = [
                f for f in frameworks if not self._filtered(f, agent.agent_id, available, now)
            ]
            if not candidates:
                continue
            # A crude stand-in for DRF: the framework holding the fewest cpus goes first.
            framework = min(candidates, key=lambda f: (self._share(f), f.order))
            offer = _Offer(
                offer_id=f"{self.config.master_id}-O{next(self._offer_ids)}",
                framework_id=framework.framework_id,
                agent_id=agent.agent_id,
                resources=available,
            )
            self._offers[offer.offer_id] = offer
            batches.setdefault(framework.framework_id, []).append(
                self._offer_json(offer, agent, framework)
            )
        outputs: list[Output] = []
        for framework_id, offers in batches.items():
            stream_id = self._frameworks[framework_id].stream_id
            assert stream_id is not None
            outputs.append(
                Send(stream_id=stream_id, event={"type": "OFFERS", "offers": {"offers": offers}})
            )
        return outputs

    def _share(self, framework: _Framework) -> float:
        cpus = 0.0
        for task in framework.tasks.values():
            if not task.terminal:
                cpus += task.resources.scalar("cpus")
        for offer in self._offers.values():
            if offer.framework_id == framework.framework_id:
                cpus += offer.resources.scalar("cpus")
        return cpus

    def _offer_json(self, offer: _Offer, agent: _Agent, framework: _Framework) -> dict[str, Any]:
        role = framework.role
        out: dict[str, Any] = {
            "id": _id(offer.offer_id),
            "framework_id": _id(offer.framework_id),
            "agent_id": _id(agent.agent_id),
            "hostname": agent.hostname,
            "url": {
                "scheme": "http",
                "address": {"hostname": agent.hostname, "ip": agent.ip, "port": agent.port},
                "path": "/slave(1)",
            },
            "resources": offer.resources.to_json(role=DEFAULT_ROLE, allocation_role=role),
        }
        attributes = agent.info.get("attributes")
        if attributes:
            out["attributes"] = attributes
        executor_ids = [
            _id(executor_id)
            for (framework_id, executor_id) in agent.executors
            if framework_id == framework.framework_id
        ]
        if executor_ids:
            out["executor_ids"] = executor_ids
        out["allocation_info"] = {"role": role}
        return out

    # -- /state -------------------------------------------------------------------------------

    def state_json(self) -> dict[str, Any]:
        """``GET /state`` in the recorded ``master_state`` shape (v0 names)."""
        cfg = self.config
        pid = f"master@{cfg.ip}:{cfg.port}"
        agents = sorted(self._agents.values(), key=lambda a: a.order)
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
            "capabilities": list(_MASTER_CAPABILITIES),
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
            "frameworks": [
                self._framework_state(f)
                for f in sorted(self._frameworks.values(), key=lambda f: f.order)
            ],
            "completed_frameworks": [self._framework_state(f) for f in self._completed_frameworks],
            "orphan_tasks": [],
            "unregistered_frameworks": [],
        }

    def _agent_state(self, agent: _Agent) -> dict[str, Any]:
        used = self._used(agent)
        return {
            "id": agent.agent_id,
            "hostname": agent.hostname,
            "port": agent.port,
            "attributes": _attributes_state(agent.info.get("attributes") or []),
            "pid": f"slave(1)@{agent.address}",
            "registered_time": agent.registered_time,
            "resources": agent.total.to_state(),
            "used_resources": _without_ranges(used.to_state()),
            "offered_resources": _without_ranges(self._offered(agent).to_state()),
            "reserved_resources": {},
            "unreserved_resources": agent.total.to_state(),
            "active": agent.state is AgentLifecycle.CONNECTED,
            "deactivated": False,
            "version": MESOS_VERSION,
            "capabilities": list(_AGENT_CAPABILITIES),
        }

    def _framework_state(self, framework: _Framework) -> dict[str, Any]:
        used = ResourceBag()
        for task in framework.tasks.values():
            if not task.terminal:
                used = used + task.resources
        executors = []
        for agent in self._agents.values():
            for (framework_id, _executor_id), executor in agent.executors.items():
                if framework_id == framework.framework_id:
                    executors.append(_executor_state(executor, agent.agent_id))
                    with contextlib.suppress(ResourceError):
                        used = used + ResourceBag.from_json(executor.get("resources") or [])
        offered = ResourceBag()
        offers = []
        for offer in self._offers.values():
            if offer.framework_id == framework.framework_id:
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

    _CALL_HANDLERS: Final[
        Mapping[
            str,
            Callable[[MasterState, _Framework, Mapping[str, Any], float], list[Output]],
        ]
    ] = {
        "TEARDOWN": _teardown,
        "ACCEPT": _accept,
        "DECLINE": _decline,
        "REVIVE": _revive,
        "SUPPRESS": _suppress,
        "KILL": _kill,
        "SHUTDOWN": _shutdown,
        "ACKNOWLEDGE": _acknowledge,
        "RECONCILE": _reconcile,
        "MESSAGE": _message,
    }


def _comparable(executor: Mapping[str, Any]) -> dict[str, Any]:
    """An ExecutorInfo with protobuf defaults filled in, for Mesos' ``operator==``.

    Mesos compares field values, so an unset ``command.shell`` equals ``true`` and an unset
    ``URI.extract`` equals ``true``; an agent that reports the executor with those filled in
    (as the recorded agent does) must not make the next task's identical ExecutorInfo look
    different to a restarted master.
    """
    out: dict[str, Any] = json.loads(json.dumps(executor))
    out.setdefault("type", "CUSTOM")
    command = out.get("command")
    if isinstance(command, dict):
        command.setdefault("shell", True)
        for uri in command.get("uris") or []:
            if isinstance(uri, dict):
                uri.setdefault("executable", False)
                uri.setdefault("extract", True)
                uri.setdefault("cache", False)
    for resource in out.get("resources") or []:
        if isinstance(resource, dict):
            resource.setdefault("type", "SCALAR")
            resource.pop("role", None)
            resource.setdefault("allocation_info", {"role": DEFAULT_ROLE})
    return out


def _refuse_seconds(filters: Any) -> float:
    if isinstance(filters, Mapping):
        value = filters.get("refuse_seconds")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return DEFAULT_REFUSE_SECONDS


def _inject(resources: Any, role: str) -> list[dict[str, Any]]:
    out = []
    for resource in resources or []:
        if isinstance(resource, dict):
            resource.setdefault("allocation_info", {"role": role})
            out.append(resource)
    return out


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


def _task_state(task: _Task) -> dict[str, Any]:
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
        "executor_id": _value(executor.get("executor_id")) or "",
        "name": executor.get("name", ""),
        "framework_id": _value(executor.get("framework_id")) or "",
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
