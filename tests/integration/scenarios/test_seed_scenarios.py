"""The seed's deployment scenarios, end to end on a 3-agent cluster that cannot see the leader.

Every project, virtualenv and working directory of the leader is under one directory that each
agent's mount namespace covers with an empty one, so a job can import the user's code only from
the bundle the leader shipped. Each scenario runs a real Toil workflow with
``--batchSystem mesos``; every job reports its agent, its executor and the files of the user's
modules it imported, and the test checks the output, that every job ran under an executor with
the code from the staged bundle cache, and that jobs ran on more than one agent. The same run with
``--disableAutoDeployment True`` (the twin) must fail on the agents with an ImportError, which
proves the code could not have come from anywhere else.

The seed's package hierarchy run with ``python -m`` from the project root is
``tests/integration/scheduler/test_scheduler_end_to_end.py``; the scenarios here are the rest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_venvs import LeaderVenv, make_venv, run
from scenario_helpers import (
    HIERARCHY_VALUE,
    QUICK,
    STAGED,
    Outcome,
    Site,
    assert_cannot_import_without_bundle,
    assert_ran_from_bundle,
    assert_stopped_before_any_job,
    package_hierarchy,
    workflow_source,
)
from test_deploy_scenarios import EDITABLE_LAYOUTS, tiny_dependency, write

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir

pytestmark = pytest.mark.integration

DISABLED = ("--disableAutoDeployment", "True")
#: A fan-out of 6 one-core children plus the root and its follow-on: 8 reports, and more
#: children at once than one agent (2 cores) can run.
JOBS = 8
SORTED = [1, 2, 3]
WITH_TINYDEP = f"{HIERARCHY_VALUE} + [tinydep.ANSWER]"
BUNDLE = re.compile(r"shipping the workflow's code to the agents: bundle ([0-9a-f]{12})")


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding the leader's files from agents needs root and unshare")
    with cluster_work_dir("toil-mesos-scenarios-") as work:
        leader = work / "leader"
        leader.mkdir()
        visible = work / "visible"
        visible.mkdir()
        with MiniCluster(work / "cluster", agents=3, hide=[leader]) as mini:
            yield Site(mini, leader, visible)


@pytest.fixture(scope="module")
def venv(site: Site) -> LeaderVenv:
    """The seed's leader venv with nothing of the user's in it: Toil comes from the "system"."""
    return make_venv(site.leader / "venv")


@pytest.fixture(scope="module")
def tinydep(site: Site) -> Path:
    """A pure-Python third-party distribution's source tree, installable offline."""
    return tiny_dependency(site.leader / "src" / "tinydep")


@pytest.fixture(scope="module")
def hierarchy(site: Site) -> Path:
    """The seed's package hierarchy, checked out on the leader."""
    return package_hierarchy(site.leader / "hierarchy")


def test_agents_cannot_see_the_leader_directory(site: Site) -> None:
    (site.leader / "marker").write_text("leader only")
    for agent in site.mini.agents:
        probe = run(["nsenter", f"--mount=/proc/{agent.pid}/ns/mnt", "ls", "-A",
                     str(site.leader)], check=False)
        assert probe.returncode == 0 and probe.stdout.strip() == "", probe


# ---- 1. sibling modules -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def siblings(site: Site, venv: LeaderVenv) -> Path:
    """``userScript.py`` (executable, its shebang the leader venv's python) and its sibling."""
    project = write(site.leader / "my_project", {
        "userScript.py": workflow_source(imports="import utilities", helpers=["utilities"],
                                         value="utilities.sort([3, 1, 2])",
                                         shebang=str(venv.python)),
        "utilities.py": "def sort(numbers):\n    return sorted(numbers)\n",
    })
    (project / "userScript.py").chmod(0o755)
    return project


