"""The executor driver: an executor's subscription to its agent, with pymesos' API."""

from __future__ import annotations

import base64
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from addict import Dict

from toil_mesos.errors import MesosError, ReadTimeout, StreamClosed, TransportError
from toil_mesos.mesos._driver_base import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    JSON_HEADERS,
    Command,
    DriverBase,
    DriverStatus,
    Item,
    ReaderCrashed,
    Stop,
    StreamEnded,
    StreamEvent,
    StreamHead,
    ident,
)
from toil_mesos.mesos._events import (
    Acknowledged,
    Error,
    ExecutorMessage,
    ExecutorMessageCall,
    ExecutorSubscribed,
    Heartbeat,
    Kill,
    Launch,
    LaunchGroup,
    Shutdown,
    UnknownEvent,
    parse_executor_event,
)
from toil_mesos.mesos._executor_env import ExecutorEnvironment
from toil_mesos.mesos._executor_state import EXECUTOR_PATH, ExecutorProtocol, ExecutorState
from toil_mesos.mesos._transport import Transport
from toil_mesos.mesos.interface import Executor

__all__ = ["ExecutorDriver"]

logger = logging.getLogger(__name__)

#: At most this many status updates go out in one pipelined write.
_UPDATE_BATCH = 64

class ExecutorDriver(DriverBase):
    """A Mesos v1 HTTP executor driver with pymesos-compatible methods and callbacks.

    :param executor: receives callbacks (see :class:`~toil_mesos.mesos.interface.Executor`).
    :param env: the executor environment (default ``os.environ``), read once, here.
    """

    _role = "executor"

    def __init__(
        self,
        executor: Executor,
        *,
        env: Mapping[str, str] | None = None,
        transport: Transport | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], object] | None = None,
        wall_clock: Callable[[], float] | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        super().__init__(
            transport=transport,
            clock=clock,
            sleep=sleep,
            call_timeout=call_timeout,
            stop_timeout=stop_timeout,
        )
        self._executor = executor
        self._env = ExecutorEnvironment.from_env(os.environ if env is None else env)
        self._wall_clock = wall_clock if wall_clock is not None else time.time
        self._protocol = ExecutorProtocol(
            framework_id=self._env.framework_id,
            executor_id=self._env.executor_id,
            checkpoint=self._env.checkpoint,
            recovery_timeout=self._env.recovery_timeout,
            backoff_max=self._env.subscription_backoff_max,
            shutdown_grace_period=self._env.shutdown_grace_period,
        )
        endpoint = self._env.agent_endpoint
        base = endpoint if "://" in endpoint else "http://" + endpoint
        self._url = base.rstrip("/") + EXECUTOR_PATH
        self._headers = dict(JSON_HEADERS)
        if self._env.authentication_token:
            self._headers["Authorization"] = "Bearer " + self._env.authentication_token
        self._deferred_messages: list[ExecutorMessageCall] = []
        self._updates = _UpdateSender(
            lambda body: self._post(self._url, body, self._headers, "executor.UPDATE"),
            self._post_updates if hasattr(self._transport, "post_many") else None,
        )

    def __repr__(self) -> str:
        return f"<ExecutorDriver status={self._status.value} protocol={self._protocol!r}>"

    @property
    def environment(self) -> ExecutorEnvironment:
        """What the agent told us through the environment."""
        return self._env

    @property
    def executor_state(self) -> ExecutorState:
        """The protocol's view of the subscription (for logs and tests)."""
        return self._protocol.state

    @property
    def unacknowledged_updates(self) -> tuple[Any, ...]:
        """Updates the agent has not acknowledged yet (a snapshot)."""
        return self._protocol.unacknowledged_updates

    # ---- public API --------------------------------------------------------------------------

    def stop(self) -> DriverStatus:
        """Send what is queued, then stop within ``stop_timeout``."""
        return self._request_stop(Stop(failover=True))

    def sendStatusUpdate(self, status: Mapping[str, Any]) -> Any:
        """Send a TaskStatus with a fresh ``uuid`` (and ``timestamp``/``source`` if missing).

        It counts as unacknowledged until the agent's ACKNOWLEDGED; if the connection breaks
        first, the next SUBSCRIBE carries it. Returns the status as sent.
        """
        self._check_usable()
        sent = Dict(status)
        sent.uuid = base64.b64encode(uuid.uuid4().bytes).decode("ascii")
        if "timestamp" not in sent:
            sent.timestamp = self._wall_clock()
        if "source" not in sent:
            sent.source = "SOURCE_EXECUTOR"
        self._inbox.put(Command(call=sent))
        return sent

    def sendFrameworkMessage(self, data: str) -> None:
        """MESSAGE base64 *data* to the scheduler."""
        self._check_usable()
        self._inbox.put(Command(call=ExecutorMessageCall(data=data)))

    # ---- driver thread -----------------------------------------------------------------------

    @staticmethod
    def _parse_event(record: bytes) -> Any:
        return parse_executor_event(record)

    def _begin(self) -> None:
        body = self._protocol.start_subscribe(self._clock())
        logger.info("Subscribing to the Mesos agent at %s", self._url)
        self._open_stream(self._url, body, self._headers)

    def _deadline(self) -> float | None:
        return self._protocol.deadline()

    def _check_deadline(self) -> bool:
        deadline = self._protocol.deadline()
        if deadline is None or self._clock() < deadline:
            return True
        if self._protocol.state is ExecutorState.SHUTTING_DOWN:
            logger.warning("shutdown grace period over; stopping the executor driver")
            self._protocol.close()
            self._drop_stream()
            return False
        return self._lost(ReadTimeout("no SUBSCRIBED from the agent in time"))

    def _handle(self, item: Item) -> bool:
        match item:
            case Command(call=ExecutorMessageCall() as message):
                self._message(message)
                return True
            case Command(call=status):
                self._update(status)
                return True
            case Stop():
                self._protocol.close()
                self._drop_stream()
                return False
            case ReaderCrashed(error=error):
                raise error
            case StreamHead() | StreamEvent() | StreamEnded() if item.gen != self._gen:
                return True
            case StreamHead(status=200):
                self._protocol.stream_opened(self._clock())
                return True
            case StreamHead(status=status, body=body):
                logger.warning(
                    "the agent answered SUBSCRIBE with %s: %s",
                    status,
                    body.decode("utf-8", "replace"),
                )
                return self._lost(StreamClosed(f"SUBSCRIBE answered {status}"))
            case StreamEvent(event=event, received=received):
                return self._event(event, received)
            case StreamEnded(error=error):
                return self._lost(error)
        return True  # pragma: no cover

    def _lost(self, error: MesosError | None) -> bool:
        state = self._protocol.state
        self._drop_stream()
        if state is ExecutorState.CLOSED:
            return False
        logger.warning("agent connection lost: %s", error)
        if state is ExecutorState.SUBSCRIBED:
            self._executor.disconnected(self)
        delay = self._protocol.connection_lost(self._clock())
        if delay is None:
            if state is not ExecutorState.SHUTTING_DOWN:
                logger.warning(
                    "%s: shutting the executor down",
                    "recovery timeout over"
                    if self._protocol.checkpoint
                    else "framework does not checkpoint",
                )
                self._executor.shutdown(self)
            return False
        if not self._backoff(delay):
            return True
        self._begin()
        return True

    def _event(self, event: Any, received: float) -> bool:
        self._protocol.receive_event(event, received)
        executor = self._executor
        match event:
            case ExecutorSubscribed(
                executor_info=executor_info, framework_info=framework_info, agent_info=agent_info
            ):
                logger.info("Executor %s subscribed with the agent", self._env.executor_id)
                if self._protocol.subscriptions == 1:
                    executor.registered(self, executor_info, framework_info, agent_info)
                else:
                    executor.reregistered(self, agent_info)
                for body in self._protocol.take_unsent_updates():
                    self._post(self._url, body, self._headers, "executor.UPDATE")
                deferred, self._deferred_messages = self._deferred_messages, []
                for message in deferred:
                    self._message(message)
            case Launch(task=task):
                executor.launchTask(self, task)
            case LaunchGroup(tasks=tasks):
                executor.launchTaskGroup(self, list(tasks))
            case Kill(task_id=task_id):
                executor.killTask(self, ident(task_id))
            case Acknowledged(task_id=task_id, uuid=uuid_):
                executor.acknowledged(self, ident(task_id), uuid_)
            case ExecutorMessage(data=data):
                executor.frameworkMessage(self, data)
            case Shutdown():
                logger.info("the agent asked executor %s to shut down", self._env.executor_id)
                executor.shutdown(self)
                # Updates the callback queued (TASK_KILLED) go out before the stop.
                self._inbox.put(Stop(failover=True))
            case Error(message=message):
                executor.error(self, message)
            case Heartbeat():
                pass
            case UnknownEvent(type=kind):
                logger.warning("ignoring unknown Mesos executor event type %r", kind)
        return True

    def _update(self, status: Any) -> None:
        body = self._protocol.send_update(status)
        if body is None:
            logger.info(
                "not subscribed: update %s for task %s goes out with the next SUBSCRIBE",
                status.get("state"),
                status.get("task_id", {}).get("value"),
            )
            return
        self._updates.send(body)

    def _post_updates(self, bodies: list[bytes]) -> bool:
        """(The update thread.) POST *bodies* pipelined; False if that failed midway (they are
        then sent one by one: the agent takes a repeated update as the same update)."""
        try:
            self._transport.post_many(  # type: ignore[attr-defined]
                self._url, bodies, self._headers, timeout=self._call_timeout
            )
        except TransportError as exc:
            logger.info("pipelined status updates failed (%s); sending them one by one", exc)
            return False
        logger.debug("executor.UPDATE x%d complete", len(bodies))
        return True

    def _close_helpers(self, deadline: float) -> None:
        # Updates queued before the stop (TASK_KILLED at shutdown) still go out, in time.
        self._updates.close(deadline)

    def _message(self, message: ExecutorMessageCall) -> None:
        if self._protocol.state not in (ExecutorState.SUBSCRIBED, ExecutorState.SHUTTING_DOWN):
            self._deferred_messages.append(message)
            return
        self._post(self._url, self._protocol.send(message), self._headers, "executor.MESSAGE")

    def _notify_failure(self, exc: Exception) -> None:
        try:
            self._executor.error(self, f"Mesos executor driver failed: {exc}")
        except Exception:
            logger.exception("Executor.error() raised while reporting a driver failure")


