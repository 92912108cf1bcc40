"""The agent's HTTP API: the executor API, ``/state``, ``/files`` and ``/health``.

The stdlib ``ThreadingHTTPServer`` runs on the ``agent-http`` thread; each executor
subscription keeps one handler thread writing that executor's events (chunked RecordIO) until
the agent closes the stream or the executor goes away. Headers come in the order the recorded
agent sent them. The handler holds no state: it asks the agent (:class:`AgentApi`).
"""

from __future__ import annotations

import json
import logging
import queue
import select
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from toil_mesos.cluster._agent_files import FilesAnswer, SandboxFiles
from toil_mesos.cluster._agent_model import (
    JSON,
    LOGGER_NAME,
    ExecutorCallResult,
    ExecutorEventStream,
    value_of,
)

__all__ = ["AgentApi", "AgentHTTPServer"]

logger = logging.getLogger(LOGGER_NAME)


class AgentApi(Protocol):
    """What the HTTP layer asks of the agent."""

    @property
    def stopping(self) -> bool: ...

    @property
    def files(self) -> SandboxFiles: ...

    def state(self) -> JSON: ...

    def executor_call(self, call: JSON) -> ExecutorCallResult: ...

    def call_lock(self, framework_id: str, executor_id: str) -> threading.Lock: ...

    def send_to_executor(self, framework_id: str, executor_id: str, events: list[JSON]) -> None: ...

    def executor_stream_ended(self, stream: ExecutorEventStream) -> None: ...


class AgentHTTPServer(ThreadingHTTPServer):
    """The agent's HTTP server, serving *agent*."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], agent: AgentApi) -> None:
        super().__init__(address, _Handler)
        self.agent = agent


class _Handler(BaseHTTPRequestHandler):
    """The agent's HTTP API; headers in the order the recorded agent sent them."""

    protocol_version = "HTTP/1.1"
    server: AgentHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        # No Server header, as the recorded agent sent none.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def _reply(
        self,
        code: int,
        body: bytes = b"",
        *,
        content_type: str | None = None,
        type_first: bool = False,
    ) -> None:
        self.send_response(code)
        if content_type is not None and type_first:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if content_type is not None and not type_first:
            self.send_header("Content-Type", content_type)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _error(self, code: int, text: str) -> None:
        self._reply(code, text.encode(), content_type="text/plain; charset=utf-8", type_first=True)

    def _json(self, obj: Any) -> None:
        self._reply(
            200, json.dumps(obj, separators=(",", ":")).encode(), content_type="application/json"
        )

    # -- routing ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        agent = self.server.agent
        if url.path in ("/state", "/state.json", "/slave(1)/state", "/slave(1)/state.json"):
            self._json(agent.state())
        elif url.path == "/health":
            self._reply(200)
        elif url.path in ("/files/read", "/files/read.json"):
            self._files_read(query)
        elif url.path in ("/files/browse", "/files/browse.json"):
            self._files_browse(query)
        elif url.path == "/api/v1/executor":
            # As the recorded master answered a GET of its scheduler API.
            body = b"405 Method Not Allowed. Expecting one of { 'POST' }, but received 'GET'."
            self.send_response(405)
            self.send_header("Allow", "POST")
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._error(404, "")

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path != "/api/v1/executor":
            self._error(404, "")
            return
        if not self.headers.get("Content-Type"):
            self._error(400, "Expecting 'Content-Type' to be present")
            return
        try:
            call = json.loads(raw)
            if not isinstance(call, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self._error(400, f"Failed to parse body into JSON: {exc}")
            return
        agent = self.server.agent
        framework_id = value_of(call.get("framework_id")) or ""
        executor_id = value_of(call.get("executor_id")) or ""
        if call.get("type") != "SUBSCRIBE":
            # One call of an executor at a time, up to its ACKNOWLEDGED: the executor sends its
            # next update after our 202, and that update's ACKNOWLEDGED must not overtake this
            # one's (a real agent handles one executor's calls in order).
            with agent.call_lock(framework_id, executor_id):
                self._executor_call(call, framework_id, executor_id)
            return
        try:
            result = agent.executor_call(call)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            self._error(400, f"Failed to validate executor::Call: {exc}")
            return
        if result.status == 200 and result.stream is not None:
            self._stream_events(result.stream)
            return
        self._error(result.status, result.error)

    def _executor_call(self, call: JSON, framework_id: str, executor_id: str) -> None:
        agent = self.server.agent
        try:
            result = agent.executor_call(call)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            self._error(400, f"Failed to validate executor::Call: {exc}")
            return
        if result.status == 202:
            self._reply(202)
            # ACKNOWLEDGED follows the 202, a few ms later, as recorded.
            agent.send_to_executor(framework_id, executor_id, list(result.after))
            return
        self._error(result.status, result.error)

    def do_PUT(self) -> None:
        self._error(405, "")

    def do_DELETE(self) -> None:
        self._error(405, "")

    # -- executor subscription --------------------------------------------------------------

    def _stream_events(self, stream: ExecutorEventStream) -> None:
        agent = self.server.agent
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.close_connection = True
        ended_by_agent = False
        try:
            self.wfile.flush()
            while True:
                try:
                    record = stream.queue.get(timeout=0.5)
                except queue.Empty:
                    if agent.stopping and stream.closed:
                        ended_by_agent = True
                        break
                    if self._peer_closed():
                        break
                    continue
                if record is None:
                    ended_by_agent = True
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(record), record))
                self.wfile.flush()
            if ended_by_agent:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except OSError as exc:
            # Usual when the executor exited first: the agent closes its stream afterwards.
            logger.debug("executor stream ended: %s", exc)
        finally:
            agent.executor_stream_ended(stream)

    def _peer_closed(self) -> bool:
        """Whether the executor closed its end (it sends nothing after SUBSCRIBE, so a readable
        socket means EOF or a reset)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- files ------------------------------------------------------------------------------

    def _files_read(self, query: dict[str, list[str]]) -> None:
        self._files(self.server.agent.files.read(query))

    def _files_browse(self, query: dict[str, list[str]]) -> None:
        self._files(self.server.agent.files.browse(query))

    def _files(self, answer: FilesAnswer) -> None:
        if answer.status == 200:
            self._json(answer.body)
        else:
            self._error(answer.status, answer.error)
