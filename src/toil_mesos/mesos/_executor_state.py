"""Sans-I/O state machine for a Mesos executor's subscription to its agent.

Besides the subscription lifecycle it keeps the bookkeeping executor-http-api.md asks of every
executor and pymesos never did: the tasks and status updates the agent has not acknowledged
yet, which a re-SUBSCRIBE must carry (``unacknowledged_tasks``, ``unacknowledged_updates``).

Lifecycle::

    DISCONNECTED --start--> SUBSCRIBING --SUBSCRIBED--> SUBSCRIBED --SHUTDOWN--> SHUTTING_DOWN
         ^                         |                        |
         +-- connection_lost (checkpoint, within recovery timeout)
    connection lost without checkpointing, after the recovery timeout, or while shutting down,
    or close() --> CLOSED;  any protocol failure --> ERROR (sticky)

While SHUTTING_DOWN updates still go out: the executor must report TASK_KILLED for its tasks
after SHUTDOWN (transcripts, executor E2: TASK_KILLED after SHUTDOWN got 202).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Any

from toil_mesos.errors import LocalProtocolError, MesosError, RemoteProtocolError
from toil_mesos.mesos._events import (
    Acknowledged,
    ExecutorCall,
    ExecutorEvent,
    ExecutorSubscribeCall,
    ExecutorSubscribed,
    Launch,
    LaunchGroup,
    Shutdown,
    TaskId,
    UpdateCall,
    encode_executor_call,
)
from toil_mesos.mesos._executor_env import (
    DEFAULT_RECOVERY_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE_PERIOD,
    DEFAULT_SUBSCRIPTION_BACKOFF_MAX,
)
from toil_mesos.mesos._scheduler_state import DEFAULT_SUBSCRIBE_TIMEOUT, backoff_delay

__all__ = [
    "EXECUTOR_PATH",
    "EXECUTOR_TRANSITIONS",
    "ExecutorInput",
    "ExecutorProtocol",
    "ExecutorState",
]

logger = logging.getLogger(__name__)

EXECUTOR_PATH = "/api/v1/executor"


class ExecutorState(enum.Enum):
    """Where the executor's subscription is."""

    DISCONNECTED = "DISCONNECTED"
    SUBSCRIBING = "SUBSCRIBING"
    SUBSCRIBED = "SUBSCRIBED"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    CLOSED = "CLOSED"
    ERROR = "ERROR"


class ExecutorInput(enum.Enum):
    """What can happen to an executor subscription; keys of :data:`EXECUTOR_TRANSITIONS`."""

    START_SUBSCRIBE = "START_SUBSCRIBE"
    STREAM_OPENED = "STREAM_OPENED"
    SUBSCRIBED = "SUBSCRIBED"
    EVENT = "EVENT"
    SHUTDOWN = "SHUTDOWN"
    RETRY = "RETRY"
    GIVE_UP = "GIVE_UP"
    CLOSE = "CLOSE"


_S = ExecutorState
_I = ExecutorInput

