"""A workflow on reserved resources only, end to end on isolated agents.

Every agent of this cluster reserves all its cpus, memory and disk for role ``toil``
(``cluster up --reserve toil``, i.e. agents started with ``--resources "cpus(toil):2;..."``);
only its ports are unreserved. A workflow run with ``--mesosRole toil`` must complete, its
tasks built from the reserved resources (the master refuses any other). The twins, without
``--mesosRole`` and with another role, get no offer they can use: within a generous window
after their framework registered, the master records no task and no offer for them, and
they are then stopped with SIGTERM without having run a job.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_venvs import LeaderVenv, clean_env, make_venv
from scenario_helpers import EXECUTOR, Site, assert_ran_from_bundle, tasks_of, workflow_source
from test_deploy_scenarios import write

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir

pytestmark = pytest.mark.integration

ROLE = "toil"
#: The root, its 6 children and the follow-on: 8 reports.
JOBS = 8
#: How long a twin is watched after its framework registered: many allocation rounds (the
#: mini-master offers every second), so an offer would have come if one could.
TWIN_WINDOW = 15.0
#: Upper bounds for a twin to register and to stop; far above what either takes.
REGISTER_BOUND = 120.0
STOP_BOUND = 60.0


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding the leader's files from agents needs root and unshare")
    with cluster_work_dir("toil-mesos-reserved-") as work:
        leader = work / "leader"
        leader.mkdir()
        visible = work / "visible"
        visible.mkdir()
        with MiniCluster(work / "cluster", agents=2, hide=[leader], reserve=ROLE) as mini:
            yield Site(mini, leader, visible)


@pytest.fixture(scope="module")
def venv(site: Site) -> LeaderVenv:
    return make_venv(site.leader / "venv")


@pytest.fixture(scope="module")
def project(site: Site) -> Path:
    return write(site.leader / "project", {
        "userScript.py": workflow_source(imports="import utilities", helpers=["utilities"],
                                         value="utilities.sort([3, 1, 2])"),
        "utilities.py": "def sort(numbers):\n    return sorted(numbers)\n",
    })


def test_agents_offer_only_reserved_cpus_mem_and_disk(site: Site) -> None:
    for agent in site.master_state()["slaves"]:
        assert agent["unreserved_resources"]["cpus"] == 0.0, agent
        assert agent["reserved_resources"][ROLE]["cpus"] == 2.0, agent


def test_a_workflow_in_the_role_runs_on_reserved_resources(
    site: Site, venv: LeaderVenv, project: Path
) -> None:
    outcome = site.run([str(venv.python), "userScript.py"], name="reserved-toil", cwd=project,
                       toil_args=("--mesosRole", ROLE))
    assert_ran_from_bundle(site, outcome, expected=[1, 2, 3], jobs=JOBS,
                           keys=("module", "utilities"))
    (framework,) = site.frameworks_named("reserved-toil")
    assert framework["roles"] == [ROLE]
    assert len(tasks_of(framework)) >= JOBS


@pytest.mark.parametrize("role_args", [(), ("--mesosRole", "other")],
                         ids=["without-a-role", "another-role"])
def test_twin_outside_the_role_gets_nothing_and_runs_no_job(
    site: Site, venv: LeaderVenv, project: Path, role_args: tuple[str, ...]
) -> None:
    name = "reserved-twin-" + (role_args[1] if role_args else "none")
    store = site.visible / "stores" / name
    store.parent.mkdir(parents=True, exist_ok=True)
    environment = {k: v for k, v in clean_env().items() if not k.startswith("TOIL")}
    log = site.visible / f"{name}.log"
    with log.open("w") as output:
        leader = subprocess.Popen(
            [str(venv.python), "userScript.py", str(store), "--batchSystem", "mesos",
             "--mesosEndpoint", site.mini.master, "--mesosExecutor", EXECUTOR,
             "--mesosName", name, "--logLevel", "INFO", "--retryCount", "0", *role_args],
            cwd=project, env=environment, stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + REGISTER_BOUND
        while not site.frameworks_named(name):
            assert leader.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        time.sleep(TWIN_WINDOW)
        assert leader.poll() is None, log.read_text()[-4000:]  # still waiting for resources
        (framework,) = site.frameworks_named(name)
        assert tasks_of(framework) == [], framework
        assert framework["offers"] == [] and framework["offered_resources"]["cpus"] == 0.0
    finally:
        if leader.poll() is None:
            leader.send_signal(signal.SIGTERM)
            try:
                leader.wait(timeout=STOP_BOUND)
            except subprocess.TimeoutExpired:
                leader.kill()
                leader.wait()
    assert leader.returncode != 0
    assert "JOB " not in log.read_text()
    # The leader left the master: its framework is no longer active.
    assert [f["active"] for f in site.frameworks_named(name)] == [False]
