"""Which agents can start this workflow's executor: failures per agent, agents set aside.

An agent whose executor cannot start (``toil-mesos`` missing there, a bad ``--mesosExecutor``)
fails every task sent to it within a second, so without bookkeeping Toil would spend each job's
retries on it. The rules, all here and pure (the caller holds its own lock):

* A task that ended before it ran, because its executor ended, is a *start failure* of its
  agent, unless a task was running on that agent's executor then or had just ended with it
  (then the executor crashed: the running jobs are lost, nothing is counted).
* After one start failure an agent is on probation: one task at a time until a task runs there.
  A task that reaches TASK_RUNNING clears the agent's count.
* After :data:`MAX_START_FAILURES` start failures with no task running in between the agent is
  *set aside*: it gets no more tasks of this workflow (its offers are declined).
* When every agent known from offers is set aside, no job can run: the caller stops the
  workflow with the reason.
* An agent that comes back is tried again from scratch: a new agent id for the same
  ``HOST:PORT`` (an agent restarted with a clean work dir) replaces the old id, and a lost agent
  is forgotten, so offers after it re-registers find it fresh.

Jobs of failed starts never ran, so the caller puts them back in its queue instead of reporting
them to Toil (which would charge a retry); :meth:`AgentHealth.may_requeue` bounds that.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toil_mesos.scheduler._agent_diagnosis import Diagnosis

__all__ = [
    "MAX_START_FAILURES",
    "AgentHealth",
    "StartFailure",
    "all_set_aside_message",
    "offer_address",
]

logger = logging.getLogger(__name__)

#: Start failures in a row after which an agent is set aside.
MAX_START_FAILURES = 2
#: How often one job may go back to the queue after failed starts, beyond the start failures
#: every known agent can have before it is set aside; then Toil is told (a loop breaker, for
#: agents that keep re-registering).
EXTRA_REQUEUES_PER_JOB = 2
#: Seconds after a running task's executor died during which start failures are that crash.
CRASH_WINDOW_SECONDS = 10.0


class StartFailure(enum.Enum):
    """What a task that ended before it ran meant for its agent."""

    COUNTED = "counted"
    SET_ASIDE = "set aside"  # counted, and the agent was set aside by it
    CRASH = "crash"  # the executor crashed with running tasks: not the agent's start failure
    IGNORED = "ignored"  # an agent set aside already, or unknown


@dataclass(slots=True)
class _Agent:
    hostname: str
    address: str | None
    failures: int = 0
    running: int = 0
    crashed_at: float | None = None
    set_aside: bool = False


class AgentHealth:
    """Start failures per agent, the agents set aside, and re-registrations."""

    def __init__(self, *, max_start_failures: int = MAX_START_FAILURES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_start_failures
        self._clock = clock
        self._agents: dict[str, _Agent] = {}
        self._requeues: dict[int, int] = {}

    # ---- what the offers say ----

    def offered(self, agent_id: str, hostname: str, address: str | None) -> str | None:
        """An offer from this agent. Returns the id of an agent it replaces (same address)."""
        agent = self._agents.get(agent_id)
        if agent is not None:
            agent.hostname, agent.address = hostname, address or agent.address
            return None
        self._agents[agent_id] = _Agent(hostname, address)
        if address is None:
            return None
        replaced = next((other for other, known in self._agents.items()
                         if other != agent_id and known.address == address), None)
        if replaced is not None:
            old_label = self.label(replaced)
            if self._agents.pop(replaced).set_aside:
                logger.warning("agent %s, set aside, re-registered as agent %s: it gets tasks "
                               "again", old_label, agent_id)
        return replaced

    def label(self, agent_id: str) -> str:
        """How messages name an agent: ``HOST (HOST:PORT, agent ID)``."""
        agent = self._agents.get(agent_id)
        if agent is None:
            return f"agent {agent_id}"
        where = f"{agent.address}, " if agent.address and agent.address != agent.hostname else ""
        return f"{agent.hostname} ({where}agent {agent_id})"

    def address(self, agent_id: str) -> str | None:
        agent = self._agents.get(agent_id)
        return agent.address if agent else None

    def is_set_aside(self, agent_id: str) -> bool:
        agent = self._agents.get(agent_id)
        return agent is not None and agent.set_aside

    def allowance(self, agent_id: str, in_flight: int) -> int | None:
        """How many more tasks the agent may get now: None for no limit, 0 for none."""
        agent = self._agents.get(agent_id)
        if agent is None:
            return None
        if agent.set_aside:
            return 0
        if agent.failures:
            return max(0, 1 - in_flight)
        return None

    # ---- what the status updates say ----

    def started(self, agent_id: str) -> None:
        """A task reached TASK_RUNNING there: the executor starts, the count is cleared."""
        agent = self._agents.get(agent_id)
        if agent is not None:
            agent.failures = 0
            agent.running += 1

    def ended(self, agent_id: str, *, executor_died: bool) -> None:
        """A task that had reached TASK_RUNNING ended (its executor died with it or not)."""
        agent = self._agents.get(agent_id)
        if agent is not None:
            agent.running = max(0, agent.running - 1)
            if executor_died:
                agent.crashed_at = self._clock()

    def start_failed(self, agent_id: str) -> StartFailure:
        """A task there ended before it ran because its executor ended."""
        agent = self._agents.get(agent_id)
        if agent is None or agent.set_aside:
            return StartFailure.IGNORED
        if agent.running or (agent.crashed_at is not None
                             and self._clock() - agent.crashed_at < CRASH_WINDOW_SECONDS):
            return StartFailure.CRASH
        agent.failures += 1
        if agent.failures >= self._max:
            agent.set_aside = True
            return StartFailure.SET_ASIDE
        return StartFailure.COUNTED

    def lost(self, agent_id: str) -> bool:
        """The agent is gone; forgotten, so it is tried again if it comes back. Was it set aside?"""
        agent = self._agents.pop(agent_id, None)
        return agent is not None and agent.set_aside

    def all_set_aside(self) -> bool:
        """Whether agents are known and every one of them is set aside."""
        return bool(self._agents) and all(a.set_aside for a in self._agents.values())

    def set_aside(self) -> list[str]:
        """The ids of the agents set aside."""
        return [agent_id for agent_id, a in self._agents.items() if a.set_aside]

    # ---- jobs put back in the queue ----

    def may_requeue(self, job_id: int) -> bool:
        """Whether a job whose start failed may go back to the queue once more.

        Enough times for every known agent to be tried until set aside, so that a cluster of
        broken agents stops the workflow with their reasons before Toil charges the job.
        """
        count = self._requeues.get(job_id, 0) + 1
        self._requeues[job_id] = count
        return count <= self._max * len(self._agents) + EXTRA_REQUEUES_PER_JOB

    def attempt(self, job_id: int) -> int:
        """How often the job went back to the queue: its tasks' ids differ by it."""
        return self._requeues.get(job_id, 0)