class TestSiblingModules:
    """``userScript.py`` importing ``utilities.py``, run as a script two ways."""

    def test_dot_slash_script_with_a_shebang(self, site, siblings):
        outcome = site.run(["./userScript.py"], name="siblings-exec", cwd=siblings)
        assert_ran_from_bundle(site, outcome, expected=SORTED, jobs=JOBS,
                               keys=("module", "utilities"))

    def test_python_script(self, site, venv, siblings):
        outcome = site.run([str(venv.python), "userScript.py"], name="siblings-python",
                           cwd=siblings)
        reports = assert_ran_from_bundle(site, outcome, expected=SORTED, jobs=JOBS,
                                         keys=("module", "utilities"))
        # The script and its sibling come from the same staged root.
        assert {Path(r["module"]).parent for r in reports} == {
            Path(r["helpers"]["utilities"]).parent for r in reports}

    def test_twin_without_auto_deployment_fails(self, site, siblings):
        outcome = site.run(["./userScript.py"], name="siblings-off", cwd=siblings,
                           toil_args=DISABLED)
        assert_cannot_import_without_bundle(outcome, "userScript", "utilities")


# ---- 3. PYTHONPATH=$PWD, run from elsewhere ---------------------------------------------------


class TestPythonpathFromElsewhere:
    def test_found_through_pythonpath_and_imported_from_the_bundle(self, site, venv, hierarchy):
        outcome = site.run([str(venv.python), "-m", "workflow.main"], name="pythonpath",
                           cwd=site.path("elsewhere"), env={"PYTHONPATH": str(hierarchy)})
        reports = assert_ran_from_bundle(site, outcome, expected=SORTED, jobs=JOBS,
                                         keys=("module", "util.sort.quick"))
        for report in reports:
            # Toil replicates the leader's PYTHONPATH into the job, yet the bundle is first on
            # the worker's sys.path, and its location stays available to job subprocesses.
            assert report["pythonpath"] == str(hierarchy)
            assert report["module"].startswith(report["bundle_roots"] + "/workflow/")

    def test_twin_without_auto_deployment_fails(self, site, venv, hierarchy):
        outcome = site.run([str(venv.python), "-m", "workflow.main"], name="pythonpath-off",
                           cwd=site.path("elsewhere"), env={"PYTHONPATH": str(hierarchy)},
                           toil_args=DISABLED)
        assert_cannot_import_without_bundle(outcome, "workflow", "util")


# ---- 4. a virtualenv holding the project and a third-party dependency -------------------------


INSTALLS = ("pip-install-dot", "pip-install-wheel", "cp-r-into-site-packages")


@pytest.fixture(scope="module", params=INSTALLS)
def installed(request: pytest.FixtureRequest, site: Site, tinydep: Path) -> LeaderVenv:
    """A leader venv with tinydep installed, and the project installed one of the seed's ways."""
    how = request.param
    project = package_hierarchy(site.leader / f"project-{how}", imports="import tinydep\n",
                                helpers=["tinydep"], value=WITH_TINYDEP)
    venv = make_venv(site.leader / f"venv-{how}")
    venv.pip(str(tinydep))
    if how == "pip-install-dot":
        venv.pip(".", cwd=project)
    elif how == "pip-install-wheel":
        # `pip wheel` stands in for a project published to PyPI: `pip install my-project`.
        wheels = site.leader / "wheels"
        run([str(venv.python), "-m", "pip", "wheel", "--quiet", "--no-index",
             "--no-build-isolation", "--no-deps", "-w", str(wheels), "."], cwd=project)
        venv.pip(str(next(wheels.glob("my_project-*.whl"))))
    else:
        for package in ("workflow", "util"):
            shutil.copytree(project / package, venv.site_packages / package)
    return venv


class TestVirtualenvInstalls:
    def test_installed_project_and_dependency_ship(self, site, installed):
        outcome = site.run([str(installed.python), "-m", "workflow.main"],
                           name=f"{installed.root.name}-on", cwd=site.path("elsewhere"))
        reports = assert_ran_from_bundle(site, outcome, expected=[*SORTED, 42], jobs=JOBS,
                                         keys=("module", "util.sort.quick", "tinydep"))
        for report in reports:
            # One root, the venv's site-packages, holds the project and its dependency.
            root = report["bundle_roots"]
            assert report["module"] == f"{root}/workflow/main.py", report
            assert report["helpers"]["tinydep"] == f"{root}/tinydep/__init__.py", report

    def test_twin_without_auto_deployment_fails(self, site, installed):
        outcome = site.run([str(installed.python), "-m", "workflow.main"],
                           name=f"{installed.root.name}-off", cwd=site.path("elsewhere"),
                           toil_args=DISABLED)
        assert_cannot_import_without_bundle(outcome, "workflow", "util", "tinydep")


