"""Sans-I/O RecordIO framing, as Mesos uses it for its event streams.

The format (``docs/recordio.md`` in apache/mesos) is a sequence of records, each one
``<decimal length>\\n<length bytes of data>``. HTTP chunk boundaries carry no meaning: a
proxy may split or merge them, so the decoder accepts any split of the byte stream.

This module never touches a socket and knows nothing about JSON. Bytes go in with
:meth:`RecordIODecoder.feed`; complete records come out of :meth:`RecordIODecoder.next_record`.
Feeding ``b""`` means end of stream, the convention h11 uses for ``receive_data``.
"""

from __future__ import annotations

import enum

from toil_mesos.errors import RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_RECORD_SIZE",
    "END_OF_STREAM",
    "MAX_LENGTH_DIGITS",
    "NEED_DATA",
    "DecoderState",
    "RecordIODecoder",
    "Sentinel",
    "encode_record",
]


class Sentinel(enum.Enum):
    """Non-record results of :meth:`RecordIODecoder.next_record`.

    A single-member-per-meaning enum instead of h11's metaclass trick: mypy narrows on it.
    """

    NEED_DATA = "NEED_DATA"
    END_OF_STREAM = "END_OF_STREAM"


#: More bytes must be fed before the next record is complete.
NEED_DATA = Sentinel.NEED_DATA
#: The stream ended cleanly, between two records; no more records will come.
END_OF_STREAM = Sentinel.END_OF_STREAM

# Largest record we accept. The biggest record in the Mesos 1.12 transcripts is 1,969 bytes
# (a TASK_ERROR whose message quotes two ExecutorInfos), and an OFFERS event is about 1 KiB per
# offer, so 64 MiB leaves room for tens of thousands of offers in one event while still stopping
# a garbage length prefix from making us buffer gigabytes.
DEFAULT_MAX_RECORD_SIZE = 64 * 1024 * 1024

# ``record-size`` is a uint64 (recordio.md); its decimal form has at most 20 digits. A longer
# prefix without a newline is garbage, and we say so before buffering more of it.
MAX_LENGTH_DIGITS = 20


class DecoderState(enum.Enum):
    """Where the decoder is in the grammar ``record = record-size LF record-data``."""

    READING_LENGTH = "READING_LENGTH"
    READING_DATA = "READING_DATA"
    DONE = "DONE"
    ERROR = "ERROR"


class RecordIODecoder:
    """Split a RecordIO byte stream into records.

    The buffer is a ``bytearray`` consumed from an offset and compacted when more than half of
    it is spent, so decoding is amortised O(bytes fed) however the input is split (a one byte
    at a time feed must not go quadratic).

    Any framing violation raises :class:`~toil_mesos.errors.RemoteProtocolError` and moves the
    decoder to ``ERROR`` for good: every later call raises again, as h11 does, because a stream
    that lost its framing cannot be resynchronised.
    """

    __slots__ = ("_buf", "_eof", "_error", "_max_record_size", "_need", "_pos", "_state")

    def __init__(self, *, max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> None:
        if max_record_size < 1:
            raise ValueError(f"max_record_size must be positive, got {max_record_size!r}")
        self._max_record_size = max_record_size
        self._buf = bytearray()
        self._pos = 0
        self._need = 0
        self._eof = False
        self._state = DecoderState.READING_LENGTH
        self._error: RemoteProtocolError | None = None

    def __repr__(self) -> str:
        return (
            f"<RecordIODecoder state={self._state.value} buffered={len(self._buf) - self._pos}"
            f" eof={self._eof}>"
        )

    @property
    def state(self) -> DecoderState:
        """The decoder's current state; ``ERROR`` is terminal."""
        return self._state

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a record."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Buffer *data*; ``b""`` marks the end of the stream.

        :raises RemoteProtocolError: if the decoder already failed.
        :raises ValueError: if data is fed after the end of the stream (our own misuse).
        """
        self._raise_if_failed()
        if self._eof:
            if data:
                raise ValueError("RecordIODecoder.feed() called after end of stream")
            return
        if not data:
            self._eof = True
            return
        self._buf += data

    def next_record(self) -> bytes | Sentinel:
        """Return the next complete record, ``NEED_DATA`` or ``END_OF_STREAM``.

        :raises RemoteProtocolError: on a malformed length, a record over the size limit, or
            an end of stream in the middle of a record.
        """
        self._raise_if_failed()
        try:
            return self._next_record()
        except RemoteProtocolError as exc:
            self._state = DecoderState.ERROR
            self._error = exc
            raise

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RemoteProtocolError(
                f"RecordIO stream is unusable after an earlier error: {self._error}"
            )

    def _next_record(self) -> bytes | Sentinel:
        if self._state is DecoderState.DONE:
            return END_OF_STREAM
        if self._state is DecoderState.READING_LENGTH:
            length = self._read_length()
            if length is None:
                return self._at_starved_boundary(inside_record=self.buffered > 0)
            self._need = length
            self._state = DecoderState.READING_DATA
        if self.buffered < self._need:
            return self._at_starved_boundary(inside_record=True)
        start = self._pos
        self._pos += self._need
        record = bytes(self._buf[start : self._pos])
        self._compact()
        self._state = DecoderState.READING_LENGTH
        return record

    def _read_length(self) -> int | None:
        newline = self._buf.find(b"\n", self._pos)
        if newline == -1:
            if self.buffered > MAX_LENGTH_DIGITS:
                raise RemoteProtocolError(
                    f"RecordIO length prefix longer than {MAX_LENGTH_DIGITS} digits: "
                    f"{bytes(self._buf[self._pos : self._pos + 32])!r}"
                )
            self._check_digits(bytes(self._buf[self._pos :]))
            return None
        prefix = bytes(self._buf[self._pos : newline])
        if not prefix or len(prefix) > MAX_LENGTH_DIGITS:
            raise RemoteProtocolError(f"invalid RecordIO length prefix {prefix[:32]!r}")
        self._check_digits(prefix)
        length = int(prefix)
        if length > self._max_record_size:
            raise RemoteProtocolError(
                f"RecordIO record of {length} bytes exceeds the limit of "
                f"{self._max_record_size} bytes"
            )
        self._pos = newline + 1
        return length

    @staticmethod
    def _check_digits(prefix: bytes) -> None:
        # ``bytes.isdigit`` is ASCII-only, which is what ``1*DIGIT`` means.
        if prefix and not prefix.isdigit():
            raise RemoteProtocolError(f"invalid RecordIO length prefix {prefix[:32]!r}")

    def _at_starved_boundary(self, *, inside_record: bool) -> Sentinel:
        if not self._eof:
            return NEED_DATA
        if inside_record:
            expected = self._need if self._state is DecoderState.READING_DATA else None
            detail = (
                f"{self.buffered} of {expected} bytes of a record"
                if expected is not None
                else f"{self.buffered} bytes of a length prefix"
            )
            raise RemoteProtocolError(f"RecordIO stream ended after {detail}")
        self._state = DecoderState.DONE
        return END_OF_STREAM

    def _compact(self) -> None:
        if self._pos > len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0


def encode_record(data: bytes) -> bytes:
    """Frame *data* as one RecordIO record.

    >>> encode_record(b'{"type":"HEARTBEAT"}')
    b'20\\n{"type":"HEARTBEAT"}'
    """
    return b"%d\n%s" % (len(data), data)
