"""``toil-mesos bundle cache list|prune``: look at and clean an agent's staged-bundle cache.

Both are safe while executors work: bundles held by a live executor are listed as in use and
never removed (see :mod:`toil_mesos.deploy.cache`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from toil_mesos.deploy._units import human_size
from toil_mesos.deploy.cache import (
    CacheEntry,
    list_cache,
    max_bytes_from_env,
    parse_duration,
    parse_size,
    prune,
)
from toil_mesos.deploy.stage import CACHE_ENV, default_cache_dir

__all__ = ["add_cache_commands", "size_argument"]


def add_cache_commands(
    bundle_commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``cache list`` and ``cache prune`` under ``toil-mesos bundle``."""
    cache = bundle_commands.add_parser(
        "cache", help="list or prune the bundles staged on this machine"
    )
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    listing = cache_commands.add_parser(
        "list", help="staged bundles: hash, size, last use, whether an executor holds it"
    )
    _add_cache_dir(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    listing.set_defaults(handler=_list)
    pruning = cache_commands.add_parser(
        "prune",
        help="remove staged bundles no executor holds (all of them, unless limited)",
        description="Remove staged bundles that no live executor holds: those unused for "
        "--older-than, then the least recently used until the cache is under --max-bytes. "
        "With neither option, every bundle not in use. Safe while executors work.",
    )
    _add_cache_dir(pruning)
    pruning.add_argument(
        "--max-bytes", type=size_argument, metavar="SIZE",
        help="keep the cache under SIZE (e.g. 5G; units are powers of 1024)",
    )
    pruning.add_argument(
        "--older-than", type=_duration, metavar="DURATION",
        help="remove bundles unused for longer than DURATION (e.g. 7d, 12h, 30m)",
    )
    pruning.set_defaults(handler=_prune)


def _add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir", type=Path, default=None, metavar="DIR",
        help=f"the bundle cache (default: ${CACHE_ENV}, else ~/.cache/toil-mesos/bundles, "
        "as the executor)",
    )


def size_argument(text: str) -> int:
    """An argparse type for sizes like ``5G`` (see :func:`~toil_mesos.deploy.cache.parse_size`)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cache_dir(args: argparse.Namespace) -> Path:
    return (args.cache_dir or default_cache_dir()).absolute()


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _list(args: argparse.Namespace) -> int:
    cache = _cache_dir(args)
    entries = list_cache(cache)
    cap = max_bytes_from_env()
    total = sum(e.size for e in entries)
    if args.json:
        document = {
            "cache_dir": str(cache),
            "max_bytes": cap,
            "total_bytes": total,
            "bundles": [
                {"sha256": e.sha256, "bytes": e.size, "last_used": e.last_used,
                 "in_use": e.in_use}
                for e in entries
            ],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    lines = [f"{cache}: {len(entries)} bundles, {human_size(total)} (cap {human_size(cap)})"]
    for entry in sorted(entries, key=lambda e: e.last_used, reverse=True):
        lines.append(_row(entry))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _row(entry: CacheEntry) -> str:
    state = "in use" if entry.in_use else "unused"
    return f"{entry.sha256}  {human_size(entry.size):>10}  {_when(entry.last_used)}  {state}"


def _prune(args: argparse.Namespace) -> int:
    cache = _cache_dir(args)
    result = prune(cache, max_bytes=args.max_bytes, older_than=args.older_than)
    for entry in result.removed:
        sys.stdout.write(f"removed {entry.sha256}  {human_size(entry.size)}\n")
    for entry in result.kept_in_use:
        sys.stdout.write(f"kept    {entry.sha256}  {human_size(entry.size)}  (in use)\n")
    freed = sum(e.size for e in result.removed)
    sys.stdout.write(
        f"{cache}: removed {len(result.removed)} bundles ({human_size(freed)}), "
        f"{human_size(result.remaining_bytes)} left\n"
    )
    return 0
