"""Find the source roots of editable installs in a site-packages directory.

An editable install leaves only pointers in site-packages; the code stays in the project's
checkout. We find editable distributions through what pip records (``direct_url.json`` with
``dir_info.editable``, PEP 610) and read only the files the distribution's ``RECORD`` says it
installed, never every ``.pth`` lying around. Each backend leaves a different pointer:

* a path entry: a ``.pth`` whose lines are directories (setuptools' "lenient" mode for simple
  layouts, hatchling's default, flit, pdm-backend);
* a finder: a ``.pth`` that imports a module whose ``MAPPING`` maps top-level names to source
  directories (setuptools' mode for layouts a path entry cannot express). We read ``MAPPING``
  with :func:`ast.literal_eval`; the module is never imported;
* a link tree: a path entry pointing into ``build/__editable__.*``, a directory of links into the
  sources (setuptools' "strict" mode), whose links must be followed out of the tree;
* a legacy ``<name>.egg-link`` (``setup.py develop``), which has no ``direct_url.json``: its first
  line is the source directory.
"""

from __future__ import annotations

import ast
import json
import logging
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.utils import NormalizedName, canonicalize_name

from toil_mesos.errors import BundleError

__all__ = ["EditableInstall", "Mount", "find_editable_installs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mount:
    """A source path placed at ``arcname`` inside a root ("" for the root itself)."""

    arcname: str
    source: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class EditableInstall:
    """One editable distribution: where its code really is, and what it left in site-packages."""

    distribution: NormalizedName
    #: How the install points at its sources: "path", "finder", "link-tree" or "egg-link".
    shape: str
    #: The source locations, in the order the leader's import system consults them.
    mounts: tuple[Mount, ...]
    #: The dist-info (or egg-info) directory, shipped with the sources so metadata works.
    metadata_dir: Path | None
    #: Paths relative to site-packages that belong to the install (pointers, finder, dist-info).
    owned: frozenset[str]
    #: Whether links inside the sources must be followed even when they leave the source root.
    follow_links: bool = False


def find_editable_installs(site_packages: Path) -> list[EditableInstall]:
    """Every editable install recorded in *site_packages*, sorted by distribution name.

    :raises BundleError: an editable install whose sources cannot be found (a moved checkout).
    """
    installs: dict[NormalizedName, EditableInstall] = {}
    for dist in metadata.distributions(path=[str(site_packages)]):
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name in installs or not _is_editable(dist):
            continue
        installs[name] = _resolve(dist, name, site_packages)
    for link in sorted(site_packages.glob("*.egg-link")):
        egg = _resolve_egg_link(link, site_packages)
        installs.setdefault(egg.distribution, egg)
    return [installs[n] for n in sorted(installs)]


def _is_editable(dist: metadata.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    if not text:
        return False
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return False
    return bool(isinstance(info, dict) and info.get("dir_info", {}).get("editable"))


def _resolve(dist: metadata.Distribution, name: NormalizedName, sp: Path) -> EditableInstall:
    recorded = [str(f) for f in dist.files or ()]
    owned = {r for r in recorded if not r.startswith("..")}
    meta_dir = _metadata_dir(recorded, sp)
    if meta_dir is not None:
        owned.add(meta_dir.name)
    mounts: list[Mount] = []
    shape = "path"
    for rel in recorded:
        if not rel.endswith(".pth"):
            continue
        for line in _pth_lines(sp / rel):
            if line.startswith(("import ", "import\t")):
                finder = _finder_mapping(sp, recorded, line)
                if finder:
                    mounts.extend(finder)
                    shape = "finder"
            else:
                path = Path(os.path.realpath(sp / line))
                if path.is_dir():
                    mounts.append(Mount("", path))
    follow = any("__editable__." in m.source.name for m in mounts)
    if follow:
        shape = "link-tree"
    if not mounts:
        mounts = _from_direct_url(dist, name)
        shape = "project"
    return EditableInstall(
        distribution=name,
        shape=shape,
        mounts=tuple(mounts),
        metadata_dir=meta_dir,
        owned=frozenset(owned),
        follow_links=follow,
    )


def _metadata_dir(recorded: list[str], sp: Path) -> Path | None:
    """The dist-info directory, named by where its own RECORD is listed."""
    for rel in recorded:
        parts = rel.split("/")
        if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "RECORD":
            return sp / parts[0]
    return None


def _pth_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _finder_mapping(sp: Path, recorded: list[str], line: str) -> list[Mount]:
    """Read ``MAPPING`` from the finder module a setuptools ``.pth`` line imports."""
    module = line.split()[1].rstrip(";").split(";")[0]
    rel = f"{module}.py"
    if rel not in recorded or not (sp / rel).is_file():
        return []
    tree = ast.parse((sp / rel).read_text(encoding="utf-8"), filename=str(sp / rel))
    mounts: list[Mount] = []
    for node in tree.body:
        value = _assigned_value(node, "MAPPING")
        if value is None:
            continue
        try:
            mapping = ast.literal_eval(value)
        except ValueError:
            logger.warning("cannot read MAPPING in %s; falling back to direct_url", sp / rel)
            return []
        for top, source in sorted(dict(mapping).items()):
            path = Path(os.path.realpath(source))
            arc = top if path.is_dir() else f"{top}{path.suffix}"
            mounts.append(Mount(arc, path))
    return mounts


def _assigned_value(node: ast.stmt, name: str) -> ast.expr | None:
    """The value of ``name = ...`` or ``name: T = ...`` at module level, else None."""
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == name for t in node.targets
    ):
        return node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.value if node.target.id == name else None
    return None


def _from_direct_url(dist: metadata.Distribution, name: str) -> list[Mount]:
    info = json.loads(dist.read_text("direct_url.json") or "{}")
    url = urlparse(str(info.get("url", "")))
    project = Path(unquote(url.path)) if url.scheme == "file" else None
    if project is None or not project.is_dir():
        raise BundleError(
            f"the editable install of {name!r} points at {info.get('url')!r}, which is not a "
            "directory here; reinstall it with `pip install -e <checkout>`"
        )
    src = project / "src"
    root = src if src.is_dir() else project
    logger.warning(
        "editable install of %s has no pointer we understand; shipping %s", name, root
    )
    return [Mount("", Path(os.path.realpath(root)))]


def _resolve_egg_link(link: Path, sp: Path) -> EditableInstall:
    lines = _pth_lines(link)
    source = Path(os.path.realpath(sp / lines[0])) if lines else None
    if source is None or not source.is_dir():
        raise BundleError(
            f"{link} points at {lines[0] if lines else '(nothing)'!r}, which is not a directory; "
            "reinstall the project with `pip install -e <checkout>` or remove the stale link"
        )
    name = canonicalize_name(link.name.removesuffix(".egg-link"))
    # The egg-info lives in the source directory, so it ships with it.
    return EditableInstall(
        distribution=name,
        shape="egg-link",
        mounts=(Mount("", source),),
        metadata_dir=None,
        owned=frozenset({link.name}),
    )
