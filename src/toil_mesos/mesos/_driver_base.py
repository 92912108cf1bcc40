"""What both drivers share: threads and an inbox around a sans-I/O state machine.

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

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from addict import Dict

from toil_mesos.errors import LocalProtocolError, MesosError, StreamClosed, TransportError
from toil_mesos.mesos._events import EventStream
from toil_mesos.mesos._recordio import END_OF_STREAM, NEED_DATA
from toil_mesos.mesos._transport import HttpxTransport, StreamResponse, Transport

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "JSON_HEADERS",
    "Command",
    "DriverBase",
    "DriverStatus",
    "Item",
    "LeaderChanged",
    "ReaderCrashed",
    "Stop",
    "StreamEnded",
    "StreamEvent",
    "StreamHead",
    "ident",
]

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
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class DriverStatus(enum.StrEnum):
    """Driver states, named as Mesos' ``Status`` enum so ``join() == "DRIVER_STOPPED"`` works."""

    DRIVER_NOT_STARTED = "DRIVER_NOT_STARTED"
    DRIVER_RUNNING = "DRIVER_RUNNING"
    DRIVER_ABORTED = "DRIVER_ABORTED"
    DRIVER_STOPPED = "DRIVER_STOPPED"


# ---- inbox items ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamHead:
    gen: int
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEvent:
    gen: int
    event: Any
    received: float  # when the reader got it: a slow callback must not look like a dead master


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnded:
    gen: int
    error: MesosError | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderCrashed:
    error: Exception


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    call: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    failover: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaderChanged:
    """The master detector saw a new leading master (``None``: no leader now)."""

    url: str | None


Item = StreamHead | StreamEvent | StreamEnded | ReaderCrashed | Command | Stop | LeaderChanged


def ident(value: str) -> Any:
    return Dict({"value": value})


class DriverBase:
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
        #: Set by stop() and by news worth waking a backoff for (a new leading master).
        self._wake = threading.Event()
        # The default sleep is interruptible: stop() or a new leader cuts a backoff short.
        self._sleep = sleep if sleep is not None else self._interruptible_sleep
        self._call_timeout = call_timeout
        self._stop_timeout = stop_timeout
        self._inbox: queue.Queue[Item] = queue.Queue()
        self._lock = threading.Lock()
        self._status = DriverStatus.DRIVER_NOT_STARTED
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._readers: list[threading.Thread] = []
        self._stream: StreamResponse | None = None
        self._gen = 0
        self._done = threading.Event()
        #: When stop() was asked (monotonic), for the budget of what is still sent after it.
        self._stop_asked: float | None = None
        #: An item taken from the inbox but not handled yet (see _take_more).
        self._held: Item | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} status={self._status.value}>"

    def _interruptible_sleep(self, delay: float) -> None:
        self._wake.wait(delay)
        if not self._stopping.is_set():
            self._wake.clear()

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

    def _request_stop(self, stop: Stop) -> DriverStatus:
        if self._status is DriverStatus.DRIVER_NOT_STARTED:
            self._status = DriverStatus.DRIVER_STOPPED
            self._done.set()
            return self._status
        if self._stop_asked is None:
            self._stop_asked = time.monotonic()
        self._inbox.put(stop)
        self._stopping.set()
        self._wake.set()
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
            self._wake.set()
            self._drop_stream()
            # One budget for all readers: an aborted stream ends its reader at once.
            deadline = time.monotonic() + self._stop_timeout
            for reader in self._readers:
                reader.join(max(0.0, deadline - time.monotonic()))
            self._close_helpers(deadline)
            if self._owns_transport:
                self._transport.close()
            self._done.set()

    def _notify_failure(self, exc: Exception) -> None:
        """Tell the callbacks about a fatal failure (best effort)."""

    def _close_helpers(self, deadline: float) -> None:
        """End any thread of the driver's own besides the readers, by *deadline*."""

    def _past_stop_budget(self) -> bool:
        """Whether stop() was asked long enough ago that queued calls are dropped, not sent:
        at any load the driver stops (and tears the framework down) within ``stop_timeout``."""
        asked = self._stop_asked
        return asked is not None and time.monotonic() - asked > self._stop_timeout / 2

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
            # Not a transport or protocol failure (those are reported as StreamEnded): a bug.
            # The driver thread re-raises it, so it reaches the caller.
            logger.exception("Mesos %s stream reader failed", self._role)
            self._inbox.put(ReaderCrashed(error=exc))

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
            self._inbox.put(StreamEnded(gen=gen, error=exc))
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
                    StreamHead(
                        gen=gen, status=stream.status, headers=stream.headers, body=_drain(stream)
                    )
                )
                return
            self._inbox.put(StreamHead(gen=gen, status=200, headers=stream.headers, body=b""))
            self._pump(gen, stream)
        except MesosError as exc:
            self._inbox.put(StreamEnded(gen=gen, error=exc))
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
                        StreamEnded(gen=gen, error=StreamClosed("the peer ended the stream"))
                    )
                    return
                self._inbox.put(StreamEvent(gen=gen, event=event, received=self._clock()))

    @staticmethod
    def _parse_event(record: bytes) -> Any:
        raise NotImplementedError

    # ---- the driver loop -------------------------------------------------------------------

    def _main(self) -> None:
        self._begin()
        while True:
            item: Item | None = self._held
            self._held = None
            if item is None:
                try:
                    item = self._inbox.get(timeout=self._wait_timeout())
                except queue.Empty:
                    item = None
            if item is not None and not self._handle(item):
                return
            # Deadlines are judged only once everything that arrived has been handled.
            if self._held is None and self._inbox.empty() and not self._check_deadline():
                return

    def _take_more(self, wanted: Callable[[Item], bool], limit: int) -> list[Item]:
        """Items already in the inbox right after this one, while *wanted* (at most *limit*);
        the first unwanted one is held back and handled next, so the order stays."""
        taken: list[Item] = []
        while len(taken) < limit:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if not wanted(item):
                self._held = item
                break
            taken.append(item)
        return taken

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

    def _handle(self, item: Item) -> bool:
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

