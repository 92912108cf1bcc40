"""Sans-I/O status update manager: the agent's reliable delivery of task status updates.

A real agent keeps one stream per task (``src/slave/task_status_update_manager.cpp``): it
forwards only the oldest unacknowledged update of a task, resends it until the framework
acknowledges it (10 s, then 20 s, 40 s... up to 10 minutes, as the transcripts recorded:
STARTING was redelivered with identical bytes after 10.0 s and another 20.0 s, while RUNNING
and FINISHED waited), and forwards the next one only after the ACKNOWLEDGE. Duplicates (the
same uuid taken twice, as when an executor re-subscribes with its unacknowledged updates) are
dropped. Once the terminal update of a task is acknowledged its stream is closed.

This module does no I/O and reads no clock: every input carries ``now`` and every output is a
:class:`Forward` telling the caller to send one update to the master. The caller asks
:meth:`StatusUpdateManager.next_deadline` how long it may wait before calling
:meth:`StatusUpdateManager.tick`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from toil_mesos.cluster._protocol import STATUS_UPDATE_RETRY_SECONDS

__all__ = [
    "MAX_RETRY_SECONDS",
    "TERMINAL_STATES",
    "Forward",
    "StatusUpdateManager",
    "StreamState",
    "TakeResult",
]

JSON = dict[str, Any]

#: The agent's STATUS_UPDATE_RETRY_INTERVAL_MAX (src/slave/constants.hpp).
MAX_RETRY_SECONDS = 600.0

TERMINAL_STATES = frozenset(
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


class StreamState(enum.Enum):
    """Where one task's update stream is."""

    #: No update is waiting for an acknowledgement.
    IDLE = "IDLE"
    #: The head of the queue was sent and waits for its ACKNOWLEDGE.
    AWAITING_ACK = "AWAITING_ACK"
    #: The terminal update was acknowledged; the stream takes nothing more.
    CLOSED = "CLOSED"


class TakeResult(enum.Enum):
    """What :meth:`StatusUpdateManager.update` did with an update."""

    QUEUED = "QUEUED"
    DUPLICATE = "DUPLICATE"
    #: A terminal update was already taken for this task; Mesos refuses later ones.
    REFUSED = "REFUSED"


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    """Send this update to the master now (a first send or a resend)."""

    framework_id: str
    task_id: str
    update: JSON = field(hash=False, compare=True)
    resend: bool


@dataclass(slots=True, kw_only=True)
class _Stream:
    framework_id: str
    task_id: str
    pending: deque[JSON] = field(default_factory=deque)
    seen: set[str] = field(default_factory=set)
    state: StreamState = StreamState.IDLE
    terminal_taken: bool = False
    deadline: float | None = None
    interval: float = STATUS_UPDATE_RETRY_SECONDS


def _uuid(update: JSON) -> str:
    status = update.get("status", {})
    return str(status.get("uuid", ""))


