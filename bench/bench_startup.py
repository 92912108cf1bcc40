"""Leader start-up: the deployment work a leader does before its first job, ours and Toil's.

What differs between the two paths at start-up is only that work. Toil's, for a batch system
that supports its auto-deployment: ``ModuleDescriptor.forModule(...).globalize()`` and
``saveAsResourceTo(job store)``, a zip of the code (for code in a virtualenv, of the venv's
whole site-packages) written into a file job store. Ours: locate, scan, check and build the
bundle, and start the bundle server. Both run in the leader's own interpreter, on the same code,
in one process, a few times each.

    python bench/bench_startup.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from toil_mesos.cluster.testing import leader_venv

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
REPEATS = 5

MEASURE = r'''
import importlib, json, statistics, sys, tempfile, time
from pathlib import Path
from toil.common import Config, Toil
from toil.resource import ModuleDescriptor
from toil_mesos.deploy import build, check_native, locate, scan, user_module_of, find_module
from toil_mesos.scheduler.bundle_server import BundleServer

name, repeats = sys.argv[1], int(sys.argv[2])
importlib.import_module(name)
toil_times, our_times = [], []
for _ in range(repeats):
    with tempfile.TemporaryDirectory() as tmp:
        config = Config()  # initialize() gives it a workflow ID
        store = Toil.getJobStore(f"file:{tmp}/js")
        store.initialize(config)
        started = time.perf_counter()
        descriptor = ModuleDescriptor.forModule(name).globalize()
        descriptor.saveAsResourceTo(store)
        toil_times.append(time.perf_counter() - started)
        toil_bytes = len(descriptor._getResourceClass()._load(descriptor._resourcePath).getvalue())
        started = time.perf_counter()
        contents = scan(locate(find_module(name, sys.path)))
        check_native(contents, "warn")
        bundle = build(contents, Path(tmp) / "bundles")
        with BundleServer("127.0.0.1") as server:
            server.add(bundle.path)
        our_times.append(time.perf_counter() - started)
print(json.dumps({"toil_s": statistics.median(toil_times),
                  "ours_s": statistics.median(our_times),
                  "toil_ships": descriptor._resourcePath, "toil_bytes": toil_bytes,
                  "ours_ships": [r.source for r in contents.roots],
                  "ours_bytes": bundle.size}))
'''


def measure(python: Path, module: str, cwd: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TOIL"))}
    proc = subprocess.run([str(python), "-c", MEASURE, module, str(REPEATS)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        project = work / "package-hierarchy"
        shutil.copytree(EXAMPLES / "package-hierarchy", project)
        plain = leader_venv(work / "venv")
        results["python -m workflow.main (checkout)"] = measure(plain, "workflow.main", project)
        venv = leader_venv(work / "venv-pip", with_pip=True)
        (project / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools>=64"]\n'
            'build-backend = "setuptools.build_meta"\n'
            '[project]\nname = "example-workflow"\nversion = "1.0"\n'
            '[tool.setuptools]\npackages = ["workflow", "util", "util.sort"]\n'
        )
        subprocess.run([str(venv), "-m", "pip", "install", "--quiet", "--no-index",
                        "--no-build-isolation", str(project)], check=True, capture_output=True)
        results["pip install . into a venv"] = measure(venv, "workflow.main", work)
    print(f"{'leader start-up: deployment work':<40}{'ours':>10}{'Toil':>10}")
    for name, r in results.items():
        print(f"{name:<40}{r['ours_s'] * 1000:>8.1f}ms{r['toil_s'] * 1000:>8.1f}ms")
        print(f"    ours ships {r['ours_ships']} ({r['ours_bytes']} bytes archived)")
        print(f"    Toil ships {r['toil_ships']} ({r['toil_bytes']} bytes zipped)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
