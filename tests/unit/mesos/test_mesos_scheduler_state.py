"""The scheduler subscription state machine, driven with events and times only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from toil_mesos.errors import LocalProtocolError, RemoteProtocolError
from toil_mesos.mesos import (
    AcceptCall,
    AcknowledgeCall,
    DeclineCall,
    Error,
    Heartbeat,
    KillCall,
    MessageCall,
    Offers,
    ReconcileCall,
    ReviveCall,
    SchedulerProtocol,
    ShutdownCall,
    Subscribed,
    SubscriptionState,
    SuppressCall,
    TeardownCall,
)
from toil_mesos.mesos._scheduler_state import (
    TRANSITIONS,
    CallOutcome,
    CallPolicy,
    Input,
    backoff_delay,
    classify_call_response,
    normalize_master,
    resolve_redirect,
)

INFO = {"user": "root", "name": "fw", "roles": ["*"], "failover_timeout": 120.0}
FID = "fw-0000"
S = SubscriptionState


def subscribed(interval: float | None = 15.0, fid: str = FID) -> Subscribed:
    return Subscribed(framework_id=fid, heartbeat_interval=interval, master_info={})  # type: ignore[arg-type]


def protocol(**kwargs: Any) -> SchedulerProtocol:
    return SchedulerProtocol(INFO, "127.0.0.1:5050", **kwargs)


def subscribed_protocol(now: float = 0.0, **kwargs: Any) -> SchedulerProtocol:
    p = protocol(**kwargs)
    p.start_subscribe(now)
    p.stream_opened("stream-1", now)
    p.receive_event(subscribed(), now)
    return p


class TestLifecycle:
    def test_happy_path(self) -> None:
        p = protocol()
        assert p.state is S.DISCONNECTED
        request = p.start_subscribe(0.0)
        assert request.url == "http://127.0.0.1:5050/api/v1/scheduler"
        body = json.loads(request.body)
        assert body == {"type": "SUBSCRIBE", "subscribe": {"framework_info": INFO}}
        assert p.state is S.SUBSCRIBING
        p.stream_opened("stream-1", 0.1)
        assert p.stream_id == "stream-1"
        p.receive_event(subscribed(), 0.2)
        assert p.state is S.SUBSCRIBED
        assert p.framework_id == FID
        assert p.heartbeat_interval == 15.0
        assert p.subscriptions == 1
        assert "SUBSCRIBED" in repr(p) and "stream-1" in repr(p)

    def test_calls_carry_framework_id(self) -> None:
        p = subscribed_protocol()
        assert json.loads(p.send(ReviveCall())) == {
            "type": "REVIVE",
            "framework_id": {"value": FID},
        }
        assert p.call_url() == "http://127.0.0.1:5050/api/v1/scheduler"

    def test_missing_stream_id_is_remote_error(self) -> None:
        p = protocol()
        p.start_subscribe(0.0)
        with pytest.raises(RemoteProtocolError, match="Mesos-Stream-Id"):
            p.stream_opened(None, 0.0)
        assert p.state is S.ERROR

    def test_stream_must_begin_with_subscribed(self) -> None:
        p = protocol()
        p.start_subscribe(0.0)
        p.stream_opened("s", 0.0)
        with pytest.raises(RemoteProtocolError, match="EVENT is not allowed in state SUBSCRIBING"):
            p.receive_event(Heartbeat(), 0.0)
        assert p.state is S.ERROR

    def test_second_subscribed_on_one_stream_is_remote_error(self) -> None:
        p = subscribed_protocol()
        with pytest.raises(RemoteProtocolError):
            p.receive_event(subscribed(), 1.0)

    def test_error_state_is_sticky(self) -> None:
        p = protocol()
        p.start_subscribe(0.0)
        with pytest.raises(RemoteProtocolError):
            p.stream_opened("", 0.0)
        for action in (
            lambda: p.start_subscribe(1.0),
            lambda: p.receive_event(Heartbeat(), 1.0),
            lambda: p.connection_lost(1.0),
        ):
            with pytest.raises(LocalProtocolError, match="failed earlier"):
                action()
        with pytest.raises(LocalProtocolError, match="ERROR"):
            p.call_policy(ReviveCall())
        assert p.error is not None

    def test_mesos_error_event_closes(self) -> None:
        p = protocol()
        p.start_subscribe(0.0)
        p.stream_opened("s", 0.0)
        p.receive_event(Error(message="not MULTI_ROLE capable"), 0.0)
        assert p.state is S.CLOSED
        assert p.stream_id is None
        assert p.connection_lost(1.0) == 0.0  # a closed stream is not retried
        assert p.state is S.CLOSED

    def test_close(self) -> None:
        p = subscribed_protocol()
        p.close()
        assert p.state is S.CLOSED
        p.receive_event(Heartbeat(), 1.0)  # in flight when we closed: ignored
        with pytest.raises(LocalProtocolError, match="CLOSED"):
            p.call_policy(KillCall(task_id="T"))  # type: ignore[arg-type]

    def test_given_framework_id_resubscribes(self) -> None:
        p = SchedulerProtocol({**INFO, "id": {"value": "old-fw"}}, "m:5050")
        body = json.loads(p.start_subscribe(0.0).body)
        assert body["framework_id"] == {"value": "old-fw"}
        assert body["subscribe"]["framework_info"]["id"] == {"value": "old-fw"}


class TestReconnection:
    def test_connection_lost_resubscribes_with_framework_id_and_new_stream(self) -> None:
        p = subscribed_protocol()
        delay = p.connection_lost(10.0)
        assert delay == 1.0
        assert p.state is S.DISCONNECTED
        assert p.stream_id is None
        body = json.loads(p.start_subscribe(11.0).body)
        assert body["framework_id"] == {"value": FID}
        assert body["subscribe"]["framework_info"]["id"] == {"value": FID}
        assert "Mesos-Stream-Id" not in body
        p.stream_opened("stream-2", 11.0)
        p.receive_event(subscribed(), 11.0)
        assert p.stream_id == "stream-2"
        assert p.subscriptions == 2

    def test_backoff_doubles_to_the_cap_and_resets(self) -> None:
        p = protocol(backoff_initial=0.5, backoff_max=3.0)
        delays = []
        for attempt in range(6):
            p.start_subscribe(float(attempt))
            delays.append(p.connection_lost(float(attempt)))
        assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
        p.start_subscribe(10.0)
        p.stream_opened("s", 10.0)
        p.receive_event(subscribed(), 10.0)
        assert p.connection_lost(20.0) == 0.5

    @pytest.mark.parametrize(
        ("attempt", "expected"), [(0, 0.0), (1, 1.0), (2, 2.0), (4, 8.0), (5, 15.0), (500, 15.0)]
    )
    def test_backoff_delay(self, attempt: int, expected: float) -> None:
        assert backoff_delay(attempt, initial=1.0, maximum=15.0) == expected

    def test_subscribe_5xx_is_transient(self) -> None:
        p = protocol()
        p.start_subscribe(0.0)
        assert p.subscribe_rejected(503, "No leader elected", 0.0) == 1.0
        assert p.state is S.DISCONNECTED

    def test_subscribe_4xx_is_fatal(self) -> None:
        p = protocol()
        p.start_subscribe(0.0)
        with pytest.raises(LocalProtocolError, match="rejected SUBSCRIBE with 400"):
            p.subscribe_rejected(400, "Expecting 'subscribe' to be present", 0.0)
        assert p.state is S.ERROR


class TestDeadlines:
    def test_heartbeat_deadline(self) -> None:
        p = subscribed_protocol(now=100.0, missed_heartbeats=5)
        assert p.deadline() == 100.0 + 75.0
        p.receive_event(Heartbeat(), 115.0)
        assert p.deadline() == 190.0
        assert not p.deadline_expired(189.9)
        assert p.deadline_expired(190.0)

    def test_any_event_counts_as_alive(self) -> None:
        p = subscribed_protocol(now=0.0, missed_heartbeats=2)
        p.receive_event(Offers(offers=()), 20.0)
        assert p.deadline() == 50.0

    def test_no_interval_no_deadline(self) -> None:
        p = protocol()
        p.start_subscribe(0.0)
        p.stream_opened("s", 0.0)
        p.receive_event(subscribed(interval=None), 0.0)
        assert p.deadline() is None
        assert not p.deadline_expired(1e9)

    def test_subscribing_deadline(self) -> None:
        p = protocol(subscribe_timeout=30.0)
        assert p.deadline() is None
        p.start_subscribe(5.0)
        assert p.deadline() == 35.0
        assert p.deadline_expired(35.0)


class TestRedirects:
    def test_follow_redirect(self) -> None:
        p = protocol()
        p.start_subscribe(0.0)
        request = p.redirected("//127.0.0.2:5050/api/v1/scheduler", 0.0)
        assert request.url == "http://127.0.0.2:5050/api/v1/scheduler"
        assert p.master == "http://127.0.0.2:5050"
        p.stream_opened("s", 0.0)
        p.receive_event(subscribed(), 0.0)
        assert p.call_url() == "http://127.0.0.2:5050/api/v1/scheduler"

    def test_each_attempt_starts_at_the_given_master(self) -> None:
        p = protocol()
        p.start_subscribe(0.0)
        p.redirected("//leader:5050/api/v1/scheduler", 0.0)
        p.connection_lost(1.0)
        assert p.start_subscribe(2.0).url == "http://127.0.0.1:5050/api/v1/scheduler"

    def test_loop_is_an_error(self) -> None:
        p = protocol()
        p.start_subscribe(0.0)
        p.redirected("//m2:5050/api/v1/scheduler", 0.0)
        with pytest.raises(
            RemoteProtocolError, match=r"redirect loop: .*5050 -> .*m2:5050 -> .*5050"
        ):
            p.redirected("//127.0.0.1:5050/api/v1/scheduler", 0.0)
        assert p.state is S.ERROR

    def test_self_redirect_is_a_loop(self) -> None:
        p = protocol()
        p.start_subscribe(0.0)
        with pytest.raises(RemoteProtocolError, match="loop"):
            p.redirected("//127.0.0.1:5050/api/v1/scheduler", 0.0)

    def test_too_many_redirects(self) -> None:
        p = protocol(max_redirects=2)
        p.start_subscribe(0.0)
        p.redirected("//m2:1", 0.0)
        p.redirected("//m3:1", 0.0)
        with pytest.raises(RemoteProtocolError, match="more than 2 master redirects"):
            p.redirected("//m4:1", 0.0)

    def test_redirect_after_subscribed_is_an_error(self) -> None:
        p = subscribed_protocol()
        with pytest.raises(RemoteProtocolError, match="REDIRECTED is not allowed"):
            p.redirected("//m2:5050", 0.0)

    @pytest.mark.parametrize(
        ("location", "expected"),
        [
            ("//m2:5050/api/v1/scheduler", "http://m2:5050"),
            ("m2:5050", "http://m2:5050"),
            ("http://m2:5050/api/v1/scheduler", "http://m2:5050"),
            ("https://m2:5050", "https://m2:5050"),
        ],
    )
    def test_resolve_redirect(self, location: str, expected: str) -> None:
        assert resolve_redirect("http://m1:5050", location) == expected

    def test_resolve_redirect_keeps_https(self) -> None:
        assert resolve_redirect("https://m1:5050", "//m2:5050/x") == "https://m2:5050"

    @pytest.mark.parametrize("location", ["", "//", "/api/v1/scheduler"])
    def test_redirect_without_host(self, location: str) -> None:
        with pytest.raises(RemoteProtocolError, match="without a host"):
            resolve_redirect("http://m1:5050", location)

    @pytest.mark.parametrize(
        ("master", "expected"),
        [
            ("127.0.0.1:5050", "http://127.0.0.1:5050"),
            ("localhost:5050", "http://localhost:5050"),
            ("http://m:5050/", "http://m:5050"),
            ("https://m:5050", "https://m:5050"),
        ],
    )
    def test_normalize_master(self, master: str, expected: str) -> None:
        assert normalize_master(master) == expected

    @pytest.mark.parametrize("master", ["", "ftp://m:1", ":5050"])
    def test_normalize_master_rejects(self, master: str) -> None:
        with pytest.raises(LocalProtocolError, match="not a Mesos master address"):
            normalize_master(master)


class TestCalls:
    @pytest.mark.parametrize(
        ("call", "policy"),
        [
            (AcceptCall(offer_ids=("O",), operations=()), CallPolicy.DROP),  # type: ignore[arg-type]
            (DeclineCall(offer_ids=("O",)), CallPolicy.DROP),  # type: ignore[arg-type]
            (AcknowledgeCall(agent_id="A", task_id="T", uuid="u"), CallPolicy.DROP),  # type: ignore[arg-type]
            (TeardownCall(), CallPolicy.DROP),
            (KillCall(task_id="T"), CallPolicy.DEFER),  # type: ignore[arg-type]
            (ReconcileCall(), CallPolicy.DEFER),
            (ReviveCall(), CallPolicy.DEFER),
            (SuppressCall(), CallPolicy.DEFER),
            (MessageCall(agent_id="A", executor_id="E", data=""), CallPolicy.DEFER),  # type: ignore[arg-type]
            (ShutdownCall(executor_id="E", agent_id="A"), CallPolicy.DEFER),  # type: ignore[arg-type]
        ],
    )
    def test_policy_while_disconnected(self, call: Any, policy: CallPolicy) -> None:
        p = protocol()
        assert p.call_policy(call) is policy
        p.start_subscribe(0.0)
        assert p.call_policy(call) is policy
        with pytest.raises(LocalProtocolError, match="SUBSCRIBING"):
            p.send(call)
        assert subscribed_protocol().call_policy(call) is CallPolicy.SEND

    @pytest.mark.parametrize(
        ("status", "outcome"),
        [
            (202, CallOutcome.ACCEPTED),
            (200, CallOutcome.ACCEPTED),
            (307, CallOutcome.RESUBSCRIBE),
            (403, CallOutcome.RESUBSCRIBE),
            (400, CallOutcome.REJECTED),
            (500, CallOutcome.REJECTED),
        ],
    )
    def test_classify_call_response(self, status: int, outcome: CallOutcome) -> None:
        assert classify_call_response(status) is outcome


class TestTransitionTable:
    @pytest.mark.parametrize("state", list(S))
    @pytest.mark.parametrize("inp", list(Input))
    def test_table_is_closed(self, state: S, inp: Input) -> None:
        new = TRANSITIONS.get((state, inp))
        assert new is None or new in S
        if state is S.ERROR:
            assert new is None  # nothing leaves ERROR

    def test_closed_and_error_are_terminal(self) -> None:
        for (state, _inp), new in TRANSITIONS.items():
            if state is S.CLOSED:
                assert new is S.CLOSED
