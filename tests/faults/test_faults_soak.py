"""Soak under faults: a 300-job workflow survives a seeded random schedule of cluster faults.

Three agents in their own mount and network namespaces (the leader's files hidden from them)
run a fan-out of tiny jobs while the test, on a fixed seed, SIGKILLs executors, kills and
restarts agents, SIGSTOPs and SIGCONTs agents, cuts agents off the network and heals them, and
SIGKILLs the leading one of three masters (elected through ZooKeeper; the killed one comes back
as a standby), one fault at a time. The workflow must complete with every job's output right,
no two attempts of a job may have run at once (see :mod:`fault_helpers`), and once the cluster
is down nothing it or the workflow made may be left. An agent restarted with recovery
while it runs jobs must not have any of them run again: their executors outlive the
agent (checkpointing).
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from fault_helpers import (
    Records,
    agent_executor_pids,
    check_outputs,
    count_starts,
    finish,
    leftovers,
    master_state,
    running_on,
    set_link,
    signal_pid,
    start_leader,
    wait_until,
    write_workflow,
)

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir, leader_venv

pytestmark = pytest.mark.integration

logger = logging.getLogger(__name__)

SEED = 9_2026
JOBS = 300
AGENTS = 3
KINDS = ("kill-executor", "kill-restart-agent", "stop-cont-agent", "cut-network",
         "kill-leading-master", "restart-agent-with-recovery")
#: Each kind this many times, in a seeded order.
ROUNDS = 3
LEADER_TIMEOUT = 200.0
#: The batch system's line for each task that did not finish (failed, lost, killed).
TASK_ENDED = re.compile(r"job \d+ \(\w+\) ended as TASK_\w+")


class Injector:
    """One fault at a time on the cluster, each undone before the next (also on failure)."""

    def __init__(self, mini: MiniCluster, rng: random.Random, records: Path) -> None:
        self.mini = mini
        self.rng = rng
        self.records = records
        self.done: Counter[str] = Counter()
        self.log: list[str] = []
        #: Jobs that were running on an agent restarted with recovery: each must run once.
        self.recovered: set[int] = set()

    def inject(self, kind: str, agent: int) -> None:
        action: dict[str, Callable[[int], str | None]] = {
            "kill-executor": self._kill_executor,
            "kill-restart-agent": self._kill_restart_agent,
            "stop-cont-agent": self._stop_cont_agent,
            "cut-network": self._cut_network,
            "kill-leading-master": self._kill_leading_master,
            "restart-agent-with-recovery": self._restart_agent_with_recovery,
        }
        what = action[kind](agent)
        if what is not None:
            self.done[kind] += 1
            self.log.append(what)
            logger.info("fault: %s", what)

    def _kill_executor(self, agent: int) -> str | None:
        # The chosen agent may run no executor right now; then the next one that does.
        order = [(agent + k) % AGENTS for k in range(AGENTS)]
        found: list[tuple[int, list[int]]] = []

        def any_executor() -> bool:
            found[:] = [(i, agent_executor_pids(self.mini, i)) for i in order]
            return any(pids for _, pids in found)

        if not wait_until(any_executor, timeout=20):
            return None
        index, pids = next((i, p) for i, p in found if p)
        killed = [pid for pid in pids if signal_pid(pid, signal.SIGKILL)]
        return f"SIGKILL executor pids {killed} on agent {index}" if killed else None

    def _kill_restart_agent(self, agent: int) -> str:
        old = self.mini.agents[agent].pid
        self.mini.kill_agent(agent)
        down = self.rng.uniform(0.5, 2.0)
        time.sleep(down)  # the schedule's own pause, not synchronisation
        self.mini.restart_agent(agent)
        return (f"SIGKILL agent {agent} (pid {old}), restarted after {down:.1f} s "
                f"(pid {self.mini.agents[agent].pid})")

    def _kill_leading_master(self, agent: int) -> str | None:
        old = self.mini.leader()
        if old is None:
            return None
        self.mini.kill_master(old)
        # Restarted only once another leads: until its ZooKeeper session expires, the killed
        # master's election member still names its address.
        new: list[str | None] = [None]

        def taken_over() -> bool:
            new[0] = self.mini.leader()
            return new[0] not in (None, old)

        assert wait_until(taken_over, timeout=60), f"no master took over from {old}"
        self.mini.restart_master(old)
        return f"SIGKILL the leading {old}; {new[0]} took over; {old} back as a standby"

    def _restart_agent_with_recovery(self, agent: int) -> str | None:
        # An agent running jobs right now (the chosen one, or the next that does): it is
        # SIGKILLed and restarted at once; its executors re-subscribe and its jobs go on.
        order = [(agent + k) % AGENTS for k in range(AGENTS)]
        busy: list[tuple[int, list[int]]] = []

        def any_running() -> bool:
            busy[:] = [(i, running_on(self.records, self.mini.agents[i].id)) for i in order]
            return any(jobs for _, jobs in busy)

        if not wait_until(any_running, timeout=20):
            return None
        index, jobs = next((i, j) for i, j in busy if j)
        self.mini.kill_agent(index)
        self.mini.restart_agent(index)
        self.recovered.update(jobs)
        return f"SIGKILL agent {index} running jobs {jobs}, restarted with recovery"

    def _stop_cont_agent(self, agent: int) -> str:
        pid = self.mini.agents[agent].pid
        pause = self.rng.uniform(2.0, 4.0)
        signal_pid(pid, signal.SIGSTOP)
        try:
            time.sleep(pause)
        finally:
            signal_pid(pid, signal.SIGCONT)
        return f"SIGSTOP agent {agent} (pid {pid}) for {pause:.1f} s"

    def _cut_network(self, agent: int) -> str:
        pause = self.rng.uniform(2.0, 4.0)
        set_link(self.mini, agent, "down")
        try:
            time.sleep(pause)
        finally:
            set_link(self.mini, agent, "up")
        return f"cut agent {agent} off the network for {pause:.1f} s"


@pytest.fixture
def soak_dir():
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("isolated agents need root, unshare and iproute2")
    with cluster_work_dir("toil-mesos-soak-") as work:
        yield work
    assert not work.exists()


def test_a_300_job_workflow_survives_a_random_schedule_of_faults(soak_dir: Path, capsys, tally):
    work = soak_dir
    leader, visible = work / "leader", work / "visible"
    records, bundle_cache = visible / "records", visible / "bundle-cache"
    for path in (leader, records, bundle_cache):
        path.mkdir(parents=True)
    script = write_workflow(leader / "project")
    python = leader_venv(leader / "venv")
    rng = random.Random(SEED)
    plan = [kind for kind in KINDS for _ in range(ROUNDS)]
    rng.shuffle(plan)
    logger.info("fault schedule (seed %d): %s", SEED, plan)

    with MiniCluster(work / "cluster", agents=AGENTS, hide=[leader], netns=True,
                     masters=3, zk=True, zk_session_timeout=2.0) as mini:
        injector = Injector(mini, rng, records)
        log = visible / "leader.log"
        process = start_leader(python, script, mini, visible / "jobstore", records, log,
                               "--jobs", str(JOBS), "--seconds", "1", "--cores", "0.2",
                               "--retryCount", "10")
        started = time.monotonic()
        try:
            assert wait_until(lambda: count_starts(records) >= 10 or process.poll() is not None,
                              timeout=120), "no job started"
            for kind in plan:
                if process.poll() is not None:
                    break
                time.sleep(rng.uniform(1.0, 3.0))  # the schedule's pause between faults
                injector.inject(kind, rng.randrange(AGENTS))
            code = finish(process, timeout=max(10.0, LEADER_TIMEOUT - (time.monotonic() - started)))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        output = log.read_text()
        assert code == 0, output[-6000:]
        assert wait_until(lambda: not master_state(mini)["frameworks"], timeout=30)
        record = mini.record
    found = leftovers(record, work, bundle_cache)

    result = Records.read(records)
    lost = check_outputs(records, JOBS)
    overlaps = result.overlaps()
    reissued = result.reissued()
    rerun = sorted(i for i in injector.recovered if len(result.attempts[i]) > 1)
    task_failures = len(TASK_ENDED.findall(output))
    tally.fault(sum(injector.done.values()))
    tally.jobs(checked=JOBS, lost=len(lost))
    tally.leftovers_found(len(found))
    with capsys.disabled():
        print(f"\nsoak (seed {SEED}): faults injected: {sum(injector.done.values())} "
              f"({', '.join(f'{k} {v}' for k, v in sorted(injector.done.items()))}); "
              f"jobs reissued: {reissued} (tasks failed or lost: {task_failures}); "
              f"jobs lost: {len(lost)}; jobs running across agent recoveries: "
              f"{len(injector.recovered)}, run again: {len(rerun)}; "
              f"leftovers: {len(found)}; {time.monotonic() - started:.0f} s")
        for line in injector.log:
            print(f"  fault: {line}")
    assert 'RESULT ["v1:0", "v1:1"' in output, output[-3000:]
    assert not lost, lost[:20]
    assert not overlaps, overlaps
    assert injector.recovered and not rerun, (rerun, injector.log)
    assert set(injector.done) == set(KINDS), injector.log
    assert not found, found
