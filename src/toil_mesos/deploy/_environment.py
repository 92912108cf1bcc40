"""Facts about the leader's interpreter: which paths are the user's and which workers already have.

Workers run the Toil Appliance: the same Python, Toil, this project and their dependencies,
installed where the base interpreter sees them. So a path or a distribution "workers already have"
is one that comes with the base interpreter or with Toil; everything else the user added (a
checkout, a virtualenv's own site-packages, editable sources) has to ship.

Everything here is read from the running interpreter once, in :meth:`PythonEnvironment.current`,
so the rules that use it are pure functions of a value that tests can build by hand.
"""

from __future__ import annotations

import logging
import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name

__all__ = [
    "ALWAYS_ON_WORKERS",
    "PythonEnvironment",
    "dependency_closure",
    "is_within",
]

logger = logging.getLogger(__name__)

#: Distributions never shipped from a virtualenv: Toil with the extras the appliance installs
#: (its CWL and WDL runners), this project (and, through :func:`dependency_closure`, what they
#: require), and the packaging tools every venv has.
ALWAYS_ON_WORKERS: tuple[str, ...] = (
    "toil[cwl,wdl]",
    "toil-mesos",
    "pip",
    "setuptools",
    "wheel",
    "distribute",
)

#: Top-level package names whose presence on a path means "this path is Toil's, not the user's".
_WORKER_PACKAGES = ("toil", "toil_mesos")


def is_within(path: Path, parent: Path) -> bool:
    """Whether *path* is *parent* or lies below it (both taken as given, not resolved).

    >>> is_within(Path("/a/b/c"), Path("/a/b")), is_within(Path("/a/bc"), Path("/a/b"))
    (True, False)
    """
    return path == parent or parent in path.parents


@dataclass(frozen=True, slots=True, kw_only=True)
class PythonEnvironment:
    """The parts of an interpreter's configuration that decide what ships.

    All paths are absolute and resolved (symlinks followed), so comparisons are reliable.
    """

    #: ``sys.path`` as the user's code sees it (for ``python -m``, the cwd comes first).
    sys_path: tuple[str, ...]
    #: The virtualenv's own site-packages; empty when not running in a virtualenv.
    venv_site_packages: tuple[Path, ...]
    #: Standard library directories and the base interpreter's (and system) site-packages.
    base_paths: tuple[Path, ...]
    #: The per-user site-packages (``pip install --user``), which workers do not have.
    user_site: Path | None
    python_version: str = field(
        default_factory=lambda: "{}.{}".format(*sys.version_info[:2])
    )

    @classmethod
    def current(cls, *, sys_path: Sequence[str] | None = None) -> PythonEnvironment:
        """Read the running interpreter. *sys_path* overrides ``sys.path`` (the CLI uses it)."""
        in_venv = sys.prefix != sys.base_prefix
        # Only the directories that exist: Debian's Python also names ``local/lib/...`` and
        # ``dist-packages`` directories that a virtualenv never has.
        venv_site = (
            tuple(p for p in _resolved(site.getsitepackages([sys.prefix])) if p.is_dir())
            if in_venv
            else ()
        )
        base: list[str] = []
        for name in ("stdlib", "platstdlib", "purelib", "platlib"):
            base.append(sysconfig.get_path(name, vars={"base": sys.base_prefix,
                                                       "platbase": sys.base_prefix,
                                                       "installed_base": sys.base_prefix,
                                                       "installed_platbase": sys.base_prefix}))
        base.extend(site.getsitepackages([sys.base_prefix]))
        zipped = "python{}{}.zip".format(*sys.version_info[:2])
        base.append(os.path.join(sys.base_prefix, "lib", zipped))
        user_site = site.getusersitepackages() if site.ENABLE_USER_SITE is not False else None
        return cls(
            sys_path=tuple(sys.path if sys_path is None else sys_path),
            venv_site_packages=venv_site,
            base_paths=tuple(p for p in _resolved(base) if p not in venv_site),
            user_site=_resolved([user_site])[0] if user_site else None,
        )

    @property
    def in_virtualenv(self) -> bool:
        return bool(self.venv_site_packages)

    def is_base_path(self, path: Path) -> bool:
        """Whether *path* is in the standard library or the base interpreter's site-packages."""
        return any(is_within(path, base) for base in self.base_paths)

    def venv_site_packages_of(self, path: Path) -> Path | None:
        """The virtualenv site-packages that *path* lies in, if any."""
        return next((sp for sp in self.venv_site_packages if is_within(path, sp)), None)


def holds_worker_package(path: Path) -> str | None:
    """Name the Toil package a ``sys.path`` entry holds (so the entry is Toil's), or None."""
    for name in _WORKER_PACKAGES:
        if (path / name / "__init__.py").is_file():
            return name
    return None


def dependency_closure(
    names: Iterable[str], *, search_path: Sequence[str] | None = None
) -> frozenset[NormalizedName]:
    """Every distribution that the named ones require, transitively, including themselves.

    A name may select extras (``toil[cwl,wdl]``), as the workers' installation did; requirements
    are read from installed metadata and their markers evaluated for this interpreter with
    those extras (none for a plain name). A requirement that is not installed contributes only
    its own name.
    """
    found: dict[NormalizedName, frozenset[str]] = {}
    pending = [_requested(n) for n in names]
    while pending:
        name, extras = pending.pop()
        if name in found and extras <= found[name]:
            continue
        extras = extras | found.get(name, frozenset())
        found[name] = extras
        try:
            dist = next(iter(metadata.distributions(name=name, path=list(search_path or sys.path))))
        except StopIteration:
            continue
        for text in dist.requires or ():
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                logger.debug("ignoring unparsable requirement %r of %s", text, name)
                continue
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in ("", *extras)):
                pending.append((canonicalize_name(requirement.name),
                                frozenset(requirement.extras)))
    return frozenset(found)


def _requested(text: str) -> tuple[NormalizedName, frozenset[str]]:
    """A distribution name with the extras it was installed with, from ``name[extra,...]``."""
    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        return canonicalize_name(text), frozenset()
    return canonicalize_name(requirement.name), frozenset(requirement.extras)


def _resolved(paths: Iterable[str | None]) -> tuple[Path, ...]:
    out: list[Path] = []
    for p in paths:
        if p:
            resolved = Path(os.path.realpath(p))
            if resolved not in out:
                out.append(resolved)
    return tuple(out)
