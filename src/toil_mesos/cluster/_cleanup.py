"""What ``cluster down`` removes from the cluster's directory once every daemon has stopped.

A mini-cluster run for many workflows accumulates, in each agent's work dir, one sandbox per
executor (with its fetched bundle and Toil's files) and the fetcher cache: gigabytes after a
few dozen runs. ``down`` removes exactly what the daemons made there, found from each
recorded daemon's own ``--work-dir`` argument, and nothing else: the agents' ``slaves/``
(sandboxes), ``fetchcache/``, ``bundle-cache/`` (the bundles their executors staged) and
``meta/`` (their checkpoints), the cluster's own ZooKeeper's ``version-2/``, then each
daemon's work dir and ``agents/`` if that left them empty. Logs (``logs/``) stay, for
post-mortems; a work dir outside the cluster's directory, or anything else a user put in
these directories, is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from toil_mesos.cluster._zookeeper import ZOOKEEPER_MAIN

__all__ = ["AGENT_BUNDLE_CACHE", "remove_daemon_products", "work_dir_of"]

logger = logging.getLogger(__name__)

#: Where in an agent's work dir ``cluster up`` has its executors stage bundles.
AGENT_BUNDLE_CACHE: Final = "bundle-cache"
#: What each role makes inside its ``--work-dir``.
_PRODUCTS: Final = {
    # ``meta``: the agent's checkpoint, stale once ``down`` has stopped its executors.
    "agent": ("slaves", "fetchcache", AGENT_BUNDLE_CACHE, "meta"),
    "master": (),
    # The cluster's own ZooKeeper: its snapshots and transaction logs (elections of one run).
    "zookeeper": ("version-2",),
}


def work_dir_of(role: str, argv: Sequence[str]) -> Path | None:
    """The ``--work-dir`` a daemon was started with (its argv may be wrapped by isolation);
    for ZooKeeper, its data directory, the second word after its main class."""
    if role == "zookeeper":
        at = argv.index(ZOOKEEPER_MAIN) + 2 if ZOOKEEPER_MAIN in argv else len(argv)
        return Path(argv[at]) if at < len(argv) else None
    for index, word in enumerate(argv[:-1]):
        if word == "--work-dir":
            return Path(argv[index + 1])
    return None


def remove_daemon_products(
    cluster_dir: Path, daemons: Iterable[tuple[str, Sequence[str]]]
) -> list[str]:
    """Remove what stopped daemons made in their work dirs under *cluster_dir*.

    *daemons* are ``(role, argv)`` of the recorded daemons, which must all have stopped.
    Returns lines saying what was removed; a failure to remove is logged, not raised, so that
    ``down`` still completes (and a second ``down`` has nothing left to do either way).
    """
    root = cluster_dir.resolve()
    done: list[str] = []
    emptied: list[Path] = []
    for role, argv in daemons:
        work_dir = work_dir_of(role, argv)
        if work_dir is None:
            continue
        work_dir = work_dir.resolve()
        if work_dir == root or root not in work_dir.parents:
            logger.info("leaving %s alone: not inside the cluster's directory %s", work_dir, root)
            continue
        for name in _PRODUCTS.get(role, ()):
            product = work_dir / name
            if product.is_symlink() or not product.is_dir():
                continue
            shutil.rmtree(product, ignore_errors=True)
            if product.exists():
                logger.warning("could not remove all of %s", product)
            else:
                done.append(f"removed {product}")
        emptied.append(work_dir)
    for directory in (*emptied, *{d.parent for d in emptied if d.parent != root}):
        with contextlib.suppress(OSError):
            os.rmdir(directory)  # only when empty: what a user put there stays
    return done