# ---- 5. editable installs, and a checkout with its venv's dependencies ------------------------


EDITABLE_SHAPES = ("setuptools-src-path-entry", "setuptools-flat-finder", "hatchling")


@pytest.fixture(scope="module", params=EDITABLE_SHAPES)
def editable(request: pytest.FixtureRequest, site: Site) -> tuple[LeaderVenv, str]:
    """A leader venv with ``pip install -e`` of a checkout; and what its jobs compute."""
    files, extra = EDITABLE_LAYOUTS[request.param]
    package = "src/edpkg" if "src" in request.param else "edpkg"
    jobs = workflow_source(imports="import edpkg", helpers=["edpkg"], value="edpkg.WHERE")
    checkout = write(site.leader / f"checkout-{request.param}",
                     {**files, f"{package}/jobs.py": jobs})
    venv = make_venv(site.leader / f"venv-{request.param}")
    venv.pip("--no-deps", *extra, "-e", str(checkout))
    init = next(text for path, text in files.items() if path.endswith("edpkg/__init__.py"))
    return venv, init.split("'")[1]


class TestEditableInstalls:
    def test_editable_sources_ship(self, site, editable):
        venv, where = editable
        outcome = site.run([str(venv.python), "-m", "edpkg.jobs"], name=f"{venv.root.name}-on",
                           cwd=site.path("elsewhere"))
        reports = assert_ran_from_bundle(site, outcome, expected=where, jobs=JOBS,
                                         keys=("module", "edpkg"))
        for report in reports:
            # The editable source root ships first, in place of the pointer in site-packages.
            first = report["bundle_roots"].split(":")[0]
            assert report["module"] == f"{first}/edpkg/jobs.py", report

    def test_twin_without_auto_deployment_fails(self, site, editable):
        venv, _ = editable
        outcome = site.run([str(venv.python), "-m", "edpkg.jobs"], name=f"{venv.root.name}-off",
                           cwd=site.path("elsewhere"), toil_args=DISABLED)
        assert_cannot_import_without_bundle(outcome, "edpkg")


@pytest.fixture(scope="module")
def checkout(site: Site, tinydep: Path) -> tuple[LeaderVenv, Path]:
    """A source checkout, run from its root, whose venv holds its dependency."""
    venv = make_venv(site.leader / "venv-deps")
    venv.pip(str(tinydep))
    project = package_hierarchy(site.leader / "checkout-with-deps",
                                imports="import tinydep\n", helpers=["tinydep"],
                                value=WITH_TINYDEP)
    return venv, project


class TestCheckoutWithVenvDependencies:
    def test_checkout_and_site_packages_ship_as_two_roots(self, site, checkout):
        venv, project = checkout
        outcome = site.run([str(venv.python), "-m", "workflow.main"], name="checkout-deps",
                           cwd=project)
        reports = assert_ran_from_bundle(site, outcome, expected=[*SORTED, 42], jobs=JOBS,
                                         keys=("module", "tinydep"))
        for report in reports:
            staged = report["module"].split("/r0/workflow/")[0]
            assert report["helpers"]["tinydep"] == f"{staged}/r1/tinydep/__init__.py", report
            assert report["bundle_roots"] == f"{staged}/r0:{staged}/r1"

    def test_twin_without_auto_deployment_fails(self, site, checkout):
        venv, project = checkout
        outcome = site.run([str(venv.python), "-m", "workflow.main"], name="checkout-deps-off",
                           cwd=project, toil_args=DISABLED)
        assert_cannot_import_without_bundle(outcome, "workflow", "util", "tinydep")


# ---- 6. a root directory that is a package ----------------------------------------------------


