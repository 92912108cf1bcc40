"""Bundle build, side by side with Toil's own zip of the same tree, in one run.

For each tree: our build cold (empty output directory), our rebuild with nothing changed, and
Toil's ``DirectoryResource`` zip (what Toil's auto-deployment writes into the job store). Trees
are made of real Python source (the standard library's, cycled), some data files, and the
``__pycache__`` a tree has once it has run. Absolute times on shared machines drift; the ratios,
measured in the same run, are the figures to read.

    python bench/bench_bundle.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import random
import shutil
import statistics
import sysconfig
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import zstandard
from toil.resource import DirectoryResource

from toil_mesos.deploy import DeployOptions, build, locate, scan, script_module
from toil_mesos.deploy._environment import PythonEnvironment

REPEATS = 3


def stdlib_sources() -> list[bytes]:
    root = Path(sysconfig.get_path("stdlib"))
    files = sorted(p for p in root.glob("*.py") if p.stat().st_size > 2000)
    return [p.read_bytes() for p in files]


def make_tree(root: Path, modules: int, sources: list[bytes]) -> Path:
    rng = random.Random(modules)
    per_package = 50
    for i in range(modules):
        package = root / f"pkg{i // per_package:03d}"
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").touch()
        (package / f"mod{i:05d}.py").write_bytes(sources[i % len(sources)])
    data = root / "data"
    data.mkdir()
    for i in range(max(2, modules // 100)):
        rows = "\n".join(",".join(str(rng.random()) for _ in range(8)) for _ in range(200))
        (data / f"table{i:03d}.csv").write_text(rows)
    (root / "wf.py").write_text("import pkg000\n")
    compileall.compile_dir(str(root), quiet=2)
    return root


def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def measure(root: Path, work: Path) -> dict[str, object]:
    env = PythonEnvironment.current(sys_path=[str(root)])
    env = PythonEnvironment(sys_path=(str(root),), venv_site_packages=(),
                            base_paths=env.base_paths, user_site=None)
    options = DeployOptions(max_bytes=10 * 1024**3)

    def ours(out: Path) -> Path:
        contents = scan(locate(script_module(root / "wf.py"), environment=env,
                               options=options), options)
        return build(contents, out).path

    cold, rebuild, toil = [], [], []
    archives: list[Path] = []
    for attempt in range(REPEATS):
        out = work / f"out{attempt}"
        seconds, archive = timed(lambda out=out: ours(out))
        cold.append(seconds)
        archives.append(archive)  # type: ignore[arg-type]
        rebuild.append(timed(lambda out=out: ours(out))[0])
        seconds, zipped = timed(lambda: DirectoryResource._load(str(root)).getvalue())
        toil.append(seconds)
    toil_bytes = len(zipped)  # type: ignore[arg-type]
    ours_bytes = archives[0].stat().st_size
    identical = len({hashlib.sha256(a.read_bytes()).hexdigest() for a in archives}) == 1
    files = sum(1 for _ in root.rglob("*") if _.is_file())
    return {
        "files_in_tree": files,
        "tree_bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
        "ours_cold_s": statistics.median(cold),
        "ours_rebuild_s": statistics.median(rebuild),
        "toil_zip_s": statistics.median(toil),
        "ours_bytes": ours_bytes,
        "toil_bytes": toil_bytes,
        "cold_vs_toil": statistics.median(cold) / statistics.median(toil),
        "toil_vs_rebuild": statistics.median(toil) / statistics.median(rebuild),
        "size_ratio": toil_bytes / ours_bytes,
        "byte_identical": identical,
    }


def site_packages_tree(work: Path, target_bytes: int) -> Path | None:
    """A copy of real pure-Python packages from this environment, about *target_bytes*."""
    source = Path(sysconfig.get_path("purelib"))
    tree = work / "site-packages"
    tree.mkdir()
    total = 0
    for package in sorted(p for p in source.iterdir() if p.is_dir()):
        if package.name.endswith((".dist-info", ".egg-info")) or package.name.startswith(
            ("_", "toil")
        ):
            continue
        files = [p for p in package.rglob("*") if p.is_file()]
        if any(p.suffix in (".so", ".pyd") for p in files) or not files:
            continue
        shutil.copytree(package, tree / package.name, symlinks=False)
        total += sum(p.stat().st_size for p in files)
        if total >= target_bytes:
            break
    (tree / "wf.py").write_text("")
    return tree if total else None


def compare_codecs(sources: list[bytes], modules: int) -> dict[str, dict[str, float]]:
    """Seconds and ratio of each candidate codec on the same Python source, in one run.

    Backs the choice in ``toil_mesos.deploy._compression`` (Zstandard, level 3, two threads).
    """
    data = b"".join(sources[i % len(sources)] for i in range(modules))
    codecs: dict[str, Callable[[bytes], bytes]] = {
        "gzip level 6": lambda d: zlib.compress(d, 6),
        "gzip level 1": lambda d: zlib.compress(d, 1),
        "zstd level 3, 2 threads": zstandard.ZstdCompressor(level=3, threads=2).compress,
        "zstd level 6, 2 threads": zstandard.ZstdCompressor(level=6, threads=2).compress,
    }
    results = {}
    for name, compress in codecs.items():
        seconds, out = timed(lambda compress=compress: compress(data))
        results[name] = {"seconds": seconds, "ratio": len(data) / len(out)}  # type: ignore[arg-type]
    return results


TARGETS = {
    "cold build no slower than Toil's zip": lambda r: r["cold_vs_toil"] <= 1.0,
    "archive at least 10x smaller than Toil's": lambda r: r["size_ratio"] >= 10,
    "byte-identical across runs": lambda r: r["byte_identical"],
    "unchanged rebuild at least 10x faster than Toil's zip": lambda r: r["toil_vs_rebuild"] >= 10,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small trees only")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    sizes = [100, 1000] if args.quick else [100, 1000, 10000]
    sources = stdlib_sources()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        work = Path(tmp)
        for modules in sizes:
            tree = make_tree(work / f"tree{modules}", modules, sources)
            results[f"{modules} modules"] = measure(tree, work / f"w{modules}")
        if not args.quick:
            venv = site_packages_tree(work, 50 * 1024 * 1024)
            if venv is not None:
                compileall.compile_dir(str(venv), quiet=2)
                results["site-packages ~50 MB"] = measure(venv, work / "wvenv")
    header = (f"{'tree':<22}{'files':>7}{'ours cold':>11}{'rebuild':>9}{'toil zip':>10}"
              f"{'cold/toil':>10}{'toil/rebuild':>13}{'ours MB':>9}{'toil MB':>9}{'smaller':>9}"
              f"{'same bytes':>11}")
    print(header)
    for name, r in results.items():
        print(f"{name:<22}{r['files_in_tree']:>7}{r['ours_cold_s']:>10.3f}s"
              f"{r['ours_rebuild_s']:>8.3f}s{r['toil_zip_s']:>9.3f}s{r['cold_vs_toil']:>10.2f}"
              f"{r['toil_vs_rebuild']:>12.1f}x{r['ours_bytes'] / 1e6:>9.2f}"
              f"{r['toil_bytes'] / 1e6:>9.2f}{r['size_ratio']:>8.1f}x{r['byte_identical']!s:>11}")
    print()
    for target, check in TARGETS.items():
        missed = [name for name, r in results.items() if not check(r)]
        print(f"{'MET   ' if not missed else 'MISSED'} {target}"
              + (f" (missed for: {', '.join(missed)})" if missed else ""))
    codecs = compare_codecs(sources, 200 if args.quick else 2000)
    print(f"\n{'codec (same Python source)':<28}{'seconds':>9}{'ratio':>8}")
    for name, r in codecs.items():
        print(f"{name:<28}{r['seconds']:>8.3f}s{r['ratio']:>7.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**results, "codecs": codecs}, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
