"""SchedulerDriver on a ScriptedTransport: threads are real but every wait is bounded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from toil_mesos.errors import ConnectError, LocalProtocolError, RemoteProtocolError
from toil_mesos.mesos import (
    DriverStatus,
    HttpResponse,
    Scheduler,
    SchedulerDriver,
    ScriptedStream,
    ScriptedTransport,
    SubscriptionState,
    encode_record,
)
from toil_mesos.mesos._transport import BLOCK, RecordedRequest

FID = "42f618ee-43f9-4ca8-88a7-31221df616de-0000"
AID = "42f618ee-43f9-4ca8-88a7-31221df616de-S0"
STREAM_ID = "e092d23b-9c0f-41ed-bff9-ed04ea52dfaa"
INFO = {"user": "root", "name": "transcript-fw1", "roles": ["*"], "failover_timeout": 120.0}
WAIT = 5.0


def record(obj: dict[str, Any]) -> bytes:
    return encode_record(json.dumps(obj).encode())


def subscribed_record(interval: float = 15.0, fid: str = FID) -> bytes:
    return record(
        {
            "type": "SUBSCRIBED",
            "subscribed": {
                "framework_id": {"value": fid},
                "heartbeat_interval_seconds": interval,
                "master_info": {"id": "m", "ip": 1, "port": 5050},
            },
        }
    )


def stream(*steps: Any, stream_id: str = "stream-2", **kwargs: Any) -> ScriptedStream:
    return ScriptedStream(list(steps), headers={"Mesos-Stream-Id": stream_id}, **kwargs)


class Recorder(Scheduler):
    """Records every callback as (name, args) and lets tests wait for a condition."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._cond = threading.Condition()
        self.on: dict[str, Callable[..., None]] = {}

    def _add(self, name: str, *args: Any) -> None:
        with self._cond:
            self.calls.append((name, args))
            self._cond.notify_all()
        if name in self.on:
            self.on[name](*args)

    def names(self) -> list[str]:
        with self._cond:
            return [name for name, _ in self.calls]

    def args(self, name: str) -> list[tuple[Any, ...]]:
        with self._cond:
            return [args for n, args in self.calls if n == name]

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = WAIT) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate([n for n, _ in self.calls]), timeout)
        assert ok, f"callbacks so far: {self.names()}"

    def registered(self, driver: Any, frameworkId: Any, masterInfo: Any) -> None:
        self._add("registered", frameworkId, masterInfo)

    def reregistered(self, driver: Any, masterInfo: Any) -> None:
        self._add("reregistered", masterInfo)

    def disconnected(self, driver: Any) -> None:
        self._add("disconnected")

    def processHeartBeat(self, driver: Any) -> None:
        self._add("heartbeat")

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        self._add("resourceOffers", offers)

    def offerRescinded(self, driver: Any, offerId: Any) -> None:
        self._add("offerRescinded", offerId)

    def inverseOffers(self, driver: Any, offers: list[Any]) -> None:
        self._add("inverseOffers", offers)

    def inverseOfferRescinded(self, driver: Any, offerId: Any) -> None:
        self._add("inverseOfferRescinded", offerId)

    def operationStatusUpdate(self, driver: Any, status: Any) -> None:
        self._add("operationStatusUpdate", status)

    def statusUpdate(self, driver: Any, status: Any) -> None:
        self._add("statusUpdate", status)

    def frameworkMessage(self, driver: Any, executorId: Any, agentId: Any, message: str) -> None:
        self._add("frameworkMessage", executorId, agentId, message)

    def agentLost(self, driver: Any, agentId: Any) -> None:
        self._add("agentLost", agentId)

    def executorLost(self, driver: Any, executorId: Any, agentId: Any, status: int | None) -> None:
        self._add("executorLost", executorId, agentId, status)

    def error(self, driver: Any, message: str) -> None:
        self._add("error", message)


