"""Call encoding, compared byte for byte with the requests recorded against Mesos 1.12."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from toil_mesos.errors import LocalProtocolError
from toil_mesos.mesos import (
    AcceptCall,
    AcknowledgeCall,
    DeclineCall,
    ExecutorMessageCall,
    ExecutorSubscribeCall,
    KillCall,
    MessageCall,
    ReconcileCall,
    ReviveCall,
    ShutdownCall,
    SubscribeCall,
    SuppressCall,
    TeardownCall,
    UpdateCall,
    encode_executor_call,
    encode_scheduler_call,
)
from toil_mesos.mesos._events import id_value, offer_ids_of

FID = "42f618ee-43f9-4ca8-88a7-31221df616de-0000"
AID = "42f618ee-43f9-4ca8-88a7-31221df616de-S0"
FW1 = "scheduler/fw1_main/calls/"


def recorded_json(transcripts: Path, path: str) -> Any:
    return json.loads((transcripts / path).read_text())


class TestSchedulerCallsMatchRecordings:
    def test_subscribe(self, transcripts: Path, request_body: Callable[[str], bytes]) -> None:
        info = recorded_json(transcripts, "scheduler/fw1_main/subscribe.request.json")
        body = encode_scheduler_call(
            SubscribeCall(framework_info=info["subscribe"]["framework_info"]), framework_id=None
        )
        assert body == request_body("scheduler/fw1_main/subscribe.request.http")

    def test_resubscribe_carries_framework_id_twice(self) -> None:
        body = json.loads(
            encode_scheduler_call(
                SubscribeCall(framework_info={"user": "u", "name": "n"}), framework_id=FID
            )
        )
        assert body["framework_id"] == {"value": FID}
        assert body["subscribe"]["framework_info"]["id"] == {"value": FID}
        assert "Mesos-Stream-Id" not in json.dumps(body)

    @pytest.mark.parametrize(
        ("recording", "call"),
        [
            (
                "14_DECLINE",
                DeclineCall(
                    offer_ids=("42f618ee-43f9-4ca8-88a7-31221df616de-O0",),
                    filters={"refuse_seconds": 3600.0},
                ),
            ),
            ("15_REVIVE", ReviveCall()),
            (
                "17_ACKNOWLEDGE_TASK_STARTING_T1",
                AcknowledgeCall(agent_id=AID, task_id="T1", uuid="rDGztLXUSzOD8rRUfQEINQ=="),
            ),
            (
                "23_MESSAGE_to_executor_E1",
                MessageCall(agent_id=AID, executor_id="E1", data="cGluZyBmcm9tIHNjaGVkdWxlcg=="),
            ),
            ("24_RECONCILE_implicit", ReconcileCall()),
            ("25_RECONCILE_explicit_unknown_task", ReconcileCall(tasks=(("no-such-task", AID),))),
            (
                "26_RECONCILE_explicit_unknown_task_no_agent",
                ReconcileCall(tasks=(("no-such-task-2", None),)),
            ),
            ("34_KILL_T2", KillCall(task_id="T2", agent_id=AID)),
            ("65_TEARDOWN", TeardownCall()),
        ],
    )
    def test_byte_for_byte(
        self, recording: str, call: Any, request_body: Callable[[str], bytes]
    ) -> None:
        assert encode_scheduler_call(call, framework_id=FID) == request_body(
            FW1 + recording + ".request.http"
        )

    @pytest.mark.parametrize(
        "recording",
        [
            "16_ACCEPT_LAUNCH_T1_on_E1",
            "20_ACCEPT_LAUNCH_T2_on_E1_sleep",
            "30_ACCEPT_T6_resources_without_allocation_info",
            "53_ACCEPT_T12_on_E2_not_acknowledged",
        ],
    )
    def test_accept_launch(
        self, recording: str, transcripts: Path, request_body: Callable[[str], bytes]
    ) -> None:
        recorded = recorded_json(transcripts, FW1 + recording + ".request.json")["accept"]
        call = AcceptCall(
            offer_ids=offer_ids_of(recorded["offer_ids"]),
            operations=tuple(recorded["operations"]),
            filters=recorded.get("filters"),
        )
        assert encode_scheduler_call(call, framework_id=FID) == request_body(
            FW1 + recording + ".request.http"
        )

    @pytest.mark.parametrize(
        ("call", "expected"),
        [
            (SuppressCall(), {"type": "SUPPRESS", "framework_id": {"value": FID}}),
            (
                SuppressCall(roles=("r",)),
                {"type": "SUPPRESS", "framework_id": {"value": FID}, "suppress": {"roles": ["r"]}},
            ),
            (
                ShutdownCall(executor_id="E1", agent_id=AID),
                {
                    "type": "SHUTDOWN",
                    "framework_id": {"value": FID},
                    "shutdown": {"executor_id": {"value": "E1"}, "agent_id": {"value": AID}},
                },
            ),
            (
                KillCall(task_id="T"),
                {
                    "type": "KILL",
                    "framework_id": {"value": FID},
                    "kill": {"task_id": {"value": "T"}},
                },
            ),
            (
                DeclineCall(offer_ids=("O1", "O2")),
                {
                    "type": "DECLINE",
                    "framework_id": {"value": FID},
                    "decline": {"offer_ids": [{"value": "O1"}, {"value": "O2"}]},
                },
            ),
        ],
    )
    def test_unrecorded_calls(self, call: Any, expected: dict[str, Any]) -> None:
        assert json.loads(encode_scheduler_call(call, framework_id=FID)) == expected

    def test_calls_need_a_framework_id(self) -> None:
        with pytest.raises(LocalProtocolError, match="needs a framework id"):
            encode_scheduler_call(ReviveCall(), framework_id=None)


class TestExecutorCallsMatchRecordings:
    def test_subscribe(self, request_body: Callable[[str], bytes]) -> None:
        body = encode_executor_call(ExecutorSubscribeCall(), executor_id="E1", framework_id=FID)
        assert body == request_body("executor/E1/subscribe.request.http")

    def test_subscribe_with_unacknowledged(self) -> None:
        task = {"name": "t", "task_id": {"value": "T1"}, "agent_id": {"value": AID}}
        status = {"task_id": {"value": "T1"}, "state": "TASK_RUNNING", "uuid": "dXU="}
        body = json.loads(
            encode_executor_call(
                ExecutorSubscribeCall(
                    unacknowledged_tasks=(task,), unacknowledged_updates=(status,)
                ),
                executor_id="E1",
                framework_id=FID,
            )
        )
        assert body["subscribe"] == {
            "unacknowledged_tasks": [task],
            "unacknowledged_updates": [{"status": status}],
        }

    @pytest.mark.parametrize(
        "recording",
        ["01_UPDATE_TASK_STARTING_T1", "02_UPDATE_TASK_RUNNING_T1", "08_UPDATE_TASK_KILLED_T2"],
    )
    def test_update(
        self, recording: str, transcripts: Path, request_body: Callable[[str], bytes]
    ) -> None:
        path = "executor/E1/calls/" + recording
        status = recorded_json(transcripts, path + ".request.json")["update"]["status"]
        body = encode_executor_call(UpdateCall(status=status), executor_id="E1", framework_id=FID)
        assert body == request_body(path + ".request.http")

    def test_message(self, request_body: Callable[[str], bytes]) -> None:
        body = encode_executor_call(
            ExecutorMessageCall(data="cG9uZzogcGluZyBmcm9tIHNjaGVkdWxlcg=="),
            executor_id="E1",
            framework_id=FID,
        )
        assert body == request_body("executor/E1/calls/06_MESSAGE_to_scheduler.request.http")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("T1", "T1"), ({"value": "T1"}, "T1")],
)
def test_id_value(value: Any, expected: str) -> None:
    assert id_value(value) == expected


@pytest.mark.parametrize("value", ["", {}, {"value": 3}, None, 5])
def test_id_value_rejects(value: Any) -> None:
    with pytest.raises(LocalProtocolError, match="not a Mesos id"):
        id_value(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("O1", ("O1",)),
        ({"value": "O1"}, ("O1",)),
        ([{"value": "O1"}, "O2"], ("O1", "O2")),
    ],
)
def test_offer_ids_of(value: Any, expected: tuple[str, ...]) -> None:
    assert offer_ids_of(value) == expected
