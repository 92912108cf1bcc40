"""Inputs a file job store holds as links to the leader's files, which agents may not reach.

Toil's file job store imports a local input file as a symbolic link to it by default
(``--symlinkImports True``). The CWL and WDL runners import their inputs that way before the
batch system exists; an agent that does not see the leader's path then fails the first job that
reads one, with "File 'files-flat/...' does not exist". The leader cannot know what agents
mount, so it warns once, before any job runs, naming a link and the option that copies instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["find_linked_imports", "warn_about_linked_imports"]

logger = logging.getLogger(__name__)

#: Enough to name an example and say "at least N"; a big job store is not walked to its end.
_MAX_LINKS = 20
_MAX_ENTRIES = 100_000


def find_linked_imports(job_store: Path, shared: Iterable[Path] = ()) -> list[tuple[Path, Path]]:
    """Links under *job_store* to files outside it and outside every *shared* path.

    Returns up to a small number of ``(link, target)`` pairs, found without following links.
    """
    store = Path(os.path.realpath(job_store))
    allowed = [store, *(Path(os.path.realpath(p)) for p in shared)]
    found: list[tuple[Path, Path]] = []
    seen = 0
    for directory, dirs, files in os.walk(store):
        for name in (*dirs, *files):
            seen += 1
            path = Path(directory) / name
            if not path.is_symlink():
                continue
            target = Path(os.path.realpath(path))
            if not any(target == a or a in target.parents for a in allowed):
                found.append((path, target))
            if len(found) >= _MAX_LINKS:
                return found
        if seen >= _MAX_ENTRIES:
            break
    return found


def warn_about_linked_imports(config: Any, shared: Iterable[Path] = ()) -> None:
    """Warn when the workflow's file job store links to leader files (see the module doc)."""
    if str(getattr(config, "symlinkImports", "")).lower() not in ("true", "1"):
        return
    locator = str(getattr(config, "jobStore", "") or "")
    scheme, _, rest = locator.partition(":") if ":" in locator else ("file", "", locator)
    if scheme != "file" or not rest or not os.path.isdir(rest):
        return
    links = find_linked_imports(Path(rest), shared)
    if not links:
        return
    link, target = links[0]
    logger.warning(
        "%s%d input file(s) are in the job store as links to this leader's files (e.g. %s "
        "-> %s); agents that do not mount %s at the same path fail to read them. Run with "
        "--symlinkImports False to copy inputs into the job store instead.",
        "at least " if len(links) >= _MAX_LINKS else "", len(links), link, target,
        target.parent,
    )
