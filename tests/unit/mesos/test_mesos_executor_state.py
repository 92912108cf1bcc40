"""Executor environment parsing and the executor's subscription / bookkeeping state machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from toil_mesos.errors import LocalProtocolError, RemoteProtocolError
from toil_mesos.mesos import (
    Acknowledged,
    Error,
    ExecutorEnvironment,
    ExecutorMessage,
    ExecutorMessageCall,
    ExecutorProtocol,
    ExecutorState,
    ExecutorSubscribed,
    Heartbeat,
    Kill,
    Launch,
    LaunchGroup,
    Shutdown,
    parse_checkpoint,
    parse_duration,
)
from toil_mesos.mesos._events import UpdateCall
from toil_mesos.mesos._executor_state import EXECUTOR_TRANSITIONS, ExecutorInput

FID = "fw-0000"
E = ExecutorState


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("5secs", 5.0),
            ("15mins", 900.0),
            ("250ms", 0.25),
            ("2hrs", 7200.0),
            ("1days", 86400.0),
            ("1weeks", 604800.0),
            ("10us", 1e-5),
            ("100ns", 1e-7),
            ("1.5secs", 1.5),
            (".5secs", 0.5),
            ("3.secs", 3.0),
        ],
    )
    def test_parse(self, text: str, seconds: float) -> None:
        assert parse_duration(text) == pytest.approx(seconds)

    @pytest.mark.parametrize("text", ["5", "secs", "5 secs", "5s", "-5secs", "5sec", "", "1e3secs"])
    def test_reject(self, text: str) -> None:
        with pytest.raises(RemoteProtocolError, match="invalid Mesos duration"):
            parse_duration(text)


class TestCheckpoint:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [("0", False), ("1", True), (None, False), ("", False), ("true", True), ("false", False)],
    )
    def test_parse(self, value: str | None, expected: bool) -> None:
        assert parse_checkpoint(value) is expected

    @pytest.mark.parametrize("value", ["2", "yes", "on"])
    def test_reject(self, value: str) -> None:
        with pytest.raises(RemoteProtocolError, match="MESOS_CHECKPOINT"):
            parse_checkpoint(value)


class TestEnvironment:
    def test_recorded_agent_environment(self, executor_env: dict[str, str]) -> None:
        env = ExecutorEnvironment.from_env(executor_env)
        assert env.agent_endpoint == "127.0.0.1:5051"
        assert env.executor_id == "E1"
        assert env.framework_id == "42f618ee-43f9-4ca8-88a7-31221df616de-0000"
        assert env.agent_id == "42f618ee-43f9-4ca8-88a7-31221df616de-S0"
        assert env.checkpoint is False  # the string "0": pymesos read this as True
        assert env.shutdown_grace_period == 5.0
        assert env.recovery_timeout == 900.0
        assert env.subscription_backoff_max == 2.0
        assert env.sandbox == env.directory
        assert env.authentication_token is None

    def test_matches_transcript_file(self, transcripts: Path, executor_env: dict[str, str]) -> None:
        recorded = json.loads((transcripts / "executor/E1/environ.parent_sh.json").read_text())
        assert recorded == executor_env

    def test_checkpointing_environment(self, executor_env: dict[str, str]) -> None:
        env = ExecutorEnvironment.from_env(
            {
                **executor_env,
                "MESOS_CHECKPOINT": "1",
                "MESOS_RECOVERY_TIMEOUT": "15mins",
                "MESOS_SUBSCRIPTION_BACKOFF_MAX": "250ms",
                "MESOS_EXECUTOR_AUTHENTICATION_TOKEN": "secret-jwt",
            }
        )
        assert env.checkpoint is True
        assert env.recovery_timeout == 900.0
        assert env.subscription_backoff_max == 0.25
        assert env.authentication_token == "secret-jwt"
        assert "secret-jwt" not in repr(env)

    @pytest.mark.parametrize(
        "missing", ["MESOS_AGENT_ENDPOINT", "MESOS_FRAMEWORK_ID", "MESOS_EXECUTOR_ID"]
    )
    def test_missing_required(self, executor_env: dict[str, str], missing: str) -> None:
        del executor_env[missing]
        with pytest.raises(RemoteProtocolError, match=missing):
            ExecutorEnvironment.from_env(executor_env)

    def test_bad_duration(self, executor_env: dict[str, str]) -> None:
        executor_env["MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD"] = "5 seconds"
        with pytest.raises(RemoteProtocolError, match="5 seconds"):
            ExecutorEnvironment.from_env(executor_env)


def task(task_id: str) -> dict[str, Any]:
    return {"name": task_id, "task_id": {"value": task_id}, "agent_id": {"value": "S0"}}


def status(task_id: str, uuid: str, state: str = "TASK_RUNNING") -> dict[str, Any]:
    return {"task_id": {"value": task_id}, "state": state, "uuid": uuid}


SUBSCRIBED = ExecutorSubscribed(
    executor_info={}, framework_info={}, agent_info={}, container_id=None
)


def protocol(*, checkpoint: bool = False, **kwargs: Any) -> ExecutorProtocol:
    return ExecutorProtocol(framework_id=FID, executor_id="E1", checkpoint=checkpoint, **kwargs)


def subscribed(p: ExecutorProtocol, now: float = 0.0) -> dict[str, Any]:
    body = json.loads(p.start_subscribe(now))
    p.stream_opened(now)
    p.receive_event(SUBSCRIBED, now)
    return body


class TestBookkeeping:
    def test_first_subscribe_is_empty(self) -> None:
        p = protocol()
        assert subscribed(p) == {
            "type": "SUBSCRIBE",
            "executor_id": {"value": "E1"},
            "framework_id": {"value": FID},
            "subscribe": {"unacknowledged_tasks": [], "unacknowledged_updates": []},
        }
        assert p.state is E.SUBSCRIBED
        assert p.subscriptions == 1

    def test_launch_update_acknowledge(self) -> None:
        p = protocol()
        subscribed(p)
        p.receive_event(Launch(task_id="T1", task=task("T1")), 1.0)  # type: ignore[arg-type]
        assert p.unacknowledged_tasks == (task("T1"),)
        body = json.loads(p.send_update(status("T1", "u1")) or b"")
        assert body["type"] == "UPDATE"
        assert body["update"]["status"]["uuid"] == "u1"
        p.send_update(status("T1", "u2"))
        assert [s["uuid"] for s in p.unacknowledged_updates] == ["u1", "u2"]
        p.receive_event(Acknowledged(task_id="T1", uuid="u1"), 2.0)  # type: ignore[arg-type]
        assert [s["uuid"] for s in p.unacknowledged_updates] == ["u2"]
        assert p.unacknowledged_tasks == ()  # one acknowledged update acknowledges the task
        p.receive_event(Acknowledged(task_id="T1", uuid="u2"), 2.0)  # type: ignore[arg-type]
        assert p.unacknowledged_updates == ()
        assert "unacknowledged_updates=0" in repr(p)

    def test_launch_group_records_every_task(self) -> None:
        p = protocol()
        subscribed(p)
        p.receive_event(
            LaunchGroup(task_ids=("a", "b"), tasks=(task("a"), task("b"))),  # type: ignore[arg-type]
            1.0,
        )
        assert [t["task_id"]["value"] for t in p.unacknowledged_tasks] == ["a", "b"]

    def test_unknown_acknowledgement_is_harmless(self) -> None:
        p = protocol()
        subscribed(p)
        p.receive_event(Acknowledged(task_id="X", uuid="nope"), 1.0)  # type: ignore[arg-type]
        assert p.state is E.SUBSCRIBED

    @pytest.mark.parametrize(
        "event",
        [
            Kill(task_id="T1"),  # type: ignore[arg-type]
            ExecutorMessage(data="eA=="),
            Error(message="x"),
            Heartbeat(),
        ],
    )
    def test_other_events_keep_state(self, event: Any) -> None:
        p = protocol()
        subscribed(p)
        p.receive_event(event, 1.0)
        assert p.state is E.SUBSCRIBED

    def test_update_needs_uuid_and_task_id(self) -> None:
        p = protocol()
        subscribed(p)
        with pytest.raises(LocalProtocolError, match="uuid"):
            p.send_update({"task_id": {"value": "T"}, "state": "TASK_RUNNING"})
        with pytest.raises(LocalProtocolError, match="task_id"):
            p.send_update({"uuid": "u", "state": "TASK_RUNNING"})
        with pytest.raises(LocalProtocolError, match="send_update"):
            p.send(UpdateCall(status=status("T", "u")))

    def test_resubscribe_carries_unacknowledged_tasks_and_updates(self) -> None:
        p = protocol(checkpoint=True)
        subscribed(p)
        p.receive_event(Launch(task_id="T1", task=task("T1")), 1.0)  # type: ignore[arg-type]
        p.receive_event(Launch(task_id="T2", task=task("T2")), 1.0)  # type: ignore[arg-type]
        p.send_update(status("T2", "u-run"))
        p.receive_event(Acknowledged(task_id="T2", uuid="u-run"), 1.5)  # type: ignore[arg-type]
        p.send_update(status("T1", "u1"))
        assert p.connection_lost(2.0) is not None
        assert p.state is E.DISCONNECTED
        # Updates made while disconnected are kept for the next SUBSCRIBE, not sent.
        assert p.send_update(status("T1", "u-fin", "TASK_FINISHED")) is None
        body = json.loads(p.start_subscribe(3.0))
        assert body["subscribe"]["unacknowledged_tasks"] == [task("T1")]
        assert body["subscribe"]["unacknowledged_updates"] == [
            {"status": status("T1", "u1")},
            {"status": status("T1", "u-fin", "TASK_FINISHED")},
        ]
        p.stream_opened(3.0)
        p.receive_event(SUBSCRIBED, 3.0)
        assert p.subscriptions == 2

    def test_update_made_while_subscribing_is_sent_after_subscribed(self) -> None:
        p = protocol(checkpoint=True)
        subscribed(p)
        p.send_update(status("T1", "before"))
        p.connection_lost(1.0)
        body = json.loads(p.start_subscribe(2.0))
        assert [u["status"]["uuid"] for u in body["subscribe"]["unacknowledged_updates"]] == [
            "before"
        ]
        # This one is too late for the SUBSCRIBE already on its way.
        assert p.send_update(status("T1", "during")) is None
        with pytest.raises(LocalProtocolError, match="SUBSCRIBING"):
            p.take_unsent_updates()
        p.stream_opened(2.0)
        p.receive_event(SUBSCRIBED, 2.0)
        (unsent,) = p.take_unsent_updates()
        assert json.loads(unsent)["update"]["status"]["uuid"] == "during"
        assert p.take_unsent_updates() == []


class TestDisconnection:
    def test_without_checkpoint_give_up(self) -> None:
        p = protocol(checkpoint=False)
        subscribed(p)
        assert p.connection_lost(5.0) is None
        assert p.state is E.CLOSED

    def test_without_checkpoint_connect_failure_gives_up(self) -> None:
        p = protocol(checkpoint=False)
        p.start_subscribe(0.0)
        assert p.connection_lost(0.5) is None
        assert p.state is E.CLOSED

    def test_with_checkpoint_retry_within_recovery_timeout(self) -> None:
        p = protocol(checkpoint=True, recovery_timeout=10.0, backoff_max=2.0)
        subscribed(p)
        delays = []
        now = 100.0
        while True:
            delay = p.connection_lost(now)
            if delay is None:
                break
            delays.append(delay)
            assert delay <= 2.0
            now += delay
            p.start_subscribe(now)
        assert p.state is E.CLOSED
        assert now >= 110.0
        assert delays[:4] == [0.25, 0.5, 1.0, 2.0]

    def test_delay_never_passes_the_recovery_deadline(self) -> None:
        p = protocol(checkpoint=True, recovery_timeout=1.0, backoff_max=5.0)
        subscribed(p)
        assert p.connection_lost(0.0) == 0.25
        p.start_subscribe(0.9)
        assert p.connection_lost(0.9) == pytest.approx(0.1)

    def test_successful_resubscribe_resets_the_recovery_clock(self) -> None:
        p = protocol(checkpoint=True, recovery_timeout=10.0)
        subscribed(p)
        p.connection_lost(0.0)
        p.start_subscribe(9.0)
        p.stream_opened(9.0)
        p.receive_event(SUBSCRIBED, 9.0)
        assert p.connection_lost(50.0) == 0.25
        assert p.state is E.DISCONNECTED

    def test_subscribe_deadline(self) -> None:
        p = protocol(subscribe_timeout=20.0)
        assert p.deadline() is None
        p.start_subscribe(1.0)
        assert p.deadline() == 21.0

    def test_connection_lost_while_disconnected_is_our_bug(self) -> None:
        with pytest.raises(LocalProtocolError):
            protocol().connection_lost(0.0)


class TestShutdown:
    def test_updates_still_go_out_after_shutdown(self) -> None:
        p = protocol(shutdown_grace_period=5.0)
        subscribed(p)
        p.receive_event(Shutdown(), 10.0)
        assert p.state is E.SHUTTING_DOWN
        assert p.deadline() == 15.0
        assert p.send_update(status("T13", "u", "TASK_KILLED")) is not None
        assert p.send(ExecutorMessageCall(data="eA==")) is not None
        assert p.connection_lost(11.0) is None  # nothing to recover while shutting down
        assert p.state is E.CLOSED

    def test_closed_refuses_calls(self) -> None:
        p = protocol()
        subscribed(p)
        p.close()
        with pytest.raises(LocalProtocolError, match="CLOSED"):
            p.send_update(status("T", "u"))

    def test_stream_must_begin_with_subscribed(self) -> None:
        p = protocol()
        p.start_subscribe(0.0)
        p.stream_opened(0.0)
        with pytest.raises(RemoteProtocolError, match="not allowed in state SUBSCRIBING"):
            p.receive_event(Launch(task_id="T", task=task("T")), 0.0)  # type: ignore[arg-type]
        assert p.state is E.ERROR
        with pytest.raises(LocalProtocolError, match="failed earlier"):
            p.start_subscribe(1.0)


@pytest.mark.parametrize("inp", list(ExecutorInput))
def test_nothing_leaves_error(inp: ExecutorInput) -> None:
    assert (E.ERROR, inp) not in EXECUTOR_TRANSITIONS
