"""Keep the staged-bundle cache under a size cap without ever removing a bundle in use.

Every workflow run, and every ``--restart`` after a code change, stages a new bundle on each
agent it touches; an agent that runs for months would fill its disk. This module bounds the
cache (``$TOIL_MESOS_BUNDLE_CACHE_MAX_BYTES``, default 10 GiB) by removing the least recently
used staged bundles first, as Mesos bounds its fetcher cache.

Why leases are ``flock`` locks: a process that uses a staged bundle holds a *shared* lock on
``<cache>/<sha256>.lease`` for as long as it uses it, and the kernel drops the lock when the
process dies, so a crashed executor never pins a bundle for ever. An evictor takes the lock
*exclusively and without waiting*: it only ever removes a bundle nobody holds, and never waits
for a user. While it holds the lock it renames the staged directory to ``.evicting-...`` (one
atomic step, so a stager sees the whole bundle or none of it) and unlinks the lease file; only
then, lock released, does it delete the renamed tree. A stager that was waiting for the shared
lock notices that the lease file it locked was unlinked and locks the new one, and finds no
staged directory, so it stages again.

Why last use is the lease file's mtime: recording a use must cost next to nothing on the warm
path. The lease file is open anyway; its mtime is set when a lease is taken (at most once a
minute) and when it is released. A bundle staged before leases existed falls back to its
directory's mtime.

Sizes are disk usage (allocated blocks, as ``du``), computed once per bundle and kept as the
lease file's content: a staged bundle's size never changes, since its name is its content hash.

The policy itself (:func:`choose_victims`, :func:`choose_stale`) is pure and knows nothing of
files; the rest is a thin layer over the filesystem.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import secrets
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from toil_mesos.deploy._compression import decompressing_reader
from toil_mesos.deploy._units import human_size
from toil_mesos.deploy.manifest import MANIFEST_NAME, Manifest, is_sha256
from toil_mesos.errors import BundleError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "LEASE_SUFFIX",
    "MAX_BYTES_ENV",
    "STAGE_LOCKS",
    "BundleLease",
    "CacheEntry",
    "PruneResult",
    "acquire_lease",
    "choose_stale",
    "choose_victims",
    "evict",
    "list_cache",
    "make_room",
    "max_bytes_from_env",
    "parse_duration",
    "parse_size",
    "prune",
    "same_file",
    "stage_lock_path",
]

logger = logging.getLogger(__name__)

#: Environment variable: the staged cache's size cap, in bytes or with a unit (``10G``).
MAX_BYTES_ENV: Final = "TOIL_MESOS_BUNDLE_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES: Final = 10 << 30
LEASE_SUFFIX: Final = ".lease"
EVICTING_PREFIX: Final = ".evicting-"
#: The directory of the stagers' lock files, one per bundle, removed with the bundle.
STAGE_LOCKS: Final = ".locks"
#: A use is recorded at most this often on the warm path (one ``futimens`` per minute).
USE_RECORD_SECONDS: Final = 60.0
_BLOCK = 4096
_LEASE_ATTEMPTS = 100

_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgtp]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DURATION = re.compile(
    r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>s|secs?|m|mins?|h|hrs?|d|days?|w|weeks?)?",
    re.IGNORECASE,
)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

#: Cache directories already warned about being over the cap with everything in use.
_warned_full: set[Path] = set()


# -- units -------------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Parse a byte count: ``1048576``, ``512K``, ``5G``, ``2GB``, ``1.5GiB``.

    Units are powers of 1024 whether written ``G``, ``GB`` or ``GiB``, as Mesos reads its
    ``--fetcher_cache_size``.

    >>> parse_size("5G"), parse_size("2GB"), parse_size("512k"), parse_size("100")
    (5368709120, 2147483648, 524288, 100)

    :raises ValueError: saying what is accepted.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a size: use a number of bytes, optionally with a unit K, M, G or "
            "T (powers of 1024), e.g. 500M or 10G"
        )
    return int(float(match["number"]) * _SIZE_UNITS[match["unit"].lower()])


def parse_duration(text: str) -> float:
    """Parse a duration in seconds: ``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w``.

    >>> parse_duration("7d"), parse_duration("1.5h"), parse_duration("45")
    (604800.0, 5400.0, 45.0)

    :raises ValueError: saying what is accepted.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: use a number with a unit s, m, h, d or w, e.g. 7d"
        )
    unit = (match["unit"] or "s")[0].lower()
    return float(match["number"]) * _DURATION_UNITS[unit]


