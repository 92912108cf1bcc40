"""Helpers for the master's HTTP tests: a raw-socket HTTP/1.1 client that keeps exact bytes.

The transcripts were recorded with a raw-socket client, so the comparison is fair: the helpers
see the status line and the headers in order, and the chunk framing of streams. Every read has
a timeout; nothing here retries or sleeps.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT = 10.0
TRANSCRIPTS = Path(
    os.environ.get(
        "TOIL_MESOS_TRANSCRIPTS",
        Path(__file__).resolve().parents[3].parent / "shared" / "mesos-transcripts",
    )
)


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def names(self) -> list[str]:
        return [key for key, _ in self.headers]

    def json(self) -> Any:
        return json.loads(self.body)


def recorded(path: str) -> Any:
    """A transcript file: parsed JSON for ``*.json``, bytes otherwise."""
    full = TRANSCRIPTS / path
    return json.loads(full.read_text()) if full.suffix == ".json" else full.read_bytes()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self) -> tuple[int, str, list[tuple[str, str]]]:
        status_line = self.line().decode()
        _, status, reason = status_line.split(" ", 2)
        headers = []
        while True:
            line = self.line()
            if not line:
                break
            name, _, value = line.decode().partition(":")
            headers.append((name, value.strip()))
        return int(status), reason, headers


def _request_bytes(
    method: str, address: str, path: str, body: bytes | None, headers: list[tuple[str, str]]
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {address}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def request(
    address: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """One request on a fresh connection (``Connection: close``), as the recordings did."""
    with socket.create_connection(_split(address), timeout=TIMEOUT) as sock:
        sock.sendall(
            _request_bytes(method, address, path, body, [*(headers or []), ("Connection", "close")])
        )
        reader = _Reader(sock)
        status, reason, head = reader.head()
        length = next((int(v) for k, v in head if k.lower() == "content-length"), 0)
        return Response(status, reason, head, reader.exactly(length) if length else b"")


def call(
    address: str, payload: Any, stream_id: str | None = None, path: str = "/api/v1/scheduler"
) -> Response:
    """POST a JSON call as the recording client did."""
    headers = [("Content-Type", "application/json"), ("Accept", "application/json")]
    if stream_id is not None:
        headers.append(("Mesos-Stream-Id", stream_id))
    return request(address, "POST", path, json.dumps(payload).encode(), headers)


#: Every Stream opened and not yet closed; tests close them all when they end.
OPEN_STREAMS: list[Stream] = []


class Stream:
    """A streaming POST (SUBSCRIBE, agent registration): the head, then one event at a time."""

    def __init__(
        self,
        address: str,
        payload: Any,
        path: str = "/api/v1/scheduler",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.sock = socket.create_connection(_split(address), timeout=TIMEOUT)
        OPEN_STREAMS.append(self)
        body = json.dumps(payload).encode()
        hdrs = headers or [("Content-Type", "application/json"), ("Accept", "application/json")]
        self.sock.sendall(
            _request_bytes("POST", address, path, body, [*hdrs, ("Connection", "keep-alive")])
        )
        self.reader = _Reader(self.sock)
        self.status, self.reason, self.headers = self.reader.head()
        self.raw_chunks: list[bytes] = []
        self.ended = False

    @property
    def stream_id(self) -> str:
        return next(v for k, v in self.headers if k == "Mesos-Stream-Id")

    def next_event(self, timeout: float = TIMEOUT) -> dict[str, Any] | None:
        """The next event, or ``None`` at the last-chunk."""
        self.sock.settimeout(timeout)
        size_line = self.reader.line()
        size = int(size_line, 16)
        data = self.reader.exactly(size + 2)
        self.raw_chunks.append(size_line + b"\r\n" + data)
        if size == 0:
            self.ended = True
            return None
        record = data[:-2]
        length, _, payload = record.partition(b"\n")
        assert int(length) == len(payload), record
        event: dict[str, Any] = json.loads(payload)
        return event

    def next_of(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Skip events until one of *kind* (HEARTBEAT and OFFERS are skipped unless asked)."""
        while True:
            event = self.next_event(timeout)
            if event is None:
                raise EOFError(f"stream ended while waiting for {kind}")
            if event["type"] == kind:
                return event

    def close(self) -> None:
        self.sock.close()
        if self in OPEN_STREAMS:
            OPEN_STREAMS.remove(self)


def agent_info(port: int, *, agent_id: str | None = None, hostname: str = "localhost") -> Any:
    """A REGISTER body like the recorded agent's (cpus 2, mem 2048, disk 4096, 10 ports)."""
    info: dict[str, Any] = {
        "hostname": hostname,
        "port": port,
        # In the order the recorded offers list them.
        "resources": [
            {
                "name": "ports",
                "type": "RANGES",
                "ranges": {"range": [{"begin": 31000, "end": 31009}]},
            },
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 2048.0}},
            {"name": "disk", "type": "SCALAR", "scalar": {"value": 4096.0}},
        ],
        "attributes": [
            {"name": "rack", "type": "TEXT", "text": {"value": "r1"}},
            {"name": "level", "type": "SCALAR", "scalar": {"value": 5.0}},
            {"name": "slots", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 4}]}},
        ],
    }
    if agent_id is not None:
        info["id"] = {"value": agent_id}
    return info


def register_body(port: int, *, agent_id: str | None = None, executors: Any = ()) -> Any:
    return {
        "type": "REGISTER",
        "register": {
            "agent_info": agent_info(port, agent_id=agent_id),
            "address": f"127.0.0.1:{port}",
            "executors": list(executors),
        },
    }


def framework_info(name: str = "test-fw", **extra: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "user": "root",
        "name": name,
        "roles": ["*"],
        "failover_timeout": 120.0,
        "capabilities": [{"type": "MULTI_ROLE"}, {"type": "TASK_KILLING_STATE"}],
    }
    info.update(extra)
    return info


def subscribe_call(info: dict[str, Any] | None = None) -> dict[str, Any]:
    info = info or framework_info()
    call: dict[str, Any] = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
    if "id" in info:
        call["framework_id"] = info["id"]
    return call


def shape(value: Any) -> Any:
    """The structure of a JSON value with ids, times and addresses blanked: keys and types."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__
