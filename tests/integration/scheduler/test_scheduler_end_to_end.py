"""``--batchSystem=mesos`` end to end, on agents that cannot see the leader's files.

The leader's project and virtualenv live in one directory that every agent's mount namespace
covers with an empty one (``--hide``), so a job can import the user's code only from the bundle
the leader shipped. Each job reports where it ran (agent, executor) and which copy of the code it
imported; the same run with ``--disableAutoDeployment`` must fail on the agents, which proves the
test can fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir, leader_venv

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
# As agents start it; absolute, since agents run executors with a fixed PATH.
EXECUTOR = f"{Path(sys.executable).parent / 'toil-mesos'} executor"
JOB_LINE = re.compile(r"job ran on host=(\S+) agent=(\S+) executor=(\S+) with code from (\S+)")


@pytest.fixture(scope="module")
def isolated() -> Iterator[tuple[MiniCluster, Path]]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding the leader's files from agents needs root and unshare")
    with cluster_work_dir("toil-mesos-e2e-") as work:
        leader = work / "leader"
        leader.mkdir()
        with MiniCluster(work / "cluster", agents=2, hide=[leader]) as mini:
            yield mini, leader


def leader_python(leader: Path) -> Path:
    """The seed's leader venv (Toil from "the system"), made once per leader directory."""
    venv = leader / "venv"
    return venv / "bin" / "python" if venv.exists() else leader_venv(venv)


def run_workflow(mini: MiniCluster, leader: Path, job_store: Path, *extra: str,
                 ) -> subprocess.CompletedProcess[str]:
    project = leader / "package-hierarchy"
    if not project.exists():
        shutil.copytree(EXAMPLES / "package-hierarchy", project)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TOIL"))}
    return subprocess.run(
        [str(leader_python(leader)), "-m", "workflow.main", str(job_store),
         "--batchSystem", "mesos", "--mesosEndpoint", mini.master, "--mesosExecutor", EXECUTOR,
         "--count", "40", "--chunks", "4", "--logLevel", "INFO", "--retryCount", "0", *extra],
        cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False,
    )


def test_hidden_paths_really_are_hidden_from_agents(isolated):
    mini, leader = isolated
    (leader / "marker").write_text("leader only")
    agent_pid = mini.agents[0].pid
    probe = subprocess.run(["nsenter", f"--mount=/proc/{agent_pid}/ns/mnt", "ls", "-A",
                            str(leader)], capture_output=True, text=True, timeout=30, check=False)
    assert probe.returncode == 0 and probe.stdout.strip() == ""


def test_package_hierarchy_runs_on_isolated_agents_from_the_bundle(isolated):
    mini, leader = isolated
    proc = run_workflow(mini, leader, mini.work_dir / "js-ok")
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = JOB_LINE.findall(proc.stdout)
    assert len(jobs) == 4, proc.stdout
    agents = {agent for _, agent, _, _ in jobs}
    assert agents <= {a.id for a in mini.agents} and len(agents) > 1, jobs
    assert all(executor.startswith("toil-") for _, _, executor, _ in jobs)
    # Staged in the running agent's own bundle cache (cluster up gives each agent one).
    staged = {agent.id: f"{mini.work_dir}/agents/{index}/bundle-cache/"
              for index, agent in enumerate(mini.agents)}
    assert all(code.startswith(staged[agent]) for _, agent, _, code in jobs), jobs
    assert str(leader) not in proc.stdout.split("sorted", 1)[1]
    assert "shipping the workflow's code to the agents" in proc.stderr
    assert "does not support auto-deployment" not in proc.stderr


SHIPPED = re.compile(r"shipping the workflow's code to the agents: bundle ([0-9a-f]{12})")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def test_a_fixed_bundle_port_lets_the_next_workflow_fetch_the_same_code_from_cache(isolated):
    """Same code, same ``--mesosBundleAddress :PORT``: the same URL, so no second download.

    The agents' fetcher cache keeps one file per URL; with a URL that changed between
    workflows (a new port or a new secret), an agent running both would hold two.
    """
    mini, leader = isolated
    port = str(free_port())
    cache_files = lambda: sorted(mini.work_dir.rglob("fetchcache/*/c*.tar.zst"))  # noqa: E731
    before = set(cache_files())
    shipped = []
    for run in ("first", "second"):
        proc = run_workflow(mini, leader, mini.work_dir / f"js-port-{run}",
                            "--mesosBundleAddress", f":{port}")
        assert proc.returncode == 0, proc.stderr[-4000:]
        shipped += SHIPPED.findall(proc.stderr)
        assert f":{port}" in proc.stderr.split("shipping the workflow's code", 1)[1][:400]
    assert len(shipped) == 2 and shipped[0] == shipped[1], shipped
    fetched = [f for f in cache_files() if f not in before and shipped[0] in f.name]
    assert fetched, "no agent cached the bundle"
    per_agent = [f.parent for f in fetched]
    assert len(per_agent) == len(set(per_agent)), fetched  # one download per agent, not two


