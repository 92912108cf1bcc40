"""The Toil plugin, from a regular wheel install: ``mesos`` means toil-mesos, with Toil's flags.

Toil finds plugins with ``pkgutil.iter_modules()``, which does not see modules served only by an
editable install's finder, so this installs the project as users do: a wheel, into a fresh
virtualenv that sees Toil the way the appliance's ``--system-site-packages`` venv does.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("plugin")
    wheels = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(PROJECT)],
        check=True, capture_output=True, timeout=300,
    )
    base = getattr(sys, "_base_executable", sys.executable)
    venv = work / "venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = venv / "lib" / "python{}.{}".format(*sys.version_info[:2]) / "site-packages"
    # Toil and the dependencies, visible as in a --system-site-packages venv; toil-mesos itself
    # comes only from the wheel (the development checkout's src/ is not on this path).
    (site / "_appliance.pth").write_text(sysconfig.get_path("purelib") + "\n")
    wheel = next(wheels.glob("toil_mesos-*.whl"))
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    return python


def run(python: Path, code: str) -> str:
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120,
                          cwd="/")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_mesos_resolves_to_toil_mesos_from_the_wheel(plugin_venv):
    out = run(plugin_venv, (
        "from toil.batchSystems.registry import get_batch_system\n"
        "import toil_mesos\n"
        "cls = get_batch_system('mesos')\n"
        "print(cls.__module__, cls.supportsAutoDeployment(), toil_mesos.__file__)\n"
    ))
    module, auto, where = out.split()
    assert module == "toil_mesos.scheduler.batch_system" and auto == "False"
    assert "site-packages" in where and "/src/" not in where


def test_toils_option_names_work_and_appear_once(plugin_venv):
    out = run(plugin_venv, (
        "from toil.job import Job\n"
        "parser = Job.Runner.getDefaultArgumentParser()\n"
        "defined = sum(1 for a in parser._actions if a.dest == 'mesos_endpoint')\n"
        "options = parser.parse_args(['js', '--batchSystem', 'mesos', '--mesosMaster',"
        " 'h:5051', '--mesosRole', 'r', '--mesosFrameworkId', 'f'])\n"
        "print(defined, options.mesos_endpoint, options.mesos_role,"
        " options.mesos_framework_id, options.batchSystem)\n"
    ))
    assert out.split() == ["1", "h:5051", "r", "f", "mesos"]


def test_a_bare_config_carries_the_defaults(plugin_venv):
    out = run(plugin_venv, (
        "from toil.common import Config\n"
        "c = Config()\n"
        "print(c.mesos_endpoint, c.mesos_name, c.mesos_native_code)\n"
    ))
    assert out.split() == ["localhost:5050", "toil", "warn"]
