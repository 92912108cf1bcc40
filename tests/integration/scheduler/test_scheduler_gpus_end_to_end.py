"""GPU jobs end to end: a real Toil workflow on isolated agents, one of them with a GPU.

The cluster has two agents that cannot see the leader's files (``--hide``); only the first has
``gpus:1``. A workflow's root job (no GPU) starts one child that asks for a GPU and one that
does not; every job reports the agent it ran on and the ``CUDA_VISIBLE_DEVICES`` it saw. The GPU
job must land on the GPU agent and see the device that agent named; the other jobs must keep
off the GPU agent (the other agent has room) and see no device. A job asking for more GPUs
than any agent has, and one asking for an FPGA, must fail at once, each saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir, leader_venv

pytestmark = pytest.mark.integration

EXECUTOR = f"{Path(sys.executable).parent / 'toil-mesos'} executor"

WORKFLOW = '''\
"""Report where each job ran and which GPU devices it was given."""
import json
import os

from toil.common import Toil
from toil.job import Job


def report(job, name):
    return {"name": name, "agent": os.environ.get("MESOS_SLAVE_ID"),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}


def root(job, gpus, kind):
    accelerators = [{"kind": kind, "count": gpus}]
    on_gpu = job.addChildJobFn(report, "gpu", cores=1, memory="50M", disk="1M",
                               accelerators=accelerators)
    plain = job.addChildJobFn(report, "plain", cores=1, memory="50M", disk="1M")
    return [report(job, "root"), on_gpu.rv(), plain.rv()]


def main():
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--kind", default="gpu")
    options = parser.parse_args()
    with Toil(options) as toil:
        result = toil.start(Job.wrapJobFn(root, options.gpus, options.kind,
                                          cores=1, memory="50M", disk="1M"))
    for item in result:
        print("JOB " + json.dumps(item, sort_keys=True))


if __name__ == "__main__":
    main()
'''


@pytest.fixture(scope="module")
def gpu_site() -> Iterator[tuple[MiniCluster, Path]]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding the leader's files from agents needs root and unshare")
    with cluster_work_dir("toil-mesos-gpus-") as work:
        leader = work / "leader"
        leader.mkdir()
        (leader / "gpu_workflow.py").write_text(WORKFLOW)
        with MiniCluster(work / "cluster", agents=2, gpus=1, gpu_agents=1, hide=[leader]) as mini:
            yield mini, leader


def run(mini: MiniCluster, leader: Path, name: str, *extra: str
        ) -> subprocess.CompletedProcess[str]:
    venv = leader / "venv"
    python = venv / "bin" / "python" if venv.exists() else leader_venv(venv)
    stores = mini.work_dir / "stores"
    stores.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "TOIL", "CUDA", "SINGULARITYENV"))}
    return subprocess.run(
        [str(python), "gpu_workflow.py", str(stores / name),
         "--batchSystem", "mesos", "--mesosEndpoint", mini.master, "--mesosExecutor", EXECUTOR,
         "--mesosName", name, "--logLevel", "INFO", "--retryCount", "0", *extra],
        cwd=leader, env=env, capture_output=True, text=True, timeout=600, check=False,
    )


def agents_by_gpus(mini: MiniCluster) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://{mini.master}/state", timeout=10) as response:
        state: dict[str, Any] = json.loads(response.read())
    with_gpus = [a["id"] for a in state["slaves"] if a["resources"].get("gpus")]
    without = [a["id"] for a in state["slaves"] if not a["resources"].get("gpus")]
    assert len(with_gpus) == 1 and len(without) == 1, state["slaves"]
    return with_gpus[0], without[0]


def test_a_gpu_job_lands_on_the_gpu_agent_and_sees_its_device(gpu_site):
    mini, leader = gpu_site
    gpu_agent, plain_agent = agents_by_gpus(mini)
    proc = run(mini, leader, "gpu-ok")
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = {r["name"]: r for r in (json.loads(line[4:]) for line in proc.stdout.splitlines()
                                   if line.startswith("JOB "))}
    assert jobs["gpu"] == {"name": "gpu", "agent": gpu_agent, "cuda": "0"}
    assert jobs["plain"] == {"name": "plain", "agent": plain_agent, "cuda": None}
    assert jobs["root"] == {"name": "root", "agent": plain_agent, "cuda": None}


def test_a_gpu_job_no_agent_can_hold_fails_at_once_with_the_reason(gpu_site):
    mini, leader = gpu_site
    proc = run(mini, leader, "gpu-too-many", "--gpus", "2")
    assert proc.returncode != 0
    assert "needs 2 GPUs" in proc.stderr and "which no agent of this cluster has" in proc.stderr


def test_an_accelerator_other_than_a_gpu_stops_the_workflow_with_the_reason(gpu_site):
    mini, leader = gpu_site
    proc = run(mini, leader, "fpga", "--kind", "fpga")
    assert proc.returncode != 0
    assert "accelerator kind 'fpga' is not available on Mesos" in proc.stderr, \
        proc.stderr[-4000:]
