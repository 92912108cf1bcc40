"""Scheduler and executor drivers: threads and queues around the sans-I/O state machines.

Each driver runs two kinds of thread (STYLE.md, "Concurrency"):

* ``mesos-<role>-reader``: one per connection attempt. It POSTs the SUBSCRIBE, reads the
  stream, decodes RecordIO and parses events, and puts everything on the driver's inbox. It
  owns no protocol state.
* ``mesos-<role>-driver``: the only owner of protocol state. It takes stream items and the
  caller's commands from the inbox in order, POSTs calls, runs the callbacks, and watches the
  deadlines (heartbeats, subscription, shutdown grace) with a bounded ``get(timeout=...)``.

Public methods only put commands on the inbox, so they never block on the network and are safe
from any thread, including from inside a callback. A failure of the driver thread (an
unexpected exception, a callback that raised, a fatal protocol error such as a redirect loop) is
stored and re-raised by the next public call and by :meth:`join`. Nothing here installs signal
handlers, kills processes or acts at import time.
"""

from __future__ import annotations

import base64
import enum
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from addict import Dict

from toil_mesos.errors import (
    LocalProtocolError,
    MesosError,
    ReadTimeout,
    StreamClosed,
    TransportError,
)
from toil_mesos.mesos._events import (
    AcceptCall,
    AcknowledgeCall,
    Acknowledged,
    AgentId,
    DeclineCall,
    Error,
    EventStream,
    ExecutorId,
    ExecutorMessage,
    ExecutorMessageCall,
    ExecutorSubscribed,
    Failure,
    Heartbeat,
    InverseOffers,
    Kill,
    KillCall,
    Launch,
    LaunchGroup,
    Message,
    MessageCall,
    Offers,
    ReconcileCall,
    Rescind,
    RescindInverseOffer,
    ReviveCall,
    SchedulerCall,
    Shutdown,
    ShutdownCall,
    Subscribed,
    SuppressCall,
    TaskId,
    TeardownCall,
    UnknownEvent,
    Update,
    UpdateOperationStatus,
    as_tuple,
    id_value,
    offer_ids_of,
    parse_executor_event,
    parse_scheduler_event,
)
from toil_mesos.mesos._executor_env import ExecutorEnvironment
from toil_mesos.mesos._executor_state import EXECUTOR_PATH, ExecutorProtocol, ExecutorState
from toil_mesos.mesos._recordio import END_OF_STREAM, NEED_DATA
from toil_mesos.mesos._scheduler_state import (
    DEFAULT_BACKOFF_INITIAL,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_MAX_REDIRECTS,
    DEFAULT_MISSED_HEARTBEATS,
    DEFAULT_SUBSCRIBE_TIMEOUT,
    CallOutcome,
    CallPolicy,
    SchedulerProtocol,
    SubscriptionState,
    classify_call_response,
)
from toil_mesos.mesos._transport import HttpxTransport, StreamResponse, Transport
from toil_mesos.mesos.interface import Executor, Scheduler

__all__ = ["DriverStatus", "ExecutorDriver", "SchedulerDriver"]

logger = logging.getLogger(__name__)

#: Default timeout of one call POST (scheduler-http-api.md suggests 75 s for responses; calls
#: are answered at once in practice, in under 15 ms in every transcript).
DEFAULT_CALL_TIMEOUT = 30.0
#: How long ``stop()`` waits for the driver's threads.
DEFAULT_STOP_TIMEOUT = 10.0
# The driver thread never waits longer than this in one go, so that a deadline computed from an
# injected clock is re-checked even if nothing arrives.
_MAX_WAIT = 1.0
# A non-200 SUBSCRIBE answer is a short text; read at most this much of it.
_MAX_ERROR_BODY = 64 * 1024
_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class DriverStatus(enum.StrEnum):
    """Driver states, named as Mesos' ``Status`` enum so ``join() == "DRIVER_STOPPED"`` works."""

    DRIVER_NOT_STARTED = "DRIVER_NOT_STARTED"
    DRIVER_RUNNING = "DRIVER_RUNNING"
    DRIVER_ABORTED = "DRIVER_ABORTED"
    DRIVER_STOPPED = "DRIVER_STOPPED"


# ---- inbox items ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _StreamHead:
    gen: int
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class _StreamEvent:
    gen: int
    event: Any
    received: float  # when the reader got it: a slow callback must not look like a dead master