class _UpdateSender:
    """Status updates POSTed by a thread of their own, those waiting together pipelined on one
    connection, so that 64 tasks starting at once on a big agent do not each wait for the
    agent to answer the updates of all the others before theirs goes out.

    One thread, one connection: updates reach the agent in the order they were made. Each is
    recorded as unacknowledged before it is queued, so one that fails to go out is sent again
    with the next SUBSCRIBE.
    """

    def __init__(self, post: Callable[[bytes], object],
                 post_many: Callable[[list[bytes]], bool] | None) -> None:
        self._post = post
        self._post_many = post_many
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._deadline: float | None = None

    def send(self, body: bytes) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="mesos-executor-updates")
            self._thread.start()
        self._queue.put(body)

    def close(self, deadline: float) -> None:
        self._deadline = deadline
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            batch: list[bytes] = []
            body = self._queue.get()
            while body is not None:
                batch.append(body)
                if len(batch) >= _UPDATE_BATCH:
                    break
                try:
                    body = self._queue.get_nowait()
                except queue.Empty:
                    break
            in_time = self._deadline is None or time.monotonic() <= self._deadline
            pipelined = (in_time and len(batch) > 1 and self._post_many is not None
                         and self._post_many(batch))
            if in_time and not pipelined:
                for one in batch:
                    self._post(one)
            if body is None:
                return
