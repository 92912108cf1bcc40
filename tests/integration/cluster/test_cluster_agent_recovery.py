"""Agent recovery: an agent killed and restarted with the same work dir and port finds the
executors of frameworks that checkpoint again; those of the others are gone.

The executor here is the project's own ExecutorDriver, so these also check its side: it keeps
running while the agent is away, re-subscribes, and sends the update it made meanwhile.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
from pathlib import Path

import pytest
from agent_helpers import (
    AGENT_ID,
    FRAMEWORK_INFO,
    PYTHON,
    AgentProcess,
    StubMaster,
    pid_alive,
    wait_until,
)

# Finishes its task once the release file exists: the test decides when, here while the
# agent is down. It prints what the driver told it, for the assertions.
RELEASED_EXECUTOR = """
import base64, threading
from pathlib import Path
from toil_mesos.mesos import ExecutorDriver
from toil_mesos.mesos.interface import Executor


class Released(Executor):
    def launchTask(self, driver, task):
        labels = {l["key"]: l["value"] for l in task.get("labels", {}).get("labels", [])}
        print("LAUNCH", task.task_id.value, labels.get("gpu_devices"), flush=True)
        driver.sendStatusUpdate({"task_id": task.task_id, "state": "TASK_RUNNING"})
        release = Path(base64.b64decode(task.data).decode())

        def finish():
            stop = threading.Event()
            while not release.exists():
                stop.wait(0.05)
            driver.sendStatusUpdate({"task_id": task.task_id, "state": "TASK_FINISHED"})

        threading.Thread(target=finish, daemon=True).start()

    def disconnected(self, driver):
        print("DISCONNECTED", flush=True)

    def reregistered(self, driver, agent_info):
        print("REREGISTERED", flush=True)

    def shutdown(self, driver):
        print("SHUTDOWN", flush=True)
        driver.stop()


