"""Helpers for the deploy tests: real trees and hand-installed distributions in temp dirs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

TreeSpec = Mapping[str, str | bytes]


def write_tree(root: Path, files: TreeSpec) -> Path:
    """Create *files* (relative path -> content) under *root*; return *root*."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def write_dist(
    site_packages: Path,
    name: str,
    files: TreeSpec,
    *,
    version: str = "1.0",
    requires: Sequence[str] = (),
    direct_url: str | None = None,
) -> Path:
    """Install a distribution by hand, the way pip lays it out: files, dist-info, RECORD."""
    write_tree(site_packages, files)
    info = site_packages / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(metadata) + "\n")
    recorded = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    if direct_url is not None:
        (info / "direct_url.json").write_text(direct_url)
        recorded.append(f"{info.name}/direct_url.json")
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in recorded))
    return info



SEED_PACKAGE_TREE: dict[str, str] = {
    "util/__init__.py": "",
    "util/sort/__init__.py": "",
    "util/sort/quick.py": "def sort(xs):\n    return sorted(xs)\n",
    "workflow/__init__.py": "",
    "workflow/main.py": "from util.sort.quick import sort\n",
}

SEED_SIBLINGS_TREE: dict[str, str] = {
    "userScript.py": "import utilities\n",
    "utilities.py": "def helper():\n    return 42\n",
}
