"""What the master's parts share: outputs, errors, lifecycle tables and the records they keep.

Every other ``_master_*`` module works on these records and returns these outputs; none of
them does I/O. The records are plain mutable dataclasses owned by one part each
(:class:`FrameworkRecord` by ``_master_frameworks``, :class:`AgentRecord` by
``_master_agents``, :class:`OfferRecord` by ``_master_allocation``, :class:`TaskRecord` by
``_master_tasks``); the others read them.

Lifecycles are tables (:data:`FRAMEWORK_TRANSITIONS`, :data:`AGENT_TRANSITIONS`); an input that
is not in the table for the current state is our own bug and raises ``LocalProtocolError``.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, TypeVar

from toil_mesos.cluster._offers import DEFAULT_ROLE, ResourceBag
from toil_mesos.cluster._status_updates import TERMINAL_STATES
from toil_mesos.errors import LocalProtocolError, MesosError

__all__ = [
    "AGENT_CAPABILITIES",
    "AGENT_TRANSITIONS",
    "FRAMEWORK_TRANSITIONS",
    "MASTER_CAPABILITIES",
    "MESOS_VERSION",
    "TERMINAL_STATES",
    "AgentLifecycle",
    "AgentRecord",
    "AgentRegistration",
    "CallRejected",
    "Close",
    "FrameworkLifecycle",
    "FrameworkRecord",
    "MasterConfig",
    "OfferRecord",
    "Output",
    "Registry",
    "Send",
    "Subscription",
    "TaskRecord",
    "event",
    "heartbeats",
    "id_of",
    "next_state",
    "split_address",
    "update_event",
    "value_of",
]

MESOS_VERSION: Final = "1.12.0"

MASTER_CAPABILITIES: Final = ("AGENT_UPDATE", "AGENT_DRAINING", "QUOTA_V2")
AGENT_CAPABILITIES: Final = (
    "MULTI_ROLE",
    "HIERARCHICAL_ROLE",
    "RESERVATION_REFINEMENT",
    "RESOURCE_PROVIDER",
    "RESIZE_VOLUME",
    "AGENT_OPERATION_FEEDBACK",
    "AGENT_DRAINING",
    "TASK_RESOURCE_LIMITS",
)


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


def event(stream_id: str | None, kind: str, **body: Any) -> Send:
    """One event in the v1 shape ``{"type": KIND, "kind": {...}}`` (no body: type only).

    Every event the master sends has this shape, so the parts say only what differs: the
    type and the body's fields, in the recorded order.
    """
    payload: dict[str, Any] = {"type": kind}
    if body:
        payload[kind.lower()] = body
    return Send(stream_id=stream_id or "", event=payload)


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


def next_state(table: Mapping[tuple[_S, str], _S], state: _S, event: str, what: str) -> _S:
    """The state *event* leads to from *state*; a missing row is our own bug."""
    try:
        return table[(state, event)]
    except KeyError:
        raise LocalProtocolError(f"{what}: no transition for {event!r} in state {state}") from None


# ---------------------------------------------------------------------------------------------
# Helpers on v1 JSON


def value_of(obj: Any) -> str | None:
    """The ``value`` of an ID object (``{"value": "..."}``), or ``None``."""
    if isinstance(obj, Mapping):
        value = obj.get("value")
        return value if isinstance(value, str) else None
    return None


def id_of(value: str) -> dict[str, str]:
    """An ID object (``{"value": value}``)."""
    return {"value": value}


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port); port 0 when there is none."""
    host, _, port = address.rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        return address, 0


# ---------------------------------------------------------------------------------------------
# Records


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
class TaskRecord:
    """A task the master knows: as launched, where it runs, and its statuses so far."""

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
        return value_of(self.info.get("task_id")) or ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(slots=True, kw_only=True)
class OfferRecord:
    """An outstanding offer: whose it is, on which agent, and what it holds."""

    offer_id: str
    framework_id: str
    agent_id: str
    resources: ResourceBag


@dataclass(slots=True, kw_only=True)
class FrameworkRecord:
    """A framework: its FrameworkInfo, its stream, its timers and its tasks."""

    framework_id: str
    info: dict[str, Any]
    state: FrameworkLifecycle
    stream_id: str | None = None
    registered_time: float = 0.0
    unregistered_time: float = 0.0
    disconnected_at: float | None = None
    next_heartbeat: float | None = None
    suppressed: bool = False
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    unreachable_tasks: dict[str, TaskRecord] = field(default_factory=dict)
    completed_tasks: list[TaskRecord] = field(default_factory=list)
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
class AgentRecord:
    """An agent: its AgentInfo and address, its stream and timers, the executors it runs."""

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
        return split_address(self.address)[0]

    @property
    def port(self) -> int:
        return split_address(self.address)[1]


# ---------------------------------------------------------------------------------------------
# What frameworks and agents share: a stream, and heartbeats on it


class _Streaming(Protocol):
    stream_id: str | None
    next_heartbeat: float | None


_R = TypeVar("_R", FrameworkRecord, AgentRecord)


class Registry(Generic[_R]):
    """Records by id, in the order the master learned of them, found by their stream too.

    The base of ``Frameworks`` and ``Agents``: both keep records keyed by id, give each a
    stream (whose id comes from *new_uuid*) and stamp them with the wall clock.
    """

    def __init__(
        self,
        config: MasterConfig,
        *,
        wall_clock: Callable[[], float],
        new_uuid: Callable[[], str],
    ) -> None:
        self._config = config
        self._wall = wall_clock
        self._new_uuid = new_uuid
        self._by_id: dict[str, _R] = {}
        self._ids = itertools.count()
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[_R]:
        return iter(list(self._by_id.values()))

    def __getitem__(self, record_id: str) -> _R:
        return self._by_id[record_id]

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._by_id

    def get(self, record_id: str) -> _R | None:
        return self._by_id.get(record_id)

    def in_order(self) -> list[_R]:
        """The records in the order the master first learned of them."""
        return sorted(self._by_id.values(), key=lambda r: r.order)

    def _opened(
        self,
        record: _R,
        stream_id: str,
        now: float,
        kind: str,
        ids: Mapping[str, Any],
        extra: Mapping[str, Any] | None = None,
    ) -> Send:
        """*record* now streams on *stream_id*: heartbeats start, and *kind* says hello.

        The hello carries *ids*, the heartbeat interval and *extra*, in that (recorded) order.
        """
        record.stream_id = stream_id
        interval = self._config.heartbeat_interval
        record.next_heartbeat = now + interval
        body = {**ids, "heartbeat_interval_seconds": float(interval), **(extra or {})}
        return event(stream_id, kind, **body)

    def by_stream(self, stream_id: str) -> _R | None:
        """The record whose stream is *stream_id*, if any."""
        for record in self._by_id.values():
            if record.stream_id == stream_id:
                return record
        return None


def heartbeats(records: Iterable[_Streaming], now: float, interval: float) -> list[Output]:
    """A HEARTBEAT on every stream whose heartbeat is due, and the next one scheduled."""
    outputs: list[Output] = []
    for record in records:
        if record.next_heartbeat is not None and now >= record.next_heartbeat:
            record.next_heartbeat = now + interval
            if record.stream_id is not None:
                outputs.append(event(record.stream_id, "HEARTBEAT"))
    return outputs


def update_event(framework: FrameworkRecord, status: Mapping[str, Any]) -> Send:
    """An UPDATE carrying *status* on the framework's stream."""
    return event(framework.stream_id, "UPDATE", status=status)
