"""The master over real HTTP on loopback, compared field by field with the Mesos transcripts.

Most tests run the master in-process (``MasterServer`` on ``127.0.0.1:0``) and talk to it with
a raw-socket client that keeps the status line, header order and chunk framing; the command
line test runs ``python -m toil_mesos.cluster.master`` as a subprocess with a ready file and
stops it with SIGTERM. Ids, times, ports and addresses are the only things not compared.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from master_helpers import (
    OPEN_STREAMS,
    TRANSCRIPTS,
    Response,
    Stream,
    call,
    framework_info,
    recorded,
    register_body,
    request,
    shape,
    subscribe_call,
)

from toil_mesos.cluster._master_main import main
from toil_mesos.cluster.master import MasterServer
from toil_mesos.mesos import Scheduler, SchedulerDriver

pytestmark = pytest.mark.integration

FW1 = "scheduler/fw1_main"


@pytest.fixture(scope="module", autouse=True)
def _transcripts() -> None:
    if not (TRANSCRIPTS / "README.md").is_file():
        pytest.skip(f"Mesos transcripts not found at {TRANSCRIPTS} (set TOIL_MESOS_TRANSCRIPTS)")


@pytest.fixture(autouse=True)
def _close_streams() -> Iterator[None]:
    yield
    for stream in list(OPEN_STREAMS):
        stream.close()


@pytest.fixture
def master() -> Iterator[MasterServer]:
    server = MasterServer(heartbeat_interval=15.0, offer_interval=0.2, agent_timeout=1.0)
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=5.0)


class Framework:
    """A subscribed framework: its stream, id, and a call helper."""

    def __init__(self, address: str, info: dict[str, Any] | None = None) -> None:
        self.address = address
        self.stream = Stream(address, subscribe_call(info))
        subscribed = self.stream.next_event()
        assert subscribed is not None and subscribed["type"] == "SUBSCRIBED", subscribed
        self.subscribed = subscribed
        self.framework_id: dict[str, str] = subscribed["subscribed"]["framework_id"]

    def call(self, kind: str, body: Any = None) -> Response:
        payload: dict[str, Any] = {"type": kind, "framework_id": self.framework_id}
        if body is not None:
            payload[kind.lower()] = body
        return call(self.address, payload, self.stream.stream_id)


def recorded_meta(name: str) -> Any:
    return recorded(f"{FW1}/calls/{name}.meta.json")


def assert_like_recorded(response: Response, name: str, **replace: str) -> None:
    """Status, reason, header names in order, content type and body as recorded."""
    expected = recorded_meta(name)
    body = expected["response_body"]
    for old, new in replace.items():
        body = body.replace(old, new)
    assert (response.status, response.reason) == (expected["status"], expected["reason"])
    assert response.names == [k for k, _ in expected["response_headers"]]
    for key, value in expected["response_headers"]:
        if key == "Content-Length":
            assert response.header(key) == str(len(body.encode()))
        elif key != "Date":
            assert response.header(key) == value
    assert response.body.decode() == body


# ---------------------------------------------------------------------------------------------
# Errors, exactly as recorded


RECORDED_REQUEST_ID = "42f618ee-43f9-4ca8-88a7-31221df616de"


def replay(address: str, name: str, stream_id: str | None = None) -> Response:
    """Send a recorded request again: same method, headers (but Host) and body."""
    raw = recorded(f"{FW1}/calls/{name}.request.http")
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    method, path, _ = lines[0].split(" ")
    headers = []
    for line in lines[1:]:
        key, _, value = line.partition(": ")
        if key in ("Host", "Content-Length", "Connection"):
            continue
        if key == "Mesos-Stream-Id" and stream_id is not None:
            value = stream_id
        headers.append((key, value))
    return request(address, method, path, body if method == "POST" else None, headers)


@pytest.mark.parametrize(
    "name",
    [
        "01_ERR_unknown_type_no_stream",
        "03_ERR_GET_method",
        "04_ERR_no_content_type",
        "05_ERR_malformed_json",
        "06_ERR_subscribe_accept_text_html",
        "08_ERR_subscribe_missing_subscribe_field",
        "12_ERR_missing_framework_id",
    ],
)
def test_recorded_errors(master: MasterServer, name: str) -> None:
    assert_like_recorded(replay(master.address, name), name)


def test_errors_that_need_a_framework(master: MasterServer) -> None:
    framework = Framework(master.address)
    fid = framework.framework_id["value"]
    recorded_fid = f"{RECORDED_REQUEST_ID}-0000"

    revive_unknown = call(
        master.address, {"type": "REVIVE", "framework_id": {"value": "no-such-framework"}}
    )
    assert_like_recorded(revive_unknown, "02_ERR_revive_unknown_framework")

    no_stream = call(master.address, {"type": "REVIVE", "framework_id": framework.framework_id})
    assert_like_recorded(no_stream, "09_ERR_revive_without_stream_id")

    wrong = call(
        master.address,
        {"type": "REVIVE", "framework_id": framework.framework_id},
        "03cc0c64-1bcb-4487-a468-d7315f874cac",
    )
    assert_like_recorded(wrong, "10_ERR_revive_wrong_stream_id", **{recorded_fid: fid})

    unknown_type = call(
        master.address,
        {"type": "NOT_A_CALL_TYPE", "framework_id": framework.framework_id},
        framework.stream.stream_id,
    )
    assert_like_recorded(unknown_type, "11_ERR_unknown_type_with_stream")

    declined = framework.call("DECLINE", {"offer_ids": [{"value": "no-such-offer"}]})
    assert_like_recorded(declined, "13_ERR_decline_unknown_offer")


def test_roles_without_multi_role_gets_an_error_stream(master: MasterServer) -> None:
    name = "07_ERR_subscribe_roles_without_MULTI_ROLE"
    expected = recorded(f"{FW1}/calls/{name}.response.http")
    stream = Stream(master.address, recorded(f"{FW1}/calls/{name}.request.json"))
    assert (stream.status, stream.reason) == (200, "OK")
    assert [k for k, _ in stream.headers] == [
        "Date",
        "Transfer-Encoding",
        "Mesos-Stream-Id",
        "Content-Type",
    ]
    assert stream.next_event() is not None
    assert stream.next_event() is None
    # The whole body, chunk framing and last-chunk included, is byte for byte the recorded one.
    assert b"".join(stream.raw_chunks) == expected.split(b"\r\n\r\n", 1)[1]
    stream.close()


# ---------------------------------------------------------------------------------------------
# The subscription stream


def test_subscribe_head_events_and_framing(master: MasterServer) -> None:
    head = recorded(f"{FW1}/subscribe.response.head.http").decode().split("\r\n")
    recorded_names = [line.split(":")[0] for line in head[1:] if line]
    framework = Framework(master.address, framework_info("transcript-fw1"))
    stream = framework.stream
    assert (stream.status, stream.reason) == (200, "OK")
    assert [k for k, _ in stream.headers] == recorded_names
    assert dict(stream.headers)["Content-Type"] == "application/json"
    assert dict(stream.headers)["Transfer-Encoding"] == "chunked"

    expected = recorded(f"{FW1}/events/001_SUBSCRIBED.json")
    assert shape(framework.subscribed) == shape(expected)
    info = framework.subscribed["subscribed"]["master_info"]
    assert info["id"] == master.master_id
    assert info["ip"] == 16777343 and info["address"]["ip"] == "127.0.0.1"
    assert info["port"] == master.port and info["pid"] == f"master@{master.address}"
    assert framework.framework_id["value"] == f"{master.master_id}-0000"

    assert stream.next_event() == {"type": "HEARTBEAT"}
    heartbeat = recorded(f"{FW1}/events/002_HEARTBEAT.recordio.bin")
    assert stream.raw_chunks[-1] == b"%x\r\n%s\r\n" % (len(heartbeat), heartbeat)
    stream.close()


def test_accepted_calls_are_202_without_a_body(master: MasterServer) -> None:
    framework = Framework(master.address)
    response = framework.call("REVIVE")
    assert_like_recorded(response, "15_REVIVE")
    assert response.headers[1] == ("Content-Length", "0")


def test_offers_launch_update_and_teardown(master: MasterServer) -> None:
    agent = Stream(master.address, register_body(5051), path="/internal/agent")
    registered = agent.next_of("REGISTERED")
    agent_id = registered["registered"]["agent_id"]
    framework = Framework(master.address, framework_info("transcript-fw1"))

    offers = framework.stream.next_of("OFFERS")
    expected = recorded(f"{FW1}/events/003_OFFERS.json")
    assert shape(offers) == shape(expected)
    (offer,) = offers["offers"]["offers"]
    by_name = {r["name"]: r for r in offer["resources"]}
    for resource in expected["offers"]["offers"][0]["resources"]:
        assert by_name[resource["name"]] == resource
    assert offer["attributes"] == expected["offers"]["offers"][0]["attributes"]
    assert offer["url"]["address"] == {"hostname": "localhost", "ip": "127.0.0.1", "port": 5051}

    t1 = recorded(f"{FW1}/calls/16_ACCEPT_LAUNCH_T1_on_E1.request.json")
    task = t1["accept"]["operations"][0]["launch"]["task_infos"][0]
    task["agent_id"] = agent_id
    accepted = framework.call(
        "ACCEPT",
        {
            "offer_ids": [offer["id"]],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
        },
    )
    assert_like_recorded(accepted, "16_ACCEPT_LAUNCH_T1_on_E1")
    run = agent.next_of("RUN_TASK")["run_task"]
    assert run["task"]["task_id"] == {"value": "T1"}
    assert run["task"]["executor"]["framework_id"] == framework.framework_id

    starting = recorded(f"{FW1}/events/005_UPDATE_TASK_STARTING_T1.json")
    status = dict(starting["update"]["status"], agent_id=agent_id)
    sent = call(
        master.address,
        {"type": "UPDATE", "update": {"framework_id": framework.framework_id, "status": status}},
        agent.stream_id,
        path="/internal/agent/call",
    )
    assert sent.status == 202
    assert framework.stream.next_of("UPDATE") == {"type": "UPDATE", "update": {"status": status}}
    ack = framework.call(
        "ACKNOWLEDGE", {"agent_id": agent_id, "task_id": {"value": "T1"}, "uuid": status["uuid"]}
    )
    assert ack.status == 202
    assert agent.next_of("ACKNOWLEDGE")["acknowledge"]["uuid"] == status["uuid"]

    state = request(master.address, "GET", "/state")
    assert state.names == ["Date", "Content-Length", "Content-Type"]
    assert state.header("Content-Type") == "application/json"
    body = state.json()
    expected_state = recorded("state/master_state.json")
    assert set(body) == set(expected_state)
    assert body["frameworks"][0]["tasks"][0]["state"] == "TASK_STARTING"
    assert body["slaves"][0]["id"] == agent_id["value"]

    torn = framework.call("TEARDOWN")
    assert_like_recorded(torn, "65_TEARDOWN")
    while framework.stream.next_event(timeout=5.0) is not None:
        pass
    assert framework.stream.raw_chunks[-1] == b"0\r\n\r\n"
    assert agent.next_of("SHUTDOWN_FRAMEWORK")["shutdown_framework"] == {
        "framework_id": framework.framework_id
    }
    assert_like_recorded(framework.call("REVIVE"), "66_REVIVE_after_teardown")
    agent.close()


def test_health(master: MasterServer) -> None:
    response = request(master.address, "GET", "/health")
    expected = recorded("state/master_health.meta.json")
    assert response.status == expected["status"]
    assert response.names == [k for k, _ in expected["response_headers"]]
    assert response.header("Content-Length") == "0" and response.body == b""


def test_unknown_path_is_404(master: MasterServer) -> None:
    assert request(master.address, "GET", "/no/such/path").status == 404
    assert request(master.address, "POST", "/no/such/path", b"{}").status == 404


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_other_methods_on_the_scheduler_api_are_405(master: MasterServer, method: str) -> None:
    response = request(master.address, method, "/api/v1/scheduler", b"")
    assert (response.status, response.header("Allow")) == (405, "POST")
    assert response.body.decode() == (
        f"405 Method Not Allowed. Expecting one of {{ 'POST' }}, but received '{method}'."
    )


def test_agent_stream_and_calls(master: MasterServer) -> None:
    agent = Stream(master.address, register_body(5051), path="/internal/agent")
    assert [k for k, _ in agent.headers] == [
        "Date",
        "Transfer-Encoding",
        "Mesos-Stream-Id",
        "Content-Type",
    ]
    assert agent.next_event() == {
        "type": "REGISTERED",
        "registered": {
            "agent_id": {"value": f"{master.master_id}-S0"},
            "heartbeat_interval_seconds": 15.0,
        },
    }
    unknown = call(
        master.address,
        {"type": "MESSAGE", "message": {"framework_id": {"value": "f"}, "data": ""}},
        "no-such-stream",
        path="/internal/agent/call",
    )
    assert unknown.status == 404
    assert unknown.header("Content-Type") == "text/plain; charset=utf-8"
    bad = call(master.address, {"type": "NOPE"}, agent.stream_id, path="/internal/agent/call")
    assert bad.status == 400
    agent.close()


def test_vanished_agent_is_lost_after_the_timeout(master: MasterServer) -> None:
    agent = Stream(master.address, register_body(5051), path="/internal/agent")
    agent.next_of("REGISTERED")
    framework = Framework(master.address)
    framework.stream.next_of("OFFERS")
    agent.close()  # the master notices the broken stream, then waits --agent-timeout (1 s)
    assert framework.stream.next_of("RESCIND")["rescind"]["offer_id"]
    failure = framework.stream.next_of("FAILURE", timeout=5.0)
    assert set(failure["failure"]) == {"agent_id"}
    assert request(master.address, "GET", "/state").json()["unreachable_slaves"] == 1.0


def test_failover_closes_the_old_stream(master: MasterServer) -> None:
    first = Framework(master.address)
    info = framework_info(id=first.framework_id)
    second = Framework(master.address, info)
    assert second.framework_id == first.framework_id
    assert first.stream.next_of("ERROR")["error"] == {"message": "Framework failed over"}
    assert first.stream.next_event() is None
    assert second.call("REVIVE").status == 202


def test_stop_ends_streams_with_the_last_chunk(master: MasterServer) -> None:
    framework = Framework(master.address)
    master.stop(timeout=5.0)
    while framework.stream.next_event(timeout=5.0) is not None:
        pass
    assert framework.stream.raw_chunks[-1] == b"0\r\n\r\n"


# ---------------------------------------------------------------------------------------------
# The command line


def test_command_line_ready_file_and_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "run" / "master.ready"
    ready.parent.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toil_mesos.cluster.master",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--work-dir",
            str(tmp_path / "master"),
            "--ready-file",
            str(ready),
            "--offer-interval",
            "0.5",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20.0
        while not ready.exists():
            assert process.poll() is None, process.communicate(timeout=5)[1]
            assert time.monotonic() < deadline, "no ready file within 20 s"
            time.sleep(0.05)
        content = json.loads(ready.read_text())
        assert content["pid"] == process.pid
        address = content["address"]
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")
        assert (tmp_path / "master").is_dir()
        assert request(address, "GET", "/health").status == 200
        framework = Framework(address)
        process.send_signal(signal.SIGTERM)
        while framework.stream.next_event(timeout=10.0) is not None:
            pass
        assert framework.stream.raw_chunks[-1] == b"0\r\n\r\n"
        assert process.wait(timeout=15.0) == 0
        assert "stopped" in process.communicate(timeout=5)[1]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ready-file", "x"], "--work-dir"),
        (["--work-dir", "d", "--ready-file", "x", "--agent-timeout", "0"], "positive"),
        (["--work-dir", "d", "--ready-file", "x", "--offer-interval", "soon"], "'soon'"),
    ],
)
def test_bad_command_lines(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The project's own SchedulerDriver against this master (the agent side is scripted here)


class _Recorder(Scheduler):
    """Puts every callback on a queue as (name, args)."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[str, tuple[Any, ...]]] = queue.Queue()

    def registered(self, driver: Any, frameworkId: Any, masterInfo: Any) -> None:
        self.calls.put(("registered", (frameworkId, masterInfo)))

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        self.calls.put(("resourceOffers", (offers,)))

    def statusUpdate(self, driver: Any, status: Any) -> None:
        self.calls.put(("statusUpdate", (status,)))

    def frameworkMessage(self, driver: Any, executorId: Any, agentId: Any, data: str) -> None:
        self.calls.put(("frameworkMessage", (executorId, agentId, data)))

    def executorLost(self, driver: Any, executorId: Any, agentId: Any, status: Any) -> None:
        self.calls.put(("executorLost", (executorId, agentId, status)))

    def wait_for(self, name: str, timeout: float = 10.0) -> tuple[Any, ...]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {name} callback within {timeout} s"
            got, args = self.calls.get(timeout=remaining)
            if got == name:
                return args