print(ExecutorDriver(Released()).run(), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _task(script: Path, release: Path, task_id: str = "R1", gpus: int = 0) -> dict[str, object]:
    resources = [{"name": "gpus", "type": "SCALAR", "scalar": {"value": gpus}}] if gpus else []
    return {
        "name": "released",
        "task_id": {"value": task_id},
        "resources": resources,
        "data": base64.b64encode(str(release).encode()).decode(),
        "executor": {
            "executor_id": {"value": "RE"},
            "command": {"value": f"{PYTHON} {script}"},
        },
    }


def _restart(agent: AgentProcess, master: StubMaster, flags: tuple[str, ...]) -> AgentProcess:
    agent.kill()
    agent.ready_file.unlink()
    return AgentProcess(agent.work_dir, master.address, *flags)


def _stdout(tmp_path: Path) -> str:
    runs = tmp_path.glob("agent/slaves/*/frameworks/*/executors/RE/runs/*/stdout")
    return "".join(p.read_text() for p in runs)


@pytest.mark.parametrize("checkpoint", [True, False])
def test_a_task_finishes_across_an_agent_restart_only_when_its_framework_checkpoints(
    tmp_path: Path, checkpoint: bool
) -> None:
    script = tmp_path / "released.py"
    script.write_text(RELEASED_EXECUTOR)
    release = tmp_path / "release"
    flags = ("--port", str(_free_port()), "--executor-reregistration-timeout", "20")
    info = dict(FRAMEWORK_INFO, checkpoint=checkpoint)
    executor_pid = None
    with StubMaster() as master:
        first = AgentProcess(tmp_path, master.address, *flags)
        try:
            first.wait_ready()
            master.run_task(_task(script, release), framework_info=info)
            # R2 is never released: it runs until its executor dies.
            master.run_task(_task(script, tmp_path / "never", "R2"), framework_info=info)
            master.wait_for_state("R2", "TASK_RUNNING")
            running = master.wait_for_state("R1", "TASK_RUNNING")
            executor_pid = running["container_status"]["executor_pid"]
            env = (Path(f"/proc/{executor_pid}/environ").read_bytes()).split(b"\0")
            assert (b"MESOS_CHECKPOINT=1" in env) is checkpoint
            second = _restart(first, master, flags)
            release.touch()  # the job ends while its agent is away
            with second:
                ready = second.wait_ready()
                assert ready["id"] == AGENT_ID  # the same agent, from its checkpoint
                register = master.registrations[-1]["register"]
                if checkpoint:
                    finished = master.wait_for_state("R1", "TASK_FINISHED")
                    [executor] = register["executors"]
                    assert sorted(t["task_id"]["value"] for t in executor["tasks"]) == ["R1", "R2"]
                    # The same executor process, never started again; the task ran once.
                    assert finished["container_status"]["executor_pid"] == executor_pid
                    states = [s["state"] for s in master.statuses("R1")]
                    assert states == ["TASK_RUNNING", "TASK_FINISHED"]
                    wait_until(lambda: "REREGISTERED" in _stdout(tmp_path), 20, "re-registered")
                    assert "SHUTDOWN" not in _stdout(tmp_path)
                    # Once back, its death fails its running task, as any executor's would.
                    os.killpg(executor_pid, signal.SIGKILL)
                    failed = master.wait_for_state("R2", "TASK_FAILED")
                    assert failed["reason"] == "REASON_EXECUTOR_TERMINATED"
                    assert [s["state"] for s in master.statuses("R2")] == [
                        "TASK_RUNNING", "TASK_FAILED"
                    ]
                else:
                    # Nothing to recover: the executor ended (it does not wait for an agent
                    # that will not recover it), and its task never reports an end.
                    assert register["executors"] == []
                    wait_until(lambda: not pid_alive(executor_pid), 30, "the executor to end")
                    assert "TASK_FINISHED" not in [s["state"] for s in master.statuses("R1")]
                    assert [s["state"] for s in master.statuses("R2")] == ["TASK_RUNNING"]
                    assert not list((tmp_path / "agent" / "meta" / "executors").glob("*.json"))
        finally:
            first.kill()
            if executor_pid is not None and pid_alive(executor_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(executor_pid, signal.SIGKILL)


def test_an_executor_that_does_not_resubscribe_in_time_has_its_tasks_lost(
    tmp_path: Path,
) -> None:
    # An executor that never subscribes at all: recovered, given its second, then shut down.
    flags = ("--port", str(_free_port()), "--executor-reregistration-timeout", "1")
    info = dict(FRAMEWORK_INFO, checkpoint=True)
    task = {
        "name": "silent",
        "task_id": {"value": "S1"},
        "resources": [],
        "executor": {"executor_id": {"value": "SE"}, "command": {"value": "exec sleep 300"}},
    }
    with StubMaster() as master:
        first = AgentProcess(tmp_path, master.address, *flags)
        try:
            first.wait_ready()
            master.run_task(task, framework_info=info)
            checkpoints = tmp_path / "agent" / "meta" / "executors"
            wait_until(lambda: list(checkpoints.glob("*.json")), 20, "the executor's checkpoint")
            [saved] = [json.loads(p.read_text()) for p in checkpoints.glob("*.json")]
            pid = saved["pid"]
            assert pid_alive(pid)
            with _restart(first, master, flags) as second:
                second.wait_ready()
                lost = master.wait_for_state("S1", "TASK_LOST")
                assert lost["reason"] == "REASON_EXECUTOR_REREGISTRATION_TIMEOUT"
                assert lost["message"] == "Executor did not reregister within 1secs"
                assert lost["source"] == "SOURCE_AGENT"
                wait_until(lambda: not pid_alive(pid), 20, "the executor to be killed")
                assert not list(checkpoints.glob("*.json"))
        finally:
            first.kill()


def test_a_recovered_task_keeps_its_gpu_devices(tmp_path: Path) -> None:
    script = tmp_path / "released.py"
    script.write_text(RELEASED_EXECUTOR)
    flags = ("--port", str(_free_port()), "--resources", "cpus:2;mem:1024;disk:1024;gpus:2")
    info = dict(FRAMEWORK_INFO, checkpoint=True)
    executor_pid = None
    with StubMaster() as master:
        first = AgentProcess(tmp_path, master.address, *flags)
        try:
            first.wait_ready()
            master.run_task(_task(script, tmp_path / "never", "G1", gpus=1), framework_info=info)
            executor_pid = master.wait_for_state("G1", "TASK_RUNNING")["container_status"][
                "executor_pid"]
            with _restart(first, master, flags) as second:
                second.wait_ready()
                wait_until(lambda: "REREGISTERED" in _stdout(tmp_path), 20, "re-registered")
                # G1 still holds device 0 after the restart: the next task gets device 1.
                master.run_task(_task(script, tmp_path / "never", "G2", gpus=1),
                                framework_info=info)
                master.wait_for_state("G2", "TASK_RUNNING")
                launches = [line.split() for line in _stdout(tmp_path).splitlines()
                            if line.startswith("LAUNCH")]
                assert launches == [["LAUNCH", "G1", "0"], ["LAUNCH", "G2", "1"]]
        finally:
            first.kill()
            if executor_pid is not None and pid_alive(executor_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(executor_pid, signal.SIGKILL)
