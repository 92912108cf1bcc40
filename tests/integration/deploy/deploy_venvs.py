"""Leader virtualenvs, bundles built by the CLI, and staged code run where the leader is invisible.

A leader venv is made by the base interpreter and sees this project's environment (Toil, this
project, pip, setuptools) through a ``.pth`` file, as a ``--system-site-packages`` venv sees the
Toil Appliance's: that is what "workers already have". The user's code lives under one leader
directory; before staged code runs, that directory is renamed away, so an import that works can
only have come from the bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import toil_mesos
from toil_mesos.cluster.testing import leader_venv
from toil_mesos.deploy.manifest import Manifest
from toil_mesos.deploy.stage import StagedBundle, stage

PROJECT_SITE = sysconfig.get_path("purelib")
PROJECT_SRC = str(Path(toil_mesos.__file__).parents[1])
PY = "python{}.{}".format(*sys.version_info[:2])


@dataclass(frozen=True)
class LeaderVenv:
    root: Path
    python: Path
    site_packages: Path

    def pip(self, *args: str, cwd: Path | None = None) -> None:
        """Install offline, from local source trees only."""
        run(
            [str(self.python), "-m", "pip", "install", "--quiet", "--no-index",
             "--no-build-isolation", *args],
            cwd=cwd,
        )


def make_venv(path: Path, *, with_pip: bool = False) -> LeaderVenv:
    python = leader_venv(path, with_pip=with_pip)
    return LeaderVenv(path, python, path / "lib" / PY / "site-packages")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TOIL_MESOS"))}
    env.update(extra)
    return env


def run(
    args: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(args), cwd=cwd, env=dict(env) if env is not None else clean_env(),
        capture_output=True, text=True, timeout=180, check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def toil_mesos_cli(
    venv: LeaderVenv, *args: str, cwd: Path, env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``python -m toil_mesos ...`` with the leader's interpreter, as the docs tell users."""
    return run([str(venv.python), "-m", "toil_mesos", *args], cwd=cwd, env=env, check=check)


def build_bundle(
    venv: LeaderVenv, *args: str, cwd: Path, out: Path, env: Mapping[str, str] | None = None
) -> Path:
    proc = toil_mesos_cli(venv, "bundle", "build", *args, "-o", str(out), cwd=cwd, env=env)
    archive = Path(proc.stdout.strip())
    assert archive.is_file() and archive.parent == out
    return archive


def manifest_of(archive: Path) -> Manifest:
    return stage(archive, archive.name.split(".")[0], cache_dir=archive.parent / "peek").manifest()


@dataclass(frozen=True)
class StagedRun:
    staged: StagedBundle
    result: dict[str, object]


def run_staged(archive: Path, *, hide: Path, cache: Path, code: str) -> StagedRun:
    """Stage *archive*, hide the leader's directory, run *code* with the staged roots first.

    *code* must print one JSON document. A second run without the bundle on the path must fail
    to import the user's code: proof that nothing else could have provided it.
    """
    staged = stage(archive, archive.name.split(".")[0], cache_dir=cache)
    hidden = hide.with_name(hide.name + "-hidden")
    hide.rename(hidden)
    try:
        with_bundle = run(
            [sys.executable, "-c", code], cwd=cache,
            env=clean_env(PYTHONPATH=os.pathsep.join(str(r) for r in staged.roots)),
            check=False,
        )
        without = run([sys.executable, "-c", code], cwd=cache, env=clean_env(), check=False)
    finally:
        hidden.rename(hide)
    assert with_bundle.returncode == 0, with_bundle.stderr
    assert without.returncode != 0 and "ModuleNotFoundError" in without.stderr, (
        "the user's code was importable without the bundle: the test proves nothing"
    )
    return StagedRun(staged, json.loads(with_bundle.stdout))


def import_probe(*modules: str, call: str | None = None, version_of: str | None = None) -> str:
    """Code that imports *modules* and prints where each came from (and optional extras)."""
    lines = ["import importlib, importlib.metadata, json", "out = {}"]
    for name in modules:
        lines.append(f"out[{name!r}] = importlib.import_module({name!r}).__file__")
    if call:
        lines.append(f"out['call'] = {call}")
    if version_of:
        lines.append(f"out['version'] = importlib.metadata.version({version_of!r})")
    lines.append("print(json.dumps(out))")
    return "\n".join(lines)
