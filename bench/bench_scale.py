"""Scale: many jobs on many agents through Toil's batch-system interface, on a simulated master.

For each size (jobs x agents of 16 cores) a simulated master (``bench/sim_master.py``, its own
process, speaking the v1 scheduler HTTP API on loopback) offers every agent's free resources every
second and finishes each task after ``--task-seconds``. The real ``SchedulerDriver`` and
``MesosBatchSystem`` run in this process, driven as Toil's leader drives them: ``issueBatchJob``
for every job, then ``getUpdatedBatchJob`` until each job is back. Printed per size: issue rate,
offer-round answer time as the master saw it (p50/p99/max) and placement time in the callback,
launch rate, time from the last issue to all finished, leader CPU seconds and peak RSS per 1,000
jobs, memory per queued job, jobs lost or reported twice, update resends, and how long
``shutdown()`` took. Then, in process, one offer round of 1,000 offers against queues of 1,000 and
100,000 jobs, side by side. Targets are printed, never asserted.

    python bench/bench_scale.py [--quick] [--sizes 1000x10,10000x100] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from uuid import uuid4

from toil.common import Config
from toil.job import JobDescription

from toil_mesos.scheduler.batch_system import MesosBatchSystem

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024
GIB = 1024 * MIB
FULL_SIZES = [(1_000, 10), (10_000, 100), (100_000, 1_000)]
QUICK_SIZES = [(1_000, 10), (10_000, 100)]
TARGET_ROUND_P99 = 0.050  # seconds, with 1,000 offers
TARGET_RATIO = 1.5
TARGET_ISSUE_RATE = 20_000.0
TARGET_BYTES_PER_QUEUED = 2048


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def config(endpoint: str) -> Config:
    cfg = Config()
    cfg.workflowID = str(uuid4())
    cfg.cleanWorkDir = "never"
    cfg.disableAutoDeployment = True
    cfg.mesos_endpoint = endpoint
    return cfg


def job_desc() -> JobDescription:
    return JobDescription(jobName="bench", unitName=None, requirements={
        "cores": 1, "memory": GIB, "disk": MIB, "accelerators": [], "preemptible": False})


class SimMasterProcess:
    """The simulated master in a child process (stopped by its pid in close())."""

    def __init__(self, agents: int, task_seconds: float, work: Path) -> None:
        port_file = work / f"master-{agents}.port"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "sim_master.py"), "--agents", str(agents),
             "--task-seconds", str(task_seconds), "--port-file", str(port_file)])
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise SystemExit("the simulated master did not start")
            time.sleep(0.05)
        self.endpoint = f"127.0.0.1:{port_file.read_text().strip()}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.endpoint}/stats", timeout=30) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def run_size(jobs: int, agents: int, task_seconds: float, work: Path,
             timeout: float) -> dict[str, Any]:
    master = SimMasterProcess(agents, task_seconds, work)
    try:
        return drive(master, jobs, agents, timeout)
    finally:
        master.close()


def time_offer_rounds(system: MesosBatchSystem) -> tuple[list[tuple[int, float]], list[int]]:
    """Time each offer callback (offers, seconds) and count the tasks it launched."""
    placements: list[tuple[int, float]] = []
    launches: list[int] = []
    callbacks = system._callbacks
    timed = callbacks.resourceOffers
    tasks = system._table.tasks

    def resource_offers(driver: Any, offers: list[Any]) -> None:
        before = len(tasks)  # updates come on this same thread: nothing else launches
        started = time.perf_counter()
        timed(driver, offers)
        placements.append((len(offers), time.perf_counter() - started))
        launches.append(len(tasks) - before)

    callbacks.resourceOffers = resource_offers  # type: ignore[method-assign]
    return placements, launches


def drive(master: SimMasterProcess, jobs: int, agents: int, timeout: float) -> dict[str, Any]:
    system = MesosBatchSystem(config(master.endpoint), maxCores=16, maxMemory=64 * GIB,
                              maxDisk=100 * GIB)
    placements, launches = time_offer_rounds(system)
    desc = job_desc()
    commands = [f"_toil_worker bench file:/var/tmp/bench-job-store kind-bench/instance-{i:08d} "
                f"--context gAR9lC4=" for i in range(jobs)]
    cpu0, rss0 = cpu_seconds(), rss_bytes()
    started = time.perf_counter()
    for command in commands:
        system.issueBatchJob(command, desc)
    issued_at = time.perf_counter()
    rss_issued = rss_bytes()
    with system._table.lock:
        queued_after_issue = len(system._table.queue)
    seen: set[int] = set()
    twice = 0
    failed = 0
    deadline = time.monotonic() + timeout
    while len(seen) < jobs and time.monotonic() < deadline:
        update = system.getUpdatedBatchJob(1)
        if update is None:
            continue
        if update.jobID in seen:
            twice += 1
        seen.add(update.jobID)
        failed += update.exitStatus != 0
    finished_at = time.perf_counter()
    cpu = cpu_seconds() - cpu0
    peak = peak_rss_bytes()
    stats = master.stats()
    shutdown_started = time.perf_counter()
    system.shutdown()
    shutdown_s = time.perf_counter() - shutdown_started
    time.sleep(0.2)
    torn_down = master.stats()["teardown_at"] is not None
    rounds = stats["rounds"]
    big_rounds = [d for n, d in placements if n >= max(1, agents // 2)]
    launch_span = (stats["last_launch"] or 0) - (stats["first_launch"] or 0)
    issue_s = issued_at - started
    return {
        "jobs": jobs,
        "agents": agents,
        "issue_rate": jobs / issue_s if issue_s > 0 else float("inf"),
        "round_p50_s": pct(rounds, 0.50),
        "round_p99_s": pct(rounds, 0.99),
        "round_max_s": max(rounds) if rounds else float("nan"),
        "rounds": len(rounds),
        "placement_p99_s": pct([d for _, d in placements], 0.99),
        "placement_p99_large_rounds_s": pct(big_rounds, 0.99),
        "launch_rate": stats["launched"] / launch_span if launch_span > 0 else float("nan"),
        "launches_per_callback_second": sum(launches) / max(1e-9, sum(d for _, d in placements)),
        "last_issue_to_all_finished_s": finished_at - issued_at,
        "cpu_s": cpu,
        "cpu_s_per_1000": cpu / jobs * 1000,
        "peak_rss_mib": peak / MIB,
        "peak_rss_kib_per_1000": (peak - rss0) / 1024 / jobs * 1000,
        "bytes_per_queued_job": (rss_issued - rss0) / max(1, queued_after_issue),
        "queued_after_issue": queued_after_issue,
        "lost": jobs - len(seen),
        "reported_twice": twice,
        "failed": failed,
        "resends": stats["resends"],
        "updates": stats["updates"],
        "acks": stats["acks"],
        "declines": stats["declines"],
        "declined_offers": stats["declined_offers"],
        "accepts": stats["accepts"],
        "shutdown_s": shutdown_s,
        "torn_down": torn_down,
    }


class NullDriver:
    def launchTasks(self, offer_ids: Any, tasks: Any) -> None:
        pass

    def declineOffer(self, offer_ids: Any, filters: Any = None) -> None:
        pass

    def suppressOffers(self) -> None:
        pass


def placement_round(queue_length: int, offers: int, cpus: float = 16.0,
                    mem: float = 65536.0) -> float:
    """Seconds for one offer callback of *offers* offers of *cpus* and *mem* MiB each, with
    *queue_length* one-core jobs queued."""
    from toil_mesos.scheduler._agent_files import ExecutorDiagnostics
    from toil_mesos.scheduler._agent_health import AgentHealth
    from toil_mesos.scheduler._callbacks import DriverCallbacks
    from toil_mesos.scheduler._deployment import Deployer
    from toil_mesos.scheduler._job_table import Job, JobTable
    from toil_mesos.scheduler._matching import Capacity, JobRequest
    from toil_mesos.scheduler._tasks import TaskBuilder
    from toil_mesos.scheduler.options import MesosOptions

    table = JobTable()
    options = MesosOptions.from_config(config("127.0.0.1:5050"))
    deployer = Deployer(options, auto_deploy=False, bundle_dir=Path("/nonexistent"),
                        environment=None)
    deployer.deployment = None
    tasks = TaskBuilder(run_id="bench", executor_command=["toil-mesos", "executor"],
                        cleanup={}, appliance=None)
    diagnostics = ExecutorDiagnostics("toil-mesos executor")
    callbacks = DriverCallbacks(table, deployer, tasks, health=AgentHealth(),
                                diagnostics=diagnostics, framework_id="fw", endpoint="x",
                                on_registered=lambda _: None)
    if cpus < 1:  # memory-only offers come from busy agents, whose whole size is known
        for i in range(offers):
            table.on_agent[f"a{i}"] = {-1}
            table.agents[f"a{i}"] = Capacity(16_000, 65_536, 102_400, False)
        table.queue.set_agents(table.agents.values())
    for i in range(queue_length):
        job = Job(i, JobRequest(job_id=i, cores=1, memory=GIB, disk=MIB), f"cmd {i}", {}, "j")
        table.add(job)
        table.enqueue(job)
    batch = [{"id": {"value": f"o{i}"}, "agent_id": {"value": f"a{i}"}, "hostname": f"h{i}",
              "resources": [{"name": n, "type": "SCALAR", "scalar": {"value": v}}
                            for n, v in (("cpus", cpus), ("mem", mem), ("disk", 102400.0))]}
             for i in range(offers)]
    started = time.perf_counter()
    callbacks.resourceOffers(NullDriver(), batch)
    elapsed = time.perf_counter() - started
    diagnostics.close()
    return elapsed


def big_agent(tasks: int, work: Path) -> dict[str, Any]:
    """*tasks* trivial jobs on one agent of *tasks* cores, through the real executor: how far
    apart the tasks of one ACCEPT start running."""
    from toil_mesos.cluster.testing import MiniCluster

    executor = f"{Path(sys.executable).parent / 'toil-mesos'} executor"
    with MiniCluster(work / "big-agent", agents=1, cpus=float(tasks), mem=tasks * 256,
                     disk=tasks * 64) as cluster:
        cfg = config(cluster.master)
        cfg.mesos_executor = executor
        system = MesosBatchSystem(cfg, maxCores=tasks, maxMemory=tasks * 256 * MIB,
                                  maxDisk=tasks * 64 * MIB)
        _, launches = time_offer_rounds(system)
        rounds_done: list[float] = []
        timed = system._callbacks.resourceOffers

        def mark(driver: Any, offers: list[Any]) -> None:
            timed(driver, offers)
            rounds_done.append(time.monotonic())

        system._callbacks.resourceOffers = mark  # type: ignore[method-assign]
        desc = JobDescription(jobName="trivial", unitName=None, requirements={
            "cores": 1, "memory": 128 * MIB, "disk": MIB, "accelerators": [],
            "preemptible": False})
        try:
            ids = [system.issueBatchJob("true", desc) for _ in range(tasks)]
            started: dict[int, float] = {}
            deadline = time.monotonic() + 300
            while len(started) < tasks and time.monotonic() < deadline:
                with system._table.lock:
                    for job_id in ids:
                        job = system._table.jobs.get(job_id)
                        if job is not None and job.started is not None:
                            started[job_id] = job.started
                time.sleep(0.01)
            done = 0
            while done < tasks and time.monotonic() < deadline:
                done += system.getUpdatedBatchJob(1) is not None
        finally:
            system.shutdown()
    first_launch = rounds_done[next(i for i, n in enumerate(launches) if n)] if launches \
        else float("nan")
    running = sorted(started.values())
    return {
        "tasks": tasks,
        "launched_in_rounds": [n for n in launches if n],
        "running": len(running),
        "launch_to_first_running_s": running[0] - first_launch if running else float("nan"),
        "launch_to_last_running_s": running[-1] - first_launch if running else float("nan"),
        "running_spread_s": running[-1] - running[0] if running else float("nan"),
    }


def print_size(r: dict[str, Any]) -> None:
    print(f"\n{r['jobs']:,} jobs x {r['agents']:,} agents")
    print(f"  issue rate            {r['issue_rate']:>12,.0f} jobs/s")
    print(f"  offer rounds ({r['rounds']:>4})    p50 {r['round_p50_s'] * 1000:8.1f} ms   "
          f"p99 {r['round_p99_s'] * 1000:8.1f} ms   max {r['round_max_s'] * 1000:8.1f} ms "
          "(as the master saw them)")
    print(f"  placement callback    p99 {r['placement_p99_s'] * 1000:8.1f} ms   "
          f"p99 of rounds with >= half the agents {r['placement_p99_large_rounds_s'] * 1000:.1f}"
          " ms")
    print(f"  launch rate           {r['launch_rate']:>12,.0f} tasks/s over the run (slots and "
          f"task time bound it); {r['launches_per_callback_second']:,.0f} tasks per second of "
          "offer callback")
    print(f"  last issue -> all done{r['last_issue_to_all_finished_s']:>12.1f} s")
    print(f"  leader CPU            {r['cpu_s']:>12.1f} s   ({r['cpu_s_per_1000']:.2f} s per "
          "1,000 jobs)")
    print(f"  leader peak RSS       {r['peak_rss_mib']:>12.0f} MiB "
          f"({r['peak_rss_kib_per_1000']:.0f} KiB per 1,000 jobs over the start); "
          f"{r['bytes_per_queued_job']:.0f} B per queued "
          f"job ({r['queued_after_issue']:,} queued after issuing)")
    print(f"  jobs lost {r['lost']}, reported twice {r['reported_twice']}, failed "
          f"{r['failed']}; updates {r['updates']:,}, acks {r['acks']:,}, resends "
          f"{r['resends']:,}; ACCEPTs {r['accepts']:,}, DECLINEs {r['declines']:,} naming "
          f"{r['declined_offers']:,} offers")
    print(f"  shutdown()            {r['shutdown_s']:>12.2f} s   TEARDOWN seen by the master: "
          f"{r['torn_down']}")


def verdict(ok: bool) -> str:
    return "MET   " if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="up to 10,000 jobs")
    parser.add_argument("--sizes", help="e.g. 1000x10,10000x100")
    parser.add_argument("--task-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="per size")
    parser.add_argument("--big-agent", type=int, default=64, metavar="TASKS",
                        help="tasks on one agent through the real executor (0: skip)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.sizes:
        sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    else:
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
    results: dict[str, Any] = {"task_seconds": args.task_seconds, "sizes": []}
    print(f"simulated master: 16-core agents offering every 1 s, tasks of {args.task_seconds} s; "
          f"leader: this process (pid {os.getpid()})")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for jobs, agents in sizes:
            result = run_size(jobs, agents, args.task_seconds, Path(tmp), args.timeout)
            print_size(result)
            results["sizes"].append(result)
        if args.big_agent:
            base = Path(os.environ.get("TOIL_MESOS_CLUSTER_TMPDIR", "/var/tmp"))
            with tempfile.TemporaryDirectory(prefix="bench-scale-agent-", dir=base) as cwork:
                big = big_agent(args.big_agent, Path(cwork))
            results["big_agent"] = big
            print(f"\none agent of {big['tasks']} cores, {big['tasks']} trivial tasks through the "
                  f"executor (launched in rounds of {big['launched_in_rounds']}):")
            print(f"  launch -> first TASK_RUNNING {big['launch_to_first_running_s'] * 1000:.0f} "
                  f"ms, -> last {big['launch_to_last_running_s'] * 1000:.0f} ms; spread of "
                  f"TASK_RUNNING {big['running_spread_s'] * 1000:.0f} ms ({big['running']} "
                  "running)")
    in_process = {}
    print("\none offer round of 1,000 offers, in process (no network), queue of 1,000 against "
          "100,000 one-core jobs:")
    for label, cpus, mem in (("one free core each (1,000 launches)", 1.0, 4096.0),
                             ("memory only (no launch)", 0.0, 32768.0),
                             ("16 free cores each (up to 16,000 launches)", 16.0, 65536.0)):
        small = min(placement_round(1_000, 1_000, cpus, mem) for _ in range(3))
        large = min(placement_round(100_000, 1_000, cpus, mem) for _ in range(3))
        in_process[label] = {"queue_1000_s": small, "queue_100000_s": large,
                             "ratio": large / small}
        print(f"  {label:<44} {small * 1000:8.1f} ms   {large * 1000:8.1f} ms   "
              f"ratio {large / small:.2f}")
    results["placement_1000_offers"] = in_process
    same_work = in_process["one free core each (1,000 launches)"]["ratio"]
    first, last = results["sizes"][0], results["sizes"][-1]
    ratio = last["round_p99_s"] / first["round_p99_s"]
    results["round_p99_ratio_largest_to_smallest"] = ratio
    print(f"\noffer-round p99, {last['jobs']:,} jobs to {first['jobs']:,} jobs: {ratio:.2f}")
    print("\ntargets (printed, not asserted):")
    thousand = [r for r in results["sizes"] if r["agents"] >= 1000]
    if thousand:
        p99 = thousand[0]["round_p99_s"]
        print(f"  {verdict(p99 < TARGET_ROUND_P99)} offer-round p99 < 50 ms with 1,000 offers "
              f"({p99 * 1000:.1f} ms)")
    print(f"  {verdict(ratio <= TARGET_RATIO)} round p99 ratio largest/smallest <= 1.5 "
          f"({ratio:.2f}); in process, same launches, 100,000 vs 1,000 queued: {same_work:.2f}")
    hundred_k = [r for r in results["sizes"] if r["jobs"] >= 100_000]
    if hundred_k:
        rate = hundred_k[0]["issue_rate"]
        print(f"  {verdict(rate >= TARGET_ISSUE_RATE)} 100,000 jobs issued at >= 20,000 "
              f"jobs/s ({rate:,.0f})")
    worst = max(r["bytes_per_queued_job"] for r in results["sizes"])
    print(f"  {verdict(worst <= TARGET_BYTES_PER_QUEUED)} <= 2 KiB per queued job "
          f"(worst {worst:.0f} B)")
    bad = sum(r["lost"] + r["reported_twice"] for r in results["sizes"])
    print(f"  {verdict(bad == 0)} no job lost or reported twice ({bad})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
