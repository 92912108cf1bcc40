"""Pipelined calls against a real HTTP/1.1 server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from toil_mesos.errors import TransportError
from toil_mesos.mesos._pipeline import PipelinedPoster


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.seen.append((self.client_address, self.path, body,
                                     self.headers.get("Mesos-Stream-Id")))
        status, text = (400, b"no") if body == b"bad" else (202, b"")
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        if body == b"close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Any]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.seen = []  # type: ignore[attr-defined]
    httpd.lock = threading.Lock()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def url_of(server: Any) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/api/v1/scheduler"


def test_many_calls_go_in_order_on_one_connection(server: Any) -> None:
    poster = PipelinedPoster()
    bodies = [b'{"n":%d}' % i for i in range(200)] + [b"bad", b"{}"]
    try:
        statuses = poster.post_many(url_of(server), bodies, {"Mesos-Stream-Id": "s1"}, timeout=5)
        again = poster.post_many(url_of(server), [b"x"], {"Mesos-Stream-Id": "s1"}, timeout=5)
    finally:
        poster.close()
    assert statuses == [202] * 200 + [400, 202]
    assert again == [202]
    assert [body for _, _, body, _ in server.seen] == [*bodies, b"x"]
    assert {client for client, _, _, _ in server.seen} == {server.seen[0][0]}  # kept alive
    assert {path for _, path, _, _ in server.seen} == {"/api/v1/scheduler"}
    assert {stream for _, _, _, stream in server.seen} == {"s1"}


def test_a_connection_closed_midway_is_an_error_and_the_next_call_reconnects(server: Any) -> None:
    poster = PipelinedPoster()
    try:
        with pytest.raises(TransportError):
            poster.post_many(url_of(server), [b"a", b"close", b"b"], {}, timeout=5)
        assert poster.post_many(url_of(server), [b"c"], {}, timeout=5) == [202]
    finally:
        poster.close()


def test_only_plain_http_is_pipelined() -> None:
    with pytest.raises(TransportError, match="cannot pipeline"):
        PipelinedPoster().post_many("https://127.0.0.1:1/x", [b"a"], {}, timeout=1)
