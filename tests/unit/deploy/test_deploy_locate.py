"""locate() and find_module(): which roots ship, in which order, and the errors for bad layouts."""

from __future__ import annotations

import json
import site
import sys
import zipfile
from pathlib import Path

import pytest
from deploy_trees import SEED_PACKAGE_TREE, SEED_SIBLINGS_TREE, write_dist, write_tree

from toil_mesos.deploy import (
    DeployOptions,
    UserModule,
    find_module,
    locate,
    scan,
    script_module,
)
from toil_mesos.deploy._environment import PythonEnvironment, dependency_closure
from toil_mesos.deploy.manifest import RootKind
from toil_mesos.errors import BundleError


def shipped(contents) -> set[str]:  # type: ignore[no-untyped-def]
    return {f.arcname for f in contents.files}


class TestScript:
    def test_ships_the_script_directory_with_its_siblings(self, tmp_path, environment):
        proj = write_tree(tmp_path / "proj", {**SEED_SIBLINGS_TREE, "data/table.csv": "a,b\n"})
        module = script_module(proj / "userScript.py")
        plan = locate(module, environment=environment([proj]))
        assert [(r.kind, r.source) for r in plan.roots] == [(RootKind.SCRIPT_DIR, proj)]
        assert module.name == "userScript"
        assert shipped(scan(plan)) == {"r0/userScript.py", "r0/utilities.py", "r0/data/table.csv"}

    def test_a_script_directory_that_is_a_package_is_refused(self, tmp_path, environment):
        proj = write_tree(tmp_path / "proj", {"pkg/__init__.py": "", "pkg/wf.py": ""})
        with pytest.raises(BundleError) as error:
            locate(script_module(proj / "pkg" / "wf.py"), environment=environment([proj / "pkg"]))
        message = str(error.value)
        assert str(proj / "pkg" / "__init__.py") in message
        assert "python -m pkg.wf" in message and str(proj) in message

    @pytest.mark.parametrize(("name", "problem"), [("missing.py", "does not exist"),
                                                   ("notes.txt", "must end in .py")])
    def test_bad_script_paths(self, tmp_path, name, problem):
        (tmp_path / "notes.txt").write_text("")
        with pytest.raises(BundleError, match=problem):
            script_module(tmp_path / name)

    def test_a_symlinked_script_ships_the_directory_it_really_lives_in(self, tmp_path, environment):
        proj = write_tree(tmp_path / "proj", SEED_SIBLINGS_TREE)
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "run.py").symlink_to(proj / "userScript.py")
        plan = locate(script_module(tmp_path / "bin" / "run.py"), environment=environment([proj]))
        assert plan.roots[0].source == proj


