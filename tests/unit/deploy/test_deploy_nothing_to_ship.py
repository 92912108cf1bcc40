"""contents_to_ship(): when the workflow's code is all on the workers, nothing is built.

The CWL and WDL runners are Toil's own console scripts and their jobs are Toil's modules, so
a leader running them has nothing of the user's to ship unless its virtualenv adds some.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

from deploy_trees import SEED_PACKAGE_TREE, write_dist, write_tree

from toil_mesos.deploy import (
    NOTHING_TO_SHIP,
    DeployOptions,
    contents_to_ship,
    find_module,
    locate,
    user_module_of,
)
from toil_mesos.deploy._environment import dependency_closure
from toil_mesos.deploy.manifest import RootKind


def _site_packages(tmp_path: Path) -> Path:
    sp = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    sp.mkdir(parents=True)
    return sp


def _said_nothing_to_ship(caplog) -> int:  # type: ignore[no-untyped-def]
    return sum(r.getMessage() == NOTHING_TO_SHIP and r.levelno == logging.INFO
               for r in caplog.records)


def test_a_console_script_as_main_is_no_user_module(tmp_path):
    script = tmp_path / "bin" / "toil-cwl-runner"
    write_tree(tmp_path / "bin", {"toil-cwl-runner": "from toil.cwl.cwltoil import main\n"})
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    assert user_module_of(main) is None


def test_toils_runner_outside_a_virtualenv_ships_nothing(environment, caplog):
    """The appliance's leader: `toil-cwl-runner` from the image's Python."""
    caplog.set_level(logging.INFO, logger="toil_mesos")
    module = find_module("toil.cwl.cwltoil", sys.path)
    env = environment([])
    assert locate(module, environment=env).ships_nothing
    assert contents_to_ship(module, environment=env) is None
    assert _said_nothing_to_ship(caplog) == 1


def test_a_virtualenv_with_only_what_workers_have_ships_nothing(tmp_path, environment, caplog):
    caplog.set_level(logging.INFO, logger="toil_mesos")
    sp = _site_packages(tmp_path)
    write_dist(sp, "pip", {"pip/__init__.py": ""})
    write_tree(sp, {"_virtualenv.py": "", "_virtualenv.pth": "import _virtualenv\n",
                    "_appliance.pth": "/usr/lib/python3/dist-packages\n"})
    env = environment([sp], venv_site_packages=[sp])
    plan = locate(None, environment=env)
    assert not plan.ships_nothing  # the site-packages root is walked...
    assert contents_to_ship(None, environment=env) is None  # ...and holds nothing to ship
    assert _said_nothing_to_ship(caplog) == 1


def test_python_of_the_users_own_in_the_virtualenv_still_ships(tmp_path, environment, caplog):
    """The usual rules: a runner's leader venv with the user's package ships that package."""
    caplog.set_level(logging.INFO, logger="toil_mesos")
    sp = _site_packages(tmp_path)
    write_dist(sp, "my-helpers", {"my_helpers/__init__.py": "X = 1\n"})
    contents = contents_to_ship(None, environment=environment([sp], venv_site_packages=[sp]))
    assert contents is not None
    assert "r0/my_helpers/__init__.py" in {f.arcname for f in contents.files}
    assert _said_nothing_to_ship(caplog) == 0


def test_code_only_on_a_shared_path_ships_nothing(tmp_path, environment, caplog):
    caplog.set_level(logging.INFO, logger="toil_mesos")
    project = write_tree(tmp_path / "nfs" / "project", SEED_PACKAGE_TREE)
    module = find_module("workflow.main", [str(project)])
    options = DeployOptions(shared_paths=(tmp_path / "nfs",))
    plan = locate(module, environment=environment([project]), options=options)
    assert [r.kind for r in plan.roots] == [RootKind.SHARED] and plan.ships_nothing
    assert contents_to_ship(module, environment=environment([project]), options=options) is None
    assert _said_nothing_to_ship(caplog) == 1


def _toil_with_runner_extras(sp: Path) -> None:
    """Toil whose cwl extra needs cwltool (which needs rdflib), installed into *sp*."""
    write_dist(sp, "toil", {"toil/__init__.py": ""},
               requires=["dill", 'cwltool==3.3; extra == "cwl"', 'miniwdl; extra == "wdl"'])
    write_dist(sp, "dill", {"dill/__init__.py": ""})
    write_dist(sp, "cwltool", {"cwltool/__init__.py": ""}, requires=["rdflib[html]"])
    write_dist(sp, "rdflib", {"rdflib/__init__.py": ""})
    write_dist(sp, "miniwdl", {"WDL/__init__.py": ""})


def test_the_closure_follows_the_extras_named(tmp_path):
    sp = _site_packages(tmp_path)
    _toil_with_runner_extras(sp)
    assert dependency_closure(["toil"], search_path=[str(sp)]) == {"toil", "dill"}
    assert dependency_closure(["toil[cwl]"], search_path=[str(sp)]) == {
        "toil", "dill", "cwltool", "rdflib"}


def test_the_runners_installed_into_a_virtualenv_do_not_ship(tmp_path, environment):
    """Workers have Toil's cwl and wdl extras (the appliance installs them), so a leader venv
    holding the runners ships only what the user added."""
    sp = _site_packages(tmp_path)
    _toil_with_runner_extras(sp)
    write_dist(sp, "my-helpers", {"my_helpers/__init__.py": ""})
    contents = contents_to_ship(None, environment=environment([sp], venv_site_packages=[sp]))
    assert contents is not None
    tops = {f.arcname.split("/")[1] for f in contents.files}
    assert "my_helpers" in tops
    assert not tops & {"toil", "dill", "cwltool", "rdflib", "WDL"}
