"""Drivers over real HTTP (httpx) against a loopback server replaying the Mesos transcripts.

``ReplayServer`` binds ``127.0.0.1:0`` and answers each POST from a script: a SUBSCRIBE gets the
recorded response head and stream bytes exactly as they came off the master's or agent's socket
(chunk framing included); a call gets a recorded ``*.response.http``. Every request is recorded
for assertions. Handler threads are daemons and every wait inside them is bounded.

The server and its fixtures live here rather than in a ``conftest.py``: a second
``conftest.py`` beside ``tests/unit/mesos/conftest.py`` (no ``__init__.py`` files) makes
``pytest tests/unit/mesos tests/integration/mesos`` fail with "import file mismatch".
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from toil_mesos.errors import ConnectError, ReadTimeout, RemoteProtocolError, StreamClosed
from toil_mesos.mesos import (
    DriverStatus,
    Executor,
    ExecutorDriver,
    HttpxTransport,
    Scheduler,
    SchedulerDriver,
    encode_record,
)

pytestmark = pytest.mark.integration

FID = "42f618ee-43f9-4ca8-88a7-31221df616de-0000"
STREAM_ID = "e092d23b-9c0f-41ed-bff9-ed04ea52dfaa"
INFO = {
    "user": "root",
    "name": "transcript-fw1",
    "roles": ["*"],
    "failover_timeout": 120.0,
    "capabilities": [{"type": "MULTI_ROLE"}, {"type": "TASK_KILLING_STATE"}],
}
WAIT = 10.0
ACCEPTED = (
    b"HTTP/1.1 202 Accepted\r\nDate: Tue, 24 Nov 2026 19:09:52 GMT\r\nContent-Length: 0\r\n\r\n"
)


_DEFAULT = Path(__file__).resolve().parents[3].parent / "shared" / "mesos-transcripts"
HOLD_TIMEOUT = 10.0


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


#: A script answers each request with (bytes to write exactly, then what to do with the
#: connection: "keep" it alive for the next request, "close" it, or "hold" it open until the
#: test ends).
Reply = tuple[bytes, str]
Script = Callable[["ReplayServer", Seen], Reply]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ReplayServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        seen = Seen(self.path, dict(self.headers.items()), self.rfile.read(length))
        data, then = self.server.record(seen)
        self.wfile.write(data)
        self.wfile.flush()
        if then == "hold":
            self.server.release.wait(HOLD_TIMEOUT)
        if then in ("hold", "close"):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet


class ReplayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.release = threading.Event()
        self._cond = threading.Condition()
        self.seen: list[Seen] = []

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def record(self, seen: Seen) -> Reply:
        with self._cond:
            self.seen.append(seen)
            self._cond.notify_all()
        return self.script(self, seen)

    def wait_for(self, predicate: Callable[[list[Seen]], bool], timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.seen), timeout)

    def of_type(self, kind: str) -> list[Seen]:
        with self._cond:
            return [s for s in self.seen if s.json.get("type") == kind]


@pytest.fixture(scope="session")
def transcripts() -> Path:
    root = Path(os.environ.get("TOIL_MESOS_TRANSCRIPTS", _DEFAULT))
    if not (root / "README.md").is_file():
        pytest.skip(f"Mesos transcripts not found at {root} (set TOIL_MESOS_TRANSCRIPTS)")
    return root


def chunks_of(raw: bytes) -> list[bytes]:
    """Split raw chunked bytes into their chunks, each with its framing (the last-chunk too)."""
    out = []
    pos = 0
    while pos < len(raw):
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol], 16)
        end = eol + 2 + size + 2
        out.append(raw[pos:end])
        pos = end
    return out


@pytest.fixture(scope="session")
def split_chunks() -> Callable[[bytes], list[bytes]]:
    return chunks_of


@pytest.fixture
def serve() -> Iterator[Callable[[Script], ReplayServer]]:
    """Start replay servers on loopback; all are stopped after the test."""
    servers: list[ReplayServer] = []

    def start(script: Script) -> ReplayServer:
        server = ReplayServer(script)
        thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="replay-server", daemon=True
        )
        thread.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def recorded(transcripts: Path) -> Callable[[str], bytes]:
    """Bytes of a transcript file."""
    return lambda name: (transcripts / name).read_bytes()


class Recorder:
    """Records callback names; tests wait on them with a timeout."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.cond = threading.Condition()
        self.on: dict[str, Callable[..., None]] = {}

    def add(self, name: str, *args: Any) -> None:
        with self.cond:
            self.calls.append((name, args))
            self.cond.notify_all()
        if name in self.on:
            self.on[name](*args)

    def names(self) -> list[str]:
        with self.cond:
            return [n for n, _ in self.calls]

    def wait_for(self, name: str, timeout: float = WAIT) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(n == name for n, _ in self.calls), timeout)
        assert ok, f"no {name} callback; got {self.names()}"