def test_a_script_directory_that_is_a_package_stops_before_any_job(site, venv):
    project = write(site.leader / "pkgroot", {
        "__init__.py": "",
        "wf.py": workflow_source(imports="import helpers", helpers=["helpers"],
                                 value="helpers.sort([3, 1, 2])"),
        "helpers.py": "def sort(numbers):\n    return sorted(numbers)\n",
    })
    outcome = site.run([str(venv.python), "wf.py"], name="root-is-a-package", cwd=project)
    assert_stopped_before_any_job(site, outcome, "root-is-a-package")
    assert f"{project / '__init__.py'} makes {project} a package" in outcome.output
    assert f"`python -m pkgroot.wf` from {site.leader}" in outcome.output


# ---- 7. a dependency with native code ---------------------------------------------------------


@pytest.fixture(scope="module")
def native(site: Site) -> tuple[LeaderVenv, Path]:
    """A venv holding ``fastdep``, whose package has an extension module (by its name)."""
    tag = "cpython-{}{}-x86_64-linux-gnu".format(*sys.version_info[:2])
    dist = write(site.leader / "src" / "fastdep", {
        "fastdep/__init__.py": "SPEED = 'fallback'\n",
        f"fastdep/_speedups.{tag}.so": "not really ELF: detection is by name\n",
        "pyproject.toml": """\
            [build-system]
            requires = ["setuptools>=64"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "fastdep"
            version = "0.3"
            [tool.setuptools.package-data]
            fastdep = ["*.so"]
            """,
    })
    venv = make_venv(site.leader / "venv-native")
    venv.pip(str(dist))
    assert list((venv.site_packages / "fastdep").glob("*.so"))
    project = package_hierarchy(site.leader / "native-project", imports="import fastdep\n",
                                helpers=["fastdep"],
                                value=f"{HIERARCHY_VALUE} + [fastdep.SPEED]")
    return venv, project


class TestNativeCode:
    def test_native_code_is_named_before_the_first_job(self, site, native):
        venv, project = native
        outcome = site.run([str(venv.python), "-m", "workflow.main"], name="native-warn",
                           cwd=project)
        assert_ran_from_bundle(site, outcome, expected=[*SORTED, "fallback"], jobs=JOBS,
                               keys=("module", "fastdep"))
        log = outcome.proc.stderr
        warning = log.find("shipping native code")
        assert warning >= 0, outcome.tail()
        assert "fastdep: 1 file" in log[warning:warning + 500]
        assert warning < log.find("Issued job")

    def test_refuse_policy_launches_no_task(self, site, native):
        venv, project = native
        outcome = site.run([str(venv.python), "-m", "workflow.main"], name="native-refuse",
                           cwd=project, toil_args=("--mesosNativeCode", "refuse"))
        assert_stopped_before_any_job(site, outcome, "native-refuse")
        assert "refused by --mesosNativeCode=refuse" in outcome.output
        assert "fastdep: 1 file" in outcome.output


# ---- 8. --restart after fixing the user's code ------------------------------------------------


def test_restart_after_a_fix_runs_the_fixed_code(site, venv):
    project = package_hierarchy(site.leader / "restartable",
                                quick=QUICK.replace("BROKEN = False", "BROKEN = True"))
    store = site.visible / "stores" / "restart"
    argv = [str(venv.python), "-m", "workflow.main"]
    broken = site.run(argv, name="restart-1", cwd=project, job_store=store)
    assert broken.proc.returncode != 0 and not broken.reports, broken.tail()
    assert "util.sort.quick is deliberately broken" in broken.output
    assert store.is_dir(), "Toil's default --clean=onSuccess keeps a failed workflow's store"
    quick = project / "util" / "sort" / "quick.py"
    quick.write_text(quick.read_text().replace("BROKEN = True", "BROKEN = False"))
    fixed = site.run(argv, name="restart-2", cwd=project, job_store=store,
                     toil_args=("--restart",))
    reports = assert_ran_from_bundle(site, fixed, expected=SORTED, jobs=JOBS,
                                     keys=("module", "util.sort.quick"))
    first, second = (BUNDLE.search(o.proc.stderr) for o in (broken, fixed))
    assert first and second and first[1] != second[1], fixed.tail()
    assert all(f"{STAGED}{second[1]}" in r["helpers"]["util.sort.quick"] for r in reports)


