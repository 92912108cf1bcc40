"""Hostile input to the real executor on a mini-cluster: bad task data and bad bundles.

A framework on :class:`SchedulerDriver` launches tasks whose executor is ``toil-mesos
executor``, fetched bundles and all, on a one-agent cluster. Each bad task carries one problem:
task data that is not a task spec, a bundle whose bytes do not match its hash, archives with a
path escape, an absolute path, a link out of the root, a device node, a bundle larger than the
disk left for the bundle cache (a 1 MiB tmpfs). Each must end TASK_FAILED with a message naming
the problem, run no user code (the task's command would create a marker file), and leave the
agent's bundle cache usable: afterwards a good task with a new bundle, staged into the same
cache by a new executor, must succeed.

All bad tasks go out in one offer and all good ones in the next, so the cases share the cost of
the cluster and of starting executors; each case is then checked by its own test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from _archives import (
    hardlink,
    make_bundle,
    manifest_for,
    manifest_member,
    regular,
    sha,
    special,
    symlink,
    write_archive,
    write_raw,
)
from agent_helpers import FileServer
from fault_helpers import executor_command, leftovers
from test_cluster_with_drivers import Recorder

from toil_mesos.cluster.launcher import ClusterRecord
from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir
from toil_mesos.deploy._units import human_size
from toil_mesos.mesos.driver import SchedulerDriver
from toil_mesos.task_spec import TaskSpec

pytestmark = pytest.mark.integration

PYTHON = "{}.{}".format(*sys.version_info[:2])
TOIL = metadata.version("toil")
#: The bundle cache on a tmpfs this small cannot hold a bundle of 4 MiB.
SMALL_CACHE = "1m"
BIG_FILE = 4 << 20
SMALL_FILE, SMALL_FILES = 2000, 400
WAIT = 120.0


@dataclass
class Case:
    """One bad task, and the good task that follows it on the same bundle cache."""

    name: str
    problem: str
    cache: Path
    #: What the bad task's executor fetches, under the name of the hash its task spec gives.
    archive: bytes | None = None
    sha256: str | None = None
    #: The task data for a marker path, when it is what is bad (the bundle then is good);
    #: None: a good task spec.
    data: Callable[[Path], str] | None = None
    good_sha256: str = ""
    good_archive: bytes = b""
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Whether the bad and the good bundle were staged in the cache (looked at while it is
    #: still mounted).
    staged: dict[str, bool] = field(default_factory=dict)
    #: Whether any directory of the bad bundle's hash was in the cache after both phases.
    present_after_bad: bool = False


def hostile_archive(directory: Path, members: list[Any]) -> tuple[bytes, str]:
    """A bundle whose manifest lists one good file, followed by *members* after that file."""
    good = {"r0/ok.py": b"OK = True\n"}
    listed = [manifest_member(manifest_for(good)), regular("r0/ok.py", good["r0/ok.py"])]
    archive = write_archive(directory, [*listed, *members])
    return archive.path.read_bytes(), archive.sha256


def build_cases(work: Path, cache: Path, small_cache: Path) -> list[Case]:
    made = work / "archives"
    made.mkdir()
    good_bytes = make_bundle(made, {"r0/x.py": b"X = 1\n"}).path.read_bytes()
    garbage = write_raw(made, os.urandom(4096))
    big = manifest_for({"r0/big.bin": bytes(BIG_FILE)})
    too_big = write_archive(made, [manifest_member(big), regular("r0/big.bin", bytes(BIG_FILE))])
    # Fewer bytes than the tmpfs has free, but each file takes a whole page: the disk fills up
    # in the middle of the extraction, after the free-space check has passed.
    tight = make_bundle(made, {f"r0/f{i:03d}.bin": os.urandom(SMALL_FILE)
                               for i in range(SMALL_FILES)})
    cases = [
        Case("hash mismatch", "has sha256 " + sha(good_bytes), cache, good_bytes,
             sha(b"the hash the leader sent")),
        Case("not an archive", "not a valid bundle archive", cache,
             garbage.path.read_bytes(), garbage.sha256),
        Case("path escape", "member 'r0/../../escape.py' has an unsafe name", cache,
             *hostile_archive(made, [regular("r0/../../escape.py", b"import os\n")])),
        Case("absolute path", "member '/tmp/escape.py' has an unsafe name", cache,
             *hostile_archive(made, [regular("/tmp/escape.py", b"import os\n")])),
        Case("symlink escape", "symlink 'r0/etc' -> '../../../../etc' points outside its root",
             cache, *hostile_archive(made, [symlink("r0/etc", "../../../../etc"),
                                             regular("r0/etc/cron.d/x", b"* * * * * root id\n")])),
        Case("hardlink escape", "hardlink 'r0/passwd' -> '/etc/passwd' points outside", cache,
             *hostile_archive(made, [hardlink("r0/passwd", "/etc/passwd")])),
        Case("device node", "member 'r0/null' is a character device node", cache,
             *hostile_archive(made, [special("r0/null", tarfile.CHRTYPE)])),
        Case("bigger than the disk", f"has no room: this bundle needs {BIG_FILE} bytes",
             small_cache, too_big.path.read_bytes(), too_big.sha256),
        # No "bytes are free" here: this is the disk filling up, not the check before it.
        Case("fills the disk while staging",
             f"has no room: this bundle needs {SMALL_FILE * SMALL_FILES} bytes "
             f"({human_size(SMALL_FILE * SMALL_FILES)}); free space there", small_cache,
             tight.path.read_bytes(), tight.sha256),
        Case("task data not base64", "bad task data", cache,
             data=lambda marker: f"touch {marker}"),
        Case("task data a pickle", "bad task data: task data is not JSON", cache,
             data=lambda marker: base64.b64encode(
                 b"cposix\nsystem\n(Vtouch " + bytes(marker) + b"\ntR.").decode()),
        Case("task spec with a path for a hash", "bundle_sha256 is not a sha256", cache,
             data=lambda marker: raw_spec(marker, bundle_sha256="../../../etc/passwd")),
        Case("task spec from the future", "task spec version 2 is not supported", cache,
             data=lambda marker: raw_spec(marker, version=2)),
    ]
    for index, case in enumerate(cases):
        if case.data is not None:  # the task data is bad; its executor and bundle are good
            case.archive, case.sha256 = good_bytes, sha(good_bytes)
        good = make_bundle(made, {f"r0/good_{index}.py": f"CASE = {case.name!r}\n".encode()})
        case.good_archive, case.good_sha256 = good.path.read_bytes(), good.sha256
    return cases


def raw_spec(marker: Path, **changes: Any) -> str:
    """A task spec creating *marker*, with *changes* applied, as the executor receives it."""
    document = json.loads(TaskSpec(job_id=1, command=f"touch {marker}", python=PYTHON,
                                   toil=TOIL).to_json())
    document.update(changes)
    return base64.b64encode(json.dumps(document).encode()).decode()


def executor_info(executor_id: str, cache: Path, url: str, sha256: str) -> dict[str, Any]:
    return {
        "executor_id": {"value": executor_id},
        "type": "CUSTOM",
        "name": "toil-mesos executor",
        "command": {"shell": True, "value": executor_command(cache),
                    "uris": [{"value": url, "cache": True, "extract": False,
                              "executable": False, "output_file": f"{sha256}.tar.zst"}]},
    }


def task(task_id: str, agent_id: Any, executor: dict[str, Any], data: str) -> dict[str, Any]:
    return {
        "name": task_id, "task_id": {"value": task_id}, "agent_id": agent_id,
        "executor": executor, "data": data,
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.05}},
                      {"name": "mem", "type": "SCALAR", "scalar": {"value": 16}}],
    }


def marker_spec(marker: Path, sha256: str | None) -> str:
    spec = TaskSpec(job_id=1, command=f"touch {marker}", bundle_sha256=sha256, python=PYTHON,
                    toil=TOIL)
    return base64.b64encode(spec.to_json()).decode()


@dataclass
class Results:
    cases: dict[str, Case]
    markers: Path
    cache: Path
    small_cache: Path
    leftovers: list[str]


def launch_all(driver: SchedulerDriver, recorder: Recorder, tasks: list[dict[str, Any]]) -> None:
    offer = recorder.offers.get(timeout=WAIT)
    for item in tasks:
        item["agent_id"] = offer["agent_id"]
    driver.launchTasks([offer["id"]], tasks, {"refuse_seconds": 0.0})


def wait_terminal(recorder: Recorder, task_id: str) -> dict[str, Any]:
    terminal = ("TASK_FINISHED", "TASK_FAILED", "TASK_ERROR", "TASK_KILLED", "TASK_LOST")
    _, update = recorder.wait_for(
        lambda name, value: name == "update" and value["task_id"]["value"] == task_id
        and value["state"] in terminal, timeout=WAIT)
    return dict(update)


@pytest.fixture(scope="module")
def results(tally) -> Iterator[Results]:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a small tmpfs for the bundle cache needs root and mount")
    with cluster_work_dir("toil-mesos-executor-faults-") as work:
        cache, small_cache, markers = work / "cache", work / "small-cache", work / "markers"
        for path in (cache, small_cache, markers):
            path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_CACHE},mode=0755", "tmpfs",
                        str(small_cache)], check=True, timeout=30)
        try:
            found, record = run_cases(work, cache, small_cache, markers)
            tally.bad_input(len(found.cases))
            # Half-staged bundles on the tmpfs, looked for before it goes away.
            found.leftovers += [f"staging temp {p}" for p in (small_cache / ".tmp").glob("*")]
        finally:
            subprocess.run(["umount", str(small_cache)], check=True, timeout=30)
        found.leftovers += leftovers(record, work, cache)
        yield found


def run_cases(work: Path, cache: Path, small_cache: Path,
              markers: Path) -> tuple[Results, ClusterRecord]:
    cases = build_cases(work, cache, small_cache)
    assert [c.name for c in cases] == CASE_NAMES
    server = FileServer()
    try:
        # The tmpfs is mounted before the agent starts: an agent's mount namespace is a copy.
        with MiniCluster(work / "cluster", agents=1) as mini:
            recorder = Recorder()
            framework = {"user": "root", "name": "executor-faults", "roles": ["*"],
                         "failover_timeout": 60.0,
                         "capabilities": [{"type": "MULTI_ROLE"}, {"type": "TASK_KILLING_STATE"}]}
            driver = SchedulerDriver(recorder, framework, mini.master)
            driver.start()
            try:
                recorder.wait_for(lambda name, _: name == "registered")
                run_phase(driver, recorder, server, cases, markers, good=False)
                run_phase(driver, recorder, server, cases, markers, good=True)
                for case in cases:
                    for which, sha256 in (("bad", case.sha256), ("good", case.good_sha256)):
                        case.staged[which] = (case.cache / f"{sha256}" / ".roots.json").is_file()
                    # Looked at now: the small cache is a tmpfs that is gone by the assertions.
                    case.present_after_bad = (case.cache / f"{case.sha256}").exists()
            finally:
                driver.stop(failover=False)
                driver.join(timeout=30)
            record = mini.record
    finally:
        server.close()
    return Results({c.name: c for c in cases}, markers, cache, small_cache, []), record


def run_phase(driver: SchedulerDriver, recorder: Recorder, server: FileServer, cases: list[Case],
              markers: Path, *, good: bool) -> None:
    tasks = []
    shared: dict[Path, dict[str, Any]] = {}
    for index, case in enumerate(cases):
        task_id = f"{'good' if good else 'bad'}-{index}"
        marker = markers / task_id
        archive, sha256 = ((case.good_archive, case.good_sha256) if good
                           else (case.archive, case.sha256))
        assert archive is not None and sha256 is not None
        if good or case.data is None:
            url = server.url(f"{task_id}/{sha256}.tar.zst", archive)
            executor = executor_info(f"executor-{task_id}", case.cache, url, sha256)
            data = marker_spec(marker, sha256)
        else:  # bad task data: all such tasks on one executor, with a good bundle
            if case.cache not in shared:
                url = server.url(f"shared/{sha256}.tar.zst", archive)
                shared[case.cache] = executor_info("executor-shared", case.cache, url, sha256)
            executor = shared[case.cache]
            data = case.data(marker)
        tasks.append(task(task_id, None, executor, data))
    launch_all(driver, recorder, tasks)
    for index, case in enumerate(cases):
        task_id = f"{'good' if good else 'bad'}-{index}"
        case.updates[task_id.split("-")[0]] = wait_terminal(recorder, task_id)


CASE_NAMES = [
    "hash mismatch", "not an archive", "path escape", "absolute path", "symlink escape",
    "hardlink escape", "device node", "bigger than the disk", "fills the disk while staging",
    "task data not base64",
    "task data a pickle", "task spec with a path for a hash", "task spec from the future",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_a_bad_task_fails_naming_the_problem_and_runs_nothing(results: Results, name: str):
    case = results.cases[name]
    index = CASE_NAMES.index(name)
    bad = case.updates["bad"]
    assert bad["state"] in ("TASK_FAILED", "TASK_ERROR"), bad
    assert case.problem in bad.get("message", ""), bad.get("message")
    assert not (results.markers / f"bad-{index}").exists(), "the bad task's command ran"
    if case.data is None:  # nothing of a refused bundle is left in the cache
        assert case.sha256 is not None and not case.staged["bad"]
        assert not case.present_after_bad


@pytest.mark.parametrize("name", CASE_NAMES)
def test_the_bundle_cache_stays_usable_after_a_bad_task(results: Results, name: str):
    case = results.cases[name]
    index = CASE_NAMES.index(name)
    good = case.updates["good"]
    assert good["state"] == "TASK_FINISHED", good
    assert (results.markers / f"good-{index}").exists()
    assert case.staged["good"]  # a new bundle, staged into the same cache


def test_nothing_is_left_half_staged_and_the_cluster_left_nothing(results: Results, tally):
    tally.leftovers_found(len(results.leftovers))
    assert not results.leftovers, results.leftovers
