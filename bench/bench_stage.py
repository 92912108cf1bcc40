"""Staging a bundle on an agent: cold next to ``zstd -d | tar -x``, warm, a warm agent's first job.

Two bundles: a project of 1,000 modules of real Python source (1,031 files), and a
virtualenv-like one of about 5,000 files copied from this environment's site-packages (what a
``toil-cwl-runner`` run ships). Cold staging (verify, extract, make durable, rename) runs into a
fresh cache each time, side by side in the same run with the Debian ``zstd`` CLI piped into
``tar -x`` on the same archive (target: cold staging within 2x of it) and, for reference, the
same pipeline followed by ``sync -f`` (the durability staging pays for). Both of staging's ways
of making the tree durable are measured: one ``syncfs`` (the default) and one pass of ``fsync``.
Warm: the bundle is already staged, which every task after the first on an agent sees (target:
under 5 ms). Last, on a one-agent mini-cluster, the issue-to-running time of a workflow's first
job when the agent has run the same code before under the same ``--mesosBundleAddress :PORT``
(the fetcher cache and the bundle cache both hold it; target: under 1 s), next to the first
workflow's on a cold agent. A missed staging target is explained with a pyinstrument profile.

    python bench/bench_stage.py [--quick] [--no-cluster] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_bundle import make_tree, stdlib_sources

from toil_mesos.deploy import DeployOptions, build, locate, scan, script_module
from toil_mesos.deploy import stage as stage_module
from toil_mesos.deploy._environment import PythonEnvironment
from toil_mesos.deploy.build import Bundle
from toil_mesos.deploy.stage import stage

HERE = Path(__file__).resolve().parent
WARM_TARGET_SECONDS = 0.005
COLD_TARGET_RATIO = 2.0
FIRST_JOB_TARGET_SECONDS = 1.0
VENV_FILES = 5000
LATENCY = re.compile(r"(\d+) jobs started on Mesos; issue-to-running latency: median "
                     r"([0-9.]+) s, p95 ([0-9.]+) s, max ([0-9.]+) s")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def venv_like_tree(root: Path, files: int) -> Path:
    """About *files* files of a real site-packages and standard library, plus wf.py.

    Copied under ``root/vendored`` so that they are this project's files, not the installed
    distributions workers already have (which a bundle leaves out).
    """
    copied = 0
    for source in (Path(sysconfig.get_path("purelib")), Path(sysconfig.get_path("stdlib"))):
        for path in sorted(source.rglob("*")):
            if copied >= files:
                break
            parts = path.relative_to(source).parts
            if (len(parts) < 2 or "__pycache__" in parts or "site-packages" in parts
                    or path.suffix in (".so", ".pyc", ".pth", ".exe")
                    or parts[0].endswith((".dist-info", ".egg-info"))
                    or path.is_symlink() or not path.is_file()):
                continue
            target = root / "vendored" / source.name / Path(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied += 1
    (root / "wf.py").write_text("import os\n")
    return root


def bundle_of(tree: Path, out: Path) -> Bundle:
    base = PythonEnvironment.current()
    env = PythonEnvironment(sys_path=(str(tree),), venv_site_packages=(),
                            base_paths=base.base_paths, user_site=None)
    options = DeployOptions(max_bytes=10 * 1024**3)
    return build(scan(locate(script_module(tree / "wf.py"), environment=env, options=options),
                      options), out)


def unpack_command() -> tuple[str, Callable[[Path, Path], None]]:
    """The reference extraction: the zstd CLI into tar, or python-zstandard into tar."""
    if shutil.which("zstd"):
        def with_cli(archive: Path, into: Path) -> None:
            subprocess.run(f"zstd -q -d -c {archive} | tar -x -C {into}", shell=True,
                           check=True)
        return "zstd -d | tar -x", with_cli

    def with_module(archive: Path, into: Path) -> None:
        import zstandard

        with open(archive, "rb") as source, subprocess.Popen(
                ["tar", "-x", "-C", str(into)], stdin=subprocess.PIPE) as tar:
            assert tar.stdin is not None
            zstandard.ZstdDecompressor().copy_stream(source, tar.stdin)
            tar.stdin.close()
        if tar.returncode:
            raise SystemExit("tar failed")
    return "python zstandard | tar -x (no zstd CLI)", with_module


def timed_runs(runs: int, action: Callable[[int], object]) -> list[float]:
    times = []
    for run in range(runs):
        started = time.perf_counter()
        action(run)
        times.append(time.perf_counter() - started)
    return times


def cold_staging(bundle: Bundle, work: Path, runs: int) -> dict[str, list[float]]:
    label, unpack = unpack_command()
    results: dict[str, list[float]] = {}
    for mode in ("syncfs", "fsync"):
        stage_module._DURABILITY = mode  # type: ignore[assignment]
        results[f"stage ({mode})"] = timed_runs(runs, lambda run, m=mode: stage(
            bundle.path, bundle.sha256, cache_dir=work / f"cache-{m}-{run}"))
    stage_module._DURABILITY = "syncfs"

    def reference(run: int, then_sync: bool) -> None:
        into = work / f"tar-{then_sync}-{run}"
        into.mkdir()
        unpack(bundle.path, into)
        if then_sync:
            subprocess.run(["sync", "-f", str(into)], check=True)

    results[label] = timed_runs(runs, lambda run: reference(run, False))
    results[f"{label} + sync -f"] = timed_runs(runs, lambda run: reference(run, True))
    for directory in work.glob("cache-*"):
        shutil.rmtree(directory)
    for directory in work.glob("tar-*"):
        shutil.rmtree(directory)
    return results


def profile_cold_stage(bundle: Bundle, cache: Path) -> str:
    try:
        from pyinstrument import Profiler
    except ImportError:
        return "(pip install pyinstrument to see where the time goes)"
    profiler = Profiler(interval=0.0005)
    with profiler:
        stage(bundle.path, bundle.sha256, cache_dir=cache)
    return str(profiler.output_text(unicode=False, color=False, show_all=False))


def executor_import_profile() -> str:
    """Where an executor's start goes before it can run a task: ``python -X importtime``.

    Every workflow starts a new executor on each agent, so this is paid by the first job of
    every workflow, warm agent or not. The executor starts as ``toil-mesos executor``.
    """
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         "import toil_mesos.cli, toil_mesos.executor.__main__"],
        capture_output=True, text=True, timeout=300, check=False)
    wall = time.perf_counter() - started
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 2:
            rows.append((int(parts[1]), depth, name.strip()))
    top = sorted(rows, reverse=True)[:12]
    lines = [f"executor start-up imports ({wall:.2f} s for the interpreter and its imports), "
             "largest cumulative:"]
    lines += [f"  {micros / 1000:>8.0f} ms  {'  ' * depth}{name}" for micros, depth, name in top]
    return "\n".join(lines)


def first_job_latency(tree: Path, work: Path) -> dict[str, float] | None:
    """Issue-to-running of the first job: a cold agent, then the same code on the warm agent."""
    from toil_mesos.cluster.testing import MiniCluster, leader_venv

    project = work / "project"
    shutil.copytree(tree, project)
    shutil.copy(HERE / "workflows" / "fanout.py", project / "fanout.py")
    python = leader_venv(work / "venv")
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TOIL"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    executor = f"{Path(sys.executable).parent / 'toil-mesos'} executor"
    latencies: dict[str, float] = {}
    with MiniCluster(work / "cluster", agents=1, cpus=1) as mini:
        for run in ("cold agent", "warm agent, same code"):
            proc = subprocess.run(
                [str(python), str(project / "fanout.py"), str(work / f"js-{len(latencies)}"),
                 "--jobs", "2", "--logLevel", "INFO", "--batchSystem", "mesos",
                 "--mesosEndpoint", mini.master, "--mesosExecutor", executor,
                 "--mesosBundleAddress", f":{port}"],
                cwd=project, env=env, capture_output=True, text=True, timeout=1800, check=False)
            latency = LATENCY.search(proc.stderr)
            if proc.returncode != 0 or latency is None:
                print(f"the workflow on the {run} failed:\n{proc.stderr[-3000:]}")
                return None
            latencies[run] = float(latency[4])  # the max: the first job starts the executor
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-cluster", action="store_true", help="skip the first-job latency")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cold_runs, warm_runs = (3, 200) if args.quick else (10, 2000)
    base = Path(os.environ.get("TOIL_MESOS_CLUSTER_TMPDIR", "/var/tmp"))
    results: dict[str, object] = {}
    verdicts: list[str] = []
    profiles: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-stage-", dir=base) as tmp:
        work = Path(tmp)
        trees = {
            "project": make_tree(work / "tree", 1000, stdlib_sources()),
            "venv-like": venv_like_tree(work / "venv-tree", VENV_FILES),
        }
        for name, tree in trees.items():
            bundle = bundle_of(tree, work / "bundles")
            cold = cold_staging(bundle, work, cold_runs)
            label = next(k for k in cold if k.startswith(("zstd", "python zstandard")) and
                         not k.endswith("sync -f"))
            ratio = statistics.median(cold["stage (syncfs)"]) / statistics.median(cold[label])
            print(f"\n{name} bundle: {len(bundle.manifest.files)} files, "
                  f"{bundle.manifest.total_bytes / 1e6:.1f} MB unpacked, "
                  f"{bundle.size / 1e6:.2f} MB archive; cold, {cold_runs} runs")
            print(f"  {'':<40}{'median':>10}{'p95':>10}")
            for what, times in cold.items():
                print(f"  {what:<40}{statistics.median(times) * 1000:>8.0f}ms"
                      f"{percentile(times, 0.95) * 1000:>8.0f}ms")
            print(f"  stage (syncfs) / {label}: {ratio:.2f}x")
            met = ratio <= COLD_TARGET_RATIO
            verdicts.append(f"{'MET' if met else 'MISSED'} {name}: cold staging within "
                            f"{COLD_TARGET_RATIO:.0f}x of {label} ({ratio:.2f}x)")
            if not met:
                profiles.append(f"profile of one cold staging of the {name} bundle:\n"
                                + profile_cold_stage(bundle, work / f"profile-{name}"))
            results[name] = {
                "files": len(bundle.manifest.files), "archive_bytes": bundle.size,
                "unpacked_bytes": bundle.manifest.total_bytes, "ratio": ratio,
                **{f"{what} median_s": statistics.median(t) for what, t in cold.items()},
                **{f"{what} p95_s": percentile(t, 0.95) for what, t in cold.items()},
            }
            if name == "project":
                warm_cache = work / "warm-cache"
                stage(bundle.path, bundle.sha256, cache_dir=warm_cache)
                warm = timed_runs(warm_runs, lambda _, b=bundle, c=warm_cache: stage(
                    work / "absent.tar.zst", b.sha256, cache_dir=c))
                print(f"  warm (already staged): median {statistics.median(warm) * 1000:.3f} ms,"
                      f" p95 {percentile(warm, 0.95) * 1000:.3f} ms, {warm_runs} runs")
                results["warm_median_s"] = statistics.median(warm)
                results["warm_p95_s"] = percentile(warm, 0.95)
                met = results["warm_p95_s"] < WARM_TARGET_SECONDS  # type: ignore[operator]
                verdicts.append(f"{'MET' if met else 'MISSED'} warm staging under "
                                f"{WARM_TARGET_SECONDS * 1000:.0f} ms (p95)")
        if not args.no_cluster:
            latency = first_job_latency(trees["venv-like"], work / "cluster-run")
            results["first_job_s"] = latency
            if latency is not None:
                print("\nfirst job's issue-to-running, venv-like bundle, one-agent mini-cluster, "
                      "--mesosBundleAddress :PORT")
                for run, seconds in latency.items():
                    print(f"  {run:<28}{seconds * 1000:>8.0f}ms")
                warm_first = latency["warm agent, same code"]
                met = warm_first < FIRST_JOB_TARGET_SECONDS
                verdicts.append(f"{'MET' if met else 'MISSED'} first job of a second workflow on a"
                                f" warm agent under {FIRST_JOB_TARGET_SECONDS:.0f} s "
                                f"({warm_first * 1000:.0f} ms)")
                if not met:
                    profiles.append(executor_import_profile())
    print()
    for verdict in verdicts:
        print(verdict)
    for profile in profiles:
        print("\n" + profile)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
