"""Sans-I/O state machine for a Mesos scheduler subscription.

Rule, borrowed from h11's ``_state.py``: everything that changes the subscription state lives in
this module, and the transitions are data (:data:`TRANSITIONS`). The driver feeds in what
happened (a stream opened, an event arrived, the connection broke, time passed) together with
the current monotonic time, and gets back bodies to send and delays to wait. No I/O, no threads,
no clock of its own.

Lifecycle (scheduler-http-api.md, "SUBSCRIBE", "Disconnections", "Master detection")::

    DISCONNECTED --start_subscribe--> SUBSCRIBING --SUBSCRIBED event--> SUBSCRIBED
         ^                               |  ^  (307: follow, bounded)      |
         +------ connection_lost --------+  +------------------------------+
    any non-terminal state --close / Mesos ERROR event--> CLOSED
    any state --protocol failure--> ERROR (sticky: every later call raises)
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from toil_mesos.errors import LocalProtocolError, MesosError, RemoteProtocolError
from toil_mesos.mesos._events import (
    AcceptCall,
    AcknowledgeCall,
    DeclineCall,
    Error,
    FrameworkId,
    SchedulerCall,
    SchedulerEvent,
    SubscribeCall,
    Subscribed,
    TeardownCall,
    encode_scheduler_call,
)

__all__ = [
    "DEFAULT_BACKOFF_INITIAL",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_MAX_REDIRECTS",
    "DEFAULT_MISSED_HEARTBEATS",
    "DEFAULT_SUBSCRIBE_TIMEOUT",
    "SCHEDULER_PATH",
    "TRANSITIONS",
    "AuthenticationRefused",
    "CallOutcome",
    "CallPolicy",
    "Input",
    "SchedulerProtocol",
    "SubscribeRequest",
    "SubscriptionState",
    "backoff_delay",
    "classify_call_response",
    "normalize_master",
    "resolve_redirect",
]

logger = logging.getLogger(__name__)

SCHEDULER_PATH = "/api/v1/scheduler"

# scheduler-http-api.md, "Disconnections": "If a scheduler doesn't receive a bunch (e.g., 5) of
# these heartbeats within a time window, it should immediately disconnect and try to
# resubscribe", with "an exponential backoff strategy (e.g., up to a maximum of 15s)" and "a
# similar timeout (e.g., 75s) for receiving responses to any HTTP requests".
DEFAULT_MISSED_HEARTBEATS = 5.0
DEFAULT_BACKOFF_INITIAL = 1.0
DEFAULT_BACKOFF_MAX = 15.0
DEFAULT_SUBSCRIBE_TIMEOUT = 75.0
# A leader redirect takes one hop; a few more cover an election in progress. More than this
# means the masters disagree about the leader.
DEFAULT_MAX_REDIRECTS = 5


class SubscriptionState(enum.Enum):
    """Where the scheduler's subscription is."""

    DISCONNECTED = "DISCONNECTED"
    SUBSCRIBING = "SUBSCRIBING"
    SUBSCRIBED = "SUBSCRIBED"
    CLOSED = "CLOSED"
    ERROR = "ERROR"


class Input(enum.Enum):
    """What can happen to a subscription; the keys of :data:`TRANSITIONS`."""

    START_SUBSCRIBE = "START_SUBSCRIBE"
    REDIRECTED = "REDIRECTED"
    STREAM_OPENED = "STREAM_OPENED"
    SUBSCRIBED = "SUBSCRIBED"
    EVENT = "EVENT"
    MESOS_ERROR = "MESOS_ERROR"
    CONNECTION_LOST = "CONNECTION_LOST"
    CLOSE = "CLOSE"


_S = SubscriptionState
_I = Input

