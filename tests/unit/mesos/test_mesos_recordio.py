"""RecordIO framing: bytes in, records out, fed whole, byte by byte and with trailing data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from toil_mesos.errors import RemoteProtocolError
from toil_mesos.mesos._recordio import (
    END_OF_STREAM,
    MAX_LENGTH_DIGITS,
    NEED_DATA,
    DecoderState,
    RecordIODecoder,
    Sentinel,
    encode_record,
)

HEARTBEAT = b'{"type":"HEARTBEAT"}'


def splits(data: bytes) -> Iterator[list[bytes]]:
    """The ways h11's tr() feeds input: whole and one byte at a time."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]


def decode_all(chunks: list[bytes], *, eof: bool, **kwargs: int) -> tuple[list[bytes], Sentinel]:
    decoder = RecordIODecoder(**kwargs)
    records: list[bytes] = []
    last: bytes | Sentinel = NEED_DATA
    for chunk in chunks:
        decoder.feed(chunk)
        while isinstance(last := decoder.next_record(), bytes):
            records.append(last)
    if eof:
        decoder.feed(b"")
        while isinstance(last := decoder.next_record(), bytes):
            records.append(last)
    assert isinstance(last, Sentinel)
    return records, last


GOOD = [
    pytest.param(b"", [], id="empty"),
    pytest.param(b"20\n" + HEARTBEAT, [HEARTBEAT], id="one"),
    pytest.param(b"20\n" + HEARTBEAT + b"20\n" + HEARTBEAT, [HEARTBEAT, HEARTBEAT], id="two"),
    pytest.param(b"3\nabc1\nd", [b"abc", b"d"], id="short"),
    pytest.param(b"0\n", [b""], id="zero-length"),
    pytest.param(b"2\n\n\n", [b"\n\n"], id="data-with-newlines"),
    pytest.param(b"5\n12\n34", [b"12\n34"], id="digits-in-data"),
    pytest.param(b"007\n1234567", [b"1234567"], id="leading-zeros"),
]


class TestDecoding:
    @pytest.mark.parametrize(("data", "expected"), GOOD)
    def test_complete_stream(self, data: bytes, expected: list[bytes]) -> None:
        for chunks in splits(data):
            records, last = decode_all(chunks, eof=True)
            assert records == expected
            assert last is END_OF_STREAM

    @pytest.mark.parametrize(("data", "expected"), GOOD)
    def test_trailing_partial_record_needs_data(self, data: bytes, expected: list[bytes]) -> None:
        for chunks in splits(data + b"20\n{"):
            records, last = decode_all(chunks, eof=False)
            assert records == expected
            assert last is NEED_DATA

    def test_need_data_until_record_complete(self) -> None:
        decoder = RecordIODecoder()
        for byte in (b"2", b"0", b"\n", *(HEARTBEAT[i : i + 1] for i in range(19))):
            decoder.feed(byte)
            assert decoder.next_record() is NEED_DATA
        decoder.feed(HEARTBEAT[19:])
        assert decoder.next_record() == HEARTBEAT
        assert decoder.next_record() is NEED_DATA
        assert decoder.buffered == 0

    def test_end_of_stream_is_repeatable(self) -> None:
        decoder = RecordIODecoder()
        decoder.feed(b"")
        assert decoder.next_record() is END_OF_STREAM
        assert decoder.next_record() is END_OF_STREAM
        assert decoder.state is DecoderState.DONE

    def test_feeding_after_eof_is_our_bug(self) -> None:
        decoder = RecordIODecoder()
        decoder.feed(b"")
        with pytest.raises(ValueError, match="after end of stream"):
            decoder.feed(b"1\nx")

    def test_repr_shows_state(self) -> None:
        decoder = RecordIODecoder()
        decoder.feed(b"5\nab")
        decoder.next_record()
        assert "READING_DATA" in repr(decoder)
        assert "buffered=2" in repr(decoder)


BAD = [
    pytest.param(b"x\n", "invalid RecordIO length prefix", id="letter"),
    pytest.param(b"-5\nabcde", "invalid RecordIO length prefix", id="negative"),
    pytest.param(b" 5\nabcde", "invalid RecordIO length prefix", id="space"),
    pytest.param(b"\n", "invalid RecordIO length prefix", id="empty-prefix"),
    pytest.param(b'{"type":"HEARTBEAT"}', "invalid RecordIO length prefix", id="json-no-prefix"),
    pytest.param(b"1" * (MAX_LENGTH_DIGITS + 1), "longer than", id="too-many-digits-no-lf"),
    pytest.param(
        b"1" * (MAX_LENGTH_DIGITS + 1) + b"\n", "invalid|longer than", id="too-many-digits"
    ),
    pytest.param(b"\xff\xfe\n", "invalid RecordIO length prefix", id="binary"),
]


