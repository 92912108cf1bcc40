"""The seed's scenarios on a cluster of appliance containers.

The leader container makes a ``--system-site-packages`` virtualenv (the image's Toil and
toil-mesos are visible in it) and runs each workflow with ``--batchSystem=mesos``. The user's
code exists only in the leader container; every job reports the agent it ran on and the file
its modules were imported from, which must be a bundle staged in an agent container.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from appliance_helpers import (
    HOME,
    JOB_STORES,
    STAGED,
    VENV,
    ApplianceCluster,
    Run,
    put_tree,
    run_in,
)
from scenario_helpers import QUICK, package_hierarchy, workflow_source
from test_deploy_scenarios import write

pytestmark = [pytest.mark.integration, pytest.mark.appliance]

JOBS = 4
SIBLING_VALUE = "utilities.double(21)"


def siblings(root: Path) -> Path:
    """The seed's ``userScript.py`` beside ``utilities.py``."""
    return write(root, {
        "utilities.py": "def double(x):\n    return 2 * x\n",
        "userScript.py": workflow_source(imports="import utilities", helpers=["utilities"],
                                         value=SIBLING_VALUE),
    })


def hierarchy(root: Path) -> Path:
    """``workflow/main.py`` using ``util/sort/quick.py``, installable with no dependencies."""
    project = package_hierarchy(root, quick=QUICK)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('dependencies = ["tinydep"]',
                                                       "dependencies = []"))
    return project


@pytest.fixture(scope="module")
def leader(
    appliance_cluster: ApplianceCluster, tmp_path_factory: pytest.TempPathFactory
) -> ApplianceCluster:
    """The leader container with the user's projects and a ``--system-site-packages`` venv."""
    projects = tmp_path_factory.mktemp("user")
    siblings(projects / "siblings")
    for name in ("hierarchy", "installed", "editable"):
        hierarchy(projects / name)
    container = appliance_cluster.leader
    assert run_in(container, ["mkdir", "-p", HOME]).exit_code == 0
    for project in sorted(projects.iterdir()):
        put_tree(container, project, f"{HOME}/{project.name}")
    # The seed's `virtualenv --system-site-packages`; the image's Toil is visible in it. No
    # index is reachable from the cluster's network, and none is needed: the projects install
    # with --no-build-isolation and the setuptools every venv starts with.
    made = run_in(container, ["python3", "-m", "venv", "--system-site-packages", VENV])
    assert made.exit_code == 0, made.tail()
    return appliance_cluster


def run_workflow(cluster: ApplianceCluster, argv: Sequence[str], *, name: str, workdir: str,
                 env: Mapping[str, str] | None = None, toil_args: Sequence[str] = ()) -> Run:
    store = f"{JOB_STORES}/{name}"
    return run_in(
        cluster.leader,
        [*argv, store, "--batchSystem", "mesos", "--mesosName", name, "--jobs", str(JOBS),
         "--retryCount", "0", "--logLevel", "INFO", *toil_args],
        workdir=workdir,
        environment=dict(env or {}),
    )


def assert_ran_in_agents(cluster: ApplianceCluster, run: Run, *, expected: object,
                         helpers: Sequence[str]) -> list[dict[str, Any]]:
    """Every job ran under the toil-mesos executor in an agent container, on at least two of
    them, and imported the user's code from a bundle staged there."""
    assert run.exit_code == 0, run.tail()
    reports = run.reports
    assert len(reports) == JOBS + 2, run.tail()
    assert all(r["value"] == expected for r in reports), reports
    assert all(str(r["executor"]).startswith("toil-") for r in reports), reports
    hosts = cluster.agent_hosts()
    agent_ips = {cluster.ip(c) for c in cluster.agent_containers()}
    used = {hosts[r["agent"]] for r in reports}
    assert used <= agent_ips and len(used) >= 2, (used, agent_ips)
    assert cluster.ip(cluster.leader) not in used
    for report in reports:
        files = [report["module"], *(report["helpers"][name] for name in helpers)]
        assert all(f.startswith(STAGED) for f in files), report
    return reports


def test_agents_cannot_see_the_users_code(leader: ApplianceCluster):
    for agent in leader.agent_containers():
        assert run_in(agent, ["test", "-e", HOME]).exit_code == 1
        # ...and the image has no module of that name anywhere on the agents' path.
        probe = run_in(agent, ["python3", "-c", "import workflow"])
        assert probe.exit_code != 0 and "No module named 'workflow'" in probe.stderr
    main = f"{HOME}/hierarchy/workflow/main.py"
    assert run_in(leader.leader, ["test", "-f", main]).exit_code == 0


def test_siblings_script(leader: ApplianceCluster):
    run = run_workflow(leader, [f"{VENV}/bin/python", "userScript.py"], name="siblings",
                       workdir=f"{HOME}/siblings")
    assert_ran_in_agents(leader, run, expected=42, helpers=["utilities"])


def test_package_hierarchy_with_dash_m(leader: ApplianceCluster):
    run = run_workflow(leader, [f"{VENV}/bin/python", "-m", "workflow.main"], name="hierarchy",
                       workdir=f"{HOME}/hierarchy")
    assert_ran_in_agents(leader, run, expected=[1, 2, 3], helpers=["util.sort.quick"])