#: Every legal (state, input) pair. Anything else is a protocol violation.
EXECUTOR_TRANSITIONS: dict[tuple[ExecutorState, ExecutorInput], ExecutorState] = {
    (_S.DISCONNECTED, _I.START_SUBSCRIBE): _S.SUBSCRIBING,
    (_S.DISCONNECTED, _I.CLOSE): _S.CLOSED,
    (_S.SUBSCRIBING, _I.STREAM_OPENED): _S.SUBSCRIBING,
    (_S.SUBSCRIBING, _I.SUBSCRIBED): _S.SUBSCRIBED,
    (_S.SUBSCRIBING, _I.RETRY): _S.DISCONNECTED,
    (_S.SUBSCRIBING, _I.GIVE_UP): _S.CLOSED,
    (_S.SUBSCRIBING, _I.CLOSE): _S.CLOSED,
    (_S.SUBSCRIBED, _I.EVENT): _S.SUBSCRIBED,
    (_S.SUBSCRIBED, _I.SHUTDOWN): _S.SHUTTING_DOWN,
    (_S.SUBSCRIBED, _I.RETRY): _S.DISCONNECTED,
    (_S.SUBSCRIBED, _I.GIVE_UP): _S.CLOSED,
    (_S.SUBSCRIBED, _I.CLOSE): _S.CLOSED,
    (_S.SHUTTING_DOWN, _I.EVENT): _S.SHUTTING_DOWN,
    (_S.SHUTTING_DOWN, _I.SHUTDOWN): _S.SHUTTING_DOWN,
    (_S.SHUTTING_DOWN, _I.GIVE_UP): _S.CLOSED,
    (_S.SHUTTING_DOWN, _I.CLOSE): _S.CLOSED,
    (_S.CLOSED, _I.CLOSE): _S.CLOSED,
    (_S.CLOSED, _I.EVENT): _S.CLOSED,
    (_S.CLOSED, _I.GIVE_UP): _S.CLOSED,
}


