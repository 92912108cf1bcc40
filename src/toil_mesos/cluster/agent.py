"""The mini-cluster agent: one process per agent, started as ``python -m toil_mesos.cluster.agent``.

It registers with the master over the private link of :mod:`toil_mesos.cluster._protocol`,
runs the fetcher and the executors of the tasks the master sends it, and serves the public
agent APIs a real Mesos 1.12 agent serves, shaped as the recordings in
``shared/mesos-transcripts`` show them:

* ``POST /api/v1/executor`` (SUBSCRIBE, UPDATE, MESSAGE; ``executor-http-api.md``),
* ``GET /state``, ``GET /files/read``, ``GET /files/browse`` and ``GET /health``.

Threads, each owning one job (house style: threads and queues, every wait bounded):

* ``agent-http``: the stdlib ``ThreadingHTTPServer``; each executor subscription keeps one
  handler thread writing that executor's events;
* ``agent-master-link``: registers, reads the master's RecordIO stream, registers again with
  bounded backoff when the stream ends;
* ``agent-sender``: posts calls to the master in order (updates, messages, executor exits);
* ``agent-timers``: status update resends, executor registration timeouts and kill deadlines;
* one ``executor-<id>`` thread per executor: fetch, start, then wait for the process.

All agent state is guarded by one condition variable; nothing blocks while holding it.

This is a test and demo agent, not a replacement for Mesos: no checkpointing or recovery of
executors across agent restarts, no containerizers, no resource isolation, no authentication.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import enum
import getpass
import grp
import json
import logging
import os
import pwd
import queue
import select
import signal
import socket
import stat
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from toil_mesos.cluster._executors import (
    ENVIRONMENT_VARIABLES_FLAG,
    ExecutorProcess,
    command_executor_info,
    executor_environment,
    format_duration,
    make_sandbox,
    parse_environment_variables,
    sandbox_path,
)
from toil_mesos.cluster._fetcher import (
    DEFAULT_FETCHER_CACHE_SIZE,
    DEFAULT_FETCHER_TIMEOUT,
    Fetcher,
    FetcherCache,
    FetchError,
    fetcher_cache_size,
)
from toil_mesos.cluster._protocol import (
    AGENT_CALL_PATH,
    AGENT_STREAM_PATH,
    DEFAULT_AGENT_RESOURCES,
    STATUS_UPDATE_RETRY_SECONDS,
)
from toil_mesos.cluster._resources import (
    InvalidFlagError,
    attributes_summary,
    merge_default_resources,
    parse_attributes,
    parse_resources,
    resources_summary,
)
from toil_mesos.cluster._status_updates import TERMINAL_STATES, StatusUpdateManager, StreamState
from toil_mesos.errors import RemoteProtocolError
from toil_mesos.mesos._recordio import END_OF_STREAM, NEED_DATA, RecordIODecoder, encode_record

__all__ = [
    "Agent",
    "AgentConfig",
    "ExecutorCallResult",
    "ExecutorPhase",
    "build_parser",
    "config_from_args",
    "main",
]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

#: Between SIGTERM and SIGKILL when the agent stops an executor's session.
KILL_ESCALATION_SECONDS = 2.0
#: Re-registration backoff: starts small so a restarted master sees its agents quickly, and is
#: bounded so an agent never waits long once the master is back.
REGISTER_BACKOFF_MIN = 0.1
REGISTER_BACKOFF_MAX = 2.0
#: Read timeout of the master link; the master heartbeats far more often than this, and a
#: dead master closes the connection, so this only bounds a silent network partition.
LINK_READ_TIMEOUT = 60.0
#: Heartbeat intervals of silence after which the agent drops the link and registers again
#: (a partitioned master sends neither events nor a connection reset).
MISSED_HEARTBEATS = 3
CALL_TIMEOUT = 10.0
#: Fields of TaskStatus in the order Mesos 1.12 printed them (recorded UPDATE events).
_STATUS_ORDER = (
    "task_id",
    "state",
    "message",
    "source",
    "reason",
    "data",
    "agent_id",
    "executor_id",
    "timestamp",
    "uuid",
    "healthy",
    "check_status",
    "labels",
    "container_status",
    "unreachable_time",
    "limitation",
)
_COMMAND_ORDER = ("uris", "environment", "shell", "value", "arguments", "user")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """The agent's command line, validated."""

    master: str
    host: str
    port: int
    work_dir: Path
    ready_file: Path
    hostname: str
    resources: list[JSON]
    attributes: list[JSON]
    resources_flag: str
    attributes_flag: str
    fetcher_timeout: float = DEFAULT_FETCHER_TIMEOUT
    fetcher_cache_size: int = DEFAULT_FETCHER_CACHE_SIZE
    executor_registration_timeout: float = 60.0
    executor_shutdown_grace_period: float = 5.0
    status_update_retry_seconds: float = STATUS_UPDATE_RETRY_SECONDS
    #: ``--executor-environment-variables``: what every executor gets; None when not given.
    executor_environment_variables: Mapping[str, str] | None = None


class ExecutorPhase(enum.Enum):
    """Lifecycle of one executor container on this agent."""

    LAUNCHING = "LAUNCHING"  # sandbox and fetcher
    REGISTERING = "REGISTERING"  # process started, waiting for SUBSCRIBE
    RUNNING = "RUNNING"  # subscribed
    TERMINATING = "TERMINATING"  # SHUTDOWN sent or being killed
    TERMINATED = "TERMINATED"