@dataclass(frozen=True, slots=True, kw_only=True)
class _StreamEnded:
    gen: int
    error: MesosError | None


@dataclass(frozen=True, slots=True, kw_only=True)
class _ReaderCrashed:
    error: Exception


@dataclass(frozen=True, slots=True, kw_only=True)
class _Command:
    call: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class _Stop:
    failover: bool


_Item = _StreamHead | _StreamEvent | _StreamEnded | _ReaderCrashed | _Command | _Stop


def _ident(value: str) -> Any:
    return Dict({"value": value})


class _DriverBase:
    """Thread, inbox, failure and stream plumbing shared by both drivers."""

    _role = "driver"

    def __init__(
        self,
        *,
        transport: Transport | None,
        clock: Callable[[], float] | None,
        sleep: Callable[[float], object] | None,
        call_timeout: float,
        stop_timeout: float,
    ) -> None:
        self._owns_transport = transport is None
        self._transport: Transport = transport if transport is not None else HttpxTransport()
        self._clock = clock if clock is not None else time.monotonic
        self._stopping = threading.Event()
        # The default sleep is interruptible: stop() cuts a backoff short.
        self._sleep = sleep if sleep is not None else self._stopping.wait
        self._call_timeout = call_timeout
        self._stop_timeout = stop_timeout
        self._inbox: queue.Queue[_Item] = queue.Queue()
        self._lock = threading.Lock()
        self._status = DriverStatus.DRIVER_NOT_STARTED
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._readers: list[threading.Thread] = []
        self._stream: StreamResponse | None = None
        self._gen = 0
        self._done = threading.Event()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} status={self._status.value}>"

    # ---- public lifecycle ------------------------------------------------------------------

    @property
    def status(self) -> DriverStatus:
        """Where the driver is; DRIVER_ABORTED after a failure or a Mesos ERROR."""
        return self._status

    def start(self) -> DriverStatus:
        """Start the driver thread, which subscribes at once.

        :raises LocalProtocolError: if the driver was started before.
        """
        with self._lock:
            if self._status is not DriverStatus.DRIVER_NOT_STARTED:
                raise LocalProtocolError(f"driver already started ({self._status.value})")
            self._status = DriverStatus.DRIVER_RUNNING
            self._thread = threading.Thread(
                target=self._run, name=f"mesos-{self._role}-driver", daemon=True
            )
        self._thread.start()
        return self._status

    def join(self, timeout: float | None = None) -> DriverStatus:
        """Wait for the driver to end (``None``: until it does); return its status.

        :raises BaseException: the driver thread's failure, if it failed.
        """
        if self._status is DriverStatus.DRIVER_NOT_STARTED:
            raise LocalProtocolError("join() before start()")
        self._done.wait(timeout)
        self._raise_failure()
        return self._status

    def run(self) -> DriverStatus:
        """``start()`` then ``join()``, as pymesos offered."""
        self.start()
        return self.join()

    def _request_stop(self, stop: _Stop) -> DriverStatus:
        if self._status is DriverStatus.DRIVER_NOT_STARTED:
            self._status = DriverStatus.DRIVER_STOPPED
            self._done.set()
            return self._status
        self._inbox.put(stop)
        self._stopping.set()
        if threading.current_thread() is self._thread:
            return self._status  # called from a callback: the loop ends after it returns
        if not self._done.wait(self._stop_timeout):
            logger.warning(
                "Mesos %s driver did not stop within %ss; its daemon threads are left behind",
                self._role,
                self._stop_timeout,
            )
        self._raise_failure()
        return self._status

    # ---- failure handling ------------------------------------------------------------------

    def _raise_failure(self) -> None:
        failure = self._failure
        if failure is not None:
            raise failure

    def _check_usable(self) -> None:
        self._raise_failure()
        if self._status is DriverStatus.DRIVER_NOT_STARTED:
            raise LocalProtocolError("start() the driver first")
        if self._done.is_set():
            raise LocalProtocolError(f"the driver has ended ({self._status.value})")

    def _run(self) -> None:
        try:
            self._main()
            if self._status is DriverStatus.DRIVER_RUNNING:
                self._status = DriverStatus.DRIVER_STOPPED
        except Exception as exc:
            logger.critical("Mesos %s driver thread failed: %s", self._role, exc, exc_info=True)
            self._failure = exc
            self._status = DriverStatus.DRIVER_ABORTED
            self._notify_failure(exc)
        finally:
            self._stopping.set()
            self._drop_stream()
            # One budget for all readers: an aborted stream ends its reader at once.
            deadline = time.monotonic() + self._stop_timeout
            for reader in self._readers:
                reader.join(max(0.0, deadline - time.monotonic()))
            if self._owns_transport:
                self._transport.close()
            self._done.set()

    def _notify_failure(self, exc: Exception) -> None:
        """Tell the callbacks about a fatal failure (best effort)."""

    # ---- the stream ------------------------------------------------------------------------

    def _open_stream(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Start a reader thread for a new connection attempt; older ones become stale."""
        self._drop_stream()
        with self._lock:
            self._gen += 1
            gen = self._gen
        self._readers = [r for r in self._readers if r.is_alive()]
        reader = threading.Thread(
            target=self._read,
            args=(gen, url, body, {**headers, "Accept-Encoding": "identity"}),
            name=f"mesos-{self._role}-reader-{gen}",
            daemon=True,
        )
        self._readers.append(reader)
        reader.start()

    def _drop_stream(self) -> None:
        """Abort the current stream (its reader ends promptly) and forget it."""
        with self._lock:
            stream, self._stream = self._stream, None
            self._gen += 1
        if stream is not None:
            stream.abort()

    def _read(self, gen: int, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            self._read_stream(gen, url, body, headers)
        except Exception as exc:
            # Not a transport or protocol failure (those are reported as _StreamEnded): a bug.
            # The driver thread re-raises it, so it reaches the caller.
            logger.exception("Mesos %s stream reader failed", self._role)
            self._inbox.put(_ReaderCrashed(error=exc))

    def _read_stream(self, gen: int, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            stream = self._transport.open_stream(
                url,
                body,
                headers,
                connect_timeout=self._call_timeout,
                read_timeout=None,  # a silent stream is caught by the driver's deadline
            )
        except TransportError as exc:
            self._inbox.put(_StreamEnded(gen=gen, error=exc))
            return
        with self._lock:
            current = gen == self._gen and not self._stopping.is_set()
            if current:
                self._stream = stream
        try:
            if not current:
                stream.abort()
                return
            if stream.status != 200:
                self._inbox.put(
                    _StreamHead(
                        gen=gen, status=stream.status, headers=stream.headers, body=_drain(stream)
                    )
                )
                return
            self._inbox.put(_StreamHead(gen=gen, status=200, headers=stream.headers, body=b""))
            self._pump(gen, stream)
        except MesosError as exc:
            self._inbox.put(_StreamEnded(gen=gen, error=exc))
        finally:
            stream.close()

    def _pump(self, gen: int, stream: StreamResponse) -> None:
        events = EventStream(self._parse_event)
        while True:
            data = stream.read()
            events.feed(data)
            while True:
                event = events.next_event()
                if event is NEED_DATA:
                    break
                if event is END_OF_STREAM:
                    self._inbox.put(
                        _StreamEnded(gen=gen, error=StreamClosed("the peer ended the stream"))
                    )
                    return
                self._inbox.put(_StreamEvent(gen=gen, event=event, received=self._clock()))

    @staticmethod
    def _parse_event(record: bytes) -> Any:
        raise NotImplementedError

    # ---- the driver loop -------------------------------------------------------------------

    def _main(self) -> None:
        self._begin()
        while True:
            timeout = self._wait_timeout()
            try:
                item: _Item | None = self._inbox.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is not None and not self._handle(item):
                return
            # Deadlines are judged only once everything that arrived has been handled.
            if self._inbox.empty() and not self._check_deadline():
                return

    def _wait_timeout(self) -> float:
        deadline = self._deadline()
        if deadline is None:
            return _MAX_WAIT
        return min(max(deadline - self._clock(), 0.0), _MAX_WAIT)

    def _begin(self) -> None:
        raise NotImplementedError

    def _deadline(self) -> float | None:
        raise NotImplementedError

    def _check_deadline(self) -> bool:
        raise NotImplementedError

    def _handle(self, item: _Item) -> bool:
        raise NotImplementedError

    def _backoff(self, delay: float) -> bool:
        """Wait *delay* before reconnecting; False if a stop came in meanwhile."""
        if delay > 0 and not self._stopping.is_set():
            logger.info("Mesos %s driver re-subscribing in %.3gs", self._role, delay)
            self._sleep(delay)
        return not self._stopping.is_set()

    def _post(self, url: str, body: bytes, headers: Mapping[str, str], what: str) -> int | None:
        """POST one call; return its status, or None if it could not be delivered."""
        logger.debug("%s.started %s", what, url)
        try:
            response = self._transport.post(url, body, headers, timeout=self._call_timeout)
        except TransportError as exc:
            logger.warning("%s.failed: %s", what, exc)
            return None
        if response.status in (200, 202):
            logger.debug("%s.complete %s", what, response.status)
        else:
            logger.error(
                "%s.failed: %s %s",
                what,
                response.status,
                response.body[:_MAX_ERROR_BODY].decode("utf-8", "replace"),
            )
        return response.status


def _drain(stream: StreamResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        while size < _MAX_ERROR_BODY:
            chunk = stream.read()
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except TransportError:
        pass  # the status says enough; the reason text is a nicety
    return b"".join(chunks)[:_MAX_ERROR_BODY]


# =============================================================================================
# Scheduler


class SchedulerDriver(_DriverBase):
    """A Mesos v1 HTTP scheduler driver with pymesos-compatible methods and callbacks.

    :param scheduler: receives callbacks (see :class:`~toil_mesos.mesos.interface.Scheduler`).
    :param framework_info: v1 ``FrameworkInfo`` JSON (``user``, ``name``, ``roles``,
        ``failover_timeout``, ``capabilities``; an ``id`` to re-subscribe an existing framework).
    :param master: ``host:port`` (or ``http://host:port``) of a master; calls follow its 307
        redirects to the leader.
    :param implicit_acknowledgements: acknowledge every update that carries a uuid right after
        ``statusUpdate`` returns (pymesos' default, which Toil relies on).
    :param transport: HTTP transport (default: httpx); :param clock: monotonic clock;
        :param sleep: backoff sleep (default: interruptible by ``stop()``).
    """

    _role = "scheduler"

    def __init__(
        self,
        scheduler: Scheduler,
        framework_info: Mapping[str, Any],
        master: str,
        *,
        implicit_acknowledgements: bool = True,
        transport: Transport | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], object] | None = None,
        missed_heartbeats: float = DEFAULT_MISSED_HEARTBEATS,
        subscribe_timeout: float = DEFAULT_SUBSCRIBE_TIMEOUT,
        backoff_initial: float = DEFAULT_BACKOFF_INITIAL,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
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
        self._scheduler = scheduler
        self._implicit_acks = implicit_acknowledgements
        self._protocol = SchedulerProtocol(
            framework_info,
            master,
            missed_heartbeats=missed_heartbeats,
            subscribe_timeout=subscribe_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            max_redirects=max_redirects,
        )
        self._deferred: list[SchedulerCall] = []

    def __repr__(self) -> str:
        return f"<SchedulerDriver status={self._status.value} protocol={self._protocol!r}>"

    @property
    def framework_id(self) -> str | None:
        """The framework id, once the master has assigned it."""
        return self._protocol.framework_id

    @property
    def subscription_state(self) -> SubscriptionState:
        """The protocol's view of the subscription (for logs and tests)."""
        return self._protocol.state

    # ---- public API (pymesos names) ----------------------------------------------------------

    def stop(self, failover: bool = False) -> DriverStatus:
        """Stop the driver within ``stop_timeout``.

        Calls made before ``stop()`` are sent first. Unless *failover*, a TEARDOWN removes the
        framework (killing its tasks); with *failover* the framework survives for
        ``failover_timeout`` so that another scheduler can re-subscribe it.
        """
        return self._request_stop(_Stop(failover=failover))

    def _call(self, call: SchedulerCall) -> None:
        self._check_usable()
        self._inbox.put(_Command(call=call))

    def launchTasks(
        self,
        offer_ids: Any,
        tasks: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        filters: Mapping[str, Any] | None = None,
    ) -> None:
        """ACCEPT *offer_ids* with one LAUNCH of *tasks* (v1 TaskInfo objects)."""
        operation = {"type": "LAUNCH", "launch": {"task_infos": list(as_tuple(tasks))}}
        self.acceptOffers(offer_ids, [operation], filters)

    def acceptOffers(
        self,
        offer_ids: Any,
        operations: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        filters: Mapping[str, Any] | None = None,
    ) -> None:
        """ACCEPT *offer_ids* with v1 ``Offer.Operation`` objects."""
        self._call(
            AcceptCall(
                offer_ids=offer_ids_of(offer_ids),
                operations=as_tuple(operations),
                filters=filters,
            )
        )

    def declineOffer(self, offer_ids: Any, filters: Mapping[str, Any] | None = None) -> None:
        """DECLINE one offer id or several, optionally with ``{"refuse_seconds": ...}``."""
        self._call(DeclineCall(offer_ids=offer_ids_of(offer_ids), filters=filters))

    def reviveOffers(self, roles: Iterable[str] = ()) -> None:
        """REVIVE: clear filters and resume offers."""
        self._call(ReviveCall(roles=tuple(roles)))

    def suppressOffers(self, roles: Iterable[str] = ()) -> None:
        """SUPPRESS: stop offers until REVIVE."""
        self._call(SuppressCall(roles=tuple(roles)))

    def killTask(self, task_id: Any, agent_id: Any = None) -> None:
        """KILL a task; pass *agent_id* when known, so the master can find unknown tasks."""
        self._call(
            KillCall(
                task_id=TaskId(id_value(task_id)),
                agent_id=None if agent_id is None else _agent(agent_id),
            )
        )

    def acknowledgeStatusUpdate(self, status: Mapping[str, Any]) -> None:
        """ACKNOWLEDGE *status*, only if it carries a uuid (master-generated ones do not)."""
        uuid_ = status.get("uuid")
        if not uuid_:
            return
        self._call(
            AcknowledgeCall(
                agent_id=_agent(status["agent_id"]),
                task_id=TaskId(id_value(status["task_id"])),
                uuid=str(uuid_),
            )
        )

    def reconcileTasks(self, tasks: Iterable[Mapping[str, Any]]) -> None:
        """RECONCILE the given TaskStatus-like objects (``task_id``, optional ``agent_id``);
        an empty list asks for every task (implicit reconciliation)."""
        entries = []
        for task in tasks:
            agent = task.get("agent_id")
            entries.append(
                (TaskId(id_value(task["task_id"])), None if agent is None else _agent(agent))
            )
        self._call(ReconcileCall(tasks=tuple(entries)))

    def frameworkMessage(self, executor_id: Any, agent_id: Any, data: str) -> None:
        """MESSAGE base64 *data* to an executor."""
        self._call(
            MessageCall(agent_id=_agent(agent_id), executor_id=_executor(executor_id), data=data)
        )

    sendFrameworkMessage = frameworkMessage  # pymesos' name for the same call

    def shutdownExecutor(self, executor_id: Any, agent_id: Any) -> None:
        """SHUTDOWN one custom executor."""
        self._call(ShutdownCall(executor_id=_executor(executor_id), agent_id=_agent(agent_id)))

    def teardown(self) -> None:
        """TEARDOWN the framework now (the driver then stops once the master ends the stream)."""
        self._call(TeardownCall())

    # ---- driver thread -----------------------------------------------------------------------

    @staticmethod
    def _parse_event(record: bytes) -> Any:
        return parse_scheduler_event(record)

    def _begin(self) -> None:
        request = self._protocol.start_subscribe(self._clock())
        logger.info("Subscribing to the Mesos master at %s", self._protocol.master)
        self._open_stream(request.url, request.body, _JSON_HEADERS)

    def _deadline(self) -> float | None:
        return self._protocol.deadline()

    def _check_deadline(self) -> bool:
        now = self._clock()
        if not self._protocol.deadline_expired(now):
            return True
        logger.warning(
            "nothing from the Mesos master %s in time (state %s, heartbeat %ss): "
            "treating the subscription as lost",
            self._protocol.master,
            self._protocol.state.value,
            self._protocol.heartbeat_interval,
        )
        return self._lost(ReadTimeout("heartbeat or SUBSCRIBED deadline passed"))

    def _handle(self, item: _Item) -> bool:
        match item:
            case _Command(call=call):
                self._command(call)
                return True
            case _Stop(failover=failover):
                self._finish(failover=failover)
                return False
            case _ReaderCrashed(error=error):
                raise error
            case _StreamHead() | _StreamEvent() | _StreamEnded() if item.gen != self._gen:
                return True  # from a connection we already gave up
            case _StreamHead():
                return self._head(item)
            case _StreamEvent(event=event, received=received):
                return self._event(event, received)
            case _StreamEnded(error=error):
                return self._lost(error)
        return True  # pragma: no cover

    def _head(self, head: _StreamHead) -> bool:
        now = self._clock()
        if head.status == 200:
            self._protocol.stream_opened(head.headers.get("mesos-stream-id"), now)
            logger.info(
                "Subscription stream open at %s (stream id %s)",
                self._protocol.master,
                self._protocol.stream_id,
            )
            return True
        if head.status == 307:
            request = self._protocol.redirected(head.headers.get("location", ""), now)
            self._open_stream(request.url, request.body, _JSON_HEADERS)
            return True
        self._drop_stream()
        delay = self._protocol.subscribe_rejected(
            head.status, head.body.decode("utf-8", "replace"), now
        )
        return self._resubscribe_after(delay)

    def _lost(self, error: MesosError | None) -> bool:
        was_subscribed = self._protocol.state is SubscriptionState.SUBSCRIBED
        self._drop_stream()
        if self._protocol.state is SubscriptionState.CLOSED:
            return False  # TEARDOWN or a Mesos ERROR ended the stream, as expected
        logger.warning("Mesos subscription lost: %s", error)
        delay = self._protocol.connection_lost(self._clock())
        if was_subscribed:
            self._scheduler.disconnected(self)
        return self._resubscribe_after(delay)

    def _resubscribe_after(self, delay: float) -> bool:
        if not self._backoff(delay):
            return True  # the _Stop in the inbox ends the loop
        self._begin()
        return True

    def _event(self, event: Any, received: float) -> bool:
        self._protocol.receive_event(event, received)
        scheduler = self._scheduler
        match event:
            case Subscribed(framework_id=framework_id, master_info=master_info):
                logger.info("Subscribed as Mesos framework %s", framework_id)
                if self._protocol.subscriptions == 1:
                    scheduler.registered(self, _ident(framework_id), master_info)
                else:
                    scheduler.reregistered(self, master_info)
                self._flush_deferred()
            case Offers(offers=offers):
                if offers:
                    scheduler.resourceOffers(self, list(offers))
            case InverseOffers(inverse_offers=offers):
                if offers:
                    scheduler.inverseOffers(self, list(offers))
            case Rescind(offer_id=offer_id):
                scheduler.offerRescinded(self, _ident(offer_id))
            case RescindInverseOffer(inverse_offer_id=offer_id):
                scheduler.inverseOfferRescinded(self, _ident(offer_id))
            case Update(status=status, uuid=uuid_):
                scheduler.statusUpdate(self, status)
                if self._implicit_acks and uuid_ is not None and "agent_id" in status:
                    self._command(
                        AcknowledgeCall(
                            agent_id=_agent(status["agent_id"]),
                            task_id=TaskId(id_value(status["task_id"])),
                            uuid=uuid_,
                        )
                    )
            case UpdateOperationStatus(status=status):
                scheduler.operationStatusUpdate(self, status)
            case Message(agent_id=agent_id, executor_id=executor_id, data=data):
                scheduler.frameworkMessage(self, _ident(executor_id), _ident(agent_id), data)
            case Failure(agent_id=agent_id, executor_id=None):
                if agent_id is not None:
                    scheduler.agentLost(self, _ident(agent_id))
            case Failure(agent_id=agent_id, executor_id=str() as executor_id, status=status):
                scheduler.executorLost(
                    self,
                    _ident(executor_id),
                    None if agent_id is None else _ident(agent_id),
                    status,
                )
            case Error(message=message):
                logger.error("Mesos master ended the subscription: %s", message)
                self._status = DriverStatus.DRIVER_ABORTED
                self._drop_stream()
                scheduler.error(self, message)
                return False
            case Heartbeat():
                scheduler.processHeartBeat(self)
            case UnknownEvent(type=kind):
                logger.warning("ignoring unknown Mesos scheduler event type %r", kind)
        return True

    def _command(self, call: SchedulerCall) -> None:
        if self._protocol.state is SubscriptionState.CLOSED:
            # After TEARDOWN or a Mesos ERROR: nothing can be sent any more; not a driver bug.
            logger.warning("framework is gone: dropping %s", type(call).__name__)
            return
        policy = self._protocol.call_policy(call)
        if policy is CallPolicy.DEFER:
            logger.info("not subscribed: %s will be sent after re-subscribing", type(call).__name__)
            self._deferred.append(call)
            return
        if policy is CallPolicy.DROP:
            logger.warning(
                "not subscribed: dropping %s (offers and acknowledgements do not survive a "
                "re-subscription)",
                type(call).__name__,
            )
            return
        self._send(call)

    def _send(self, call: SchedulerCall) -> None:
        body = self._protocol.send(call)
        headers = dict(_JSON_HEADERS)
        stream_id = self._protocol.stream_id
        if stream_id is not None:
            headers["Mesos-Stream-Id"] = stream_id
        status = self._post(
            self._protocol.call_url(), body, headers, f"scheduler.{type(call).__name__}"
        )
        if status is None:
            return
        outcome = classify_call_response(status)
        if isinstance(call, TeardownCall) and outcome is CallOutcome.ACCEPTED:
            # The master ends the stream for a torn-down framework (transcripts, fw1 call 65);
            # that end must not start a re-subscription.
            logger.info("framework %s torn down", self._protocol.framework_id)
            self._protocol.close()
            return
        if outcome is CallOutcome.RESUBSCRIBE:
            logger.warning(
                "the master no longer knows our subscription (%s); re-subscribing", status
            )
            self._drop_stream()
            self._inbox.put(
                _StreamEnded(gen=self._gen, error=StreamClosed(f"call answered {status}"))
            )

    def _flush_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for call in deferred:
            self._command(call)

    def _finish(self, *, failover: bool) -> None:
        if not failover:
            if self._protocol.state is SubscriptionState.SUBSCRIBED:
                self._send(TeardownCall())
            elif self._protocol.framework_id is not None:
                logger.warning(
                    "not subscribed: cannot TEARDOWN framework %s; it ends after its "
                    "failover timeout",
                    self._protocol.framework_id,
                )
        self._protocol.close()
        self._drop_stream()

    def _notify_failure(self, exc: Exception) -> None:
        try:
            self._scheduler.error(self, f"Mesos scheduler driver failed: {exc}")
        except Exception:
            logger.exception("Scheduler.error() raised while reporting a driver failure")


def _agent(value: Any) -> AgentId:
    return AgentId(id_value(value))


def _executor(value: Any) -> ExecutorId:
    return ExecutorId(id_value(value))


# =============================================================================================
# Executor


class ExecutorDriver(_DriverBase):
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
        self._headers = dict(_JSON_HEADERS)
        if self._env.authentication_token:
            self._headers["Authorization"] = "Bearer " + self._env.authentication_token
        self._deferred_messages: list[ExecutorMessageCall] = []

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
        return self._request_stop(_Stop(failover=True))

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
        self._inbox.put(_Command(call=sent))
        return sent

    def sendFrameworkMessage(self, data: str) -> None:
        """MESSAGE base64 *data* to the scheduler."""
        self._check_usable()
        self._inbox.put(_Command(call=ExecutorMessageCall(data=data)))

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

    def _handle(self, item: _Item) -> bool:
        match item:
            case _Command(call=ExecutorMessageCall() as message):
                self._message(message)
                return True
            case _Command(call=status):
                self._update(status)
                return True
            case _Stop():
                self._protocol.close()
                self._drop_stream()
                return False
            case _ReaderCrashed(error=error):
                raise error
            case _StreamHead() | _StreamEvent() | _StreamEnded() if item.gen != self._gen:
                return True
            case _StreamHead(status=200):
                self._protocol.stream_opened(self._clock())
                return True
            case _StreamHead(status=status, body=body):
                logger.warning(
                    "the agent answered SUBSCRIBE with %s: %s",
                    status,
                    body.decode("utf-8", "replace"),
                )
                return self._lost(StreamClosed(f"SUBSCRIBE answered {status}"))
            case _StreamEvent(event=event, received=received):
                return self._event(event, received)
            case _StreamEnded(error=error):
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
                executor.killTask(self, _ident(task_id))
            case Acknowledged(task_id=task_id, uuid=uuid_):
                executor.acknowledged(self, _ident(task_id), uuid_)
            case ExecutorMessage(data=data):
                executor.frameworkMessage(self, data)
            case Shutdown():
                logger.info("the agent asked executor %s to shut down", self._env.executor_id)
                executor.shutdown(self)
                # Updates the callback queued (TASK_KILLED) go out before the stop.
                self._inbox.put(_Stop(failover=True))
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
        self._post(self._url, body, self._headers, "executor.UPDATE")

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
