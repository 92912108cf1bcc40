"""The agent's link to the master: registration, recovery, the event stream and calls.

The ``agent-master-link`` thread registers (reporting every executor and task the agent still
runs, so a restarted master recovers them: ``_protocol``), reads the master's RecordIO stream
and hands each event to the façade, and registers again with bounded backoff when the stream
ends. The ``agent-sender`` thread posts the queued calls (``AgentCore.outbox``) in order. A
master that stops heartbeating counts as gone after :data:`MISSED_HEARTBEATS` intervals.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import httpx

from toil_mesos.cluster._agent_model import (
    JSON,
    LOGGER_NAME,
    AgentCall,
    AgentCore,
    ExecutorPhase,
)
from toil_mesos.cluster._protocol import AGENT_CALL_PATH, AGENT_STREAM_PATH
from toil_mesos.errors import RemoteProtocolError
from toil_mesos.mesos._master_detection import MasterDetector, detector_for
from toil_mesos.mesos._master_spec import parse_master_spec
from toil_mesos.mesos._recordio import END_OF_STREAM, NEED_DATA, RecordIODecoder
from toil_mesos.mesos._scheduler_state import resolve_redirect

__all__ = ["CALL_TIMEOUT", "MISSED_HEARTBEATS", "MasterLink"]

logger = logging.getLogger(LOGGER_NAME)

#: Re-registration backoff: starts small so a restarted master sees its agents quickly, and is
#: bounded so an agent never waits long once the master is back.
REGISTER_BACKOFF_MIN: Final = 0.1
REGISTER_BACKOFF_MAX: Final = 2.0
#: Read timeout of the master link; the master heartbeats far more often than this, and a
#: dead master closes the connection, so this only bounds a silent network partition.
LINK_READ_TIMEOUT: Final = 60.0
#: Heartbeat intervals of silence after which the agent drops the link and registers again
#: (a partitioned master sends neither events nor a connection reset).
MISSED_HEARTBEATS: Final = 3
CALL_TIMEOUT: Final = 10.0


class MasterLink:
    """Registration, the master's event stream, and calls to the master.

    :param on_event: every master event but REGISTERED and HEARTBEAT (called without the lock).
    """

    def __init__(self, core: AgentCore, *, on_event: Callable[[JSON], None]) -> None:
        self._core = core
        self._on_event = on_event
        self._client = httpx.Client(trust_env=False, timeout=CALL_TIMEOUT)
        self._stream_id: str | None = None
        self._response: httpx.Response | None = None
        self._ready_written = False
        #: From REGISTERED; the link counts as broken after MISSED_HEARTBEATS of silence.
        self._heartbeat_interval: float | None = None
        self._last_event = 0.0
        # --master names one master, several, or a ZooKeeper election: the link follows the
        # leader (a non-leader answers 307 with the leader's address).
        self._masters: MasterDetector = detector_for(parse_master_spec(core.config.master))
        self._masters_started = False
        #: ``http://host:port`` of the master registered with (or being tried).
        self._master_url: str | None = None

    def close(self) -> None:
        self._client.close()
        self._masters.close()

    def _pick_master(self) -> str | None:
        if not self._masters_started:
            self._masters_started = True
            self._masters.start(lambda url: None)
        url = self._masters.next_master()
        with self._core.cond:
            self._master_url = url
        return url

    # -- registration and recovery ------------------------------------------------------------

    def agent_info(self, *, with_roles: bool = True) -> JSON:
        """``AgentInfo`` as registration and the executors' SUBSCRIBED carry it."""
        config = self._core.config
        resources = config.resources
        if not with_roles:
            resources = [{k: v for k, v in r.items() if k != "role"} for r in resources]
        info: JSON = {
            "hostname": config.hostname,
            "port": self._core.port,
            "resources": resources,
            "attributes": config.attributes,
        }
        if self._core.agent_id is not None:
            info["id"] = {"value": self._core.agent_id}
        return info

    def _register_body(self) -> JSON:
        """REGISTER, with what the agent runs: a restarted master learns it from this."""
        core = self._core
        with core.cond:
            executors: list[JSON] = []
            for framework in core.frameworks.values():
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
                    "agent_info": self.agent_info(),
                    "address": core.address,
                    "executors": executors,
                },
            }

    def run(self) -> None:
        """The ``agent-master-link`` thread: register, read, register again."""
        core = self._core
        backoff = REGISTER_BACKOFF_MIN
        redirected: str | None = None
        # A restarted agent registers once its recovered executors are back (or given up on),
        # so the master learns what really survived (Mesos: MESOS-7539).
        while not core.recovered.wait(timeout=0.25):
            if core.stopping.is_set():
                return
        while not core.stopping.is_set():
            registered_before = core.registered.is_set()
            master = redirected
            redirected = None
            try:
                if master is None:
                    master = self._pick_master()
                if master is None:
                    logger.warning("no leading master known (%s)", core.config.master)
                else:
                    redirected = self._register_and_read(master)
            except (httpx.HTTPError, RemoteProtocolError, ValueError, OSError) as exc:
                if not core.stopping.is_set():
                    logger.warning("master link to %s failed: %s", master, exc)
            if redirected is not None:
                with core.cond:
                    self._master_url = redirected
                continue
            succeeded = core.registered.is_set() or registered_before
            core.registered.clear()
            with core.cond:
                self._stream_id = None
                self._response = None
            if core.stopping.is_set():
                break
            if succeeded:
                backoff = REGISTER_BACKOFF_MIN
            logger.info("registering again with the master in %.1f s", backoff)
            core.stopping.wait(backoff)
            backoff = min(backoff * 2, REGISTER_BACKOFF_MAX)

    def _register_and_read(self, master: str) -> str | None:
        """Register with *master* and read its stream; return the leader it redirects to."""
        body = self._register_body()
        decoder = RecordIODecoder()
        timeout = httpx.Timeout(CALL_TIMEOUT, read=LINK_READ_TIMEOUT)
        url = master + AGENT_STREAM_PATH
        with self._client.stream(
            "POST", url, json=body, headers={"Accept": "application/json"}, timeout=timeout
        ) as response:
            if response.status_code == 307:
                response.read()
                leader = resolve_redirect(master, response.headers.get("Location", ""))
                logger.info("master %s redirects to the leading master %s", master, leader)
                return leader
            if response.status_code != 200:
                response.read()
                logger.warning(
                    "master refused registration: %s %s",
                    response.status_code,
                    response.text.strip(),
                )
                return None
            with self._core.cond:
                self._stream_id = response.headers.get("Mesos-Stream-Id")
                self._response = response
            if self._core.stopping.is_set():
                return None
            for chunk in response.iter_raw():
                decoder.feed(chunk)
                for record in _records(decoder):
                    self._master_event(json.loads(record))
            decoder.feed(b"")
            for record in _records(decoder):
                self._master_event(json.loads(record))
        logger.warning("the master closed the agent stream")
        return None

    def abort(self) -> None:
        """Break the link (the link thread then registers again, unless stopping)."""
        with self._core.cond:
            response = self._response
        if response is None:
            return
        # Closing an httpx response from another thread does not wake a blocked read; shutting
        # the socket down does.
        network_stream = response.extensions.get("network_stream")
        sock = None if network_stream is None else network_stream.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _master_event(self, event: Any) -> None:
        with self._core.cond:
            self._last_event = self._core.clock()
        try:
            kind = event.get("type")
            logger.debug("master event %s", kind)
            if kind == "REGISTERED":
                self._on_registered(event["registered"])
            elif kind != "HEARTBEAT":
                self._on_event(event)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            # A malformed event is the master's bug; the link and the agent carry on.
            logger.error("ignoring a malformed master event %.300r: %r", event, exc)

    def _on_registered(self, body: JSON) -> None:
        core = self._core
        agent_id = str(body["agent_id"]["value"])
        with core.cond:
            if core.agent_id is not None and core.agent_id != agent_id:
                logger.warning(
                    "the master gave a new agent id %s (was %s)", agent_id, core.agent_id
                )
            first = core.agent_id is None
            core.agent_id = agent_id
            # A restart with the same work dir registers as this agent again.
            core.store.save_agent_id(agent_id)
            interval = body.get("heartbeat_interval_seconds")
            self._heartbeat_interval = float(interval) if interval else None
            core.registered.set()
            core.forward_updates(core.updates.resend_all(now=core.clock()))
            core.cond.notify_all()
        logger.info(
            "%s with the master as %s", "registered" if first else "re-registered", agent_id
        )
        if not self._ready_written:
            _write_json_atomically(
                core.config.ready_file,
                {"id": agent_id, "address": core.address, "pid": os.getpid()},
            )
            self._ready_written = True

    def check_heartbeats(self, now: float) -> float | None:
        """Drop a silent master link; return when the link would next count as silent.

        Called by the timer thread with the lock held.
        """
        if not self._core.registered.is_set() or not self._heartbeat_interval:
            return None
        deadline = self._last_event + MISSED_HEARTBEATS * self._heartbeat_interval
        if now < deadline:
            return deadline
        logger.warning(
            "no event from the master for %.1f s (%d heartbeats); registering again",
            now - self._last_event,
            MISSED_HEARTBEATS,
        )
        self._last_event = now
        self.abort()
        return None

    # -- calls to the master ------------------------------------------------------------------

    def run_sender(self) -> None:
        """The ``agent-sender`` thread: post queued calls in order, while registered."""
        core = self._core
        pending: list[AgentCall] = []
        while not (core.stopping.is_set() and core.outbox.empty() and not pending):
            if not pending:
                try:
                    pending.append(core.outbox.get(timeout=0.25))
                except queue.Empty:
                    continue
            if not core.registered.wait(timeout=0.25):
                if core.stopping.is_set():
                    return
                continue
            call = pending.pop(0)
            with core.cond:
                stream_id = self._stream_id
                url = f"{self._master_url}{AGENT_CALL_PATH}"
            try:
                response = self._client.post(
                    url, json=call.body, headers={"Mesos-Stream-Id": stream_id or ""}
                )
            except httpx.HTTPError as exc:
                logger.warning("%s call to the master failed: %s", call.kind, exc)
                _retry(call, pending)
                core.stopping.wait(0.25)  # bounded pause before the next try
                continue
            if response.status_code == 202:
                continue
            if response.status_code == 404:
                logger.warning("the master does not know this agent's stream; registering again")
                # Hold further calls until the link is back with a new stream id.
                core.registered.clear()
                self.abort()
                _retry(call, pending)
                continue
            logger.error(
                "master refused %s: %s %s", call.kind, response.status_code, response.text.strip()
            )


def _retry(call: AgentCall, pending: list[AgentCall]) -> None:
    # Updates need no retry here: the status update manager resends them after the agent
    # has registered again. Other calls get a few more tries, in order.
    if call.kind != "UPDATE" and call.attempts < 5:
        pending.insert(0, AgentCall(kind=call.kind, body=call.body, attempts=call.attempts + 1))


def _records(decoder: RecordIODecoder) -> Iterator[bytes]:
    while True:
        record = decoder.next_record()
        if record is NEED_DATA or record is END_OF_STREAM:
            return
        assert isinstance(record, bytes)
        yield record


def _write_json_atomically(path: Path, obj: JSON) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    os.replace(tmp, path)
