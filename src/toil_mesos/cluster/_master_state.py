"""The mini-cluster master as a sans-I/O state machine: frameworks, agents, offers, tasks.

Inputs are parsed calls (a framework's SUBSCRIBE and other scheduler calls, an agent's
registration and calls), stream closures and the passage of time (:meth:`MasterState.tick`).
Outputs are :data:`Output` values: :class:`Send` one event (a JSON object) on a stream, or
:class:`Close` a stream with the chunked last-chunk. The HTTP shell (``master.py``) owns the
sockets and threads; it feeds inputs in under one lock and writes outputs out. Nothing here
reads a clock: monotonic ``now`` comes in as an argument, and status timestamps come from an
injected wall clock, so every rule below is tested without sockets, threads or sleeps.

Behaviour follows the Mesos 1.12 master (``src/master/master.cpp``, ``validation.cpp``,
``http.cpp``) and the recorded transcripts in ``shared/mesos-transcripts``, which win where
they differ from the docs: error texts, the shape of SUBSCRIBED, OFFERS and UPDATE events,
reconciliation states, reasons and messages, TASK_ERROR for invalid tasks with no ``uuid``.

:class:`MasterState` is a façade over parts that each own one concern and its data:
``_master_frameworks`` (frameworks and subscriptions), ``_master_agents`` (agents),
``_master_allocation`` (offers, filters, allocation rounds), ``_master_launch`` (ACCEPT),
``_master_tasks`` (tasks and status updates), ``_master_reconcile`` (reconciliation) and
``_master_render`` (``/state``). It routes each input to the parts, in the order Mesos applies
them, and does what spans several parts: removing a framework and losing an agent.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from toil_mesos.cluster._executor_info import executor_info_text
from toil_mesos.cluster._master_agents import Agents
from toil_mesos.cluster._master_allocation import Allocator
from toil_mesos.cluster._master_frameworks import Frameworks, master_info
from toil_mesos.cluster._master_launch import TaskLauncher
from toil_mesos.cluster._master_model import (
    AGENT_TRANSITIONS,
    FRAMEWORK_TRANSITIONS,
    MESOS_VERSION,
    TERMINAL_STATES,
    AgentLifecycle,
    AgentRecord,
    AgentRegistration,
    CallRejected,
    Close,
    FrameworkLifecycle,
    FrameworkRecord,
    MasterConfig,
    Output,
    Send,
    Subscription,
    event,
    heartbeats,
    id_of,
    value_of,
)
from toil_mesos.cluster._master_reconcile import Reconciler
from toil_mesos.cluster._master_render import StateRenderer
from toil_mesos.cluster._master_requests import (
    HeaderLookup,
    parse_agent_call,
    parse_scheduler_request,
)
from toil_mesos.cluster._master_tasks import Tasks, shutdown_framework_event
from toil_mesos.cluster._offers import ResourceBag

__all__ = [
    "AGENT_TRANSITIONS",
    "FRAMEWORK_TRANSITIONS",
    "MESOS_VERSION",
    "TERMINAL_STATES",
    "AgentLifecycle",
    "AgentRegistration",
    "CallRejected",
    "Close",
    "FrameworkLifecycle",
    "HeaderLookup",
    "MasterConfig",
    "MasterState",
    "Output",
    "Send",
    "Subscription",
    "executor_info_text",
    "parse_agent_call",
    "parse_scheduler_request",
]

logger = logging.getLogger(__name__)

_Handler = Callable[[FrameworkRecord, Mapping[str, Any], float], list[Output]]

#: Scheduler calls the master passes on to the agent named in the call: the event it sends,
#: and the call's fields (with their defaults) the event carries after ``framework_id``.
_TO_AGENT: Final[Mapping[str, tuple[str, tuple[tuple[str, Any], ...]]]] = {
    "SHUTDOWN": ("SHUTDOWN_EXECUTOR", (("executor_id", None),)),
    "MESSAGE": ("MESSAGE", (("executor_id", None), ("data", ""))),
}


class MasterState:
    """Everything the master knows, and every rule it applies.

    Not thread-safe: the HTTP shell serialises all calls under one lock.

    :param config: identity and timers.
    :param wall_clock: seconds since the epoch, for status and registration timestamps.
    :param new_uuid: stream ids (``Mesos-Stream-Id``); injected so tests get stable ids.
    """

    def __init__(
        self,
        config: MasterConfig,
        *,
        wall_clock: Callable[[], float],
        new_uuid: Callable[[], str] | None = None,
        start_time: float | None = None,
    ) -> None:
        self.config = config
        new_uuid = new_uuid or (lambda: str(uuid.uuid4()))
        self._frameworks = Frameworks(config, wall_clock=wall_clock, new_uuid=new_uuid)
        self._agent_registry = Agents(config, wall_clock=wall_clock, new_uuid=new_uuid)
        self._allocator = Allocator(config, self._frameworks, self._agent_registry)
        self._tasks = Tasks(
            self._frameworks, self._agent_registry, self._allocator, wall_clock=wall_clock
        )
        self._task_launcher = TaskLauncher(
            self._agent_registry, self._allocator, wall_clock=wall_clock
        )
        self._reconciler = Reconciler(self._agent_registry, wall_clock=wall_clock)
        self._renderer = StateRenderer(
            config,
            self._frameworks,
            self._agent_registry,
            self._allocator,
            start_time=wall_clock() if start_time is None else start_time,
        )
        self._handlers: Mapping[str, _Handler] = {
            "TEARDOWN": self._teardown,
            "ACCEPT": self._task_launcher.accept,
            "DECLINE": self._decline,
            "REVIVE": self._revive,
            "SUPPRESS": self._suppress,
            "KILL": self._kill,
            "ACKNOWLEDGE": self._tasks.acknowledge,
            "RECONCILE": self._reconciler.reconcile,
            **{kind: functools.partial(self._to_agent, kind) for kind in _TO_AGENT},
        }

    def __repr__(self) -> str:
        return (
            f"<MasterState id={self.config.master_id} frameworks={len(self._frameworks)}"
            f" agents={len(self._agent_registry)} offers={len(self._allocator)}>"
        )

    @property
    def _agents(self) -> Agents:
        """The agents by id (for tests that drive a transition by hand)."""
        return self._agent_registry

    # -- frameworks ---------------------------------------------------------------------------

    @property
    def master_info(self) -> dict[str, Any]:
        """``MasterInfo`` as SUBSCRIBED carries it (recorded shape)."""
        return master_info(self.config)

    def subscribe(self, call: Mapping[str, Any], *, now: float) -> Subscription:
        """A validated SUBSCRIBE call: open a stream for it (see ``Frameworks.subscribe``).

        A failing-over framework's offers are dropped, and every subscription clears its
        filters: what it refused before may be offered again.
        """
        subscription, framework = self._frameworks.subscribe(call, now=now)
        if framework is not None:
            self._allocator.remove_offers_of(framework.framework_id)
            self._allocator.clear_filters(framework.framework_id)
            self._allocator.wake()
        return subscription

    def framework_stream_closed(self, stream_id: str, *, now: float) -> list[Output]:
        """A framework's SUBSCRIBE connection ended (client gone, or we closed it)."""
        framework = self._frameworks.stream_closed(stream_id, now=now)
        if framework is not None:
            self._allocator.remove_offers_of(framework.framework_id)
        return []

    def call(self, call: Mapping[str, Any], *, stream_id: str | None, now: float) -> list[Output]:
        """A validated non-SUBSCRIBE call (see :func:`parse_scheduler_request`).

        :raises CallRejected: for an unknown framework, a framework that is not subscribed, a
            missing or wrong ``Mesos-Stream-Id`` (recorded messages).
        """
        framework_id = value_of(call.get("framework_id")) or ""
        framework = self._frameworks.get(framework_id)
        if framework is None:
            raise CallRejected(400, "Framework cannot be found")
        if framework.state is not FrameworkLifecycle.CONNECTED:
            raise CallRejected(403, "Framework is not subscribed")
        if stream_id is None:
            raise CallRejected(
                400, "All non-subscribe calls should include the 'Mesos-Stream-Id' header"
            )
        if stream_id != framework.stream_id:
            raise CallRejected(
                400,
                f"The stream ID '{stream_id}' included in this request didn't match the stream"
                f" ID currently associated with framework ID {framework_id}",
            )
        kind = call["type"]
        handler = self._handlers.get(kind)
        if handler is None:
            logger.info("Ignoring %s call from framework %s", kind, framework_id)
            return []
        body = call.get(kind.lower())
        return handler(framework, body if isinstance(body, Mapping) else {}, now)

    def _teardown(
        self, framework: FrameworkRecord, body: Mapping[str, Any], now: float
    ) -> list[Output]:
        self._frameworks.teardown(framework)
        return self._remove_framework(framework)

    def _decline(
        self, framework: FrameworkRecord, body: Mapping[str, Any], now: float
    ) -> list[Output]:
        self._allocator.decline(framework, body, now)
        return []

    def _revive(
        self, framework: FrameworkRecord, body: Mapping[str, Any], now: float
    ) -> list[Output]:
        framework.suppressed = False
        self._allocator.clear_filters(framework.framework_id)
        self._allocator.wake()
        return []

    def _suppress(
        self, framework: FrameworkRecord, body: Mapping[str, Any], now: float
    ) -> list[Output]:
        framework.suppressed = True
        return []

    def _kill(
        self, framework: FrameworkRecord, body: Mapping[str, Any], now: float
    ) -> list[Output]:
        task_id = value_of(body.get("task_id")) or ""
        task = framework.tasks.get(task_id)
        if task is None:
            # Mesos reconciles an unknown task explicitly (recorded: TASK_LOST "Reconciliation:
            # Task is unknown to the agent").
            return self._reconciler.reconcile_one(
                framework, task_id, value_of(body.get("agent_id"))
            )
        agent = self._agent_registry.connected(task.agent_id)
        if agent is None:
            logger.warning("Cannot kill task %s: agent %s is not connected", task_id, task.agent_id)
            return []
        kill = {"framework_id": id_of(framework.framework_id), "task_id": id_of(task_id)}
        return [event(agent.stream_id, "KILL_TASK", **kill)]

    def _to_agent(
        self, kind: str, framework: FrameworkRecord, body: Mapping[str, Any], now: float
    ) -> list[Output]:
        """A call passed on to its agent as is (:data:`_TO_AGENT`); dropped if it is gone."""
        agent = self._agent_registry.connected(value_of(body.get("agent_id")))
        if agent is None:
            logger.warning("Dropping %s call for unknown agent %s", kind, body.get("agent_id"))
            return []
        event_type, fields = _TO_AGENT[kind]
        carried = {name: body.get(name, default) for name, default in fields}
        return [
            event(
                agent.stream_id, event_type, framework_id=id_of(framework.framework_id), **carried
            )
        ]

    # -- agents -------------------------------------------------------------------------------

    def register_agent(self, body: Mapping[str, Any], *, now: float) -> AgentRegistration:
        """An agent's REGISTER (``_protocol``): answer REGISTERED on a new stream.

        An agent id the master knows keeps its identity (its old stream, if still open, is
        closed); an unknown id is an agent re-registering with a restarted master, and its
        ``executors`` teach the master the frameworks and tasks it lost. An agent coming back
        from UNREACHABLE keeps the tasks of partition-aware frameworks; for the others, whose
        tasks were already reported LOST, it is told to shut the framework down.

        :raises CallRejected: 400 when the body is not a REGISTER.
        """
        registered = self._agent_registry.register(body, now=now)
        agent = registered.agent
        adopted = self._tasks.adopt(agent, registered.executors, registered.was_unreachable, now)
        if registered.was_known:
            adopted += self._tasks.unknown_to_agent(agent, registered.executors)
        self._allocator.wake()
        return AgentRegistration(
            stream_id=registered.stream_id,
            agent_id=agent.agent_id,
            outputs=(*registered.outputs, *adopted),
        )

    def agent_stream_closed(self, stream_id: str, *, now: float) -> list[Output]:
        """An agent's registration stream ended; the agent timeout starts.

        Offers on an agent that may be gone are rescinded at once (Mesos deactivates a
        disconnected agent); its resources come back when it re-registers. Tasks of frameworks
        that do not checkpoint are lost at once; the others wait for the agent.
        """
        agent = self._agent_registry.stream_closed(stream_id, now=now)
        if agent is None:
            return []
        return [*self._allocator.rescind_offers_on(agent), *self._tasks.agent_disconnected(agent)]

    def agent_call(
        self, call: Mapping[str, Any], *, stream_id: str | None, now: float
    ) -> list[Output]:
        """An agent's UPDATE, MESSAGE or EXECUTOR_EXITED (see :func:`parse_agent_call`).

        :raises CallRejected: 404 when the stream id is unknown (the agent must register again).
        """
        agent = self._agent_registry.by_stream(stream_id) if stream_id else None
        if agent is None:
            raise CallRejected(404, f"Unknown agent stream id {stream_id!r}: register again")
        kind = call["type"]
        body = call[kind.lower()]
        framework_id = value_of(body.get("framework_id")) or ""
        framework = self._frameworks.get(framework_id)
        if kind == "UPDATE":
            return self._tasks.update(framework, body)
        if kind == "EXECUTOR_EXITED":
            executor_id = value_of(body.get("executor_id")) or ""
            if agent.executors.pop((framework_id, executor_id), None) is not None:
                self._allocator.wake()
            carried = {"executor_id": id_of(executor_id)}
            if body.get("status") is not None:  # unknown for an executor a restart recovered
                carried["status"] = body["status"]
        else:
            carried = {"executor_id": body.get("executor_id"), "data": body.get("data", "")}
        if framework is None or framework.stream_id is None:
            if kind == "MESSAGE":
                logger.warning("Dropping executor message for framework %s", framework_id)
            return []
        event_type = "FAILURE" if kind == "EXECUTOR_EXITED" else kind
        return [event(framework.stream_id, event_type, agent_id=id_of(agent.agent_id), **carried)]

    # -- what spans the parts -----------------------------------------------------------------

    def _remove_framework(self, framework: FrameworkRecord) -> list[Output]:
        """Teardown or failover timeout: shut it down everywhere and forget it."""
        outputs = self._frameworks.forget(framework)
        framework_id = framework.framework_id
        self._allocator.remove_offers_of(framework_id)
        self._allocator.clear_filters(framework_id)
        for agent in self._agent_registry:
            if agent.stream_id is not None:
                outputs.append(shutdown_framework_event(agent, framework_id))
            for key in [k for k in agent.executors if k[0] == framework_id]:
                del agent.executors[key]
        self._tasks.kill_all(framework)
        self._allocator.wake()
        return outputs

    def _agent_lost(self, agent: AgentRecord, now: float) -> list[Output]:
        """No stream for ``agent_timeout``: Mesos' ``markUnreachable`` + ``__removeSlave``."""
        self._agent_registry.mark_unreachable(agent)
        outputs = self._tasks.agent_unreachable(agent)
        agent.executors.clear()
        outputs.extend(self._allocator.rescind_offers_on(agent))
        for framework in self._frameworks:
            if framework.stream_id is not None:
                outputs.append(
                    event(framework.stream_id, "FAILURE", agent_id=id_of(agent.agent_id))
                )
        return outputs

    # -- time ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest monotonic time at which :meth:`tick` has something to do."""
        allocation = self._allocator.deadline()
        if allocation == float("-inf"):
            return allocation
        deadlines = [*self._frameworks.deadlines(), *self._agent_registry.deadlines()]
        if allocation is not None:
            deadlines.append(allocation)
        return min(deadlines, default=None)

    def tick(self, now: float) -> list[Output]:
        """Do what is due at *now*: timeouts, heartbeats, and an allocation round."""
        outputs: list[Output] = []
        for framework in self._frameworks.expired(now):
            outputs.extend(self._remove_framework(framework))
        for agent in self._agent_registry.timed_out(now):
            outputs.extend(self._agent_lost(agent, now))
        interval = self.config.heartbeat_interval
        outputs.extend(heartbeats(self._frameworks, now, interval))
        outputs.extend(heartbeats(self._agent_registry, now, interval))
        outputs.extend(self._allocator.tick(now))
        return outputs

    # -- reading ------------------------------------------------------------------------------

    def available(self, agent_id: str) -> ResourceBag:
        """An agent's total minus what tasks, executors and outstanding offers hold."""
        return self._allocator.available(agent_id)

    def state_json(self) -> dict[str, Any]:
        """``GET /state`` in the recorded ``master_state`` shape (v0 names)."""
        return self._renderer.render()
