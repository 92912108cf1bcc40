"""Event parsing: every recorded event type, synthetic ones for the rest, and garbage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from toil_mesos.errors import RemoteProtocolError
from toil_mesos.mesos import (
    END_OF_STREAM,
    NEED_DATA,
    Acknowledged,
    Error,
    EventStream,
    ExecutorMessage,
    ExecutorSubscribed,
    Failure,
    Heartbeat,
    InverseOffers,
    Kill,
    Launch,
    LaunchGroup,
    Message,
    Offers,
    Rescind,
    RescindInverseOffer,
    Shutdown,
    Subscribed,
    UnknownEvent,
    Update,
    UpdateOperationStatus,
    encode_record,
    parse_executor_event,
    parse_scheduler_event,
)

FID = "42f618ee-43f9-4ca8-88a7-31221df616de-0000"
AID = "42f618ee-43f9-4ca8-88a7-31221df616de-S0"


def data_of(record: bytes) -> bytes:
    return record.split(b"\n", 1)[1]


def recorded(
    recorded_events: Callable[[str], list[tuple[str, bytes]]], name: str, stem: str
) -> bytes:
    return data_of(dict(recorded_events(name))[stem])


class TestRecordedSchedulerEvents:
    def test_subscribed(self, recorded_events: Any) -> None:
        event = parse_scheduler_event(
            recorded(recorded_events, "scheduler/fw1_main", "001_SUBSCRIBED")
        )
        assert isinstance(event, Subscribed)
        assert event.framework_id == FID
        assert event.heartbeat_interval == 15.0
        assert event.master_info.address.ip == "127.0.0.1"
        assert event.master_info.ip == 16777343

    def test_heartbeat(self, recorded_events: Any) -> None:
        event = parse_scheduler_event(
            recorded(recorded_events, "scheduler/fw1_main", "002_HEARTBEAT")
        )
        assert event == Heartbeat()

    def test_offers_keep_wire_shape(self, recorded_events: Any) -> None:
        event = parse_scheduler_event(recorded(recorded_events, "scheduler/fw1_main", "003_OFFERS"))
        assert isinstance(event, Offers)
        (offer,) = event.offers
        assert offer.id.value == "42f618ee-43f9-4ca8-88a7-31221df616de-O0"
        assert offer.agent_id.value == AID
        assert {r.name for r in offer.resources} >= {"cpus", "mem", "disk", "ports"}
        assert offer.url.address.port == 5051
        assert offer.hostname == "localhost"

    def test_update_with_uuid(self, recorded_events: Any) -> None:
        raw = recorded(recorded_events, "scheduler/fw1_main", "005_UPDATE_TASK_STARTING_T1")
        event = parse_scheduler_event(raw)
        assert isinstance(event, Update)
        assert (event.task_id, event.state, event.uuid) == (
            "T1",
            "TASK_STARTING",
            "rDGztLXUSzOD8rRUfQEINQ==",
        )
        assert event.status.container_status.executor_pid == 26723

    def test_reconciliation_update_has_no_uuid(self, recorded_events: Any) -> None:
        raw = recorded(recorded_events, "scheduler/fw1_main", "012_UPDATE_TASK_RUNNING_T2")
        event = parse_scheduler_event(raw)
        assert isinstance(event, Update)
        assert event.uuid is None
        assert event.status.reason == "REASON_RECONCILIATION"

    def test_message(self, recorded_events: Any) -> None:
        event = parse_scheduler_event(
            recorded(recorded_events, "scheduler/fw1_main", "011_MESSAGE")
        )
        assert event == Message(
            agent_id=AID, executor_id="E1", data="cG9uZzogcGluZyBmcm9tIHNjaGVkdWxlcg=="
        )

    def test_executor_failure(self, recorded_events: Any) -> None:
        event = parse_scheduler_event(
            recorded(recorded_events, "scheduler/fw1_main", "057_FAILURE")
        )
        assert event == Failure(agent_id=AID, executor_id="E5", status=35072)
        assert event.status is not None and event.status >> 8 == 137

    def test_error_from_subscribe_response(self, transcripts: Path) -> None:
        raw = (
            transcripts / "scheduler/fw1_main/calls/07_ERR_subscribe_roles_without_MULTI_ROLE"
            ".response.http"
        ).read_bytes()
        record = raw.split(b"\r\n")[7].split(b"\n", 1)[1]
        event = parse_scheduler_event(record)
        assert isinstance(event, Error)
        assert "MULTI_ROLE" in event.message

    @pytest.mark.parametrize(
        "name",
        ["scheduler/fw1_main", "scheduler/fw2_partition_aware", "scheduler/fw3_fetch_failure"],
    )
    def test_every_recorded_event_parses_to_its_type(self, name: str, recorded_events: Any) -> None:
        names = {
            "SUBSCRIBED": Subscribed,
            "HEARTBEAT": Heartbeat,
            "OFFERS": Offers,
            "UPDATE": Update,
            "MESSAGE": Message,
            "FAILURE": Failure,
        }
        events = recorded_events(name)
        assert events
        for stem, record in events:
            kind = stem.split("_", 2)[1]
            assert isinstance(parse_scheduler_event(data_of(record)), names[kind]), stem


SYNTHETIC_SCHEDULER = [
    (
        {"type": "INVERSE_OFFERS", "inverse_offers": {"inverse_offers": [{"id": {"value": "I1"}}]}},
        InverseOffers,
    ),
    ({"type": "RESCIND", "rescind": {"offer_id": {"value": "O1"}}}, Rescind),
    (
        {
            "type": "RESCIND_INVERSE_OFFER",
            "rescind_inverse_offer": {"inverse_offer_id": {"value": "I1"}},
        },
        RescindInverseOffer,
    ),
    (
        {
            "type": "UPDATE_OPERATION_STATUS",
            "update_operation_status": {"status": {"state": "OPERATION_FINISHED"}},
        },
        UpdateOperationStatus,
    ),
    ({"type": "FAILURE", "failure": {"agent_id": {"value": AID}}}, Failure),
    ({"type": "ERROR", "error": {"message": "Framework has been removed"}}, Error),
]


@pytest.mark.parametrize(("obj", "cls"), SYNTHETIC_SCHEDULER)
def test_synthetic_scheduler_events(obj: dict[str, Any], cls: type) -> None:
    event = parse_scheduler_event(json.dumps(obj).encode())
    assert type(event) is cls


def test_agent_failure_has_no_executor() -> None:
    event = parse_scheduler_event(b'{"type":"FAILURE","failure":{"agent_id":{"value":"S1"}}}')
    assert event == Failure(agent_id="S1", executor_id=None, status=None)


def test_rescind_ids() -> None:
    assert parse_scheduler_event(
        b'{"type":"RESCIND","rescind":{"offer_id":{"value":"O7"}}}'
    ) == Rescind(offer_id="O7")


class TestExecutorEvents:
    def test_recorded_e1(self, recorded_events: Any) -> None:
        events = [parse_executor_event(data_of(r)) for _, r in recorded_events("executor/E1")]
        kinds = [type(e) for e in events]
        assert kinds == [
            ExecutorSubscribed,
            Launch,
            Acknowledged,
            Acknowledged,
            Acknowledged,
            Launch,
            Acknowledged,
            Acknowledged,
            ExecutorMessage,
            Kill,
            Acknowledged,
            Acknowledged,
            Shutdown,
        ]
        subscribed = events[0]
        assert isinstance(subscribed, ExecutorSubscribed)
        assert subscribed.container_id == "de77bc02-27b6-46a6-be08-f637e9eaeb7a"
        assert subscribed.executor_info.command.shell is True
        assert subscribed.agent_info.id.value == AID
        launch = events[1]
        assert isinstance(launch, Launch) and launch.task_id == "T1"
        assert launch.task.executor.executor_id.value == "E1"
        assert events[2] == Acknowledged(task_id="T1", uuid="rDGztLXUSzOD8rRUfQEINQ==")
        assert events[8] == ExecutorMessage(data="cGluZyBmcm9tIHNjaGVkdWxlcg==")
        assert isinstance(events[9], Kill) and events[9].task_id == "T2"

    @pytest.mark.parametrize(
        ("obj", "expected"),
        [
            (
                {
                    "type": "LAUNCH_GROUP",
                    "launch_group": {
                        "task_group": {
                            "tasks": [{"task_id": {"value": "a"}}, {"task_id": {"value": "b"}}]
                        }
                    },
                },
                ("a", "b"),
            ),
            ({"type": "HEARTBEAT"}, Heartbeat()),
            ({"type": "ERROR", "error": {"message": "boom"}}, Error(message="boom")),
            ({"type": "SHUTDOWN"}, Shutdown()),
        ],
    )
    def test_synthetic(self, obj: dict[str, Any], expected: Any) -> None:
        event = parse_executor_event(json.dumps(obj).encode())
        if isinstance(event, LaunchGroup):
            assert event.task_ids == expected
            assert len(event.tasks) == 2
        else:
            assert event == expected

    def test_kill_policy_kept(self) -> None:
        event = parse_executor_event(
            b'{"type":"KILL","kill":{"task_id":{"value":"T"},'
            b'"kill_policy":{"grace_period":{"nanoseconds":5}}}}'
        )
        assert isinstance(event, Kill)
        assert event.kill_policy.grace_period.nanoseconds == 5


class TestUnknownAndGarbage:
    @pytest.mark.parametrize("parse", [parse_scheduler_event, parse_executor_event])
    def test_unknown_type(self, parse: Callable[[bytes], Any]) -> None:
        event = parse(b'{"type":"SOMETHING_NEW","something_new":{"x":1}}')
        assert isinstance(event, UnknownEvent)
        assert event.type == "SOMETHING_NEW"
        assert event.raw.something_new.x == 1

    @pytest.mark.parametrize(
        ("record", "message"),
        [
            (b"not json", "not JSON"),
            (b"\xff\xfe", "not JSON"),
            (b"", "not JSON"),
            (b"[1, 2]", "not a JSON object"),
            (b'"HEARTBEAT"', "not a JSON object"),
            (b"{}", "no 'type'"),
            (b'{"type": 7}', "no 'type'"),
            (b'{"type":"SUBSCRIBED"}', "no 'subscribed'"),
            (b'{"type":"SUBSCRIBED","subscribed":{}}', "no 'framework_id'"),
            (
                b'{"type":"SUBSCRIBED","subscribed":{"framework_id":{"value":"f"},'
                b'"heartbeat_interval_seconds":-1}}',
                "heartbeat interval",
            ),
            (b'{"type":"UPDATE","update":{"status":{"state":"TASK_RUNNING"}}}', "task_id"),
            (b'{"type":"UPDATE","update":{"status":{"task_id":{"value":"t"}}}}', "state"),
            (b'{"type":"UPDATE","update":{"status":{"task_id":"t","state":"S"}}}', "malformed"),
            (b'{"type":"OFFERS","offers":{"offers":{}}}', "non-list"),
            (b'{"type":"FAILURE","failure":{"status":"x"}}', "non-integer"),
            (b'{"type":"ERROR","error":{}}', "message"),
            (b'{"type":"MESSAGE","message":{"agent_id":{"value":"a"}}}', "executor_id"),
        ],
    )
    def test_scheduler_garbage(self, record: bytes, message: str) -> None:
        with pytest.raises(RemoteProtocolError, match=message):
            parse_scheduler_event(record)

    @pytest.mark.parametrize(
        "record",
        [
            b'{"type":"LAUNCH","launch":{}}',
            b'{"type":"ACKNOWLEDGED","acknowledged":{"task_id":{"value":"t"}}}',
            b'{"type":"SUBSCRIBED","subscribed":{"executor_info":{}}}',
            b'{"type":"LAUNCH_GROUP","launch_group":{"task_group":{"tasks":[1]}}}',
        ],
    )
    def test_executor_garbage(self, record: bytes) -> None:
        with pytest.raises(RemoteProtocolError):
            parse_executor_event(record)


class TestEventStream:
    def test_bytes_in_events_out_three_ways(self, stream_body: Any) -> None:
        body, _ = stream_body("scheduler/fw3_fetch_failure")
        feeds = {
            "whole": [body],
            "bytewise": [body[i : i + 1] for i in range(len(body))],
            "trailing": [body, b'20\n{"type":'],
        }
        results = {}
        for how, chunks in feeds.items():
            stream = EventStream(parse_scheduler_event)
            events: list[Any] = []
            for chunk in chunks:
                stream.feed(chunk)
                while (event := stream.next_event()) is not NEED_DATA:
                    events.append(event)
            results[how] = [type(e).__name__ for e in events]
        assert results["whole"] == ["Subscribed", "Offers", "Heartbeat", "Failure", "Update"]
        assert results["bytewise"] == results["whole"] == results["trailing"]

    def test_clean_end(self) -> None:
        stream = EventStream(parse_scheduler_event)
        stream.feed(encode_record(b'{"type":"HEARTBEAT"}'))
        stream.feed(b"")
        assert stream.next_event() == Heartbeat()
        assert stream.next_event() is END_OF_STREAM

    def test_truncated_record(self) -> None:
        stream = EventStream(parse_executor_event)
        stream.feed(b'20\n{"type":"HEART')
        assert stream.next_event() is NEED_DATA
        stream.feed(b"")
        with pytest.raises(RemoteProtocolError, match="ended after 14 of 20"):
            stream.next_event()

    def test_non_json_record_is_sticky(self) -> None:
        stream = EventStream(parse_scheduler_event)
        stream.feed(encode_record(b"<html>") + encode_record(b'{"type":"HEARTBEAT"}'))
        with pytest.raises(RemoteProtocolError, match="not JSON"):
            stream.next_event()
        with pytest.raises(RemoteProtocolError, match="unusable"):
            stream.next_event()

    def test_unknown_event_does_not_stop_the_stream(self) -> None:
        stream = EventStream(parse_scheduler_event)
        stream.feed(encode_record(b'{"type":"NEW"}') + encode_record(b'{"type":"HEARTBEAT"}'))
        assert isinstance(stream.next_event(), UnknownEvent)
        assert stream.next_event() == Heartbeat()