#: Every legal (state, input) pair and the state it leads to. Anything else is a protocol
#: violation: ours (LocalProtocolError) for inputs the driver chose, the peer's otherwise.
TRANSITIONS: dict[tuple[SubscriptionState, Input], SubscriptionState] = {
    (_S.DISCONNECTED, _I.START_SUBSCRIBE): _S.SUBSCRIBING,
    (_S.DISCONNECTED, _I.CLOSE): _S.CLOSED,
    (_S.SUBSCRIBING, _I.REDIRECTED): _S.SUBSCRIBING,
    (_S.SUBSCRIBING, _I.STREAM_OPENED): _S.SUBSCRIBING,
    (_S.SUBSCRIBING, _I.SUBSCRIBED): _S.SUBSCRIBED,
    (_S.SUBSCRIBING, _I.MESOS_ERROR): _S.CLOSED,
    (_S.SUBSCRIBING, _I.CONNECTION_LOST): _S.DISCONNECTED,
    (_S.SUBSCRIBING, _I.CLOSE): _S.CLOSED,
    (_S.SUBSCRIBED, _I.EVENT): _S.SUBSCRIBED,
    (_S.SUBSCRIBED, _I.MESOS_ERROR): _S.CLOSED,
    (_S.SUBSCRIBED, _I.CONNECTION_LOST): _S.DISCONNECTED,
    (_S.SUBSCRIBED, _I.CLOSE): _S.CLOSED,
    (_S.CLOSED, _I.CLOSE): _S.CLOSED,
    # Events already in flight when we closed are ignored, not errors.
    (_S.CLOSED, _I.EVENT): _S.CLOSED,
    (_S.CLOSED, _I.CONNECTION_LOST): _S.CLOSED,
}


class CallPolicy(enum.Enum):
    """What to do with a call made while not subscribed."""

    SEND = "SEND"
    DEFER = "DEFER"  # keep it and send it after the next SUBSCRIBED
    DROP = "DROP"  # meaningless after a re-subscription


# Offers do not survive a disconnection (the master rescinds them), and the master re-sends
# every unacknowledged update to the new subscription, so these calls would only be rejected.
# TEARDOWN needs a live subscription; stop() handles the "never subscribed" case itself.
_DROPPED_WHEN_DISCONNECTED: tuple[type, ...] = (
    AcceptCall,
    DeclineCall,
    AcknowledgeCall,
    TeardownCall,
)


class CallOutcome(enum.Enum):
    """How to read the master's answer to a non-SUBSCRIBE call."""

    ACCEPTED = "ACCEPTED"
    RESUBSCRIBE = "RESUBSCRIBE"  # the master no longer knows this subscription
    REJECTED = "REJECTED"  # the call itself was bad; log it, nothing to retry


def classify_call_response(status: int) -> CallOutcome:
    """Map a call's HTTP status to what the driver should do.

    202 is the documented answer (every accepted call in the transcripts). 307 means the master
    lost leadership and 403 that it no longer sees our subscription ("Disconnections"): both
    call for a new SUBSCRIBE. Anything else (400 with a text/plain reason, transcripts fw1
    calls 01-12) is a rejected call.

    >>> classify_call_response(202), classify_call_response(307), classify_call_response(400)
    (<CallOutcome.ACCEPTED: 'ACCEPTED'>, <CallOutcome.RESUBSCRIBE: 'RESUBSCRIBE'>, \
<CallOutcome.REJECTED: 'REJECTED'>)
    """
    if status in (200, 202):
        return CallOutcome.ACCEPTED
    if status in (307, 403):
        return CallOutcome.RESUBSCRIBE
    return CallOutcome.REJECTED


class AuthenticationRefused(LocalProtocolError):
    """The master answered 401 or 403: missing or wrong credentials. Fatal, never retried."""


def backoff_delay(attempt: int, *, initial: float, maximum: float) -> float:
    """Delay before re-subscription attempt *attempt* (1-based): doubling, capped at *maximum*.

    >>> [backoff_delay(n, initial=1.0, maximum=15.0) for n in range(1, 7)]
    [1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    """
    if attempt < 1:
        return 0.0
    # Cap the exponent so a long outage cannot overflow the float.
    return min(maximum, initial * 2.0 ** min(attempt - 1, 62))


def normalize_master(master: str) -> str:
    """Turn ``host:port`` (Toil's ``--mesosEndpoint`` form) or a URL into ``scheme://host:port``.

    >>> normalize_master("127.0.0.1:5050"), normalize_master("https://m1:5050/")
    ('http://127.0.0.1:5050', 'https://m1:5050')

    :raises LocalProtocolError: if no host can be found.
    """
    text = master.strip()
    if "://" not in text:
        text = "http://" + text.lstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LocalProtocolError(f"not a Mesos master address: {master!r}")
    return f"{parts.scheme}://{parts.netloc}"


