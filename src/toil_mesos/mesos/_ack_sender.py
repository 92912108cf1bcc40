"""A thread that POSTs a scheduler's implicit acknowledgements, apart from its other calls.

The master resends an update until it is acknowledged; if acknowledgements queued behind an
offer round, or behind one POST after another on the driver's thread, a busy leader would get
every update twice and keep both. The driver thread encodes each acknowledgement (it owns the
protocol state) and hands it here; this thread only POSTs. The queue is bounded: when the master
is slower than the updates, the driver thread waits for room (and so stops reading callbacks
into memory) rather than the queue growing without end.

Each acknowledgement carries the stream it was made for; a master that refuses one because that
stream has ended is news only if the stream is still the driver's current one.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["AckSender", "PendingAck"]

logger = logging.getLogger(__name__)

#: How many acknowledgements may wait for the master before the driver thread waits too.
DEFAULT_ACK_QUEUE = 10_000


@dataclass(frozen=True, slots=True)
class PendingAck:
    gen: int  # the stream it belongs to
    url: str
    body: bytes
    headers: Mapping[str, str]


class AckSender:
    """One thread posting :class:`PendingAck` items in order.

    :param post: sends one call, returns its HTTP status or None when it could not be sent.
    :param rejected: told ``(gen, status)`` when the master answered an ack with an error.
    """

    def __init__(
        self,
        post: Callable[[str, bytes, Mapping[str, str], str], int | None],
        rejected: Callable[[int, int], None],
        *,
        maxsize: int = DEFAULT_ACK_QUEUE,
        name: str = "mesos-scheduler-acks",
    ) -> None:
        self._post = post
        self._rejected = rejected
        self._queue: queue.Queue[PendingAck | None] = queue.Queue(maxsize)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self.sent = 0
        self.dropped = 0

    def put(self, ack: PendingAck, give_up: Callable[[], bool]) -> bool:
        """Queue *ack*, waiting for room; False if *give_up()* turned true first."""
        if not self._started:
            self._started = True
            self._thread.start()
        while not self._closing.is_set() and not give_up():
            try:
                self._queue.put(ack, timeout=0.1)
                return True
            except queue.Full:
                continue
        self.dropped += 1
        return False

    def close(self, *, send_pending: bool, deadline: float) -> None:
        """Stop the thread by *deadline* (monotonic); unsent acks go too unless *send_pending*."""
        self._deadline = deadline
        if not send_pending:
            self._discard_pending()
        self._closing.set()
        with contextlib.suppress(queue.Full):  # if full, the thread stops at the deadline
            self._queue.put_nowait(None)
        if self._started:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def _discard_pending(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self.dropped += 1

    _deadline: float | None = None

    def _run(self) -> None:
        while True:
            try:
                ack = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            if ack is None:
                return
            if self._closing.is_set() and self._deadline is not None \
                    and time.monotonic() > self._deadline:
                return
            status = self._post(ack.url, ack.body, ack.headers, "scheduler.AcknowledgeCall")
            self.sent += 1
            if status is not None and status not in (200, 202):
                self._rejected(ack.gen, status)
