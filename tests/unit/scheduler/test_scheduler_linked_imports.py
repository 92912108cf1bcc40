"""The leader's warning about inputs a file job store holds as links to the leader's files."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from toil_mesos.scheduler._linked_imports import find_linked_imports, warn_about_linked_imports


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A file job store holding one copied input, one link inside it, one link to the leader."""
    leader = tmp_path / "leader" / "data"
    leader.mkdir(parents=True)
    (leader / "words.txt").write_text("pear\n")
    files = tmp_path / "store" / "files-flat" / "file-1"
    files.mkdir(parents=True)
    (files / "copied.txt").write_text("pear\n")
    (files / "inside.txt").symlink_to(files / "copied.txt")
    (files / "words.txt").symlink_to(leader / "words.txt")
    return tmp_path / "store"


def test_finds_only_links_that_leave_the_job_store(store: Path, tmp_path: Path):
    links = find_linked_imports(store)
    assert [(link.name, target) for link, target in links] == [
        ("words.txt", tmp_path / "leader" / "data" / "words.txt")]


def test_links_into_a_shared_path_are_fine(store: Path, tmp_path: Path):
    assert find_linked_imports(store, [tmp_path / "leader"]) == []


def test_warns_once_naming_the_link_and_the_option(store: Path, caplog):
    caplog.set_level(logging.WARNING, logger="toil_mesos")
    warn_about_linked_imports(SimpleNamespace(symlinkImports=True, jobStore=f"file:{store}"))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "words.txt" in warnings[0] and "--symlinkImports False" in warnings[0]


@pytest.mark.parametrize("config", [
    {"symlinkImports": False},  # inputs were copied
    {"symlinkImports": True, "jobStore": "aws:us-west-2:store"},  # not a file job store
])
def test_silent_when_inputs_cannot_be_links(store: Path, caplog, config):
    caplog.set_level(logging.WARNING, logger="toil_mesos")
    warn_about_linked_imports(SimpleNamespace(**{"jobStore": str(store), **config}))
    assert caplog.records == []