class ExecutorProtocol:
    """Subscription lifecycle plus unacknowledged task and update bookkeeping.

    :param checkpoint: the framework checkpoints (``MESOS_CHECKPOINT=1``): after a disconnection
        retry for ``recovery_timeout`` seconds; otherwise give up at once (executor-http-api.md,
        "Disconnections").
    :param backoff_max: ``MESOS_SUBSCRIPTION_BACKOFF_MAX``: no wait between retries may exceed
        it, or the recovering agent shuts us down as hung ("Agent Recovery").
    """

    def __init__(
        self,
        *,
        framework_id: str,
        executor_id: str,
        checkpoint: bool,
        recovery_timeout: float = DEFAULT_RECOVERY_TIMEOUT,
        backoff_max: float = DEFAULT_SUBSCRIPTION_BACKOFF_MAX,
        shutdown_grace_period: float = DEFAULT_SHUTDOWN_GRACE_PERIOD,
        subscribe_timeout: float = DEFAULT_SUBSCRIBE_TIMEOUT,
    ) -> None:
        self._framework_id = framework_id
        self._executor_id = executor_id
        self._checkpoint = checkpoint
        self._recovery_timeout = recovery_timeout
        self._backoff_max = backoff_max
        self._backoff_initial = min(0.25, backoff_max)
        self._shutdown_grace_period = shutdown_grace_period
        self._subscribe_timeout = subscribe_timeout
        self._state = ExecutorState.DISCONNECTED
        self._tasks: dict[TaskId, Any] = {}
        self._updates: dict[str, Any] = {}
        # Updates recorded while a SUBSCRIBE was already on its way: that SUBSCRIBE does not
        # carry them, so they must be sent as UPDATE calls once SUBSCRIBED arrives.
        self._unsent: list[str] = []
        self._disconnected_since: float | None = None
        self._failed_attempts = 0
        self._subscribe_started = 0.0
        self._shutdown_started = 0.0
        self._subscriptions = 0
        self._error: MesosError | None = None

    def __repr__(self) -> str:
        return (
            f"<ExecutorProtocol state={self._state.value} executor_id={self._executor_id}"
            f" unacknowledged_tasks={len(self._tasks)}"
            f" unacknowledged_updates={len(self._updates)}>"
        )

    @property
    def state(self) -> ExecutorState:
        """Current state."""
        return self._state

    @property
    def checkpoint(self) -> bool:
        """Whether disconnections are retried."""
        return self._checkpoint

    @property
    def subscriptions(self) -> int:
        """SUBSCRIBED events seen so far (1 = registered, more = re-registered)."""
        return self._subscriptions

    @property
    def error(self) -> MesosError | None:
        """The failure that put the protocol in ``ERROR``."""
        return self._error

    @property
    def unacknowledged_tasks(self) -> tuple[Any, ...]:
        """TaskInfos of tasks none of whose updates the agent has acknowledged yet."""
        return tuple(self._tasks.values())

    @property
    def unacknowledged_updates(self) -> tuple[Any, ...]:
        """TaskStatuses sent (or queued) but not acknowledged by the agent yet."""
        return tuple(self._updates.values())

    def _transition(self, inp: ExecutorInput, *, remote: bool = False) -> None:
        if self._state is ExecutorState.ERROR:
            raise LocalProtocolError(f"executor protocol failed earlier: {self._error}")
        new = EXECUTOR_TRANSITIONS.get((self._state, inp))
        if new is None:
            cls = RemoteProtocolError if remote else LocalProtocolError
            exc = cls(f"{inp.value} is not allowed in state {self._state.value}")
            self._state = ExecutorState.ERROR
            self._error = exc
            raise exc
        if new is not self._state:
            logger.debug("executor subscription %s -> %s", self._state.value, new.value)
        self._state = new

    def _encode(self, call: ExecutorCall) -> bytes:
        return encode_executor_call(
            call, executor_id=self._executor_id, framework_id=self._framework_id
        )

    def start_subscribe(self, now: float) -> bytes:
        """Begin a subscription; the body carries everything not yet acknowledged."""
        self._transition(ExecutorInput.START_SUBSCRIBE)
        self._subscribe_started = now
        self._unsent.clear()
        return self._encode(
            ExecutorSubscribeCall(
                unacknowledged_tasks=self.unacknowledged_tasks,
                unacknowledged_updates=self.unacknowledged_updates,
            )
        )

    def stream_opened(self, now: float) -> None:
        """The SUBSCRIBE answered 200 (the agent sends no stream id: transcripts, E1)."""
        self._transition(ExecutorInput.STREAM_OPENED, remote=True)

    def receive_event(self, event: ExecutorEvent, now: float) -> None:
        """Account for one event from the agent.

        :raises RemoteProtocolError: if the stream does not begin with SUBSCRIBED.
        """
        match event:
            case ExecutorSubscribed():
                self._transition(ExecutorInput.SUBSCRIBED, remote=True)
                self._subscriptions += 1
                self._failed_attempts = 0
                self._disconnected_since = None
                return
            case Shutdown():
                self._transition(ExecutorInput.SHUTDOWN, remote=True)
                self._shutdown_started = now
                return
        self._transition(ExecutorInput.EVENT, remote=True)
        match event:
            case Launch(task_id=task_id, task=task):
                self._remember_task(task_id, task)
            case LaunchGroup(task_ids=task_ids, tasks=tasks):
                for task_id, task in zip(task_ids, tasks, strict=True):
                    self._remember_task(task_id, task)
            case Acknowledged(task_id=task_id, uuid=uuid):
                if self._updates.pop(uuid, None) is None:
                    logger.debug("ACKNOWLEDGED for an update we do not hold: %s", uuid)
                # "A task is considered acknowledged if at least one of the status updates
                # for this task is acknowledged by the agent" (executor-http-api.md).
                self._tasks.pop(task_id, None)
            case _:
                pass

    def _remember_task(self, task_id: TaskId, task: Any) -> None:
        if task_id in self._tasks:
            logger.warning("LAUNCH of task %s, which is already launched", task_id)
        self._tasks[task_id] = task

    def send_update(self, status: Mapping[str, Any]) -> bytes | None:
        """Record *status* as unacknowledged and encode its UPDATE call.

        Returns ``None`` while not subscribed: the update then travels in the next SUBSCRIBE's
        ``unacknowledged_updates``, or, if a SUBSCRIBE is already on its way, goes out through
        :meth:`take_unsent_updates` after SUBSCRIBED.

        :raises LocalProtocolError: if *status* has no ``uuid`` or ``task_id``, or once closed.
        """
        self._check_open("UPDATE")
        uuid = status.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise LocalProtocolError("a status update needs a fresh base64 'uuid'")
        task_id = status.get("task_id")
        if not isinstance(task_id, Mapping) or not isinstance(task_id.get("value"), str):
            raise LocalProtocolError(f"a status update needs a task_id, got {task_id!r}")
        self._updates[uuid] = status
        if self._state in (ExecutorState.SUBSCRIBED, ExecutorState.SHUTTING_DOWN):
            return self._encode(UpdateCall(status=status))
        if self._state is ExecutorState.SUBSCRIBING:
            self._unsent.append(uuid)
        return None

    def take_unsent_updates(self) -> list[bytes]:
        """UPDATE bodies for updates recorded after the current SUBSCRIBE was built.

        Call once SUBSCRIBED has arrived; updates acknowledged meanwhile are skipped.
        """
        if self._state not in (ExecutorState.SUBSCRIBED, ExecutorState.SHUTTING_DOWN):
            raise LocalProtocolError(f"cannot send updates in state {self._state.value}")
        unsent, self._unsent = self._unsent, []
        return [
            self._encode(UpdateCall(status=self._updates[uuid]))
            for uuid in unsent
            if uuid in self._updates
        ]

    def send(self, call: ExecutorCall) -> bytes:
        """Encode a call other than UPDATE (which goes through :meth:`send_update`).

        :raises LocalProtocolError: unless subscribed.
        """
        if isinstance(call, UpdateCall):
            raise LocalProtocolError("use send_update() for UPDATE: it must be recorded")
        if isinstance(call, ExecutorSubscribeCall):
            raise LocalProtocolError("SUBSCRIBE is made by the driver, not sent as a call")
        self._check_open(type(call).__name__)
        if self._state not in (ExecutorState.SUBSCRIBED, ExecutorState.SHUTTING_DOWN):
            raise LocalProtocolError(f"cannot send a message in state {self._state.value}")
        return self._encode(call)

    def _check_open(self, what: str) -> None:
        if self._state in (ExecutorState.CLOSED, ExecutorState.ERROR):
            raise LocalProtocolError(
                f"cannot send {what}: the executor driver is {self._state.value}"
            )

    def connection_lost(self, now: float) -> float | None:
        """The agent connection broke; return the delay before retrying, or ``None`` to exit.

        Without checkpointing, or while shutting down, there is nothing to recover: exit.
        With checkpointing, retry until ``recovery_timeout`` has passed since the connection was
        first lost, never waiting longer than ``backoff_max`` between attempts.
        """
        if self._state is ExecutorState.DISCONNECTED:
            raise LocalProtocolError("connection_lost() while not connected")
        if not self._checkpoint or self._state in (ExecutorState.SHUTTING_DOWN, _S.CLOSED):
            self._transition(ExecutorInput.GIVE_UP)
            return None
        if self._disconnected_since is None:
            self._disconnected_since = now
        remaining = self._disconnected_since + self._recovery_timeout - now
        if remaining <= 0:
            logger.warning(
                "could not re-subscribe with the agent within the recovery timeout of %ss",
                self._recovery_timeout,
            )
            self._transition(ExecutorInput.GIVE_UP)
            return None
        self._transition(ExecutorInput.RETRY)
        self._failed_attempts += 1
        delay = backoff_delay(
            self._failed_attempts, initial=self._backoff_initial, maximum=self._backoff_max
        )
        return min(delay, remaining)

    def deadline(self) -> float | None:
        """Monotonic time by which something must happen, or ``None``.

        SUBSCRIBING: the SUBSCRIBED event. SHUTTING_DOWN: the end of the agent's grace period,
        after which the agent destroys the container anyway. The agent sends no heartbeats in
        practice (transcripts: none in 40 s on E2), so a quiet subscription has no deadline.
        """
        if self._state is ExecutorState.SUBSCRIBING:
            return self._subscribe_started + self._subscribe_timeout
        if self._state is ExecutorState.SHUTTING_DOWN:
            return self._shutdown_started + self._shutdown_grace_period
        return None

    def close(self) -> None:
        """We are done; nothing more is sent or retried."""
        if self._state is not ExecutorState.ERROR:
            self._transition(ExecutorInput.CLOSE)