class RecordingScheduler(Scheduler, Recorder):
    def __init__(self) -> None:
        Recorder.__init__(self)

    def registered(self, driver: Any, frameworkId: Any, masterInfo: Any) -> None:
        self.add("registered", frameworkId)

    def reregistered(self, driver: Any, masterInfo: Any) -> None:
        self.add("reregistered")

    def disconnected(self, driver: Any) -> None:
        self.add("disconnected")

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        self.add("resourceOffers", offers)

    def statusUpdate(self, driver: Any, status: Any) -> None:
        self.add("statusUpdate", status)

    def frameworkMessage(self, driver: Any, executorId: Any, agentId: Any, message: str) -> None:
        self.add("frameworkMessage", message)

    def executorLost(self, driver: Any, executorId: Any, agentId: Any, status: int | None) -> None:
        self.add("executorLost", status)

    def error(self, driver: Any, message: str) -> None:
        self.add("error", message)


class RecordingExecutor(Executor, Recorder):
    def __init__(self) -> None:
        Recorder.__init__(self)

    def registered(
        self, driver: Any, executorInfo: Any, frameworkInfo: Any, agentInfo: Any
    ) -> None:
        self.add("registered", executorInfo)

    def disconnected(self, driver: Any) -> None:
        self.add("disconnected")

    def launchTask(self, driver: Any, task: Any) -> None:
        self.add("launchTask", task)

    def killTask(self, driver: Any, taskId: Any) -> None:
        self.add("killTask", taskId)

    def acknowledged(self, driver: Any, taskId: Any, uuid: str) -> None:
        self.add("acknowledged", uuid)

    def frameworkMessage(self, driver: Any, message: str) -> None:
        self.add("frameworkMessage", message)

    def shutdown(self, driver: Any) -> None:
        self.add("shutdown")


def body_of(request_http: bytes) -> bytes:
    return request_http.split(b"\r\n\r\n", 1)[1]


def scheduler_script(
    recorded: Callable[[str], bytes], split_chunks: Callable[[bytes], list[bytes]], name: str
) -> Script:
    """First SUBSCRIBE: the whole recorded stream (it ends with the last-chunk, as after
    TEARDOWN). Later ones: the recorded head and SUBSCRIBED chunk, then the stream stays open.
    Calls: the recorded 202."""
    head = recorded(f"scheduler/{name}/subscribe.response.head.http")
    raw = recorded(f"scheduler/{name}/subscribe.stream.raw.bin")

    def script(server: Any, seen: Any) -> tuple[bytes, str]:
        if seen.json["type"] != "SUBSCRIBE":
            return ACCEPTED, "keep"
        if len(server.of_type("SUBSCRIBE")) == 1:
            return head + raw, "keep"
        return head + split_chunks(raw)[0], "hold"

    return script


