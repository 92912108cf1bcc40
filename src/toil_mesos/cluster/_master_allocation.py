"""Offers and allocation: who is offered what, what was refused, and when to offer again.

:class:`Allocator` owns the outstanding offers, the frameworks' refusal filters and the
allocation timer. An allocation round offers each connected agent's unused resources to the
unsuppressed frameworks that have not refused them (Mesos' resource filters: a filter refuses
only what is contained in what was refused), the framework holding the fewest cpus first.
A framework is offered only what its role may use: unreserved resources, and those statically
reserved for its role (or an ancestor of it); what it cannot use stays for the next framework,
so an agent's reservations for ``toil`` go to a framework in ``toil`` even while another
framework holds the agent's unreserved part. Reserved resources appear in the format the
framework speaks (``reservations`` with ``RESERVATION_REFINEMENT``, else ``role``).
An agent with ``gpus`` is offered only to frameworks declaring the ``GPU_RESOURCES``
capability, as Mesos' allocator does by default (so frameworks unaware of GPUs cannot fill GPU
machines).
Everything that frees or changes resources calls :meth:`Allocator.wake` so the next
:meth:`~toil_mesos.cluster._master_state.MasterState.tick` runs a round at once.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from toil_mesos.cluster._master_agents import Agents
from toil_mesos.cluster._master_frameworks import Frameworks
from toil_mesos.cluster._master_model import (
    AgentLifecycle,
    AgentRecord,
    FrameworkLifecycle,
    FrameworkRecord,
    MasterConfig,
    OfferRecord,
    Output,
    event,
    id_of,
    value_of,
)
from toil_mesos.cluster._offers import DEFAULT_ROLE, ResourceBag, ResourceError

__all__ = ["DEFAULT_REFUSE_SECONDS", "Allocator", "refuse_seconds", "speaks_refinement"]

logger = logging.getLogger(__name__)

#: Mesos' default ``Filters.refuse_seconds``.
DEFAULT_REFUSE_SECONDS: Final = 5.0
#: ``--min_allocatable_resources=cpus:0.01|mem:32`` (the recorded master's default).
_MIN_CPUS: Final = 0.01
_MIN_MEM: Final = 32.0
#: The capability a framework needs to be offered agents with GPUs.
_GPU_RESOURCES: Final = "GPU_RESOURCES"

#: What every accepted offer must share, and the recorded message when one does not.
_SAME_FOR_ALL_OFFERS: Final = (
    (
        "framework_id",
        "Offer {offer} has invalid framework {actual} while framework {expected} is expected",
    ),
    (
        "agent_id",
        "Aggregated offers must belong to one single agent. Offer {offer} uses agent {actual}"
        " and agent {expected}",
    ),
)


def speaks_refinement(framework: FrameworkRecord) -> bool:
    """Whether *framework* declared ``RESERVATION_REFINEMENT`` (the ``reservations`` format)."""
    capabilities = framework.info.get("capabilities") or []
    return any(
        isinstance(c, Mapping) and c.get("type") == "RESERVATION_REFINEMENT" for c in capabilities
    )


def refuse_seconds(filters: Any) -> float:
    """``Filters.refuse_seconds`` of a DECLINE or ACCEPT, or Mesos' default."""
    if isinstance(filters, Mapping):
        value = filters.get("refuse_seconds")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return DEFAULT_REFUSE_SECONDS


@dataclass(slots=True, kw_only=True)
class _Filter:
    resources: ResourceBag
    expires: float