class StatusUpdateManager:
    """One queue per task; only the oldest unacknowledged update is ever in flight.

    Updates are the ``update`` object of the internal ``UPDATE`` call
    (``{"framework_id": {...}, "status": TaskStatus}``), kept as given.

    >>> sum_ = StatusUpdateManager(retry_interval=10.0)
    >>> def up(state, uuid):
    ...     return {"framework_id": {"value": "F"},
    ...             "status": {"task_id": {"value": "T"}, "state": state, "uuid": uuid}}
    >>> [f.update["status"]["state"] for f in sum_.update(up("TASK_RUNNING", "a"), now=0.0)[1]]
    ['TASK_RUNNING']
    >>> sum_.update(up("TASK_FINISHED", "b"), now=1.0)[1]
    []
    >>> [f.resend for f in sum_.tick(now=10.0)]
    [True]
    >>> [f.update["status"]["state"] for f in sum_.acknowledge("F", "T", "a", now=11.0)]
    ['TASK_FINISHED']
    """

    def __init__(
        self,
        *,
        retry_interval: float = STATUS_UPDATE_RETRY_SECONDS,
        max_retry_interval: float = MAX_RETRY_SECONDS,
    ) -> None:
        if retry_interval <= 0:
            raise ValueError(f"retry_interval must be positive, got {retry_interval!r}")
        self._retry = retry_interval
        self._max_retry = max(max_retry_interval, retry_interval)
        self._streams: dict[tuple[str, str], _Stream] = {}

    def __repr__(self) -> str:
        waiting = sum(1 for s in self._streams.values() if s.state is StreamState.AWAITING_ACK)
        return f"<StatusUpdateManager streams={len(self._streams)} awaiting_ack={waiting}>"

    # -- inputs -----------------------------------------------------------------------------

    def update(self, update: JSON, *, now: float) -> tuple[TakeResult, list[Forward]]:
        """Take one update; return what happened and what to send now.

        :raises ValueError: if the update has no framework id, task id or uuid (the agent
            validates executor calls before they get here).
        """
        framework_id = str(update.get("framework_id", {}).get("value", ""))
        status = update.get("status", {})
        task_id = str(status.get("task_id", {}).get("value", ""))
        uuid = _uuid(update)
        if not framework_id or not task_id or not uuid:
            raise ValueError(f"status update without framework id, task id or uuid: {update!r}")
        key = (framework_id, task_id)
        stream = self._streams.get(key)
        if stream is None:
            stream = _Stream(framework_id=framework_id, task_id=task_id, interval=self._retry)
            self._streams[key] = stream
        if uuid in stream.seen:
            return TakeResult.DUPLICATE, []
        if stream.terminal_taken:
            return TakeResult.REFUSED, []
        stream.seen.add(uuid)
        stream.pending.append(update)
        if status.get("state") in TERMINAL_STATES:
            stream.terminal_taken = True
        if stream.state is StreamState.IDLE:
            return TakeResult.QUEUED, [self._send_head(stream, now=now, resend=False)]
        return TakeResult.QUEUED, []

    def acknowledge(
        self, framework_id: str, task_id: str, uuid: str, *, now: float
    ) -> list[Forward]:
        """The framework acknowledged *uuid*; return the next update of that task, if any.

        An acknowledgement that does not match the update in flight is ignored, as Mesos
        ignores it (a late duplicate ACKNOWLEDGE after a resend).
        """
        stream = self._streams.get((framework_id, task_id))
        if stream is None or stream.state is not StreamState.AWAITING_ACK or not stream.pending:
            return []
        if _uuid(stream.pending[0]) != uuid:
            return []
        acked = stream.pending.popleft()
        stream.deadline = None
        stream.interval = self._retry
        if acked.get("status", {}).get("state") in TERMINAL_STATES:
            stream.state = StreamState.CLOSED
            stream.pending.clear()
            return []
        stream.state = StreamState.IDLE
        if stream.pending:
            return [self._send_head(stream, now=now, resend=False)]
        return []

    def tick(self, *, now: float) -> list[Forward]:
        """Resend every head whose retry deadline has passed, doubling its interval."""
        due: list[Forward] = []
        for stream in self._streams.values():
            if stream.deadline is not None and stream.deadline <= now and stream.pending:
                stream.interval = min(stream.interval * 2, self._max_retry)
                due.append(self._send_head(stream, now=now, resend=True, keep_interval=True))
        return due

    def resend_all(self, *, now: float) -> list[Forward]:
        """Resend every update in flight at once (after the agent registered again)."""
        out: list[Forward] = []
        for stream in self._streams.values():
            if stream.state is StreamState.AWAITING_ACK and stream.pending:
                out.append(self._send_head(stream, now=now, resend=True, keep_interval=True))
        return out

    def restore(
        self,
        framework_id: str,
        task_id: str,
        *,
        pending: Sequence[JSON],
        seen: Iterable[str],
        now: float,
    ) -> None:
        """Recreate a task's stream from the checkpoint of an earlier run of the agent.

        The *pending* updates were never acknowledged: the oldest counts as in flight, so
        :meth:`resend_all` sends it once the agent has registered again. Updates in *seen*
        were taken before, so an executor that sends one again is answered as a duplicate.
        """
        stream = _Stream(framework_id=framework_id, task_id=task_id, interval=self._retry)
        stream.seen.update(seen)
        for update in pending:
            stream.seen.add(_uuid(update))
            stream.pending.append(update)
            if update.get("status", {}).get("state") in TERMINAL_STATES:
                stream.terminal_taken = True
        if stream.pending:
            stream.state = StreamState.AWAITING_ACK
            stream.deadline = now + stream.interval
        self._streams[(framework_id, task_id)] = stream

    def forget_framework(self, framework_id: str) -> None:
        """Drop every stream of a framework that was shut down (teardown)."""
        for key in [k for k in self._streams if k[0] == framework_id]:
            del self._streams[key]

    def forget_task(self, framework_id: str, task_id: str) -> None:
        """Drop a closed stream once the agent no longer tracks the task."""
        self._streams.pop((framework_id, task_id), None)

    # -- queries ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest resend deadline, or ``None`` when nothing waits for a resend."""
        deadlines = [s.deadline for s in self._streams.values() if s.deadline is not None]
        return min(deadlines) if deadlines else None

    def state(self, framework_id: str, task_id: str) -> StreamState | None:
        """The stream state of one task, ``None`` if the task has no stream."""
        stream = self._streams.get((framework_id, task_id))
        return None if stream is None else stream.state

    def unacknowledged(self, framework_id: str, task_id: str) -> list[JSON]:
        """The updates of one task still waiting for an acknowledgement, oldest first."""
        stream = self._streams.get((framework_id, task_id))
        return [] if stream is None else list(stream.pending)

    def is_acknowledged(self, framework_id: str, task_id: str, uuid: str) -> bool:
        """Whether *uuid* was taken for the task and is no longer pending."""
        stream = self._streams.get((framework_id, task_id))
        if stream is None or uuid not in stream.seen:
            return False
        return all(_uuid(u) != uuid for u in stream.pending)

    # -- internals --------------------------------------------------------------------------

    def _send_head(
        self, stream: _Stream, *, now: float, resend: bool, keep_interval: bool = False
    ) -> Forward:
        if not keep_interval:
            stream.interval = self._retry
        stream.state = StreamState.AWAITING_ACK
        stream.deadline = now + stream.interval
        return Forward(
            framework_id=stream.framework_id,
            task_id=stream.task_id,
            update=stream.pending[0],
            resend=resend,
        )
