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
#: At most this many acknowledgements go out in one pipelined write.
_BATCH = 256


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
        post_many: Callable[[str, list[bytes], Mapping[str, str]], list[int] | None]
        | None = None,
        *,
        maxsize: int = DEFAULT_ACK_QUEUE,
        name: str = "mesos-scheduler-acks",
    ) -> None:
        self._post = post
        self._post_many = post_many
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
            batch = [ack]
            while len(batch) < _BATCH:  # whatever else is waiting goes in the same write
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._send(batch)
                    return
                batch.append(more)
            if self._closing.is_set() and self._deadline is not None \
                    and time.monotonic() > self._deadline:
                return
            self._send(batch)

    def _send(self, batch: list[PendingAck]) -> None:
        while batch:
            first = batch[0]
            same = [a for a in batch if a.url == first.url and a.headers == first.headers]
            batch = [a for a in batch if a not in same] if len(same) < len(batch) else []
            statuses: list[int] | list[int | None] | None = None
            if self._post_many is not None and len(same) > 1:
                statuses = self._post_many(first.url, [a.body for a in same], first.headers)
            if statuses is None:  # one by one (also when pipelining failed)
                statuses = [self._post(a.url, a.body, a.headers, "scheduler.AcknowledgeCall")
                            for a in same]
            self.sent += len(same)
            for ack, status in zip(same, statuses, strict=True):
                if status is not None and status not in (200, 202):
                    self._rejected(ack.gen, status)