def all_set_aside_message(agents: Sequence[str], diagnoses: Mapping[str, Diagnosis | None],
                          labels: Mapping[str, str]) -> str:
    """The error that stops a workflow whose every agent is set aside: each agent and why."""
    lines = [
        f"no agent of this cluster can start the workflow's executor: each of the "
        f"{len(agents)} agent(s) failed to start it {MAX_START_FAILURES} times, so no job can "
        "run. No job was charged a retry for these failures."
    ]
    for agent_id in agents:
        diagnosis = diagnoses.get(agent_id)
        described = (diagnosis.describe() if diagnosis is not None
                     else "its executor's stderr could not be read in time")
        lines.append(f"- agent {labels.get(agent_id, agent_id)}: {described}")
    lines.append("Fix the agents (or the executor command), then run the same command with "
                 "--restart (the job store is kept).")
    return "\n".join(lines)


def offer_address(offer: Mapping[str, Any]) -> str | None:
    """The agent's ``HOST:PORT`` from an offer's ``url`` (its IP, else its hostname).

    >>> offer_address({"url": {"address": {"hostname": "n1", "ip": "10.0.0.2", "port": 5051}}})
    '10.0.0.2:5051'
    >>> offer_address({"hostname": "n1"}) is None
    True
    """
    url = offer.get("url")
    address = url.get("address") if isinstance(url, Mapping) else None
    if not isinstance(address, Mapping):
        return None
    host = address.get("ip") or address.get("hostname")
    port = address.get("port")
    if not host or not isinstance(port, int):
        return None
    return f"{host}:{port}"
