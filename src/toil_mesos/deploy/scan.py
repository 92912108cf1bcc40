"""Walk a plan's roots into the exact list of files a bundle holds.

The scan is where bad input is caught before anything is written: the size limit, unreadable
files, a user module that its own exclusions would leave behind, and native code (refused by
policy, or always when built for another Python).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import pathspec

from toil_mesos.deploy._native import is_compatible, is_native
from toil_mesos.deploy._walk import FileEntry, SizeBudget, Skipped, WalkRules, walk_mount
from toil_mesos.deploy.locate import PathEntry, Plan, Root
from toil_mesos.deploy.manifest import ManifestRoot, NativeModule, RootKind
from toil_mesos.deploy.options import DeployOptions, NativePolicy
from toil_mesos.errors import BundleError

__all__ = ["Contents", "check_native", "list_native", "scan"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Contents:
    """Everything that will ship, in archive order, and what was left out."""

    plan: Plan
    roots: tuple[ManifestRoot, ...]
    files: tuple[FileEntry, ...]
    skipped: tuple[Skipped, ...]
    native: tuple[NativeModule, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def largest(self, count: int = 10) -> list[FileEntry]:
        return sorted(self.files, key=lambda f: (-f.size, f.arcname))[:count]

    def ships_module(self, name: str) -> bool:
        """Whether module *name* can be imported from the bundle (or a shared or egg root).

        By name, not by leader path: jobs created on a worker record the staged directory as
        their module's location, which means nothing on the leader.
        """
        parts = "/".join(name.split("."))
        arcnames = {f.arcname for f in self.files}
        for root in self.roots:
            if root.kind in (RootKind.SHARED, RootKind.EGG):
                return True  # their contents are not listed here; assume they provide it
            if {f"{root.name}/{parts}.py", f"{root.name}/{parts}/__init__.py"} & arcnames:
                return True
        return False

    def ships(self, path: Path) -> bool:
        """Whether the leader file *path* is in the bundle (or under a shared root)."""
        real = Path(os.path.realpath(path))
        if any(r.kind is RootKind.SHARED and real.is_relative_to(r.entry) for r in self.roots):
            return True
        return any(f.source == real for f in self.files)


def scan(plan: Plan, options: DeployOptions | None = None) -> Contents:
    """Walk every root of *plan*; check that the user module ships.

    :raises BundleError: the size limit is crossed, a file cannot be read, or the user module
        itself would be left out (an exclude pattern or ``.gitignore`` rule names it).
    """
    opts = options or DeployOptions()
    patterns = pathspec.GitIgnoreSpec.from_lines(opts.excludes) if opts.excludes else None
    budget = SizeBudget(opts.max_bytes, hint=_size_hint(opts))
    skipped: list[Skipped] = []
    files: list[FileEntry] = []
    roots: list[ManifestRoot] = []
    native: list[NativeModule] = []
    walked = [
        (root, [] if root.kind is RootKind.SHARED else _walk_root(root, patterns, budget, skipped))
        for root in plan.roots
    ]
    kept = [(r, found) for r, found in walked if found or r.kind is RootKind.SHARED]
    renamed: dict[str, str] = {}
    for index, (root, found) in enumerate(kept):
        name = f"r{index}"
        renamed[root.name] = name
        if name != root.name:
            old = len(root.name)
            found = [replace(f, arcname=name + f.arcname[old:]) for f in found]
            root = replace(root, name=name)
        roots.append(
            ManifestRoot(
                name=root.name,
                kind=root.kind,
                entry=root.entry,
                source=str(root.source),
                distribution=root.distribution,
            )
        )
        files.extend(found)
        native.extend(_native_modules(root, found, plan.python))
    plan = _without_empty_roots(plan, renamed)
    files.sort(key=lambda f: f.arcname)
    _check_unique(files)
    contents = Contents(
        plan=plan,
        roots=tuple(roots),
        files=tuple(files),
        skipped=tuple(skipped),
        native=tuple(native),
    )
    if plan.module is not None:
        _check_module_ships(contents, plan.module.file, plan.module.name)
    return contents


def _without_empty_roots(plan: Plan, renamed: dict[str, str]) -> Plan:
    """The plan as shipped: empty roots dropped, the others renamed r0, r1, ... in order."""
    entries = []
    for entry in plan.entries:
        if entry.root is None:
            entries.append(entry)
        elif entry.root in renamed:
            entries.append(replace(entry, root=renamed[entry.root]))
        else:
            entries.append(PathEntry(entry.path, "not-shipped",
                                     f"{entry.reason.removeprefix('as ')}: nothing left to ship "
                                     "once what workers have is left out"))
    roots = tuple(
        replace(r, name=renamed[r.name]) for r in plan.roots if r.name in renamed
    )
    return replace(plan, roots=roots, entries=tuple(entries))


def check_native(
    contents: Contents,
    policy: NativePolicy,
    *,
    option: str = "--native",
    exclude_option: str = "--exclude-distribution",
) -> None:
    """Apply the native-code policy; log what ships.

    *option* and *exclude_option* are the flags that set the policy and leave code out where
    the options come from, so the refusal names flags the user has.

    :raises BundleError: native code under the refuse policy, or any extension built for
        another Python version than the leader's (it could never load on the workers).
    """
    incompatible = [n for n in contents.native if not n.compatible]
    if incompatible:
        raise BundleError(
            f"these extension modules were built for another Python than {contents.plan.python} "
            f"and cannot load on the workers:\n{list_native(incompatible)}\n"
            "reinstall them with this Python, or remove them from what ships"
        )
    if contents.native and policy is NativePolicy.REFUSE:
        raise BundleError(
            f"the code to ship contains native code, refused by {option}={policy.value}:\n"
            f"{list_native(contents.native)}\n"
            "install these distributions on the workers (then leave them out with "
            f"{exclude_option}), or allow shipping native code with "
            f"{option}={NativePolicy.WARN.value}"
        )
    if contents.native:
        logger.warning(
            "shipping native code (it must match the workers' platform):\n%s",
            list_native(contents.native),
        )


def _walk_root(
    root: Root,
    patterns: pathspec.GitIgnoreSpec | None,
    budget: SizeBudget,
    skipped: list[Skipped],
) -> list[FileEntry]:
    rules = WalkRules(
        use_gitignore=root.use_gitignore,
        follow_links=root.follow_links,
        patterns=patterns,
        excluded=root.excluded,
    )
    found: list[FileEntry] = []
    for mount in root.mounts:
        rules_for_mount = rules if mount.arcname == "" else WalkRules(
            use_gitignore=root.use_gitignore, follow_links=root.follow_links, patterns=patterns
        )
        found.extend(walk_mount(mount, root.name, rules_for_mount, budget, skipped))
    return found


def _native_modules(root: Root, files: Iterable[FileEntry], python: str) -> list[NativeModule]:
    out = []
    for f in files:
        if not is_native(f.arcname):
            continue
        inside = f.arcname.split("/", 1)[1] if "/" in f.arcname else f.arcname
        owner = root.owners.get(inside) or root.distribution
        out.append(
            NativeModule(path=f.arcname, distribution=owner,
                         compatible=is_compatible(f.arcname.rsplit("/", 1)[-1], python))
        )
    return out


def list_native(native: Iterable[NativeModule], *, examples: int = 3) -> str:
    """One line per distribution, with a few of its files: a venv can hold hundreds."""
    by_owner: dict[str, list[str]] = {}
    for n in native:
        by_owner.setdefault(n.distribution or "(no distribution)", []).append(n.path)
    lines = []
    incompatible = {n.path for n in native if not n.compatible}
    for owner, paths in sorted(by_owner.items()):
        paths.sort(key=lambda p: p not in incompatible)
        shown = ", ".join(paths[:examples]) + (", ..." if len(paths) > examples else "")
        lines.append(f"  {owner}: {len(paths)} file{'s' if len(paths) > 1 else ''} ({shown})")
    return "\n".join(lines)


def _check_unique(files: list[FileEntry]) -> None:
    for a, b in itertools.pairwise(files):
        if a.arcname == b.arcname:
            raise BundleError(f"two files would ship as {a.arcname!r}: {a.source} and {b.source}")


def _check_module_ships(contents: Contents, file: Path, name: str) -> None:
    """The user module must ship, unless it comes with the workers (a Toil tool's own module)."""
    if contents.ships(file):
        return
    real = Path(os.path.realpath(file))
    why = next((s.reason for s in contents.skipped if real.is_relative_to(s.path)), None)
    if why is None:
        expected = any(
            real.is_relative_to(m.source) for r in contents.plan.roots for m in r.mounts
        )
        if not expected:
            return
        why = "it was left out of its root"
    raise BundleError(
        f"the user module {name!r} ({file}) would not ship: {why}; "
        "change the exclude patterns or .gitignore so that it is included"
    )


def _size_hint(opts: DeployOptions) -> str:
    names = opts.option_names
    return (
        "Leave out what the workers do not need (a .gitignore rule or "
        f"{names.get('excludes', '--exclude')} PATTERN), run the workflow from a directory "
        f"that holds only its code, or raise the limit with "
        f"{names.get('max_bytes', '--max-bytes')}."
    )
