"""Staging a bundle served by the bundle server: cold (download, verify, extract) and warm.

A realistic bundle (1,000 modules of real Python source) is built and served by
:class:`BundleServer` on loopback. Cold: each task downloads it into a fresh sandbox and stages
it into a fresh cache. Warm: the bundle is already staged in the agent's cache, which is what
every task after the first on an agent sees. Target: warm under 5 ms.

    python bench/bench_stage.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_bundle import make_tree, stdlib_sources

from toil_mesos.deploy import DeployOptions, build, locate, scan, script_module
from toil_mesos.deploy._environment import PythonEnvironment
from toil_mesos.deploy.stage import stage
from toil_mesos.scheduler.bundle_server import BundleServer

WARM_TARGET_SECONDS = 0.005


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cold_runs, warm_runs = (5, 200) if args.quick else (20, 2000)
    with tempfile.TemporaryDirectory(prefix="bench-stage-") as tmp:
        work = Path(tmp)
        tree = make_tree(work / "tree", 1000, stdlib_sources())
        base = PythonEnvironment.current()
        env = PythonEnvironment(sys_path=(str(tree),), venv_site_packages=(),
                                base_paths=base.base_paths, user_site=None)
        options = DeployOptions(max_bytes=10 * 1024**3)
        bundle = build(scan(locate(script_module(tree / "wf.py"), environment=env,
                                   options=options), options), work / "bundles")
        size = bundle.size
        cold: list[float] = []
        warm: list[float] = []
        with BundleServer("127.0.0.1") as server, httpx.Client() as client:
            server.add(bundle.path)
            url = server.url(bundle.sha256)
            for run in range(cold_runs):
                sandbox = work / f"sandbox{run}"
                sandbox.mkdir()
                started = time.perf_counter()
                archive = sandbox / bundle.path.name
                archive.write_bytes(client.get(url).raise_for_status().content)
                stage(archive, bundle.sha256, cache_dir=work / f"cache{run}")
                cold.append(time.perf_counter() - started)
            for _ in range(warm_runs):
                started = time.perf_counter()
                stage(work / "absent.tar.zst", bundle.sha256, cache_dir=work / "cache0")
                warm.append(time.perf_counter() - started)
    results = {
        "bundle_bytes": size,
        "files": len(bundle.manifest.files),
        "cold_median_s": statistics.median(cold), "cold_p95_s": percentile(cold, 0.95),
        "warm_median_s": statistics.median(warm), "warm_p95_s": percentile(warm, 0.95),
    }
    print(f"bundle: {results['files']} files, {size / 1e6:.2f} MB")
    print(f"{'staging':<8}{'median':>12}{'p95':>12}{'runs':>7}")
    print(f"{'cold':<8}{results['cold_median_s'] * 1000:>10.1f}ms"
          f"{results['cold_p95_s'] * 1000:>10.1f}ms{len(cold):>7}")
    print(f"{'warm':<8}{results['warm_median_s'] * 1000:>10.3f}ms"
          f"{results['warm_p95_s'] * 1000:>10.3f}ms{len(warm):>7}")
    verdict = "MET" if results["warm_p95_s"] < WARM_TARGET_SECONDS else "MISSED"
    print(f"{verdict} warm staging under {WARM_TARGET_SECONDS * 1000:.0f} ms (p95)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