def test_scheduler_driver_against_the_master(master: MasterServer) -> None:
    agent = Stream(master.address, register_body(5051), path="/internal/agent")
    agent_id = agent.next_of("REGISTERED")["registered"]["agent_id"]
    recorder = _Recorder()
    driver = SchedulerDriver(recorder, framework_info("driver-test"), master.address)
    driver.start()
    try:
        framework_id, _ = recorder.wait_for("registered")
        (offers,) = recorder.wait_for("resourceOffers")
        offer = offers[0]
        task = {
            "name": "task D1",
            "task_id": {"value": "D1"},
            "agent_id": {"value": offer["agent_id"]["value"]},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}],
            "executor": {
                "executor_id": {"value": "DE"},
                "type": "CUSTOM",
                "command": {"value": "true"},
                "resources": [{"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
            },
        }
        driver.launchTasks(offer["id"], [task])
        run = agent.next_of("RUN_TASK")["run_task"]
        assert run["task"]["task_id"] == {"value": "D1"}

        def update(state: str, uuid: str) -> None:
            status = {
                "task_id": {"value": "D1"},
                "state": state,
                "source": "SOURCE_EXECUTOR",
                "agent_id": agent_id,
                "timestamp": time.time(),
                "uuid": uuid,
            }
            body = {
                "type": "UPDATE",
                "update": {"framework_id": run["framework_id"], "status": status},
            }
            assert call(master.address, body, agent.stream_id, "/internal/agent/call").status == 202

        update("TASK_RUNNING", "cnVubmluZw==")
        (status,) = recorder.wait_for("statusUpdate")
        assert status["state"] == "TASK_RUNNING"
        assert agent.next_of("ACKNOWLEDGE")["acknowledge"]["uuid"] == "cnVubmluZw=="  # implicit

        driver.frameworkMessage("DE", agent_id["value"], "cGluZw==")
        assert agent.next_of("MESSAGE")["message"]["data"] == "cGluZw=="
        back = {
            "type": "MESSAGE",
            "message": {
                "framework_id": run["framework_id"],
                "executor_id": {"value": "DE"},
                "data": "cG9uZw==",
            },
        }
        assert call(master.address, back, agent.stream_id, "/internal/agent/call").status == 202
        executor_id, _, data = recorder.wait_for("frameworkMessage")
        assert (executor_id["value"], data) == ("DE", "cG9uZw==")

        driver.killTask({"value": "D1"}, agent_id)
        assert agent.next_of("KILL_TASK")["kill_task"]["task_id"] == {"value": "D1"}
        update("TASK_KILLED", "a2lsbGVk")
        (status,) = recorder.wait_for("statusUpdate")
        assert status["state"] == "TASK_KILLED"

        exited = {
            "type": "EXECUTOR_EXITED",
            "executor_exited": {
                "framework_id": run["framework_id"],
                "executor_id": {"value": "DE"},
                "status": 0,
            },
        }
        assert call(master.address, exited, agent.stream_id, "/internal/agent/call").status == 202
        assert recorder.wait_for("executorLost")[0]["value"] == "DE"
    finally:
        driver.stop()
        driver.join(timeout=10.0)
    shutdown = agent.next_of("SHUTDOWN_FRAMEWORK")["shutdown_framework"]
    assert shutdown["framework_id"] == run["framework_id"] == {"value": framework_id["value"]}
    agent.close()
