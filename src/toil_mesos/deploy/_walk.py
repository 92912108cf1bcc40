"""Walk a root's mounts and decide, file by file, what ships.

Always left out: bytecode (``__pycache__``, ``*.pyc``), version-control and tool-cache
directories, virtualenvs nested inside the root, sockets, FIFOs and devices, links that leave the
root, and what ``.gitignore`` files exclude (the root's own, those below it, and those above it up
to the top of its git checkout). The user adds gitignore-style patterns of their own.

The walk keeps a running total and stops as soon as it crosses the size limit, so pointing it at
a huge directory costs little and fails with the largest entries named.
"""

from __future__ import annotations

import heapq
import os
import stat
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from toil_mesos.deploy._editable import Mount
from toil_mesos.deploy._environment import is_within
from toil_mesos.deploy._units import human_size
from toil_mesos.errors import BundleError

__all__ = ["FileEntry", "SizeBudget", "Skipped", "WalkRules", "walk_mount"]

#: Directory names never shipped: version control, tool caches, bytecode.
EXCLUDED_DIRS = frozenset(
    {
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".bzr",
        "_darcs",
        "CVS",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".eggs",
    }
)
EXCLUDED_SUFFIXES = (".pyc", ".pyo")

#: How many entries a size-limit error lists.
_LARGEST = 10


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file that ships: its name in the archive and the leader file it is read from."""

    arcname: str
    source: Path
    size: int
    executable: bool
    #: (size, mtime_ns, ctime_ns, inode, device): unchanged means the content is unchanged.
    stat_key: tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Skipped:
    """A path that was left out, and why (shown by ``bundle inspect``)."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WalkRules:
    """How to walk one root."""

    use_gitignore: bool = True
    follow_links: bool = False
    patterns: pathspec.GitIgnoreSpec | None = None
    #: Paths relative to the root left out, with the reason (files or whole directories).
    excluded: Mapping[str, str] = field(default_factory=dict)


class SizeBudget:
    """The running total of bytes, shared by every root of one bundle."""

    def __init__(self, max_bytes: int, *, hint: str) -> None:
        self.max_bytes = max_bytes
        self.total = 0
        self._hint = hint
        #: (size, where the file is in its root's tree, the root) of every file counted.
        self._seen: list[tuple[int, Path, Path]] = []

    @property
    def files(self) -> int:
        return len(self._seen)

    def add(self, entry: FileEntry, *, root: Path, path: Path | None = None) -> None:
        """Count *entry*, found at *path* (default: its source) under *root*; raise as soon as
        the total crosses the limit.

        :raises BundleError: the limit is crossed; the message lists the largest entries seen.
        """
        self.total += entry.size
        self._seen.append((entry.size, path or entry.source, root))
        if self.total > self.max_bytes:
            raise BundleError(self._message())

    def _message(self) -> str:
        # Only now, on the error path, are directory totals worth computing: each directory
        # inside a root counts every file below it, at any depth, so the sizes add up; the
        # roots themselves and anything above them are not entries of the code.
        directories: defaultdict[str, int] = defaultdict(int)
        for size, path, root in self._seen:
            if root not in path.parents:
                continue
            for parent in path.parents:
                if parent == root:
                    break
                directories[f"{parent}/"] += size
        biggest = heapq.nlargest(
            _LARGEST,
            [(size, str(path)) for size, path, _ in self._seen]
            + [(size, path) for path, size in directories.items()],
        )
        lines = "\n".join(f"  {human_size(size):>10}  {path}" for size, path in biggest)
        return (
            f"the code to ship is larger than the limit of {human_size(self.max_bytes)} "
            f"(passed it after {self.files} files); the largest entries seen so far:\n{lines}\n"
            f"{self._hint}"
        )


def walk_mount(
    mount: Mount,
    prefix: str,
    rules: WalkRules,
    budget: SizeBudget,
    skipped: list[Skipped],
) -> Iterator[FileEntry]:
    """Yield the files of *mount* that ship, named ``<prefix>/<mount arcname>/<relative path>``.

    :raises BundleError: an unreadable file or directory, or the size limit crossed.
    """
    base = "/".join(p for p in (prefix, mount.arcname) if p)
    source = Path(os.path.realpath(mount.source))
    if source.is_file():
        entry = _file_entry(base, source, source)
        budget.add(entry, root=source)
        yield entry
        return
    ignores = _ancestor_gitignores(source) if rules.use_gitignore else []
    walker = _Walker(source, base, rules, budget, skipped)
    yield from walker.walk_dir(source, "", ignores, frozenset({source}))