def resolve_redirect(current: str, location: str) -> str:
    """Where a 307 ``Location`` points, as ``scheme://host:port``.

    Mesos sends a protocol-relative URL, ``//<leader host>:<port>/api/v1/scheduler``
    (``Master::Http::redirect`` in src/master/http.cpp), so the scheme of the current master is
    kept; the docs' example shows a bare ``host:port``, also accepted.

    >>> resolve_redirect("http://m1:5050", "//m2:5050/api/v1/scheduler")
    'http://m2:5050'
    >>> resolve_redirect("http://m1:5050", "m3:5050")
    'http://m3:5050'

    :raises RemoteProtocolError: if the location names no host.
    """
    scheme = urlsplit(current).scheme or "http"
    text = location.strip()
    if not text.startswith("//") and "://" not in text:
        text = "//" + text
    parts = urlsplit(text, scheme=scheme)
    if not parts.hostname:
        raise RemoteProtocolError(f"redirect without a host: Location {location!r}")
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeRequest:
    """A SUBSCRIBE to send: to ``url``, with ``body``, never with a stream id header."""

    url: str
    body: bytes


class SchedulerProtocol:
    """The subscription lifecycle of one framework, as data and small methods.

    *framework_info* is the v1 ``FrameworkInfo`` JSON object (name, user, roles,
    failover_timeout, capabilities, ...). If it already carries an ``id``, the first SUBSCRIBE
    re-subscribes that framework.
    """

    def __init__(
        self,
        framework_info: Mapping[str, Any],
        master: str = "",
        *,
        missed_heartbeats: float = DEFAULT_MISSED_HEARTBEATS,
        subscribe_timeout: float = DEFAULT_SUBSCRIBE_TIMEOUT,
        backoff_initial: float = DEFAULT_BACKOFF_INITIAL,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
    ) -> None:
        info = dict(framework_info)
        given_id = info.pop("id", None)
        self._framework_info = info
        self._framework_id: FrameworkId | None = (
            None if given_id is None else FrameworkId(_id_of(given_id))
        )
        # No master yet when a detector (ZooKeeper) names it at each start_subscribe().
        self._home = normalize_master(master) if master else ""
        self._master = self._home
        self._missed_heartbeats = missed_heartbeats
        self._subscribe_timeout = subscribe_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_redirects = max_redirects
        self._state = SubscriptionState.DISCONNECTED
        self._stream_id: str | None = None
        self._heartbeat_interval: float | None = None
        self._last_seen = 0.0
        self._subscribe_started = 0.0
        self._redirect_chain: list[str] = []
        self._failed_attempts = 0
        self._subscriptions = 0
        self._error: MesosError | None = None

    def __repr__(self) -> str:
        return (
            f"<SchedulerProtocol state={self._state.value} master={self._master}"
            f" framework_id={self._framework_id} stream_id={self._stream_id}>"
        )

    # ---- read-only views -------------------------------------------------------------------

    @property
    def state(self) -> SubscriptionState:
        """Current subscription state."""
        return self._state

    @property
    def framework_id(self) -> FrameworkId | None:
        """The id the master assigned (or the one we were given), once known."""
        return self._framework_id

    @property
    def stream_id(self) -> str | None:
        """``Mesos-Stream-Id`` of the open subscription; sent with every other call."""
        return self._stream_id

    @property
    def master(self) -> str:
        """``scheme://host:port`` of the master we talk to (after redirects)."""
        return self._master

    @property
    def heartbeat_interval(self) -> float | None:
        """The interval announced in SUBSCRIBED, if any."""
        return self._heartbeat_interval

    @property
    def subscriptions(self) -> int:
        """How many SUBSCRIBED events this protocol has seen (1 = registered, more = re-)."""
        return self._subscriptions

    @property
    def error(self) -> MesosError | None:
        """The failure that put the protocol in ``ERROR``."""
        return self._error

    # ---- transitions -----------------------------------------------------------------------

    def _transition(self, inp: Input, *, remote: bool = False) -> None:
        if self._state is SubscriptionState.ERROR:
            raise LocalProtocolError(f"scheduler protocol failed earlier: {self._error}")
        new = TRANSITIONS.get((self._state, inp))
        if new is None:
            cls = RemoteProtocolError if remote else LocalProtocolError
            exc = cls(f"{inp.value} is not allowed in state {self._state.value}")
            self._fail(exc)
            raise exc
        if new is not self._state:
            logger.debug("scheduler subscription %s -> %s", self._state.value, new.value)
        self._state = new

    def _fail(self, exc: MesosError) -> None:
        self._state = SubscriptionState.ERROR
        self._error = exc

    def start_subscribe(self, now: float, master: str | None = None) -> SubscribeRequest:
        """Begin a subscription attempt at *master* (default: the configured one).

        Each attempt starts from the master the detector names, not the last leader: after a
        failover a surviving master redirects us to whoever leads now.
        """
        self._transition(Input.START_SUBSCRIBE)
        if master is not None:
            self._home = normalize_master(master)
        self._master = self._home
        self._redirect_chain = [self._master]
        self._subscribe_started = now
        return self._subscribe_request()

    def _subscribe_request(self) -> SubscribeRequest:
        body = encode_scheduler_call(
            SubscribeCall(framework_info=self._framework_info), framework_id=self._framework_id
        )
        return SubscribeRequest(url=self._master + SCHEDULER_PATH, body=body)

    def redirected(self, location: str, now: float) -> SubscribeRequest:
        """Follow a 307 to the leading master and return the SUBSCRIBE to send there.

        :raises RemoteProtocolError: on a redirect loop or more than ``max_redirects`` hops;
            the protocol is then in ``ERROR``.
        """
        self._transition(Input.REDIRECTED, remote=True)
        try:
            target = resolve_redirect(self._master, location)
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        chain = [*self._redirect_chain, target]
        problem = None
        if target in self._redirect_chain:
            problem = "master redirect loop: " + " -> ".join(chain)
        elif len(chain) - 1 > self._max_redirects:
            problem = f"more than {self._max_redirects} master redirects: " + " -> ".join(chain)
        if problem is not None:
            loop = RemoteProtocolError(problem)
            self._fail(loop)
            raise loop
        logger.info("Mesos master %s redirected us to the leader %s", self._master, target)
        self._redirect_chain = chain
        self._master = target
        self._subscribe_started = now
        return self._subscribe_request()

    def stream_opened(self, stream_id: str | None, now: float) -> None:
        """The SUBSCRIBE answered 200; remember its ``Mesos-Stream-Id``.

        :raises RemoteProtocolError: if the header is missing: without it no call can be made
            (transcripts fw1 call 09: 400 "should include the 'Mesos-Stream-Id' header").
        """
        self._transition(Input.STREAM_OPENED, remote=True)
        if not stream_id:
            exc = RemoteProtocolError("SUBSCRIBE response has no Mesos-Stream-Id header")
            self._fail(exc)
            raise exc
        self._stream_id = stream_id
        self._last_seen = now

    def subscribe_rejected(self, status: int, body: str, now: float) -> float:
        """The SUBSCRIBE got a non-200, non-307 answer.

        A 5xx (503 "No leader elected", "Master has not finished recovery") is transient: the
        connection counts as lost and the backoff delay is returned. A 4xx means the master
        will never accept this SUBSCRIBE as sent, so it is fatal.

        :raises LocalProtocolError: for a 4xx; the protocol is then in ``ERROR``.
        """
        if status >= 500:
            logger.warning(
                "Mesos master %s answered SUBSCRIBE with %s: %s", self._master, status, body
            )
            return self.connection_lost(now)
        exc = LocalProtocolError(
            f"Mesos master {self._master} rejected SUBSCRIBE with {status}: {body!r}"
        )
        if status in (401, 403):
            exc = AuthenticationRefused(
                f"Mesos master {self._master} refused the framework's credentials: {status} "
                f"{body.strip()!r}; set the principal and secret the master knows with "
                "--mesosPrincipal and --mesosSecretFile (TOIL_MESOS_PRINCIPAL, "
                "TOIL_MESOS_SECRET_FILE)"
            )
        self._fail(exc)
        raise exc

    def receive_event(self, event: SchedulerEvent, now: float) -> None:
        """Account for one event from the stream.

        Any event proves the master alive, so each one pushes the heartbeat deadline back.

        :raises RemoteProtocolError: if the stream does not begin with SUBSCRIBED or ERROR
            (scheduler-http-api.md, SUBSCRIBE), or SUBSCRIBED comes twice.
        """
        if isinstance(event, Subscribed):
            self._transition(Input.SUBSCRIBED, remote=True)
            self._framework_id = event.framework_id
            self._heartbeat_interval = event.heartbeat_interval
            self._failed_attempts = 0
            self._subscriptions += 1
        elif isinstance(event, Error):
            self._transition(Input.MESOS_ERROR, remote=True)
            self._stream_id = None
        else:
            self._transition(Input.EVENT, remote=True)
        self._last_seen = now

    def connection_lost(self, now: float) -> float:
        """The stream ended, failed or was dropped by us; return the delay before retrying.

        The stream id dies with the connection ("Each unique Mesos-Stream-Id is valid only for
        the life of a single subscription connection").
        """
        self._transition(Input.CONNECTION_LOST)
        self._stream_id = None
        if self._state is SubscriptionState.CLOSED:
            return 0.0
        self._failed_attempts += 1
        return backoff_delay(
            self._failed_attempts, initial=self._backoff_initial, maximum=self._backoff_max
        )

    def close(self) -> None:
        """We are done (stop or teardown); nothing will be sent or retried any more."""
        if self._state is SubscriptionState.ERROR:
            return
        self._transition(Input.CLOSE)
        self._stream_id = None

    def fail(self, exc: MesosError) -> None:
        """Record a failure found outside the protocol (e.g. garbage the driver could not use)."""
        self._fail(exc)

    # ---- deadlines -------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """Monotonic time by which something must arrive, or ``None``.

        While subscribing: the SUBSCRIBED event within ``subscribe_timeout``. While subscribed:
        the next event within ``missed_heartbeats`` heartbeat intervals.
        """
        if self._state is SubscriptionState.SUBSCRIBING:
            return self._subscribe_started + self._subscribe_timeout
        if self._state is SubscriptionState.SUBSCRIBED and self._heartbeat_interval:
            return self._last_seen + self._heartbeat_interval * self._missed_heartbeats
        return None

    def deadline_expired(self, now: float) -> bool:
        """Whether the connection must be treated as lost because nothing arrived in time."""
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    # ---- calls -----------------------------------------------------------------------------

    def call_policy(self, call: SchedulerCall) -> CallPolicy:
        """Whether *call* can go now, should wait for the next SUBSCRIBED, or is pointless.

        :raises LocalProtocolError: for SUBSCRIBE (not a call the caller makes) or once closed.
        """
        if isinstance(call, SubscribeCall):
            raise LocalProtocolError("SUBSCRIBE is made by the driver, not sent as a call")
        if self._state in (SubscriptionState.CLOSED, SubscriptionState.ERROR):
            raise LocalProtocolError(
                f"cannot send {type(call).__name__}: the scheduler driver is {self._state.value}"
            )
        if self._state is SubscriptionState.SUBSCRIBED:
            return CallPolicy.SEND
        if isinstance(call, _DROPPED_WHEN_DISCONNECTED):
            return CallPolicy.DROP
        return CallPolicy.DEFER

    def send(self, call: SchedulerCall) -> bytes:
        """Encode *call* for the current subscription (with the framework id).

        :raises LocalProtocolError: unless subscribed.
        """
        if self._state is not SubscriptionState.SUBSCRIBED:
            raise LocalProtocolError(
                f"cannot send {type(call).__name__} in state {self._state.value}"
            )
        if isinstance(call, SubscribeCall):
            raise LocalProtocolError("SUBSCRIBE is made by the driver, not sent as a call")
        return encode_scheduler_call(call, framework_id=self._framework_id)

    def call_url(self) -> str:
        """Where calls go: the master that answered our SUBSCRIBE."""
        return self._master + SCHEDULER_PATH


def _id_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("value"), str):
        return str(value["value"])
    raise LocalProtocolError(f"framework_info.id is not a Mesos id: {value!r}")
