"""The mini-cluster driven by the project's own drivers, all real processes over real HTTP.

A framework on :class:`SchedulerDriver` launches tasks on a small executor built on
:class:`ExecutorDriver`, which the agent's fetcher downloads from a URI server on loopback. Then
the cluster misbehaves the way clusters do: an executor dies, an agent dies, the master
restarts; each must reach the framework as Mesos reports it.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import FileServer, wait_until

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir
from toil_mesos.mesos.driver import SchedulerDriver
from toil_mesos.mesos.interface import Scheduler

pytestmark = pytest.mark.integration

EXECUTOR_SCRIPT = '''
import base64, json, os, sys, threading
from toil_mesos.mesos.driver import ExecutorDriver
from toil_mesos.mesos.interface import Executor

PIDS = sys.argv[1]

class Echo(Executor):
    def registered(self, driver, executor_info, framework_info, agent_info):
        with open(os.path.join(PIDS, os.environ["MESOS_EXECUTOR_ID"]), "w") as out:
            out.write(str(os.getpid()))

    def launchTask(self, driver, task):
        driver.sendStatusUpdate({"task_id": task["task_id"], "state": "TASK_RUNNING"})
        if base64.b64decode(task.get("data") or "") == b"finish":
            driver.sendStatusUpdate({"task_id": task["task_id"], "state": "TASK_FINISHED"})

    def killTask(self, driver, task_id):
        driver.sendStatusUpdate({"task_id": task_id, "state": "TASK_KILLED"})

    def frameworkMessage(self, driver, message):
        driver.sendFrameworkMessage(base64.b64encode(b"echo:" + base64.b64decode(message))
                                    .decode())

sys.exit(0 if ExecutorDriver(Echo()).run() == "DRIVER_STOPPED" else 1)
'''


class Recorder(Scheduler):
    """Every callback, as (name, payload) on one queue, in the order they came."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.offers: queue.Queue[Any] = queue.Queue()
        #: Events a wait passed over; later waits look here first (the order between, say,
        #: TASK_LOST and the agent's FAILURE is the master's to choose).
        self.backlog: list[tuple[str, Any]] = []

    def registered(self, driver: Any, frameworkId: Any, masterInfo: Any) -> None:
        self.events.put(("registered", frameworkId["value"]))

    def reregistered(self, driver: Any, masterInfo: Any) -> None:
        self.events.put(("reregistered", None))

    def resourceOffers(self, driver: Any, offers: list[Any]) -> None:
        for offer in offers:
            self.offers.put(offer)

    def statusUpdate(self, driver: Any, update: Any) -> None:
        self.events.put(("update", update))

    def frameworkMessage(self, driver: Any, executorId: Any, agentId: Any, message: str) -> None:
        self.events.put(("message", message))

    def executorLost(self, driver: Any, executorId: Any, agentId: Any, status: Any) -> None:
        self.events.put(("executorLost", executorId["value"]))

    def agentLost(self, driver: Any, agentId: Any) -> None:
        self.events.put(("agentLost", agentId["value"]))

    def wait_for(self, predicate: Any, timeout: float = 60) -> tuple[str, Any]:
        for event in self.backlog:
            if predicate(*event):
                self.backlog.remove(event)
                return event
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the expected event never came; got {self.backlog}")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if predicate(*event):
                return event
            self.backlog.append(event)

    def update(self, task: str, state: str, timeout: float = 60) -> Any:
        return self.wait_for(lambda name, value: name == "update"
                             and value["task_id"]["value"] == task and value["state"] == state,
                             timeout)[1]


@pytest.fixture
def world() -> Iterator[tuple[MiniCluster, Recorder, SchedulerDriver, FileServer, Path]]:
    with cluster_work_dir("toil-mesos-drivers-") as work:
        pids = work / "pids"
        pids.mkdir()
        server = FileServer()
        with MiniCluster(work / "cluster", agents=1, master_args=["--agent-timeout", "2"]) as mini:
            recorder = Recorder()
            framework = {"user": "root", "name": "drivers-test", "roles": ["*"],
                         "failover_timeout": 60.0,
                         "capabilities": [{"type": "MULTI_ROLE"}, {"type": "TASK_KILLING_STATE"}]}
            driver = SchedulerDriver(recorder, framework, mini.master)
            driver.start()
            try:
                recorder.wait_for(lambda name, _: name == "registered")
                yield mini, recorder, driver, server, pids
            finally:
                driver.stop(failover=False)
                driver.join(timeout=30)
                server.close()


