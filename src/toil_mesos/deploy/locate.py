"""Decide what the user's code is: the ordered roots a bundle ships.

The rules, in the order a bundle's roots are placed on the worker's import path:

1. the root holding the user module: a script's directory with all its siblings, or for
   ``python -m a.b`` the ``sys.path`` entry holding ``a/`` with every top-level module and
   package under it (found wherever ``sys.path`` got it: the cwd or ``PYTHONPATH``);
2. the virtualenv's own site-packages, minus what workers already have (the base interpreter's
   paths, Toil, this project, their dependencies, the packaging tools, named distributions);
3. the sources of editable installs, each with its distribution's metadata;
4. eggs on ``sys.path``.

Paths under a shared filesystem are not shipped: they become ``shared`` roots, whose path the
worker puts on its import path as it is. Nothing here reads file contents beyond the small
pointer files of editable installs; :mod:`toil_mesos.deploy.scan` walks the roots.
"""

from __future__ import annotations

import importlib.machinery
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Literal

from packaging.utils import NormalizedName, canonicalize_name

from toil_mesos.deploy._editable import EditableInstall, Mount, find_editable_installs
from toil_mesos.deploy._environment import (
    ALWAYS_ON_WORKERS,
    PythonEnvironment,
    dependency_closure,
    holds_worker_package,
    is_within,
)
from toil_mesos.deploy.manifest import RootKind
from toil_mesos.deploy.options import DeployOptions
from toil_mesos.errors import BundleError

__all__ = [
    "PathEntry",
    "Plan",
    "Root",
    "UserModule",
    "find_module",
    "locate",
    "script_module",
    "user_module_of",
]

logger = logging.getLogger(__name__)

#: Files that tools put into every virtualenv's site-packages; they are not the user's code.
_VENV_TOOL_FILES = frozenset({"_virtualenv.pth", "_virtualenv.py", "distutils-precedence.pth"})


