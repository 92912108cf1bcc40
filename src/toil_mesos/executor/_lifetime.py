"""When an executor made for one task may exit: after that task's end is in the agent's hands.

A task that asks for GPUs gets an executor of its own, because Mesos' GPU isolator gives the
devices to the executor's container: tasks sharing one executor would share its GPUs. Mesos
never stops an idle custom executor, so such an executor ends itself, and only once the agent
has ACKNOWLEDGED the task's terminal update: an executor that exits with an update still
unacknowledged makes the agent report the task as failed by the executor's end, not as it
really ended.

The scheduler marks such an executor with :data:`SINGLE_TASK_ENV` in its ``CommandInfo``
environment rather than leaving the executor to guess it from the form of its executor id:
the environment is read before subscribing and names the intent, and the id stays free to
change its form. This module is sans-I/O: the executor feeds it what happened and asks whether
to exit now.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

__all__ = ["SINGLE_TASK_ENV", "SingleTaskLifetime", "single_task"]

#: ``1`` in the executor's environment: it runs one task and exits after it.
SINGLE_TASK_ENV = "TOIL_MESOS_SINGLE_TASK"


def single_task(env: Mapping[str, str]) -> bool:
    """Whether the scheduler made this executor for one task.

    >>> single_task({SINGLE_TASK_ENV: "1"}), single_task({})
    (True, False)
    """
    return env.get(SINGLE_TASK_ENV) == "1"


class SingleTaskLifetime:
    """Says once, and only once, that every task launched here has ended and been acknowledged.

    Built for one task, it also copes with more (each must end and be acknowledged) and with an
    ACKNOWLEDGED that overtakes the record of the update it acknowledges (the update goes out
    on the driver's thread while the task's thread records it). Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._launched: set[str] = set()
        #: The uuid of each task's terminal update.
        self._terminal: dict[str, str] = {}
        #: Every uuid the agent acknowledged, per task.
        self._acknowledged: dict[str, set[str]] = {}
        self._exiting = False

    @property
    def exiting(self) -> bool:
        """Whether the exit was already decided."""
        with self._lock:
            return self._exiting

    def launched(self, task_id: str) -> None:
        """The agent launched *task_id* here."""
        with self._lock:
            self._launched.add(task_id)

    def terminal_sent(self, task_id: str, uuid: str) -> bool:
        """The task's terminal update *uuid* went to the driver. True: exit now."""
        with self._lock:
            self._terminal[task_id] = uuid
            return self._decide()

    def acknowledged(self, task_id: str, uuid: str) -> bool:
        """The agent acknowledged update *uuid* of *task_id*. True: exit now."""
        with self._lock:
            self._acknowledged.setdefault(task_id, set()).add(uuid)
            return self._decide()

    def _decide(self) -> bool:
        if self._exiting or not self._launched:
            return False
        for task_id in self._launched:
            uuid = self._terminal.get(task_id)
            if uuid is None or uuid not in self._acknowledged.get(task_id, ()):
                return False
        self._exiting = True
        return True