# ---- 9. a second top-level package, user classes as arguments, deferred functions ------------


GRAPH_MAIN = '''\
import json

from toil.common import Toil
from toil.job import Job

from extra import children, cleanup
from extra.payload import Payload


class Params:
    """Defined in __main__ on the leader: workers must see it as workflow.main.Params."""

    def __init__(self, marker_dir, fanout):
        self.marker_dir = marker_dir
        self.fanout = fanout


def start(job, params):
    kids = [job.addChildJobFn(children.child, i, params, Payload(i), cores=1, memory="50M",
                              disk="1M") for i in range(params.fanout)]
    crashing = job.addChildJobFn(flaky, params, cores=1, memory="50M", disk="1M")
    first = children.report(-1, __file__, params)
    return job.addFollowOnJobFn(collect, first, [k.rv() for k in kids], crashing.rv(),
                                cores=1, memory="50M", disk="1M").rv()


def flaky(job, params):
    """Crashes on its first attempt, after deferring a function that must still run."""
    attempt = children.next_attempt(params.marker_dir)
    job.defer(cleanup.mark, params.marker_dir, f"deferred-by-flaky-attempt-{attempt}")
    if attempt == 1:
        raise RuntimeError("the flaky job crashes on its first attempt")
    return children.report(-3, __file__, params)


def collect(job, first, kids, crashing):
    return [first, *kids, crashing, children.report(-2, __file__, None)]


if __name__ == "__main__":
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--markers", required=True)
    options = parser.parse_args()
    with Toil(options) as toil:
        result = toil.start(Job.wrapJobFn(start, Params(options.markers, 4), cores=1,
                                          memory="50M", disk="1M"))
    for item in result:
        print("JOB " + json.dumps(item, sort_keys=True))
'''

GRAPH_CHILDREN = '''\
import os
from pathlib import Path

from extra import cleanup


def class_name(value):
    return None if value is None else f"{type(value).__module__}.{type(value).__qualname__}"


def report(index, module_file, params, payload=None):
    return {
        "index": index,
        "agent": os.environ.get("MESOS_SLAVE_ID"),
        "executor": os.environ.get("MESOS_EXECUTOR_ID"),
        "module": module_file,
        "helpers": {"extra.cleanup": cleanup.__file__},
        "params": class_name(params),
        "payload": class_name(payload),
        "value": "ok",
    }


def next_attempt(marker_dir):
    attempt = len(list(Path(marker_dir).glob("attempt-*"))) + 1
    (Path(marker_dir) / f"attempt-{attempt}").write_text("")
    return attempt


def child(job, index, params, payload):
    job.defer(cleanup.mark, params.marker_dir, f"deferred-by-child-{index}")
    assert payload.index == index
    return report(index, __file__, params, payload)
'''

GRAPH_CLEANUP = '''\
import json
import os
from pathlib import Path


def mark(marker_dir, name):
    """A deferred function: it records where it ran and which copy of this module it used."""
    (Path(marker_dir) / name).write_text(json.dumps(
        {"file": __file__, "agent": os.environ.get("MESOS_SLAVE_ID")}))
'''


@pytest.fixture(scope="module")
def graph(site: Site) -> Path:
    """``workflow/`` run with -m, and ``extra/``: a second top-level package."""
    return write(site.leader / "graph", {
        "workflow/__init__.py": "",
        "workflow/main.py": GRAPH_MAIN,
        "extra/__init__.py": "",
        "extra/children.py": GRAPH_CHILDREN,
        "extra/cleanup.py": GRAPH_CLEANUP,
        "extra/payload.py": "class Payload:\n    def __init__(self, index):\n"
                            "        self.index = index\n",
    })


