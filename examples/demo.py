"""``make demo``: the example workflow's code, from the leader to a worker that cannot see it.

1. A leader virtualenv like the seed's (``--system-site-packages`` over an environment that has
   Toil and toil-mesos) is made under ``build/demo``.
2. ``python -m toil_mesos bundle inspect`` shows what would ship for ``python -m workflow.main``
   run from ``examples/package-hierarchy``, and why; ``bundle build`` writes the archive.
3. The bundle is staged into a worker cache, and the workflow's jobs are imported and run by a
   fresh interpreter in a private mount namespace where ``examples/`` is an empty directory
   (when namespaces are available), so the code can only come from the bundle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import toil_mesos
from toil_mesos.deploy.stage import stage

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "package-hierarchy"
WORK = HERE.parent / "build" / "demo"


def run(args: list[str], **kwargs: object) -> str:
    print("$", " ".join(args), flush=True)
    proc = subprocess.run(args, text=True, capture_output=True, check=False, **kwargs)  # type: ignore[call-overload]
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"demo step failed with exit status {proc.returncode}")
    return str(proc.stdout)


def leader_venv() -> Path:
    venv = WORK / "leader-venv"
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / "python{}.{}".format(*sys.version_info[:2]) / "site-packages"
    # What --system-site-packages gives in the Toil Appliance: Toil and toil-mesos, visible.
    src = Path(toil_mesos.__file__).resolve().parents[1]
    (site / "_appliance.pth").write_text(f"{sysconfig.get_path('purelib')}\n{src}\n")
    return venv / "bin" / "python"


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    python = str(leader_venv())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run([python, "-m", "toil_mesos", "bundle", "inspect", "--module", "workflow.main"],
        cwd=PROJECT, env=env)
    archive = Path(run([python, "-m", "toil_mesos", "bundle", "build", "--module",
                        "workflow.main", "-o", str(WORK / "bundles")], cwd=PROJECT, env=env)
                   .strip())
    staged = stage(archive, archive.name.split(".")[0], cache_dir=WORK / "worker-cache")
    print(f"staged {staged.sha256[:12]} with roots {[str(r) for r in staged.roots]}")
    probe = (
        "from workflow.main import sort_chunk, where\n"
        "print('worker sorted', sort_chunk(None, [5, 3, 9, 1])['sorted'])\n"
        "print('worker imported the code from', where()['code'])\n"
    )
    worker = [sys.executable, "-c", probe]
    if shutil.which("unshare") and os.geteuid() == 0:
        # Hide examples/ behind an empty tmpfs, as an agent that cannot see the leader's files.
        hide = f"mount -t tmpfs none {HERE} && exec \"$@\""
        worker = ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh",
                  *worker]
    run(worker, cwd=WORK / "worker-cache",
        env={**env, "PYTHONPATH": os.pathsep.join(str(r) for r in staged.roots)})


if __name__ == "__main__":
    main()