@dataclass(slots=True)
class _Walker:
    root: Path
    base: str
    rules: WalkRules
    budget: SizeBudget
    skipped: list[Skipped]

    def walk_dir(
        self,
        directory: Path,
        rel: str,
        ignores: Sequence[tuple[Path, pathspec.GitIgnoreSpec]],
        seen: frozenset[Path],
    ) -> Iterator[FileEntry]:
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise BundleError(
                f"cannot read the directory {directory}: {exc.strerror}; "
                "fix its permissions or exclude it"
            ) from None
        if self.rules.use_gitignore and any(c.name == ".gitignore" for c in children):
            ignores = [*ignores, (directory, _load_gitignore(directory / ".gitignore"))]
        for child in children:
            child_rel = f"{rel}/{child.name}" if rel else child.name
            path = Path(child.path)
            reason = self._exclusion(child, child_rel, path, ignores)
            if reason == "":
                continue
            if reason is not None:
                self.skipped.append(Skipped(str(path), reason))
                continue
            real = Path(os.path.realpath(path)) if child.is_symlink() else path
            try:
                st = child.stat()  # follows links; cached by scandir for plain files
            except OSError as exc:
                self.skipped.append(Skipped(str(path), f"cannot stat: {exc.strerror}"))
                continue
            if stat.S_ISDIR(st.st_mode):
                if real in seen:
                    self.skipped.append(Skipped(str(path), "a link back to a parent directory"))
                    continue
                if _is_virtualenv(path):
                    self.skipped.append(Skipped(str(path), "a virtualenv inside the root"))
                    continue
                yield from self.walk_dir(path, child_rel, ignores, seen | {real})
            elif stat.S_ISREG(st.st_mode):
                if not os.access(path, os.R_OK):
                    raise BundleError(
                        f"cannot read {path}: permission denied; make it readable or exclude it"
                    )
                entry = _file_entry(f"{self.base}/{child_rel}" if self.base else child_rel,
                                    path, real, st)
                self.budget.add(entry, root=self.root, path=path)
                yield entry
            else:
                self.skipped.append(Skipped(str(path), "not a regular file (socket, FIFO, device)"))

    def _exclusion(
        self,
        child: os.DirEntry[str],
        rel: str,
        path: Path,
        ignores: Sequence[tuple[Path, pathspec.GitIgnoreSpec]],
    ) -> str | None:
        """None: keep; "": drop silently (bytecode); otherwise the reason it is left out."""
        name = child.name
        is_dir = child.is_dir()
        if is_dir and name in EXCLUDED_DIRS:
            return "" if name == "__pycache__" else "version control or tool cache"
        if not is_dir and name.endswith(EXCLUDED_SUFFIXES):
            return ""
        top = rel.split("/", 1)[0]
        reason = self.rules.excluded.get(rel) or self.rules.excluded.get(top)
        if reason:
            return reason
        if child.is_symlink():
            target = Path(os.path.realpath(path))
            if not self.rules.follow_links and not is_within(target, self.root):
                return f"a link to {target}, outside the root"
            if not target.exists():
                return "a broken link"
        candidate = rel + "/" if is_dir else rel
        if self.rules.patterns is not None and self.rules.patterns.match_file(candidate):
            return "matches an exclude pattern"
        if _gitignored(path, is_dir, ignores):
            return "ignored by .gitignore"
        return None


def _file_entry(
    arcname: str, path: Path, real: Path, st: os.stat_result | None = None
) -> FileEntry:
    st = st or os.stat(path)
    return FileEntry(
        arcname=arcname,
        source=real,
        size=st.st_size,
        executable=bool(st.st_mode & 0o111),
        stat_key=(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev),
    )


def _is_virtualenv(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file() or (path / "conda-meta").is_dir()


def _load_gitignore(path: Path) -> pathspec.GitIgnoreSpec:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _ancestor_gitignores(root: Path) -> list[tuple[Path, pathspec.GitIgnoreSpec]]:
    """The ``.gitignore`` files above *root*, up to the top of the git checkout holding it."""
    chain = []
    for parent in root.parents:
        chain.append(parent)
        if (parent / ".git").exists():
            break
    else:
        return []
    return [
        (d, _load_gitignore(d / ".gitignore"))
        for d in reversed(chain)
        if (d / ".gitignore").is_file()
    ]


def _gitignored(
    path: Path, is_dir: bool, ignores: Sequence[tuple[Path, pathspec.GitIgnoreSpec]]
) -> bool:
    """Apply the gitignore files in order; the deepest one with an opinion wins, as in git."""
    decision = False
    for base, spec in ignores:
        rel = path.relative_to(base).as_posix() + ("/" if is_dir else "")
        result = spec.check_file(rel)
        if result.include is not None:
            decision = result.include
    return decision
