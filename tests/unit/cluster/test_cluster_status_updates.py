"""The agent's sans-I/O status update manager: no sockets, no threads, no sleeps."""

from __future__ import annotations

from typing import Any

import pytest

from toil_mesos.cluster._status_updates import (
    Forward,
    StatusUpdateManager,
    StreamState,
    TakeResult,
)

FID = "F"


def update(task: str, state: str, uuid: str, framework: str = FID) -> dict[str, Any]:
    return {
        "framework_id": {"value": framework},
        "status": {"task_id": {"value": task}, "state": state, "uuid": uuid},
    }


def states(forwards: list[Forward]) -> list[str]:
    return [f.update["status"]["state"] for f in forwards]


@pytest.fixture
def sum_() -> StatusUpdateManager:
    return StatusUpdateManager(retry_interval=10.0)


def test_first_update_is_sent_at_once(sum_: StatusUpdateManager) -> None:
    result, forwards = sum_.update(update("T", "TASK_STARTING", "a"), now=0.0)
    assert result is TakeResult.QUEUED
    assert states(forwards) == ["TASK_STARTING"]
    assert forwards[0].resend is False
    assert sum_.state(FID, "T") is StreamState.AWAITING_ACK
    assert sum_.next_deadline() == 10.0


def test_only_the_oldest_unacknowledged_update_is_in_flight(sum_: StatusUpdateManager) -> None:
    sum_.update(update("T", "TASK_STARTING", "a"), now=0.0)
    assert sum_.update(update("T", "TASK_RUNNING", "b"), now=0.1)[1] == []
    assert sum_.update(update("T", "TASK_FINISHED", "c"), now=0.2)[1] == []
    assert [u["status"]["uuid"] for u in sum_.unacknowledged(FID, "T")] == ["a", "b", "c"]
    # Each ACKNOWLEDGE releases exactly the next one (recorded: RUNNING and FINISHED came at
    # once after STARTING was acknowledged, one per acknowledgement).
    assert states(sum_.acknowledge(FID, "T", "a", now=30.0)) == ["TASK_RUNNING"]
    assert states(sum_.acknowledge(FID, "T", "b", now=30.1)) == ["TASK_FINISHED"]
    assert sum_.acknowledge(FID, "T", "c", now=30.2) == []
    assert sum_.state(FID, "T") is StreamState.CLOSED
    assert sum_.next_deadline() is None


def test_resend_after_10_then_20_seconds_with_identical_update(
    sum_: StatusUpdateManager,
) -> None:
    _, first = sum_.update(update("T", "TASK_STARTING", "a"), now=0.0)
    assert sum_.tick(now=9.99) == []
    resent = sum_.tick(now=10.0)
    assert [f.resend for f in resent] == [True]
    assert resent[0].update is first[0].update
    assert sum_.next_deadline() == 30.0
    assert sum_.tick(now=29.9) == []
    assert states(sum_.tick(now=30.0)) == ["TASK_STARTING"]
    assert sum_.next_deadline() == 70.0


def test_retry_interval_is_capped() -> None:
    sum_ = StatusUpdateManager(retry_interval=1.0, max_retry_interval=3.0)
    sum_.update(update("T", "TASK_STARTING", "a"), now=0.0)
    now = 0.0
    deadlines = []
    for _ in range(5):
        now = sum_.next_deadline() or 0.0
        sum_.tick(now=now)
        deadlines.append((sum_.next_deadline() or 0.0) - now)
    assert deadlines == [2.0, 3.0, 3.0, 3.0, 3.0]


def test_acknowledge_resets_the_interval_for_the_next_update(sum_: StatusUpdateManager) -> None:
    sum_.update(update("T", "TASK_STARTING", "a"), now=0.0)
    sum_.update(update("T", "TASK_RUNNING", "b"), now=0.0)
    sum_.tick(now=10.0)
    sum_.acknowledge(FID, "T", "a", now=15.0)
    assert sum_.next_deadline() == 25.0


