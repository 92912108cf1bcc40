"""Agents that cannot start the executor: the leader says what, where and how to fix it.

On a 2-agent mini-cluster whose agents serve ``/files`` as Mesos does, a workflow is run with
an executor command the agents cannot run: a path that does not exist there (the same as
toil-mesos missing from their ``PATH``), and a wrapper script that prints a line and exits 3.
The leader must quote the agent's own words from the executor's sandbox, name the option to
fix, launch at most two tasks per agent, and stop without spending the jobs' retries. With one
agent broken and one healthy, the workflow finishes on the healthy one and names the broken
one once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir, leader_venv

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
# As agents start it; absolute, since agents run executors with a fixed PATH.
TOIL_MESOS = Path(sys.executable).parent / "toil-mesos"
FRAMEWORK = re.compile(r"as framework (\S+)")
SET_ASIDE = re.compile(r"agent (\S+) \([^)]*agent (\S+)\) is set aside")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[MiniCluster, Path]]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding the leader's files from agents needs root and unshare")
    with cluster_work_dir("toil-mesos-broken-") as work:
        leader = work / "leader"
        leader.mkdir()
        with MiniCluster(work / "cluster", agents=2, hide=[leader]) as mini:
            yield mini, leader


def run_workflow(mini: MiniCluster, leader: Path, name: str, executor: str,
                 ) -> subprocess.CompletedProcess[str]:
    project = leader / "package-hierarchy"
    if not project.exists():
        shutil.copytree(EXAMPLES / "package-hierarchy", project)
    venv = leader / "venv"
    python = venv / "bin" / "python" if venv.exists() else leader_venv(venv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TOIL"))}
    return subprocess.run(
        [str(python), "-m", "workflow.main", str(mini.work_dir / name),
         "--batchSystem", "mesos", "--mesosEndpoint", mini.master, "--mesosExecutor", executor,
         "--count", "40", "--chunks", "4", "--logLevel", "INFO", "--retryCount", "0"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False,
    )


def tasks_per_agent(mini: MiniCluster, framework_id: str) -> Counter[str]:
    with urllib.request.urlopen(f"http://{mini.master}/state", timeout=10) as response:
        state = json.loads(response.read())
    frameworks = [*state["frameworks"], *state["completed_frameworks"]]
    tasks = [task for framework in frameworks if framework["id"] == framework_id
             for task in [*framework["tasks"], *framework["completed_tasks"]]]
    return Counter(task["slave_id"] for task in tasks)


def framework_of(output: str) -> str:
    found = FRAMEWORK.search(output)
    assert found is not None, output[-3000:]
    return found[1]


def wrapper(mini: MiniCluster, name: str, body: str) -> str:
    """An executor wrapper script where agents can run it (the cluster's work dir)."""
    path = mini.work_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_a_missing_executor_is_quoted_named_and_stops_the_workflow(cluster):
    mini, leader = cluster
    started = time.monotonic()
    proc = run_workflow(mini, leader, "js-missing", "/opt/x/toil-mesos executor")
    output = proc.stderr
    assert proc.returncode != 0
    assert "/opt/x/toil-mesos: not found" in output, output[-4000:]  # the agent's own line
    assert "command not found" in output
    assert "--mesosExecutor (TOIL_MESOS_EXECUTOR)" in output
    assert "no agent of this cluster can start the workflow's executor" in output
    assert "No job was charged a retry" in output
    assert "Due to failure we are reducing the remaining try count" not in output
    per_agent = tasks_per_agent(mini, framework_of(output))
    assert set(per_agent) == {a.id for a in mini.agents}, per_agent
    assert max(per_agent.values()) <= 2, per_agent
    assert sorted(m[2] for m in SET_ASIDE.finditer(output)) == sorted(a.id for a in mini.agents)
    assert time.monotonic() - started < 300


def test_a_wrapper_that_prints_and_exits_is_quoted(cluster):
    mini, leader = cluster
    line = "wrapper: this node's scratch disk is not mounted (marker 7f3a)"
    script = wrapper(mini, "exit3.sh", f"echo \"{line}\" >&2\nexit 3\n")
    proc = run_workflow(mini, leader, "js-exit3", script)
    output = proc.stderr
    assert proc.returncode != 0
    assert f"    {line}" in output, output[-4000:]  # quoted, indented, as the agent wrote it
    assert "exit status 3" in output
    assert "no agent of this cluster can start the workflow's executor" in output
    assert max(tasks_per_agent(mini, framework_of(output)).values()) <= 2


def test_one_broken_agent_is_set_aside_and_the_healthy_one_finishes(cluster):
    mini, leader = cluster
    broken, healthy = mini.agents
    port = broken.address.rsplit(":", 1)[1]
    line = "wrapper: refusing to start on this agent (marker 91c2)"
    script = wrapper(mini, "one-broken.sh", (
        f'if [ "${{MESOS_AGENT_ENDPOINT##*:}}" = "{port}" ]; then\n'
        f'  echo "{line}" >&2\n  exit 3\nfi\n'
        f'exec {TOIL_MESOS} executor\n'
    ))
    proc = run_workflow(mini, leader, "js-one-broken", script)
    output = proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "sorted" in proc.stdout
    ran_on = set(re.findall(r"job ran on host=\S+ agent=(\S+)", proc.stdout))
    assert ran_on == {healthy.id}, proc.stdout
    explained = [ln for ln in output.splitlines()
                 if "the executor of this workflow failed on agent" in ln]
    assert len(explained) == 1 and broken.id in explained[0], explained
    assert f"    {line}" in output
    # Set aside once if it failed twice before the workflow ended; the healthy one never.
    assert [m[2] for m in SET_ASIDE.finditer(output)] in ([], [broken.id])
    assert tasks_per_agent(mini, framework_of(output))[broken.id] <= 2