def max_bytes_from_env(env: Mapping[str, str] | None = None) -> int:
    """The cap from ``$TOIL_MESOS_BUNDLE_CACHE_MAX_BYTES`` (default 10 GiB).

    :raises BundleError: naming the variable when its value is not a size.
    """
    value = (os.environ if env is None else env).get(MAX_BYTES_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_BYTES
    try:
        return parse_size(value)
    except ValueError as exc:
        raise BundleError(f"{MAX_BYTES_ENV}: {exc}") from None


# -- the policy (no I/O) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One staged bundle: its disk usage, its last use (epoch seconds), whether it is held."""

    sha256: str
    size: int
    last_used: float
    in_use: bool = False


def choose_victims(
    entries: Sequence[CacheEntry], cap: int, in_use: Iterable[str] = (), *, incoming: int = 0
) -> list[CacheEntry]:
    """The bundles to remove, least recently used first, so that what stays plus *incoming*
    fits in *cap*.

    Bundles named in *in_use* (or marked ``in_use``) are never chosen; when removing every
    other one is not enough, all the others are chosen and the caller goes over the cap.
    Ties in last use are broken by hash, so the choice is deterministic.
    """
    held = set(in_use) | {e.sha256 for e in entries if e.in_use}
    total = sum(e.size for e in entries) + incoming
    victims: list[CacheEntry] = []
    candidates = sorted(
        (e for e in entries if e.sha256 not in held), key=lambda e: (e.last_used, e.sha256)
    )
    for entry in candidates:
        if total <= cap:
            break
        victims.append(entry)
        total -= entry.size
    return victims


def choose_stale(
    entries: Sequence[CacheEntry], older_than: float, now: float, in_use: Iterable[str] = ()
) -> list[CacheEntry]:
    """The bundles not held and not used for more than *older_than* seconds, oldest first."""
    held = set(in_use) | {e.sha256 for e in entries if e.in_use}
    stale = [e for e in entries if e.sha256 not in held and now - e.last_used > older_than]
    return sorted(stale, key=lambda e: (e.last_used, e.sha256))


# -- leases ------------------------------------------------------------------------------------


def lease_path(cache: Path, sha256: str) -> Path:
    return cache / f"{sha256}{LEASE_SUFFIX}"


def stage_lock_path(cache: Path, sha256: str) -> Path:
    """The file stagers of *sha256* lock so that one extracts it and the others wait."""
    return cache / STAGE_LOCKS / f"{sha256}.lock"


class BundleLease:
    """A shared ``flock`` on a bundle's lease file: while held, no evictor removes the bundle.

    Released by :meth:`release`, by garbage collection of the lease, or by the kernel when the
    process dies. An *unheld* lease (``held`` False) stands for a cache this process cannot
    write, where nobody else can evict either.
    """

    __slots__ = ("_fd", "path", "sha256")

    def __init__(self, sha256: str, path: Path, fd: int | None) -> None:
        self.sha256 = sha256
        self.path = path
        self._fd = fd

    def __repr__(self) -> str:
        return f"<BundleLease {self.sha256[:12]} held={self.held}>"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Record the last use and let evictors have the bundle; idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.utime(fd)
        finally:
            os.close(fd)

    def abandon(self) -> None:
        """Release after a failed staging; the lease file goes if no bundle and no other holder.

        So that a failure leaves the cache as it was. The lock is converted to exclusive
        without waiting: another holder means another stager, which still needs the file.
        """
        fd = self._fd
        if fd is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if same_file(os.fstat(fd), self.path) and not os.path.lexists(
                self.path.with_name(self.sha256)
            ):
                os.unlink(self.path)
        self._fd = None
        os.close(fd)

    def __enter__(self) -> BundleLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


def acquire_lease(cache: Path, sha256: str) -> BundleLease:
    """Hold a shared lease on bundle *sha256* of *cache* (staged yet or not).

    Waits only while an evictor holds the file, which is a rename long. Take the lease
    *before* looking for the staged directory: what is seen under the lease stays.
    """
    path = lease_path(cache, sha256)
    for _ in range(_LEASE_ATTEMPTS):
        try:
            fd = _open_lease(cache, path)
        except OSError as exc:
            # A cache this process cannot write: nobody can evict from it either. Staging
            # reports the problem itself if it has to write there.
            logger.debug("no lease on %s (%s): cache not writable here", path, exc.strerror)
            return BundleLease(sha256, path, None)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            opened = os.fstat(fd)
            if same_file(opened, path):
                if time.time() - opened.st_mtime >= USE_RECORD_SECONDS:
                    os.utime(fd)
                return BundleLease(sha256, path, fd)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # an evictor unlinked the file we locked: lock the new one
    raise BundleError(f"could not lease bundle {sha256} in {str(cache)!r}: evicted repeatedly")


def _open_lease(cache: Path, path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:  # the first staging into a new cache
        cache.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o644)


def same_file(opened: os.stat_result, path: Path) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    return (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino)


# -- looking at the cache ----------------------------------------------------------------------


def list_cache(cache: Path) -> list[CacheEntry]:
    """Every staged bundle in *cache* with its size, last use and whether it is held now.

    Safe while executors work: it reads, and probes leases without waiting.
    """
    try:
        names = os.listdir(cache)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise BundleError(f"cannot list bundle cache {str(cache)!r}: {exc.strerror}") from None
    entries: list[CacheEntry] = []
    for name in sorted(names):
        if not is_sha256(name):
            continue
        directory = cache / name
        try:
            dir_stat = os.lstat(directory)
        except FileNotFoundError:
            continue  # evicted while we looked
        if not stat.S_ISDIR(dir_stat.st_mode):
            continue
        entries.append(_entry(cache, name, directory, dir_stat))
    return entries


def _entry(cache: Path, sha256: str, directory: Path, dir_stat: os.stat_result) -> CacheEntry:
    path = lease_path(cache, sha256)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return CacheEntry(sha256, _disk_usage(directory), dir_stat.st_mtime, in_use=False)
    except OSError:  # not ours to write: size it without recording, and assume it is held
        return CacheEntry(sha256, _disk_usage(directory), dir_stat.st_mtime, in_use=True)
    try:
        lease_stat = os.fstat(fd)
        size = _recorded_size(fd)
        if size is None:
            size = _disk_usage(directory)
            with contextlib.suppress(OSError):
                os.pwrite(fd, f"{size}\n".encode(), 0)
                # Writing must not count as a use: put the last use back.
                os.utime(fd, ns=(lease_stat.st_atime_ns, lease_stat.st_mtime_ns))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            in_use = False
        except BlockingIOError:
            in_use = True
    finally:
        os.close(fd)
    return CacheEntry(sha256, size, lease_stat.st_mtime, in_use=in_use)


def _recorded_size(fd: int) -> int | None:
    data = os.pread(fd, 32, 0)
    text = data.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _disk_usage(directory: Path) -> int:
    """Allocated bytes of *directory*'s tree, like ``du -s --bytes`` of the blocks."""
    total = 0
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    with contextlib.suppress(OSError):
        total += os.lstat(directory).st_blocks * 512
    return total


# -- removing ----------------------------------------------------------------------------------


def evict(cache: Path, sha256: str, *, background: bool = False) -> bool:
    """Remove staged bundle *sha256* unless someone holds it; True when it was removed.

    Never waits: a held lease means "in use", and the bundle stays. With *background*, the
    renamed tree is deleted by a thread of this process (joined at exit), so that a stager
    making room does not make its task wait for the deletion of another bundle.
    """
    path = lease_path(cache, sha256)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        logger.warning("cannot evict bundle %s from %s: %s", sha256[:12], cache, exc.strerror)
        return False
    graveyard: Path | None = None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not same_file(os.fstat(fd), path):
            return False  # another evictor got here first
        graveyard = cache / f"{EVICTING_PREFIX}{sha256}-{secrets.token_hex(4)}"
        try:
            os.rename(cache / sha256, graveyard)
        except FileNotFoundError:
            graveyard = None
        except OSError as exc:
            logger.warning("cannot evict bundle %s from %s: %s", sha256[:12], cache, exc.strerror)
            return False
        # Under the exclusive lease no stager of this hash is past acquire_lease, so none
        # holds or waits for its staging lock; one that comes later locks a new file.
        for done_with in (path, stage_lock_path(cache, sha256)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(done_with)
    finally:
        os.close(fd)
    if graveyard is None:
        return False
    if background:
        threading.Thread(
            target=_remove_tree, args=(graveyard,), name="bundle-cache-eviction"
        ).start()
    else:
        _remove_tree(graveyard)
    return True


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        logger.warning("could not remove all of %s; the next eviction retries", path)


def _remove_leftovers(cache: Path) -> None:
    """Delete trees a dead evictor renamed but did not finish deleting, and stray leases.

    Nobody uses a ``.evicting-`` tree, so any process may finish the job; two doing it at
    once only make each other's ``rmtree`` skip what is already gone.
    """
    try:
        names = set(os.listdir(cache))
    except OSError:
        return
    for name in names:
        if name.startswith(EVICTING_PREFIX):
            _remove_tree(cache / name)
        elif name.endswith(LEASE_SUFFIX) and name[: -len(LEASE_SUFFIX)] not in names:
            sha256 = name[: -len(LEASE_SUFFIX)]
            if is_sha256(sha256):
                evict(cache, sha256)  # a lease file of no bundle: unlinked unless held
    try:
        locks = os.listdir(cache / STAGE_LOCKS)
    except OSError:
        return
    for name in locks:
        sha256 = name.removesuffix(".lock")
        if name.endswith(".lock") and is_sha256(sha256) and sha256 not in names:
            # The lock of a bundle evicted by an older version, or of a failed staging.
            evict(cache, sha256)


def make_room(cache: Path, *, incoming: int, cap: int) -> list[CacheEntry]:
    """Evict least recently used bundles so that the cache plus *incoming* bytes fits *cap*.

    Called by a stager before it extracts a new bundle. Victims are renamed away at once and
    deleted in the background, so the task waiting for this staging does not pay for deleting
    another bundle's files. When the bundles in use alone pass the cap, staging goes on anyway
    (a task must not fail for want of cache room that a running task holds) and this is logged
    once per cache directory.
    """
    _remove_leftovers(cache)
    entries = list_cache(cache)
    total = sum(e.size for e in entries) + incoming
    if total <= cap:
        return []
    removed: list[CacheEntry] = []
    for victim in choose_victims(entries, cap, incoming=incoming):
        if evict(cache, victim.sha256, background=True):
            removed.append(victim)
            total -= victim.size
            logger.info(
                "evicted staged bundle %s (%s, last used %s) from %s",
                victim.sha256[:12],
                human_size(victim.size),
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(victim.last_used)),
                cache,
            )
    if total > cap:
        level = logging.DEBUG if cache in _warned_full else logging.WARNING
        _warned_full.add(cache)
        logger.log(
            level,
            "bundle cache %s will hold %s, over its cap of %s (%s), because the bundles in use "
            "take that room; staging anyway",
            cache,
            human_size(total),
            human_size(cap),
            MAX_BYTES_ENV,
        )
    return removed


def estimate_staged_size(archive: Path) -> int:
    """Disk usage the bundle in *archive* will take once staged, from its manifest.

    Reads only the archive's first member; an unreadable archive gives its own size (the
    extraction that follows reports what is wrong with it).
    """
    try:
        with (
            open(archive, "rb") as raw,
            decompressing_reader(raw) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            member = tar.next()
            if member is None or member.name != MANIFEST_NAME:
                raise ValueError("no manifest")
            source = tar.extractfile(member)
            data = b"" if source is None else source.read()
        manifest = Manifest.from_json(data)
    except Exception:  # noqa: BLE001 - any failure: fall back to the archive's size
        try:
            return os.path.getsize(archive)
        except OSError:
            return 0
    blocks = sum(math.ceil(f.size / _BLOCK) for f in manifest.files)
    directories = {f.path.rsplit("/", 1)[0] for f in manifest.files if "/" in f.path}
    return (blocks + len(directories) + len(manifest.roots) + 3) * _BLOCK + len(data)


def prepare_cold(cache: Path, archive: Path) -> None:
    """The stager's hook before a cold extraction: make room for *archive*'s bundle."""
    cap = max_bytes_from_env()
    make_room(cache, incoming=estimate_staged_size(archive), cap=cap)


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What ``bundle cache prune`` did: removed bundles, held ones it had to keep, size left."""

    removed: tuple[CacheEntry, ...]
    kept_in_use: tuple[CacheEntry, ...]
    remaining_bytes: int


def prune(
    cache: Path,
    *,
    max_bytes: int | None = None,
    older_than: float | None = None,
    now: float | None = None,
) -> PruneResult:
    """Remove bundles not used for *older_than* seconds, then LRU ones until under *max_bytes*.

    With neither, every bundle not in use goes. Held bundles always stay.
    """
    _remove_leftovers(cache)
    entries = list_cache(cache)
    moment = time.time() if now is None else now
    chosen: dict[str, CacheEntry] = {}
    if older_than is None and max_bytes is None:
        chosen = {e.sha256: e for e in entries if not e.in_use}
    if older_than is not None:
        chosen.update((e.sha256, e) for e in choose_stale(entries, older_than, moment))
    if max_bytes is not None:
        rest = [e for e in entries if e.sha256 not in chosen]
        chosen.update((e.sha256, e) for e in choose_victims(rest, max_bytes))
    removed = tuple(e for e in chosen.values() if evict(cache, e.sha256))
    gone = {e.sha256 for e in removed}
    left = [e for e in entries if e.sha256 not in gone]
    return PruneResult(
        removed=removed,
        kept_in_use=tuple(e for e in left if e.in_use or e.sha256 in chosen),
        remaining_bytes=sum(e.size for e in left),
    )
