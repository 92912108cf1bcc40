"""An agent SIGKILLed and restarted while its jobs run, on isolated agents.

With checkpointing (the default), the executor keeps running while its agent is away,
re-subscribes with the restarted agent, and each job finishes once: one attempt, which ended
after the restart. With ``--no-mesosCheckpoint`` (the twin that shows the test can fail), the
executor ends with its agent, the master reports the tasks lost, and Toil runs the jobs again.
Jobs record every attempt and hold a lock while they run (:mod:`fault_helpers`), so a second
attempt, or two at once, cannot go unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import time
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

JOBS = 2
SECONDS = 15
LOST = re.compile(r"job \d+ \(\w+\) ended as TASK_LOST")


@dataclass
class Site:
    mini: MiniCluster
    work: Path
    python: Path


@pytest.fixture(scope="module")
def site(tally) -> Iterator[Site]:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("isolated agents need root, unshare and iproute2")
    with cluster_work_dir("toil-mesos-agent-recovery-") as work:
        leader = work / "leader"
        leader.mkdir()
        python = leader_venv(leader / "venv")
        with MiniCluster(work / "cluster", agents=1, hide=[leader], netns=True) as mini:
            yield Site(mini, work, python)
            record = mini.record
        found = leftovers(record, work, work / "visible")
        tally.leftovers_found(len(found))
        assert not found, found
    assert not work.exists()


@pytest.mark.parametrize("checkpoint", [True, False], ids=["checkpoint", "no-checkpoint"])
def test_jobs_run_once_across_an_agent_restart_only_with_checkpointing(
    site: Site, checkpoint: bool, tally
):
    name = "on" if checkpoint else "off"
    visible = site.work / "visible" / name
    records = visible / "records"
    records.mkdir(parents=True)
    script = write_workflow(site.work / "leader" / name)
    args = ["--jobs", str(JOBS), "--seconds", str(SECONDS), "--cores", "0.5",
            "--retryCount", "2", "--mesosName", f"recovery-{name}"]
    if not checkpoint:
        args.append("--no-mesosCheckpoint")
    log = visible / "leader.log"
    process = start_leader(site.python, script, site.mini, visible / "jobstore", records, log,
                           *args)
    try:
        assert wait_until(lambda: count_starts(records) >= JOBS or process.poll() is not None,
                          timeout=180), log.read_text()[-3000:]
        assert process.poll() is None, log.read_text()[-3000:]
        site.mini.kill_agent(0)
        site.mini.restart_agent(0)
        restarted = time.time()
        tally.fault()
        code = finish(process, timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    output = log.read_text()
    assert code == 0, output[-6000:]
    expected = [f"v1:{i * i}" for i in range(JOBS)]
    assert f"RESULT {expected}".replace("'", '"') in output, output[-3000:]
    lost = check_outputs(records, JOBS)
    tally.jobs(checked=JOBS, lost=len(lost))
    assert not lost, lost
    result = Records.read(records)
    assert not result.overlaps(), result.overlaps()
    attempts = [result.attempts[i] for i in range(JOBS)]
    if checkpoint:
        # Each job ran once: its one attempt was running when the agent died, and ended after
        # the agent came back; no task was reported lost.
        assert [len(a) for a in attempts] == [1] * JOBS, attempts
        assert all(a[0].end is not None and a[0].end > restarted for a in attempts), attempts
        assert not LOST.findall(output), output[-6000:]
        # The executor's re-subscription told the scheduler, which reconciled that agent.
        assert "recovered after a restart; reconciling its tasks" in output, output[-6000:]
    else:
        # The twin: the first attempts died with the agent's executor and ran again.
        assert [len(a) for a in attempts] == [2] * JOBS, attempts
        assert all(a[0].end is None for a in attempts), attempts
        assert len(LOST.findall(output)) == JOBS, output[-6000:]
    assert wait_until(lambda: not master_state(site.mini)["frameworks"], timeout=30)
