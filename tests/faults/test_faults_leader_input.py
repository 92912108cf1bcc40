"""Bad user input on a real leader: each stops the workflow before any job, and the fix works.

``python faultflow.py JOBSTORE --batchSystem mesos ...`` runs on a one-agent cluster that
cannot see the leader's files. Each case sets one trap the leader must catch while it builds
the bundle, before the first job is issued:

* the script's directory is a package (it has an ``__init__.py``);
* the workflow's own module is missing from what ships (a ``.gitignore`` rule takes it out);
* a file that would ship is unreadable. The tests run as root, and root reads a ``chmod 000``
  file, so the leader runs without ``CAP_DAC_OVERRIDE`` and ``CAP_DAC_READ_SEARCH``
  (``setpriv``): then the file's mode binds it as it binds any user, and deploy finds it
  unreadable (``os.access`` and ``open`` both fail with EACCES);
* the code to ship is over ``--mesosBundleMaxBytes``;
* the job module lives in a zipped egg;
* native code ships under ``--mesosNativeCode refuse``.

Each run must exit non-zero with a message naming the file or option and the fix, with no task
launched (the master's record of the framework holds none, and no job recorded an attempt).
Then the documented fix is applied and the workflow rerun, with ``--restart`` where the fix
keeps the job's module where it was, else after ``toil clean``; it must finish with every job's
output right.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import (
    WORKFLOW,
    check_outputs,
    count_starts,
    executor_command,
    leader_env,
    leftovers,
    master_state,
    write_workflow,
)

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir, leader_venv

pytestmark = pytest.mark.integration

JOBS = 2
RUN_TIMEOUT = 240
#: What the batch system adds to each error it finds while it builds the bundle.
NO_JOB_RAN = "No job of this workflow has run. Fix the problem, then run the same command with " \
             "--restart"
TAG = "cpython-{}{}-x86_64-linux-gnu".format(*sys.version_info[:2])
DROP_DAC = ("setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search")


@dataclass
class Site:
    mini: MiniCluster
    leader: Path
    visible: Path
    python: Path


@pytest.fixture(scope="module")
def site(tally) -> Iterator[Site]:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        pytest.skip("hiding the leader's files needs root and unshare; the unreadable file, "
                    "setpriv")
    with cluster_work_dir("toil-mesos-bad-input-") as work:
        leader, visible = work / "leader", work / "visible"
        leader.mkdir()
        visible.mkdir()
        python = leader_venv(leader / "venv")
        with MiniCluster(work / "cluster", agents=1, cpus=4, hide=[leader]) as mini:
            yield Site(mini, leader, visible, python)
            record = mini.record
        found = []
        for cache in visible.glob("*/bundle-cache"):
            found += leftovers(record, work, cache)
        tally.leftovers_found(len(found))
        assert not found, found
    assert not work.exists()


@dataclass
class Run:
    code: int
    output: str


@dataclass
class Case:
    """A trap (``setup`` makes the project and returns how to run it), what the leader must
    say, and the fix (it changes the project and returns how to run it again)."""

    name: str
    setup: Callable[[Path], Launch]
    says: Sequence[str]
    fix: Callable[[Path, Launch], Launch]
    #: Where the leader cannot name the fix, ``toil-mesos bundle inspect`` with these
    #: arguments (same environment) must: it says what it says.
    inspect: Sequence[str] = ()
    inspect_says: Sequence[str] = ()


@dataclass
class Launch:
    """How to start the leader: the program (script or ``-m`` module) and where, and extras."""

    program: Sequence[str]
    cwd: Path
    args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    prefix: Sequence[str] = ()
    restart: bool = False
    clean_first: bool = False


def run_leader(site: Site, name: str, launch: Launch) -> Run:
    home = site.visible / name
    records, store = home / "records", home / "jobstore"
    records.mkdir(parents=True, exist_ok=True)
    env = {**leader_env(), **launch.env}
    if launch.clean_first:
        subprocess.run([str(site.python), "-c", "from toil.utils.toilMain import main; main()",
                        "clean", str(store)], cwd=launch.cwd, env=env, check=True,
                       capture_output=True, timeout=RUN_TIMEOUT)
        assert not store.exists()
    argv = [*launch.prefix, str(site.python), *launch.program, str(store),
            "--batchSystem", "mesos", "--mesosEndpoint", site.mini.master,
            "--mesosExecutor", executor_command(home / "bundle-cache"),
            "--mesosName", name, "--logLevel", "INFO", "--retryCount", "0",
            "--records", str(records), "--jobs", str(JOBS), "--seconds", "0.1",
            *launch.args, *(("--restart",) if launch.restart else ())]
    done = subprocess.run(argv, cwd=launch.cwd, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, check=False)
    output = done.stdout + done.stderr
    with (home / "leader.log").open("a") as log:
        log.write(f"$ {' '.join(argv)}\n{output}\n")
    return Run(done.returncode, output)


def tasks_of(site: Site, name: str) -> list[dict[str, Any]]:
    state = master_state(site.mini)
    frameworks = [f for f in (*state["frameworks"], *state.get("completed_frameworks", []))
                  if f["name"] == name]
    return [t for f in frameworks for key in ("tasks", "unreachable_tasks", "completed_tasks")
            for t in f.get(key, [])]


# ---- the traps and their fixes ------------------------------------------------------------------


def project(directory: Path) -> Path:
    """The fault workflow with a helper module beside it, as the agents' only copy."""
    script = write_workflow(directory)
    (directory / "helper.py").write_text("HELPS = True\n")
    return script