class TestPackageHierarchy:
    def test_ships_every_top_level_package_of_the_root(self, tmp_path, environment):
        proj = write_tree(tmp_path / "proj", {**SEED_PACKAGE_TREE, "tools.py": ""})
        module = find_module("workflow.main", [str(proj)])
        assert module.file == proj / "workflow" / "main.py"
        plan = locate(module, environment=environment([proj]))
        assert [(r.kind, r.source) for r in plan.roots] == [(RootKind.PACKAGE_ROOT, proj)]
        files = shipped(scan(plan))
        assert {"r0/workflow/main.py", "r0/util/sort/quick.py", "r0/tools.py"} <= files

    def test_root_found_through_pythonpath_from_another_directory(self, tmp_path, environment):
        proj = write_tree(tmp_path / "proj", SEED_PACKAGE_TREE)
        elsewhere = write_tree(tmp_path / "elsewhere", {"unrelated.py": ""})
        # `cd elsewhere; PYTHONPATH=proj python -m workflow.main`: cwd first, then PYTHONPATH.
        sys_path = [str(elsewhere), str(proj)]
        plan = locate(find_module("workflow.main", sys_path), environment=environment(sys_path))
        assert [r.source for r in plan.roots] == [proj]
        statuses = {e.path: e.status for e in plan.entries}
        assert statuses[str(proj)] == "shipped"
        assert statuses[str(elsewhere)] == "not-shipped"

    def test_a_package_module_itself(self, tmp_path, environment):
        proj = write_tree(tmp_path / "proj", SEED_PACKAGE_TREE)
        module = find_module("util.sort", [str(proj)])
        assert module.file == proj / "util" / "sort" / "__init__.py"
        assert locate(module, environment=environment([proj])).roots[0].source == proj

    def test_namespace_packages_are_found(self, tmp_path, environment):
        proj = write_tree(tmp_path / "proj", {"ns/sub/mod.py": "X = 1\n"})
        module = find_module("ns.sub.mod", [str(proj)])
        assert locate(module, environment=environment([proj])).roots[0].source == proj

    def test_a_root_that_is_a_package_is_refused(self, tmp_path, environment):
        proj = write_tree(tmp_path / "proj", SEED_PACKAGE_TREE)
        # `cd proj/workflow; python -m main`
        with pytest.raises(BundleError, match=r"__init__\.py makes .* a package.*python -m "
                                              r"workflow\.main"):
            locate(find_module("main", [str(proj / "workflow")]),
                   environment=environment([proj / "workflow"]))

    @pytest.mark.parametrize("name", ["nosuchmodule", "workflow.nosuch", "workflow.main.deeper"])
    def test_missing_modules_are_named(self, tmp_path, name):
        proj = write_tree(tmp_path / "proj", SEED_PACKAGE_TREE)
        with pytest.raises(BundleError, match="cannot find module"):
            find_module(name, [str(proj)])

    def test_invalid_module_name(self):
        with pytest.raises(BundleError, match="not a valid module name"):
            find_module("work-flow.main", [])

    def test_a_job_module_inside_a_zipped_egg_is_refused(self, tmp_path, environment):
        egg = tmp_path / "dep-1.0-py3.11.egg"
        with zipfile.ZipFile(egg, "w") as archive:
            archive.writestr("dep/__init__.py", "")
            archive.writestr("dep/jobs.py", "")
        with pytest.raises(BundleError, match=r"inside the zipped egg .*dep-1\.0-py3\.11\.egg"):
            find_module("dep.jobs", [str(egg)])
        # A module whose file was recorded inside the egg (e.g. by __main__) is refused too.
        module = UserModule("dep.jobs", egg / "dep" / "jobs.py", "module")
        with pytest.raises(BundleError, match="zipped egg"):
            locate(module, environment=environment([egg]))

    def test_a_module_the_user_excluded_is_refused(self, tmp_path, environment):
        proj = write_tree(tmp_path / "proj", {**SEED_PACKAGE_TREE, ".gitignore": "main.py\n"})
        plan = locate(find_module("workflow.main", [str(proj)]), environment=environment([proj]))
        with pytest.raises(BundleError, match=r"'workflow\.main' .* would not ship: .*gitignore"):
            scan(plan)


class TestSharedFilesystem:
    def test_code_on_a_shared_path_is_not_shipped(self, tmp_path, environment):
        proj = write_tree(tmp_path / "nfs" / "proj", SEED_PACKAGE_TREE)
        options = DeployOptions(shared_paths=(tmp_path / "nfs",))
        plan = locate(find_module("workflow.main", [str(proj)]),
                      environment=environment([proj]), options=options)
        assert [(r.kind, r.entry) for r in plan.roots] == [(RootKind.SHARED, str(proj))]
        contents = scan(plan, options)
        assert contents.files == ()
        assert contents.ships(proj / "workflow" / "main.py")


def _venv_site_packages(tmp_path: Path) -> Path:
    sp = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    sp.mkdir(parents=True)
    return sp


