"""Two GPU jobs at once on one agent: each in an executor of its own, each seeing one device.

The cluster has one agent with ``gpus:2`` that cannot see the leader's files (``--hide``). The
workflow's root starts two children that each ask for one GPU and wait (through a directory both
can see) until the other is running too, so they run at the same time; each reports its agent,
its executor id and its ``CUDA_VISIBLE_DEVICES``. A follow-on job then looks through ``/proc``
on the agent for processes of those two executors: each must have exited once its task was
over, while the workflow still runs (Mesos itself never stops an idle executor). After the
workflow, no process of the machine may belong to either executor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir, leader_venv

pytestmark = pytest.mark.integration

EXECUTOR = f"{Path(sys.executable).parent / 'toil-mesos'} executor"

WORKFLOW = '''\
"""Two one-GPU jobs that run together, then a look for their executors' processes."""
import json
import os
import time

from toil.common import Toil
from toil.job import Job

PATIENCE = 120.0


def executor_ids():
    """MESOS_EXECUTOR_ID of every process this job can see."""
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read().split(b"\\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"MESOS_EXECUTOR_ID="):
                found.add(item.split(b"=", 1)[1].decode())
    return found


def on_gpu(job, name, barrier):
    open(os.path.join(barrier, name), "w").close()
    other = os.path.join(barrier, "b" if name == "a" else "a")
    give_up = time.monotonic() + PATIENCE
    while not os.path.exists(other) and time.monotonic() < give_up:
        time.sleep(0.1)
    return {"name": name, "agent": os.environ.get("MESOS_SLAVE_ID"),
            "executor": os.environ.get("MESOS_EXECUTOR_ID"),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "together": os.path.exists(other)}


def executors_left(job, reports):
    mine = os.environ.get("MESOS_EXECUTOR_ID")
    theirs = {r["executor"] for r in reports} - {mine}
    give_up = time.monotonic() + PATIENCE
    while True:
        seen = executor_ids()
        left = sorted(theirs & seen)
        if not left or time.monotonic() > give_up:
            break
        time.sleep(0.2)
    return {"name": "after", "left": left, "sees_its_own": mine in seen}


def root(job, barrier):
    gpu = [{"kind": "gpu", "count": 1}]
    a = job.addChildJobFn(on_gpu, "a", barrier, cores=1, memory="50M", disk="1M",
                          accelerators=gpu)
    b = job.addChildJobFn(on_gpu, "b", barrier, cores=1, memory="50M", disk="1M",
                          accelerators=gpu)
    after = job.addFollowOnJobFn(executors_left, [a.rv(), b.rv()], cores=1, memory="50M",
                                 disk="1M")
    return [a.rv(), b.rv(), after.rv()]


def main():
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--barrier", required=True)
    options = parser.parse_args()
    with Toil(options) as toil:
        result = toil.start(Job.wrapJobFn(root, options.barrier, cores=1, memory="50M",
                                          disk="1M"))
    for item in result:
        print("JOB " + json.dumps(item, sort_keys=True))


if __name__ == "__main__":
    main()
'''


@pytest.fixture(scope="module")
def two_gpu_agent() -> Iterator[tuple[MiniCluster, Path]]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding the leader's files from agents needs root and unshare")
    with cluster_work_dir("toil-mesos-gpu-executors-") as work:
        leader = work / "leader"
        leader.mkdir()
        (leader / "gpu_workflow.py").write_text(WORKFLOW)
        with MiniCluster(work / "cluster", agents=1, cpus=2, gpus=2, gpu_agents=1,
                         hide=[leader]) as mini:
            yield mini, leader


def processes_of(executor_ids: set[str]) -> list[int]:
    """The machine's processes whose environment names one of *executor_ids*."""
    wanted = {f"MESOS_EXECUTOR_ID={i}".encode() for i in executor_ids}
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            environ = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if environ & wanted:
            found.append(int(pid))
    return found


def test_two_gpu_jobs_on_one_agent_each_get_an_executor_and_a_device_of_their_own(
        two_gpu_agent):
    mini, leader = two_gpu_agent
    venv = leader / "venv"
    python = venv / "bin" / "python" if venv.exists() else leader_venv(venv)
    barrier = mini.work_dir / "barrier"
    barrier.mkdir()
    stores = mini.work_dir / "stores"
    stores.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "TOIL", "CUDA", "SINGULARITYENV"))}
    proc = subprocess.run(
        [str(python), "gpu_workflow.py", str(stores / "two-gpus"), "--barrier", str(barrier),
         "--batchSystem", "mesos", "--mesosEndpoint", mini.master, "--mesosExecutor", EXECUTOR,
         "--mesosName", "two-gpus", "--logLevel", "INFO", "--retryCount", "0"],
        cwd=leader, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = {r["name"]: r for r in (json.loads(line[4:]) for line in proc.stdout.splitlines()
                                   if line.startswith("JOB "))}
    a, b, after = jobs["a"], jobs["b"], jobs["after"]
    assert a["together"] and b["together"], jobs  # they ran at the same time
    assert a["agent"] == b["agent"] is not None
    assert a["executor"] and b["executor"] and a["executor"] != b["executor"], jobs
    assert sorted([a["cuda"], b["cuda"]]) == ["0", "1"], jobs  # one distinct device each
    assert after["sees_its_own"], after  # the look through /proc works there
    assert after["left"] == [], after  # both executors exited while the workflow ran
    assert processes_of({a["executor"], b["executor"]}) == []