def redirect_to(target: str) -> Script:
    # The shape Master::Http::redirect() produces: a protocol-relative Location.
    response = (
        "HTTP/1.1 307 Temporary Redirect\r\n"
        f"Location: //{target}/api/v1/scheduler\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return lambda server, seen: (response, "close")


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


SUBSCRIBED_FAST = encode_record(
    json.dumps(
        {
            "type": "SUBSCRIBED",
            "subscribed": {"framework_id": {"value": FID}, "heartbeat_interval_seconds": 0.1},
        }
    ).encode()
)


class TestScheduler:
    def test_fw1_replay(
        self,
        serve: Callable[[Script], Any],
        recorded: Callable[[str], bytes],
        split_chunks: Callable[[bytes], list[bytes]],
        transcripts: Path,
    ) -> None:
        master = serve(scheduler_script(recorded, split_chunks, "fw1_main"))
        scheduler = RecordingScheduler()
        driver = SchedulerDriver(scheduler, INFO, master.address, stop_timeout=WAIT)
        driver.start()
        scheduler.wait_for("reregistered")
        names = scheduler.names()
        assert names.count("registered") == 1
        assert names.count("resourceOffers") == 15
        assert names.count("statusUpdate") == 39
        assert names.count("executorLost") == 1
        assert names.count("frameworkMessage") == 1
        assert names.index("disconnected") < names.index("reregistered")

        first, second = master.of_type("SUBSCRIBE")
        assert first.body == body_of(recorded("scheduler/fw1_main/subscribe.request.http"))
        assert "Mesos-Stream-Id" not in first.headers
        assert second.json["framework_id"] == {"value": FID}
        assert second.json["subscribe"]["framework_info"]["id"] == {"value": FID}

        # Every acknowledgement is byte for byte one the recording sent, with its stream id.
        recorded_acks = {
            body_of(p.read_bytes())
            for p in (transcripts / "scheduler/fw1_main/calls").glob("*_ACKNOWLEDGE_*.request.http")
        }
        acks = master.of_type("ACKNOWLEDGE")
        assert len(acks) == 32
        assert {a.body for a in acks} == recorded_acks
        assert all(a.headers["Mesos-Stream-Id"] == STREAM_ID for a in acks)

        started = time.monotonic()
        assert driver.stop() is DriverStatus.DRIVER_STOPPED
        assert time.monotonic() - started < WAIT
        (teardown,) = master.of_type("TEARDOWN")
        assert teardown.body == body_of(
            recorded("scheduler/fw1_main/calls/65_TEARDOWN.request.http")
        )

    def test_follows_redirect_to_leader(
        self,
        serve: Callable[[Script], Any],
        recorded: Callable[[str], bytes],
        split_chunks: Callable[[bytes], list[bytes]],
    ) -> None:
        leader = serve(scheduler_script(recorded, split_chunks, "fw3_fetch_failure"))
        follower = serve(redirect_to(leader.address))
        scheduler = RecordingScheduler()
        driver = SchedulerDriver(scheduler, INFO, follower.address, stop_timeout=WAIT)
        driver.start()
        scheduler.wait_for("executorLost")
        driver.stop(failover=True)
        assert len(follower.seen) >= 1
        assert all(s.json["type"] == "SUBSCRIBE" for s in follower.seen)
        assert leader.of_type("ACKNOWLEDGE")  # calls went to the leader, not the follower

    def test_redirect_loop_is_an_error(self, serve: Callable[[Script], Any]) -> None:
        target: dict[str, str] = {}
        a = serve(lambda server, seen: redirect_to(target["b"])(server, seen))
        b = serve(redirect_to(a.address))
        target["b"] = b.address
        scheduler = RecordingScheduler()
        driver = SchedulerDriver(scheduler, INFO, a.address, stop_timeout=WAIT)
        driver.start()
        with pytest.raises(RemoteProtocolError, match="redirect loop"):
            driver.join(WAIT)
        assert driver.status is DriverStatus.DRIVER_ABORTED
        assert len(a.seen) == 1 and len(b.seen) == 1

    def test_missed_heartbeats_over_a_real_socket(
        self, serve: Callable[[Script], Any], recorded: Callable[[str], bytes]
    ) -> None:
        head = recorded("scheduler/fw1_main/subscribe.response.head.http")
        master = serve(
            lambda server, seen: (
                (head + chunk(SUBSCRIBED_FAST), "hold")
                if seen.json["type"] == "SUBSCRIBE"
                else (ACCEPTED, "keep")
            )
        )
        scheduler = RecordingScheduler()
        driver = SchedulerDriver(
            scheduler,
            INFO,
            master.address,
            missed_heartbeats=2,
            backoff_initial=0.05,
            stop_timeout=WAIT,
        )
        driver.start()
        scheduler.wait_for("reregistered")  # the silent stream was dropped, then re-subscribed
        assert scheduler.names()[:3] == ["registered", "disconnected", "reregistered"]
        assert master.of_type("SUBSCRIBE")[1].json["framework_id"] == {"value": FID}
        assert driver.stop() is DriverStatus.DRIVER_STOPPED


EXECUTOR_ENV = {
    "MESOS_CHECKPOINT": "0",
    "MESOS_EXECUTOR_ID": "E1",
    "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "5secs",
    "MESOS_FRAMEWORK_ID": FID,
    "MESOS_SLAVE_ID": "42f618ee-43f9-4ca8-88a7-31221df616de-S0",
}


class TestExecutor:
    def test_e1_replay(
        self, serve: Callable[[Script], Any], recorded: Callable[[str], bytes]
    ) -> None:
        head = recorded("executor/E1/subscribe.response.head.http")
        raw = recorded("executor/E1/subscribe.stream.raw.bin")
        update = recorded("executor/E1/calls/01_UPDATE_TASK_STARTING_T1.response.http")
        agent = serve(
            lambda server, seen: (
                (head + raw, "hold")  # the recorded stream never ended
                if seen.json["type"] == "SUBSCRIBE"
                else (update, "keep")
            )
        )
        executor = RecordingExecutor()
        driver = ExecutorDriver(
            executor, env={**EXECUTOR_ENV, "MESOS_AGENT_ENDPOINT": agent.address}, stop_timeout=WAIT
        )
        executor.on["launchTask"] = lambda task: driver.sendStatusUpdate(
            {"task_id": task.task_id, "state": "TASK_RUNNING", "message": "running"}
        )
        driver.start()
        assert driver.join(WAIT) is DriverStatus.DRIVER_STOPPED  # ends after SHUTDOWN
        assert executor.names().count("launchTask") == 2
        assert executor.names()[-1] == "shutdown"
        (subscribe,) = agent.of_type("SUBSCRIBE")
        assert subscribe.body == body_of(recorded("executor/E1/subscribe.request.http"))
        sent = agent.of_type("UPDATE")
        assert [u.json["update"]["status"]["task_id"]["value"] for u in sent] == ["T1", "T2"]
        assert all(u.json["executor_id"] == {"value": "E1"} for u in sent)

    def test_agent_gone_without_checkpoint_shuts_down(
        self,
        serve: Callable[[Script], Any],
        recorded: Callable[[str], bytes],
        split_chunks: Callable[[bytes], list[bytes]],
    ) -> None:
        head = recorded("executor/E1/subscribe.response.head.http")
        raw = recorded("executor/E1/subscribe.stream.raw.bin")
        # SUBSCRIBED and LAUNCH, then the agent closes the connection mid-stream.
        agent = serve(lambda server, seen: (head + b"".join(split_chunks(raw)[:2]), "close"))
        executor = RecordingExecutor()
        driver = ExecutorDriver(
            executor, env={**EXECUTOR_ENV, "MESOS_AGENT_ENDPOINT": agent.address}, stop_timeout=WAIT
        )
        driver.start()
        assert driver.join(WAIT) is DriverStatus.DRIVER_STOPPED
        assert executor.names() == ["registered", "launchTask", "disconnected", "shutdown"]
        assert len(agent.of_type("SUBSCRIBE")) == 1

    def test_stop_is_bounded_while_the_stream_is_open(
        self,
        serve: Callable[[Script], Any],
        recorded: Callable[[str], bytes],
        split_chunks: Callable[[bytes], list[bytes]],
    ) -> None:
        head = recorded("executor/E2/subscribe.response.head.http")
        raw = recorded("executor/E2/subscribe.stream.raw.bin")
        agent = serve(lambda server, seen: (head + split_chunks(raw)[0], "hold"))
        executor = RecordingExecutor()
        driver = ExecutorDriver(
            executor,
            env={**EXECUTOR_ENV, "MESOS_EXECUTOR_ID": "E2", "MESOS_AGENT_ENDPOINT": agent.address},
            stop_timeout=60.0,
        )
        driver.start()
        executor.wait_for("registered")
        started = time.monotonic()
        assert driver.stop() is DriverStatus.DRIVER_STOPPED
        # Woken by the socket shutdown, not by the 60 s stop timeout (margin for a busy machine).
        assert time.monotonic() - started < 20.0
        assert not [t for t in threading.enumerate() if t.name.startswith("mesos-executor")]


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A loopback socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, name="silent-listener", daemon=True)
    thread.start()
    host, port = listener.getsockname()
    yield f"{host}:{port}"
    stop.set()
    thread.join(2.0)
    for conn in accepted:
        conn.close()
    listener.close()


