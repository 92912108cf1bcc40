"""Fifty workflows of changed code, one after another, on one agent: does disk level off?

Each workflow changes one line of a project of real Python source, so it ships a new bundle.
For each, on one simulated agent: the bundle server serves the new bundle, the agent's fetcher
(:class:`~toil_mesos.cluster._fetcher.Fetcher`, cache on) downloads it into a fresh executor
sandbox, the first task stages it cold, and more tasks stage it warm. This drives the
``stage()`` + fetcher path directly rather than running fifty full Toil workflows (which would
measure Toil's start-up, not the caches); the sandbox is removed after each workflow, as
Mesos' sandbox garbage collection would.

Two agents run side by side, workflow by workflow (order alternating): one with small caps
(staged cache: 4 bundles; fetcher cache: 4 archives), one with caps too large to matter. After
each workflow the disk used by both caches is recorded; the capped agent's must level off at
its caps. The cost of the cap is what it adds to the first task's cold staging (listing the
cache, choosing victims, deleting one old bundle's tree), compared with the unbounded agent.

    python bench/bench_cache.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_bundle import make_tree, stdlib_sources

from toil_mesos.cluster._fetcher import Fetcher, FetcherCache
from toil_mesos.deploy import DeployOptions, build, locate, scan, script_module
from toil_mesos.deploy._environment import PythonEnvironment
from toil_mesos.deploy.cache import MAX_BYTES_ENV, estimate_staged_size
from toil_mesos.deploy.stage import stage
from toil_mesos.scheduler.bundle_server import BundleServer

UNBOUNDED = 1 << 50


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def disk_usage(path: Path) -> int:
    """Allocated bytes under *path*, as ``du``."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