def test_package_hierarchy_found_through_pythonpath(leader: ApplianceCluster):
    run = run_workflow(leader, [f"{VENV}/bin/python", "-m", "workflow.main"], name="pythonpath",
                       workdir="/tmp", env={"PYTHONPATH": f"{HOME}/hierarchy"})
    assert_ran_in_agents(leader, run, expected=[1, 2, 3], helpers=["util.sort.quick"])


def bundle_roots(cluster: ApplianceCluster) -> list[dict[str, Any]]:
    """What the leader's venv would ship for ``-m workflow.main`` run from /tmp."""
    inspected = run_in(cluster.leader, [f"{VENV}/bin/python", "-m", "toil_mesos", "bundle",
                                        "inspect", "--json", "--module", "workflow.main"],
                       workdir="/tmp")
    assert inspected.exit_code == 0, inspected.tail()
    return json.loads(inspected.stdout)["roots"]  # type: ignore[no-any-return]


def test_project_installed_into_the_venv(leader: ApplianceCluster):
    pip = [f"{VENV}/bin/python", "-m", "pip", "install", "--quiet", "--no-index",
           "--no-build-isolation"]
    installed = run_in(leader.leader, [*pip, f"{HOME}/installed"])
    assert installed.exit_code == 0, installed.tail()
    try:
        # What ships is the venv's site-packages, without the image's Toil (not in the venv).
        roots = bundle_roots(leader)
        assert [(r["kind"], r["source"]) for r in roots] == [
            ("site_packages", f"{VENV}/lib/python3.11/site-packages")], roots
        run = run_workflow(leader, [f"{VENV}/bin/python", "-m", "workflow.main"],
                           name="installed", workdir="/tmp")
        assert_ran_in_agents(leader, run, expected=[1, 2, 3], helpers=["util.sort.quick"])
    finally:
        uninstall(leader)


def test_editable_install(leader: ApplianceCluster):
    pip = [f"{VENV}/bin/python", "-m", "pip", "install", "--quiet", "--no-index",
           "--no-build-isolation", "-e"]
    installed = run_in(leader.leader, [*pip, f"{HOME}/editable"])
    assert installed.exit_code == 0, installed.tail()
    try:
        roots = bundle_roots(leader)
        assert ("editable", f"{HOME}/editable") in [(r["kind"], r["source"]) for r in roots]
        run = run_workflow(leader, [f"{VENV}/bin/python", "-m", "workflow.main"],
                           name="editable", workdir="/tmp")
        assert_ran_in_agents(leader, run, expected=[1, 2, 3], helpers=["util.sort.quick"])
    finally:
        uninstall(leader)


def uninstall(cluster: ApplianceCluster) -> None:
    removed = run_in(cluster.leader, [f"{VENV}/bin/python", "-m", "pip", "uninstall", "--yes",
                                      "--quiet", "my-project"])
    assert removed.exit_code == 0, removed.tail()


def test_without_the_bundle_the_agents_cannot_import_the_workflow(leader: ApplianceCluster):
    """The twin that proves the others: with auto-deployment off, nothing reaches the agents."""
    run = run_workflow(leader, [f"{VENV}/bin/python", "-m", "workflow.main"], name="no-bundle",
                       workdir=f"{HOME}/hierarchy", toil_args=["--disableAutoDeployment", "True"])
    assert run.exit_code != 0
    assert not run.reports
    assert "No module named 'workflow'" in run.output, run.tail()


def test_the_leader_role_runs_a_workflow_with_the_images_python(
    appliance_cluster: ApplianceCluster, tmp_path: Path
):
    """`docker run IMAGE leader -- python3 -m workflow.main ...`: no venv, the package root
    is the working directory, and the role tells the workflow where the master is."""
    project = hierarchy(tmp_path / "hierarchy")
    run = appliance_cluster.run_leader(
        ["python3", "-m", "workflow.main", f"{JOB_STORES}/leader-role", "--batchSystem",
         "mesos", "--jobs", str(JOBS), "--retryCount", "0"],
        project=project, workdir=f"{HOME}/hierarchy",
    )
    assert_ran_in_agents(appliance_cluster, run, expected=[1, 2, 3], helpers=["util.sort.quick"])


def test_a_leader_expecting_another_appliance_image_runs_no_job(leader: ApplianceCluster):
    """TOIL_MESOS_APPLIANCE on the leader names the image the agents must run, as Toil's
    TOIL_APPLIANCE_SELF does; agents of another image fail every task before staging."""
    run = run_workflow(leader, [f"{VENV}/bin/python", "-m", "workflow.main"],
                       name="other-image", workdir=f"{HOME}/hierarchy",
                       env={"TOIL_MESOS_APPLIANCE": "example.org/someone-else/appliance:9"})
    assert run.exit_code != 0
    assert not run.reports
    assert "example.org/someone-else/appliance:9" in run.output, run.tail()
    assert leader.image.split(":")[0] in run.output, run.tail()
