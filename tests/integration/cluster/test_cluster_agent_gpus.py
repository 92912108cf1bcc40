"""A mini-agent with GPUs names each task's devices to its executor, and takes them back.

A stub master sends RUN_TASKs with ``gpus`` to a real agent process started with ``gpus:2``;
the recording executor writes down every LAUNCH it gets, so the test reads the devices each
task was given (the ``gpu_devices`` label) and checks that no two live tasks share one and that
a task's devices are free again once it has ended.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_helpers import StubMaster, executor_task, running_agent, wait_for_event
from agent_helpers import write_recording_executor as recording_executor

from toil_mesos.mesos._gpu_devices import devices_of

pytestmark = pytest.mark.integration


def gpu_task(task_id: str, gpus: int, *, script: Path, out: Path) -> dict[str, Any]:
    task = executor_task(task_id, "E1", script=script, out_dir=out, data={"mode": "sleep"})
    if gpus:
        task["resources"].append({"name": "gpus", "type": "SCALAR", "scalar": {"value": gpus},
                                  "allocation_info": {"role": "*"}})
    return task


def launched(out: Path, count: int) -> dict[str, list[str] | None]:
    events = wait_for_event(out, "LAUNCH", count=count)
    return {e["launch"]["task"]["task_id"]["value"]: devices_of(e["launch"]["task"])
            for e in events}


def test_each_task_gets_its_own_devices_and_gives_them_back(tmp_path: Path) -> None:
    script = recording_executor(tmp_path)
    out = tmp_path / "E1"
    with (
        StubMaster() as master,
        running_agent(tmp_path, master, "--resources", "cpus:4;mem:2048;disk:2048;gpus:2"),
    ):
        master.run_task(gpu_task("T1", 1, script=script, out=out))
        master.wait_for_state("T1", "TASK_RUNNING")
        master.run_task(gpu_task("T2", 1, script=script, out=out))
        master.run_task(gpu_task("T3", 0, script=script, out=out))
        assert launched(out, 3) == {"T1": ["0"], "T2": ["1"], "T3": None}
        master.kill_task("T1")
        master.wait_for_state("T1", "TASK_KILLED")
        master.run_task(gpu_task("T4", 1, script=script, out=out))
        assert launched(out, 4)["T4"] == ["0"]  # T1's device, free again; T2 still holds 1
