"""The scheduler driver's calls under pymesos' names, each one command on the driver's inbox."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from toil_mesos.mesos._events import (
    AcceptCall,
    AcknowledgeCall,
    AgentId,
    DeclineCall,
    ExecutorId,
    KillCall,
    MessageCall,
    ReconcileCall,
    ReviveCall,
    SchedulerCall,
    ShutdownCall,
    SuppressCall,
    TaskId,
    TeardownCall,
    as_tuple,
    id_value,
    offer_ids_of,
)

__all__ = ["SchedulerCalls", "agent_id_of"]


class SchedulerCalls:
    """pymesos' SchedulerDriver methods; :meth:`_call` queues each for the driver thread."""

    def _call(self, call: SchedulerCall) -> None:
        raise NotImplementedError

    def launchTasks(
        self,
        offer_ids: Any,
        tasks: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        filters: Mapping[str, Any] | None = None,
    ) -> None:
        """ACCEPT *offer_ids* with one LAUNCH of *tasks* (v1 TaskInfo objects)."""
        operation = {"type": "LAUNCH", "launch": {"task_infos": list(as_tuple(tasks))}}
        self.acceptOffers(offer_ids, [operation], filters)

    def acceptOffers(
        self,
        offer_ids: Any,
        operations: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        filters: Mapping[str, Any] | None = None,
    ) -> None:
        """ACCEPT *offer_ids* with v1 ``Offer.Operation`` objects."""
        self._call(
            AcceptCall(
                offer_ids=offer_ids_of(offer_ids),
                operations=as_tuple(operations),
                filters=filters,
            )
        )

    def declineOffer(self, offer_ids: Any, filters: Mapping[str, Any] | None = None) -> None:
        """DECLINE one offer id or several, optionally with ``{"refuse_seconds": ...}``."""
        self._call(DeclineCall(offer_ids=offer_ids_of(offer_ids), filters=filters))

    def reviveOffers(self, roles: Iterable[str] = ()) -> None:
        """REVIVE: clear filters and resume offers."""
        self._call(ReviveCall(roles=tuple(roles)))

    def suppressOffers(self, roles: Iterable[str] = ()) -> None:
        """SUPPRESS: stop offers until REVIVE."""
        self._call(SuppressCall(roles=tuple(roles)))

    def killTask(self, task_id: Any, agent_id: Any = None) -> None:
        """KILL a task; pass *agent_id* when known, so the master can find unknown tasks."""
        self._call(
            KillCall(
                task_id=TaskId(id_value(task_id)),
                agent_id=None if agent_id is None else agent_id_of(agent_id),
            )
        )

    def acknowledgeStatusUpdate(self, status: Mapping[str, Any]) -> None:
        """ACKNOWLEDGE *status*, only if it carries a uuid (master-generated ones do not)."""
        uuid_ = status.get("uuid")
        if not uuid_:
            return
        self._call(
            AcknowledgeCall(
                agent_id=agent_id_of(status["agent_id"]),
                task_id=TaskId(id_value(status["task_id"])),
                uuid=str(uuid_),
            )
        )

    def reconcileTasks(self, tasks: Iterable[Mapping[str, Any]]) -> None:
        """RECONCILE the given TaskStatus-like objects (``task_id``, optional ``agent_id``);
        an empty list asks for every task (implicit reconciliation)."""
        entries = []
        for task in tasks:
            agent = task.get("agent_id")
            entries.append(
                (TaskId(id_value(task["task_id"])), None if agent is None else agent_id_of(agent))
            )
        self._call(ReconcileCall(tasks=tuple(entries)))

    def frameworkMessage(self, executor_id: Any, agent_id: Any, data: str) -> None:
        """MESSAGE base64 *data* to an executor."""
        self._call(
            MessageCall(
                agent_id=agent_id_of(agent_id), executor_id=_executor(executor_id), data=data
            )
        )

    sendFrameworkMessage = frameworkMessage  # pymesos' name for the same call

    def shutdownExecutor(self, executor_id: Any, agent_id: Any) -> None:
        """SHUTDOWN one custom executor."""
        self._call(ShutdownCall(executor_id=_executor(executor_id), agent_id=agent_id_of(agent_id)))

    def teardown(self) -> None:
        """TEARDOWN the framework now (the driver then stops once the master ends the stream)."""
        self._call(TeardownCall())


def agent_id_of(value: Any) -> AgentId:
    return AgentId(id_value(value))


def _executor(value: Any) -> ExecutorId:
    return ExecutorId(id_value(value))
