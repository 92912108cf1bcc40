"""The mini-cluster master daemon: the HTTP shell around :class:`~._master_state.MasterState`.

Serves, on one ``ThreadingHTTPServer`` (HTTP/1.1, one thread per connection):

* ``POST /api/v1/scheduler``: the Mesos v1 scheduler API (SUBSCRIBE streams and calls);
* ``POST /internal/agent`` and ``/internal/agent/call``: the agents' link (``_protocol``);
* ``GET /state`` (also ``/master/state``, ``/state.json``) and ``GET /health``.

Every request is turned into one input of the sans-I/O state machine under a single lock; the
outputs are RecordIO records queued on the streams they belong to. Each stream's own handler
thread writes its queue to its socket (one HTTP chunk per record, as Mesos does) and watches
for the peer going away. A timer thread calls :meth:`MasterState.tick` at the state machine's
next deadline (heartbeats, offer rounds, agent and failover timeouts), and is woken early by
any input that may have made offers possible.

Responses carry exactly the headers the recorded Mesos 1.12 master sends, in its order, and no
``Server`` header. ``python -m toil_mesos.cluster.master`` runs a master; its command line is
in ``_master_main``.

It is a test and demo master, not a replacement for Mesos: Basic authentication only, no registry (a
restarted master learns tasks from its agents), one role per framework, static reservations only.
"""

from __future__ import annotations

import json
import logging
import queue
import select
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from toil_mesos.cluster._master_auth import authenticate, check_principal
from toil_mesos.cluster._master_election import (
    MasterElection,
    master_info_data,
    redirect_location,
)
from toil_mesos.cluster._master_state import (
    CallRejected,
    Close,
    MasterConfig,
    MasterState,
    Output,
    Send,
    parse_agent_call,
    parse_scheduler_request,
)
from toil_mesos.cluster._protocol import AGENT_CALL_PATH, AGENT_STREAM_PATH
from toil_mesos.mesos._recordio import encode_record

__all__ = ["MasterServer"]

# Named for the module even when run as ``python -m`` (where ``__name__`` is ``__main__``).
logger = logging.getLogger("toil_mesos.cluster.master")

SCHEDULER_PATH: Final = "/api/v1/scheduler"
_SCHEDULER_PATHS: Final = frozenset({SCHEDULER_PATH, "/master" + SCHEDULER_PATH})
_REDIRECT_PATHS: Final = frozenset({"/redirect", "/master/redirect"})
_STATE_PATHS: Final = frozenset({"/state", "/state.json", "/master/state", "/master/state.json"})
_HEALTH_PATHS: Final = frozenset({"/health", "/master/health"})
#: How often an idle stream checks whether its peer went away.
_PEER_POLL_SECONDS: Final = 0.25
#: Longest the timer thread sleeps without looking at the state machine.
_MAX_TIMER_SLEEP: Final = 1.0
#: Largest request body accepted (an ACCEPT with many tasks is a few hundred KiB).
_MAX_BODY: Final = 64 * 1024 * 1024


def _encode_event(event: Any) -> bytes:
    # Mesos writes compact JSON; one record per HTTP chunk.
    data = encode_record(json.dumps(event, separators=(",", ":")).encode())
    return b"%x\r\n%s\r\n" % (len(data), data)


_LAST_CHUNK: Final = b"0\r\n\r\n"


