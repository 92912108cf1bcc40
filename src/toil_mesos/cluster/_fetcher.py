"""The agent's fetcher: download an executor's ``CommandInfo.URI`` list into its sandbox.

Behaviour follows ``docs/fetcher.md`` in apache/mesos, corrected by what a Mesos 1.12 agent
did in the recordings (``shared/mesos-transcripts/fetcher``):

* ``cache: true`` and the URI not cached yet: the agent sizes the download with a HEAD
  request. With a ``Content-Length`` the action is ``DOWNLOAD_AND_CACHE`` (GET into the cache
  file ``c<n>-<basename>``, then copy into the sandbox); without one the agent warns
  ``Reverting to fetching directly into the sandbox ...`` and the action is ``BYPASS_CACHE``
  (a plain GET into the sandbox, nothing cached).
* ``cache: true`` and already cached (or being cached by another executor): no HTTP request at
  all, action ``RETRIEVE_FROM_CACHE``.
* ``cache: false``: a single GET, action ``BYPASS_CACHE``.
* Requests carry only ``Host`` and ``Accept: */*``.
* ``executable`` gives mode 0755 (and wins over ``extract``); other files are 0644.
  ``extract`` unpacks ``.tar``, ``.tgz``, ``.tar.gz``, ``.tar.bz2``, ``.tar.xz`` and ``.zip``
  into the sandbox and keeps the archive; a bare ``.gz`` is gunzipped beside it.
  ``output_file`` names the file in the sandbox.
* The fetcher log goes to the sandbox's ``stderr`` in glog format, with the ``Fetcher Info``
  JSON first. A failure ends with ``EXIT with status 1: Failed to fetch '<uri>': <why>`` and
  the agent reports ``Failed to fetch all URIs for container '<id>': exited with status 1``.
* The cache is agent-wide, keyed by URI, and does not survive an agent restart.
* The cache holds at most ``--fetcher-cache-size`` bytes (Mesos' ``--fetcher_cache_size``,
  default 2 GB). Room for a new entry, sized by the HEAD request, is made by removing the least
  recently used entries that no fetch in progress refers to; when that is not enough (the
  download is larger than the whole cache, or the rest is in use) the agent warns that it is
  reverting to fetching directly into the sandbox and the action is ``BYPASS_CACHE``.

A whole fetch is bounded by ``timeout`` seconds (``--fetcher-timeout``); every network
operation gets the time that is left.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import json
import logging
import os
import shutil
import tarfile
import threading
import time
import urllib.parse
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import httpx

from toil_mesos.deploy.cache import parse_size

__all__ = [
    "DEFAULT_FETCHER_CACHE_SIZE",
    "DEFAULT_FETCHER_TIMEOUT",
    "FetchError",
    "Fetcher",
    "FetcherCache",
    "fetcher_cache_size",
    "glog_line",
    "uri_basename",
]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

#: The fetcher's default stall timeout in Mesos (``--fetcher_stall_timeout=1mins``), used here
#: as the bound of a whole fetch unless ``--fetcher-timeout`` says otherwise.
DEFAULT_FETCHER_TIMEOUT = 60.0
#: Mesos' default ``--fetcher_cache_size`` (2GB, in its powers of 1024).
DEFAULT_FETCHER_CACHE_SIZE = 2 << 30

_CHUNK = 64 * 1024
_ARCHIVE_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip")


class FetchError(Exception):
    """The fetcher failed; ``str()`` is what the agent puts in TASK_FAILED after
    ``Failed to launch container: ``."""


class _UriFailed(Exception):
    """One URI failed; the message follows ``Failed to fetch '<uri>': ``."""


class _NoCacheRoom(Exception):
    """The cache cannot hold a new entry; the URI is fetched straight into the sandbox."""


def fetcher_cache_size(text: str) -> int:
    """Parse ``--fetcher-cache-size`` (``2GB``, ``500M``, bytes), for argparse."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def glog_line(level: str, where: str, message: str, *, now: float, thread_id: int) -> str:
    """Format one line as glog does (``I1124 19:09:56.862605 26739 fetcher.cpp:562] ...``).

    >>> glog_line("I", "fetcher.cpp:459", "hi", now=0.0, thread_id=7).split(" ", 2)[2]
    '    7 fetcher.cpp:459] hi\\n'
    """
    stamp = datetime.datetime.fromtimestamp(now)
    return (
        f"{level}{stamp:%m%d %H:%M:%S}.{stamp.microsecond:06d} {thread_id:>5} {where}] {message}\n"
    )


