"""The seed's layouts, end to end on the leader and a worker that cannot see the leader's files.

Each test builds a real tree (and for installs, a real virtualenv with real ``pip install``),
builds the bundle with ``python -m toil_mesos bundle build`` run by the leader's interpreter,
stages it, renames the leader's directory away and imports the user's code in a fresh process.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from deploy_venvs import (
    PROJECT_SITE,
    PROJECT_SRC,
    LeaderVenv,
    build_bundle,
    clean_env,
    import_probe,
    make_venv,
    manifest_of,
    run,
    run_staged,
    toil_mesos_cli,
)

from toil_mesos.deploy.manifest import RootKind
from toil_mesos.deploy.stage import stage

pytestmark = pytest.mark.integration

SORT = "def sort(xs):\n    return sorted(xs)\n"
MAIN = "from util.sort.quick import sort\n\ndef run():\n    return sort([3, 1, 2])\n"


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def seed_project(root: Path, *, name: str = "my-project", deps: str = "") -> Path:
    return write(root, {
        "util/__init__.py": "",
        "util/sort/__init__.py": "",
        "util/sort/quick.py": SORT,
        "workflow/__init__.py": "",
        "workflow/main.py": MAIN,
        "pyproject.toml": f"""
            [build-system]
            requires = ["setuptools>=64"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "{name}"
            version = "1.2.3"
            dependencies = [{deps}]
            [tool.setuptools]
            packages = ["workflow", "util", "util.sort"]
            """,
    })


def tiny_dependency(root: Path) -> Path:
    """A pure-Python third-party distribution, installable offline."""
    return write(root, {
        "tinydep/__init__.py": "ANSWER = 42\n",
        "pyproject.toml": """
            [build-system]
            requires = ["setuptools>=64"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "tinydep"
            version = "0.1"
            """,
    })


@pytest.fixture
def leader(tmp_path: Path) -> Path:
    """Everything the leader has and workers must not see lives under this directory."""
    return tmp_path / "leader"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "bundles"


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "worker-cache"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def assert_from_cache(result: dict[str, object], cache: Path, *modules: str) -> None:
    for name in modules:
        assert str(result[name]).startswith(str(cache)), f"{name} came from {result[name]}"


class TestCheckouts:
    def test_sibling_modules_of_a_script(self, leader, out, cache, elsewhere):
        proj = write(leader / "my_project", {
            "userScript.py": "#!/usr/bin/env python\nimport utilities\n",
            "utilities.py": "def helper():\n    return 'sibling'\n",
        })
        venv = make_venv(leader / "venv")
        archive = build_bundle(venv, str(proj / "userScript.py"), cwd=elsewhere, out=out)
        manifest = manifest_of(archive)
        assert manifest.module == "userScript"
        assert [(r.kind, r.source) for r in manifest.roots] == [(RootKind.SCRIPT_DIR, str(proj))]
        staged = run_staged(archive, hide=leader, cache=cache,
                            code=import_probe("userScript", "utilities",
                                              call="importlib.import_module('utilities').helper()"))
        assert staged.result["call"] == "sibling"
        assert_from_cache(staged.result, cache, "userScript", "utilities")

    def test_package_hierarchy_with_dash_m_from_the_project_root(self, leader, out, cache):
        proj = seed_project(leader / "my_project")
        venv = make_venv(leader / "venv")
        archive = build_bundle(venv, "--module", "workflow.main", cwd=proj, out=out)
        manifest = manifest_of(archive)
        assert [(r.kind, r.source) for r in manifest.roots] == [(RootKind.PACKAGE_ROOT, str(proj))]
        # Toil would ship only workflow/; util/ beside it must ship too.
        assert {"r0/workflow/main.py", "r0/util/sort/quick.py"} <= {f.path for f in manifest.files}
        staged = run_staged(archive, hide=leader, cache=cache,
                            code=import_probe("workflow.main", "util.sort.quick",
                                              call="importlib.import_module('workflow.main').run()"))
        assert staged.result["call"] == [1, 2, 3]
        assert_from_cache(staged.result, cache, "workflow.main", "util.sort.quick")

    def test_package_hierarchy_found_through_pythonpath(self, leader, out, cache, elsewhere):
        proj = seed_project(leader / "my_project")
        venv = make_venv(leader / "venv")
        archive = build_bundle(venv, "--module", "workflow.main", cwd=elsewhere, out=out,
                               env=clean_env(PYTHONPATH=str(proj)))
        assert [r.source for r in manifest_of(archive).roots] == [str(proj)]
        staged = run_staged(archive, hide=leader, cache=cache,
                            code=import_probe("workflow.main",
                                              call="importlib.import_module('workflow.main').run()"))
        assert staged.result["call"] == [1, 2, 3]

    def test_a_root_that_is_a_package_fails_with_our_message(self, leader, out):
        proj = seed_project(leader / "my_project")
        venv = make_venv(leader / "venv")
        proc = toil_mesos_cli(venv, "bundle", "build", "--module", "main", "-o", str(out),
                              cwd=proj / "workflow", check=False)
        assert proc.returncode == 2
        assert f"{proj / 'workflow' / '__init__.py'} makes" in proc.stderr
        assert "python -m workflow.main" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not out.exists() or not list(out.iterdir())

    def test_size_limit_error_leaves_nothing_behind(self, leader, out, elsewhere):
        proj = write(leader / "scratch", {"wf.py": "", "notes.txt": "x" * 5000})
        (proj / "big.dat").write_bytes(b"\0" * 200_000)
        venv = make_venv(leader / "venv")
        proc = toil_mesos_cli(venv, "bundle", "build", str(proj / "wf.py"), "--max-bytes",
                              "100000", "-o", str(out), cwd=elsewhere, check=False)
        assert proc.returncode == 2
        assert "larger than the limit" in proc.stderr and str(proj / "big.dat") in proc.stderr
        assert not out.exists() or not list(out.iterdir())


class TestVirtualenvInstalls:
    @pytest.fixture
    def venv(self, leader: Path) -> LeaderVenv:
        # With pip and setuptools inside, so their absence from bundles means something.
        venv = make_venv(leader / "venv", with_pip=True)
        venv.pip(str(tiny_dependency(leader / "src" / "tinydep")))
        return venv

    def check_installed_project(self, archive: Path, venv: LeaderVenv, leader: Path,
                                cache: Path) -> None:
        manifest = manifest_of(archive)
        assert [(r.kind, r.source) for r in manifest.roots] == [
            (RootKind.SITE_PACKAGES, str(venv.site_packages))]
        tops = {f.path.split("/")[1] for f in manifest.files}
        assert {"workflow", "util", "tinydep"} <= tops
        for absent in ("pip", "setuptools", "_distutils_hack", "toil", "toil_mesos",
                       "_appliance.pth", "distutils-precedence.pth"):
            assert absent not in tops
        assert not any(t.startswith(("pip-", "setuptools-")) for t in tops)
        staged = run_staged(archive, hide=leader, cache=cache,
                            code=import_probe("workflow.main", "tinydep",
                                              call="importlib.import_module('workflow.main').run()"))
        assert staged.result["call"] == [1, 2, 3]
        assert_from_cache(staged.result, cache, "workflow.main", "tinydep")

    def test_pip_install_dot(self, venv, leader, out, cache, elsewhere):
        proj = seed_project(leader / "my_project", deps='"tinydep"')
        venv.pip(".", cwd=proj)
        archive = build_bundle(venv, "--module", "workflow.main", cwd=elsewhere, out=out)
        self.check_installed_project(archive, venv, leader, cache)
        files = {f.path for f in manifest_of(archive).files}
        assert any(p.startswith("r0/my_project-1.2.3.dist-info/") for p in files)

    def test_pip_install_of_a_built_wheel(self, venv, leader, out, cache, elsewhere):
        proj = seed_project(leader / "my_project", deps='"tinydep"')
        wheels = leader / "wheels"
        # `pip wheel` stands in for a project published to PyPI: `pip install my-project`.
        run([str(venv.python), "-m", "pip", "wheel", "--quiet", "--no-index",
             "--no-build-isolation", "--no-deps", "-w", str(wheels), "."], cwd=proj)
        venv.pip(str(next(wheels.glob("my_project-*.whl"))))
        archive = build_bundle(venv, "--module", "workflow.main", cwd=elsewhere, out=out)
        self.check_installed_project(archive, venv, leader, cache)

    def test_cp_r_into_site_packages(self, venv, leader, out, cache, elsewhere):
        proj = seed_project(leader / "my_project")
        for package in ("workflow", "util"):
            shutil.copytree(proj / package, venv.site_packages / package)
        archive = build_bundle(venv, "--module", "workflow.main", cwd=elsewhere, out=out)
        self.check_installed_project(archive, venv, leader, cache)


def setuptools_pyproject(name: str, *, packages: tuple[str, ...] = ()) -> str:
    listed = f"[tool.setuptools]\npackages = {list(packages)!r}\n" if packages else ""
    return (
        '[build-system]\nrequires = ["setuptools>=64"]\n'
        'build-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "2.0"\n{listed}'
    ).replace("'", '"')


EDITABLE_LAYOUTS = {
    "setuptools-src-path-entry": ({
        "src/edpkg/__init__.py": "WHERE = 'src layout'\n",
        "pyproject.toml": setuptools_pyproject("edpkg"),
    }, ()),
    "setuptools-flat-finder": ({
        "edpkg/__init__.py": "WHERE = 'flat layout'\n",
        "edhelpers/__init__.py": "",
        "pyproject.toml": setuptools_pyproject("edpkg", packages=("edpkg", "edhelpers")),
    }, ()),
    "setuptools-strict-link-tree": ({
        "edpkg/__init__.py": "WHERE = 'strict'\n",
        "edhelpers/__init__.py": "",
        ".gitignore": "build/\n",
        "pyproject.toml": setuptools_pyproject("edpkg", packages=("edpkg", "edhelpers")),
    }, ("--config-settings", "editable_mode=strict")),
    "hatchling": ({
        "edpkg/__init__.py": "WHERE = 'hatchling'\n",
        "pyproject.toml": """
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"
            [project]
            name = "edpkg"
            version = "2.0"
            """,
    }, ()),
}


class TestEditableInstalls:
    @pytest.mark.parametrize("layout", sorted(EDITABLE_LAYOUTS))
    def test_editable_install_ships_its_sources_and_metadata(self, layout, leader, out, cache,
                                                             elsewhere):
        files, extra = EDITABLE_LAYOUTS[layout]
        package = "src/edpkg" if "src" in layout else "edpkg"
        jobs = {f"{package}/jobs.py": "from edpkg import WHERE\n"}
        proj = write(leader / "checkout", {**files, **jobs})
        venv = make_venv(leader / "venv")
        # Strict mode links only the files present at install time, so jobs.py exists first.
        venv.pip("--no-deps", *extra, "-e", str(proj))
        archive = build_bundle(venv, "--module", "edpkg.jobs", cwd=elsewhere, out=out)
        manifest = manifest_of(archive)
        assert [(r.kind, r.distribution) for r in manifest.roots] == [(RootKind.EDITABLE, "edpkg")]
        assert not any("__editable__" in f.path for f in manifest.files)
        staged = run_staged(archive, hide=leader, cache=cache,
                            code=import_probe("edpkg.jobs", version_of="edpkg",
                                              call="importlib.import_module('edpkg.jobs').WHERE"))
        assert staged.result["version"] == "2.0"
        assert staged.result["call"] == files[next(k for k in files if k.endswith(
            "edpkg/__init__.py"))].split("'")[1]
        assert_from_cache(staged.result, cache, "edpkg.jobs")

    def test_legacy_egg_link(self, leader, out, cache, elsewhere):
        # `setup.py develop` left these; current pip no longer writes them, so lay them out
        # exactly as setuptools' develop command did.
        proj = write(leader / "checkout", {"oldpkg/__init__.py": "OLD = True\n",
                                           "oldpkg/jobs.py": "from oldpkg import OLD\n",
                                           "oldpkg.egg-info/PKG-INFO":
                                           "Metadata-Version: 1.1\nName: oldpkg\nVersion: 0.9\n"})
        venv = make_venv(leader / "venv")
        (venv.site_packages / "oldpkg.egg-link").write_text(f"{proj}\n.\n")
        (venv.site_packages / "easy-install.pth").write_text(f"{proj}\n")
        archive = build_bundle(venv, "--module", "oldpkg.jobs", cwd=elsewhere, out=out)
        assert [(r.kind, r.source) for r in manifest_of(archive).roots] == [
            (RootKind.EDITABLE, str(proj))]
        staged = run_staged(archive, hide=leader, cache=cache,
                            code=import_probe("oldpkg.jobs", version_of="oldpkg",
                                              call="importlib.import_module('oldpkg.jobs').OLD"))
        assert staged.result == {**staged.result, "call": True, "version": "0.9"}

    def test_checkout_plus_virtualenv_dependencies(self, leader, out, cache):
        proj = seed_project(leader / "my_project")
        write(proj, {"workflow/main.py": MAIN + "import tinydep\nANSWER = tinydep.ANSWER\n"})
        venv = make_venv(leader / "venv")
        venv.pip(str(tiny_dependency(leader / "src" / "tinydep")))
        archive = build_bundle(venv, "--module", "workflow.main", cwd=proj, out=out)
        assert [r.kind for r in manifest_of(archive).roots] == [
            RootKind.PACKAGE_ROOT, RootKind.SITE_PACKAGES]
        staged = run_staged(archive, hide=leader, cache=cache,
                            code=import_probe("workflow.main", "tinydep",
                                              call="importlib.import_module('workflow.main').ANSWER"))
        assert staged.result["call"] == 42
        assert len(staged.staged.roots) == 2
        assert_from_cache(staged.result, cache, "workflow.main", "tinydep")


class TestEggsNativeAndShared:
    def test_zipped_egg_dependency_ships_as_a_zip_root(self, leader, out, cache):
        proj = seed_project(leader / "my_project")
        write(proj, {"workflow/main.py": MAIN + "import eggdep\n"})
        venv = make_venv(leader / "venv")
        egg = venv.site_packages / "eggdep-1.0-py3.11.egg"
        with zipfile.ZipFile(egg, "w") as archive:
            archive.writestr("eggdep/__init__.py", "FROM = 'egg'\n")
        (venv.site_packages / "easy-install.pth").write_text(f"./{egg.name}\n")
        archive = build_bundle(venv, "--module", "workflow.main", cwd=proj, out=out)
        manifest = manifest_of(archive)
        assert [(r.kind, r.entry) for r in manifest.roots] == [
            (RootKind.PACKAGE_ROOT, "r0"), (RootKind.EGG, f"r1/{egg.name}")]
        staged = run_staged(archive, hide=leader, cache=cache,
                            code=import_probe("workflow.main", "eggdep",
                                              call="importlib.import_module('eggdep').FROM"))
        assert staged.result["call"] == "egg"
        assert f"{egg.name}/eggdep" in str(staged.result["eggdep"])

    def test_native_code_is_named_with_its_distribution(self, leader, out, elsewhere):
        proj = seed_project(leader / "my_project")
        write(proj, {"util/fast.cpython-{}{}-x86_64-linux-gnu.so".format(
            *sys.version_info[:2]): "not really ELF, detection is by name\n"})
        write(proj, {"MANIFEST.in": "recursive-include util *.so\n"})
        venv = make_venv(leader / "venv")
        venv.pip("--no-deps", ".", cwd=proj)
        inspect = toil_mesos_cli(venv, "bundle", "inspect", "--json", "--module",
                                 "workflow.main", cwd=elsewhere)
        report = json.loads(inspect.stdout)
        assert [(n["distribution"], n["compatible"]) for n in report["native"]] == [
            ("my-project", True)]
        refused = toil_mesos_cli(venv, "bundle", "build", "--native", "refuse", "--module",
                                 "workflow.main", "-o", str(out), cwd=elsewhere, check=False)
        assert refused.returncode == 2
        assert "refused by --native=refuse" in refused.stderr and "my-project" in refused.stderr
        assert not out.exists() or not list(out.iterdir())

    def test_extensions_for_another_python_are_always_refused(self, leader, out, elsewhere):
        proj = write(leader / "scripts", {"wf.py": "", "old.cpython-39-x86_64-linux-gnu.so": ""})
        venv = make_venv(leader / "venv")
        proc = toil_mesos_cli(venv, "bundle", "build", str(proj / "wf.py"), "-o", str(out),
                              cwd=elsewhere, check=False)
        assert proc.returncode == 2
        assert "built for another Python" in proc.stderr and "old.cpython-39" in proc.stderr

    def test_shared_filesystem_code_is_not_shipped(self, tmp_path, out, cache, elsewhere):
        shared = tmp_path / "nfs"
        proj = seed_project(shared / "my_project")
        venv = make_venv(tmp_path / "venv")
        archive = build_bundle(venv, "--module", "workflow.main", "--shared-path", str(shared),
                               cwd=proj, out=out)
        manifest = manifest_of(archive)
        assert [(r.kind, r.entry) for r in manifest.roots] == [(RootKind.SHARED, str(proj))]
        assert manifest.files == ()
        staged = stage(archive, archive.name.split(".")[0], cache_dir=cache)
        assert staged.roots == (proj,)

    def test_inspect_explains_every_sys_path_entry(self, leader, elsewhere):
        proj = seed_project(leader / "my_project")
        venv = make_venv(leader / "venv")
        proc = toil_mesos_cli(venv, "bundle", "inspect", "--json", "--module", "workflow.main",
                              cwd=elsewhere, env=clean_env(PYTHONPATH=str(proj)))
        report = json.loads(proc.stdout)
        status = {e["path"]: (e["status"], e["reason"]) for e in report["sys_path"]}
        assert status[str(proj)] == ("shipped", "as package_root")
        assert status[str(elsewhere)] == ("not-shipped", "holds none of the user's code")
        assert status[str(Path(PROJECT_SITE).resolve())] == ("on-workers", "holds toil")
        assert status[str(Path(PROJECT_SRC).resolve())] == ("on-workers", "holds toil_mesos")
        assert any(s == "on-workers" and "standard library" in r for s, r in status.values())
        assert len(report["sha256"]) == 64 and report["files"] == 6  # 5 modules + pyproject
        text = toil_mesos_cli(venv, "bundle", "inspect", "--module", "workflow.main",
                              cwd=elsewhere, env=clean_env(PYTHONPATH=str(proj))).stdout
        assert "package_root" in text and report["sha256"] in text
