"""SchedulerDriver under load: acknowledgements on their own thread, stop() bounded at any load."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from toil_mesos.mesos import (
    HttpResponse,
    Scheduler,
    SchedulerDriver,
    ScriptedStream,
    ScriptedTransport,
    encode_record,
)
from toil_mesos.mesos._transport import BLOCK, RecordedRequest

FID = "fw-load"
AID = "agent-1"
INFO = {"user": "root", "name": "load", "roles": ["*"], "failover_timeout": 120.0}
WAIT = 5.0


def record(obj: dict[str, Any]) -> bytes:
    return encode_record(json.dumps(obj).encode())


def subscribed() -> bytes:
    return record({"type": "SUBSCRIBED", "subscribed": {
        "framework_id": {"value": FID}, "heartbeat_interval_seconds": 15.0,
        "master_info": {"id": "m", "ip": 1, "port": 5050}}})


def update(task: str) -> bytes:
    return record({"type": "UPDATE", "update": {"status": {
        "task_id": {"value": task}, "state": "TASK_RUNNING", "agent_id": {"value": AID},
        "uuid": "dQ==", "source": "SOURCE_EXECUTOR"}}})


def offers() -> bytes:
    return record({"type": "OFFERS", "offers": {"offers": [{
        "id": {"value": "O1"}, "framework_id": {"value": FID}, "agent_id": {"value": AID},
        "hostname": "h", "resources": []}]}})


def kind(request: RecordedRequest) -> str:
    return str(json.loads(request.body)["type"])


class Callbacks(Scheduler):
    def __init__(self) -> None:
        self.updates = 0
        self.offers = threading.Event()
        self.registered_ = threading.Event()
        self.block_updates = threading.Event()
        self.in_update = threading.Event()
        self.unblock = threading.Event()

    def registered(self, driver: Any, frameworkId: Any, masterInfo: Any) -> None:
        self.registered_.set()

    def statusUpdate(self, driver: Any, status: Any) -> None:
        self.updates += 1
        self.in_update.set()
        if self.block_updates.is_set():
            self.unblock.wait(60)  # a callback that does not return in time

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        self.offers.set()


def test_a_slow_acknowledgement_does_not_hold_up_the_next_callback() -> None:
    release = threading.Event()

    def answer(request: RecordedRequest) -> HttpResponse:
        if kind(request) == "ACKNOWLEDGE":
            release.wait(3 * WAIT)
        return HttpResponse(status=202)

    transport = ScriptedTransport([ScriptedStream([subscribed(), update("T1"), offers(), BLOCK],
                                                  headers={"Mesos-Stream-Id": "s"})], post=answer)
    callbacks = Callbacks()
    driver = SchedulerDriver(callbacks, INFO, "127.0.0.1:5050", transport=transport,
                             stop_timeout=WAIT)
    driver.start()
    try:
        # The ACK is still waiting for the master, yet the offers arrive at the scheduler.
        assert transport.wait_for(lambda requests: any(
            r.kind == "post" and kind(r) == "ACKNOWLEDGE" for r in requests), WAIT)
        assert callbacks.offers.wait(WAIT)
        assert not release.is_set()
        assert [kind(r) for r in transport.posts()] == ["ACKNOWLEDGE"]
    finally:
        release.set()
        driver.stop(failover=True)


def test_stop_skips_queued_callbacks_and_tears_down_at_once() -> None:
    """Thousands of updates queued behind a slow callback: stop() ends it all promptly."""
    many = [update(f"T{i}") for i in range(5000)]
    transport = ScriptedTransport([ScriptedStream([subscribed(), *many, BLOCK],
                                                  headers={"Mesos-Stream-Id": "s"})])
    callbacks = Callbacks()
    slow = Callbacks.statusUpdate

    def slow_update(self: Callbacks, driver: Any, status: Any) -> None:
        slow(self, driver, status)
        time.sleep(0.002)

    callbacks.statusUpdate = slow_update.__get__(callbacks)  # type: ignore[method-assign]
    driver = SchedulerDriver(callbacks, INFO, "127.0.0.1:5050", transport=transport,
                             stop_timeout=WAIT)
    driver.start()
    assert callbacks.in_update.wait(WAIT)
    started = time.monotonic()
    driver.stop()
    elapsed = time.monotonic() - started
    assert callbacks.updates < 5000  # the rest were never called back
    assert "TEARDOWN" in [kind(r) for r in transport.posts()]
    assert elapsed < WAIT


def test_stop_tears_down_from_the_callers_thread_when_a_callback_hangs() -> None:
    transport = ScriptedTransport([ScriptedStream([subscribed(), update("T1"), BLOCK],
                                                  headers={"Mesos-Stream-Id": "s"})])
    callbacks = Callbacks()
    callbacks.block_updates.set()
    driver = SchedulerDriver(callbacks, INFO, "127.0.0.1:5050", transport=transport,
                             stop_timeout=0.5)
    driver.start()
    assert callbacks.in_update.wait(WAIT)
    started = time.monotonic()
    try:
        driver.stop()
        assert time.monotonic() - started < WAIT
    finally:
        callbacks.unblock.set()
        driver.join(WAIT)
    (teardown,) = [r for r in transport.posts() if kind(r) == "TEARDOWN"]
    assert json.loads(teardown.body)["framework_id"] == {"value": FID}
    assert teardown.headers["Mesos-Stream-Id"] == "s"


class BatchRecordingTransport(ScriptedTransport):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[str]] = []

    def post_many(self, url: str, bodies: Any, headers: Any, *, timeout: float) -> list[int]:
        self.batches.append([json.loads(b)["type"] for b in bodies])
        return super().post_many(url, bodies, headers, timeout=timeout)


def test_an_offer_rounds_answers_go_out_together_in_order() -> None:
    transport = BatchRecordingTransport([ScriptedStream([subscribed(), offers(), BLOCK],
                                                        headers={"Mesos-Stream-Id": "s"})])

    class Answering(Callbacks):
        def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
            for n in range(3):
                driver.launchTasks({"value": f"O{n}"}, [{"name": "t", "task_id": {"value": "T"},
                                                         "agent_id": {"value": AID}}])
            driver.declineOffer(["O3", "O4"], {"refuse_seconds": 5.0})
            driver.reviveOffers()
            self.offers.set()

    callbacks = Answering()
    driver = SchedulerDriver(callbacks, INFO, "127.0.0.1:5050", transport=transport,
                             stop_timeout=WAIT)
    driver.start()
    try:
        assert callbacks.offers.wait(WAIT)
        assert transport.wait_for(
            lambda requests: any(b'"REVIVE"' in r.body for r in requests), WAIT)
    finally:
        driver.stop(failover=True)
    assert transport.batches == [["ACCEPT", "ACCEPT", "ACCEPT", "DECLINE"]]
    assert [kind(r) for r in transport.posts()] == ["ACCEPT", "ACCEPT", "ACCEPT", "DECLINE",
                                                    "REVIVE"]
