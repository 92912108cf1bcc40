"""Helpers for the agent's integration tests: a stub master, a URI server, the agent process
and a small recording executor (stdlib only) modelled on the one that made the transcripts.

Everything listens on 127.0.0.1 port 0; every wait is bounded; only processes started here
are stopped, by their own ids.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

JSON = dict[str, Any]

TRANSCRIPTS = Path(os.environ.get("TOIL_MESOS_TRANSCRIPTS", "/work/shared/mesos-transcripts"))
PYTHON = sys.executable
FRAMEWORK_ID = "42f618ee-43f9-4ca8-88a7-31221df616de-0000"
AGENT_ID = "42f618ee-43f9-4ca8-88a7-31221df616de-S0"
FRAMEWORK_INFO: JSON = {
    "user": "root",
    "name": "transcript-fw1",
    "id": {"value": FRAMEWORK_ID},
    "failover_timeout": 120.0,
    "checkpoint": False,
    "roles": ["*"],
    "capabilities": [{"type": "MULTI_ROLE"}, {"type": "TASK_KILLING_STATE"}],
}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll *predicate* with a bounded condition wait until it returns something truthy."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        event.wait(min(0.05, remaining))


def b64(obj: Any) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


# -- file server ---------------------------------------------------------------------------


class FileServer(ThreadingHTTPServer):
    """Serves named byte strings with Content-Length (so an agent's fetcher caches them), and
    records the method of every request, as the fetcher sent them."""

    daemon_threads = True

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                outer.requests.append(self.command)
                data = outer.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._answer(False)

            def do_GET(self) -> None:
                self._answer(True)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def url(self, name: str, data: bytes) -> str:
        """Serve *data* as *name*; the URL to fetch it from."""
        self.files[name] = data
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(10)


# -- stub master ---------------------------------------------------------------------------


class _MasterHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _MasterServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        master = self.server.master
        if self.path == "/internal/agent":
            master._register(self, body)
        elif self.path == "/internal/agent/call":
            code = master._call(body, self.headers.get("Mesos-Stream-Id"))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


class _MasterServer(ThreadingHTTPServer):
    daemon_threads = True
    master: StubMaster


@dataclass
class _Stream:
    stream_id: str
    events: queue.Queue[JSON | None] = field(default_factory=queue.Queue)


class StubMaster:
    """Speaks the master's side of ``/internal/agent``: REGISTERED, then whatever the test sends.

    Calls are recorded in order; UPDATEs with a uuid are acknowledged at once unless
    ``auto_ack`` is false.
    """

    def __init__(
        self, *, agent_id: str = AGENT_ID, auto_ack: bool = True, heartbeat_interval: float = 15.0
    ) -> None:
        self.agent_id = agent_id
        self.auto_ack = auto_ack
        self.heartbeat_interval = heartbeat_interval
        self.registrations: list[JSON] = []
        self.calls: list[tuple[float, JSON]] = []
        self._cond = threading.Condition()
        self._stream: _Stream | None = None
        self._closing = False
        self._server = _MasterServer(("127.0.0.1", 0), _MasterHandler)
        self._server.master = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        with self._cond:
            self._closing = True
            if self._stream is not None:
                self._stream.events.put(None)
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StubMaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- server side ----------------------------------------------------------------------

    def _register(self, handler: _MasterHandler, body: JSON) -> None:
        stream = _Stream(stream_id=str(uuid.uuid4()))
        with self._cond:
            self.registrations.append(body)
            if self._stream is not None:
                self._stream.events.put(None)
            self._stream = stream
            self._cond.notify_all()
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Mesos-Stream-Id", stream.stream_id)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        handler.close_connection = True
        requested = body["register"]["agent_info"].get("id", {}).get("value")
        stream.events.put(
            {
                "type": "REGISTERED",
                "registered": {
                    "agent_id": {"value": requested or self.agent_id},
                    "heartbeat_interval_seconds": self.heartbeat_interval,
                },
            }
        )
        try:
            while True:
                try:
                    event = stream.events.get(timeout=0.2)
                except queue.Empty:
                    if self._closing:
                        break
                    continue
                if event is None:
                    break
                data = json.dumps(event).encode()
                record = b"%d\n%s" % (len(data), data)
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(record), record))
                handler.wfile.flush()
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            pass

    def _call(self, body: JSON, stream_id: str | None) -> int:
        with self._cond:
            if self._stream is None or stream_id != self._stream.stream_id:
                return 404
            self.calls.append((time.monotonic(), body))
            self._cond.notify_all()
            if body.get("type") == "UPDATE" and self.auto_ack:
                status = body["update"]["status"]
                if status.get("uuid"):
                    self.acknowledge(
                        body["update"]["framework_id"]["value"],
                        status["task_id"]["value"],
                        status["uuid"],
                    )
        return 202

    # -- test side ------------------------------------------------------------------------

    def send(self, event: JSON) -> None:
        with self._cond:
            assert self._stream is not None, "no agent is registered"
            self._stream.events.put(event)

    def drop_stream(self) -> None:
        """End the agent's stream (it must register again)."""
        with self._cond:
            if self._stream is not None:
                self._stream.events.put(None)
                self._stream = None

    def run_task(self, task: JSON, *, framework_info: JSON | None = None) -> None:
        info = framework_info or FRAMEWORK_INFO
        task = dict(task)
        task.setdefault("agent_id", {"value": self.agent_id})
        self.send(
            {
                "type": "RUN_TASK",
                "run_task": {
                    "framework_id": {"value": info["id"]["value"]},
                    "framework_info": info,
                    "task": task,
                },
            }
        )

    def kill_task(self, task_id: str, framework_id: str = FRAMEWORK_ID) -> None:
        self.send(
            {
                "type": "KILL_TASK",
                "kill_task": {
                    "framework_id": {"value": framework_id},
                    "task_id": {"value": task_id},
                },
            }
        )

    def message(self, executor_id: str, data: str, framework_id: str = FRAMEWORK_ID) -> None:
        self.send(
            {
                "type": "MESSAGE",
                "message": {
                    "framework_id": {"value": framework_id},
                    "executor_id": {"value": executor_id},
                    "data": data,
                },
            }
        )

    def acknowledge(self, framework_id: str, task_id: str, ack_uuid: str) -> None:
        assert self._stream is not None
        self._stream.events.put(
            {
                "type": "ACKNOWLEDGE",
                "acknowledge": {
                    "framework_id": {"value": framework_id},
                    "task_id": {"value": task_id},
                    "uuid": ack_uuid,
                },
            }
        )

    def shutdown_framework(self, framework_id: str = FRAMEWORK_ID) -> None:
        self.send(
            {
                "type": "SHUTDOWN_FRAMEWORK",
                "shutdown_framework": {"framework_id": {"value": framework_id}},
            }
        )

    def shutdown_executor(self, executor_id: str, framework_id: str = FRAMEWORK_ID) -> None:
        self.send(
            {
                "type": "SHUTDOWN_EXECUTOR",
                "shutdown_executor": {
                    "framework_id": {"value": framework_id},
                    "executor_id": {"value": executor_id},
                },
            }
        )

    def calls_of(self, kind: str) -> list[JSON]:
        with self._cond:
            return [body for _, body in self.calls if body.get("type") == kind]

    def statuses(self, task_id: str | None = None) -> list[JSON]:
        """Statuses of the UPDATE calls, in order (resends included)."""
        return [
            c["update"]["status"]
            for c in self.calls_of("UPDATE")
            if task_id is None or c["update"]["status"]["task_id"]["value"] == task_id
        ]

    def wait_for_state(self, task_id: str, state: str, timeout: float = 20.0) -> JSON:
        def find() -> JSON | None:
            for status in self.statuses(task_id):
                if status["state"] == state:
                    return status
            return None

        result: JSON = wait_until(find, timeout, f"{state} of {task_id}")
        return result

    def wait_for_call(self, kind: str, timeout: float = 20.0) -> JSON:
        result: JSON = wait_until(lambda: self.calls_of(kind), timeout, f"a {kind} call")[0]
        return result

    def wait_for_registrations(self, count: int, timeout: float = 20.0) -> list[JSON]:
        def enough() -> list[JSON] | None:
            with self._cond:
                return list(self.registrations) if len(self.registrations) >= count else None

        result: list[JSON] = wait_until(enough, timeout, f"{count} registrations")
        return result


# -- URI server ----------------------------------------------------------------------------


@dataclass
class UriFile:
    body: bytes
    content_length: bool = True
    status: int = 200


class _UriHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _UriServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self, *, head: bool) -> None:
        uri_server = self.server.uri_server
        with uri_server.lock:
            uri_server.requests.append(
                {"method": self.command, "path": self.path, "headers": list(self.headers.items())}
            )
        file = uri_server.files.get(self.path)
        if file is None or file.status != 200:
            self.send_response(404 if file is None else file.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        if file.content_length:
            self.send_header("Content-Length", str(len(file.body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head:
            self.wfile.write(file.body)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)


class _UriServer(ThreadingHTTPServer):
    daemon_threads = True
    uri_server: UriServer


class UriServer:
    """Serves ``files`` (path -> :class:`UriFile`) and records every request it sees."""

    def __init__(self, files: dict[str, UriFile]) -> None:
        self.files = files
        self.requests: list[JSON] = []
        self.lock = threading.Lock()
        self._server = _UriServer(("127.0.0.1", 0), _UriHandler)
        self._server.uri_server = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def seen(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(r["method"], r["path"]) for r in self.requests]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> UriServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the agent process ---------------------------------------------------------------------


class AgentProcess:
    """``python -m toil_mesos.cluster.agent`` as a child in its own session."""

    def __init__(self, work_dir: Path, master: str, *extra: str) -> None:
        self.work_dir = work_dir
        self.ready_file = work_dir / "agent.ready.json"
        self.log_path = work_dir / "agent.log"
        argv = [
            PYTHON,
            "-m",
            "toil_mesos.cluster.agent",
            "--master",
            master,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--work-dir",
            str(work_dir / "agent"),
            "--ready-file",
            str(self.ready_file),
            *extra,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.ready: JSON = {}

    def wait_ready(self, timeout: float = 20.0) -> JSON:
        def ready() -> JSON | None:
            if self.process.poll() is not None:
                raise AssertionError(f"agent exited early:\n{self.log()}")
            if self.ready_file.exists():
                loaded: JSON = json.loads(self.ready_file.read_text())
                return loaded
            return None

        self.ready = wait_until(ready, timeout, "the agent's ready file")
        return self.ready

    @property
    def address(self) -> str:
        return str(self.ready["address"])

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL (and fail) if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"agent did not stop on SIGTERM:\n{self.log()}") from None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        # SIGTERM first, so the agent stops its executors (they run in sessions of their own).
        if self.process.poll() is None:
            with contextlib.suppress(AssertionError):
                self.terminate(timeout=30.0)


def pid_alive(pid: int) -> bool:
    """Whether *pid* exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


# -- the recording executor ----------------------------------------------------------------

RECORDING_EXECUTOR = r'''
"""Recording executor: subscribes to the agent, records what it sees, acts on LAUNCH data."""
import base64, http.client, json, os, sys, time, uuid

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)


def dump(name, obj):
    tmp = os.path.join(OUT, "." + name)
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, os.path.join(OUT, name))


def append(name, obj):
    with open(os.path.join(OUT, name), "a") as f:
        f.write(json.dumps(obj) + "\n")


def environ_of(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        raw = f.read()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if item)


def listing():
    entries = []
    for name in sorted(os.listdir(".")):
        st = os.lstat(name)
        entry = {"name": name, "mode": oct(st.st_mode & 0o7777), "size": st.st_size,
                 "dir": os.path.isdir(name)}
        if not entry["dir"] and st.st_size < 4096 and name not in ("stdout", "stderr"):
            with open(name, "rb") as f:
                entry["content"] = f.read().decode(errors="replace")
        entries.append(entry)
    sandbox = os.environ.get("MESOS_SANDBOX", "")
    return {"cwd": os.getcwd(), "sandbox": sandbox, "mode": oct(os.stat(".").st_mode & 0o7777),
            "entries": entries}


dump("env.json", dict(os.environ))
dump("environ.parent_sh.json", environ_of(os.getppid()))
with open("/proc/%d/cmdline" % os.getppid(), "rb") as f:
    parent_cmdline = [a.decode() for a in f.read().split(b"\0") if a]
dump("process.json", {"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(),
                      "parent_cmdline": parent_cmdline})
dump("sandbox_at_start.json", listing())
print("[recording_executor] started pid=%d" % os.getpid(), flush=True)

HOST, PORT = os.environ["MESOS_AGENT_ENDPOINT"].rsplit(":", 1)
EID = os.environ["MESOS_EXECUTOR_ID"]
FID = os.environ["MESOS_FRAMEWORK_ID"]


def call(label, body):
    conn = http.client.HTTPConnection(HOST, int(PORT), timeout=30)
    conn.request("POST", "/api/v1/executor", body=json.dumps(body),
                 headers={"Content-Type": "application/json", "Accept": "application/json",
                          "Connection": "close"})
    resp = conn.getresponse()
    data = resp.read()
    append("calls.jsonl", {"label": label, "request": body, "status": resp.status,
                           "reason": resp.reason, "headers": resp.getheaders(),
                           "body": data.decode()})
    conn.close()
    return resp.status


def update(task_id, state, **extra):
    status = {"task_id": {"value": task_id}, "state": state, "source": "SOURCE_EXECUTOR",
              "uuid": base64.b64encode(uuid.uuid4().bytes).decode(), "timestamp": time.time()}
    status.update(extra)
    return call("UPDATE_%s_%s" % (state, task_id),
                {"type": "UPDATE", "executor_id": {"value": EID},
                 "framework_id": {"value": FID}, "update": {"status": status}})


conn = http.client.HTTPConnection(HOST, int(PORT), timeout=None)
conn.request("POST", "/api/v1/executor",
             body=json.dumps({"type": "SUBSCRIBE", "executor_id": {"value": EID},
                              "framework_id": {"value": FID},
                              "subscribe": {"unacknowledged_tasks": [],
                                            "unacknowledged_updates": []}}),
             headers={"Content-Type": "application/json", "Accept": "application/json",
                      "Connection": "keep-alive"})
resp = conn.getresponse()
dump("subscribe_response.json", {"status": resp.status, "reason": resp.reason,
                                  "headers": resp.getheaders()})
buf = b""
tasks = {}
while True:
    chunk = resp.read1(65536)
    if not chunk:
        append("events.jsonl", {"type": "_EOF"})
        break
    buf += chunk
    while b"\n" in buf:
        size, rest = buf.split(b"\n", 1)
        if len(rest) < int(size):
            break
        record, buf = rest[: int(size)], rest[int(size):]
        event = json.loads(record)
        append("events.jsonl", event)
        kind = event["type"]
        if kind == "LAUNCH":
            task = event["launch"]["task"]
            tid = task["task_id"]["value"]
            data = json.loads(base64.b64decode(task.get("data", "") or b"e30=") or b"{}")
            tasks[tid] = data
            dump("sandbox_at_launch_%s.json" % tid, listing())
            update(tid, "TASK_STARTING")
            update(tid, "TASK_RUNNING", message="running",
                   data=base64.b64encode(b"running-data").decode())
            mode = data.get("mode", "finish")
            if mode == "finish":
                update(tid, "TASK_FINISHED")
            elif mode == "exit":
                os._exit(int(data.get("code", 3)))
        elif kind == "KILL":
            tid = event["kill"]["task_id"]["value"]
            update(tid, "TASK_KILLING")
            update(tid, "TASK_KILLED")
        elif kind == "MESSAGE":
            text = base64.b64decode(event["message"]["data"]).decode()
            call("MESSAGE_to_scheduler",
                 {"type": "MESSAGE", "executor_id": {"value": EID},
                  "framework_id": {"value": FID},
                  "message": {"data": base64.b64encode(("pong: " + text).encode()).decode()}})
        elif kind == "SHUTDOWN":
            dump("sandbox_at_exit.json", listing())
            sys.exit(0)
'''


def write_recording_executor(directory: Path) -> Path:
    path = directory / "recording_executor.py"
    path.write_text(RECORDING_EXECUTOR)
    return path


def executor_task(
    task_id: str,
    executor_id: str,
    *,
    script: Path,
    out_dir: Path,
    data: JSON | None = None,
    uris: list[JSON] | None = None,
    environment: list[JSON] | None = None,
) -> JSON:
    """A TaskInfo whose custom executor is the recording executor, like the transcripts' T1."""
    command: JSON = {
        "value": f"{PYTHON} {script} {out_dir}",
    }
    if uris is not None:
        command["uris"] = uris
    if environment is not None:
        command["environment"] = {"variables": environment}
    resources = [
        {
            "name": "cpus",
            "type": "SCALAR",
            "scalar": {"value": 0.1},
            "allocation_info": {"role": "*"},
        },
        {
            "name": "mem",
            "type": "SCALAR",
            "scalar": {"value": 32.0},
            "allocation_info": {"role": "*"},
        },
    ]
    return {
        "name": f"task {task_id}",
        "task_id": {"value": task_id},
        "agent_id": {"value": AGENT_ID},
        "resources": resources,
        "executor": {
            "type": "CUSTOM",
            "executor_id": {"value": executor_id},
            "command": command,
            "resources": resources,
            "name": f"recording executor {executor_id}",
        },
        "data": b64(data or {"mode": "finish"}),
    }


def read_jsonl(path: Path) -> list[JSON]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def events_of(out_dir: Path) -> list[JSON]:
    return read_jsonl(out_dir / "events.jsonl")


def wait_for_event(out_dir: Path, kind: str, timeout: float = 20.0, count: int = 1) -> list[JSON]:
    def found() -> list[JSON] | None:
        events = [e for e in events_of(out_dir) if e["type"] == kind]
        return events if len(events) >= count else None

    result: list[JSON] = wait_until(found, timeout, f"{count} {kind} event(s) in {out_dir}")
    return result


def transcript_json(*parts: str) -> Any:
    """A recorded file of the Mesos transcripts; the test is skipped where they are absent."""
    path = TRANSCRIPTS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"Mesos transcripts not found at {TRANSCRIPTS} (set TOIL_MESOS_TRANSCRIPTS)")
    return json.loads(path.read_text())


@contextlib.contextmanager
def running_agent(tmp_path: Path, master: StubMaster, *extra: str) -> Iterator[AgentProcess]:
    """An agent registered with *master*; stopped with SIGTERM (must exit 0) afterwards."""
    with AgentProcess(tmp_path, master.address, *extra) as agent:
        agent.wait_ready()
        yield agent
        assert agent.terminate() == 0, agent.log()
