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

:class:`Agent` is a façade over parts that each own one concern: the command line and its
configuration (``_agent_config``: add agent options there), the shared state
(``_agent_model``), the master link and recovery by re-registration (``_agent_link``), the
checkpoint and recovery after a restart (``_agent_checkpoint``, ``_agent_recovery``),
executor containers (``_agent_executors``), the master's task events (``_agent_tasks``), the
executor API and status updates (``_agent_updates``), ``/state`` (``_agent_state``), sandbox
files (``_agent_files``) and the HTTP API (``_agent_http``).

Restarted with the same work dir after a crash, the agent recovers (``_agent_recovery``, from
the checkpoint ``_agent_checkpoint`` writes): executors of frameworks that checkpoint
re-subscribe and keep their tasks; the others are killed.

This is a test and demo agent, not a replacement for Mesos: no containerizers, no resource
isolation, no authentication.
"""

from __future__ import annotations

import getpass
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from toil_mesos.cluster._agent_config import AgentConfig, build_parser, config_from_args
from toil_mesos.cluster._agent_executors import Executors
from toil_mesos.cluster._agent_files import SandboxFiles
from toil_mesos.cluster._agent_http import AgentHTTPServer
from toil_mesos.cluster._agent_link import MasterLink
from toil_mesos.cluster._agent_model import (
    JSON,
    LOGGER_NAME,
    AgentCore,
    ExecutorCallResult,
    ExecutorEventStream,
    ExecutorPhase,
)
from toil_mesos.cluster._agent_recovery import Recovery
from toil_mesos.cluster._agent_state import AgentStateRenderer
from toil_mesos.cluster._agent_tasks import TaskEvents
from toil_mesos.cluster._agent_updates import StatusUpdates
from toil_mesos.cluster._fetcher import Fetcher, FetcherCache
from toil_mesos.cluster._resources import InvalidFlagError

__all__ = [
    "Agent",
    "AgentConfig",
    "ExecutorCallResult",
    "ExecutorPhase",
    "build_parser",
    "config_from_args",
    "main",
]

logger = logging.getLogger(LOGGER_NAME)


class Agent:
    """A mini-cluster agent: wires its parts together, starts and stops its threads.

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
        core = AgentCore(
            config,
            clock=clock if clock is not None else time.monotonic,
            wall_clock=wall_clock if wall_clock is not None else time.time,
        )
        self._core = core
        user = _current_user()
        self._cache = FetcherCache(
            config.work_dir / "fetchcache" / user, max_bytes=config.fetcher_cache_size
        )
        fetcher = Fetcher(cache=self._cache, timeout=config.fetcher_timeout, user=user)
        self._link = MasterLink(core, on_event=self._on_master_event)
        self._updates = StatusUpdates(
            core, agent_info=lambda: self._link.agent_info(with_roles=False)
        )
        self._executors = Executors(core, fetcher, self._updates)
        self._tasks = TaskEvents(core, self._executors, self._updates)
        self._recovery = Recovery(core, self._executors)
        self._renderer = AgentStateRenderer(core, fetcher_cache_dir=self._cache.directory.parent)
        self.files = SandboxFiles(core)
        #: The master's events, by type, and the part that handles each (given the body).
        self._master_events: Mapping[str, Callable[[JSON], None]] = {
            "RUN_TASK": self._tasks.on_run_task,
            "KILL_TASK": self._tasks.on_kill_task,
            "MESSAGE": self._tasks.on_framework_message,
            "ACKNOWLEDGE": self._updates.on_acknowledge,
            "SHUTDOWN_EXECUTOR": self._tasks.on_shutdown_executor,
            "SHUTDOWN_FRAMEWORK": self._tasks.on_shutdown_framework,
        }
        self._call_locks: dict[tuple[str, str], threading.Lock] = {}
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        core = self._core
        return (
            f"<Agent id={core.agent_id!r} address={core.address_or_none!r}"
            f" registered={core.registered.is_set()} frameworks={len(core.frameworks)}>"
        )

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def address_or_none(self) -> str | None:
        return self._core.address_or_none

    @property
    def address(self) -> str:
        """``IP:PORT`` of the agent's HTTP API (the bound port when ``--port 0``)."""
        return self._core.address

    @property
    def port(self) -> int:
        return self._core.port

    @property
    def stopping(self) -> bool:
        return self._core.stopping.is_set()

    def start(self) -> None:
        """Bind the HTTP API and start every thread; registration happens in the background.

        :raises OSError: if the address cannot be bound.
        """
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        self._cache.reset()
        server = AgentHTTPServer((self.config.host, self.config.port), self)
        self._core.server = server
        # Before any thread runs: recovered executors must be known when they re-subscribe.
        self._recovery.recover()
        threads = {
            "agent-http": lambda: server.serve_forever(poll_interval=0.25),
            "agent-master-link": self._link.run,
            "agent-sender": self._link.run_sender,
            "agent-timers": self._timer_loop,
        }
        for name, target in threads.items():
            self._threads.append(self._core.spawn(name, target))
        logger.info("agent listening on %s, master %s", self.address, self.config.master)

    def stop(self) -> None:
        """Shut every executor down (SHUTDOWN, grace period, SIGTERM, SIGKILL), then close."""
        core = self._core
        if core.stopping.is_set():
            return
        logger.info("agent stopping")
        core.stopping.set()
        self._executors.stop_all()
        self._link.abort()
        with core.cond:
            core.cond.notify_all()
        if core.server is not None:
            core.server.shutdown()
            core.server.server_close()
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._link.close()
        logger.info("agent stopped")

    def _timer_loop(self) -> None:
        """The ``agent-timers`` thread: update resends, executor timers, a silent master."""
        core = self._core
        with core.cond:
            while not core.stopping.is_set():
                now = core.clock()
                core.forward_updates(core.updates.tick(now=now))
                deadlines: list[float] = []
                for executor in core.executors():
                    self._executors.timers(executor, now)
                    deadlines.extend(executor.timer_deadlines)
                update_deadline = core.updates.next_deadline()
                if update_deadline is not None:
                    deadlines.append(update_deadline)
                self._recovery.check_done()
                silence_deadline = self._link.check_heartbeats(now)
                if silence_deadline is not None:
                    deadlines.append(silence_deadline)
                wait = min(deadlines, default=now + 1.0) - now
                core.cond.wait(timeout=min(max(wait, 0.01), 1.0))

    def _on_master_event(self, event: JSON) -> None:
        kind = event.get("type")
        handler = self._master_events.get(kind) if isinstance(kind, str) else None
        if handler is None:
            logger.warning("ignoring unknown master event %r", kind)
            return
        assert isinstance(kind, str)
        handler(event[kind.lower()])

    # -- what the HTTP API asks ---------------------------------------------------------------

    def state(self) -> JSON:
        """The agent's ``/state`` in the recorded shape (v0 names: ``slave_id``, ``pid``)."""
        return self._renderer.render()

    def executor_call(self, call: JSON) -> ExecutorCallResult:
        """Handle one ``/api/v1/executor`` call (validation as the recorded agent did it)."""
        return self._updates.executor_call(call)

    def executor_stream_ended(self, stream: ExecutorEventStream) -> None:
        """The executor's subscription connection closed."""
        self._updates.stream_ended(stream)

    def resolve_files_path(self, path: str) -> Path | None:
        """Map a real or virtual ``/files`` path to a real path under the work dir."""
        return self.files.resolve(path)

    def call_lock(self, framework_id: str, executor_id: str) -> threading.Lock:
        """The lock that keeps one executor's calls, and their acknowledgements, in order."""
        with self._core.cond:
            key = (framework_id, executor_id)
            lock = self._call_locks.get(key)
            if lock is None:
                lock = self._call_locks[key] = threading.Lock()
            return lock

    def send_to_executor(self, framework_id: str, executor_id: str, events: list[JSON]) -> None:
        """Queue *events* on the executor's current stream, if it has one."""
        with self._core.cond:
            executor = self._core.live_executor(framework_id, executor_id)
            if executor is not None and executor.stream is not None:
                for event in events:
                    executor.stream.send(event)


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


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