def test_without_auto_deployment_the_agents_cannot_import_the_code(isolated):
    mini, leader = isolated
    proc = run_workflow(mini, leader, mini.work_dir / "js-off", "--disableAutoDeployment", "True")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "No module named 'workflow'" in output or "No module named 'util'" in output, (
        output[-4000:]
    )


SLEEPER = '''
import sys
from toil.common import Toil
from toil.job import Job

def nap(job):
    import time
    time.sleep(600)

if __name__ == "__main__":
    options = Job.Runner.getDefaultArgumentParser().parse_args()
    with Toil(options) as toil:
        toil.start(Job.wrapJobFn(nap, cores=1, memory="100M", disk="10M"))
'''


def master_state(mini: MiniCluster) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"http://{mini.master}/state", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def wait_until(predicate, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_sigterm_on_the_leader_tears_the_framework_down(isolated):
    mini, leader = isolated
    script_dir = leader / "sleeper"
    script_dir.mkdir(exist_ok=True)
    (script_dir / "sleeper.py").write_text(SLEEPER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TOIL"))}
    process = subprocess.Popen(
        [str(leader_python(leader)), "sleeper.py", str(mini.work_dir / "js-term"),
         "--batchSystem", "mesos", "--mesosEndpoint", mini.master, "--mesosExecutor", EXECUTOR,
         "--logLevel", "INFO"],
        cwd=script_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        def running() -> bool:
            return any(t["state"] == "TASK_RUNNING"
                       for f in master_state(mini)["frameworks"] for t in f["tasks"])

        assert wait_until(running), "the sleeping job never started"
        process.terminate()
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert "torn down" in output, output[-3000:]
    assert wait_until(lambda: not master_state(mini)["frameworks"], timeout=30)


@pytest.fixture(scope="module")
def networked() -> Iterator[tuple[MiniCluster, Path]]:
    """Agents in network namespaces of their own: the leader is reachable only by routing."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    with cluster_work_dir("toil-mesos-e2e-net-") as work:
        leader = work / "leader"
        leader.mkdir()
        with MiniCluster(work / "cluster", agents=2, hide=[leader], netns=True) as mini:
            yield mini, leader


def test_agents_on_their_own_network_fetch_from_the_routed_address(networked):
    mini, leader = networked
    assert not mini.master.startswith("127.")
    proc = run_workflow(mini, leader, mini.work_dir / "js-net")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(JOB_LINE.findall(proc.stdout)) == 4
    server = re.search(r"shipping the workflow's code .* from http://([0-9.]+):", proc.stderr)
    assert server is not None and server[1] == mini.master.split(":")[0]


def test_an_unreachable_bundle_address_stops_the_workflow_with_the_fix(networked):
    mini, leader = networked
    started = time.monotonic()
    proc = run_workflow(mini, leader, mini.work_dir / "js-loopback",
                        "--mesosBundleAddress", "127.0.0.1")
    assert proc.returncode != 0
    assert "could not fetch the workflow's code from http://127.0.0.1" in proc.stderr
    assert "--mesosBundleAddress" in proc.stderr
    assert time.monotonic() - started < 120  # no silent retries


CRASHER = '''
import os, signal
from toil.common import Toil
from toil.job import Job


def leave_marker(path):
    with open(path, "w") as out:
        out.write("deferred ran")


def crash(job, path):
    job.defer(leave_marker, path)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--marker")
    options = parser.parse_args()
    with Toil(options) as toil:
        toil.start(Job.wrapJobFn(crash, options.marker, cores=1, memory="100M", disk="10M"))
'''


def test_deferred_functions_of_a_killed_worker_run_at_the_end_of_the_node(isolated):
    mini, leader = isolated
    script_dir = leader / "crasher"
    script_dir.mkdir(exist_ok=True)
    (script_dir / "crasher.py").write_text(CRASHER)
    marker = mini.work_dir / "deferred-marker"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TOIL"))}
    proc = subprocess.run(
        [str(leader_python(leader)), "crasher.py", str(mini.work_dir / "js-crash"),
         "--batchSystem", "mesos", "--mesosEndpoint", mini.master, "--mesosExecutor", EXECUTOR,
         "--retryCount", "0", "--marker", str(marker)],
        cwd=script_dir, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode != 0  # the worker was killed, so the job failed
    # The executor runs Toil's cleanup when the framework is torn down at the leader's exit;
    # the deferred function lives in the user's module, which only the bundle provides.
    assert wait_until(marker.exists, timeout=60), proc.stderr[-3000:]
    assert marker.read_text() == "deferred ran"
