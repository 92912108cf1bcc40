"""build(): deterministic archives, the unchanged-rebuild cache, no partial output."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from deploy_trees import SEED_PACKAGE_TREE, write_tree

from toil_mesos.deploy import build, find_module, locate, scan
from toil_mesos.deploy._compression import decompressing_reader
from toil_mesos.deploy.manifest import MANIFEST_NAME, Manifest, RootKind
from toil_mesos.deploy.scan import Contents
from toil_mesos.errors import BundleError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = write_tree(tmp_path / "proj", {**SEED_PACKAGE_TREE, "run.sh": "#!/bin/sh\n"})
    (root / "run.sh").chmod(0o750)
    (root / "util" / "sort" / "quick.py").chmod(0o600)
    return root


@pytest.fixture
def contents(project: Path, environment) -> Contents:  # type: ignore[no-untyped-def]
    module = find_module("workflow.main", [str(project)])
    return scan(locate(module, environment=environment([project])))


def open_bundle(archive: Path) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(decompress(archive.read_bytes())), mode="r:")


def decompress(data: bytes) -> bytes:
    with decompressing_reader(io.BytesIO(data)) as reader:
        return reader.read()


def members(archive: Path) -> list[tarfile.TarInfo]:
    with open_bundle(archive) as tar:
        return tar.getmembers()


def test_archive_is_named_by_its_sha256_and_holds_a_manifest_first(contents, tmp_path):
    bundle = build(contents, tmp_path / "out", toil_version="9.6.0")
    data = bundle.path.read_bytes()
    assert bundle.path.name == f"{hashlib.sha256(data).hexdigest()}.tar.zst"
    assert bundle.sha256 == hashlib.sha256(data).hexdigest()
    listed = members(bundle.path)
    assert listed[0].name == MANIFEST_NAME
    assert [m.name for m in listed[1:]] == sorted(m.name for m in listed[1:])
    with open_bundle(bundle.path) as tar:
        manifest = Manifest.from_json(tar.extractfile(MANIFEST_NAME).read())  # type: ignore[union-attr]
        quick = tar.extractfile("r0/util/sort/quick.py").read()  # type: ignore[union-attr]
    assert manifest == bundle.manifest
    assert manifest.module == "workflow.main" and manifest.toil == "9.6.0"
    assert [(r.name, r.kind, r.entry) for r in manifest.roots] == [
        ("r0", RootKind.PACKAGE_ROOT, "r0")]
    by_path = {f.path: f for f in manifest.files}
    assert by_path["r0/util/sort/quick.py"].sha256 == hashlib.sha256(quick).hexdigest()
    assert by_path["r0/util/sort/quick.py"].size == len(quick)


def test_metadata_is_normalised_and_only_the_executable_bit_survives(contents, tmp_path):
    bundle = build(contents, tmp_path / "out")
    by_name = {m.name: m for m in members(bundle.path)}
    assert by_name["r0/run.sh"].mode == 0o755
    assert by_name["r0/util/sort/quick.py"].mode == 0o644
    assert all(m.isreg() for m in by_name.values())
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in by_name.values()} == {
        (0, 0, 0, "", "")}


def test_identical_inputs_give_byte_identical_archives(project, environment, tmp_path):
    first = build(scan(locate(find_module("workflow.main", [str(project)]),
                              environment=environment([project]))), tmp_path / "a")
    # Touch every file: times change, content does not.
    for path in project.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    second = build(scan(locate(find_module("workflow.main", [str(project)]),
                               environment=environment([project]))), tmp_path / "b")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == second.sha256


def test_changed_content_gives_a_new_bundle(project, contents, environment, tmp_path):
    first = build(contents, tmp_path / "out")
    (project / "util" / "sort" / "quick.py").write_text("def sort(xs):\n    return xs\n")
    again = scan(locate(find_module("workflow.main", [str(project)]),
                        environment=environment([project])))
    second = build(again, tmp_path / "out")
    assert second.sha256 != first.sha256
    assert not second.reused


def test_unchanged_rebuild_reads_no_file_and_reuses_the_archive(contents, tmp_path, monkeypatch):
    first = build(contents, tmp_path / "out")
    reads: list[str] = []
    real_open = Path.open

    def spying_open(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spying_open)
    second = build(contents, tmp_path / "out")
    assert second.reused and second.sha256 == first.sha256
    assert not [r for r in reads if "/proj/" in r]


def test_a_file_changed_during_the_build_leaves_no_partial_bundle(contents, project, tmp_path):
    out = tmp_path / "out"
    quick = project / "util" / "sort" / "quick.py"
    quick.write_text(quick.read_text() + "# edited after the scan\n")
    with pytest.raises(BundleError, match=r"quick\.py changed while the bundle was being built"):
        build(contents, out)
    assert [p.name for p in out.iterdir() if not p.name.startswith(".build-cache")] == []


def test_an_unwritable_output_directory_is_named(contents, tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a directory")
    with pytest.raises(BundleError, match=f"cannot use {blocker} as the bundle directory"):
        build(contents, blocker)


def test_archive_size_is_small_and_content_round_trips(contents, tmp_path):
    bundle = build(contents, tmp_path / "out")
    with open_bundle(bundle.path) as tar:
        main = tar.extractfile("r0/workflow/main.py").read()  # type: ignore[union-attr]
    assert main == b"from util.sort.quick import sort\n"


def test_modules_are_found_in_a_bundle_by_name(contents):
    # Jobs made on workers record the staged path, so coverage is checked by module name.
    assert contents.ships_module("workflow.main")
    assert contents.ships_module("util.sort")  # a package's __init__.py
    assert not contents.ships_module("workflow.missing")
    assert not contents.ships_module("elsewhere")