def package_root(base: Path) -> Launch:
    project(base / "pkgflow")
    (base / "pkgflow" / "__init__.py").write_text("")
    return Launch(["faultflow.py"], base / "pkgflow")


def package_root_fix(base: Path, first: Launch) -> Launch:
    # As the message says: `python -m pkgflow.faultflow` from the directory above. The job's
    # module changes its name, so the job store of the failed run is cleaned first.
    return Launch(["-m", "pkgflow.faultflow"], base, clean_first=True)


def ignored_module(base: Path) -> Launch:
    project(base / "flow")
    (base / "flow" / ".gitignore").write_text("# outputs\nfaultflow*\n")
    return Launch(["faultflow.py"], base / "flow")


def ignored_module_fix(base: Path, first: Launch) -> Launch:
    (base / "flow" / ".gitignore").write_text("# outputs\nfaultflow-out/\n")
    return Launch(first.program, first.cwd, restart=True)


def unreadable(base: Path) -> Launch:
    project(base / "flow")
    (base / "flow" / "helper.py").chmod(0)
    return Launch(["faultflow.py"], base / "flow", prefix=DROP_DAC)


def unreadable_fix(base: Path, first: Launch) -> Launch:
    (base / "flow" / "helper.py").chmod(0o644)
    return Launch(first.program, first.cwd, prefix=DROP_DAC, restart=True)


def too_big(base: Path) -> Launch:
    project(base / "flow")
    (base / "flow" / "reference.dat").write_bytes(os.urandom(200_000))
    return Launch(["faultflow.py"], base / "flow", args=("--mesosBundleMaxBytes", "100000"))


def too_big_fix(base: Path, first: Launch) -> Launch:
    return Launch(first.program, first.cwd, args=("--mesosBundleMaxBytes", "1000000"),
                  restart=True)


def zipped_egg(base: Path) -> Launch:
    egg = base / "eggflow-1.0-py3.egg"
    with zipfile.ZipFile(egg, "w") as archive:
        archive.writestr("eggflow/__init__.py", "")
        archive.writestr("eggflow/faultflow.py", WORKFLOW.format(version="v1"))
        archive.writestr("EGG-INFO/PKG-INFO", "Metadata-Version: 1.1\nName: eggflow\n"
                                              "Version: 1.0\n")
    return Launch(["-m", "eggflow.faultflow"], base, env={"PYTHONPATH": str(egg)})