def executor(executor_id: str, server: FileServer, pids: Path) -> dict[str, Any]:
    return {
        "executor_id": {"value": executor_id},
        "type": "CUSTOM",
        "command": {
            "value": f"{sys.executable} echo_executor.py {pids}",
            "uris": [{"value": server.url("echo_executor.py", EXECUTOR_SCRIPT.encode()),
                      "cache": True, "extract": False, "output_file": "echo_executor.py"}],
        },
    }


def launch(driver: SchedulerDriver, recorder: Recorder, task_id: str,
           executor_info: dict[str, Any], data: bytes = b"") -> None:
    offer = recorder.offers.get(timeout=60)
    task = {
        "name": task_id, "task_id": {"value": task_id}, "agent_id": offer["agent_id"],
        "executor": executor_info, "data": base64.b64encode(data).decode(),
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
                      {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
    }
    driver.launchTasks([offer["id"]], [task])


def test_fetch_with_a_cache_hit_messages_both_ways_and_kill(world):
    mini, recorder, driver, server, pids = world
    launch(driver, recorder, "t1", executor("e1", server, pids))
    recorder.update("t1", "TASK_RUNNING")
    agent_id = mini.agents[0].id
    driver.frameworkMessage({"value": "e1"}, {"value": agent_id},
                            base64.b64encode(b"hello").decode())
    _, message = recorder.wait_for(lambda name, _: name == "message")
    assert base64.b64decode(message) == b"echo:hello"
    launch(driver, recorder, "t2", executor("e2", server, pids), data=b"finish")
    recorder.update("t2", "TASK_FINISHED")
    # The second executor's copy came from the agent's fetcher cache: one HEAD, one GET.
    assert server.requests == ["HEAD", "GET"]
    driver.killTask({"value": "t1"}, {"value": agent_id})
    recorder.update("t1", "TASK_KILLED")


def test_executor_death_reaches_the_framework(world):
    _, recorder, driver, server, pids = world
    launch(driver, recorder, "t3", executor("e3", server, pids))
    recorder.update("t3", "TASK_RUNNING")
    os.kill(int((pids / "e3").read_text()), signal.SIGKILL)
    recorder.wait_for(lambda name, value: name == "executorLost" and value == "e3")
    failed = recorder.update("t3", "TASK_FAILED")
    assert failed["reason"] == "REASON_EXECUTOR_TERMINATED"
    assert failed["source"] == "SOURCE_AGENT"


def test_agent_death_makes_its_tasks_lost(world):
    mini, recorder, driver, server, pids = world
    launch(driver, recorder, "t4", executor("e4", server, pids))
    recorder.update("t4", "TASK_RUNNING")
    agent_id = mini.agents[0].id
    mini.kill_agent(0)
    recorder.wait_for(lambda name, value: name == "agentLost" and value == agent_id)
    lost = recorder.update("t4", "TASK_LOST")
    assert lost["source"] == "SOURCE_MASTER"


def test_master_restart_keeps_the_framework_and_its_task(world):
    mini, recorder, driver, server, pids = world
    launch(driver, recorder, "t5", executor("e5", server, pids))
    recorder.update("t5", "TASK_RUNNING")
    mini.restart_master()
    recorder.wait_for(lambda name, _: name in ("registered", "reregistered"), timeout=90)

    def master_knows_t5() -> bool:
        with urllib.request.urlopen(f"http://{mini.master}/state", timeout=10) as response:
            state = json.loads(response.read())
        return any(t["id"] == "t5" for f in state["frameworks"] for t in f["tasks"])

    # The new master learns of the task only when the agent re-registers, which may come
    # after the framework's re-registration: before that, implicit reconciliation has
    # nothing to answer with, so reconcile once the task is known again.
    wait_until(master_knows_t5, timeout=90, what="the agent re-registering t5")
    driver.reconcileTasks([])
    reconciled = recorder.update("t5", "TASK_RUNNING", timeout=60)
    assert reconciled.get("reason") == "REASON_RECONCILIATION"
