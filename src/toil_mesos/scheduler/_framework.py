"""The framework across leader runs: its id kept in the job store, and the old one torn down.

A leader that dies leaves its Mesos framework behind for the failover timeout, with its tasks
still running. ``--restart`` reissues those jobs; if the old tasks were still running, a job would
run twice at once, both writing to the job store. So before the first job is issued, a restarted
leader fails over as the old framework, learns its tasks by implicit reconciliation, kills them,
waits until each has ended (bounded), and only then tears the old framework down.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from toil_mesos.mesos.interface import Scheduler

__all__ = ["FrameworkRecord", "tear_down_previous"]

logger = logging.getLogger(__name__)

_SHARED_FILE = "toil_mesos_framework_id"
_TERMINAL = frozenset(
    {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED",
     "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNREACHABLE", "TASK_UNKNOWN"}
)


class FrameworkRecord:
    """The framework id of this workflow's leader, in a shared file of the job store.

    Losing it costs only the teardown of a dead leader's framework (which the failover timeout
    ends anyway), so any failure here is logged, not raised.
    """

    def __init__(self, locator: str | None) -> None:
        self._locator = locator

    def _job_store(self) -> Any:
        from toil.common import Toil

        return Toil.resumeJobStore(self._locator)

    def read(self) -> str | None:
        if not self._locator:
            return None
        try:
            with self._job_store().read_shared_file_stream(_SHARED_FILE) as stream:
                value = stream.read().decode().strip()
        except Exception as exc:  # noqa: BLE001 - any job store, any failure: it is optional
            logger.debug("no framework id recorded in %s: %s", self._locator, exc)
            return None
        return value or None

    def write(self, framework_id: str) -> None:
        if not self._locator:
            return
        try:
            with self._job_store().write_shared_file_stream(_SHARED_FILE) as stream:
                stream.write(framework_id.encode())
        except Exception as exc:  # noqa: BLE001 - the record is optional; say so, go on
            logger.warning("cannot record the framework id in %s: %s", self._locator, exc)


class _Teardown(Scheduler):
    """Callbacks of the short-lived driver that ends the previous framework's tasks."""

    def __init__(self) -> None:
        self.subscribed = threading.Event()
        self.failed: str | None = None
        self.live: set[str] = set()
        self.reconciled = threading.Event()
        self.changed = threading.Condition()

    def registered(self, driver: Any, frameworkId: Any, masterInfo: Any) -> None:
        self.subscribed.set()
        driver.reconcileTasks([])

    reregistered = registered  # type: ignore[assignment]

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        driver.declineOffer([o["id"] for o in offers], {"refuse_seconds": 60.0})

    def statusUpdate(self, driver: Any, update: Any) -> None:
        task_id = str(update["task_id"]["value"])
        state = str(update.get("state"))
        with self.changed:
            if state in _TERMINAL:
                self.live.discard(task_id)
            elif task_id not in self.live:
                self.live.add(task_id)
                driver.killTask({"value": task_id}, update.get("agent_id"))
            self.reconciled.set()
            self.changed.notify_all()

    def error(self, driver: Any, message: str) -> None:
        self.failed = message
        self.subscribed.set()


def tear_down_previous(
    driver_factory: Any,
    framework: dict[str, Any],
    endpoint: str,
    framework_id: str,
    *,
    timeout: float = 120.0,
    quiet_period: float = 2.0,
) -> bool:
    """End framework *framework_id*'s tasks, then tear it down; True if it was still there.

    *quiet_period* is how long implicit reconciliation may take to report the running tasks
    (the master answers at once; an empty answer means there is nothing to kill).
    """
    callbacks = _Teardown()
    driver = driver_factory(callbacks, {**framework, "id": {"value": framework_id}}, endpoint)
    driver.start()
    deadline = time.monotonic() + timeout
    try:
        if not callbacks.subscribed.wait(timeout) or callbacks.failed is not None:
            logger.info("framework %s of the previous run is gone (%s)", framework_id,
                        callbacks.failed or "no answer")
            return False
        callbacks.reconciled.wait(quiet_period)
        with callbacks.changed:
            while callbacks.live:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning("tasks %s of the previous run did not end within %.0f s",
                                   sorted(callbacks.live), timeout)
                    break
                callbacks.changed.wait(remaining)
        logger.info("ended the tasks of framework %s of the previous run; tearing it down",
                    framework_id)
        return True
    finally:
        driver.stop(failover=False)  # TEARDOWN when subscribed
        driver.join(timeout=30)
