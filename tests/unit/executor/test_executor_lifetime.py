"""A GPU task's own executor exits once its task's end is acknowledged; shared ones never do.

The lifetime rule is checked alone (sans-I/O), then through the executor's callbacks with a
recording driver: a task whose data is bad ends at once as TASK_FAILED without any worker, so
no bundle or process is needed to reach the end of a task.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from toil_mesos.executor._lifetime import SINGLE_TASK_ENV, SingleTaskLifetime, single_task
from toil_mesos.executor.executor import ToilExecutor


def test_exit_only_after_the_terminal_update_is_acknowledged() -> None:
    life = SingleTaskLifetime()
    life.launched("t1")
    assert not life.acknowledged("t1", "running-uuid")  # TASK_RUNNING's ack: not the end
    assert not life.terminal_sent("t1", "end-uuid")
    assert not life.acknowledged("t1", "other-uuid")
    assert life.acknowledged("t1", "end-uuid")
    assert life.exiting
    assert not life.acknowledged("t1", "end-uuid")  # said once only


def test_an_acknowledgement_that_overtakes_the_record_of_its_update_still_counts() -> None:
    life = SingleTaskLifetime()
    life.launched("t1")
    assert not life.acknowledged("t1", "end-uuid")
    assert life.terminal_sent("t1", "end-uuid")


def test_every_launched_task_must_end_before_the_exit() -> None:
    life = SingleTaskLifetime()
    life.launched("t1")
    life.launched("t2")
    life.terminal_sent("t1", "u1")
    assert not life.acknowledged("t1", "u1")
    life.terminal_sent("t2", "u2")
    assert life.acknowledged("t2", "u2")


def test_nothing_launched_means_no_exit() -> None:
    assert not SingleTaskLifetime().acknowledged("t1", "u1")


def test_only_the_marker_value_one_makes_a_single_task_executor() -> None:
    assert single_task({SINGLE_TASK_ENV: "1"})
    assert not single_task({SINGLE_TASK_ENV: "0"})
    assert not single_task({})


class Driver:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.stopped = threading.Event()
        self._count = 0
        self.lock = threading.Lock()
        self.ended = threading.Condition(self.lock)

    def sendStatusUpdate(self, status: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._count += 1
            sent = dict(status, uuid=f"uuid-{self._count}")
            self.updates.append(sent)
            self.ended.notify_all()
        return sent

    def stop(self) -> None:
        self.stopped.set()

    def terminal_update(self, task_id: str) -> dict[str, Any]:
        with self.lock:
            assert self.ended.wait_for(lambda: any(
                u["task_id"]["value"] == task_id and u["state"] == "TASK_FAILED"
                for u in self.updates), timeout=30)
            return next(u for u in self.updates if u["task_id"]["value"] == task_id)


def run_bad_task(tmp_path: Path, env: dict[str, str]) -> tuple[ToilExecutor, Driver, str]:
    executor = ToilExecutor(env={"MESOS_SANDBOX": str(tmp_path), **env},
                            cache_dir=tmp_path / "cache", toil_version="9.6.0", appliance="")
    driver = Driver()
    executor.launchTask(driver, {"task_id": {"value": "t1"}, "data": "not base64!"})
    return executor, driver, str(driver.terminal_update("t1")["uuid"])


def test_a_single_task_executor_stops_its_driver_once_the_end_is_acknowledged(
        tmp_path: Path) -> None:
    executor, driver, uuid = run_bad_task(tmp_path, {SINGLE_TASK_ENV: "1"})
    assert not driver.stopped.is_set()
    executor.acknowledged(driver, {"value": "t1"}, "some-other-uuid")
    assert not driver.stopped.is_set()
    executor.acknowledged(driver, {"value": "t1"}, uuid)
    assert driver.stopped.wait(30)


@pytest.mark.parametrize("marker", [None, "0"])
def test_a_shared_executor_keeps_running_after_its_tasks(tmp_path: Path,
                                                          marker: str | None) -> None:
    env = {} if marker is None else {SINGLE_TASK_ENV: marker}
    executor, driver, uuid = run_bad_task(tmp_path, env)
    exits: list[object] = []
    # The exit is decided synchronously inside acknowledged(): record the decision itself.
    executor._exit_soon = exits.append  # type: ignore[method-assign]
    executor.acknowledged(driver, {"value": "t1"}, uuid)
    assert exits == []
    assert not driver.stopped.is_set()
