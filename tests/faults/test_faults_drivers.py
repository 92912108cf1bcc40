"""The drivers against a hostile peer: garbage on the wire, odd events, silence, redirect loops.

A small HTTP peer on loopback (:class:`HostilePeer`) answers each SUBSCRIBE with whatever a
test scripts, byte for byte: a stream that turns to garbage, a record cut short, events no
Mesos sends, a master that stops heartbeating while it keeps the connection busy, redirects
that never reach a leader. The real :class:`SchedulerDriver` (in this process, over httpx) and
the real executor (``toil-mesos executor``, its own process) must end each case with a clear
error or a reconnection, within a bounded time, and never take their process down.

``tests/unit/mesos`` feeds the same garbage to the parsers without sockets, and
``tests/integration/mesos`` replays recorded Mesos traffic (including a two-master redirect
loop and a silent master); the cases here are the ones only a live hostile peer shows.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import VENV_BIN

from toil_mesos.errors import LocalProtocolError, RemoteProtocolError
from toil_mesos.mesos import DriverStatus, Scheduler, SchedulerDriver, encode_record

pytestmark = pytest.mark.integration

FID = "hostile-framework-0001"
INFO = {"user": "root", "name": "hostile-test", "roles": ["*"], "failover_timeout": 60.0}
#: Every wait is bounded by this; it catches hangs, not slowness.
WAIT = 30.0
#: The peer's masters heartbeat every ``HEARTBEAT / 2`` seconds.
HEARTBEAT = 0.2
#: The interval they announce: the driver gives up after 5 intervals of silence, 20 s, so a
#: test process stalled for a second on a busy machine is not taken for a silent master.
#: (``trickle`` announces ``HEARTBEAT`` itself: its silence is meant to be caught in 1 s.)
ANNOUNCED_HEARTBEAT = 4.0

# ---- the hostile peer -------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def type(self) -> str:
        try:
            return str(json.loads(self.body).get("type", ""))
        except ValueError:
            return ""


#: Answers one request on ``conn``; returns whether to read another request from it.
Answer = Callable[["HostilePeer", Request, socket.socket], bool]


class HostilePeer:
    """A loopback HTTP/1.1 peer whose answers are scripted byte for byte; bounded everywhere."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(0.1)
        self._closing = threading.Event()
        self._cond = threading.Condition()
        self.requests: list[Request] = []
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="hostile-peer", daemon=True)
        self._acceptor.start()

    @property
    def address(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"{host}:{port}"

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(WAIT)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._cond:
                self._conns.append(conn)
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = bytearray()
        # Closed however the answer ends (an answer's "close" is this); "hold" holds it first.
        with contextlib.closing(conn), contextlib.suppress(OSError):
            while not self._closing.is_set():
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, v in
                           (line.split(":", 1) for line in lines[1:])}
                length = int(headers.get("content-length", "0"))
                while len(rest) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    rest += chunk
                buffer = bytearray(rest[length:])
                request = Request(method, path, headers, rest[:length])
                with self._cond:
                    self.requests.append(request)
                    self._cond.notify_all()
                if not self._answer(self, request, conn):
                    return

    def hold(self, seconds: float = WAIT) -> bool:
        """Keep a connection as it is until the test ends (True) or *seconds* pass."""
        return self._closing.wait(seconds)

    def of_type(self, kind: str) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.type == kind]

    def wait_for(self, predicate: Callable[[HostilePeer], bool], timeout: float = WAIT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        self._acceptor.join(WAIT)
        with self._cond:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in threads:
            thread.join(WAIT)
        assert not any(t.is_alive() for t in threads), "a peer connection thread is stuck"


@pytest.fixture
def peers() -> Iterator[Callable[[Answer], HostilePeer]]:
    started: list[HostilePeer] = []

    def start(answer: Answer) -> HostilePeer:
        peer = HostilePeer(answer)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.close()


# ---- what the peer says -----------------------------------------------------------------------

ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def stream_head(stream_id: str | None = "stream-1") -> bytes:
    extra = f"Mesos-Stream-Id: {stream_id}\r\n" if stream_id else ""
    return ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"{extra}Transfer-Encoding: chunked\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def record(event: dict[str, Any] | bytes) -> bytes:
    return chunk(encode_record(event if isinstance(event, bytes) else json.dumps(event).encode()))


def subscribed(interval: float | str | None = ANNOUNCED_HEARTBEAT) -> bytes:
    body = {"framework_id": {"value": FID}}
    text = json.dumps({"type": "SUBSCRIBED", "subscribed": body})
    if interval is not None:  # written by hand: JSON has no NaN, but a peer may send one
        text = text[:-2] + f', "heartbeat_interval_seconds": {interval}}}}}'
    return record(text.encode())


def offer(offer_id: str) -> dict[str, Any]:
    return {"id": {"value": offer_id}, "framework_id": {"value": FID},
            "agent_id": {"value": "agent-1"}, "hostname": "agent-1",
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}}]}


