"""Launch latency and throughput: N trivial jobs on Mesos against single_machine, same cores.

The same fan-out workflow (``bench/workflows/fanout.py``) runs twice in one go: with
``--batchSystem=single_machine --maxCores 2``, and with ``--batchSystem=mesos`` on a local
2-agent mini-cluster whose agents offer 1 core each. Both leaders run from a leader venv like
the seed's, so the Mesos side ships the workflow's code as users' runs do. Reported: each side's
wall time, their ratio (target: Mesos within 1.5x), and the issue-to-running latency percentiles
the Mesos batch system logs from its own timestamps.

    python bench/bench_launch.py [--quick] [--jobs N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toil_mesos.cluster.testing import MiniCluster, leader_venv

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 1.5
LATENCY = re.compile(r"(\d+) jobs started on Mesos; issue-to-running latency: median "
                     r"([0-9.]+) s, p95 ([0-9.]+) s, max ([0-9.]+) s")


def run(python: Path, job_store: Path, jobs: int, *options: str) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TOIL"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # _toil_worker
    started = time.perf_counter()
    proc = subprocess.run(
        [str(python), str(HERE / "workflows" / "fanout.py"), str(job_store), "--jobs",
         str(jobs), "--logLevel", "INFO", *options],
        env=env, capture_output=True, text=True, timeout=3600, check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the workflow failed:\n{proc.stderr[-3000:]}")
    return elapsed, proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="40 jobs instead of 200")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    jobs = args.jobs or (40 if args.quick else 200)
    base = Path(os.environ.get("TOIL_MESOS_CLUSTER_TMPDIR", "/var/tmp"))
    with tempfile.TemporaryDirectory(prefix="bench-launch-", dir=base) as tmp:
        work = Path(tmp)
        python = leader_venv(work / "venv")
        single, _ = run(python, work / "js-single", jobs, "--batchSystem", "single_machine",
                        "--maxCores", "2")
        with MiniCluster(work / "cluster", agents=2, cpus=1) as mini:
            executor = f"{Path(sys.executable).parent / 'toil-mesos'} executor"
            mesos, log = run(python, work / "js-mesos", jobs, "--batchSystem", "mesos",
                             "--mesosEndpoint", mini.master, "--mesosExecutor", executor)
    latency = LATENCY.search(log)
    results = {
        "jobs": jobs + 1,
        "single_machine_s": single,
        "mesos_s": mesos,
        "ratio": mesos / single,
        "latency": None if latency is None else {
            "jobs": int(latency[1]), "median_s": float(latency[2]),
            "p95_s": float(latency[3]), "max_s": float(latency[4])},
    }
    print(f"{jobs + 1} trivial jobs, 2 cores on each side")
    print(f"{'batch system':<16}{'wall':>10}")
    print(f"{'single_machine':<16}{single:>9.1f}s")
    print(f"{'mesos':<16}{mesos:>9.1f}s   ratio {mesos / single:.2f}x")
    if results["latency"]:
        lat = results["latency"]
        print(f"issue-to-running on mesos: median {lat['median_s'] * 1000:.0f} ms, "
              f"p95 {lat['p95_s'] * 1000:.0f} ms, max {lat['max_s'] * 1000:.0f} ms")
    verdict = "MET" if results["ratio"] <= TARGET_RATIO else "MISSED"
    print(f"{verdict} mesos within {TARGET_RATIO}x of single_machine")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
