"""What the walk leaves out, and why: exclusions, links, special files, the size limit."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
from deploy_trees import write_tree

from toil_mesos.deploy import DeployOptions, locate, scan, script_module
from toil_mesos.deploy._units import human_size
from toil_mesos.deploy.scan import Contents
from toil_mesos.errors import BundleError


def scan_script_dir(root: Path, environment, options: DeployOptions | None = None) -> Contents:  # type: ignore[no-untyped-def]
    (root / "wf.py").write_text("")
    plan = locate(script_module(root / "wf.py"), environment=environment([root]), options=options)
    return scan(plan, options)


def names(contents: Contents) -> set[str]:
    return {f.arcname.removeprefix("r0/") for f in contents.files}


def reasons(contents: Contents) -> dict[str, str]:
    return {s.path: s.reason for s in contents.skipped}


def test_bytecode_vcs_tool_caches_and_nested_virtualenvs_are_left_out(tmp_path, environment):
    root = write_tree(tmp_path / "proj", {
        "mod.py": "",
        "mod.pyc": b"\0",
        "__pycache__/mod.cpython-311.pyc": b"\0",
        "pkg/__pycache__/x.pyc": b"\0",
        "pkg/__init__.py": "",
        ".git/config": "",
        ".hg/store": "",
        ".tox/py311/x": "",
        ".mypy_cache/x": "",
        "venv/pyvenv.cfg": "home = /usr\n",
        "venv/lib/python3.11/site-packages/big.py": "",
        "envs/conda/conda-meta/history": "",
    })
    contents = scan_script_dir(root, environment)
    assert names(contents) == {"mod.py", "pkg/__init__.py", "wf.py"}
    why = reasons(contents)
    assert why[str(root / ".git")] == "version control or tool cache"
    assert why[str(root / "venv")] == "a virtualenv inside the root"
    assert why[str(root / "envs" / "conda")] == "a virtualenv inside the root"
    assert not any("__pycache__" in p for p in why)  # bytecode is dropped silently


def test_gitignore_rules_apply_at_every_level_with_negation(tmp_path, environment):
    root = write_tree(tmp_path / "proj", {
        ".gitignore": "*.log\nbuild/\n!keep.log\n",
        "a.log": "", "keep.log": "", "build/out.py": "",
        "sub/.gitignore": "secret.txt\n!*.log\n",
        "sub/secret.txt": "", "sub/b.log": "", "sub/fine.txt": "",
    })
    assert names(scan_script_dir(root, environment)) == {
        ".gitignore", "keep.log", "sub/.gitignore", "sub/b.log", "sub/fine.txt", "wf.py"}


def test_gitignore_above_the_root_counts_up_to_the_checkout_top(tmp_path, environment):
    write_tree(tmp_path, {"repo/.git/HEAD": "", "repo/.gitignore": "*.tmp\n",
                          "outside/.gitignore": "*.py\n"})
    root = write_tree(tmp_path / "repo" / "code", {"a.tmp": "", "b.py": ""})
    assert names(scan_script_dir(root, environment)) == {"b.py", "wf.py"}


def test_user_exclude_patterns(tmp_path, environment):
    root = write_tree(tmp_path / "proj", {"data/big.bin": "", "tests/t.py": "", "keep.py": ""})
    options = DeployOptions(excludes=("data/", "tests"))
    contents = scan_script_dir(root, environment, options)
    assert names(contents) == {"keep.py", "wf.py"}
    assert reasons(contents)[str(root / "data")] == "matches an exclude pattern"


def test_links_inside_the_root_are_followed_links_out_of_it_are_not(tmp_path, environment):
    outside = write_tree(tmp_path / "outside", {"secret.py": "SECRET = 1\n", "pkg/m.py": ""})
    root = write_tree(tmp_path / "proj", {"real/mod.py": "X = 1\n"})
    (root / "alias.py").symlink_to(root / "real" / "mod.py")
    (root / "realdir").symlink_to(root / "real", target_is_directory=True)
    (root / "leak.py").symlink_to(outside / "secret.py")
    (root / "leakdir").symlink_to(outside / "pkg", target_is_directory=True)
    (root / "broken.py").symlink_to(root / "nowhere.py")
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)
    contents = scan_script_dir(root, environment)
    assert names(contents) == {"real/mod.py", "alias.py", "realdir/mod.py", "wf.py"}
    alias = next(f for f in contents.files if f.arcname == "r0/alias.py")
    assert alias.source == root / "real" / "mod.py"  # content read through the link
    why = reasons(contents)
    assert why[str(root / "leak.py")].startswith("a link to ")
    assert "outside the root" in why[str(root / "leakdir")]
    assert why[str(root / "broken.py")] == "a broken link"
    assert why[str(root / "real" / "loop")] == "a link back to a parent directory"


def test_sockets_and_fifos_are_left_out(tmp_path, environment):
    root = write_tree(tmp_path / "proj", {"mod.py": ""})
    os.mkfifo(root / "pipe")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(root / "sock"))
        contents = scan_script_dir(root, environment)
    finally:
        server.close()
    assert names(contents) == {"mod.py", "wf.py"}
    why = reasons(contents)
    assert why[str(root / "pipe")].startswith("not a regular file")
    assert why[str(root / "sock")].startswith("not a regular file")


def test_an_unreadable_file_is_named(tmp_path, environment, monkeypatch):
    root = write_tree(tmp_path / "proj", {"locked.py": ""})
    # Root reads every file, so simulate what any other user would meet.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: not str(p).endswith("locked.py")
                        and real_access(p, m))
    with pytest.raises(BundleError, match=r"cannot read .*locked\.py: permission denied"):
        scan_script_dir(root, environment)


def test_size_limit_stops_the_walk_early_and_lists_the_largest_entries(tmp_path, environment):
    root = write_tree(tmp_path / "proj", {f"data/{i:03}.bin": b"x" * 100_000 for i in range(200)})
    write_tree(root, {"huge.bin": b"y" * 400_000})
    options = DeployOptions(max_bytes=1_000_000, option_names={"max_bytes": "--mesosMaxBytes"})
    with pytest.raises(BundleError) as error:
        scan_script_dir(root, environment, options)
    message = str(error.value)
    assert "larger than the limit of 976.6 KiB" in message
    walked = int(re.search(r"after (\d+) files", message)[1])  # type: ignore[index]
    assert walked < 20  # it stopped as soon as the limit was crossed, not after 200 files
    assert f"{root}/data/" in message
    assert "--mesosMaxBytes" in message


def test_size_limit_lists_only_entries_inside_the_root_with_sizes_that_add_up(tmp_path,
                                                                              environment):
    # A script directory two levels below tmp_path, like a script in /var/tmp/x/y: nothing
    # above the root (tmp_path, the directory between) may be listed, and a directory counts
    # every file below it however deep.
    root = write_tree(tmp_path / "between" / "proj",
                      {"0top.bin": b"t" * 100_000,  # walked first: its parents are the root's
                       **{f"a/b/c/d/{i}.bin": b"x" * 300_000 for i in range(5)}})
    options = DeployOptions(max_bytes=1_000_000)
    with pytest.raises(BundleError) as error:
        scan_script_dir(root, environment, options)
    listed = re.findall(r"^\s+(\d+(?:\.\d+)? \w+)\s+(\S+)$", str(error.value), re.MULTILINE)
    paths = [path for _, path in listed]
    assert paths, str(error.value)
    assert all(path.startswith(f"{root}/") and path != f"{root}/" for path in paths), paths
    sizes = dict((path, size) for size, path in listed)
    deepest = f"{root}/a/b/c/d/"
    for directory in ("a/", "a/b/", "a/b/c/"):
        assert sizes[f"{root}/{directory}"] == sizes[deepest], sizes
    files = [path for path in paths if not path.endswith("/")]
    walked = int(re.search(r"after (\d+) files", str(error.value))[1])  # type: ignore[index]
    assert len(files) == walked and f"{root}/0top.bin" in files
    assert sizes[deepest] == human_size(300_000 * (walked - 1))