class FakeSleep:
    """Backoff sleep that records and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_driver(
    transport: ScriptedTransport, recorder: Recorder, **kwargs: Any
) -> tuple[SchedulerDriver, FakeSleep]:
    sleep = FakeSleep()
    kwargs.setdefault("stop_timeout", WAIT)
    driver = SchedulerDriver(
        recorder, INFO, "127.0.0.1:5050", transport=transport, sleep=sleep, **kwargs
    )
    return driver, sleep


def posts_of(transport: ScriptedTransport, kind: str) -> list[RecordedRequest]:
    return [r for r in transport.posts() if json.loads(r.body)["type"] == kind]


def stream_requests(transport: ScriptedTransport) -> list[RecordedRequest]:
    return [r for r in transport.requests if r.kind == "stream"]


@pytest.fixture
def fw1_stream(stream_body: Callable[[str], tuple[bytes, bool]]) -> ScriptedStream:
    body, _ = stream_body("scheduler/fw1_main")
    # Odd-sized reads: record boundaries never line up with read boundaries.
    chunks = [body[i : i + 997] for i in range(0, len(body), 997)]
    return ScriptedStream(chunks, headers={"Mesos-Stream-Id": STREAM_ID})


class TestReplayFw1:
    def test_callbacks_acks_and_resubscribe(
        self,
        fw1_stream: ScriptedStream,
        request_body: Callable[[str], bytes],
    ) -> None:
        transport = ScriptedTransport([fw1_stream, stream(subscribed_record(), BLOCK)])
        recorder = Recorder()
        driver, sleep = make_driver(transport, recorder)
        assert driver.start() is DriverStatus.DRIVER_RUNNING
        recorder.wait_for(lambda names: "reregistered" in names)

        names = recorder.names()
        assert names.count("registered") == 1
        assert recorder.args("registered")[0][0] == {"value": FID}
        assert names.count("resourceOffers") == 15
        assert names.count("statusUpdate") == 39
        assert names.count("heartbeat") == 4
        (message,) = recorder.args("frameworkMessage")
        assert message == ({"value": "E1"}, {"value": AID}, "cG9uZzogcGluZyBmcm9tIHNjaGVkdWxlcg==")
        (lost,) = recorder.args("executorLost")
        assert lost == ({"value": "E5"}, {"value": AID}, 35072)
        # The recorded stream ends with the last-chunk (after TEARDOWN): a disconnection.
        assert names.index("disconnected") < names.index("reregistered")
        assert sleep.delays == [1.0]

        # Implicit acknowledgements: only for updates with a uuid, each with the stream id.
        # They go out on their own thread, so they may trail the callbacks a little.
        transport.wait_for(
            lambda requests: sum(b'"ACKNOWLEDGE"' in r.body for r in requests) >= 32, WAIT
        )
        acks = posts_of(transport, "ACKNOWLEDGE")
        with_uuid = [s for (s,) in recorder.args("statusUpdate") if "uuid" in s]
        assert len(acks) == len(with_uuid) == 32  # T12 STARTING came 3 times
        assert all(a.headers["Mesos-Stream-Id"] == STREAM_ID for a in acks)
        assert acks[0].body == request_body(
            "scheduler/fw1_main/calls/17_ACKNOWLEDGE_TASK_STARTING_T1.request.http"
        )
        assert acks[0].url == "http://127.0.0.1:5050/api/v1/scheduler"

        # Re-subscription: new connection, framework id, no stream id header.
        first, second = stream_requests(transport)
        assert "Mesos-Stream-Id" not in first.headers
        assert "Mesos-Stream-Id" not in second.headers
        resub = json.loads(second.body)
        assert resub["framework_id"] == {"value": FID}
        assert resub["subscribe"]["framework_info"]["id"] == {"value": FID}

        assert driver.stop() is DriverStatus.DRIVER_STOPPED
        (teardown,) = posts_of(transport, "TEARDOWN")
        assert teardown.headers["Mesos-Stream-Id"] == "stream-2"
        assert teardown.body == request_body("scheduler/fw1_main/calls/65_TEARDOWN.request.http")
        assert driver.join(0) == "DRIVER_STOPPED"


def subscribed_driver(
    *extra_steps: Any, post: Any = None, **kwargs: Any
) -> tuple[SchedulerDriver, ScriptedTransport, Recorder, FakeSleep]:
    transport = ScriptedTransport([stream(subscribed_record(), *extra_steps, BLOCK)], post=post)
    recorder = Recorder()
    driver, sleep = make_driver(transport, recorder, **kwargs)
    driver.start()
    recorder.wait_for(lambda names: "registered" in names)
    return driver, transport, recorder, sleep


class TestCalls:
    def test_every_call_in_order_with_stream_id(self) -> None:
        driver, transport, _, _ = subscribed_driver(implicit_acknowledgements=False)
        offer = {"value": "O1"}
        task = {"name": "t", "task_id": {"value": "T1"}, "agent_id": {"value": AID}}
        driver.launchTasks(offer, [task], filters={"refuse_seconds": 1.0})
        driver.declineOffer([offer, "O2"], {"refuse_seconds": 3600.0})
        driver.reviveOffers()
        driver.suppressOffers()
        driver.killTask({"value": "T1"}, {"value": AID})
        driver.acknowledgeStatusUpdate(
            {"task_id": {"value": "T1"}, "agent_id": {"value": AID}, "uuid": "dQ=="}
        )
        driver.acknowledgeStatusUpdate({"task_id": {"value": "T1"}, "agent_id": {"value": AID}})
        driver.reconcileTasks([{"task_id": {"value": "T1"}}])
        driver.frameworkMessage({"value": "E1"}, {"value": AID}, "aGk=")
        driver.shutdownExecutor("E1", AID)
        driver.stop(failover=True)
        bodies = [json.loads(r.body) for r in transport.posts()]
        assert [b["type"] for b in bodies] == [
            "ACCEPT",
            "DECLINE",
            "REVIVE",
            "SUPPRESS",
            "KILL",
            "ACKNOWLEDGE",
            "RECONCILE",
            "MESSAGE",
            "SHUTDOWN",
        ]  # no ACKNOWLEDGE for the update without uuid; no TEARDOWN with failover
        assert all(r.headers["Mesos-Stream-Id"] == "stream-2" for r in transport.posts())
        assert all(b["framework_id"] == {"value": FID} for b in bodies)
        assert bodies[0]["accept"] == {
            "offer_ids": [offer],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
            "filters": {"refuse_seconds": 1.0},
        }
        assert bodies[1]["decline"]["offer_ids"] == [offer, {"value": "O2"}]
        assert bodies[4]["kill"] == {"task_id": {"value": "T1"}, "agent_id": {"value": AID}}
        assert bodies[6]["reconcile"] == {"tasks": [{"task_id": {"value": "T1"}}]}

    def test_calls_before_subscription_are_deferred_or_dropped(self) -> None:
        gate = threading.Event()
        transport = ScriptedTransport(
            [stream(lambda: gate.wait(WAIT) and None, subscribed_record(), BLOCK)]
        )
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder)
        driver.start()
        driver.killTask("T9")
        driver.declineOffer("O1")
        driver.reconcileTasks([])
        gate.set()
        recorder.wait_for(lambda names: "registered" in names)
        assert transport.wait_for(lambda reqs: sum(r.kind == "post" for r in reqs) >= 2, WAIT)
        driver.stop(failover=True)
        assert [json.loads(r.body)["type"] for r in transport.posts()] == ["KILL", "RECONCILE"]

    def test_call_answered_403_resubscribes(self) -> None:
        def post(request: RecordedRequest) -> HttpResponse:
            if json.loads(request.body)["type"] == "REVIVE":
                return HttpResponse(status=403, body=b"Framework is not subscribed")
            return HttpResponse(status=202)

        transport = ScriptedTransport(
            [
                stream(subscribed_record(), BLOCK),
                stream(subscribed_record(), BLOCK, stream_id="s3"),
            ],
            post=post,
        )
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder)
        driver.start()
        recorder.wait_for(lambda names: "registered" in names)
        driver.reviveOffers()
        recorder.wait_for(lambda names: "reregistered" in names)
        assert driver.stop() is DriverStatus.DRIVER_STOPPED
        assert posts_of(transport, "TEARDOWN")[0].headers["Mesos-Stream-Id"] == "s3"

    def test_rejected_call_is_logged_not_fatal(self, caplog: pytest.LogCaptureFixture) -> None:
        post = lambda request: HttpResponse(status=400, body=b"Failed to validate")  # noqa: E731
        driver, _, _, _ = subscribed_driver(post=post)
        driver.reviveOffers()
        driver.stop(failover=True)
        assert "Failed to validate" in caplog.text
        assert driver.status is DriverStatus.DRIVER_STOPPED

    def test_calls_before_start_are_refused(self) -> None:
        driver, _ = make_driver(ScriptedTransport(), Recorder())
        with pytest.raises(LocalProtocolError, match="start"):
            driver.reviveOffers()
        assert driver.stop() is DriverStatus.DRIVER_STOPPED

    def test_start_twice(self) -> None:
        driver, _, _, _ = subscribed_driver()
        with pytest.raises(LocalProtocolError, match="already started"):
            driver.start()
        driver.stop()


class TestRedirects:
    def test_follow_307_to_leader(self) -> None:
        redirect = ScriptedStream(
            [b"Redirecting"], status=307, headers={"Location": "//127.0.0.9:5050/api/v1/scheduler"}
        )
        transport = ScriptedTransport([redirect, stream(subscribed_record(), BLOCK)])
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder)
        driver.start()
        recorder.wait_for(lambda names: "registered" in names)
        driver.reviveOffers()
        driver.stop()
        urls = [r.url for r in transport.requests]
        assert urls[0] == "http://127.0.0.1:5050/api/v1/scheduler"
        assert set(urls[1:]) == {"http://127.0.0.9:5050/api/v1/scheduler"}
        assert redirect.closed

    def test_redirect_loop_is_fatal(self) -> None:
        transport = ScriptedTransport(
            [
                ScriptedStream(status=307, headers={"Location": "//m2:5050/api/v1/scheduler"}),
                ScriptedStream(
                    status=307, headers={"Location": "//127.0.0.1:5050/api/v1/scheduler"}
                ),
            ]
        )
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder)
        driver.start()
        with pytest.raises(RemoteProtocolError, match="redirect loop"):
            driver.join(WAIT)
        assert driver.status is DriverStatus.DRIVER_ABORTED
        assert "redirect loop" in recorder.args("error")[0][0]
        with pytest.raises(RemoteProtocolError, match="redirect loop"):
            driver.reviveOffers()  # the failure is not lost: every later call re-raises it


class TestDisconnections:
    def test_missed_heartbeats_resubscribe(self) -> None:
        transport = ScriptedTransport(
            [
                stream(subscribed_record(interval=0.05), BLOCK, stream_id="s1"),
                stream(subscribed_record(), BLOCK, stream_id="s2"),
            ]
        )
        recorder = Recorder()
        driver, sleep = make_driver(transport, recorder, missed_heartbeats=2)
        driver.start()
        recorder.wait_for(lambda names: "reregistered" in names)
        assert recorder.names() == ["registered", "disconnected", "reregistered"]
        assert transport.opened[0].aborted  # the silent stream was dropped
        assert sleep.delays == [1.0]
        assert json.loads(stream_requests(transport)[1].body)["framework_id"] == {"value": FID}
        assert driver.subscription_state is SubscriptionState.SUBSCRIBED
        driver.stop()

    def test_backoff_grows_while_master_is_down(self) -> None:
        down = ConnectError("connection refused")
        transport = ScriptedTransport([down, down, down, down, stream(subscribed_record(), BLOCK)])
        recorder = Recorder()
        driver, sleep = make_driver(transport, recorder, backoff_initial=0.5, backoff_max=2.0)
        driver.start()
        recorder.wait_for(lambda names: "registered" in names)
        assert sleep.delays == [0.5, 1.0, 2.0, 2.0]
        assert "disconnected" not in recorder.names()  # never subscribed, nothing to report
        driver.stop()

    def test_subscribe_503_retries(self) -> None:
        transport = ScriptedTransport(
            [ScriptedStream([b"No leader elected"], status=503), stream(subscribed_record(), BLOCK)]
        )
        recorder = Recorder()
        driver, sleep = make_driver(transport, recorder)
        driver.start()
        recorder.wait_for(lambda names: "registered" in names)
        assert sleep.delays == [1.0]
        driver.stop()

    def test_subscribe_400_is_fatal(self) -> None:
        transport = ScriptedTransport(
            [ScriptedStream([b"Expecting 'subscribe' to be present"], status=400)]
        )
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder)
        driver.start()
        with pytest.raises(LocalProtocolError, match="rejected SUBSCRIBE with 400"):
            driver.join(WAIT)

    @pytest.mark.parametrize(
        "garbage",
        [
            pytest.param(encode_record(b"<html>oops</html>"), id="non-json"),
            pytest.param(b'12\n{"type":', id="truncated"),
            pytest.param(b"x\n{}", id="bad-prefix"),
        ],
    )
    def test_garbage_drops_the_connection_and_resubscribes(self, garbage: bytes) -> None:
        transport = ScriptedTransport(
            [stream(subscribed_record(), garbage), stream(subscribed_record(), BLOCK)]
        )
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder)
        driver.start()
        recorder.wait_for(lambda names: "reregistered" in names)
        assert recorder.names() == ["registered", "disconnected", "reregistered"]
        driver.stop()

    def test_unknown_event_is_ignored(self, caplog: pytest.LogCaptureFixture) -> None:
        driver, _, recorder, _ = subscribed_driver(
            record({"type": "BRAND_NEW"}), record({"type": "HEARTBEAT"})
        )
        recorder.wait_for(lambda names: "heartbeat" in names)
        assert "BRAND_NEW" in caplog.text
        assert "disconnected" not in recorder.names()
        driver.stop()

    def test_mesos_error_event_aborts(self) -> None:
        message = (
            "'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE capable"
        )
        transport = ScriptedTransport(
            [stream(record({"type": "ERROR", "error": {"message": message}}))]
        )
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder)
        driver.start()
        assert driver.join(WAIT) is DriverStatus.DRIVER_ABORTED
        assert recorder.args("error") == [(message,)]
        assert len(stream_requests(transport)) == 1  # no re-subscription after ERROR


class TestEvents:
    def test_rescind_and_agent_lost(self) -> None:
        driver, _, recorder, _ = subscribed_driver(
            record({"type": "RESCIND", "rescind": {"offer_id": {"value": "O1"}}}),
            record({"type": "FAILURE", "failure": {"agent_id": {"value": "S9"}}}),
            record({"type": "OFFERS", "offers": {"offers": []}}),
        )
        recorder.wait_for(lambda names: "agentLost" in names)
        assert recorder.args("offerRescinded") == [({"value": "O1"},)]
        assert recorder.args("agentLost") == [({"value": "S9"},)]
        assert "resourceOffers" not in recorder.names()  # empty offer lists are not delivered
        driver.stop()


class TestStopAndFailures:
    def test_stop_is_bounded_and_ends_threads(self) -> None:
        driver, transport, _, _ = subscribed_driver()
        started = time.monotonic()
        assert driver.stop() is DriverStatus.DRIVER_STOPPED
        assert time.monotonic() - started < WAIT
        assert transport.opened[0].aborted
        assert not [t for t in threading.enumerate() if t.name.startswith("mesos-scheduler")]
        with pytest.raises(LocalProtocolError, match="ended"):
            driver.reviveOffers()

    def test_stop_from_a_callback(self) -> None:
        transport = ScriptedTransport([stream(subscribed_record(), BLOCK)])
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder)
        recorder.on["registered"] = lambda *args: driver.stop()
        driver.start()
        assert driver.join(WAIT) is DriverStatus.DRIVER_STOPPED
        assert [json.loads(r.body)["type"] for r in transport.posts()] == ["TEARDOWN"]

    def test_stop_during_backoff(self) -> None:
        transport = ScriptedTransport([ConnectError("refused")] * 3)
        driver = SchedulerDriver(
            Recorder(), INFO, "127.0.0.1:5050", transport=transport, stop_timeout=WAIT
        )
        driver.start()
        assert transport.wait_for(lambda reqs: len(reqs) >= 1, WAIT)
        started = time.monotonic()
        assert driver.stop() is DriverStatus.DRIVER_STOPPED  # real, interruptible sleep
        assert time.monotonic() - started < WAIT

    def test_callback_failure_is_reraised(self) -> None:
        transport = ScriptedTransport([stream(subscribed_record(), BLOCK)])
        recorder = Recorder()

        def explode(*args: Any) -> None:
            raise ValueError("bug in resourceOffers")

        recorder.on["registered"] = explode
        driver, _ = make_driver(transport, recorder)
        driver.start()
        with pytest.raises(ValueError, match="bug in resourceOffers"):
            driver.join(WAIT)
        with pytest.raises(ValueError, match="bug in resourceOffers"):
            driver.declineOffer("O1")
        assert driver.status is DriverStatus.DRIVER_ABORTED
        assert transport.opened[0].aborted

    def test_repr_shows_state(self) -> None:
        driver, _, _, _ = subscribed_driver()
        assert "SUBSCRIBED" in repr(driver)
        assert driver.framework_id == FID
        driver.stop()


class TestTeardown:
    def test_teardown_call_ends_the_driver_without_resubscribing(self) -> None:
        gate = threading.Event()
        transport = ScriptedTransport(
            [stream(subscribed_record(), lambda: gate.wait(WAIT) and None)]  # then EOF
        )
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder)
        driver.start()
        recorder.wait_for(lambda names: "registered" in names)
        driver.teardown()
        driver.declineOffer("O1")  # after TEARDOWN: dropped, not a crash
        assert transport.wait_for(lambda reqs: any(r.kind == "post" for r in reqs), WAIT)
        gate.set()  # the master ends the stream of a torn-down framework
        assert driver.join(WAIT) is DriverStatus.DRIVER_STOPPED
        assert [json.loads(r.body)["type"] for r in transport.posts()] == ["TEARDOWN"]
        assert "disconnected" not in recorder.names()
        assert len(stream_requests(transport)) == 1


class TestSlowCallbacks:
    def test_slow_callback_is_not_a_dead_master(self) -> None:
        """Heartbeats that arrive while a callback runs count from their arrival."""
        tick = threading.Event()
        heartbeat = record({"type": "HEARTBEAT"})

        def later() -> bytes:
            tick.wait(0.05)  # the master's pace: a heartbeat every 50 ms
            return heartbeat

        offers = record({"type": "OFFERS", "offers": {"offers": [{"id": {"value": "O1"}}]}})
        transport = ScriptedTransport(
            [stream(subscribed_record(interval=0.05), offers, *([later] * 30), BLOCK)]
        )
        recorder = Recorder()
        # 6 x 50 ms = 300 ms without events means a dead master; the callback takes 600 ms.
        recorder.on["resourceOffers"] = lambda offers: tick.wait(0.6)
        driver, _ = make_driver(transport, recorder, missed_heartbeats=6)
        driver.start()
        recorder.wait_for(lambda names: names.count("heartbeat") >= 20)
        driver.stop(failover=True)
        assert "disconnected" not in recorder.names()


def test_maintenance_and_operation_events_reach_their_callbacks() -> None:
    driver, _, recorder, _ = subscribed_driver(
        record(
            {
                "type": "INVERSE_OFFERS",
                "inverse_offers": {"inverse_offers": [{"id": {"value": "I1"}}]},
            }
        ),
        record(
            {
                "type": "RESCIND_INVERSE_OFFER",
                "rescind_inverse_offer": {"inverse_offer_id": {"value": "I1"}},
            }
        ),
        record(
            {
                "type": "UPDATE_OPERATION_STATUS",
                "update_operation_status": {"status": {"state": "OPERATION_FINISHED"}},
            }
        ),
    )
    recorder.wait_for(lambda names: "operationStatusUpdate" in names)
    driver.stop(failover=True)
    ((inverse,),) = recorder.args("inverseOffers")
    assert inverse[0].id.value == "I1"
    assert recorder.args("inverseOfferRescinded") == [({"value": "I1"},)]
    assert recorder.args("operationStatusUpdate")[0][0].state == "OPERATION_FINISHED"