class TestVirtualenvSitePackages:
    @pytest.fixture
    def site_packages(self, tmp_path):
        sp = _venv_site_packages(tmp_path)
        write_dist(sp, "toil", {"toil/__init__.py": "", "toil/worker.py": ""},
                   requires=["dill>=0.3", "boto3; extra == 'aws'"])
        write_dist(sp, "dill", {"dill/__init__.py": ""})
        write_dist(sp, "boto3", {"boto3/__init__.py": ""})
        write_dist(sp, "pip", {"pip/__init__.py": ""})
        write_dist(sp, "setuptools", {"setuptools/__init__.py": "",
                                       "distutils-precedence.pth": "import os\n"})
        write_dist(sp, "my-project", {"workflow/__init__.py": "", "workflow/main.py": "",
                                      "util/__init__.py": ""})
        write_dist(sp, "purelib-dep", {"purelib_dep.py": "VALUE = 1\n"})
        write_tree(sp, {"copied/__init__.py": "", "points-at-base.pth": "/usr/lib/python3\n",
                        "_virtualenv.py": "", "_virtualenv.pth": "import _virtualenv\n"})
        return sp

    def test_dependency_closure_follows_requirements_without_extras(self, site_packages):
        closure = dependency_closure(["toil"], search_path=[str(site_packages)])
        assert closure == {"toil", "dill"}

    def test_ships_the_users_code_and_nothing_workers_have(self, site_packages, environment):
        env = environment([site_packages], venv_site_packages=[site_packages])
        module = find_module("workflow.main", [str(site_packages)])
        plan = locate(module, environment=env)
        assert [(r.kind, r.source) for r in plan.roots] == [
            (RootKind.SITE_PACKAGES, site_packages.resolve())
        ]
        tops = {name.split("/")[1] for name in shipped(scan(plan))}
        assert {"workflow", "util", "purelib_dep.py", "copied", "boto3"} <= tops
        assert not tops & {"toil", "dill", "pip", "setuptools", "_virtualenv.py",
                           "_virtualenv.pth", "distutils-precedence.pth", "points-at-base.pth"}
        assert any(t.startswith("my_project-1.0.dist-info") for t in tops)
        assert not any(t.startswith(("toil-", "pip-", "dill-")) for t in tops)

    def test_named_distributions_are_left_to_the_workers(self, site_packages, environment):
        env = environment([site_packages], venv_site_packages=[site_packages])
        options = DeployOptions(exclude_distributions=("purelib-dep",))
        plan = locate(None, environment=env, options=options)
        assert not any("purelib_dep" in name for name in shipped(scan(plan, options)))

    def test_editable_pointer_files_do_not_ship_but_sources_do(self, tmp_path, environment):
        sp = _venv_site_packages(tmp_path)
        src = write_tree(tmp_path / "checkout" / "src", {"edpkg/__init__.py": "X = 1\n"})
        write_dist(sp, "edpkg", {"__editable__.edpkg-1.0.pth": f"{src}\n"},
                   direct_url=json.dumps({"url": f"file://{src.parent}",
                                          "dir_info": {"editable": True}}))
        write_dist(sp, "other", {"other.py": ""})
        plan = locate(None, environment=environment([sp, src], venv_site_packages=[sp]))
        assert [(r.kind, r.distribution) for r in plan.roots] == [
            (RootKind.SITE_PACKAGES, None), (RootKind.EDITABLE, "edpkg")]
        files = shipped(scan(plan))
        assert "r0/other.py" in files and "r1/edpkg/__init__.py" in files
        assert "r1/edpkg-1.0.dist-info/METADATA" in files
        assert not any("__editable__" in f or "edpkg-1.0.dist-info" in f
                       for f in files if f.startswith("r0/"))

    def test_per_user_site_packages_is_refused_with_advice(self, tmp_path, environment):
        user_site = write_tree(tmp_path / "user-site", SEED_PACKAGE_TREE)
        env = environment([user_site], user_site=user_site)
        with pytest.raises(BundleError, match=r"per-user site-packages.*virtualenv"):
            locate(find_module("workflow.main", [str(user_site)]), environment=env)


def test_a_module_that_comes_with_toil_needs_no_root(environment):
    import toil

    toil_root = Path(toil.__file__).parents[1]
    plan = locate(find_module("toil.worker", [str(toil_root)]), environment=environment([]))
    assert all(r.kind is not RootKind.PACKAGE_ROOT for r in plan.roots)
    statuses = {e.path: e.status for e in plan.entries}
    assert statuses[str(toil_root.resolve())] == "on-workers"


def test_a_venvs_site_packages_that_do_not_exist_are_not_roots(tmp_path, monkeypatch):
    """Debian's Python names ``local/lib/pythonX.Y/dist-packages`` and others for every
    virtualenv; the venv has none of them, and they must not become roots to walk."""
    real = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    real.mkdir(parents=True)
    missing = tmp_path / "venv" / "local" / "lib" / "python3.11" / "dist-packages"
    original = site.getsitepackages

    def getsitepackages(prefixes=None):
        if prefixes == [sys.prefix]:
            return [str(real), str(missing)]
        return original(prefixes)

    monkeypatch.setattr(site, "getsitepackages", getsitepackages)
    monkeypatch.setattr(sys, "base_prefix", "/nonexistent-base" if sys.prefix == sys.base_prefix
                        else sys.base_prefix)
    assert PythonEnvironment.current().venv_site_packages == (real,)