class TestJobGraph:
    def run_graph(self, site: Site, venv: LeaderVenv, graph: Path, name: str,
                  *toil_args: str) -> tuple[Outcome, Path]:
        markers = site.path("markers", name, visible=True)
        outcome = site.run([str(venv.python), "-m", "workflow.main"], name=name, cwd=graph,
                           toil_args=("--markers", str(markers), *toil_args))
        return outcome, markers

    def test_second_package_classes_and_deferred_functions(self, site, venv, graph):
        outcome, markers = self.run_graph(site, venv, graph, "graph", "--retryCount", "1")
        reports = assert_ran_from_bundle(site, outcome, expected="ok", jobs=7,
                                         keys=("module", "extra.cleanup"))
        by_index = {r["index"]: r for r in reports}
        for index in range(4):  # the children, defined in the second top-level package
            assert by_index[index]["module"].endswith("/extra/children.py")
            assert by_index[index]["params"] == "workflow.main.Params"
            assert by_index[index]["payload"] == "extra.payload.Payload"
        assert by_index[-1]["params"] == by_index[-3]["params"] == "workflow.main.Params"
        assert by_index[-3]["module"].endswith("/workflow/main.py")
        # Every deferred function ran, the crashed attempt's too, with the bundle's code.
        assert {p.name for p in markers.iterdir()} == {
            "attempt-1", "attempt-2", "deferred-by-flaky-attempt-1",
            "deferred-by-flaky-attempt-2", *(f"deferred-by-child-{i}" for i in range(4))}
        assert "the flaky job crashes on its first attempt" in outcome.output
        for marker in markers.glob("deferred-*"):
            ran = json.loads(marker.read_text())
            assert STAGED in ran["file"] and ran["agent"] in site.agent_ids(), (marker, ran)

    def test_twin_without_auto_deployment_fails(self, site, venv, graph):
        outcome, markers = self.run_graph(site, venv, graph, "graph-off", *DISABLED)
        assert_cannot_import_without_bundle(outcome, "workflow", "extra")
        assert not list(markers.iterdir())


# ---- 10. a 200-job fan-out ---------------------------------------------------------------------


def test_a_200_job_fan_out_uses_every_agent(site, venv, hierarchy):
    outcome = site.run([str(venv.python), "-m", "workflow.main"], name="fan-out",
                       cwd=hierarchy, toil_args=("--jobs", "200", "--cores", "0.1"))
    reports = assert_ran_from_bundle(site, outcome, expected=SORTED, jobs=202,
                                     keys=("module", "util.sort.quick"), agents=3)
    assert sorted(r["index"] for r in reports) == [-2, -1, *range(200)]


# ---- 11. a shared filesystem ------------------------------------------------------------------


class TestSharedFilesystem:
    def test_code_on_a_shared_path_is_not_shipped(self, site, venv):
        shared = site.path("nfs", visible=True)
        project = package_hierarchy(shared / "my_project")
        outcome = site.run([str(venv.python), "-m", "workflow.main"], name="shared",
                           cwd=site.path("elsewhere"), env={"PYTHONPATH": str(project)},
                           toil_args=("--mesosSharedPath", str(shared)))
        assert outcome.proc.returncode == 0, outcome.tail()
        assert "nothing to ship" in outcome.proc.stderr
        assert "shipping the workflow's code" not in outcome.proc.stderr
        reports = outcome.reports
        assert len(reports) == JOBS and all(r["value"] == SORTED for r in reports)
        assert len({r["agent"] for r in reports}) > 1
        for report in reports:
            assert str(report["executor"]).startswith("toil-")
            assert report["module"] == str(project / "workflow" / "main.py")
            assert report["pythonpath"] == str(project) and report["bundle_roots"] is None

    def test_control_a_hidden_path_named_shared_is_not_shipped_either(self, site, venv):
        # Proof that "nothing shipped" is real: the same layout under the hidden directory,
        # declared shared, cannot be imported on the agents.
        fake = site.path("not-really-shared")
        project = package_hierarchy(fake / "my_project")
        outcome = site.run([str(venv.python), "-m", "workflow.main"], name="shared-off",
                           cwd=site.path("elsewhere"), env={"PYTHONPATH": str(project)},
                           toil_args=("--mesosSharedPath", str(fake)))
        assert "nothing to ship" in outcome.proc.stderr
        assert_cannot_import_without_bundle(outcome, "workflow", "util")
