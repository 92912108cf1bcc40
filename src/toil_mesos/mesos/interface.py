"""Callback interfaces for schedulers and executors, named as in pymesos.

Subclass :class:`Scheduler` or :class:`Executor` and override what you need; every default
does nothing (``error`` logs). Callbacks run on the driver's own thread, one at a time, so they
must not block for long: a slow callback delays every other event (heartbeats included).
They may call any driver method, including ``stop()``.

Payloads are ``addict.Dict`` objects in the v1 JSON wire shape (``offer.agent_id.value``,
``status.task_id.value``); ids are ``{"value": ...}`` dicts; framework message ``data`` is the
base64 string from the wire, as pymesos passed it.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["Executor", "Scheduler"]

logger = logging.getLogger(__name__)


class Scheduler:
    """Receives the events of a scheduler subscription. ``driver`` is the SchedulerDriver."""

    def registered(self, driver: Any, frameworkId: Any, masterInfo: Any) -> None:
        """The first SUBSCRIBED of this driver: ``frameworkId`` is ``{"value": ...}``."""

    def reregistered(self, driver: Any, masterInfo: Any) -> None:
        """A later SUBSCRIBED, after the driver re-subscribed following a disconnection."""

    def disconnected(self, driver: Any) -> None:
        """The subscription broke; the driver is re-subscribing with backoff."""

    def processHeartBeat(self, driver: Any) -> None:
        """A HEARTBEAT arrived (the driver already tracks the deadline)."""

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        """OFFERS: accept with ``launchTasks``/``acceptOffers`` or ``declineOffer``."""

    def inverseOffers(self, driver: Any, offers: list[Any]) -> None:
        """INVERSE_OFFERS (maintenance requests)."""

    def offerRescinded(self, driver: Any, offerId: Any) -> None:
        """RESCIND: the offer is gone."""

    def inverseOfferRescinded(self, driver: Any, offerId: Any) -> None:
        """RESCIND_INVERSE_OFFER."""

    def statusUpdate(self, driver: Any, status: Any) -> None:
        """UPDATE: a TaskStatus. Acknowledge it unless implicit acknowledgements are on."""

    def operationStatusUpdate(self, driver: Any, status: Any) -> None:
        """UPDATE_OPERATION_STATUS."""

    def frameworkMessage(
        self,
        driver: Any,
        executorId: Any,
        agentId: Any,
        message: str,
    ) -> None:
        """MESSAGE from an executor; ``message`` is base64."""

    def agentLost(self, driver: Any, agentId: Any) -> None:
        """FAILURE without an executor id: the agent is gone (pymesos: ``slaveLost``)."""

    def executorLost(
        self,
        driver: Any,
        executorId: Any,
        agentId: Any,
        status: int | None,
    ) -> None:
        """FAILURE of an executor; ``status`` is a raw wait status (``137 << 8`` = SIGKILL)."""

    def error(self, driver: Any, message: str) -> None:
        """ERROR: the master ended our subscription for good; the driver stops."""
        logger.error("Mesos master reported an error: %s", message)


class Executor:
    """Receives the events of an executor subscription. ``driver`` is the ExecutorDriver."""

    def registered(
        self,
        driver: Any,
        executorInfo: Any,
        frameworkInfo: Any,
        agentInfo: Any,
    ) -> None:
        """The first SUBSCRIBED."""

    def reregistered(self, driver: Any, agentInfo: Any) -> None:
        """SUBSCRIBED again after a disconnection (checkpointing frameworks only)."""

    def disconnected(self, driver: Any) -> None:
        """The agent connection broke."""

    def launchTask(self, driver: Any, task: Any) -> None:
        """LAUNCH: run ``task`` (a TaskInfo) and report with ``sendStatusUpdate``."""

    def launchTaskGroup(self, driver: Any, tasks: list[Any]) -> None:
        """LAUNCH_GROUP."""

    def killTask(self, driver: Any, taskId: Any) -> None:
        """KILL: stop the task and report TASK_KILLED."""

    def acknowledged(self, driver: Any, taskId: Any, uuid: str) -> None:
        """ACKNOWLEDGED: the agent took update ``uuid`` (not in pymesos)."""

    def frameworkMessage(self, driver: Any, message: str) -> None:
        """MESSAGE from the scheduler; ``message`` is base64."""

    def shutdown(self, driver: Any) -> None:
        """SHUTDOWN, or the agent connection is lost for good: kill tasks, report, return."""

    def error(self, driver: Any, message: str) -> None:
        """ERROR from the agent."""
        logger.error("Mesos agent reported an error: %s", message)
