"""The scheduler driver: a framework's subscription to the master, with pymesos' API.

Besides the reader and driver threads of :class:`~toil_mesos.mesos._driver_base.DriverBase`,
a scheduler driver with implicit acknowledgements has a third thread, ``mesos-scheduler-acks``:
acknowledgements go out on it, over their own kept-alive connection, so they never wait behind
the callbacks or the other calls of the driver's thread. A master that gets its acks late
resends the updates, which costs both sides; a bounded queue keeps a stalled master from growing
the leader's memory instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from toil_mesos.errors import MesosError, ReadTimeout, StreamClosed, TransportError
from toil_mesos.mesos._ack_sender import AckSender, PendingAck
from toil_mesos.mesos._credentials import Credentials
from toil_mesos.mesos._driver_base import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    JSON_HEADERS,
    Command,
    DriverBase,
    DriverStatus,
    Item,
    LeaderChanged,
    ReaderCrashed,
    Stop,
    StreamEnded,
    StreamEvent,
    StreamHead,
    ident,
)
from toil_mesos.mesos._events import (
    AcceptCall,
    AcknowledgeCall,
    DeclineCall,
    Error,
    Failure,
    Heartbeat,
    InverseOffers,
    Message,
    Offers,
    Rescind,
    RescindInverseOffer,
    SchedulerCall,
    Subscribed,
    TaskId,
    TeardownCall,
    UnknownEvent,
    Update,
    UpdateOperationStatus,
    id_value,
    parse_scheduler_event,
)
from toil_mesos.mesos._master_detection import MasterDetector, detector_for
from toil_mesos.mesos._master_spec import MasterSpec, parse_master_spec
from toil_mesos.mesos._scheduler_calls import SchedulerCalls, agent_id_of
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
    normalize_master,
)
from toil_mesos.mesos._transport import HttpxTransport, TlsError, Transport
from toil_mesos.mesos.interface import Scheduler

__all__ = ["SchedulerDriver"]

logger = logging.getLogger(__name__)

#: While no master leads (ZooKeeper shows none), how often to look again.
_NO_LEADER_RETRY = 1.0


class SchedulerDriver(SchedulerCalls, DriverBase):
    """A Mesos v1 HTTP scheduler driver with pymesos-compatible methods and callbacks.

    :param scheduler: receives callbacks (see :class:`~toil_mesos.mesos.interface.Scheduler`).
    :param framework_info: v1 ``FrameworkInfo`` JSON (``user``, ``name``, ``roles``,
        ``failover_timeout``, ``capabilities``; an ``id`` to re-subscribe an existing framework).
    :param master: where the masters are: ``host:port``, ``http(s)://host:port``, a
        comma-separated list of those, or ``zk://host:port,.../path`` (see
        :mod:`~toil_mesos.mesos._master_spec`), or a parsed spec; calls follow 307 redirects to
        the leader, and the driver moves to a new leader when the one it uses goes away.
    :param credentials: principal and secret for masters that authenticate frameworks (HTTP
        Basic on every call). :param ca_cert: PEM file of the CAs trusted for https masters
        (default: the system's). :param detector: finds the leader (default: from *master*).
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
        master: str | MasterSpec,
        *,
        implicit_acknowledgements: bool = True,
        credentials: Credentials | None = None,
        ca_cert: str | None = None,
        detector: MasterDetector | None = None,
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
        spec = parse_master_spec(master) if isinstance(master, str) else master
        owns_transport = transport is None
        if transport is None:
            transport = HttpxTransport(ca_cert=ca_cert)
        super().__init__(
            transport=transport,
            clock=clock,
            sleep=sleep,
            call_timeout=call_timeout,
            stop_timeout=stop_timeout,
        )
        self._owns_transport = owns_transport
        self._scheduler = scheduler
        self._implicit_acks = implicit_acknowledgements
        self._detector = detector if detector is not None else detector_for(spec)
        self._detector_started = False
        #: When to look for a leader again while none is known (None: not waiting).
        self._retry_at: float | None = None
        # Built once; the secret is in no repr or log line, only in these headers.
        self._headers: dict[str, str] = {
            **JSON_HEADERS,
            **({} if credentials is None else credentials.headers()),
        }
        self._credentials_name = "" if credentials is None else f" as {credentials}"
        self._protocol = SchedulerProtocol(
            framework_info,
            "",
            missed_heartbeats=missed_heartbeats,
            subscribe_timeout=subscribe_timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            max_redirects=max_redirects,
        )
        self._deferred: list[SchedulerCall] = []
        self._acks = AckSender(self._post, self._ack_rejected, self._post_many)
        self._dropped_at_stop = 0
        self._tearing_down = False
        self._torn_down = False

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
        self._tearing_down = self._tearing_down or not failover
        status = self._request_stop(Stop(failover=failover))
        if (
            not failover
            and not self._done.is_set()
            and threading.current_thread() is not self._thread
        ):
            self._teardown_from_caller()
        return status

    def _teardown_from_caller(self) -> None:
        """TEARDOWN from the caller's thread when the driver thread is stuck (in a callback
        that does not return): the framework and its tasks must not outlive the leader."""
        protocol = self._protocol
        if protocol.state is not SubscriptionState.SUBSCRIBED:
            return
        headers = self._call_headers()
        logger.warning("the Mesos driver thread is busy; sending TEARDOWN from this thread")
        try:
            body = protocol.send(TeardownCall())
        except MesosError as exc:
            logger.warning("cannot TEARDOWN framework %s: %s", protocol.framework_id, exc)
            return
        status = self._post(protocol.call_url(), body, headers, "scheduler.TeardownCall")
        if status is not None and classify_call_response(status) is CallOutcome.ACCEPTED:
            self._torn_down = True  # the driver thread, if it ever returns, sends no second one
        self._drop_stream()

    def _call(self, call: SchedulerCall) -> None:
        self._check_usable()
        self._inbox.put(Command(call=call))

    # ---- driver thread -----------------------------------------------------------------------

    @staticmethod
    def _parse_event(record: bytes) -> Any:
        return parse_scheduler_event(record)

    def _call_headers(self) -> dict[str, str]:
        headers = dict(self._headers)
        stream_id = self._protocol.stream_id
        if stream_id is not None:
            headers["Mesos-Stream-Id"] = stream_id
        return headers

    def _begin(self) -> None:
        if not self._detector_started:
            self._detector_started = True
            self._detector.start(self._leader_news)
        master = self._detector.next_master()
        if master is None:
            self._retry_at = self._clock() + _NO_LEADER_RETRY
            logger.warning("no leading Mesos master known yet (%s); waiting", self._detector)
            return
        self._retry_at = None
        request = self._protocol.start_subscribe(self._clock(), master)
        logger.info(
            "Subscribing to the Mesos master at %s%s", self._protocol.master, self._credentials_name
        )
        self._open_stream(request.url, request.body, self._headers)

    def _leader_news(self, url: str | None) -> None:
        """(The detector's thread.) Tell the driver thread; cut a backoff short."""
        self._inbox.put(LeaderChanged(url=url))
        if url is not None:
            self._wake.set()

    def _leader_changed(self, url: str | None) -> bool:
        state = self._protocol.state
        if url is None or state in (SubscriptionState.CLOSED, SubscriptionState.ERROR):
            return True
        if state is SubscriptionState.DISCONNECTED:
            if self._retry_at is not None:
                self._retry_at = self._clock()  # a leader at last: look now
            return True
        if normalize_master(url) == self._protocol.master:
            return True
        logger.warning(
            "the leading Mesos master is now %s, not %s: re-subscribing there",
            url,
            self._protocol.master,
        )
        return self._lost(StreamClosed("the leading master changed"))

    def _deadline(self) -> float | None:
        if self._retry_at is not None:
            return self._retry_at
        return self._protocol.deadline()

    def _check_deadline(self) -> bool:
        now = self._clock()
        if self._retry_at is not None:
            if now >= self._retry_at and self._protocol.state is SubscriptionState.DISCONNECTED:
                self._begin()
            return True
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

    def _handle(self, item: Item) -> bool:
        if self._stop_asked is not None:
            # Once stop() is asked, events and calls already queued are handled only within a
            # budget (events not at all before a TEARDOWN, which makes them moot), so the Stop
            # behind a long inbox is reached promptly at any load.
            past_budget = self._past_stop_budget()
            if isinstance(item, StreamEvent) and (self._tearing_down or past_budget):
                return True
            if isinstance(item, Command) and past_budget:
                self._dropped_at_stop += 1
                return True
        match item:
            case Command(call=AcceptCall() | DeclineCall() as call) if self._can_pipeline():
                # An offer round's answers (one ACCEPT per agent, one DECLINE) go out together.
                more = self._take_more(_is_offer_answer, _CALL_BATCH - 1)
                self._send_together([call, *(m.call for m in more)])  # type: ignore[union-attr]
                return True
            case Command(call=call):
                self._command(call)
                return True
            case Stop(failover=failover):
                self._finish(failover=failover)
                return False
            case ReaderCrashed(error=error):
                raise error
            case LeaderChanged(url=url):
                return self._leader_changed(url)
            case StreamHead() | StreamEvent() | StreamEnded() if item.gen != self._gen:
                return True  # from a connection we already gave up
            case StreamHead():
                return self._head(item)
            case StreamEvent(event=event, received=received):
                return self._event(event, received)
            case StreamEnded(error=error):
                return self._lost(error)
        return True  # pragma: no cover

    def _head(self, head: StreamHead) -> bool:
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
            self._open_stream(request.url, request.body, self._headers)
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
        if isinstance(error, TlsError):
            # A certificate that fails verification fails every retry as well.
            raise TlsError(
                f"cannot trust the Mesos master {self._protocol.master}: {error}; give the CA "
                "that signed its certificate with --mesosCACert (TOIL_MESOS_CA_CERT)"
            )
        logger.warning("Mesos subscription lost: %s", error)
        delay = self._protocol.connection_lost(self._clock())
        if was_subscribed:
            self._scheduler.disconnected(self)
        return self._resubscribe_after(delay)

    def _resubscribe_after(self, delay: float) -> bool:
        if not self._detector.round_done():
            delay = 0.0  # other masters of the list are still to be tried
        if not self._backoff(delay):
            return True  # the Stop in the inbox ends the loop
        self._begin()
        return True

    def _event(self, event: Any, received: float) -> bool:
        self._protocol.receive_event(event, received)
        scheduler = self._scheduler
        match event:
            case Subscribed(framework_id=framework_id, master_info=master_info):
                logger.info(
                    "Subscribed as Mesos framework %s at %s", framework_id, self._protocol.master
                )
                self._detector.succeeded()
                if self._protocol.subscriptions == 1:
                    scheduler.registered(self, ident(framework_id), master_info)
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
                scheduler.offerRescinded(self, ident(offer_id))
            case RescindInverseOffer(inverse_offer_id=offer_id):
                scheduler.inverseOfferRescinded(self, ident(offer_id))
            case Update(status=status, uuid=uuid_):
                scheduler.statusUpdate(self, status)
                if self._implicit_acks and uuid_ is not None and "agent_id" in status:
                    self._acknowledge(
                        AcknowledgeCall(
                            agent_id=agent_id_of(status["agent_id"]),
                            task_id=TaskId(id_value(status["task_id"])),
                            uuid=uuid_,
                        )
                    )
            case UpdateOperationStatus(status=status):
                scheduler.operationStatusUpdate(self, status)
            case Message(agent_id=agent_id, executor_id=executor_id, data=data):
                scheduler.frameworkMessage(self, ident(executor_id), ident(agent_id), data)
            case Failure(agent_id=agent_id, executor_id=None):
                if agent_id is not None:
                    scheduler.agentLost(self, ident(agent_id))
            case Failure(agent_id=agent_id, executor_id=str() as executor_id, status=status):
                scheduler.executorLost(
                    self,
                    ident(executor_id),
                    None if agent_id is None else ident(agent_id),
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

    def _acknowledge(self, call: AcknowledgeCall) -> None:
        """Hand an implicit acknowledgement to the ack thread (encoded here, sent there)."""
        if self._protocol.state is not SubscriptionState.SUBSCRIBED:
            logger.debug("not subscribed: dropping the acknowledgement of %s", call.task_id)
            return
        headers = self._call_headers()
        ack = PendingAck(self._gen, self._protocol.call_url(), self._protocol.send(call), headers)
        self._acks.put(ack, self._past_stop_budget)

    def _ack_rejected(self, gen: int, status: int) -> None:
        """(The ack thread.) A master that no longer knows the stream: re-subscribe."""
        if classify_call_response(status) is CallOutcome.RESUBSCRIBE:
            self._inbox.put(StreamEnded(gen=gen, error=StreamClosed(f"call answered {status}")))

    def _post_many(
        self, url: str, bodies: list[bytes], headers: Mapping[str, str]
    ) -> list[int] | None:
        """(The ack thread.) POST *bodies* pipelined, if the transport can; None otherwise, or
        when that failed (the caller then sends them one by one)."""
        post_many = getattr(self._transport, "post_many", None)
        if post_many is None:
            return None
        try:
            statuses: list[int] = post_many(url, bodies, headers, timeout=self._call_timeout)
        except TransportError as exc:
            logger.info("pipelined acknowledgements failed (%s); sending them one by one", exc)
            return None
        logger.debug("scheduler.AcknowledgeCall x%d complete", len(bodies))
        return statuses

    def _close_helpers(self, deadline: float) -> None:
        self._acks.close(send_pending=False, deadline=deadline)
        try:
            self._detector.close()
        except Exception:
            logger.warning("closing the Mesos master detector failed", exc_info=True)

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
        headers = self._call_headers()
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
                StreamEnded(gen=self._gen, error=StreamClosed(f"call answered {status}"))
            )

    def _can_pipeline(self) -> bool:
        return (self._protocol.state is SubscriptionState.SUBSCRIBED
                and hasattr(self._transport, "post_many"))

    def _send_together(self, calls: list[SchedulerCall]) -> None:
        """POST *calls* pipelined on one connection, in order; one by one if that fails."""
        headers = self._call_headers()
        bodies = [self._protocol.send(call) for call in calls]
        url = self._protocol.call_url()
        try:
            statuses: list[int] = self._transport.post_many(  # type: ignore[attr-defined]
                url, bodies, headers, timeout=self._call_timeout
            )
        except TransportError as exc:
            logger.info("pipelined calls failed (%s); sending them one by one", exc)
            for call in calls:
                self._command(call)
            return
        logger.debug("scheduler: %d offer answers complete", len(calls))
        for call, status in zip(calls, statuses, strict=True):
            if status not in (200, 202):
                logger.error("scheduler.%s.failed: %s", type(call).__name__, status)
            if classify_call_response(status) is CallOutcome.RESUBSCRIBE:
                logger.warning(
                    "the master no longer knows our subscription (%s); re-subscribing", status
                )
                self._drop_stream()
                self._inbox.put(
                    StreamEnded(gen=self._gen, error=StreamClosed(f"call answered {status}"))
                )
                return

    def _flush_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for call in deferred:
            self._command(call)

    def _finish(self, *, failover: bool) -> None:
        # Acks still queued are sent first on a failover stop (the next scheduler would get
        # those updates again otherwise); a TEARDOWN makes them moot.
        budget = self._stop_timeout / 4
        self._acks.close(send_pending=failover, deadline=time.monotonic() + budget)
        if self._dropped_at_stop:
            logger.warning("stopping: %d calls queued before stop() were not sent in time",
                           self._dropped_at_stop)
        if not failover:
            if self._torn_down:
                pass
            elif self._protocol.state is SubscriptionState.SUBSCRIBED:
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


#: At most this many offer answers go out in one pipelined write.
_CALL_BATCH = 512


def _is_offer_answer(item: Item) -> bool:
    return isinstance(item, Command) and isinstance(item.call, AcceptCall | DeclineCall)
