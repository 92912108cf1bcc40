"""SchedulerDriver across a master failover, with credentials, on a ScriptedTransport.

The scripts follow the ha/ and auth/ transcripts: the old leader's stream ends with a bare EOF,
a survivor redirects to the dead leader (scheme-relative ``Location``), the new leader accepts
the same framework id; a wrong secret gets 401 with realm ``mesos-master-scheduler``.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.unit.mesos.test_mesos_scheduler_driver import (
    FID,
    INFO,
    WAIT,
    FakeSleep,
    Recorder,
    posts_of,
    stream,
    stream_requests,
    subscribed_record,
)

from toil_mesos.errors import ConnectError
from toil_mesos.mesos import Credentials, DriverStatus, SchedulerDriver, ScriptedStream
from toil_mesos.mesos._scheduler_state import AuthenticationRefused
from toil_mesos.mesos._transport import BLOCK, ScriptedTransport

SECRET = "s3cret-for-tests"
# The header the auth/ transcript recorded for toil:s3cret-for-tests.
AUTHORIZATION = "Basic dG9pbDpzM2NyZXQtZm9yLXRlc3Rz"
CREDENTIALS = Credentials("toil", SECRET)


def _redirect_to(location: str) -> ScriptedStream:
    return ScriptedStream(status=307, headers={"Location": location, "Content-Length": "0"})


def test_failover_through_a_master_list(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ended = threading.Event()
    transport = ScriptedTransport(
        [
            # m1 leads, then dies: its stream ends with a bare EOF after SUBSCRIBED.
            stream(subscribed_record(), stream_id="s1"),
            ConnectError("m1 is dead"),
            # m2 still redirects to the dead leader until the election.
            _redirect_to("//localhost:5050/master/api/v1/scheduler"),
            ConnectError("localhost:5050 is dead"),
            # m3 now leads and accepts the same framework id.
            stream(subscribed_record(), BLOCK, stream_id="s3"),
        ]
    )
    recorder = Recorder()

    def while_disconnected(*_: Any) -> None:
        # Calls made while no master is known: the meaningful ones wait, offers do not.
        driver.reviveOffers()
        driver.killTask({"value": "t1"}, {"value": "a1"})
        driver.reconcileTasks([{"task_id": {"value": "t2"}, "agent_id": {"value": "a1"}}])
        driver.declineOffer({"value": "o1"})
        ended.set()

    recorder.on["disconnected"] = while_disconnected
    sleep = FakeSleep()
    driver = SchedulerDriver(
        recorder,
        {**INFO, "principal": "toil"},
        "127.0.0.1:5050,127.0.0.1:5052,http://127.0.0.1:5054",
        transport=transport,
        sleep=sleep,
        credentials=CREDENTIALS,
        stop_timeout=WAIT,
    )
    driver.start()
    recorder.wait_for(lambda names: "reregistered" in names)
    transport.wait_for(lambda rs: sum(b'"RECONCILE"' in r.body for r in rs) == 1, WAIT)
    assert driver.framework_id == FID
    assert driver.stop() is DriverStatus.DRIVER_STOPPED
    assert ended.is_set()

    urls = [r.url for r in stream_requests(transport)]
    assert urls == [
        "http://127.0.0.1:5050/api/v1/scheduler",
        "http://127.0.0.1:5050/api/v1/scheduler",
        "http://127.0.0.1:5052/api/v1/scheduler",
        "http://localhost:5050/api/v1/scheduler",
        "http://127.0.0.1:5054/api/v1/scheduler",
    ]
    # One backoff after the loss; the other masters of the list are tried without waiting.
    assert sleep.delays == [1.0]
    # Every re-SUBSCRIBE asks for the same framework, top level and in framework_info.
    for request in stream_requests(transport)[1:]:
        body = json.loads(request.body)
        assert body["framework_id"] == {"value": FID}
        assert body["subscribe"]["framework_info"]["id"] == {"value": FID}
        assert body["subscribe"]["framework_info"]["principal"] == "toil"
    assert recorder.names().count("registered") == 1
    assert recorder.names().count("disconnected") == 1
    # The waiting calls went to the new leader with its stream id; the DECLINE did not.
    for kind in ("REVIVE", "KILL", "RECONCILE"):
        (sent,) = posts_of(transport, kind)
        assert sent.url == "http://127.0.0.1:5054/api/v1/scheduler"
        assert sent.headers["Mesos-Stream-Id"] == "s3"
    assert posts_of(transport, "DECLINE") == []
    # Credentials on every request, the secret in no log line or repr.
    assert transport.requests
    assert all(r.headers.get("Authorization") == AUTHORIZATION for r in transport.requests)
    assert SECRET not in caplog.text
    assert SECRET not in repr(driver) and SECRET not in repr(CREDENTIALS)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_fatal(
    status: int, transcripts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorded = (transcripts / "auth/calls/02_SUBSCRIBE_wrong_secret.response.http").read_bytes()
    body = recorded.split(b"\r\n\r\n", 1)[1]
    assert body == b"401 Unauthorized."
    refused = ScriptedStream(
        [body],
        status=status,
        headers={"WWW-Authenticate": 'Basic realm="mesos-master-scheduler"'},
    )
    transport = ScriptedTransport([refused, stream(subscribed_record(), BLOCK)])
    recorder = Recorder()
    sleep = FakeSleep()
    driver = SchedulerDriver(
        recorder, INFO, "127.0.0.1:5060", transport=transport, sleep=sleep,
        credentials=Credentials("toil", "wrong-secret"), stop_timeout=WAIT,
    )
    driver.start()
    with pytest.raises(AuthenticationRefused) as caught:
        driver.join(WAIT)
    message = str(caught.value)
    assert f"{status} '401 Unauthorized.'" in message
    assert "--mesosPrincipal" in message and "--mesosSecretFile" in message
    assert "127.0.0.1:5060" in message
    assert "wrong-secret" not in message and "wrong-secret" not in caplog.text
    assert driver.status is DriverStatus.DRIVER_ABORTED
    assert len(stream_requests(transport)) == 1  # never retried
    assert sleep.delays == []
    assert "registered" not in recorder.names()


class FakeDetector:
    """A detector the test drives: it names *leader* and reports changes when told."""

    def __init__(self, leader: str | None) -> None:
        self.leader = leader
        self.callback: Any = None
        self.closed = False

    def start(self, on_change: Any) -> None:
        self.callback = on_change

    def next_master(self) -> str | None:
        return self.leader

    def round_done(self) -> bool:
        return True

    def succeeded(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def elect(self, leader: str | None) -> None:
        self.leader = leader
        self.callback(leader)


def test_detector_moves_the_driver_to_the_new_leader() -> None:
    first = stream(subscribed_record(), BLOCK, stream_id="s1")
    transport = ScriptedTransport([first, stream(subscribed_record(), BLOCK, stream_id="s2")])
    recorder = Recorder()
    detector = FakeDetector(None)  # no leader elected yet
    driver = SchedulerDriver(
        recorder, INFO, "zk://127.0.0.1:2181/mesos", transport=transport,
        sleep=FakeSleep(), detector=detector, stop_timeout=WAIT,
    )
    driver.start()
    transport.wait_for(lambda rs: False, 0.3)
    assert stream_requests(transport) == []  # nothing to subscribe to
    detector.elect("http://127.0.0.1:5050")
    recorder.wait_for(lambda names: "registered" in names)
    detector.elect("http://127.0.0.1:5052")
    recorder.wait_for(lambda names: "reregistered" in names)
    assert first.aborted
    assert [r.url for r in stream_requests(transport)] == [
        "http://127.0.0.1:5050/api/v1/scheduler",
        "http://127.0.0.1:5052/api/v1/scheduler",
    ]
    driver.reviveOffers()
    transport.wait_for(lambda rs: any(b'"REVIVE"' in r.body for r in rs), WAIT)
    assert posts_of(transport, "REVIVE")[0].url == "http://127.0.0.1:5052/api/v1/scheduler"
    assert driver.stop() is DriverStatus.DRIVER_STOPPED
    assert detector.closed


def test_same_leader_news_changes_nothing() -> None:
    transport = ScriptedTransport([stream(subscribed_record(), BLOCK)])
    recorder = Recorder()
    detector = FakeDetector("http://127.0.0.1:5050")
    driver = SchedulerDriver(
        recorder, INFO, "zk://z/mesos", transport=transport, sleep=FakeSleep(),
        detector=detector, stop_timeout=WAIT,
    )
    driver.start()
    recorder.wait_for(lambda names: "registered" in names)
    detector.elect("127.0.0.1:5050")
    detector.elect(None)  # the election in progress: keep the master we have
    driver.reviveOffers()
    transport.wait_for(lambda rs: any(b'"REVIVE"' in r.body for r in rs), WAIT)
    assert len(stream_requests(transport)) == 1
    assert "disconnected" not in recorder.names()
    driver.stop()
