"""The leader SIGKILLed mid-workflow, then rerun with ``--restart``.

A SIGKILLed leader leaves its framework on the master with its tasks running. The rerun must end
those tasks and tear the old framework down before it issues a job (else a job would run twice
at once), serve the bundle again (the same content hash when the code is unchanged, a new one
when it changed between the runs) and finish the workflow. Jobs record every attempt and hold a
lock while they run (:mod:`fault_helpers`), so an overlap cannot go unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fault_helpers import (
    Records,
    check_outputs,
    count_starts,
    finish,
    leftovers,
    master_state,
    start_leader,
    wait_until,
    write_workflow,
)

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir, leader_venv

pytestmark = pytest.mark.integration

JOBS = 6
SECONDS = 10
REGISTERED = re.compile(r"registered with the Mesos master at \S+ as framework (\S+)")
BUNDLE = re.compile(r"shipping the workflow's code to the agents: bundle ([0-9a-f]{12})")
TORN_DOWN = "ended the tasks of framework {} of the previous run; tearing it down"


@dataclass
class Site:
    mini: MiniCluster
    work: Path
    python: Path


@pytest.fixture(scope="module")
def site(tally) -> Iterator[Site]:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("hiding the leader's files from agents needs root and unshare")
    with cluster_work_dir("toil-mesos-leader-faults-") as work:
        leader = work / "leader"
        leader.mkdir()
        python = leader_venv(leader / "venv")
        with MiniCluster(work / "cluster", agents=2, hide=[leader]) as mini:
            yield Site(mini, work, python)
            record = mini.record
        found = leftovers(record, work, work / "visible")
        tally.leftovers_found(len(found))
        assert not found, found
    assert not work.exists()


def staged_bundles(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir() if len(p.name) == 64} if cache.exists() else set()


@pytest.mark.parametrize("code_change", [False, True], ids=["same-code", "changed-code"])
def test_a_killed_leader_is_restarted_without_running_a_job_twice(site: Site, code_change,
                                                                  tally):
    name = "changed" if code_change else "same"
    mini = site.mini
    project = site.work / "leader" / name
    visible = site.work / "visible" / name
    records, cache = visible / "records", visible / "bundle-cache"
    records.mkdir(parents=True)
    script = write_workflow(project, version="v1")
    args = ("--jobs", str(JOBS), "--seconds", str(SECONDS), "--cores", "0.5",
            "--retryCount", "2", "--mesosName", f"restart-{name}")
    store = visible / "jobstore"

    first_log = visible / "first.log"
    first = start_leader(site.python, script, mini, store, records, first_log, *args)
    try:
        assert wait_until(lambda: count_starts(records) >= JOBS or first.poll() is not None,
                          timeout=180), first_log.read_text()[-3000:]
        framework = REGISTERED.search(first_log.read_text())
        assert framework is not None and first.poll() is None, first_log.read_text()[-3000:]
        old_id = framework[1]
        first.kill()  # SIGKILL: no teardown, no cleanup
        first.wait(timeout=30)
        tally.fault()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    old_bundle = BUNDLE.search(first_log.read_text())
    assert old_bundle is not None
    old_staged = staged_bundles(cache)

    # The dead leader's framework lingers with its tasks running: the rerun has work to do.
    def old_tasks_running() -> bool:
        frameworks = {f["id"]: f for f in master_state(mini)["frameworks"]}
        return old_id in frameworks and any(
            t["state"] == "TASK_RUNNING" for t in frameworks[old_id]["tasks"])

    assert wait_until(old_tasks_running, timeout=5)

    if code_change:
        write_workflow(project, version="v2")
    second_log = visible / "second.log"
    second = start_leader(site.python, script, mini, store, records, second_log, *args,
                          "--restart")
    code = finish(second, timeout=240)
    output = second_log.read_text()
    assert code == 0, output[-6000:]

    # The old framework was torn down before the rerun issued any job, and is gone.
    torn = output.find(TORN_DOWN.format(old_id))
    assert torn >= 0, output[-6000:]
    issued = output.find("Issued job")
    assert issued == -1 or torn < issued, output[-6000:]
    state = master_state(mini)
    assert old_id not in {f["id"] for f in state["frameworks"]}
    assert old_id in {f["id"] for f in state.get("completed_frameworks", [])}

    # The bundle was served again: same content hash for the same code, a new one otherwise.
    new_bundle = BUNDLE.search(output)
    assert new_bundle is not None, output[-3000:]
    new_staged = staged_bundles(cache)
    if code_change:
        assert new_bundle[1] != old_bundle[1]
        assert len(new_staged - old_staged) == 1, (old_staged, new_staged)
    else:
        assert new_bundle[1] == old_bundle[1]
        assert new_staged == old_staged

    # The workflow finished: every job ran to the end, none twice at once.
    version = "v2" if code_change else "v1"
    expected = [f"{version}:{i * i}" for i in range(JOBS)]
    assert f"RESULT {expected}".replace("'", '"') in output, output[-3000:]
    lost = check_outputs(records, JOBS, version)
    tally.jobs(checked=JOBS, lost=len(lost))
    assert not lost, lost
    result = Records.read(records)
    assert not result.overlaps(), result.overlaps()
    assert result.reissued() >= 1  # the jobs the first leader left running ran again
    assert wait_until(lambda: not master_state(mini)["frameworks"], timeout=30)
