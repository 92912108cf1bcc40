"""The agent as a real process against a stub master, checked against the Mesos transcripts.

Each test starts ``python -m toil_mesos.cluster.agent`` on 127.0.0.1 with a work dir under
``tmp_path``, a :class:`StubMaster` speaking the internal protocol, and (mostly) the recording
executor of ``agent_helpers``, which writes down what it saw. Values that depend on ids, times
and addresses are compared by construction; everything else field by field.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    AGENT_ID,
    FRAMEWORK_ID,
    FRAMEWORK_INFO,
    PYTHON,
    AgentProcess,
    StubMaster,
    UriFile,
    UriServer,
    events_of,
    executor_task,
    pid_alive,
    read_jsonl,
    running_agent,
    transcript_json,
    wait_for_event,
    wait_until,
    write_recording_executor,
)

from toil_mesos.cluster._executors import session_pids
from toil_mesos.cluster._resources import parse_attributes, parse_resources

pytestmark = pytest.mark.integration

JSON = dict[str, Any]
RECORDED_RESOURCES = "cpus:2;mem:2048;disk:4096;ports:[31000-31009]"
RECORDED_ATTRIBUTES = "rack:r1;level:5;slots:[1-4]"


def get(address: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers={"Accept": "application/json", "Connection": "close"})
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def post(
    address: str, body: bytes, content_type: str | None = "application/json"
) -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Connection": "close"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    try:
        conn.request("POST", "/api/v1/executor", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def names(headers: list[tuple[str, str]]) -> list[str]:
    return [name for name, _ in headers]


def sandbox_of(agent: AgentProcess, executor_id: str, framework_id: str = FRAMEWORK_ID) -> Path:
    runs = (
        agent.work_dir
        / "agent"
        / "slaves"
        / AGENT_ID
        / "frameworks"
        / framework_id
        / "executors"
        / executor_id
        / "runs"
    )
    found = wait_until(lambda: sorted(runs.iterdir()) if runs.exists() else None, 20, "a run")
    result: Path = found[-1]
    return result


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return write_recording_executor(tmp_path)


def test_registers_writes_ready_file_and_serves_health(tmp_path: Path) -> None:
    with (
        StubMaster() as master,
        running_agent(
            tmp_path,
            master,
            "--resources",
            RECORDED_RESOURCES,
            "--attributes",
            RECORDED_ATTRIBUTES,
        ) as agent,
    ):
        assert agent.ready == {
            "id": AGENT_ID,
            "address": agent.address,
            "pid": agent.process.pid,
        }
        [registration] = master.registrations
        assert registration["type"] == "REGISTER"
        register = registration["register"]
        assert register["address"] == agent.address
        assert register["executors"] == []
        info = register["agent_info"]
        assert "id" not in info
        assert info["hostname"] == "localhost"
        assert info["port"] == int(agent.address.rsplit(":", 1)[1])
        assert info["resources"] == parse_resources(RECORDED_RESOURCES)
        assert info["attributes"] == parse_attributes(RECORDED_ATTRIBUTES)

        assert len(master.registrations) == 1, "heartbeat-less but healthy for 15 s"
        status, headers, body = get(agent.address, "/health")
        assert (status, body) == (200, b"")
        assert headers[1:] == [("Content-Length", "0")]
        assert names(headers) == ["Date", "Content-Length"]

        status, headers, body = get(agent.address, "/files/read?path=/no/such/file&offset=0")
        recorded = transcript_json("state", "agent_files_read_missing.meta.json")
        assert (status, body) == (recorded["status"], b"")
        assert names(headers) == [name for name, _ in recorded["response_headers"]]
        assert headers[1:] == [tuple(h) for h in recorded["response_headers"][1:]]


def test_environment_sandbox_and_subscription_match_the_transcripts(
    tmp_path: Path, script: Path
) -> None:
    out = tmp_path / "E1"
    files = {"/payload.txt": UriFile(b"payload-v1: served\n")}
    with UriServer(files) as uris, StubMaster() as master, running_agent(tmp_path, master) as agent:
        uri = {
            "value": uris.url("/payload.txt"),
            "executable": False,
            "extract": False,
            "cache": True,
            "output_file": "fetched_payload.txt",
        }
        task = executor_task("T1", "E1", script=script, out_dir=out, uris=[uri])
        master.run_task(task)
        master.wait_for_state("T1", "TASK_FINISHED")
        wait_for_event(out, "ACKNOWLEDGED", count=3)
        sandbox = sandbox_of(agent, "E1")
        container_id = sandbox.name

        # The exact environment block, key by key.
        recorded_env = transcript_json("executor", "E1", "environ.parent_sh.json")
        env = json.loads((out / "environ.parent_sh.json").read_text())
        assert sorted(env) == sorted(recorded_env)
        expected = dict(recorded_env)
        expected.update(
            MESOS_SLAVE_ID=AGENT_ID,
            MESOS_FRAMEWORK_ID=FRAMEWORK_ID,
            MESOS_EXECUTOR_ID="E1",
            MESOS_SLAVE_PID=f"slave(1)@{agent.address}",
            MESOS_AGENT_ENDPOINT=agent.address,
            MESOS_DIRECTORY=str(sandbox),
            MESOS_SANDBOX=str(sandbox),
            LIBPROCESS_IP="127.0.0.1",
        )
        assert env == expected
        assert "HOME" not in env and "LANG" not in env

        # Process and sandbox: sh -c <value> in the sandbox, 0750, files 0644.
        process = json.loads((out / "process.json").read_text())
        assert process["parent_cmdline"] == ["sh", "-c", task["executor"]["command"]["value"]]
        assert process["cwd"] == str(sandbox)
        assert sandbox == (
            agent.work_dir
            / "agent"
            / "slaves"
            / AGENT_ID
            / "frameworks"
            / FRAMEWORK_ID
            / "executors"
            / "E1"
            / "runs"
            / container_id
        )
        listing = json.loads((out / "sandbox_at_start.json").read_text())
        assert listing["mode"] == "0o750"
        recorded_listing = transcript_json("executor", "E1", "sandbox_listing_at_start.json")
        assert [e["name"] for e in listing["entries"]] == [
            e["name"] for e in recorded_listing["entries"]
        ]
        assert {e["name"]: e["mode"] for e in listing["entries"]} == {
            e["name"]: e["mode"] for e in recorded_listing["entries"]
        }
        payload = next(e for e in listing["entries"] if e["name"] == "fetched_payload.txt")
        assert payload["content"] == "payload-v1: served\n"
        stderr = (sandbox / "stderr").read_text()
        assert "Fetcher Info: " in stderr and '"action":"DOWNLOAD_AND_CACHE"' in stderr

        # SUBSCRIBE: 200, chunked, no Mesos-Stream-Id, recorded header order.
        response = json.loads((out / "subscribe_response.json").read_text())
        recorded_head = transcript_json("executor", "E1", "subscribe.response.meta.json")
        assert (response["status"], response["reason"]) == (200, "OK")
        assert names(response["headers"]) == names(recorded_head["headers"])
        assert response["headers"][1:] == recorded_head["headers"][1:]

        # Events: SUBSCRIBED, LAUNCH, then one ACKNOWLEDGED per update, shaped as recorded.
        events = events_of(out)
        assert [e["type"] for e in events] == [
            "SUBSCRIBED",
            "LAUNCH",
            "ACKNOWLEDGED",
            "ACKNOWLEDGED",
            "ACKNOWLEDGED",
        ]
        recorded_subscribed = transcript_json("executor", "E1", "events", "001_SUBSCRIBED.json")
        subscribed = events[0]["subscribed"]
        assert list(subscribed) == list(recorded_subscribed["subscribed"])
        executor_info = subscribed["executor_info"]
        assert list(executor_info) == list(recorded_subscribed["subscribed"]["executor_info"])
        assert executor_info["framework_id"] == {"value": FRAMEWORK_ID}
        assert list(executor_info["command"]) == ["uris", "shell", "value"]
        assert executor_info["command"]["shell"] is True
        assert subscribed["framework_info"] == FRAMEWORK_INFO
        agent_info = subscribed["agent_info"]
        assert list(agent_info) == list(recorded_subscribed["subscribed"]["agent_info"])
        assert agent_info["id"] == {"value": AGENT_ID}
        assert all("role" not in r and "allocation_info" not in r for r in agent_info["resources"])
        assert subscribed["container_id"] == {"value": container_id}
        launched = events[1]["launch"]["task"]
        assert launched["executor"] == executor_info
        assert launched["data"] == task["data"]

        # UPDATE calls: 202, Date + Content-Length: 0, empty body; ACKNOWLEDGED {task_id, uuid}.
        calls = read_jsonl(out / "calls.jsonl")
        recorded_call = transcript_json(
            "executor", "E1", "calls", "01_UPDATE_TASK_STARTING_T1.meta.json"
        )
        for call in calls:
            assert (call["status"], call["reason"], call["body"]) == (202, "Accepted", "")
            assert names(call["headers"]) == names(recorded_call["headers"])
            assert call["headers"][1] == ["Content-Length", "0"]
        sent_uuids = [c["request"]["update"]["status"]["uuid"] for c in calls]
        assert [e["acknowledged"] for e in events[2:]] == [
            {"task_id": {"value": "T1"}, "uuid": u} for u in sent_uuids
        ]

        # Forwarded updates: the executor's fields kept, agent_id and container_status added,
        # no executor_id added, keys in the recorded order.
        forwarded = master.statuses("T1")
        assert [s["state"] for s in forwarded] == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
        recorded_running = transcript_json(
            "scheduler", "fw1_main", "events", "006_UPDATE_TASK_RUNNING_T1.json"
        )["update"]["status"]
        running = forwarded[1]
        assert list(running) == list(recorded_running)
        sent_running = calls[1]["request"]["update"]["status"]
        for key in ("uuid", "timestamp", "message", "data", "source", "state", "task_id"):
            assert running[key] == sent_running[key]
        assert running["agent_id"] == {"value": AGENT_ID}
        container = running["container_status"]
        assert list(container) == list(recorded_running["container_status"])
        assert container["container_id"] == {"value": container_id}
        assert container["network_infos"] == recorded_running["container_status"]["network_infos"]
        assert isinstance(container["executor_pid"], int)
        assert "executor_id" not in running
        update_call = master.calls_of("UPDATE")[0]
        assert update_call == {
            "type": "UPDATE",
            "update": {"framework_id": {"value": FRAMEWORK_ID}, "status": forwarded[0]},
        }


def test_unacknowledged_update_is_resent_and_blocks_the_next(tmp_path: Path, script: Path) -> None:
    out = tmp_path / "E2"
    with (
        StubMaster(auto_ack=False) as master,
        running_agent(tmp_path, master, "--status-update-retry-seconds", "0.4"),
    ):
        master.run_task(executor_task("T12", "E2", script=script, out_dir=out))
        # The executor is told ACKNOWLEDGED for all three at once: the agent took them.
        wait_for_event(out, "ACKNOWLEDGED", count=3)

        def three_starting() -> list[tuple[float, JSON]] | None:
            calls = [(t, c) for t, c in master.calls if c.get("type") == "UPDATE"]
            return calls if len(calls) >= 3 else None

        calls = wait_until(three_starting, 20, "two resends of TASK_STARTING")[:3]
        states = [c["update"]["status"]["state"] for _, c in calls]
        assert states == ["TASK_STARTING"] * 3, "RUNNING must wait for the acknowledgement"
        assert calls[0][1] == calls[1][1] == calls[2][1]
        first_gap, second_gap = calls[1][0] - calls[0][0], calls[2][0] - calls[1][0]
        # 0.4 s, then doubled to 0.8 s (10 s then 20 s at the default interval, as recorded).
        assert 0.35 <= first_gap < 5.0
        assert second_gap >= 0.75

        starting = calls[0][1]["update"]["status"]
        master.acknowledge(FRAMEWORK_ID, "T12", starting["uuid"])
        running = master.wait_for_state("T12", "TASK_RUNNING")
        assert "TASK_FINISHED" not in [s["state"] for s in master.statuses("T12")]
        master.acknowledge(FRAMEWORK_ID, "T12", running["uuid"])
        finished = master.wait_for_state("T12", "TASK_FINISHED")
        master.acknowledge(FRAMEWORK_ID, "T12", finished["uuid"])


def test_kill_messages_both_ways_and_framework_shutdown(tmp_path: Path, script: Path) -> None:
    out = tmp_path / "E1"
    with (
        StubMaster() as master,
        running_agent(tmp_path, master, "--executor-shutdown-grace-period", "1"),
    ):
        master.run_task(
            executor_task("T2", "E1", script=script, out_dir=out, data={"mode": "sleep"})
        )
        master.wait_for_state("T2", "TASK_RUNNING")
        ping = base64.b64encode(b"ping from scheduler").decode()
        master.message("E1", ping)
        [message_event] = wait_for_event(out, "MESSAGE")
        assert message_event == {"type": "MESSAGE", "message": {"data": ping}}
        message_call = master.wait_for_call("MESSAGE")
        assert message_call == {
            "type": "MESSAGE",
            "message": {
                "framework_id": {"value": FRAMEWORK_ID},
                "executor_id": {"value": "E1"},
                "data": base64.b64encode(b"pong: ping from scheduler").decode(),
            },
        }

        [reply] = [
            c for c in read_jsonl(out / "calls.jsonl") if c["label"] == "MESSAGE_to_scheduler"
        ]
        recorded_reply = transcript_json(
            "executor", "E1", "calls", "06_MESSAGE_to_scheduler.meta.json"
        )
        assert (reply["status"], reply["body"]) == (recorded_reply["status"], "")
        assert names(reply["headers"]) == names(recorded_reply["headers"])

        master.kill_task("T2")
        [kill] = wait_for_event(out, "KILL")
        assert kill == transcript_json("executor", "E1", "events", "010_KILL.json")
        master.wait_for_state("T2", "TASK_KILLED")
        assert [s["state"] for s in master.statuses("T2")][-2:] == ["TASK_KILLING", "TASK_KILLED"]

        pid = json.loads((out / "process.json").read_text())["pid"]
        master.shutdown_framework()
        [shutdown] = wait_for_event(out, "SHUTDOWN")
        assert shutdown == {"type": "SHUTDOWN"}
        wait_until(lambda: not pid_alive(pid), 20, "the executor to exit")
        assert master.calls_of("EXECUTOR_EXITED") == []


@pytest.mark.parametrize(("how", "status"), [("kill-9", 35072), ("exit-3", 768)])
def test_executor_death_fails_unfinished_tasks(
    tmp_path: Path, script: Path, how: str, status: int
) -> None:
    out = tmp_path / "E5"
    data = {"mode": "sleep"} if how == "kill-9" else {"mode": "exit", "code": 3}
    with StubMaster() as master, running_agent(tmp_path, master):
        master.run_task(executor_task("T10", "E5", script=script, out_dir=out, data=data))
        master.wait_for_state("T10", "TASK_RUNNING")
        if how == "kill-9":
            pid = json.loads((out / "process.json").read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
        failed = master.wait_for_state("T10", "TASK_FAILED")
        exited = master.wait_for_call("EXECUTOR_EXITED")
        assert exited == {
            "type": "EXECUTOR_EXITED",
            "executor_exited": {
                "framework_id": {"value": FRAMEWORK_ID},
                "executor_id": {"value": "E5"},
                "status": status,
            },
        }
        # FAILURE first, then the TASK_FAILED update, as the scheduler saw them.
        order = [
            c["type"] if c["type"] != "UPDATE" else c["update"]["status"]["state"]
            for _, c in master.calls
        ]
        assert order.index("EXECUTOR_EXITED") < order.index("TASK_FAILED")
        recorded = transcript_json(
            "scheduler", "fw1_main", "events", "058_UPDATE_TASK_FAILED_T10.json"
        )["update"]["status"]
        assert list(failed) == list(recorded)
        for key in ("state", "message", "source", "reason", "executor_id"):
            assert failed[key] == recorded[key]
        assert failed["agent_id"] == {"value": AGENT_ID}
        assert failed["uuid"] and isinstance(failed["timestamp"], float)
        assert "container_status" not in failed


def test_command_tasks(tmp_path: Path) -> None:
    with StubMaster() as master, running_agent(tmp_path, master) as agent:

        def command_task(task_id: str, value: str, **extra: Any) -> JSON:
            return {
                "name": f"task {task_id}",
                "task_id": {"value": task_id},
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                ],
                "command": {"value": value, **extra},
            }

        master.run_task(
            command_task(
                "T6",
                'echo "$GREETING from $MESOS_EXECUTOR_ID" > out.txt',
                environment={"variables": [{"name": "GREETING", "value": "hello"}]},
            )
        )
        master.run_task(command_task("T7", "exit 3"))
        master.run_task(command_task("T8", "sleep 60"))
        finished = master.wait_for_state("T6", "TASK_FINISHED")
        recorded = transcript_json(
            "scheduler", "fw1_main", "events", "024_UPDATE_TASK_FINISHED_T6.json"
        )["update"]["status"]
        assert list(finished) == list(recorded)
        assert finished["message"] == "Command exited with status 0"
        assert [s["state"] for s in master.statuses("T6")] == [
            "TASK_STARTING",
            "TASK_RUNNING",
            "TASK_FINISHED",
        ]
        assert all(s["executor_id"] == {"value": "T6"} for s in master.statuses("T6"))
        assert all(s["source"] == "SOURCE_EXECUTOR" for s in master.statuses("T6"))

        failed = master.wait_for_state("T7", "TASK_FAILED")
        assert failed["message"] == "Command exited with status 3"

        master.wait_for_state("T8", "TASK_RUNNING")
        master.kill_task("T8")
        killed = master.wait_for_state("T8", "TASK_KILLED")
        assert killed["executor_id"] == {"value": "T8"}
        assert "TASK_KILLING" in [s["state"] for s in master.statuses("T8")]

        # SHUTDOWN of a command task's executor kills the task, which is reported.
        master.run_task(command_task("T9", "sleep 60"))
        master.wait_for_state("T9", "TASK_RUNNING")
        master.shutdown_executor("T9")
        assert master.wait_for_state("T9", "TASK_KILLED")["source"] == "SOURCE_EXECUTOR"

        # No FAILURE for executors the agent made for command tasks (as recorded for T6).
        def t6_completed() -> bool:
            state = json.loads(get(agent.address, "/state")[2])
            done = state["frameworks"][0]["completed_executors"] if state["frameworks"] else []
            return any(e["id"] == "T6" for e in done)

        wait_until(t6_completed, 20, "the command executor of T6 to exit")
        assert master.calls_of("EXECUTOR_EXITED") == []

        # The command ran in the command executor's sandbox with the task's environment;
        # the file is readable through the virtual /files path.
        path = f"/frameworks/{FRAMEWORK_ID}/executors/T6/runs/latest/out.txt"
        status, _, body = get(agent.address, f"/files/read?path={path}&offset=0")
        assert status == 200
        assert json.loads(body) == {"data": "hello from T6\n", "offset": 0}


def test_executor_registration_timeout(tmp_path: Path) -> None:
    with (
        StubMaster() as master,
        running_agent(tmp_path, master, "--executor-registration-timeout", "1") as agent,
    ):
        task = {
            "name": "never subscribes",
            "task_id": {"value": "TR"},
            "resources": [],
            "executor": {
                "executor_id": {"value": "ER"},
                "command": {"value": "sleep 60"},
                "name": "silent",
            },
        }
        master.run_task(task)
        sandbox = sandbox_of(agent, "ER")
        failed = master.wait_for_state("TR", "TASK_FAILED")
        assert failed["reason"] == "REASON_EXECUTOR_REGISTRATION_TIMEOUT"
        assert failed["source"] == "SOURCE_AGENT"
        assert failed["message"] == "Executor did not register within 1secs"
        exited = master.wait_for_call("EXECUTOR_EXITED")
        assert exited["executor_exited"]["status"] == int(signal.SIGTERM)
        assert sandbox.is_dir()


def test_files_and_state(tmp_path: Path, script: Path) -> None:
    out = tmp_path / "E1"
    files = {"/payload.txt": UriFile(b"payload\n")}
    with UriServer(files) as uris, StubMaster() as master, running_agent(tmp_path, master) as agent:
        uri = {"value": uris.url("/payload.txt"), "cache": False, "extract": False}
        master.run_task(
            executor_task(
                "T1", "E1", script=script, out_dir=out, uris=[uri], data={"mode": "finish"}
            )
        )
        master.wait_for_state("T1", "TASK_FINISHED")
        master.run_task(
            executor_task("T2", "E1", script=script, out_dir=out, data={"mode": "sleep"})
        )
        master.wait_for_state("T2", "TASK_RUNNING")
        sandbox = sandbox_of(agent, "E1")
        stdout = (sandbox / "stdout").read_text()
        assert stdout.startswith("[recording_executor] started")

        status, headers, body = get(agent.address, f"/files/read?path={sandbox}/stdout&offset=0")
        recorded = transcript_json("state", "agent_files_read_stdout_real_path.meta.json")
        assert status == 200
        assert names(headers) == names(recorded["response_headers"])
        assert json.loads(body) == {"data": stdout, "offset": 0}
        virtual = f"/frameworks/{FRAMEWORK_ID}/executors/E1/runs/latest/stdout"
        assert get(agent.address, f"/files/read?path={virtual}&offset=0")[2] == body
        by_id = f"/frameworks/{FRAMEWORK_ID}/executors/E1/runs/{sandbox.name}/stdout"
        assert get(agent.address, f"/files/read?path={by_id}&offset=0")[2] == body
        size = json.loads(get(agent.address, f"/files/read?path={virtual}&offset=-1")[2])
        assert size == {"data": "", "offset": len(stdout.encode())}
        part = json.loads(get(agent.address, f"/files/read?path={virtual}&offset=1&length=4")[2])
        assert part == {"data": stdout[1:5], "offset": 1}
        for bad in (
            "/etc/hostname",
            f"{sandbox}/../../../../../../../../etc/hostname",
            f"/frameworks/{FRAMEWORK_ID}/executors/NOPE/runs/latest/stdout",
        ):
            assert get(agent.address, f"/files/read?path={bad}&offset=0")[:3:2] == (404, b"")

        status, _, body = get(agent.address, f"/files/browse?path={sandbox}")
        assert status == 200
        listing = json.loads(body)
        recorded_listing = transcript_json("state", "agent_files_browse_sandbox.json")
        assert [Path(e["path"]).name for e in listing] == ["payload.txt", "stderr", "stdout"]
        assert all(sorted(e) == sorted(recorded_listing[0]) for e in listing)
        assert {e["mode"] for e in listing} == {"-rw-r--r--"}

        status, headers, body = get(agent.address, "/state")
        assert status == 200
        assert names(headers) == ["Date", "Content-Length", "Content-Type"]
        state = json.loads(body)
        recorded_state = transcript_json("state", "agent_state.json")
        for key in ("id", "pid", "hostname", "resources", "attributes", "frameworks", "flags"):
            assert key in state
        assert state["id"] == AGENT_ID and state["pid"] == f"slave(1)@{agent.address}"
        [framework] = state["frameworks"]
        recorded_framework = recorded_state["frameworks"][0]
        assert list(framework) == list(recorded_framework)
        [executor] = framework["executors"]
        recorded_executor = recorded_framework["executors"][0]
        assert list(executor) == list(recorded_executor)
        assert executor["directory"] == str(sandbox)
        assert executor["container"] == sandbox.name
        assert [t["id"] for t in executor["tasks"]] == ["T2"]
        assert [t["id"] for t in executor["completed_tasks"]] == ["T1"]
        assert executor["queued_tasks"] == []
        task = executor["tasks"][0]
        assert list(task) == list(recorded_executor["tasks"][0])
        assert task["state"] == "TASK_RUNNING"
        assert [list(s) for s in task["statuses"]] == [
            list(s) for s in recorded_executor["tasks"][0]["statuses"]
        ]
        assert "executor_pid" not in task["statuses"][0]["container_status"]


def test_reregisters_with_its_id_and_executors(tmp_path: Path, script: Path) -> None:
    out = tmp_path / "E1"
    with StubMaster() as master, running_agent(tmp_path, master):
        task = executor_task("T2", "E1", script=script, out_dir=out, data={"mode": "sleep"})
        master.run_task(task)
        master.wait_for_state("T2", "TASK_RUNNING")
        master.drop_stream()
        registrations = master.wait_for_registrations(2)
        again = registrations[1]["register"]
        assert again["agent_info"]["id"] == {"value": AGENT_ID}
        [executor] = again["executors"]
        assert executor["framework_id"] == {"value": FRAMEWORK_ID}
        assert executor["executor_info"]["executor_id"] == {"value": "E1"}
        assert [t["task_id"]["value"] for t in executor["tasks"]] == ["T2"]
        assert [s["state"] for s in executor["statuses"]] == ["TASK_RUNNING"]
        # The new stream works both ways.
        wait_until(lambda: master._stream is not None, 10, "the new stream")
        master.kill_task("T2")
        master.wait_for_state("T2", "TASK_KILLED")


def test_silent_master_link_is_dropped_after_missed_heartbeats(tmp_path: Path) -> None:
    # The stub sends no HEARTBEAT at all; with a 0.2 s interval the agent gives up on the
    # stream after 3 intervals of silence and registers again, with its id.
    with StubMaster(heartbeat_interval=0.2) as master, running_agent(tmp_path, master) as agent:
        registrations = master.wait_for_registrations(2, timeout=10)
        assert registrations[1]["register"]["agent_info"]["id"] == {"value": AGENT_ID}
        assert "heartbeats); registering again" in agent.log()


def test_sigterm_stops_every_executor_and_exits_zero(tmp_path: Path, script: Path) -> None:
    out = tmp_path / "E1"
    with (
        StubMaster() as master,
        AgentProcess(tmp_path, master.address, "--executor-shutdown-grace-period", "1") as agent,
    ):
        agent.wait_ready()
        master.run_task(
            executor_task("T2", "E1", script=script, out_dir=out, data={"mode": "sleep"})
        )
        master.run_task(
            {
                "name": "c",
                "task_id": {"value": "C1"},
                "resources": [],
                "command": {"value": "sleep 120"},
            }
        )
        running = master.wait_for_state("T2", "TASK_RUNNING")
        command = master.wait_for_state("C1", "TASK_RUNNING")
        sessions = [
            running["container_status"]["executor_pid"],
            command["container_status"]["executor_pid"],
        ]
        wait_until(lambda: len(session_pids(sessions[1])) >= 3, 10, "the command's processes")
        pids = [pid for session in sessions for pid in session_pids(session)]
        assert len(pids) >= 5
        assert agent.terminate(timeout=30) == 0
        assert events_of(out)[-1]["type"] in ("SHUTDOWN", "_EOF")
        assert "SHUTDOWN" in [e["type"] for e in events_of(out)]
        assert [pid for pid in pids if pid_alive(pid)] == []


def test_executor_api_rejects_bad_calls(tmp_path: Path) -> None:
    with StubMaster() as master, running_agent(tmp_path, master) as agent:
        call = {
            "type": "UPDATE",
            "executor_id": {"value": "E"},
            "framework_id": {"value": "nope"},
            "update": {"status": {}},
        }
        assert post(agent.address, json.dumps(call).encode()) == (
            400,
            b"Framework cannot be found",
        )
        assert post(agent.address, b"{not json")[0] == 400
        assert post(agent.address, b"{}", content_type=None) == (
            400,
            b"Expecting 'Content-Type' to be present",
        )
        assert post(agent.address, json.dumps({"type": "NOPE"}).encode()) == (
            400,
            b"Failed to validate executor::Call: Expecting 'type' to be present",
        )
        assert post(agent.address, json.dumps({"type": "SUBSCRIBE"}).encode()) == (
            400,
            b"Failed to validate executor::Call: Expecting 'executor_id' to be present",
        )
        assert (
            post(agent.address, json.dumps({"type": "SUBSCRIBE", "executor_id": "E"}).encode())[0]
            == 400
        )
        status, headers, body = get(agent.address, "/api/v1/executor")
        assert (status, dict(headers)["Allow"]) == (405, "POST")
        assert body == b"405 Method Not Allowed. Expecting one of { 'POST' }, but received 'GET'."
        # A malformed master event is logged and skipped; the link stays up.
        master.send({"type": "RUN_TASK", "run_task": {"framework_id": 7}})
        master.send({"type": "KILL_TASK"})
        wait_until(lambda: "malformed master event" in agent.log(), 10, "the error to be logged")
        assert get(agent.address, "/health")[0] == 200
        assert len(master.registrations) == 1


def test_executor_environment_variables_reach_the_executor(tmp_path: Path, script: Path) -> None:
    out = tmp_path / "E1"
    variables = {
        "TOIL_MESOS_APPLIANCE": "localhost/toil-mesos:dev",
        "PATH": "/opt/appliance/bin:/usr/bin:/bin",
        "MESOS_FRAMEWORK_ID": "not-the-framework",
        "SHARED": "from-the-flag",
    }
    flag = json.dumps(variables)
    with (
        StubMaster() as master,
        running_agent(tmp_path, master, "--executor-environment-variables", flag) as agent,
    ):
        environment = [{"name": "SHARED", "value": "from-the-task"}]
        master.run_task(
            executor_task("T1", "E1", script=script, out_dir=out, environment=environment)
        )
        master.wait_for_state("T1", "TASK_FINISHED")
        env = json.loads((out / "environ.parent_sh.json").read_text())
        assert env["TOIL_MESOS_APPLIANCE"] == "localhost/toil-mesos:dev"
        assert env["PATH"] == "/opt/appliance/bin:/usr/bin:/bin"
        assert env["MESOS_FRAMEWORK_ID"] == FRAMEWORK_ID  # the agent's own variables win
        assert env["SHARED"] == "from-the-task"  # CommandInfo.environment comes last
        assert "HOME" not in env
        status, _, body = get(agent.address, "/state")
        assert status == 200
        assert json.loads(json.loads(body)["flags"]["executor_environment_variables"]) == (
            variables
        )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("PATH=/bin", "--executor-environment-variables is not JSON"),
        ('["PATH"]', "--executor-environment-variables must be a JSON object of strings"),
        ('{"N": 1}', "--executor-environment-variables must only contain string values"),
    ],
)
def test_bad_executor_environment_variables_exit_with_a_clear_error(
    tmp_path: Path, value: str, message: str
) -> None:
    import subprocess

    result = subprocess.run(
        [
            PYTHON, "-m", "toil_mesos.cluster.agent",
            "--master", "127.0.0.1:1",
            "--host", "127.0.0.1",
            "--port", "0",
            "--work-dir", str(tmp_path / "w"),
            "--ready-file", str(tmp_path / "r.json"),
            "--executor-environment-variables", value,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "r.json").exists()


def test_bad_flags_exit_with_a_clear_error(tmp_path: Path) -> None:
    import subprocess

    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "toil_mesos.cluster.agent",
            "--master",
            "127.0.0.1:1",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--work-dir",
            str(tmp_path / "w"),
            "--ready-file",
            str(tmp_path / "r.json"),
            "--resources",
            "cpus:lots",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid scalar 'lots'" in result.stderr
    assert not (tmp_path / "r.json").exists()


class _Subscription:
    """A hand-made executor subscription, to drive re-SUBSCRIBE exactly."""

    def __init__(self, address: str, body: JSON) -> None:
        host, port = address.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=20)
        self.conn.request(
            "POST",
            "/api/v1/executor",
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        self.response = self.conn.getresponse()
        if self.response.status != 200:
            self.conn.close()
            raise AssertionError(f"SUBSCRIBE answered {self.response.status}")
        self.buffer = b""

    def events(self, count: int) -> list[JSON]:
        out: list[JSON] = []
        while len(out) < count:
            if b"\n" in self.buffer:
                size, rest = self.buffer.split(b"\n", 1)
                if len(rest) >= int(size):
                    out.append(json.loads(rest[: int(size)]))
                    self.buffer = rest[int(size) :]
                    continue
            chunk = self.response.read1(65536)  # bounded by the socket timeout
            assert chunk, "the agent closed the stream"
            self.buffer += chunk
        return out

    def close(self) -> None:
        self.conn.close()


def test_resubscribe_honours_unacknowledged_tasks_and_updates(tmp_path: Path) -> None:
    grace = ("--executor-shutdown-grace-period", "1")
    with StubMaster() as master, running_agent(tmp_path, master, *grace) as agent:

        def task(task_id: str) -> JSON:
            return {
                "name": task_id,
                "task_id": {"value": task_id},
                "resources": [],
                "executor": {"executor_id": {"value": "EX"}, "command": {"value": "sleep 60"}},
            }

        def queued() -> list[str]:
            state = json.loads(get(agent.address, "/state")[2])
            if not state["frameworks"] or not state["frameworks"][0]["executors"]:
                return []
            return [t["id"] for t in state["frameworks"][0]["executors"][0]["queued_tasks"]]

        master.run_task(task("T1"))
        wait_until(lambda: queued() == ["T1"], 20, "T1 queued until the executor subscribes")
        # Stand in for the executor once its process runs (sleep 60 never subscribes itself).
        wait_until(lambda: "started executor EX" in agent.log(), 20, "the executor process")
        call = {
            "type": "SUBSCRIBE",
            "executor_id": {"value": "EX"},
            "framework_id": {"value": FRAMEWORK_ID},
            "subscribe": {"unacknowledged_tasks": [], "unacknowledged_updates": []},
        }
        first = _Subscription(agent.address, call)
        subscribed, launch = first.events(2)
        assert subscribed["type"] == "SUBSCRIBED"
        assert launch["launch"]["task"]["task_id"] == {"value": "T1"}
        first.close()
        wait_until(lambda: "executor EX disconnected" in agent.log(), 20, "the disconnection")

        master.run_task(task("T2"))
        wait_until(lambda: queued() == ["T2"], 20, "T2 queued while the executor is away")
        running = {
            "task_id": {"value": "T1"},
            "state": "TASK_RUNNING",
            "source": "SOURCE_EXECUTOR",
            "uuid": "dW5hY2tub3dsZWRnZWQtMQ==",
            "timestamp": 1795547396.5,
        }
        call["subscribe"] = {
            "unacknowledged_tasks": [launch["launch"]["task"]],
            "unacknowledged_updates": [{"status": running}],
        }
        second = _Subscription(agent.address, call)
        events = second.events(3)
        assert [e["type"] for e in events] == ["SUBSCRIBED", "ACKNOWLEDGED", "LAUNCH"]
        assert events[1]["acknowledged"] == {"task_id": {"value": "T1"}, "uuid": running["uuid"]}
        assert events[2]["launch"]["task"]["task_id"] == {"value": "T2"}, "T1 is not resent"
        forwarded = master.wait_for_state("T1", "TASK_RUNNING")
        assert forwarded["uuid"] == running["uuid"]
        second.close()

        # The same update again is a duplicate: acknowledged, not forwarded twice.
        call["subscribe"] = {
            "unacknowledged_tasks": [],
            "unacknowledged_updates": [{"status": running}],
        }
        third = _Subscription(agent.address, call)
        assert [e["type"] for e in third.events(2)] == ["SUBSCRIBED", "ACKNOWLEDGED"]
        third.close()
        assert len(master.statuses("T1")) == 1


DRIVER_EXECUTOR = """
from toil_mesos.mesos import ExecutorDriver
from toil_mesos.mesos.interface import Executor