class Allocator:
    """Outstanding offers, refusal filters and the allocation timer."""

    def __init__(self, config: MasterConfig, frameworks: Frameworks, agents: Agents) -> None:
        self._config = config
        self._frameworks = frameworks
        self._agents = agents
        self._offers: dict[str, OfferRecord] = {}
        #: framework id -> agent id -> what the framework refused there, until when.
        self._filters: dict[str, dict[str, list[_Filter]]] = {}
        self._offer_ids = itertools.count()
        self._next_allocation: float | None = None
        self._soon = True

    def __len__(self) -> int:
        return len(self._offers)

    def wake(self) -> None:
        """Run an allocation round at the next tick: resources changed."""
        self._soon = True

    def offers_of(self, framework_id: str) -> list[OfferRecord]:
        return [o for o in self._offers.values() if o.framework_id == framework_id]

    def get(self, offer_id: str) -> OfferRecord | None:
        return self._offers.get(offer_id)

    # -- what frameworks do with offers -------------------------------------------------------

    def take(
        self, framework_id: str, offer_ids: Sequence[str]
    ) -> tuple[str | None, list[OfferRecord]]:
        """Check an ACCEPT's offers as ``validation::offer::validate`` does, in its order.

        Valid offers are taken out of the outstanding ones and returned; invalid ones that
        are this framework's are discarded (their resources come back, with no filter), and
        the error says why.
        """
        error = self._offer_error(framework_id, offer_ids)
        if error is None:
            return None, [self._offers.pop(offer_id) for offer_id in offer_ids]
        for offer_id in offer_ids:
            offer = self._offers.get(offer_id)
            if offer is not None and offer.framework_id == framework_id:
                del self._offers[offer_id]
                self._soon = True
        return error, []

    def _offer_error(self, framework_id: str, offer_ids: Sequence[str]) -> str | None:
        if not offer_ids:
            return "No offers specified"
        seen: set[str] = set()
        for offer_id in offer_ids:
            if offer_id in seen:
                return f"Duplicate offer {offer_id} in offer list"
            seen.add(offer_id)
        for offer_id in offer_ids:
            if offer_id not in self._offers:
                return f"Offer {offer_id} is no longer valid"
        offers = [self._offers[offer_id] for offer_id in offer_ids]
        expected = {"framework_id": framework_id, "agent_id": offers[0].agent_id}
        # Each rule looks at every offer before the next rule starts (Mesos' order).
        for field_name, message in _SAME_FOR_ALL_OFFERS:
            for offer in offers:
                actual = getattr(offer, field_name)
                if actual != expected[field_name]:
                    return message.format(
                        offer=offer.offer_id, actual=actual, expected=expected[field_name]
                    )
        return None

    def decline(self, framework: FrameworkRecord, body: Mapping[str, Any], now: float) -> None:
        """DECLINE: the offers go back, refused for ``refuse_seconds``."""
        refuse = refuse_seconds(body.get("filters"))
        for offer_id in (value_of(o) for o in body.get("offer_ids") or []):
            offer = self._offers.get(offer_id or "")
            if offer is None or offer.framework_id != framework.framework_id:
                logger.warning("Ignoring decline of offer %s: no longer valid", offer_id)
                continue
            del self._offers[offer.offer_id]
            self.refuse(framework, offer.agent_id, offer.resources, refuse, now)

    def refuse(
        self,
        framework: FrameworkRecord,
        agent_id: str,
        resources: ResourceBag,
        seconds: float,
        now: float,
    ) -> None:
        """Do not offer *resources* (or less) on *agent_id* to *framework* for *seconds*."""
        if seconds > 0 and not resources.is_empty():
            per_agent = self._filters.setdefault(framework.framework_id, {})
            per_agent.setdefault(agent_id, []).append(
                _Filter(resources=resources, expires=now + seconds)
            )
        self._soon = True

    def clear_filters(self, framework_id: str) -> None:
        """REVIVE or a new subscription: everything may be offered again."""
        self._filters.pop(framework_id, None)

    def _filtered(
        self, framework: FrameworkRecord, agent_id: str, offer: ResourceBag, now: float
    ) -> bool:
        per_agent = self._filters.setdefault(framework.framework_id, {})
        filters = [f for f in per_agent.get(agent_id, []) if f.expires > now]
        per_agent[agent_id] = filters
        return any(f.resources.contains(offer) for f in filters)

    # -- offers going away --------------------------------------------------------------------

    def remove_offers_of(self, framework_id: str) -> None:
        """Drop a framework's offers without telling it (it is gone or failing over)."""
        for offer in self.offers_of(framework_id):
            del self._offers[offer.offer_id]
            self._soon = True

    def rescind_offers_on(self, agent: AgentRecord) -> list[Output]:
        """Take back every offer on *agent*, telling each framework that is connected."""
        outputs: list[Output] = []
        for offer in [o for o in self._offers.values() if o.agent_id == agent.agent_id]:
            del self._offers[offer.offer_id]
            framework = self._frameworks.get(offer.framework_id)
            if framework is not None and framework.stream_id is not None:
                outputs.append(
                    event(framework.stream_id, "RESCIND", offer_id=id_of(offer.offer_id))
                )
        return outputs

    # -- what is free -------------------------------------------------------------------------

    def available(self, agent_id: str) -> ResourceBag:
        """An agent's total minus what tasks, executors and outstanding offers hold."""
        agent = self._agents[agent_id]
        return agent.total - self.used(agent) - self.offered(agent)

    def used(self, agent: AgentRecord) -> ResourceBag:
        """What the agent's executors and live tasks hold."""
        used = ResourceBag()
        for executor in agent.executors.values():
            try:
                used = used + ResourceBag.from_json(executor.get("resources") or [])
            except ResourceError:
                continue
        for framework in self._frameworks:
            for task in framework.tasks.values():
                if task.agent_id == agent.agent_id and not task.terminal:
                    used = used + task.resources
        return used

    def offered(self, agent: AgentRecord) -> ResourceBag:
        """What outstanding offers hold on the agent."""
        offered = ResourceBag()
        for offer in self._offers.values():
            if offer.agent_id == agent.agent_id:
                offered = offered + offer.resources
        return offered

    # -- rounds -------------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When the next round is due: at once after :meth:`wake`, or at the timer."""
        return float("-inf") if self._soon else self._next_allocation

    def tick(self, now: float) -> list[Output]:
        """Run a round if one is due; start the timer if it is not running."""
        if self._soon or (self._next_allocation is not None and now >= self._next_allocation):
            return self._allocate(now)
        if self._next_allocation is None:
            self._next_allocation = now + self._config.offer_interval
        return []

    def _allocate(self, now: float) -> list[Output]:
        self._soon = False
        self._next_allocation = now + self._config.offer_interval
        frameworks = [
            f
            for f in self._frameworks.in_order()
            if f.state is FrameworkLifecycle.CONNECTED and not f.suppressed
        ]
        if not frameworks:
            return []
        batches: dict[str, list[dict[str, Any]]] = {}
        for agent in self._agents.in_order():
            if agent.state is not AgentLifecycle.CONNECTED:
                continue
            available = self.available(agent.agent_id)
            gpu_agent = agent.total.scalar("gpus") > 0
            # A crude stand-in for DRF: the framework holding the fewest cpus goes first.
            for framework in sorted(frameworks, key=lambda f: (self._share(f), f.order)):
                if gpu_agent and _GPU_RESOURCES not in framework.capabilities:
                    continue
                usable = available.usable_by(framework.role)
                if usable.scalar("cpus") < _MIN_CPUS and usable.scalar("mem") < _MIN_MEM:
                    continue
                if self._filtered(framework, agent.agent_id, usable, now):
                    continue
                offer = OfferRecord(
                    offer_id=f"{self._config.master_id}-O{next(self._offer_ids)}",
                    framework_id=framework.framework_id,
                    agent_id=agent.agent_id,
                    resources=usable,
                )
                self._offers[offer.offer_id] = offer
                batches.setdefault(framework.framework_id, []).append(
                    _offer_json(offer, agent, framework)
                )
                available = available - usable
        outputs: list[Output] = []
        for framework_id, offers in batches.items():
            receiver = self._frameworks.get(framework_id)
            assert receiver is not None and receiver.stream_id is not None
            outputs.append(event(receiver.stream_id, "OFFERS", offers=offers))
        return outputs

    def _share(self, framework: FrameworkRecord) -> float:
        cpus = 0.0
        for task in framework.tasks.values():
            if not task.terminal:
                cpus += task.resources.scalar("cpus")
        for offer in self.offers_of(framework.framework_id):
            cpus += offer.resources.scalar("cpus")
        return cpus


def _offer_json(
    offer: OfferRecord, agent: AgentRecord, framework: FrameworkRecord
) -> dict[str, Any]:
    role = framework.role
    out: dict[str, Any] = {
        "id": id_of(offer.offer_id),
        "framework_id": id_of(offer.framework_id),
        "agent_id": id_of(agent.agent_id),
        "hostname": agent.hostname,
        "url": {
            "scheme": "http",
            "address": {"hostname": agent.hostname, "ip": agent.ip, "port": agent.port},
            "path": "/slave(1)",
        },
        "resources": offer.resources.to_json(
            role=DEFAULT_ROLE, allocation_role=role, refinement=speaks_refinement(framework)
        ),
    }
    attributes = agent.info.get("attributes")
    if attributes:
        out["attributes"] = attributes
    executor_ids = [
        id_of(executor_id)
        for (framework_id, executor_id) in agent.executors
        if framework_id == framework.framework_id
    ]
    if executor_ids:
        out["executor_ids"] = executor_ids
    out["allocation_info"] = {"role": role}
    return out