def reset(conn: socket.socket) -> None:
    """Close with a TCP RST, as a crashed peer's kernel would."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


#: One SUBSCRIBE's fate: write to the connection; return whether to keep reading from it.
Subscription = Callable[[HostilePeer, socket.socket], bool]


def heartbeats(peer: HostilePeer, conn: socket.socket) -> bool:
    """Heartbeats, twice an interval, until the test ends."""
    while not peer.hold(HEARTBEAT / 2):
        conn.sendall(record({"type": "HEARTBEAT"}))
    return False


def healthy(peer: HostilePeer, conn: socket.socket) -> bool:
    """A good master: SUBSCRIBED, then heartbeats."""
    conn.sendall(stream_head() + subscribed())
    return heartbeats(peer, conn)


def sends(*parts: bytes, then: str = "close") -> Subscription:
    """Write *parts*; then "close" the connection, "reset" it, or "hold" it open."""
    def subscription(peer: HostilePeer, conn: socket.socket) -> bool:
        conn.sendall(b"".join(parts))
        if then == "hold":
            peer.hold()
        elif then == "reset":
            reset(conn)
        return False
    return subscription


def master(*subscriptions: Subscription) -> Answer:
    """SUBSCRIBEs get *subscriptions* in turn (the last one again and again); calls get 202."""
    def answer(peer: HostilePeer, request: Request, conn: socket.socket) -> bool:
        if request.type != "SUBSCRIBE":
            conn.sendall(ACCEPTED)
            return True
        index = min(len(peer.of_type("SUBSCRIBE")), len(subscriptions)) - 1
        return subscriptions[index](peer, conn)
    return answer


def redirect(location: str | None) -> Answer:
    header = "" if location is None else f"Location: {location}\r\n"
    response = f"HTTP/1.1 307 Temporary Redirect\r\n{header}Content-Length: 0\r\n\r\n".encode()

    def answer(peer: HostilePeer, request: Request, conn: socket.socket) -> bool:
        conn.sendall(response)
        return False
    return answer


# ---- the scheduler side -----------------------------------------------------------------------


class Recorder(Scheduler):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._cond = threading.Condition()

    def _add(self, name: str, value: Any = None) -> None:
        with self._cond:
            self.calls.append((name, value))
            self._cond.notify_all()

    def names(self) -> list[str]:
        with self._cond:
            return [n for n, _ in self.calls]

    def wait_for(self, name: str, count: int = 1, timeout: float = WAIT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.names().count(name) >= count, timeout)

    def registered(self, driver: Any, frameworkId: Any, masterInfo: Any) -> None:
        self._add("registered", frameworkId)

    def reregistered(self, driver: Any, masterInfo: Any) -> None:
        self._add("reregistered")

    def disconnected(self, driver: Any) -> None:
        self._add("disconnected")

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        self._add("resourceOffers", [o["id"]["value"] for o in offers])

    def error(self, driver: Any, message: str) -> None:
        self._add("error", message)


@contextlib.contextmanager
def scheduler_driver(address: str, recorder: Recorder, **options: Any) -> Iterator[SchedulerDriver]:
    """A started driver with quick retries; stopped, bounded, and checked for leaked threads."""
    settings: dict[str, Any] = {"backoff_initial": 0.05, "backoff_max": 0.5, "call_timeout": 2.0,
                                "stop_timeout": WAIT, **options}
    driver = SchedulerDriver(recorder, INFO, address, **settings)
    driver.start()
    try:
        yield driver
    finally:
        started = time.monotonic()
        with contextlib.suppress(RemoteProtocolError, LocalProtocolError):
            driver.stop()
        assert time.monotonic() - started < WAIT, "stop() was not bounded"
        alive = [t.name for t in threading.enumerate() if t.name.startswith("mesos-scheduler")]
        assert not alive, alive


def lost_because(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.getMessage().startswith(("Mesos subscription lost", "nothing from the Mesos"))]


GARBAGE: list[tuple[str, Subscription, str]] = [
    ("not a length prefix", sends(chunk(b"hello\n{}\n")), "invalid RecordIO length prefix"),
    ("a length of 2 GB", sends(chunk(b"2000000000\n") + chunk(b"{" * 4096)),
     "exceeds the limit of 67108864 bytes"),
    ("an endless length prefix", sends(chunk(b"9" * 64)), "longer than 20 digits"),
    ("a record cut short", sends(chunk(b'100\n{"type":"OFF'), LAST_CHUNK),
     "RecordIO stream ended after 12 of 100 bytes"),
    ("a record cut by a reset", sends(chunk(b'100\n{"type":"OFF'), then="reset"),
     "connection closed"),
    ("not JSON", sends(record(b"\xff\xfe{not json")), "event is not JSON"),
    ("JSON but not an object", sends(record(b"[1, 2, 3]")), "event is not a JSON object"),
    ("an event without a type", sends(record({"offers": {"offers": []}})),
     "event has no 'type'"),
    ("an UPDATE without its status", sends(record({"type": "UPDATE", "update": {}})),
     "UPDATE event has no 'update.status' object"),
    ("OFFERS that are not a list", sends(record({"type": "OFFERS", "offers": {"offers": 7}})),
     "non-list 'offers'"),
    ("broken chunk framing", sends(b"zz\r\nnot a chunk\r\n"), "connection closed"),
]


@pytest.mark.parametrize(("what", "garbage", "problem"), GARBAGE, ids=[g[0] for g in GARBAGE])
def test_garbage_on_the_stream_is_named_and_the_driver_resubscribes(
        peers, caplog, tally, what, garbage, problem):
    caplog.set_level(logging.INFO, logger="toil_mesos")

    def first(peer: HostilePeer, conn: socket.socket) -> bool:
        conn.sendall(stream_head() + subscribed() + record({"type": "HEARTBEAT"}))
        return garbage(peer, conn)

    peer = peers(master(first, healthy))
    recorder = Recorder()
    with scheduler_driver(peer.address, recorder) as driver:
        tally.bad_input()
        assert recorder.wait_for("reregistered"), (recorder.names(), lost_because(caplog))
        assert recorder.names()[:3] == ["registered", "disconnected", "reregistered"]
        assert driver.status is DriverStatus.DRIVER_RUNNING
        second_sub = peer.of_type("SUBSCRIBE")[1]
        assert json.loads(second_sub.body)["framework_id"] == {"value": FID}
        reasons = lost_because(caplog)
        assert reasons and problem in reasons[0], reasons
    assert len(peer.of_type("SUBSCRIBE")) == 2  # one re-subscription was enough
    assert peer.of_type("TEARDOWN"), "stop() did not tear the framework down"


def test_unknown_events_are_skipped_and_the_stream_goes_on(peers, caplog, tally):
    caplog.set_level(logging.INFO, logger="toil_mesos")
    odd = [
        {"type": "FROBNICATE", "frobnicate": {"level": 11}},
        {"type": "UPDATE_V2", "update_v2": "not even an object"},
        {"type": "X" * 10_000},
        {"type": "HEARTBEAT", "heartbeat": {"extra": [1, 2, 3]}, "unknown_field": True},
        {"type": "OFFERS", "offers": {"offers": [offer("o1")]}, "future_field": {"a": 1}},
        {"type": "RESCIND_INVERSE_OFFER_V9"},
        {"type": "OFFERS", "offers": {"offers": [offer("o2")]}},
    ]

    def stream(peer: HostilePeer, conn: socket.socket) -> bool:
        conn.sendall(stream_head() + subscribed() + b"".join(record(e) for e in odd))
        return heartbeats(peer, conn)

    peer = peers(master(stream))
    recorder = Recorder()
    with scheduler_driver(peer.address, recorder) as driver:
        tally.bad_input(4)
        assert recorder.wait_for("resourceOffers", count=2), recorder.names()
        offers = [v for n, v in recorder.calls if n == "resourceOffers"]
        assert offers == [["o1"], ["o2"]]
        assert driver.status is DriverStatus.DRIVER_RUNNING
        assert "disconnected" not in recorder.names()
    assert len(peer.of_type("SUBSCRIBE")) == 1  # no reconnection was needed
    skipped = [r.getMessage() for r in caplog.records if "unknown Mesos scheduler event" in
               r.getMessage()]
    assert any("'FROBNICATE'" in m for m in skipped), skipped
    assert len(skipped) == 4, skipped


def trickle(peer: HostilePeer, conn: socket.socket) -> bool:
    """SUBSCRIBED, then the start of a record one byte at a time, never finishing it."""
    conn.sendall(stream_head() + subscribed(HEARTBEAT) + chunk(b"500\n"))
    for byte in b'{"type":"HEARTBEAT"' * 100:
        if peer.hold(0.05):
            break
        conn.sendall(chunk(bytes([byte])))
    return False


SILENT: list[tuple[str, Subscription, str]] = [
    ("busy but never finishing an event", trickle, "heartbeat or SUBSCRIBED deadline passed"),
    ("a heartbeat interval of NaN", sends(stream_head() + subscribed("NaN"), then="hold"),
     "bad heartbeat interval"),
    ("a heartbeat interval of Infinity", sends(stream_head() + subscribed("Infinity"),
                                              then="hold"), "bad heartbeat interval"),
    ("a response head that never ends", sends(b"HTTP/1.1 200 OK\r\n", then="hold"),
     "timed out"),
    ("a stream without SUBSCRIBED", sends(stream_head(), then="hold"),
     "heartbeat or SUBSCRIBED deadline passed"),
    ("503 while a leader is elected", sends(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 18\r\n\r\nNo leader elected\n"),
     "answered SUBSCRIBE with 503"),
]


@pytest.mark.parametrize(("what", "first", "problem"), SILENT, ids=[s[0] for s in SILENT])
def test_a_master_that_stops_talking_is_left_for_a_new_subscription(
        peers, caplog, tally, what, first, problem):
    caplog.set_level(logging.INFO, logger="toil_mesos")
    peer = peers(master(first, healthy))
    recorder = Recorder()
    # The response head is due within call_timeout, SUBSCRIBED within subscribe_timeout.
    with scheduler_driver(peer.address, recorder, subscribe_timeout=3.0,
                          call_timeout=1.0) as driver:
        tally.fault()
        assert peer.wait_for(lambda p: len(p.of_type("SUBSCRIBE")) >= 2), (
            f"{what}: the driver never gave up on the first subscription; "
            f"callbacks {recorder.names()}")
        assert recorder.wait_for("registered"), recorder.names()
        if first is trickle:  # its SUBSCRIBED made "registered": the new subscription's too?
            assert recorder.wait_for("reregistered"), recorder.names()
        assert driver.status is DriverStatus.DRIVER_RUNNING
    messages = [r.getMessage() for r in caplog.records]
    assert any(problem in m for m in messages), [m for m in messages if "Mesos" in m]


REDIRECTS: list[tuple[str, str]] = [
    ("to itself", "master redirect loop"),
    ("around a ring of three", "master redirect loop"),
    ("down a chain of eight masters", "more than 5 master redirects"),
    ("without a Location", "redirect without a host"),
    ("to a Location without a host", "redirect without a host"),
]


@pytest.mark.parametrize(("what", "problem"), REDIRECTS, ids=[r[0] for r in REDIRECTS])
def test_redirects_that_never_reach_a_leader_end_the_driver_with_a_clear_error(
        peers, tally, what, problem):
    if what == "to itself":
        me: dict[str, str] = {}
        first = peers(lambda p, r, c: redirect(f"//{me['a']}/api/v1/scheduler")(p, r, c))
        me["a"] = first.address
        visited = [first]
    elif what == "without a Location":
        visited = [peers(redirect(None))]
    elif what == "to a Location without a host":
        visited = [peers(redirect("http:///api/v1/scheduler"))]
    else:
        count = 3 if what.startswith("around") else 8
        targets: list[str] = []
        visited = []
        for index in range(count):
            visited.append(peers(
                lambda p, r, c, i=index: redirect(f"//{targets[(i + 1) % count]}/x")(p, r, c)))
            targets.append(visited[-1].address)
    recorder = Recorder()
    tally.bad_input()
    driver = SchedulerDriver(recorder, INFO, visited[0].address, backoff_initial=0.05,
                             stop_timeout=WAIT)
    driver.start()
    with pytest.raises(RemoteProtocolError, match=problem):
        driver.join(WAIT)
    assert driver.status is DriverStatus.DRIVER_ABORTED
    errors = [v for n, v in recorder.calls if n == "error"]
    assert len(errors) == 1 and problem in errors[0], recorder.calls
    # Each master was asked at most once: no retry storm against a confused cluster.
    assert all(len(p.requests) <= 1 for p in visited), [len(p.requests) for p in visited]
    assert not [t for t in threading.enumerate() if t.name.startswith("mesos-scheduler")]


def test_a_redirect_to_a_dead_leader_is_retried_from_the_given_master(peers, caplog, tally):
    caplog.set_level(logging.INFO, logger="toil_mesos")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"  # closed again: connections refused
    home = peers(redirect(f"//{dead}/api/v1/scheduler"))
    recorder = Recorder()
    with scheduler_driver(home.address, recorder, backoff_max=0.2) as driver:
        tally.fault()
        assert home.wait_for(lambda p: len(p.requests) >= 3), len(home.requests)
        assert driver.status is DriverStatus.DRIVER_RUNNING
    assert recorder.names() == []
    assert any("cannot connect" in m for m in lost_because(caplog)), lost_because(caplog)


@pytest.mark.parametrize(("what", "head", "error", "problem"), [
    ("no Mesos-Stream-Id", stream_head(None) + subscribed(), RemoteProtocolError,
     "no Mesos-Stream-Id header"),
    ("a 400 to SUBSCRIBE", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 9\r\n\r\nno thanks",
     LocalProtocolError, "rejected SUBSCRIBE with 400"),
    ("a second SUBSCRIBED", stream_head() + subscribed() + subscribed(), RemoteProtocolError,
     "SUBSCRIBED is not allowed in state SUBSCRIBED"),
    ("OFFERS before SUBSCRIBED", stream_head() + record(
        {"type": "OFFERS", "offers": {"offers": [offer("o1")]}}), RemoteProtocolError,
     "not allowed in state SUBSCRIBING"),
])
def test_a_master_breaking_the_protocol_ends_the_driver_with_a_clear_error(
        peers, tally, what, head, error, problem):
    peer = peers(master(sends(head, then="hold")))
    recorder = Recorder()
    tally.bad_input()
    driver = SchedulerDriver(recorder, INFO, peer.address, backoff_initial=0.05,
                             stop_timeout=WAIT)
    driver.start()
    with pytest.raises(error, match=problem):
        driver.join(WAIT)
    assert driver.status is DriverStatus.DRIVER_ABORTED
    assert [n for n, _ in recorder.calls if n == "error"] == ["error"]
    assert "resourceOffers" not in recorder.names()
    with pytest.raises(error, match=problem):  # every later call says why, too
        driver.reviveOffers()
    assert not [t for t in threading.enumerate() if t.name.startswith("mesos-scheduler")]


# ---- the executor side: the real executor process ---------------------------------------------


def executor_env(agent: HostilePeer, sandbox: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESOS_", "TOIL_MESOS"))}
    env.update({
        "MESOS_AGENT_ENDPOINT": agent.address,
        "MESOS_FRAMEWORK_ID": FID,
        "MESOS_EXECUTOR_ID": "hostile-executor",
        "MESOS_SLAVE_ID": "agent-1",
        "MESOS_CHECKPOINT": "0",
        "MESOS_DIRECTORY": str(sandbox),
        "MESOS_SANDBOX": str(sandbox),
        "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "2secs",
        "TOIL_MESOS_BUNDLE_CACHE": str(sandbox / "cache"),
        **extra,
    })
    return env


def run_executor(agent: HostilePeer, sandbox: Path, **extra: str) -> tuple[int, str]:
    """Run ``toil-mesos executor`` against *agent* until it exits; (status, its log)."""
    sandbox.mkdir(parents=True, exist_ok=True)
    log = sandbox / "executor.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(VENV_BIN / "toil-mesos"), "executor"], cwd=sandbox,
                                   env=executor_env(agent, sandbox, **extra), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=WAIT * 2)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=WAIT)
            raise AssertionError(f"the executor hung:\n{log.read_text()[-3000:]}") from None
    return code, log.read_text()


EXECUTOR_SUBSCRIBED = {
    "type": "SUBSCRIBED",
    "subscribed": {"executor_info": {"executor_id": {"value": "hostile-executor"},
                                     "framework_id": {"value": FID},
                                     "command": {"value": "toil-mesos executor"}},
                   "framework_info": {"user": "root", "name": "hostile-test", "id": {"value": FID}},
                   "agent_info": {"hostname": "agent-1", "id": {"value": "agent-1"}}},
}


def launch(task_id: str, data: str) -> dict[str, Any]:
    return {"type": "LAUNCH", "launch": {"task": {
        "name": task_id, "task_id": {"value": task_id}, "agent_id": {"value": "agent-1"},
        "resources": [], "data": data}}}


def agent(*events: dict[str, Any] | bytes, then: str = "close") -> Answer:
    """An agent: every SUBSCRIBE gets SUBSCRIBED, then *events* (raw bytes are sent as they
    are), then the connection is closed, reset or held; UPDATE and MESSAGE calls get 202."""
    def answer(peer: HostilePeer, request: Request, conn: socket.socket) -> bool:
        if request.type != "SUBSCRIBE":
            conn.sendall(ACCEPTED)
            return True
        parts = [e if isinstance(e, bytes) else record(e) for e in events]
        return sends(stream_head(None), record(EXECUTOR_SUBSCRIBED), *parts, then=then)(peer, conn)
    return answer


def updates(peer: HostilePeer) -> list[dict[str, Any]]:
    return [json.loads(r.body)["update"]["status"] for r in peer.of_type("UPDATE")]


EXECUTOR_GARBAGE: list[tuple[str, Sequence[dict[str, Any] | bytes], str, str]] = [
    ("garbage", [chunk(b"hello\n")], "close", "invalid RecordIO length prefix"),
    ("a record cut short", [chunk(b'80\n{"type":"LAUNCH"'), LAST_CHUNK], "close",
     "RecordIO stream ended after 16 of 80 bytes"),
    ("a reset mid-record", [chunk(b'80\n{"type":"LAUNCH"')], "reset", "connection closed"),
    ("a LAUNCH without a task id", [{"type": "LAUNCH", "launch": {"task": {"name": "t"}}}],
     "hold", "LAUNCH task has no 'task_id'"),
    ("not JSON", [chunk(encode_record(b"\x00\x01\x02"))], "hold", "event is not JSON"),
]


@pytest.mark.parametrize(("what", "events", "then", "problem"), EXECUTOR_GARBAGE,
                         ids=[g[0] for g in EXECUTOR_GARBAGE])
def test_the_executor_names_garbage_from_its_agent_and_shuts_down(
        peers, tmp_path, tally, what, events, then, problem):
    peer = peers(agent(*events, then=then))
    tally.bad_input()
    code, log = run_executor(peer, tmp_path / "sandbox")
    assert code == 0, log[-3000:]  # an orderly shutdown: nothing to recover without checkpoint
    assert "agent connection lost" in log and problem in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert len(peer.of_type("SUBSCRIBE")) == 1


def test_the_executor_skips_unknown_events_and_refuses_bad_task_data(peers, tmp_path, tally):
    marker = tmp_path / "ran"
    bad_spec = json.dumps({"format": "toil-mesos-task", "version": 99, "job_id": 1,
                           "command": f"touch {marker}", "python": "3.11"})
    events = [
        {"type": "FROBNICATE", "frobnicate": {}},
        {"type": "HEARTBEAT"},
        {"type": "LAUNCH_V3", "launch_v3": [1, 2]},
        launch("t-not-base64", "not base64 at all!"),
        launch("t-pickle", base64.b64encode(b"\x80\x04\x95pickle").decode()),
        launch("t-future-spec", base64.b64encode(bad_spec.encode()).decode()),
        {"type": "KILL", "kill": {"task_id": {"value": "no-such-task"}}},
        {"type": "ACKNOWLEDGED", "acknowledged": {"task_id": {"value": "nope"}, "uuid": "AAAA"}},
    ]
    shutdown = threading.Event()

    def answer(peer: HostilePeer, request: Request, conn: socket.socket) -> bool:
        if request.type == "UPDATE":
            conn.sendall(ACCEPTED)
            if len(peer.of_type("UPDATE")) == 3:
                shutdown.set()
            return True
        if request.type != "SUBSCRIBE":
            conn.sendall(ACCEPTED)
            return True
        conn.sendall(stream_head(None) + record(EXECUTOR_SUBSCRIBED)
                     + b"".join(record(e) for e in events))
        if shutdown.wait(WAIT):
            conn.sendall(record({"type": "SHUTDOWN"}))
        peer.hold()
        return False

    peer = peers(answer)
    tally.bad_input(len(events) - 1)
    code, log = run_executor(peer, tmp_path / "sandbox")
    assert code == 0, log[-3000:]
    states = {u["task_id"]["value"]: (u["state"], u.get("message", "")) for u in updates(peer)}
    assert set(states) == {"t-not-base64", "t-pickle", "t-future-spec"}, states
    assert all(state == "TASK_FAILED" and message.startswith("bad task data")
               for state, message in states.values()), states
    assert "version 99 is not supported" in states["t-future-spec"][1]
    assert "ignoring unknown Mesos executor event type 'FROBNICATE'" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert not marker.exists()
    assert len(peer.of_type("SUBSCRIBE")) == 1


def test_a_checkpointing_executor_rides_out_a_garbling_agent(peers, tmp_path, tally):
    """With checkpointing the executor re-subscribes after garbage, as after any broken
    connection, and carries on with an agent that has come to its senses."""
    def answer(peer: HostilePeer, request: Request, conn: socket.socket) -> bool:
        if request.type != "SUBSCRIBE":
            conn.sendall(ACCEPTED)
            return True
        garbage = [chunk(b"nonsense\n"), record(b"[]")]
        attempt = len(peer.of_type("SUBSCRIBE"))
        if attempt <= len(garbage):
            return sends(stream_head(None), record(EXECUTOR_SUBSCRIBED), garbage[attempt - 1])(
                peer, conn)
        return sends(stream_head(None), record(EXECUTOR_SUBSCRIBED), record({"type": "SHUTDOWN"}),
                     then="hold")(peer, conn)

    peer = peers(answer)
    tally.bad_input(2)
    code, log = run_executor(peer, tmp_path / "sandbox", MESOS_CHECKPOINT="1",
                             MESOS_SUBSCRIPTION_BACKOFF_MAX="200ms")
    assert code == 0, log[-3000:]
    assert len(peer.of_type("SUBSCRIBE")) == 3, log[-3000:]
    assert "invalid RecordIO length prefix b'nonsense'" in log
    assert "event is not a JSON object" in log
    assert "the agent asked executor hostile-executor to shut down" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_a_checkpointing_executor_gives_up_on_an_agent_that_never_recovers(
        peers, tmp_path, tally):
    refuse = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 15\r\n\r\n"
              b"Agent restarting")

    def answer(peer: HostilePeer, request: Request, conn: socket.socket) -> bool:
        if len(peer.of_type("SUBSCRIBE")) == 1:
            return agent(chunk(b"nonsense\n"))(peer, request, conn)
        conn.sendall(refuse)
        return False

    peer = peers(answer)
    tally.bad_input()
    started = time.monotonic()
    code, log = run_executor(peer, tmp_path / "sandbox", MESOS_CHECKPOINT="1",
                             MESOS_RECOVERY_TIMEOUT="3secs",
                             MESOS_SUBSCRIPTION_BACKOFF_MAX="200ms")
    elapsed = time.monotonic() - started
    assert code == 0, log[-3000:]
    assert len(peer.of_type("SUBSCRIBE")) >= 3, log[-3000:]  # it did try to recover
    assert "the agent answered SUBSCRIBE with 503" in log, log[-3000:]
    assert "recovery timeout over: shutting the executor down" in log, log[-3000:]
    assert elapsed < WAIT, elapsed
    assert "Traceback" not in log, log[-3000:]