@dataclass(frozen=True, slots=True)
class UserModule:
    """The module Toil records for the user's jobs, and the file it was loaded from."""

    name: str
    file: Path
    #: "script" for a file run directly, "module" for ``python -m`` or a module found by name.
    mode: Literal["script", "module"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Root:
    """One root to ship, before its files are walked."""

    name: str
    kind: RootKind
    #: The leader path shown to users (a directory, or an egg file).
    source: Path
    mounts: tuple[Mount, ...]
    distribution: str | None = None
    follow_links: bool = False
    use_gitignore: bool = True
    #: Paths relative to the root (files or whole directories) left out, with the reason.
    excluded: Mapping[str, str] = field(default_factory=dict)
    #: Paths relative to the root that an installed distribution owns, with its name.
    owners: Mapping[str, str] = field(default_factory=dict)

    @property
    def entry(self) -> str:
        """What goes on the worker's ``sys.path``, relative to the staging directory."""
        if self.kind is RootKind.SHARED:
            return str(self.source)
        if self.kind is RootKind.EGG and self.source.is_file():
            return f"{self.name}/{self.source.name}"
        return self.name


@dataclass(frozen=True, slots=True)
class PathEntry:
    """How one leader ``sys.path`` entry is treated, for ``bundle inspect``."""

    path: str
    status: Literal["shipped", "shared", "on-workers", "not-shipped", "missing"]
    reason: str
    root: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The ordered roots to ship for one user module, and why each path was or wasn't chosen."""

    module: UserModule | None
    roots: tuple[Root, ...]
    entries: tuple[PathEntry, ...]
    python: str

    @property
    def ships_nothing(self) -> bool:
        """Whether no root needs walking: the workflow's code is all on the workers already.

        So it is when ``__main__`` and the job modules are Toil's own (``toil-cwl-runner``,
        ``toil-wdl-runner``) outside a virtualenv, or every root is on a shared filesystem.
        """
        return all(root.kind is RootKind.SHARED for root in self.roots)


def user_module_of(main: ModuleType) -> UserModule | None:
    """The user module behind ``__main__``, or None when ``__main__`` is not a user file.

    ``python -m a.b`` gives ``a.b`` (from ``__spec__``); ``python dir/wf.py`` gives ``wf``. A
    console script, ``python -c`` or an interactive session gives None: then the caller names a
    module instead (the batch system uses the first job's module).
    """
    spec = getattr(main, "__spec__", None)
    file = getattr(main, "__file__", None)
    if not file or not str(file).endswith(".py"):
        return None
    if spec is not None and spec.name and spec.name != "__main__":
        return UserModule(spec.name, Path(os.path.abspath(file)), "module")
    return script_module(Path(file))


def script_module(path: Path) -> UserModule:
    """The user module of a script run directly (``python path`` or ``./path``).

    :raises BundleError: the file does not exist or is not a ``.py`` file.
    """
    real = Path(os.path.realpath(path))
    if not real.is_file():
        raise BundleError(f"the script {str(path)!r} does not exist or is not a file")
    if real.suffix != ".py":
        raise BundleError(
            f"the script {str(path)!r} must end in .py: Toil's workers import it by module name"
        )
    return UserModule(real.stem, real, "script")


def find_module(name: str, sys_path: Sequence[str]) -> UserModule:
    """Find a module by name as ``python -m`` would, without importing or running anything.

    The top-level name is looked up on *sys_path*, then through the import system's other
    finders (editable installs register some); submodules are then found on disk.

    :raises BundleError: no such module, or one that is not a plain ``.py`` file.
    """
    parts = name.split(".")
    if not all(p.isidentifier() for p in parts):
        raise BundleError(f"{name!r} is not a valid module name")
    spec = importlib.machinery.PathFinder.find_spec(parts[0], list(sys_path))
    if spec is None:
        spec = _find_with_meta_path(parts[0])
    if spec is None:
        raise BundleError(
            f"cannot find module {parts[0]!r} (of {name!r}) on the leader's sys.path; "
            "run from the directory that holds it, or add that directory to PYTHONPATH"
        )
    locations = list(spec.submodule_search_locations or [])
    origin = spec.origin if spec.has_location else None
    for place in [*locations, origin or ""]:
        _refuse_zipped(name, Path(place))
    for depth, part in enumerate(parts[1:], start=1):
        origin = None
        next_locations: list[str] = []
        for location in locations:
            package = Path(location) / part
            if (package / "__init__.py").is_file():
                origin = str(package / "__init__.py")
                next_locations = [str(package)]
                break
            if (Path(location) / f"{part}.py").is_file():
                origin = str(Path(location) / f"{part}.py")
                break
            if package.is_dir():
                next_locations.append(str(package))
        if origin is None and not next_locations:
            raise BundleError(f"cannot find module {'.'.join(parts[: depth + 1])!r} of {name!r}")
        locations = next_locations
    if origin is None or not origin.endswith(".py"):
        raise BundleError(f"module {name!r} is not a .py file (found {origin!r})")
    return UserModule(name, Path(os.path.abspath(origin)), "module")


def _find_with_meta_path(top: str) -> importlib.machinery.ModuleSpec | None:
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder:
            continue
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(top, None)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin not in (None, "built-in", "frozen"):
            return spec  # type: ignore[no-any-return]
    return None


def locate(
    module: UserModule | None,
    *,
    environment: PythonEnvironment | None = None,
    options: DeployOptions | None = None,
) -> Plan:
    """Decide the ordered roots to ship for *module* (None: ship only the virtualenv's extras).

    :raises BundleError: a script directory that is a package, a module inside a zipped egg or
        in the per-user site-packages, an editable install whose sources are gone.
    """
    env = environment or PythonEnvironment.current()
    opts = options or DeployOptions()
    shared = tuple(Path(os.path.realpath(p)) for p in opts.shared_paths)
    on_workers = dependency_closure(
        (*ALWAYS_ON_WORKERS, *opts.exclude_distributions), search_path=env.sys_path
    )
    editables = [
        e
        for sp in env.venv_site_packages
        for e in find_editable_installs(sp)
        if e.distribution not in on_workers
    ]
    candidates: list[Root] = []
    primary = _primary_root(module, env, editables) if module else None
    if isinstance(primary, Root):
        candidates.append(primary)
    eggs = _egg_roots(env)
    for sp in env.venv_site_packages:
        candidates.append(_site_packages_root(sp, on_workers, editables, eggs))
    for install in editables:
        candidates.append(_editable_root(install))
    candidates.extend(eggs)
    if isinstance(primary, EditableInstall):
        first = next(c for c in candidates if c.distribution == primary.distribution)
        candidates.remove(first)
        candidates.insert(0, first)
    roots = _name_roots(_merge_duplicates(candidates), shared)
    return Plan(
        module=module,
        roots=tuple(roots),
        entries=tuple(_classify(env, roots)),
        python=env.python_version,
    )


def _primary_root(
    module: UserModule, env: PythonEnvironment, editables: list[EditableInstall]
) -> Root | EditableInstall | None:
    """The root holding the user module; None when no root is needed for it."""
    file = Path(os.path.realpath(module.file))
    _refuse_zipped(module.name, file)
    # A link tree holds links to the sources: match the path as found, and as resolved.
    as_found = Path(os.path.abspath(module.file))
    for install in editables:
        if any(is_within(p, m.source) for p in (as_found, file) for m in install.mounts):
            return install
    top = _path_entry_of(module, file)
    if env.venv_site_packages_of(top) is not None:
        return None  # the site-packages root ships it
    if env.is_base_path(top) or holds_worker_package(top):
        logger.debug("%s comes with the workers' Python or Toil; it needs no shipping", file)
        return None
    if env.user_site is not None and is_within(top, env.user_site):
        raise BundleError(
            f"the module {module.name!r} ({file}) is in the per-user site-packages "
            f"{env.user_site}, which workers do not have and toil-mesos does not ship; "
            "install it into a virtualenv made with --system-site-packages instead"
        )
    init = top / "__init__.py"
    if init.exists():
        raise BundleError(
            f"{init} makes {top} a package, so it cannot be the root of the code to ship "
            f"(Toil would import {module.name!r} as a top-level module): run "
            f"`python -m {top.name}.{module.name}` from {top.parent} instead"
        )
    kind = RootKind.SCRIPT_DIR if module.mode == "script" else RootKind.PACKAGE_ROOT
    return Root(name="", kind=kind, source=top, mounts=(Mount("", top),))


def _refuse_zipped(name: str, file: Path) -> None:
    for parent in file.parents:
        if parent.is_file():
            raise BundleError(
                f"the module {name!r} is inside the zipped egg {parent}; Toil's workers "
                "cannot load job modules from a zip file: install it unzipped "
                "(`pip install` the project) or run from a source checkout"
            )


def _path_entry_of(module: UserModule, file: Path) -> Path:
    """The ``sys.path`` entry that the module was imported from."""
    if module.mode == "script":
        return file.parent
    parts = module.name.split(".")
    levels = len(parts) if file.name == "__init__.py" else len(parts) - 1
    top = file.parents[levels]
    expected = "/".join(parts[:-1] if file.name != "__init__.py" else parts)
    if expected and not is_within(file.parent, top / expected):
        raise BundleError(f"{file} does not match the module name {module.name!r}")
    return top


def _site_packages_root(
    sp: Path,
    on_workers: frozenset[NormalizedName],
    editables: list[EditableInstall],
    eggs: list[Root],
) -> Root:
    excluded: dict[str, str] = {}
    owners: dict[str, str] = {}
    kept_tops: set[str] = set()
    dropped_tops: dict[str, str] = {}
    for dist in metadata.distributions(path=[str(sp)]):
        name = canonicalize_name(dist.metadata["Name"] or "")
        files = [str(f) for f in dist.files or () if not str(f).startswith("..")]
        if name in on_workers:
            reason = f"distribution {name} is on the workers already"
            for rel in files:
                excluded[rel] = reason
                dropped_tops.setdefault(rel.split("/", 1)[0], reason)
        else:
            for rel in files:
                owners[rel] = name
                kept_tops.add(rel.split("/", 1)[0])
    for top, reason in dropped_tops.items():
        if top not in kept_tops:
            excluded[top] = reason
    for install in editables:
        for rel in install.owned:
            excluded[rel] = f"pointer of the editable install of {install.distribution}"
    for egg in eggs:
        if is_within(egg.source, sp):
            excluded[egg.source.relative_to(sp).as_posix()] = "an egg, shipped as its own root"
    for rel in _VENV_TOOL_FILES:
        excluded.setdefault(rel, "created by the virtualenv tools")
    for pth in sorted(sp.glob("*.pth")):
        if pth.name not in excluded and pth.name not in owners:
            excluded[pth.name] = "a .pth file: workers do not process .pth files of a bundle"
    return Root(
        name="",
        kind=RootKind.SITE_PACKAGES,
        source=sp,
        mounts=(Mount("", sp),),
        use_gitignore=False,
        excluded=excluded,
        owners=owners,
    )


def _editable_root(install: EditableInstall) -> Root:
    mounts = list(install.mounts)
    meta = install.metadata_dir
    if meta is not None and not any(is_within(meta, m.source) for m in mounts):
        mounts.append(Mount(meta.name, meta))
    main = mounts[0]
    return Root(
        name="",
        kind=RootKind.EDITABLE,
        source=main.source if main.arcname == "" else main.source.parent,
        mounts=tuple(mounts),
        distribution=install.distribution,
        follow_links=install.follow_links,
        # A link tree is generated under build/, which the project's .gitignore usually ignores.
        use_gitignore=not install.follow_links,
    )


def _egg_roots(env: PythonEnvironment) -> list[Root]:
    roots = []
    for entry in env.sys_path:
        if not entry.endswith(".egg"):
            continue
        path = Path(os.path.realpath(entry))
        if not path.exists() or env.is_base_path(path):
            continue
        mount = Mount(path.name, path) if path.is_file() else Mount("", path)
        roots.append(
            Root(name="", kind=RootKind.EGG, source=path, mounts=(mount,), use_gitignore=False)
        )
    return roots


def _merge_duplicates(candidates: list[Root]) -> list[Root]:
    """Ship a directory once: an editable source that is also the primary root merges into it."""
    merged: list[Root] = []
    for root in candidates:
        same = next(
            (m for m in merged if m.mounts and root.mounts and m.mounts[0] == root.mounts[0]),
            None,
        )
        if same is None:
            merged.append(root)
            continue
        extra = tuple(m for m in root.mounts[1:] if m not in same.mounts)
        merged[merged.index(same)] = replace(
            same,
            mounts=same.mounts + extra,
            distribution=same.distribution or root.distribution,
        )
    return merged


def _name_roots(roots: list[Root], shared: tuple[Path, ...]) -> list[Root]:
    named = []
    for index, root in enumerate(roots):
        if any(is_within(root.source, s) for s in shared):
            root = replace(root, kind=RootKind.SHARED, mounts=())
        named.append(replace(root, name=f"r{index}"))
    return named


def _classify(env: PythonEnvironment, roots: list[Root]) -> list[PathEntry]:
    entries = []
    for raw in env.sys_path:
        path = Path(os.path.realpath(raw or os.getcwd()))
        root = next(
            (r for r in roots if r.source == path or any(m.source == path for m in r.mounts)),
            None,
        )
        worker_package = holds_worker_package(path) if path.is_dir() else None
        if root is not None and root.kind is RootKind.SHARED:
            entry = PathEntry(str(path), "shared", "on a shared filesystem: kept on PYTHONPATH",
                              root.name)
        elif root is not None:
            entry = PathEntry(str(path), "shipped", f"as {root.kind.value}", root.name)
        elif not path.exists():
            entry = PathEntry(str(path), "missing", "does not exist")
        elif env.is_base_path(path):
            entry = PathEntry(str(path), "on-workers", "standard library or base site-packages")
        elif worker_package:
            entry = PathEntry(str(path), "on-workers", f"holds {worker_package}")
        elif env.user_site is not None and path == env.user_site:
            entry = PathEntry(str(path), "not-shipped",
                              "per-user site-packages: not shipped, use a virtualenv")
        else:
            entry = PathEntry(str(path), "not-shipped", "holds none of the user's code")
        if entry not in entries:
            entries.append(entry)
    return entries