@dataclass
class Agent:
    """One simulated agent: its staged cache, fetcher cache, and what was measured on it."""

    name: str
    root: Path
    staged_cap: int
    fetcher_cap: int
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    staged_bytes: list[int] = field(default_factory=list)
    fetcher_bytes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cache = self.root / "bundles"
        self.fetcher = Fetcher(
            cache=FetcherCache(self.root / "fetchcache", max_bytes=self.fetcher_cap),
            timeout=120.0,
            user="bench",
        )

    def run_workflow(self, run: int, url: str, sha256: str, tasks: int) -> None:
        sandbox = self.root / "sandboxes" / f"run{run}"
        sandbox.mkdir(parents=True)
        uri = {"value": url, "cache": True, "extract": False, "executable": False}
        self.fetcher.fetch([uri], sandbox=sandbox, container_id=f"c{run}", log=io.StringIO())
        archive = sandbox / f"{sha256}.tar.zst"
        os.environ[MAX_BYTES_ENV] = str(self.staged_cap)
        started = time.perf_counter()
        first = stage(archive, sha256, cache_dir=self.cache)  # the first task: cold
        self.cold.append(time.perf_counter() - started)
        held = [first]  # as the executor holds it while its tasks run
        for _ in range(tasks - 1):
            started = time.perf_counter()
            held.append(stage(archive, sha256, cache_dir=self.cache))
            self.warm.append(time.perf_counter() - started)
        for staged in held:
            assert staged.lease is not None
            staged.lease.release()
        shutil.rmtree(sandbox)  # the sandbox's garbage collection
        self.staged_bytes.append(disk_usage(self.cache))
        self.fetcher_bytes.append(disk_usage(self.root / "fetchcache"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    workflows, modules, tasks = (12, 100, 5) if args.quick else (50, 300, 20)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        work = Path(tmp)
        tree = make_tree(work / "tree", modules, stdlib_sources())
        base = PythonEnvironment.current()
        env = PythonEnvironment(sys_path=(str(tree),), venv_site_packages=(),
                                base_paths=base.base_paths, user_site=None)
        options = DeployOptions(max_bytes=10 * 1024**3)

        def new_bundle(run: int) -> tuple[str, Path, int]:
            (tree / "pkg000" / "version.py").write_text(f"VERSION = {run}\n")
            bundle = build(scan(locate(script_module(tree / "wf.py"), environment=env,
                                       options=options), options), work / "bundles")
            return bundle.sha256, bundle.path, bundle.size

        sha, path, archive_bytes = new_bundle(-1)
        staged_estimate = estimate_staged_size(path)
        capped = Agent("capped", work / "capped", staged_cap=4 * staged_estimate,
                       fetcher_cap=4 * archive_bytes + archive_bytes // 2)
        unbounded = Agent("unbounded", work / "unbounded", staged_cap=UNBOUNDED,
                          fetcher_cap=UNBOUNDED)
        with BundleServer("127.0.0.1") as server:
            for run in range(workflows):
                sha, path, _ = new_bundle(run)
                server.add(path)
                order = (capped, unbounded) if run % 2 == 0 else (unbounded, capped)
                for agent in order:
                    agent.run_workflow(run, server.url(sha), sha, tasks)
    report(args, capped, unbounded, archive_bytes, staged_estimate, workflows)


def report(args: argparse.Namespace, capped: Agent, unbounded: Agent, archive_bytes: int,
           staged_estimate: int, workflows: int) -> None:
    mb = 1e6
    print(f"{workflows} workflows, one new bundle each: archive {archive_bytes / mb:.2f} MB, "
          f"staged about {staged_estimate / mb:.2f} MB")
    print(f"caps: staged {capped.staged_cap / mb:.1f} MB, fetcher {capped.fetcher_cap / mb:.1f} "
          "MB (the other agent: unbounded)")
    print(f"{'after run':>10}{'staged capped':>15}{'unbounded':>11}"
          f"{'fetcher capped':>16}{'unbounded':>11}   (MB)")
    step = max(1, workflows // 10)
    for run in [*range(0, workflows, step), workflows - 1][: workflows]:
        print(f"{run + 1:>10}{capped.staged_bytes[run] / mb:>15.1f}"
              f"{unbounded.staged_bytes[run] / mb:>11.1f}"
              f"{capped.fetcher_bytes[run] / mb:>16.1f}{unbounded.fetcher_bytes[run] / mb:>11.1f}")
    half = workflows // 2
    level_staged = max(capped.staged_bytes[half:])
    level_fetcher = max(capped.fetcher_bytes[half:])
    staged_ok = level_staged <= capped.staged_cap
    fetcher_ok = level_fetcher <= capped.fetcher_cap
    print(f"{'MET' if staged_ok else 'MISSED'} staged cache levels off under its cap "
          f"(max {level_staged / mb:.1f} MB over the second half)")
    print(f"{'MET' if fetcher_ok else 'MISSED'} fetcher cache levels off under its cap "
          f"(max {level_fetcher / mb:.1f} MB over the second half)")
    # Cold staging once the capped cache is full, so that every capped run evicts.
    full = range(6, workflows) if workflows > 8 else range(workflows)
    c_cold = [capped.cold[i] for i in full]
    u_cold = [unbounded.cold[i] for i in full]
    print(f"{'first task (cold)':<20}{'median':>10}{'p95':>10}")
    for name, values in (("capped", c_cold), ("unbounded", u_cold)):
        print(f"  {name:<18}{statistics.median(values) * 1000:>8.1f}ms"
              f"{percentile(values, 0.95) * 1000:>8.1f}ms")
    ratio = statistics.median(c_cold) / statistics.median(u_cold)
    print(f"cap cost on the first task: median ratio capped/unbounded {ratio:.2f}x")
    print(f"{'later tasks (warm)':<20}{'median':>10}{'p95':>10}")
    for agent in (capped, unbounded):
        print(f"  {agent.name:<18}{statistics.median(agent.warm) * 1000:>8.3f}ms"
              f"{percentile(agent.warm, 0.95) * 1000:>8.3f}ms")
    if args.json:
        results = {
            "workflows": workflows,
            "archive_bytes": archive_bytes,
            "staged_estimate_bytes": staged_estimate,
            "staged_cap": capped.staged_cap,
            "fetcher_cap": capped.fetcher_cap,
            "staged_bytes": {"capped": capped.staged_bytes, "unbounded": unbounded.staged_bytes},
            "fetcher_bytes": {"capped": capped.fetcher_bytes,
                              "unbounded": unbounded.fetcher_bytes},
            "cold_median_s": {"capped": statistics.median(c_cold),
                              "unbounded": statistics.median(u_cold)},
            "cold_p95_s": {"capped": percentile(c_cold, 0.95),
                           "unbounded": percentile(u_cold, 0.95)},
            "cold_ratio": ratio,
            "warm_p95_s": {"capped": percentile(capped.warm, 0.95),
                           "unbounded": percentile(unbounded.warm, 0.95)},
            "staged_levels_off": staged_ok,
            "fetcher_levels_off": fetcher_ok,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