def zipped_egg_fix(base: Path, first: Launch) -> Launch:
    # "install it unzipped or run from a source checkout": the same package, unzipped.
    source = base / "src"
    with zipfile.ZipFile(base / "eggflow-1.0-py3.egg") as archive:
        archive.extractall(source)
    shutil.rmtree(source / "EGG-INFO")
    return Launch(first.program, base, env={"PYTHONPATH": str(source)}, clean_first=True)


def native(base: Path) -> Launch:
    project(base / "flow")
    (base / "flow" / f"_speedups.{TAG}.so").write_bytes(b"\x7fELF not really: found by name\n")
    return Launch(["faultflow.py"], base / "flow", args=("--mesosNativeCode", "refuse"))


def native_fix(base: Path, first: Launch) -> Launch:
    return Launch(first.program, first.cwd, args=("--mesosNativeCode", "warn"), restart=True)


CASES = [
    Case("root is a package", package_root,
         ["pkgflow/__init__.py makes", "pkgflow a package", "`python -m pkgflow.faultflow`",
          NO_JOB_RAN], package_root_fix),
    Case("missing module", ignored_module,
         ["the user module 'faultflow'", "faultflow.py) would not ship: ignored by .gitignore",
          "change the exclude patterns or .gitignore", NO_JOB_RAN], ignored_module_fix),
    Case("unreadable file", unreadable,
         ["helper.py: permission denied; make it readable or exclude it", NO_JOB_RAN],
         unreadable_fix),
    Case("over the size limit", too_big,
         ["larger than the limit of 97.7 KiB", "reference.dat", "--mesosBundleMaxBytes",
          NO_JOB_RAN], too_big_fix),
    # Toil refuses a job function from a zip itself (toil/resource.py, ModuleDescriptor.
    # forModule) when the job is made, before the batch system exists: its message names the
    # egg but no fix, so `toil-mesos bundle inspect` is where the fix is named.
    Case("zipped egg", zipped_egg,
         ["Bad directory path", "eggflow-1.0-py3.egg for module eggflow.faultflow"],
         zipped_egg_fix, inspect=("--module", "eggflow.faultflow"),
         inspect_says=["is inside the zipped egg", "eggflow-1.0-py3.egg",
                       "install it unzipped (`pip install` the project) or run from a source "
                       "checkout"]),
    Case("native code refused", native,
         ["refused by --mesosNativeCode=refuse", f"_speedups.{TAG}.so",
          "leave them out with --mesosBundleExclude",
          "allow shipping native code with --mesosNativeCode=warn", NO_JOB_RAN],
         native_fix),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_stops_the_leader_before_any_job_and_the_fix_works(site, tally, case):
    name = case.name.replace(" ", "-")
    base = site.leader / name
    base.mkdir()
    records = site.visible / name / "records"

    first = case.setup(base)
    tally.bad_input()
    run = run_leader(site, name, first)
    assert run.code != 0, run.output[-4000:]
    for text in case.says:
        assert text in run.output, (text, run.output[-4000:])
    if case.inspect:
        inspect = subprocess.run([str(site.python), "-m", "toil_mesos", "bundle", "inspect",
                                  *case.inspect], cwd=first.cwd,
                                 env={**leader_env(), **first.env}, capture_output=True,
                                 text=True, timeout=RUN_TIMEOUT, check=False)
        assert inspect.returncode != 0, inspect.stdout
        for text in case.inspect_says:
            assert text in inspect.stderr, (text, inspect.stderr)
    assert "Issued job" not in run.output, run.output[-4000:]
    assert tasks_of(site, name) == []
    assert count_starts(records) == 0

    again = case.fix(base, first)
    run = run_leader(site, name, again)
    assert run.code == 0, run.output[-6000:]
    expected = json.dumps([f"v1:{i * i}" for i in range(JOBS)])
    assert f"RESULT {expected}" in run.output, run.output[-3000:]
    lost = check_outputs(records, JOBS, "v1")
    tally.jobs(checked=JOBS, lost=len(lost))
    assert not lost, lost
    assert len(tasks_of(site, name)) >= JOBS