class _EventStream:
    """Events for one subscribed executor, written by its HTTP handler thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue()
        self.closed = False

    def send(self, event: JSON) -> None:
        if not self.closed:
            self.queue.put(encode_record(json.dumps(event, separators=(",", ":")).encode()))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put(None)


@dataclass(slots=True, kw_only=True)
class _Task:
    info: JSON
    state: str = "TASK_STAGING"
    statuses: list[JSON] = field(default_factory=list)

    @property
    def task_id(self) -> str:
        return str(self.info["task_id"]["value"])


@dataclass(slots=True, kw_only=True)
class _Executor:
    framework_id: str
    executor_id: str
    container_id: str
    info: JSON
    sandbox: Path
    phase: ExecutorPhase = ExecutorPhase.LAUNCHING
    process: ExecutorProcess | None = None
    stream: _EventStream | None = None
    queued: dict[str, _Task] = field(default_factory=dict)
    launched: dict[str, _Task] = field(default_factory=dict)
    completed: list[_Task] = field(default_factory=list)
    registration_deadline: float | None = None
    kill_at: float | None = None
    sigkill_at: float | None = None
    termination_reason: str | None = None
    termination_message: str | None = None
    cancel_fetch: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    #: Made by the agent for a command task (the built-in command executor).
    for_command_task: bool = False

    def __repr__(self) -> str:
        return (
            f"<Executor {self.executor_id!r} framework={self.framework_id!r}"
            f" phase={self.phase.value} queued={len(self.queued)} launched={len(self.launched)}>"
        )

    def find(self, task_id: str) -> _Task | None:
        return self.launched.get(task_id) or self.queued.get(task_id)


@dataclass(slots=True, kw_only=True)
class _Framework:
    framework_id: str
    info: JSON
    executors: dict[str, _Executor] = field(default_factory=dict)
    completed_executors: list[_Executor] = field(default_factory=list)
    shutting_down: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorCallResult:
    """What the HTTP layer answers to one ``/api/v1/executor`` call."""

    status: int
    #: ``text/plain`` reason of an error answer.
    error: str = ""
    #: The new subscription (SUBSCRIBE answered 200).
    stream: _EventStream | None = None
    #: Events for the executor's stream once the answer is written (ACKNOWLEDGED).
    after: tuple[JSON, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Call:
    """One call for the master, posted in order by the sender thread."""

    kind: str
    body: JSON
    attempts: int = 0


def _ordered(obj: JSON, order: Sequence[str]) -> JSON:
    out = {k: obj[k] for k in order if k in obj}
    out.update((k, v) for k, v in obj.items() if k not in out)
    return out


def _normalise_executor_info(info: JSON, framework_id: str) -> JSON:
    """Fill ``framework_id`` and ``command.shell`` as the agent did in the recorded SUBSCRIBED."""
    info = copy.deepcopy(info)
    info["framework_id"] = {"value": framework_id}
    command = dict(info.get("command", {}))
    command.setdefault("shell", True)
    info["command"] = _ordered(command, _COMMAND_ORDER)
    return _ordered(info, ("type", "executor_id", "framework_id", "command"))


def _new_uuid() -> str:
    return base64.b64encode(uuid.uuid4().bytes).decode("ascii")


class Agent:
    """A mini-cluster agent: state, master link, executors and the HTTP API.

    :param config: the validated command line.
    :param clock: monotonic clock for deadlines (injectable).
    :param wall_clock: clock for status timestamps (injectable).
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock if clock is not None else time.monotonic
        self._wall = wall_clock if wall_clock is not None else time.time
        self._cond = threading.Condition(threading.RLock())
        self._stopping = threading.Event()
        self._registered = threading.Event()
        self._agent_id: str | None = None
        self._stream_id: str | None = None
        self._ready_written = False
        self._frameworks: dict[str, _Framework] = {}
        self._completed_frameworks: list[_Framework] = []
        self._latest_run: dict[tuple[str, str], _Executor] = {}
        self._call_locks: dict[tuple[str, str], threading.Lock] = {}
        self._updates = StatusUpdateManager(retry_interval=config.status_update_retry_seconds)
        self._outbox: queue.Queue[_Call] = queue.Queue()
        self._user = _current_user()
        self._cache = FetcherCache(
            config.work_dir / "fetchcache" / self._user, max_bytes=config.fetcher_cache_size
        )
        self._fetcher = Fetcher(cache=self._cache, timeout=config.fetcher_timeout, user=self._user)
        self._client = httpx.Client(trust_env=False, timeout=CALL_TIMEOUT)
        self._link_response: httpx.Response | None = None
        #: From REGISTERED; the link counts as broken after MISSED_HEARTBEATS of silence.
        self._heartbeat_interval: float | None = None
        self._last_master_event = 0.0
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._start_time = self._wall()

    def __repr__(self) -> str:
        return (
            f"<Agent id={self._agent_id!r} address={self.address_or_none!r}"
            f" registered={self._registered.is_set()} frameworks={len(self._frameworks)}>"
        )

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def address_or_none(self) -> str | None:
        if self._server is None:
            return None
        return f"{self.config.host}:{self._server.server_address[1]}"

    @property
    def address(self) -> str:
        """``IP:PORT`` of the agent's HTTP API (the bound port when ``--port 0``)."""
        address = self.address_or_none
        if address is None:
            raise RuntimeError("the agent has not been started")
        return address

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> None:
        """Bind the HTTP API and start every thread; registration happens in the background.

        :raises OSError: if the address cannot be bound.
        """
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        self._cache.reset()
        server = _Server((self.config.host, self.config.port), _Handler)
        server.agent = self
        self._server = server
        self._spawn("agent-http", lambda: server.serve_forever(poll_interval=0.25))
        self._spawn("agent-master-link", self._link_loop)
        self._spawn("agent-sender", self._sender_loop)
        self._spawn("agent-timers", self._timer_loop)
        logger.info("agent listening on %s, master %s", self.address, self.config.master)

    def _spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=self._guard(name, target), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    @staticmethod
    def _guard(name: str, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception:
                logger.critical("thread %s died", name, exc_info=True)

        return run

    def stop(self) -> None:
        """Shut every executor down (SHUTDOWN, grace period, SIGTERM, SIGKILL), then close."""
        if self._stopping.is_set():
            return
        logger.info("agent stopping")
        self._stopping.set()
        grace = self.config.executor_shutdown_grace_period
        with self._cond:
            executors = [e for f in self._frameworks.values() for e in f.executors.values()]
            for executor in executors:
                executor.cancel_fetch.set()
                if executor.stream is not None and executor.phase is ExecutorPhase.RUNNING:
                    executor.stream.send({"type": "SHUTDOWN"})
                elif executor.process is not None:
                    executor.process.signal(signal.SIGTERM)
                executor.phase = ExecutorPhase.TERMINATING
            self._cond.notify_all()
        self._wait_processes(executors, grace)
        for sig, wait in ((signal.SIGTERM, KILL_ESCALATION_SECONDS), (signal.SIGKILL, 2.0)):
            alive = [e for e in executors if e.process is not None and e.process.poll() is None]
            for executor in alive:
                assert executor.process is not None
                logger.warning("sending %s to executor %s", sig.name, executor.executor_id)
                executor.process.signal(sig)
            self._wait_processes(alive, wait)
        for executor in executors:
            # Sweep the session once more: children that outlived their executor.
            if executor.process is not None:
                executor.process.signal(signal.SIGKILL)
            if executor.thread is not None:
                executor.thread.join(timeout=2.0)
            if executor.stream is not None:
                executor.stream.close()
        self._abort_link()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._client.close()
        logger.info("agent stopped")

    @staticmethod
    def _wait_processes(executors: list[_Executor], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for executor in executors:
            if executor.process is not None:
                executor.process.wait(timeout=max(0.0, deadline - time.monotonic()))

    # -- master link ------------------------------------------------------------------------

    def _agent_info(self, *, with_roles: bool = True) -> JSON:
        resources = self.config.resources
        if not with_roles:
            resources = [{k: v for k, v in r.items() if k != "role"} for r in resources]
        info: JSON = {
            "hostname": self.config.hostname,
            "port": self.port,
            "resources": resources,
            "attributes": self.config.attributes,
        }
        if self._agent_id is not None:
            info["id"] = {"value": self._agent_id}
        return info

    def _register_body(self) -> JSON:
        with self._cond:
            executors: list[JSON] = []
            for framework in self._frameworks.values():
                for executor in framework.executors.values():
                    if executor.phase is ExecutorPhase.TERMINATED:
                        continue
                    tasks = list(executor.queued.values()) + list(executor.launched.values())
                    executors.append(
                        {
                            "framework_id": {"value": framework.framework_id},
                            "framework_info": framework.info,
                            "executor_info": executor.info,
                            "tasks": [t.info for t in tasks],
                            "statuses": [t.statuses[-1] for t in tasks if t.statuses],
                        }
                    )
            return {
                "type": "REGISTER",
                "register": {
                    "agent_info": self._agent_info(),
                    "address": self.address,
                    "executors": executors,
                },
            }

    def _link_loop(self) -> None:
        backoff = REGISTER_BACKOFF_MIN
        url = f"http://{self.config.master}{AGENT_STREAM_PATH}"
        while not self._stopping.is_set():
            registered_before = self._registered.is_set()
            try:
                self._register_and_read(url)
            except (httpx.HTTPError, RemoteProtocolError, ValueError, OSError) as exc:
                if not self._stopping.is_set():
                    logger.warning("master link to %s failed: %s", self.config.master, exc)
            succeeded = self._registered.is_set() or registered_before
            self._registered.clear()
            with self._cond:
                self._stream_id = None
                self._link_response = None
            if self._stopping.is_set():
                break
            if succeeded:
                backoff = REGISTER_BACKOFF_MIN
            logger.info("registering again with the master in %.1f s", backoff)
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, REGISTER_BACKOFF_MAX)

    def _register_and_read(self, url: str) -> None:
        body = self._register_body()
        decoder = RecordIODecoder()
        timeout = httpx.Timeout(CALL_TIMEOUT, read=LINK_READ_TIMEOUT)
        with self._client.stream(
            "POST", url, json=body, headers={"Accept": "application/json"}, timeout=timeout
        ) as response:
            if response.status_code != 200:
                response.read()
                logger.warning(
                    "master refused registration: %s %s",
                    response.status_code,
                    response.text.strip(),
                )
                return
            with self._cond:
                self._stream_id = response.headers.get("Mesos-Stream-Id")
                self._link_response = response
            if self._stopping.is_set():
                return
            for chunk in response.iter_raw():
                decoder.feed(chunk)
                for record in _records(decoder):
                    self._on_master_event(json.loads(record))
            decoder.feed(b"")
            for record in _records(decoder):
                self._on_master_event(json.loads(record))
        logger.warning("the master closed the agent stream")

    def _abort_link(self) -> None:
        with self._cond:
            response = self._link_response
        if response is None:
            return
        # Closing an httpx response from another thread does not wake a blocked read; shutting
        # the socket down does.
        network_stream = response.extensions.get("network_stream")
        sock = None if network_stream is None else network_stream.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _on_master_event(self, event: Any) -> None:
        with self._cond:
            self._last_master_event = self._clock()
        try:
            self._dispatch_master_event(event)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            # A malformed event is the master's bug; the link and the agent carry on.
            logger.error("ignoring a malformed master event %.300r: %r", event, exc)

    def _dispatch_master_event(self, event: JSON) -> None:
        kind = event.get("type")
        logger.debug("master event %s", kind)
        if kind == "REGISTERED":
            self._on_registered(event["registered"])
        elif kind == "RUN_TASK":
            self._on_run_task(event["run_task"])
        elif kind == "KILL_TASK":
            self._on_kill_task(event["kill_task"])
        elif kind == "MESSAGE":
            self._on_framework_message(event["message"])
        elif kind == "ACKNOWLEDGE":
            self._on_acknowledge(event["acknowledge"])
        elif kind == "SHUTDOWN_EXECUTOR":
            body = event["shutdown_executor"]
            self._shutdown_executor_by_id(
                str(body["framework_id"]["value"]), str(body["executor_id"]["value"])
            )
        elif kind == "SHUTDOWN_FRAMEWORK":
            self._on_shutdown_framework(str(event["shutdown_framework"]["framework_id"]["value"]))
        elif kind == "HEARTBEAT":
            pass
        else:
            logger.warning("ignoring unknown master event %r", kind)

    def _on_registered(self, body: JSON) -> None:
        agent_id = str(body["agent_id"]["value"])
        with self._cond:
            if self._agent_id is not None and self._agent_id != agent_id:
                logger.warning(
                    "the master gave a new agent id %s (was %s)", agent_id, self._agent_id
                )
            first = self._agent_id is None
            self._agent_id = agent_id
            interval = body.get("heartbeat_interval_seconds")
            self._heartbeat_interval = float(interval) if interval else None
            self._forward_updates(self._updates.resend_all(now=self._clock()))
            self._cond.notify_all()
        self._registered.set()
        logger.info(
            "%s with the master as %s", "registered" if first else "re-registered", agent_id
        )
        if not self._ready_written:
            _write_json_atomically(
                self.config.ready_file,
                {"id": agent_id, "address": self.address, "pid": os.getpid()},
            )
            self._ready_written = True

    # -- calls to the master ----------------------------------------------------------------

    def _sender_loop(self) -> None:
        url = f"http://{self.config.master}{AGENT_CALL_PATH}"
        pending: list[_Call] = []
        while not (self._stopping.is_set() and self._outbox.empty() and not pending):
            if not pending:
                try:
                    pending.append(self._outbox.get(timeout=0.25))
                except queue.Empty:
                    continue
            if not self._registered.wait(timeout=0.25):
                if self._stopping.is_set():
                    return
                continue
            call = pending.pop(0)
            with self._cond:
                stream_id = self._stream_id
            try:
                response = self._client.post(
                    url, json=call.body, headers={"Mesos-Stream-Id": stream_id or ""}
                )
            except httpx.HTTPError as exc:
                logger.warning("%s call to the master failed: %s", call.kind, exc)
                self._retry(call, pending)
                self._stopping.wait(0.25)  # bounded pause before the next try
                continue
            if response.status_code == 202:
                continue
            if response.status_code == 404:
                logger.warning("the master does not know this agent's stream; registering again")
                # Hold further calls until the link is back with a new stream id.
                self._registered.clear()
                self._abort_link()
                self._retry(call, pending)
                continue
            logger.error(
                "master refused %s: %s %s", call.kind, response.status_code, response.text.strip()
            )

    @staticmethod
    def _retry(call: _Call, pending: list[_Call]) -> None:
        # Updates need no retry here: the status update manager resends them after the agent
        # has registered again. Other calls get a few more tries, in order.
        if call.kind != "UPDATE" and call.attempts < 5:
            pending.insert(0, _Call(kind=call.kind, body=call.body, attempts=call.attempts + 1))

    def _forward_updates(self, forwards: Sequence[Any]) -> None:
        for forward in forwards:
            self._outbox.put(
                _Call(kind="UPDATE", body={"type": "UPDATE", "update": forward.update})
            )

    # -- timers -----------------------------------------------------------------------------

    def _timer_loop(self) -> None:
        with self._cond:
            while not self._stopping.is_set():
                now = self._clock()
                self._forward_updates(self._updates.tick(now=now))
                deadlines: list[float] = []
                for framework in list(self._frameworks.values()):
                    for executor in list(framework.executors.values()):
                        self._executor_timers(executor, now)
                        deadlines.extend(
                            d
                            for d in (
                                executor.registration_deadline,
                                executor.kill_at,
                                executor.sigkill_at,
                            )
                            if d is not None
                        )
                update_deadline = self._updates.next_deadline()
                if update_deadline is not None:
                    deadlines.append(update_deadline)
                silence_deadline = self._check_heartbeats(now)
                if silence_deadline is not None:
                    deadlines.append(silence_deadline)
                wait = min(deadlines, default=now + 1.0) - now
                self._cond.wait(timeout=min(max(wait, 0.01), 1.0))

    def _check_heartbeats(self, now: float) -> float | None:
        """Drop a silent master link; return when the link would next count as silent."""
        if not self._registered.is_set() or not self._heartbeat_interval:
            return None
        deadline = self._last_master_event + MISSED_HEARTBEATS * self._heartbeat_interval
        if now < deadline:
            return deadline
        logger.warning(
            "no event from the master for %.1f s (%d heartbeats); registering again",
            now - self._last_master_event,
            MISSED_HEARTBEATS,
        )
        self._last_master_event = now
        self._abort_link()
        return None

    def _executor_timers(self, executor: _Executor, now: float) -> None:
        if (
            executor.phase is ExecutorPhase.REGISTERING
            and executor.registration_deadline is not None
            and executor.registration_deadline <= now
        ):
            executor.registration_deadline = None
            timeout = self.config.executor_registration_timeout
            logger.warning(
                "executor %s did not subscribe within %.1f s; killing it",
                executor.executor_id,
                timeout,
            )
            executor.termination_reason = "REASON_EXECUTOR_REGISTRATION_TIMEOUT"
            executor.termination_message = (
                f"Executor did not register within {_duration_text(timeout)}"
            )
            executor.phase = ExecutorPhase.TERMINATING
            executor.kill_at = now
        if executor.kill_at is not None and executor.kill_at <= now:
            executor.kill_at = None
            if executor.process is not None:
                logger.info("sending SIGTERM to executor %s", executor.executor_id)
                executor.process.signal(signal.SIGTERM)
                executor.sigkill_at = now + KILL_ESCALATION_SECONDS
            else:
                executor.cancel_fetch.set()
        if executor.sigkill_at is not None and executor.sigkill_at <= now:
            executor.sigkill_at = None
            if executor.process is not None:
                logger.warning("sending SIGKILL to executor %s", executor.executor_id)
                executor.process.signal(signal.SIGKILL)

    # -- master events ----------------------------------------------------------------------

    def _on_run_task(self, body: JSON) -> None:
        framework_id = str(body["framework_id"]["value"])
        framework_info = dict(body.get("framework_info", {}))
        framework_info.setdefault("id", {"value": framework_id})
        task = copy.deepcopy(body["task"])
        with self._cond:
            framework = self._frameworks.get(framework_id)
            if framework is None:
                framework = _Framework(framework_id=framework_id, info=framework_info)
                self._frameworks[framework_id] = framework
            else:
                framework.info = framework_info
            if "executor" in task:
                info = _normalise_executor_info(task["executor"], framework_id)
                task["executor"] = info
            else:
                info = command_executor_info(task, framework_id=framework_id)
            executor_id = str(info["executor_id"]["value"])
            executor = framework.executors.get(executor_id)
            record = _Task(info=task)
            if executor is not None and executor.phase in (
                ExecutorPhase.TERMINATING,
                ExecutorPhase.TERMINATED,
            ):
                partition_aware = any(
                    c.get("type") == "PARTITION_AWARE"
                    for c in framework.info.get("capabilities", [])
                )
                executor.completed.append(record)
                self._agent_update(
                    executor,
                    record,
                    state="TASK_DROPPED" if partition_aware else "TASK_LOST",
                    reason="REASON_EXECUTOR_TERMINATED",
                    message="Executor terminating",
                )
                return
            if executor is None:
                executor = self._new_executor(framework_id, executor_id, info)
                executor.for_command_task = "executor" not in task
                framework.executors[executor_id] = executor
                executor.queued[record.task_id] = record
                executor.thread = threading.Thread(
                    target=self._guard(
                        f"executor-{executor_id}", lambda: self._run_executor(executor)
                    ),
                    name=f"executor-{executor_id}",
                    daemon=True,
                )
                executor.thread.start()
            elif executor.phase is ExecutorPhase.RUNNING and executor.stream is not None:
                executor.launched[record.task_id] = record
                executor.stream.send({"type": "LAUNCH", "launch": {"task": task}})
            else:
                executor.queued[record.task_id] = record
            logger.info(
                "task %s of framework %s goes to executor %s (%s)",
                record.task_id,
                framework_id,
                executor_id,
                executor.phase.value,
            )

    def _new_executor(self, framework_id: str, executor_id: str, info: JSON) -> _Executor:
        assert self._agent_id is not None
        container_id = str(uuid.uuid4())
        sandbox = sandbox_path(
            self.config.work_dir,
            agent_id=self._agent_id,
            framework_id=framework_id,
            executor_id=executor_id,
            container_id=container_id,
        )
        executor = _Executor(
            framework_id=framework_id,
            executor_id=executor_id,
            container_id=container_id,
            info=info,
            sandbox=sandbox,
        )
        self._latest_run[(framework_id, executor_id)] = executor
        return executor

    def _on_kill_task(self, body: JSON) -> None:
        framework_id = str(body["framework_id"]["value"])
        task_id = str(body["task_id"]["value"])
        with self._cond:
            framework = self._frameworks.get(framework_id)
            executors = [] if framework is None else list(framework.executors.values())
            for executor in executors:
                if task_id in executor.queued:
                    task = executor.queued.pop(task_id)
                    executor.completed.append(task)
                    self._agent_update(
                        executor,
                        task,
                        state="TASK_KILLED",
                        reason="REASON_TASK_KILLED_DURING_LAUNCH",
                        message="Killed before delivery to the executor",
                    )
                    if not executor.queued and not executor.launched:
                        self._shutdown_executor(executor)
                    return
                if task_id in executor.launched:
                    if executor.stream is not None:
                        kill = {"type": "KILL", "kill": {"task_id": {"value": task_id}}}
                        executor.stream.send(kill)
                    return
        logger.warning("asked to kill unknown task %s of framework %s", task_id, framework_id)

    def _on_framework_message(self, body: JSON) -> None:
        framework_id = str(body["framework_id"]["value"])
        executor_id = str(body["executor_id"]["value"])
        with self._cond:
            executor = self._live_executor(framework_id, executor_id)
            if executor is None or executor.stream is None:
                logger.warning(
                    "dropping a message for executor %s: it is not subscribed", executor_id
                )
                return
            executor.stream.send({"type": "MESSAGE", "message": {"data": body.get("data", "")}})

    def _on_acknowledge(self, body: JSON) -> None:
        framework_id = str(body["framework_id"]["value"])
        task_id = str(body["task_id"]["value"])
        ack_uuid = str(body["uuid"])
        with self._cond:
            self._forward_updates(
                self._updates.acknowledge(framework_id, task_id, ack_uuid, now=self._clock())
            )
            framework = self._frameworks.get(framework_id)
            if framework is None:
                return
            closed = self._updates.state(framework_id, task_id) is StreamState.CLOSED
            for executor in framework.executors.values():
                task = executor.launched.get(task_id)
                if task is not None and closed:
                    # The terminal update was acknowledged: the task is complete.
                    executor.completed.append(executor.launched.pop(task_id))

    def _on_shutdown_framework(self, framework_id: str) -> None:
        with self._cond:
            framework = self._frameworks.get(framework_id)
            if framework is None:
                return
            logger.info("shutting down framework %s", framework_id)
            framework.shutting_down = True
            self._updates.forget_framework(framework_id)
            for executor in list(framework.executors.values()):
                self._shutdown_executor(executor)
            self._maybe_complete_framework(framework)

    def _shutdown_executor_by_id(self, framework_id: str, executor_id: str) -> None:
        with self._cond:
            executor = self._live_executor(framework_id, executor_id)
            if executor is not None:
                self._shutdown_executor(executor)

    def _shutdown_executor(self, executor: _Executor) -> None:
        """SHUTDOWN to a subscribed executor and a kill after the grace period; others die now."""
        if executor.phase in (ExecutorPhase.TERMINATING, ExecutorPhase.TERMINATED):
            return
        now = self._clock()
        if executor.phase is ExecutorPhase.RUNNING and executor.stream is not None:
            logger.info("sending SHUTDOWN to executor %s", executor.executor_id)
            executor.stream.send({"type": "SHUTDOWN"})
            executor.kill_at = now + self.config.executor_shutdown_grace_period
        else:
            executor.kill_at = now
            executor.cancel_fetch.set()
        executor.phase = ExecutorPhase.TERMINATING
        self._cond.notify_all()

    def _live_executor(self, framework_id: str, executor_id: str) -> _Executor | None:
        framework = self._frameworks.get(framework_id)
        return None if framework is None else framework.executors.get(executor_id)

    def _maybe_complete_framework(self, framework: _Framework) -> None:
        if framework.shutting_down and not framework.executors:
            self._frameworks.pop(framework.framework_id, None)
            self._completed_frameworks.append(framework)

    # -- executors --------------------------------------------------------------------------

    def _run_executor(self, executor: _Executor) -> None:
        """Sandbox, fetcher, process; then wait for the process and report its death."""
        try:
            make_sandbox(executor.sandbox)
        except OSError as exc:
            self._executor_terminated(
                executor,
                status=256,
                reason="REASON_CONTAINER_LAUNCH_FAILED",
                message=f"Failed to launch container: Failed to create the sandbox: {exc}",
            )
            return
        uris = list(executor.info.get("command", {}).get("uris", []))
        with open(executor.sandbox / "stderr", "a", encoding="utf-8") as log:
            try:
                self._fetcher.fetch(
                    uris,
                    sandbox=executor.sandbox,
                    container_id=executor.container_id,
                    log=log,
                    cancelled=executor.cancel_fetch,
                )
            except FetchError as exc:
                self._executor_terminated(
                    executor,
                    status=256,
                    reason="REASON_CONTAINER_LAUNCH_FAILED",
                    message=f"Failed to launch container: {exc}",
                )
                return
        process = self._start_process(executor)
        if process is None:
            return
        status: int | None = None
        while status is None:
            status = process.wait(timeout=0.5)
        logger.info("executor %s exited with wait status %d", executor.executor_id, status)
        self._executor_terminated(executor, status=status)

    def _start_process(self, executor: _Executor) -> ExecutorProcess | None:
        with self._cond:
            if executor.phase is not ExecutorPhase.LAUNCHING or self._stopping.is_set():
                destroyed = "Container destroyed while fetching"
                self._executor_terminated(
                    executor,
                    status=int(signal.SIGKILL),
                    reason="REASON_CONTAINER_LAUNCH_FAILED",
                    message=f"Failed to launch container: {destroyed}",
                )
                return None
            assert self._agent_id is not None
            env = executor_environment(
                executor_id=executor.executor_id,
                framework_id=executor.framework_id,
                agent_id=self._agent_id,
                agent_address=self.address,
                sandbox=executor.sandbox,
                shutdown_grace_period=self.config.executor_shutdown_grace_period,
                command=executor.info.get("command", {}),
                variables=self.config.executor_environment_variables,
            )
            try:
                process = ExecutorProcess.start(
                    command=str(executor.info.get("command", {}).get("value", "")),
                    env=env,
                    sandbox=executor.sandbox,
                )
            except OSError as exc:
                self._executor_terminated(
                    executor,
                    status=256,
                    reason="REASON_CONTAINER_LAUNCH_FAILED",
                    message=f"Failed to launch container: {exc}",
                )
                return None
            executor.process = process
            executor.phase = ExecutorPhase.REGISTERING
            executor.registration_deadline = (
                self._clock() + self.config.executor_registration_timeout
            )
            self._cond.notify_all()
            logger.info(
                "started executor %s (pid %d) in %s",
                executor.executor_id,
                process.pid,
                executor.sandbox,
            )
            return process

    def _executor_terminated(
        self,
        executor: _Executor,
        *,
        status: int,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        with self._cond:
            if executor.phase is ExecutorPhase.TERMINATED:
                return
            executor.phase = ExecutorPhase.TERMINATED
            executor.registration_deadline = executor.kill_at = executor.sigkill_at = None
            if executor.stream is not None:
                executor.stream.close()
            framework = self._frameworks.get(executor.framework_id)
            report = not self._stopping.is_set() and (
                framework is not None and not framework.shutting_down
            )
            # Like Mesos, no ExitedExecutorMessage for the executors the agent made itself for
            # command tasks (the recorded command task T6 brought the scheduler no FAILURE).
            if report and not executor.for_command_task:
                self._outbox.put(
                    _Call(
                        kind="EXECUTOR_EXITED",
                        body={
                            "type": "EXECUTOR_EXITED",
                            "executor_exited": {
                                "framework_id": {"value": executor.framework_id},
                                "executor_id": {"value": executor.executor_id},
                                "status": status,
                            },
                        },
                    )
                )
            reason = reason or executor.termination_reason or "REASON_EXECUTOR_TERMINATED"
            message = message or executor.termination_message or "Executor terminated"
            for task in list(executor.launched.values()) + list(executor.queued.values()):
                if report and task.state not in TERMINAL_STATES:
                    self._agent_update(
                        executor, task, state="TASK_FAILED", reason=reason, message=message
                    )
                executor.completed.append(task)
            executor.launched.clear()
            executor.queued.clear()
            if framework is not None:
                if framework.executors.get(executor.executor_id) is executor:
                    del framework.executors[executor.executor_id]
                framework.completed_executors.append(executor)
                self._maybe_complete_framework(framework)
            self._cond.notify_all()

    def _agent_update(
        self, executor: _Executor, task: _Task, *, state: str, reason: str, message: str
    ) -> None:
        """A status update the agent itself generates (SOURCE_AGENT), reliably delivered."""
        status: JSON = {
            "task_id": {"value": task.task_id},
            "state": state,
            "message": message,
            "source": "SOURCE_AGENT",
            "reason": reason,
            "agent_id": {"value": self._agent_id},
            "executor_id": {"value": executor.executor_id},
            "timestamp": self._wall(),
            "uuid": _new_uuid(),
        }
        self._take_update(executor, task, status)

    def _take_update(self, executor: _Executor, task: _Task | None, status: JSON) -> None:
        if task is not None:
            task.state = str(status["state"])
            task.statuses.append(status)
        update = {"framework_id": {"value": executor.framework_id}, "status": status}
        _, forwards = self._updates.update(update, now=self._clock())
        self._forward_updates(forwards)
        self._cond.notify_all()

    # -- executor API -----------------------------------------------------------------------

    def executor_call(self, call: JSON) -> ExecutorCallResult:
        """Handle one ``/api/v1/executor`` call (validation as the recorded agent did it)."""
        kind = call.get("type")
        if kind not in ("SUBSCRIBE", "UPDATE", "MESSAGE"):
            invalid = "Failed to validate executor::Call: Expecting 'type' to be present"
            return ExecutorCallResult(status=400, error=invalid)
        for name in ("executor_id", "framework_id"):
            if _value_of(call.get(name)) is None:
                return ExecutorCallResult(
                    status=400,
                    error=f"Failed to validate executor::Call: Expecting '{name}' to be present",
                )
        framework_id = str(_value_of(call["framework_id"]))
        executor_id = str(_value_of(call["executor_id"]))
        with self._cond:
            framework = self._frameworks.get(framework_id)
            if framework is None:
                return ExecutorCallResult(status=400, error="Framework cannot be found")
            executor = framework.executors.get(executor_id)
            if executor is None:
                return ExecutorCallResult(status=400, error="Executor cannot be found")
            if kind == "SUBSCRIBE":
                return self._subscribe(framework, executor, call.get("subscribe", {}))
            if executor.phase is not ExecutorPhase.RUNNING and executor.phase is not (
                ExecutorPhase.TERMINATING
            ):
                return ExecutorCallResult(status=403, error="Executor is not subscribed")
            if kind == "MESSAGE":
                self._outbox.put(
                    _Call(
                        kind="MESSAGE",
                        body={
                            "type": "MESSAGE",
                            "message": {
                                "framework_id": {"value": framework_id},
                                "executor_id": {"value": executor_id},
                                "data": call.get("message", {}).get("data", ""),
                            },
                        },
                    )
                )
                return ExecutorCallResult(status=202)
            status = call.get("update", {}).get("status")
            problem = _validate_status(status)
            if problem is not None:
                return ExecutorCallResult(
                    status=400, error=f"Failed to validate executor::Call: {problem}"
                )
            assert status is not None
            ack = self._executor_update(executor, status)
            return ExecutorCallResult(status=202, after=(ack,))

    def _executor_update(self, executor: _Executor, status: JSON) -> JSON:
        forwarded = dict(status)
        forwarded["agent_id"] = {"value": self._agent_id}
        forwarded.setdefault("timestamp", self._wall())
        container_status: JSON = {
            "container_id": {"value": executor.container_id},
            "network_infos": [
                {"ip_addresses": [{"protocol": "IPv4", "ip_address": self.config.host}]}
            ],
        }
        if executor.process is not None:
            container_status["executor_pid"] = executor.process.pid
        forwarded["container_status"] = container_status
        forwarded = _ordered(forwarded, _STATUS_ORDER)
        task_id = str(status["task_id"]["value"])
        task = executor.find(task_id)
        if task is None:
            for done in executor.completed:
                if done.task_id == task_id:
                    task = done
        self._take_update(executor, task, forwarded)
        return {
            "type": "ACKNOWLEDGED",
            "acknowledged": {"task_id": {"value": task_id}, "uuid": status["uuid"]},
        }

    def _subscribe(
        self, framework: _Framework, executor: _Executor, subscribe: JSON
    ) -> ExecutorCallResult:
        if executor.phase not in (ExecutorPhase.REGISTERING, ExecutorPhase.RUNNING):
            return ExecutorCallResult(
                status=400, error=f"Executor is {executor.phase.value.lower()}"
            )
        if executor.stream is not None:
            executor.stream.close()
        stream = _EventStream()
        executor.stream = stream
        executor.phase = ExecutorPhase.RUNNING
        executor.registration_deadline = None
        logger.info("executor %s subscribed", executor.executor_id)
        stream.send(
            {
                "type": "SUBSCRIBED",
                "subscribed": {
                    "executor_info": executor.info,
                    "framework_info": framework.info,
                    "agent_info": self._agent_info(with_roles=False),
                    "container_id": {"value": executor.container_id},
                },
            }
        )
        # Tasks the executor already has (it got LAUNCH before a reconnection) are not sent
        # again; updates it never saw acknowledged are taken again (duplicates are dropped).
        for task_info in subscribe.get("unacknowledged_tasks", []):
            task_id = str(task_info.get("task_id", {}).get("value", ""))
            if task_id in executor.queued:
                executor.launched[task_id] = executor.queued.pop(task_id)
        for update in subscribe.get("unacknowledged_updates", []):
            status = update.get("status")
            if _validate_status(status) is None:
                assert status is not None
                stream.send(self._executor_update(executor, status))
        for task_id in list(executor.queued):
            task = executor.queued.pop(task_id)
            executor.launched[task_id] = task
            stream.send({"type": "LAUNCH", "launch": {"task": task.info}})
        self._cond.notify_all()
        return ExecutorCallResult(status=200, stream=stream)

    def executor_stream_ended(self, stream: _EventStream) -> None:
        """The executor's subscription connection closed."""
        with self._cond:
            for framework in self._frameworks.values():
                for executor in framework.executors.values():
                    if executor.stream is stream:
                        executor.stream = None
                        logger.info("executor %s disconnected", executor.executor_id)

    # -- state and files --------------------------------------------------------------------

    def state(self) -> JSON:
        """The agent's ``/state`` in the recorded shape (v0 names: ``slave_id``, ``pid``)."""
        with self._cond:
            frameworks = [self._framework_state(f) for f in self._frameworks.values()]
            completed = [self._framework_state(f) for f in self._completed_frameworks]
        resources = self.config.resources
        return {
            "version": "1.12.0",
            "start_time": self._start_time,
            "id": self._agent_id or "",
            "pid": f"slave(1)@{self.address}",
            "hostname": self.config.hostname,
            "capabilities": ["MULTI_ROLE", "HIERARCHICAL_ROLE", "RESERVATION_REFINEMENT"],
            "resources": resources_summary(resources),
            "reserved_resources": {},
            "unreserved_resources": resources_summary(resources),
            "reserved_resources_full": {},
            "unreserved_resources_full": resources,
            "attributes": attributes_summary(self.config.attributes),
            "master_hostname": self.config.master.rsplit(":", 1)[0],
            "flags": self._flags(),
            "frameworks": frameworks,
            "completed_frameworks": completed,
        }

    def _flags(self) -> JSON:
        """The ``flags`` of ``/state``; like Mesos, a flag that was not given is left out."""
        flags: JSON = {
            "attributes": self.config.attributes_flag,
            "executor_registration_timeout": _duration_text(
                self.config.executor_registration_timeout
            ),
            "executor_shutdown_grace_period": _duration_text(
                self.config.executor_shutdown_grace_period
            ),
            "fetcher_cache_dir": str(self._cache.directory.parent),
            "fetcher_stall_timeout": _duration_text(self.config.fetcher_timeout),
            "hostname": self.config.hostname,
            "ip": self.config.host,
            "master": self.config.master,
            "port": str(self.port),
            "resources": self.config.resources_flag,
            "work_dir": str(self.config.work_dir),
        }
        if self.config.executor_environment_variables is not None:
            flags["executor_environment_variables"] = json.dumps(
                dict(self.config.executor_environment_variables)
            )
        return dict(sorted(flags.items()))

    def _framework_state(self, framework: _Framework) -> JSON:
        info = framework.info
        return {
            "id": framework.framework_id,
            "name": info.get("name", ""),
            "user": info.get("user", ""),
            "failover_timeout": info.get("failover_timeout", 0.0),
            "checkpoint": info.get("checkpoint", False),
            "hostname": info.get("hostname", ""),
            "roles": info.get("roles", [info.get("role", "*")]),
            "executors": [self._executor_state(e) for e in framework.executors.values()],
            "completed_executors": [self._executor_state(e) for e in framework.completed_executors],
        }

    def _executor_state(self, executor: _Executor) -> JSON:
        def task_state(task: _Task) -> JSON:
            statuses = []
            for status in task.statuses:
                entry: JSON = {"state": status["state"], "timestamp": status.get("timestamp")}
                if "container_status" in status:
                    container = dict(status["container_status"])
                    container.pop("executor_pid", None)
                    entry["container_status"] = container
                statuses.append(entry)
            return {
                "id": task.task_id,
                "name": task.info.get("name", ""),
                "framework_id": executor.framework_id,
                "executor_id": executor.executor_id,
                "slave_id": self._agent_id or "",
                "state": task.state,
                "resources": resources_summary(task.info.get("resources", [])),
                "role": "*",
                "statuses": statuses,
            }

        all_resources = list(executor.info.get("resources", []))
        for task in list(executor.launched.values()):
            all_resources.extend(task.info.get("resources", []))
        return {
            "id": executor.executor_id,
            "name": executor.info.get("name", ""),
            "source": executor.info.get("source", ""),
            "container": executor.container_id,
            "directory": str(executor.sandbox),
            "resources": resources_summary(all_resources),
            "role": "*",
            "type": executor.info.get("type", "DEFAULT"),
            "tasks": [task_state(t) for t in executor.launched.values()],
            "queued_tasks": [task_state(t) for t in executor.queued.values()],
            "completed_tasks": [task_state(t) for t in executor.completed],
        }

    def resolve_files_path(self, path: str) -> Path | None:
        """Map a real or virtual ``/files`` path to a real path under the work dir.

        Virtual paths are ``[/slaves/<aid>]/frameworks/<fid>/executors/<eid>/runs/<run>/...``
        where ``<run>`` is a container id or ``latest``; anything resolving outside the work
        dir (through ``..`` or links) is refused.
        """
        if not path:
            return None
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "slaves" and parts[1] == self._agent_id:
            parts = parts[2:]
        real: Path | None = None
        if (
            len(parts) >= 6
            and parts[0] == "frameworks"
            and parts[2] == "executors"
            and parts[4] == "runs"
        ):
            with self._cond:
                executor = self._latest_run.get((parts[1], parts[3]))
            if executor is not None:
                container = executor.container_id if parts[5] == "latest" else parts[5]
                real = executor.sandbox.parent.joinpath(container, *parts[6:])
        if real is None:
            real = Path(path)
        try:
            resolved = real.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        root = self.config.work_dir.resolve()
        if resolved != root and root not in resolved.parents:
            return None
        return resolved

    def call_lock(self, framework_id: str, executor_id: str) -> threading.Lock:
        """The lock that keeps one executor's calls, and their acknowledgements, in order."""
        with self._cond:
            key = (framework_id, executor_id)
            lock = self._call_locks.get(key)
            if lock is None:
                lock = self._call_locks[key] = threading.Lock()
            return lock

    def send_to_executor(self, framework_id: str, executor_id: str, events: list[JSON]) -> None:
        """Queue *events* on the executor's current stream, if it has one."""
        with self._cond:
            executor = self._live_executor(framework_id, executor_id)
            if executor is not None and executor.stream is not None:
                for event in events:
                    executor.stream.send(event)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    agent: Agent


class _Handler(BaseHTTPRequestHandler):
    """The agent's HTTP API; headers in the order the recorded agent sent them."""

    protocol_version = "HTTP/1.1"
    server: _Server

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
        framework_id = _value_of(call.get("framework_id")) or ""
        executor_id = _value_of(call.get("executor_id")) or ""
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

    def _stream_events(self, stream: _EventStream) -> None:
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
        agent = self.server.agent
        path = (query.get("path") or [""])[0]
        if not path:
            self._error(400, "Expecting 'path' to be present")
            return
        try:
            offset = int((query.get("offset") or ["0"])[0])
            length_values = query.get("length")
            length = int(length_values[0]) if length_values else None
        except ValueError:
            self._error(400, "Failed to parse offset or length")
            return
        resolved = agent.resolve_files_path(path)
        if resolved is None:
            self._error(404, "")
            return
        if resolved.is_dir():
            self._error(400, "Cannot read a directory")
            return
        size = resolved.stat().st_size
        if offset == -1:
            self._json({"data": "", "offset": size})
            return
        if offset < 0:
            self._error(400, "Negative offset provided")
            return
        # Mesos caps one read at 16 pages (src/files/files.cpp).
        cap = 16 * os.sysconf("SC_PAGESIZE")
        count = cap if length is None or length < 0 else min(length, cap)
        with open(resolved, "rb") as file:
            file.seek(offset)
            data = file.read(count)
        self._json({"data": data.decode("utf-8", errors="replace"), "offset": offset})

    def _files_browse(self, query: dict[str, list[str]]) -> None:
        agent = self.server.agent
        path = (query.get("path") or [""])[0]
        resolved = agent.resolve_files_path(path)
        if resolved is None:
            self._error(404, "")
            return
        entries = sorted(resolved.iterdir()) if resolved.is_dir() else [resolved]
        listing = []
        for entry in entries:
            try:
                info = entry.lstat()
            except OSError:
                continue
            shown = path.rstrip("/") + "/" + entry.name if resolved.is_dir() else path
            listing.append(
                {
                    "gid": _group_name(info.st_gid),
                    "mode": stat.filemode(info.st_mode),
                    "mtime": float(int(info.st_mtime)),
                    "nlink": info.st_nlink,
                    "path": shown,
                    "size": info.st_size,
                    "uid": _user_name(info.st_uid),
                }
            )
        self._json(listing)


# -- helpers ---------------------------------------------------------------------------------


def _records(decoder: RecordIODecoder) -> Iterator[bytes]:
    while True:
        record = decoder.next_record()
        if record is NEED_DATA or record is END_OF_STREAM:
            return
        assert isinstance(record, bytes)
        yield record


def _value_of(obj: Any) -> str | None:
    """``obj["value"]`` of a v1 id object, ``None`` when *obj* is not one."""
    if isinstance(obj, dict) and isinstance(obj.get("value"), str):
        return str(obj["value"])
    return None


def _validate_status(status: Any) -> str | None:
    if not isinstance(status, dict):
        return "Expecting 'status' to be present"
    if _value_of(status.get("task_id")) is None:
        return "Expecting 'task_id' to be present"
    if "state" not in status:
        return "Expecting 'state' to be present"
    if not status.get("uuid"):
        return "Expecting 'uuid' to be present"
    if status["state"] == "TASK_STAGING":
        return "Executor is not allowed to send TASK_STAGING status update"
    if status.get("source", "SOURCE_EXECUTOR") != "SOURCE_EXECUTOR":
        return "Received Status update for task with invalid source"
    return None


def _duration_text(seconds: float) -> str:
    return format_duration(seconds)


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _write_json_atomically(path: Path, obj: JSON) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    """The agent's command line, exactly as :mod:`toil_mesos.cluster._protocol` gives it."""
    parser = argparse.ArgumentParser(
        prog="python -m toil_mesos.cluster.agent",
        description="Mini-cluster Mesos agent (a test and demo agent, not a Mesos replacement).",
    )
    parser.add_argument("--master", required=True, help="the master's IP:PORT")
    parser.add_argument("--host", required=True, help="IP to listen on and advertise")
    parser.add_argument("--port", required=True, type=int, help="port; 0 picks a free one")
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("--ready-file", required=True, type=Path)
    parser.add_argument("--hostname", default=None, help="default: localhost for loopback, else IP")
    parser.add_argument("--resources", default=DEFAULT_AGENT_RESOURCES)
    parser.add_argument("--attributes", default="")
    parser.add_argument("--fetcher-timeout", type=float, default=DEFAULT_FETCHER_TIMEOUT)
    parser.add_argument(
        "--fetcher-cache-size", type=fetcher_cache_size, default=DEFAULT_FETCHER_CACHE_SIZE,
        metavar="SIZE", help="bound of the fetcher cache, LRU evicted, as Mesos' "
        "--fetcher_cache_size (e.g. 2GB, 500M; default: 2GB)",
    )
    parser.add_argument("--executor-registration-timeout", type=float, default=60.0)
    parser.add_argument("--executor-shutdown-grace-period", type=float, default=5.0)
    parser.add_argument(
        "--status-update-retry-seconds",
        type=float,
        default=STATUS_UPDATE_RETRY_SECONDS,
        help="first resend of an unacknowledged status update; doubles after each resend "
        "(default: %(default)s, as Mesos; tests lower it)",
    )
    parser.add_argument(
        ENVIRONMENT_VARIABLES_FLAG,
        default=None,
        metavar="JSON",
        help="a JSON object of string variables every executor gets, as Mesos' "
        "--executor_environment_variables: they replace the default PATH, and the agent's "
        "MESOS_* and LIBPROCESS_PORT win over them (default: none)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Validate parsed arguments.

    :raises InvalidFlagError: for a bad ``--resources`` or ``--attributes``.
    :raises ValueError: for non-positive timeouts, or ``--executor-environment-variables``
        that is not a JSON object of strings.
    """
    resources = merge_default_resources(
        parse_resources(args.resources), parse_resources(DEFAULT_AGENT_RESOURCES)
    )
    attributes = parse_attributes(args.attributes)
    for name in (
        "fetcher_timeout",
        "executor_registration_timeout",
        "status_update_retry_seconds",
    ):
        if getattr(args, name) <= 0:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be positive, got {getattr(args, name)!r}")
    if args.executor_shutdown_grace_period < 0:
        raise ValueError("--executor-shutdown-grace-period must not be negative")
    hostname = args.hostname or ("localhost" if args.host.startswith("127.") else args.host)
    variables = args.executor_environment_variables
    return AgentConfig(
        master=args.master,
        host=args.host,
        port=args.port,
        work_dir=args.work_dir.absolute(),
        ready_file=args.ready_file.absolute(),
        hostname=hostname,
        resources=resources,
        attributes=attributes,
        resources_flag=args.resources,
        attributes_flag=args.attributes,
        fetcher_timeout=args.fetcher_timeout,
        fetcher_cache_size=args.fetcher_cache_size,
        executor_registration_timeout=args.executor_registration_timeout,
        executor_shutdown_grace_period=args.executor_shutdown_grace_period,
        status_update_retry_seconds=args.status_update_retry_seconds,
        executor_environment_variables=(
            None if variables is None else parse_environment_variables(variables)
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run an agent in the foreground until SIGTERM or SIGINT; exit 0 after a clean stop."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s agent[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO; the master link and the fetcher would drown the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
    except (InvalidFlagError, ValueError) as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent = Agent(config)
    try:
        agent.start()
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
        return 1
    try:
        while not stop.wait(timeout=1.0):
            pass
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