class _Stream:
    """The queue of chunks waiting to be written on one streaming response."""

    __slots__ = ("kind", "queue", "stream_id")

    def __init__(self, stream_id: str, kind: str) -> None:
        self.stream_id = stream_id
        self.kind = kind
        self.queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    master: MasterServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # -- plumbing -----------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib's version sends a Server header and an HTML page; Mesos sends neither.
        self.close_connection = True
        self._respond(code, (message or "").encode(), content_type="text/plain; charset=utf-8")

    def _respond(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        length_first: bool = False,
    ) -> None:
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        for name, value in headers:
            self.send_header(name, value)
        if length_first:
            self.send_header("Content-Length", str(len(body)))
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        if not length_first:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _reject(self, error: CallRejected) -> None:
        self._respond(
            error.status,
            error.message.encode(),
            content_type="text/plain; charset=utf-8",
            headers=error.headers,
        )

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            self.close_connection = True
            self._respond(400, b"Invalid Content-Length", content_type="text/plain; charset=utf-8")
            return None
        return self.rfile.read(length) if length else b""

    # -- routes -------------------------------------------------------------------------------

    def _redirected(self) -> bool:
        """A master that does not lead answers everything but /health with 307 to the
        leader, validating nothing first (ha/ transcript); the leader serves /redirect."""
        path = self.path.split("?", 1)[0]
        if path in _HEALTH_PATHS:
            return False
        location = self.server.master.redirect(path)
        if location is None:
            return False
        if self.command not in ("GET", "HEAD") and self._body() is None:
            return True
        self._respond(307, headers=[("Location", location)])
        return True

    def do_GET(self) -> None:
        if self._redirected():
            return
        path = self.path.split("?", 1)[0]
        master = self.server.master
        if path in _STATE_PATHS:
            body = json.dumps(master.state_json(), separators=(",", ":")).encode()
            self._respond(200, body, content_type="application/json", length_first=True)
        elif path in _HEALTH_PATHS:
            self._respond(200)
        else:
            self._not_post()

    do_HEAD = do_GET

    def _not_post(self) -> None:
        """Any method but POST: 405 on the scheduler API (as Mesos answers), else 404."""
        if self._body() is None:
            return
        if self.path.split("?", 1)[0] in _SCHEDULER_PATHS:
            try:
                parse_scheduler_request(self.command, self.headers, b"")
            except CallRejected as error:
                self._reject(error)
        else:
            self._respond(404)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_post

    def do_POST(self) -> None:
        if self._redirected():
            return
        body = self._body()
        if body is None:
            return
        path = self.path.split("?", 1)[0]
        if path in _SCHEDULER_PATHS:
            self._scheduler(body)
        elif path == AGENT_STREAM_PATH:
            self._agent_register(body)
        elif path == AGENT_CALL_PATH:
            self._agent_call(body)
        else:
            self._respond(404)

    def _scheduler(self, body: bytes) -> None:
        master = self.server.master
        try:
            principal = master.authenticate(self.headers.get("Authorization"))
            call = parse_scheduler_request("POST", self.headers, body)
            if principal is not None:
                check_principal(call, principal)
            if call["type"] == "SUBSCRIBE":
                stream_id = master.subscribe(call)
            else:
                master.call(call, self.headers.get("Mesos-Stream-Id"))
                self._respond(202)
                return
        except CallRejected as error:
            self._reject(error)
            return
        self._serve_stream(stream_id, master.framework_stream_closed)

    def _agent_register(self, body: bytes) -> None:
        master = self.server.master
        try:
            message = json.loads(body)
            if not isinstance(message, dict):
                raise CallRejected(400, f"Expecting a JSON object, got {message!r}")
            stream_id = master.register_agent(message)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._reject(CallRejected(400, f"Failed to parse body into JSON: {exc}"))
            return
        except CallRejected as error:
            self._reject(error)
            return
        self._serve_stream(stream_id, master.agent_stream_closed)

    def _agent_call(self, body: bytes) -> None:
        master = self.server.master
        try:
            master.agent_call(parse_agent_call(body), self.headers.get("Mesos-Stream-Id"))
        except CallRejected as error:
            self._reject(error)
            return
        self._respond(202)

    # -- streaming ----------------------------------------------------------------------------

    def _serve_stream(self, stream_id: str, on_closed: Callable[[str], None]) -> None:
        """Write the stream's queue as chunks until it is closed by us or by the peer."""
        master = self.server.master
        stream = master.stream(stream_id)
        self.close_connection = True
        try:
            self.send_response_only(200)
            self.send_header("Date", self.date_time_string())
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Mesos-Stream-Id", stream_id)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.flush()
            while stream is not None:
                try:
                    item = stream.queue.get(timeout=_PEER_POLL_SECONDS)
                except queue.Empty:
                    if self._peer_closed():
                        logger.debug("Peer closed stream %s", stream_id)
                        break
                    continue
                if item is None:
                    self.wfile.write(_LAST_CHUNK)
                    self.wfile.flush()
                    break
                self.wfile.write(item)
                self.wfile.flush()
        except OSError as exc:
            logger.debug("Stream %s broke: %s", stream_id, exc)
        finally:
            master.forget_stream(stream_id)
            on_closed(stream_id)

    def _peer_closed(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK)
            return peeked == b""
        except (OSError, ValueError):
            return True