def uri_basename(uri: str) -> str:
    """The file name a URI lands under without ``output_file`` (Mesos ``Fetcher::basename``).

    >>> uri_basename("http://h:1/a/b/bundle.tar.gz?x=1"), uri_basename("/srv/f.txt")
    ('bundle.tar.gz', 'f.txt')
    """
    path = urllib.parse.urlsplit(uri).path if "://" in uri else uri
    name = os.path.basename(path.rstrip("/"))
    if not name:
        raise _UriFailed(f"Malformed URI (no basename): {uri}")
    return name


def _local_path(uri: str) -> str | None:
    if uri.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(uri).path)
    if "://" not in uri:
        return uri
    return None


@dataclass(slots=True, kw_only=True, eq=False)
class _CacheEntry:
    filename: str
    ready: threading.Event
    ok: bool = False
    #: Bytes reserved in the cache (the HEAD size, then the file's real size).
    size: int = 0
    #: Fetches in progress that use this entry; an entry referred to is never evicted.
    references: int = 0


class FetcherCache:
    """The agent-wide cache: one file per URI under ``directory``, named ``c<n>-<basename>``.

    Entries are reserved before the download starts, so a second executor asking for the same
    URI while the first downloads waits for that download instead of fetching again. Every
    entry a fetch uses is referenced until that fetch ends (:meth:`release`); the cache keeps
    at most ``max_bytes`` by evicting the least recently used entries nobody refers to.
    """

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_FETCHER_CACHE_SIZE) -> None:
        if max_bytes < 0:
            raise ValueError(f"--fetcher-cache-size must not be negative, got {max_bytes}")
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        #: In use order: least recently used first.
        self._entries: OrderedDict[str, _CacheEntry] = OrderedDict()
        self._counter = 0
        self._used = 0

    def __repr__(self) -> str:
        return (
            f"<FetcherCache {str(self.directory)!r} entries={len(self._entries)}"
            f" used={self._used}/{self.max_bytes}>"
        )

    @property
    def used_bytes(self) -> int:
        """Bytes the cache's entries take (reserved for those still downloading)."""
        with self._lock:
            return self._used

    def reset(self) -> None:
        """Empty the cache directory: the cache does not survive an agent restart."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def lookup(self, uri: str) -> _CacheEntry | None:
        """The entry for *uri*, referenced and marked as just used; None when not cached."""
        with self._lock:
            entry = self._entries.get(uri)
            if entry is not None:
                entry.references += 1
                self._entries.move_to_end(uri)
            return entry

    def reserve(self, uri: str, size: int = 0) -> tuple[_CacheEntry, bool]:
        """Return the entry for *uri*, referenced, and whether the caller must download it.

        :raises _NoCacheRoom: when *size* bytes cannot be made free, as Mesos reverts to
            fetching into the sandbox then.
        """
        with self._lock:
            entry = self._entries.get(uri)
            if entry is not None:
                entry.references += 1
                self._entries.move_to_end(uri)
                return entry, False
            self._make_room(size)
            self._counter += 1
            entry = _CacheEntry(
                filename=f"c{self._counter}-{uri_basename(uri)}",
                ready=threading.Event(),
                size=size,
                references=1,
            )
            self._entries[uri] = entry
            self._used += size
            return entry, True

    def _make_room(self, size: int) -> None:
        """Evict LRU entries nobody refers to until *size* fits; evict nothing if it cannot."""
        if size > self.max_bytes:
            raise _NoCacheRoom(
                f"Failed to reserve space in the cache: the download's {size} bytes exceed "
                f"the whole cache ({self.max_bytes} bytes)"
            )
        needed = self._used + size - self.max_bytes
        victims: list[str] = []
        for uri, entry in self._entries.items():
            if needed <= 0:
                break
            if entry.references == 0 and entry.ready.is_set():
                victims.append(uri)
                needed -= entry.size
        if needed > 0:
            raise _NoCacheRoom(
                f"Failed to reserve space in the cache: {size} bytes needed, "
                f"{self.max_bytes - self._used} free and the rest in use"
            )
        for uri in victims:
            entry = self._entries.pop(uri)
            self._used -= entry.size
            with contextlib.suppress(FileNotFoundError):
                (self.directory / entry.filename).unlink()
            logger.info("Evicted fetcher cache entry '%s' (%d bytes)", uri, entry.size)

    def complete(self, uri: str, entry: _CacheEntry, *, ok: bool, size: int | None = None) -> None:
        """End the download of *entry*: kept with its real *size*, or dropped on failure."""
        with self._lock:
            entry.ok = ok
            if self._entries.get(uri) is entry:
                if not ok:
                    del self._entries[uri]
                    self._used -= entry.size
                elif size is not None:
                    self._used += size - entry.size
                    entry.size = size
        entry.ready.set()

    def release(self, entry: _CacheEntry) -> None:
        """A fetch that referred to *entry* is over: it may be evicted again."""
        with self._lock:
            entry.references = max(0, entry.references - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Item:
    uri: JSON
    action: str
    entry: _CacheEntry | None
    download: bool


class Fetcher:
    """Runs the fetch for one container at a time (thread-safe; one call per executor).

    :param cache: the agent-wide cache.
    :param timeout: bound of one whole fetch, in seconds.
    :param user: the user named in ``Fetcher Info`` and in the cache key (the agent's user).
    :param clock: wall clock for log stamps (injectable for tests).
    """

    def __init__(
        self,
        *,
        cache: FetcherCache,
        timeout: float = DEFAULT_FETCHER_TIMEOUT,
        user: str,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._cache = cache
        self._timeout = timeout
        self._user = user
        self._clock = clock if clock is not None else time.time

    def __repr__(self) -> str:
        return f"<Fetcher timeout={self._timeout} cache={self._cache!r}>"

    def fetch(
        self,
        uris: list[JSON],
        *,
        sandbox: Path,
        container_id: str,
        log: IO[str],
        cancelled: threading.Event | None = None,
    ) -> None:
        """Fetch every URI into *sandbox*, writing the fetcher log to *log*.

        :raises FetchError: with the agent's message when any URI fails or time runs out.
        """
        if not uris:
            return
        deadline = time.monotonic() + self._timeout
        cancel = cancelled if cancelled is not None else threading.Event()
        with httpx.Client(follow_redirects=True, trust_env=False) as client:
            # Only Host and Accept: */* go out, as libcurl sent them for the real fetcher.
            for name in list(client.headers.keys()):
                del client.headers[name]
            client.headers["Accept"] = "*/*"
            items: list[_Item] = []
            try:
                self._fetch_all(
                    uris, items, client=client, sandbox=sandbox, container_id=container_id,
                    log=log, deadline=deadline, cancel=cancel,
                )
            finally:
                for item in items:  # this fetch no longer needs its entries: evictable again
                    if item.entry is not None:
                        self._cache.release(item.entry)
        self._log(log, "I", "fetcher.cpp:623", f"Successfully fetched all URIs into '{sandbox}'")

    def _fetch_all(
        self,
        uris: list[JSON],
        items: list[_Item],
        *,
        client: httpx.Client,
        sandbox: Path,
        container_id: str,
        log: IO[str],
        deadline: float,
        cancel: threading.Event,
    ) -> None:
        """Plan every URI into *items* (which the caller releases), then fetch them in order."""
        for uri in uris:
            try:
                items.append(self._plan(uri, client=client, deadline=deadline))
            except (_UriFailed, KeyError, TypeError) as exc:
                self._abandon(items)
                self._fail(log, container_id, str(uri.get("value", uri)), exc)
        self._log(log, "I", "fetcher.cpp:562", "Fetcher Info: " + self._info(items, sandbox))
        for index, item in enumerate(items):
            try:
                final = self._fetch_item(
                    item,
                    client=client,
                    sandbox=sandbox,
                    log=log,
                    deadline=deadline,
                    cancel=cancel,
                )
            except (_UriFailed, OSError) as exc:
                self._abandon(items[index + 1 :])
                self._fail(log, container_id, str(item.uri["value"]), exc)
            self._log(log, "I", "fetcher.cpp:618", f"Fetched '{item.uri['value']}' to '{final}'")

    def _fail(self, log: IO[str], container_id: str, uri: str, exc: BaseException) -> NoReturn:
        """Log the fetcher's last line and raise the agent's error, as recorded for a 404."""
        self._log(
            log, "E", "fetcher.cpp:615", f"EXIT with status 1: Failed to fetch '{uri}': {exc}"
        )
        message = f"Failed to fetch all URIs for container '{container_id}': exited with status 1"
        logger.error("Failed to run mesos-fetcher: %s", message)
        raise FetchError(message) from exc

    def _abandon(self, items: list[_Item]) -> None:
        """Release cache reservations of items that will not be downloaded after all."""
        for item in items:
            if item.download and item.entry is not None:
                self._cache.complete(str(item.uri["value"]).lstrip(), item.entry, ok=False)

    # -- planning (the agent's side: decides the action per URI) ---------------------------

    def _plan(self, uri: JSON, *, client: httpx.Client, deadline: float) -> _Item:
        value = str(uri["value"]).lstrip()
        if not uri.get("cache", False):
            return _Item(uri=uri, action="BYPASS_CACHE", entry=None, download=False)
        existing = self._cache.lookup(value)
        if existing is not None:
            return _Item(uri=uri, action="RETRIEVE_FROM_CACHE", entry=existing, download=False)
        try:
            size = self._size(value, client=client, deadline=deadline)
        except _UriFailed as exc:
            logger.warning(
                "Reverting to fetching directly into the sandbox for '%s', due to failure to "
                "fetch through the cache, with error: Could not determine size of cache file "
                "for '%s@%s' with error: %s",
                value,
                self._user,
                value,
                exc,
            )
            return _Item(uri=uri, action="BYPASS_CACHE", entry=None, download=False)
        try:
            entry, download = self._cache.reserve(value, size)
        except _NoCacheRoom as exc:
            logger.warning(
                "Reverting to fetching directly into the sandbox for '%s', due to failure to "
                "fetch through the cache, with error: %s",
                value,
                exc,
            )
            return _Item(uri=uri, action="BYPASS_CACHE", entry=None, download=False)
        action = "DOWNLOAD_AND_CACHE" if download else "RETRIEVE_FROM_CACHE"
        return _Item(uri=uri, action=action, entry=entry, download=download)

    def _size(self, uri: str, *, client: httpx.Client, deadline: float) -> int:
        local = _local_path(uri)
        if local is not None:
            try:
                return os.stat(local).st_size
            except OSError as exc:
                raise _UriFailed(str(exc)) from None
        try:
            response = client.head(uri, timeout=_remaining(deadline))
        except httpx.HTTPError as exc:
            raise _UriFailed(f"Error downloading resource: {exc}") from None
        length = response.headers.get("Content-Length")
        if response.status_code != 200 or length is None:
            raise _UriFailed("No URL content-length available")
        return int(length)

    def _info(self, items: list[_Item], sandbox: Path) -> str:
        info_items: list[JSON] = []
        for item in items:
            info: JSON = {"action": item.action}
            if item.entry is not None:
                info["cache_filename"] = item.entry.filename
            info["uri"] = dict(sorted(item.uri.items()))
            info_items.append(info)
        info_json = {
            "cache_directory": str(self._cache.directory),
            "items": info_items,
            "sandbox_directory": str(sandbox),
            "stall_timeout": {"nanoseconds": int(self._timeout * 1e9)},
            "user": self._user,
        }
        return json.dumps(info_json, separators=(",", ":"))

    # -- fetching (the mesos-fetcher's side) ------------------------------------------------

    def _fetch_item(
        self,
        item: _Item,
        *,
        client: httpx.Client,
        sandbox: Path,
        log: IO[str],
        deadline: float,
        cancel: threading.Event,
    ) -> str:
        uri = str(item.uri["value"]).lstrip()
        self._log(log, "I", "fetcher.cpp:459", f"Fetching URI '{uri}'")
        destination = self._destination(item.uri, sandbox)
        if item.action == "BYPASS_CACHE":
            self._log(
                log, "I", "fetcher.cpp:290", f"Fetching '{uri}' directly into the sandbox directory"
            )
            self._download(
                uri, destination, client=client, log=log, deadline=deadline, cancel=cancel
            )
            return self._finish(item.uri, destination, sandbox, log=log)
        entry = item.entry
        assert entry is not None  # planned with a cache entry
        cache_file = self._cache.directory / entry.filename
        if item.download:
            try:
                self._cache.directory.mkdir(parents=True, exist_ok=True)
                self._download(
                    uri, cache_file, client=client, log=log, deadline=deadline, cancel=cancel
                )
            except BaseException:
                self._cache.complete(uri, entry, ok=False)
                with contextlib.suppress(OSError):
                    cache_file.unlink()
                raise
            self._cache.complete(uri, entry, ok=True, size=cache_file.stat().st_size)
        elif not entry.ready.wait(timeout=_remaining(deadline)) or not entry.ok:
            raise _UriFailed("Failed to download into the fetcher cache")
        self._log(log, "I", "fetcher.cpp:349", f"Fetching URI '{uri}' from cache")
        if item.uri.get("extract", True) and not item.uri.get("executable", False):
            # Like Mesos, extract straight from the cache: the archive is not copied.
            extracted = self._extract(cache_file, sandbox, log=log, name=destination.name)
            if extracted:
                return str(sandbox)
        try:
            shutil.copyfile(cache_file, destination)
        except OSError as exc:
            raise _UriFailed(f"Failed to copy from the cache: {exc}") from None
        return self._finish(item.uri, destination, sandbox, log=log, extract=False)

    @staticmethod
    def _destination(uri: JSON, sandbox: Path) -> Path:
        name = str(uri.get("output_file") or uri_basename(str(uri["value"]).lstrip()))
        destination = (sandbox / name).resolve()
        if sandbox.resolve() not in destination.parents:
            raise _UriFailed(f"output_file {name!r} leaves the sandbox")
        destination.parent.mkdir(parents=True, exist_ok=True)
        return destination

    def _finish(
        self, uri: JSON, path: Path, sandbox: Path, *, log: IO[str], extract: bool = True
    ) -> str:
        if uri.get("executable", False):
            os.chmod(path, 0o755)
            return str(path)
        os.chmod(path, 0o644)
        if extract and uri.get("extract", True):
            self._extract(path, sandbox, log=log)
        return str(path)

    def _extract(
        self, archive: Path, sandbox: Path, *, log: IO[str], name: str | None = None
    ) -> bool:
        """Unpack *archive* into *sandbox*; *name* is the file's sandbox name (default: its own
        name; a cached file's differs) and decides the kind and a bare ``.gz``'s output."""
        name = name or archive.name
        if not name.endswith((*_ARCHIVE_SUFFIXES, ".gz")):
            return False
        try:
            if not name.endswith(_ARCHIVE_SUFFIXES):
                # A bare .gz: gunzipped into the sandbox without the suffix.
                target_path = (sandbox / name[:-3]).resolve()
                if sandbox.resolve() not in target_path.parents:
                    raise ValueError(f"{name!r} would land outside the sandbox")
                with gzip.open(archive) as source, open(target_path, "wb") as target:
                    shutil.copyfileobj(source, target)
            elif name.endswith(".zip"):
                with zipfile.ZipFile(archive) as zipped:
                    _check_members(zipped.namelist(), sandbox)
                    zipped.extractall(sandbox)
            else:
                with tarfile.open(archive) as tarred:
                    tarred.extractall(sandbox, filter="data")
        except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, ValueError) as exc:
            raise _UriFailed(
                f"Failed to extract archive '{archive}' to '{sandbox}': {exc}"
            ) from None
        self._log(log, "I", "fetcher.cpp:126", f"Extracted '{archive}' into '{sandbox}'")
        return True

    def _download(
        self,
        uri: str,
        destination: Path,
        *,
        client: httpx.Client,
        log: IO[str],
        deadline: float,
        cancel: threading.Event,
    ) -> None:
        self._log(
            log, "I", "fetcher.cpp:175", f"Downloading resource from '{uri}' to '{destination}'"
        )
        local = _local_path(uri)
        if local is not None:
            try:
                shutil.copyfile(local, destination)
            except OSError as exc:
                raise _UriFailed(f"Failed to copy '{local}': {exc}") from None
            return
        if not uri.startswith(("http://", "https://")):
            raise _UriFailed(f"Unsupported URI scheme in '{uri}'")
        try:
            with client.stream("GET", uri, timeout=_remaining(deadline)) as response:
                if response.status_code != 200:
                    raise _UriFailed(
                        "Error downloading resource, received HTTP return code "
                        f"{response.status_code}"
                    )
                with open(destination, "wb") as out:
                    for chunk in response.iter_raw(_CHUNK):
                        out.write(chunk)
                        if cancel.is_set():
                            raise _UriFailed("Error downloading resource: cancelled")
                        if time.monotonic() > deadline:
                            raise _UriFailed("Error downloading resource: Timeout was reached")
        except httpx.TimeoutException:
            raise _UriFailed("Error downloading resource: Timeout was reached") from None
        except httpx.HTTPError as exc:
            raise _UriFailed(f"Error downloading resource: {exc}") from None

    def _log(self, log: IO[str], level: str, where: str, message: str) -> None:
        log.write(glog_line(level, where, message, now=self._clock(), thread_id=os.getpid()))
        log.flush()


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _UriFailed("Error downloading resource: Timeout was reached")
    return remaining


def _check_members(names: list[str], sandbox: Path) -> None:
    root = sandbox.resolve()
    for name in names:
        target = (root / name).resolve()
        if target != root and root not in target.parents:
            raise ValueError(f"archive member {name!r} would land outside the sandbox")