class TestHttpxTransport:
    def test_silent_peer_times_out_waiting_for_the_head(self, silent_listener: str) -> None:
        transport = HttpxTransport()
        started = time.monotonic()
        with pytest.raises(ReadTimeout):
            transport.open_stream(
                f"http://{silent_listener}/api/v1/scheduler",
                b"{}",
                {},
                connect_timeout=0.3,
                read_timeout=None,
            )
        # It gave up on the head instead of waiting for ever (margin for a busy machine).
        assert time.monotonic() - started < 30.0
        transport.close()

    def test_quiet_stream_does_not_time_out_but_can_be_aborted(
        self, serve: Callable[[Script], Any], recorded: Callable[[str], bytes]
    ) -> None:
        head = recorded("executor/E2/subscribe.response.head.http")
        agent = serve(lambda server, seen: (head, "hold"))
        transport = HttpxTransport()
        stream = transport.open_stream(
            f"http://{agent.address}/api/v1/executor",
            b"{}",
            {},
            connect_timeout=0.2,
            read_timeout=None,
        )
        assert stream.status == 200
        results: list[BaseException | bytes] = []

        def read() -> None:
            try:
                results.append(stream.read())
            except BaseException as exc:  # noqa: BLE001 (recorded for the assertion)
                results.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(0.6)  # three times the head timeout: the body read must not have timed out
        assert reader.is_alive()
        stream.abort()
        reader.join(2.0)
        assert not reader.is_alive()
        assert isinstance(results[0], StreamClosed)
        stream.close()
        transport.close()

    def test_refused_connection(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        transport = HttpxTransport()
        with pytest.raises(ConnectError):
            transport.post(f"http://127.0.0.1:{port}/api/v1/scheduler", b"{}", {}, timeout=1.0)
        transport.close()

    def test_post_reads_the_recorded_202(
        self, serve: Callable[[Script], Any], recorded: Callable[[str], bytes]
    ) -> None:
        response = recorded("scheduler/fw1_main/calls/15_REVIVE.response.http")
        master = serve(lambda server, seen: (response, "keep"))
        transport = HttpxTransport()
        url = f"http://{master.address}/api/v1/scheduler"
        for _ in range(3):
            answer = transport.post(url, b'{"type":"REVIVE"}', {}, timeout=2.0)
            assert (answer.status, answer.body) == (202, b"")
        transport.close()
        assert len(master.seen) == 3
