"""``toil-mesos cluster up`` with 3 agents, until all are registered, measured from the outside.

Each run times the whole command as a user runs it (interpreter start included), then tears the
cluster down. Target: under 5 s. Absolute times drift on shared machines; medians of several
runs are what to read.

    python bench/bench_cluster.py [--runs N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 5.0


def up_and_down(work: Path, extra: list[str]) -> float:
    cli = [sys.executable, "-m", "toil_mesos", "cluster"]
    started = time.perf_counter()
    up = subprocess.run([*cli, "up", "--work-dir", str(work), "--agents", "3", *extra],
                        capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.perf_counter() - started
    subprocess.run([*cli, "down", "--work-dir", str(work)], capture_output=True, timeout=120,
                   check=False)
    if up.returncode != 0:
        raise SystemExit(f"cluster up failed: {up.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    variants = {"3 agents": []}
    if os.geteuid() == 0 and shutil.which("ip"):
        variants["3 agents, --netns"] = ["--netns"]
    results = {}
    base = Path(os.environ.get("TOIL_MESOS_CLUSTER_TMPDIR", "/var/tmp"))
    for name, extra in variants.items():
        times = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="bench-cluster-", dir=base) as tmp:
                times.append(up_and_down(Path(tmp) / "cluster", extra))
        times.sort()
        results[name] = {"median_s": statistics.median(times), "max_s": times[-1],
                         "runs": len(times)}
    print(f"{'cluster up':<22}{'median':>9}{'max':>9}   target < {TARGET_SECONDS:.0f} s")
    for name, r in results.items():
        verdict = "MET" if r["median_s"] < TARGET_SECONDS else "MISSED"
        print(f"{name:<22}{r['median_s']:>8.2f}s{r['max_s']:>8.2f}s   {verdict}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