class MasterServer:
    """The master: an HTTP server, a timer thread and the state machine between them.

    :param host: address to listen on (also what the master advertises).
    :param port: port to listen on; ``0`` picks a free one (see :attr:`address`).
    :param hostname: what SUBSCRIBED and ``/state`` call the master; defaults to
        ``localhost`` on a loopback address, else the address itself.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        work_dir: str = "",
        agent_timeout: float = 10.0,
        heartbeat_interval: float = 15.0,
        offer_interval: float = 1.0,
        hostname: str | None = None,
        master_id: str | None = None,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        for name, value in (
            ("agent_timeout", agent_timeout),
            ("heartbeat_interval", heartbeat_interval),
            ("offer_interval", offer_interval),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self._httpd = _Server((host, port), _Handler)
        self._httpd.master = self
        bound_host, bound_port = self._httpd.server_address[:2]
        self.host = str(bound_host)
        self.port = int(bound_port)
        if hostname is None:
            hostname = "localhost" if self.host.startswith("127.") else self.host
        config = MasterConfig(
            master_id=master_id or str(uuid.uuid4()),
            ip=self.host,
            port=self.port,
            hostname=hostname,
            heartbeat_interval=heartbeat_interval,
            offer_interval=offer_interval,
            agent_timeout=agent_timeout,
            work_dir=work_dir,
        )
        self._state = MasterState(config, wall_clock=time.time)
        #: Principal to secret when frameworks must authenticate (HTTP Basic).
        self._credentials = None if credentials is None else dict(credentials)
        #: This master's part in a ZooKeeper election (None: it always leads).
        self.election: MasterElection | None = None
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"<MasterServer {self.address} streams={len(self._streams)} {self._state!r}>"

    @property
    def address(self) -> str:
        """``HOST:PORT`` the master listens on."""
        return f"{self.host}:{self.port}"

    @property
    def master_id(self) -> str:
        """The master's id, the prefix of every framework, agent and offer id."""
        return self._state.config.master_id

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving and the timer, in daemon threads; returns at once."""
        for name, target in (("master-http", self._serve), ("master-timer", self._timer)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("Master %s listening on %s", self.master_id, self.address)

    def _serve(self) -> None:
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        except Exception:
            logger.critical("Master HTTP thread died", exc_info=True)
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """End every stream with its last-chunk, stop serving, join the threads."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping.set()  # no new streams from here on (see _check_open)
        self._wake.set()
        # Stop accepting first and close the listening socket, so an agent reconnecting at
        # once is refused (and retries against the next master) instead of waiting in the
        # backlog of this one.
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            for stream in list(self._streams.values()):
                stream.queue.put(None)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        # Let stream handlers write their last-chunk before the process goes.
        while time.monotonic() < deadline:
            with self._lock:
                if not self._streams:
                    break
            self._stopping.wait(0.02)
        logger.info("Master %s stopped", self.master_id)

    def _timer(self) -> None:
        try:
            while not self._stopping.is_set():
                with self._lock:
                    now = time.monotonic()
                    self._dispatch(self._state.tick(now))
                    deadline = self._state.next_deadline()
                wait = _MAX_TIMER_SLEEP if deadline is None else deadline - time.monotonic()
                self._wake.wait(min(max(wait, 0.0), _MAX_TIMER_SLEEP))
                self._wake.clear()
        except Exception:
            logger.critical("Master timer thread died", exc_info=True)
            raise

    # -- inputs (called from handler threads) -------------------------------------------------

    def _dispatch(self, outputs: Sequence[Output]) -> None:
        for output in outputs:
            stream = self._streams.get(output.stream_id)
            if stream is None:
                continue
            if isinstance(output, Send):
                stream.queue.put(_encode_event(output.event))
            elif isinstance(output, Close):
                stream.queue.put(None)

    def _input(self, outputs: Sequence[Output]) -> None:
        self._dispatch(outputs)
        self._wake.set()

    # The methods below are what request handlers call: each turns one request into one input
    # of the state machine, under the lock, and queues the outputs.

    def stream(self, stream_id: str) -> _Stream | None:
        """The queue of an open stream, for the handler that writes it."""
        with self._lock:
            return self._streams.get(stream_id)

    def forget_stream(self, stream_id: str) -> None:
        """Drop a stream whose handler has finished writing it."""
        with self._lock:
            self._streams.pop(stream_id, None)

    def _check_open(self) -> None:
        if self._stopping.is_set():
            raise CallRejected(503, "Master is shutting down")

    def subscribe(self, call: dict[str, Any]) -> str:
        """A SUBSCRIBE: open its stream (already holding SUBSCRIBED) and return its id.

        :raises CallRejected: 503 while the master is stopping.
        """
        with self._lock:
            self._check_open()
            subscription = self._state.subscribe(call, now=time.monotonic())
            self._streams[subscription.stream_id] = _Stream(subscription.stream_id, "framework")
            self._input(subscription.outputs)
            return subscription.stream_id

    def call(self, call: dict[str, Any], stream_id: str | None) -> None:
        """Any other scheduler call; :raises CallRejected: as :meth:`MasterState.call`."""
        with self._lock:
            self._input(self._state.call(call, stream_id=stream_id, now=time.monotonic()))

    def framework_stream_closed(self, stream_id: str) -> None:
        """A SUBSCRIBE connection ended: the framework's failover timeout starts."""
        with self._lock:
            self._input(self._state.framework_stream_closed(stream_id, now=time.monotonic()))

    def register_agent(self, message: dict[str, Any]) -> str:
        """An agent's REGISTER: open its stream (already holding REGISTERED), return its id.

        :raises CallRejected: 400 for a malformed registration, 503 while stopping.
        """
        with self._lock:
            self._check_open()
            registration = self._state.register_agent(message, now=time.monotonic())
            self._streams[registration.stream_id] = _Stream(registration.stream_id, "agent")
            self._input(registration.outputs)
            return registration.stream_id

    def agent_call(self, call: dict[str, Any], stream_id: str | None) -> None:
        """An agent's UPDATE, MESSAGE or EXECUTOR_EXITED; :raises CallRejected: 404 for an
        unknown stream id."""
        with self._lock:
            self._input(self._state.agent_call(call, stream_id=stream_id, now=time.monotonic()))

    def agent_stream_closed(self, stream_id: str) -> None:
        """An agent's stream ended: its offers are rescinded and the agent timeout starts."""
        with self._lock:
            self._input(self._state.agent_stream_closed(stream_id, now=time.monotonic()))

    def info_data(self) -> bytes:
        """This master's MasterInfo as it publishes it in a ZooKeeper election."""
        config = self._state.config
        return master_info_data(
            master_id=config.master_id, ip=self.host, port=self.port, hostname=config.hostname
        )

    def redirect(self, path: str) -> str | None:
        """The ``Location`` to answer *path* with, or None to serve it here."""
        election = self.election
        if election is None or election.is_leader:
            if path in _REDIRECT_PATHS:
                return redirect_location(path, self.info_data())
            return None
        leader = election.leader_data
        if leader is None:
            return None  # no leader elected: the request gets this master's own answer
        return redirect_location(path, leader)

    def authenticate(self, authorization: str | None) -> str | None:
        """The framework's principal, or None when frameworks need not authenticate.

        :raises CallRejected: 401 for missing or wrong credentials.
        """
        if self._credentials is None:
            return None
        return authenticate(authorization, self._credentials)

    def state_json(self) -> dict[str, Any]:
        """``GET /state``."""
        with self._lock:
            return self._state.state_json()


if __name__ == "__main__":
    # The command line lives in its own module; ``python -m toil_mesos.cluster.master`` stays
    # the documented way to start a master (``_protocol``).
    from toil_mesos.cluster._master_main import main

    sys.exit(main())