def test_wrong_or_late_acknowledgements_are_ignored(sum_: StatusUpdateManager) -> None:
    sum_.update(update("T", "TASK_STARTING", "a"), now=0.0)
    sum_.update(update("T", "TASK_RUNNING", "b"), now=0.0)
    assert sum_.acknowledge(FID, "T", "b", now=1.0) == []
    assert sum_.acknowledge(FID, "other", "a", now=1.0) == []
    assert sum_.acknowledge("G", "T", "a", now=1.0) == []
    assert states(sum_.acknowledge(FID, "T", "a", now=1.0)) == ["TASK_RUNNING"]
    assert sum_.acknowledge(FID, "T", "a", now=1.0) == []
    assert sum_.is_acknowledged(FID, "T", "a")
    assert not sum_.is_acknowledged(FID, "T", "b")


def test_duplicates_are_dropped(sum_: StatusUpdateManager) -> None:
    sum_.update(update("T", "TASK_STARTING", "a"), now=0.0)
    result, forwards = sum_.update(update("T", "TASK_STARTING", "a"), now=1.0)
    assert (result, forwards) == (TakeResult.DUPLICATE, [])
    sum_.acknowledge(FID, "T", "a", now=2.0)
    assert sum_.update(update("T", "TASK_STARTING", "a"), now=3.0) == (TakeResult.DUPLICATE, [])


def test_nothing_after_a_terminal_update(sum_: StatusUpdateManager) -> None:
    sum_.update(update("T", "TASK_FAILED", "a"), now=0.0)
    assert sum_.update(update("T", "TASK_RUNNING", "b"), now=0.0) == (TakeResult.REFUSED, [])


def test_tasks_have_independent_streams(sum_: StatusUpdateManager) -> None:
    assert states(sum_.update(update("T1", "TASK_STARTING", "a"), now=0.0)[1]) == ["TASK_STARTING"]
    assert states(sum_.update(update("T2", "TASK_STARTING", "b"), now=5.0)[1]) == ["TASK_STARTING"]
    assert [f.task_id for f in sum_.tick(now=10.0)] == ["T1"]
    assert [f.task_id for f in sum_.tick(now=15.0)] == ["T2"]


def test_resend_all_after_reregistration(sum_: StatusUpdateManager) -> None:
    sum_.update(update("T1", "TASK_STARTING", "a"), now=0.0)
    sum_.update(update("T2", "TASK_RUNNING", "b"), now=0.0)
    sum_.update(update("T2", "TASK_FINISHED", "c"), now=0.0)
    resent = sum_.resend_all(now=3.0)
    assert sorted((f.task_id, f.update["status"]["uuid"]) for f in resent) == [
        ("T1", "a"),
        ("T2", "b"),
    ]
    assert all(f.resend for f in resent)


def test_forget_framework(sum_: StatusUpdateManager) -> None:
    sum_.update(update("T", "TASK_STARTING", "a"), now=0.0)
    sum_.update(update("T", "TASK_STARTING", "x", framework="G"), now=0.0)
    sum_.forget_framework(FID)
    assert sum_.state(FID, "T") is None
    assert [f.framework_id for f in sum_.tick(now=100.0)] == ["G"]


@pytest.mark.parametrize(
    "bad",
    [
        {"status": {"task_id": {"value": "T"}, "state": "TASK_RUNNING", "uuid": "a"}},
        {"framework_id": {"value": FID}, "status": {"state": "TASK_RUNNING", "uuid": "a"}},
        {"framework_id": {"value": FID}, "status": {"task_id": {"value": "T"}}},
    ],
)
def test_incomplete_updates_are_rejected(sum_: StatusUpdateManager, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="without framework id, task id or uuid"):
        sum_.update(bad, now=0.0)


def test_repr_shows_the_state(sum_: StatusUpdateManager) -> None:
    sum_.update(update("T", "TASK_STARTING", "a"), now=0.0)
    assert repr(sum_) == "<StatusUpdateManager streams=1 awaiting_ack=1>"


def test_retry_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        StatusUpdateManager(retry_interval=0)
