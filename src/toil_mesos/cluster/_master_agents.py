"""The agents the master knows: registration, their streams, and their timeouts.

:class:`Agents` owns every :class:`AgentRecord`. An agent registers on a stream of its own
(``_protocol``) and keeps its id across re-registrations; when the stream breaks the agent has
``agent_timeout`` to come back before it is marked unreachable (``Master::markUnreachable``).
What an agent's arrival or loss means for tasks and offers is the façade's business.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toil_mesos.cluster._master_model import (
    AGENT_TRANSITIONS,
    AgentLifecycle,
    AgentRecord,
    CallRejected,
    Close,
    Output,
    Registry,
    id_of,
    next_state,
    value_of,
)
from toil_mesos.cluster._offers import ResourceBag, ResourceError

__all__ = ["Agents", "Registered"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Registered:
    """An accepted REGISTER: the agent, what to send, and what it says it runs."""

    agent: AgentRecord
    stream_id: str
    outputs: tuple[Output, ...]
    #: The agent's ``executors`` (frameworks, tasks and statuses it runs).
    executors: Sequence[Any]
    #: It had been marked unreachable: non-partition-aware frameworks' tasks are gone.
    was_unreachable: bool
    #: This master knew it (registered, not unreachable): its tasks here are known too.
    was_known: bool = False


class Agents(Registry[AgentRecord]):
    """Every agent by id.

    :param wall_clock: seconds since the epoch, for registration and unreachable times.
    :param new_uuid: stream ids.
    """

    def connected(self, agent_id: str | None) -> AgentRecord | None:
        """The agent if it has a stream to send to."""
        agent = self._by_id.get(agent_id or "")
        return agent if agent is not None and agent.stream_id is not None else None

    def registered(self, agent_id: str) -> bool:
        """Known and not unreachable.

        Mesos keeps an agent "registered" until it is marked unreachable; a broken stream
        within the agent timeout is the same as a missed ping.
        """
        agent = self._by_id.get(agent_id)
        return agent is not None and agent.state is not AgentLifecycle.UNREACHABLE

    # -- registration -------------------------------------------------------------------------

    def register(self, body: Mapping[str, Any], *, now: float) -> Registered:
        """An agent's REGISTER (``_protocol``): REGISTERED on a new stream.

        An agent id the master knows keeps its identity (its old stream, if still open, is
        closed); an unknown id is an agent re-registering with a restarted master.

        :raises CallRejected: 400 when the body is not a REGISTER.
        """
        register = body.get("register") if isinstance(body, Mapping) else None
        if body.get("type") != "REGISTER" or not isinstance(register, Mapping):
            raise CallRejected(400, "Expecting a 'REGISTER' call with 'register' present")
        agent_info = register.get("agent_info")
        address = register.get("address")
        if not isinstance(agent_info, Mapping) or not isinstance(address, str):
            raise CallRejected(400, "Expecting 'register.agent_info' and 'register.address'")
        try:
            total = ResourceBag.from_json(agent_info.get("resources") or [])
        except ResourceError as exc:
            raise CallRejected(400, f"Invalid agent resources: {exc}") from None

        stream_id = self._new_uuid()
        outputs: list[Output] = []
        requested = value_of(agent_info.get("id"))
        agent = self._by_id.get(requested) if requested else None
        info = dict(agent_info)
        if agent is None:
            agent_id = requested or f"{self._config.master_id}-S{next(self._ids)}"
            info["id"] = id_of(agent_id)
            agent = AgentRecord(
                agent_id=agent_id,
                info=info,
                address=address,
                total=total,
                state=AgentLifecycle.CONNECTED,
                stream_id=stream_id,
                registered_time=self._wall(),
                order=next(self._order),
            )
            self._by_id[agent_id] = agent
            logger.info("Agent %s at %s registered", agent_id, address)
            was_unreachable = was_known = False
        else:
            agent_id = agent.agent_id
            was = agent.state
            agent.state = next_state(
                AGENT_TRANSITIONS, agent.state, "register", f"agent {agent_id}"
            )
            if agent.stream_id is not None:
                outputs.append(Close(stream_id=agent.stream_id))
            info["id"] = id_of(agent_id)
            agent.info, agent.address, agent.total = info, address, total
            agent.disconnected_at = None
            was_unreachable = was is AgentLifecycle.UNREACHABLE
            was_known = not was_unreachable
            agent.unreachable_time = None
            logger.info("Agent %s at %s re-registered (was %s)", agent_id, address, was.value)
        outputs.append(
            self._opened(agent, stream_id, now, "REGISTERED", {"agent_id": id_of(agent_id)})
        )
        return Registered(
            agent=agent,
            stream_id=stream_id,
            outputs=tuple(outputs),
            executors=list(register.get("executors") or []),
            was_unreachable=was_unreachable,
            was_known=was_known,
        )

    def stream_closed(self, stream_id: str, *, now: float) -> AgentRecord | None:
        """An agent's registration stream ended; its agent timeout starts."""
        agent = self.by_stream(stream_id)
        if agent is None:
            return None
        agent.state = next_state(AGENT_TRANSITIONS, agent.state, "stream_closed", agent.agent_id)
        agent.stream_id = None
        agent.disconnected_at = now
        agent.next_heartbeat = None
        logger.warning("Agent %s disconnected", agent.agent_id)
        return agent

    # -- loss ---------------------------------------------------------------------------------

    def timed_out(self, now: float) -> list[AgentRecord]:
        """Agents whose stream has been gone for ``agent_timeout`` at *now*."""
        timeout = self._config.agent_timeout
        return [
            agent
            for agent in list(self._by_id.values())
            if agent.state is AgentLifecycle.DISCONNECTED
            and agent.disconnected_at is not None
            and now >= agent.disconnected_at + timeout
        ]

    def mark_unreachable(self, agent: AgentRecord) -> None:
        """No stream for ``agent_timeout``: the agent is unreachable (its executors are gone)."""
        agent.state = next_state(AGENT_TRANSITIONS, agent.state, "timeout", agent.agent_id)
        agent.unreachable_time = self._wall()
        logger.warning("Agent %s is unreachable: health check timed out", agent.agent_id)

    def deadlines(self) -> list[float]:
        """When a heartbeat or an agent timeout is next due, per agent."""
        out: list[float] = []
        for agent in self._by_id.values():
            if agent.next_heartbeat is not None:
                out.append(agent.next_heartbeat)
            if agent.state is AgentLifecycle.DISCONNECTED and agent.disconnected_at is not None:
                out.append(agent.disconnected_at + self._config.agent_timeout)
        return out