class TestGarbage:
    @pytest.mark.parametrize(("data", "message"), BAD)
    def test_garbage_prefix(self, data: bytes, message: str) -> None:
        for chunks in splits(data):
            with pytest.raises(RemoteProtocolError, match=message):
                decode_all(chunks, eof=True)

    def test_length_cap(self) -> None:
        decoder = RecordIODecoder(max_record_size=10)
        decoder.feed(b"11\n")
        with pytest.raises(RemoteProtocolError, match="exceeds the limit of 10 bytes"):
            decoder.next_record()
        assert decoder.state is DecoderState.ERROR

    def test_record_at_cap_is_fine(self) -> None:
        records, _ = decode_all([b"10\n0123456789"], eof=True, max_record_size=10)
        assert records == [b"0123456789"]

    def test_huge_length_rejected_before_buffering(self) -> None:
        decoder = RecordIODecoder()
        decoder.feed(b"99999999999999999999\n")
        with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
            decoder.next_record()

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b'20\n{"type"', "ended after 7 of 20 bytes of a record"),
            (b"20\n", "ended after 0 of 20 bytes of a record"),
            (b"2", "ended after 1 bytes of a length prefix"),
            (b"20\n" + HEARTBEAT + b"5", "ended after 1 bytes of a length prefix"),
        ],
    )
    def test_truncated_at_eof(self, data: bytes, message: str) -> None:
        for chunks in splits(data):
            with pytest.raises(RemoteProtocolError, match=message):
                decode_all(chunks, eof=True)

    def test_error_is_sticky(self) -> None:
        decoder = RecordIODecoder()
        decoder.feed(b"zz\n")
        with pytest.raises(RemoteProtocolError):
            decoder.next_record()
        with pytest.raises(RemoteProtocolError, match="unusable after an earlier error"):
            decoder.next_record()
        with pytest.raises(RemoteProtocolError, match="unusable"):
            decoder.feed(b"20\n" + HEARTBEAT)
        assert decoder.state is DecoderState.ERROR

    def test_bad_limit(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            RecordIODecoder(max_record_size=0)


class TestEncoding:
    @pytest.mark.parametrize("data", [b"", b"x", HEARTBEAT, b"\n" * 300, bytes(range(256))])
    def test_round_trip(self, data: bytes) -> None:
        encoded = encode_record(data) + encode_record(data)
        for chunks in splits(encoded):
            assert decode_all(chunks, eof=True) == ([data, data], END_OF_STREAM)

    def test_heartbeat_is_the_recorded_bytes(self, transcripts: Path) -> None:
        recorded = transcripts / "scheduler/fw1_main/events/002_HEARTBEAT.recordio.bin"
        assert encode_record(HEARTBEAT) == recorded.read_bytes()


STREAMS = [
    "scheduler/fw1_main",
    "scheduler/fw2_partition_aware",
    "scheduler/fw3_fetch_failure",
    "executor/E1",
    "executor/E2",
    "executor/E5",
]


class TestRecordedStreams:
    """The real streams decode into exactly the records the recorder saved one by one.

    Only the data is compared: 18 of the 129 ``events/*.recordio.bin`` files carry a length
    prefix 20 (or 40) bytes larger than their data, apparently a path rewritten after recording;
    the raw socket streams are self-consistent and are what we decode.
    """

    @pytest.mark.parametrize("name", STREAMS)
    def test_records_match_event_files(
        self,
        name: str,
        stream_body: Callable[[str], tuple[bytes, bool]],
        recorded_events: Callable[[str], list[tuple[str, bytes]]],
    ) -> None:
        body, ended = stream_body(name)
        expected = [record.split(b"\n", 1)[1] for _, record in recorded_events(name)]
        whole, last = decode_all([body], eof=ended)
        assert whole == expected
        assert last is (END_OF_STREAM if ended else NEED_DATA)
        bytewise, _ = decode_all([body[i : i + 1] for i in range(len(body))], eof=ended)
        assert bytewise == whole
        trailing, last = decode_all([body + b"17"], eof=False)
        assert trailing == whole
        assert last is NEED_DATA

    def test_stream_cut_mid_record_is_an_error(
        self, stream_body: Callable[[str], tuple[bytes, bool]]
    ) -> None:
        body, _ = stream_body("scheduler/fw1_main")
        with pytest.raises(RemoteProtocolError, match="stream ended after"):
            decode_all([body[: len(body) // 2]], eof=True)