class Echo(Executor):
    def launchTask(self, driver, task):
        driver.sendStatusUpdate({"task_id": task.task_id, "state": "TASK_RUNNING"})
        driver.sendFrameworkMessage(task.data)
        driver.sendStatusUpdate({"task_id": task.task_id, "state": "TASK_FINISHED"})

    def frameworkMessage(self, driver, message):
        driver.sendFrameworkMessage(message)

    def shutdown(self, driver):
        driver.stop()


print(ExecutorDriver(Echo()).run(), flush=True)
"""


def test_the_projects_executor_driver_works_against_the_agent(tmp_path: Path) -> None:
    script = tmp_path / "driver_executor.py"
    script.write_text(DRIVER_EXECUTOR)
    grace = ("--executor-shutdown-grace-period", "2")
    with StubMaster() as master, running_agent(tmp_path, master, *grace) as agent:
        data = base64.b64encode(b"hello").decode()
        master.run_task(
            {
                "name": "driver task",
                "task_id": {"value": "D1"},
                "resources": [],
                "data": data,
                "executor": {
                    "executor_id": {"value": "DE"},
                    "command": {"value": f"{PYTHON} {script}"},
                },
            }
        )
        master.wait_for_state("D1", "TASK_FINISHED")
        assert [s["state"] for s in master.statuses("D1")] == ["TASK_RUNNING", "TASK_FINISHED"]
        assert master.wait_for_call("MESSAGE")["message"]["data"] == data
        echo = base64.b64encode(b"ping").decode()
        master.message("DE", echo)
        wait_until(lambda: len(master.calls_of("MESSAGE")) == 2, 20, "the echoed message")
        assert master.calls_of("MESSAGE")[1]["message"]["data"] == echo
        master.shutdown_executor("DE")
        exited = master.wait_for_call("EXECUTOR_EXITED")
        assert exited["executor_exited"]["status"] == 0, agent.log()
        stdout = (sandbox_of(agent, "DE") / "stdout").read_text()
        assert "DRIVER_STOPPED" in stdout


def test_subscribed_executors_exit_when_the_agent_is_killed(tmp_path: Path, script: Path) -> None:
    # MESOS_CHECKPOINT=0: an executor whose agent is gone has nothing to reconnect to, so the
    # recording executor and the command executor (with its task) end on their own.
    with StubMaster() as master, AgentProcess(tmp_path, master.address) as agent:
        agent.wait_ready()
        out = tmp_path / "E1"
        master.run_task(
            executor_task("T2", "E1", script=script, out_dir=out, data={"mode": "sleep"})
        )
        master.run_task(
            {
                "name": "c",
                "task_id": {"value": "C1"},
                "resources": [],
                "command": {"value": "sleep 120"},
            }
        )
        sessions = [
            master.wait_for_state(task, "TASK_RUNNING")["container_status"]["executor_pid"]
            for task in ("T2", "C1")
        ]
        wait_until(lambda: len(session_pids(sessions[1])) >= 3, 10, "the command's processes")
        pids = [pid for session in sessions for pid in session_pids(session)]
        agent.kill()
        try:
            wait_until(lambda: not [p for p in pids if pid_alive(p)], 20, "executors to exit")
        finally:
            for pid in pids:  # only if the assertion failed: never leave them behind
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
