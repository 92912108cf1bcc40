"""Write a bundle: one deterministic, content-addressed archive.

Identical inputs give byte-identical archives: members are sorted, owners, times and modes are
normalised (only the executable bit survives), and the compressed stream depends on nothing but
the content (see :mod:`toil_mesos.deploy._compression`). The
archive is named by the sha256 of its bytes, so a worker that has staged a name has the content.

An unchanged rebuild does not read file contents again: ``.build-cache.json`` in the output
directory maps each file's stat key (size, mtime and ctime in ns, inode, device) to its sha256, and
each manifest digest to the archive already written for it. A rebuild then costs one ``stat`` per
file.

The archive is written to a temporary file in the output directory and renamed into place, so a
failure (a file that changed while it was read, a full disk) never leaves a partial bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from toil_mesos.deploy._compression import compressing_writer
from toil_mesos.deploy._walk import FileEntry
from toil_mesos.deploy.manifest import (
    ARCHIVE_SUFFIX,
    MANIFEST_NAME,
    Manifest,
    ManifestFile,
)
from toil_mesos.deploy.scan import Contents
from toil_mesos.errors import BundleError

__all__ = ["Bundle", "build"]

logger = logging.getLogger(__name__)

_CACHE_NAME = ".build-cache.json"
_CACHE_VERSION = 1
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Bundle:
    """A built bundle on the leader."""

    sha256: str
    path: Path
    manifest: Manifest
    #: The archive's size in bytes, as written.
    size: int
    #: True when an identical archive was already in the output directory.
    reused: bool = False


def build(contents: Contents, out_dir: Path, *, toil_version: str | None = None) -> Bundle:
    """Write *contents* as ``<out_dir>/<sha256>.tar.zst`` and return it.

    :param toil_version: recorded for the workers' check; defaults to the installed Toil's.
    :raises BundleError: a file vanished or changed while being read, or the output directory
        cannot be written (it names the directory).
    """
    started = time.monotonic()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(
            f"cannot use {out_dir} as the bundle directory: {exc.strerror or exc}"
        ) from None
    cache = _BuildCache.load(out_dir)
    manifest = Manifest(
        module=contents.plan.module.name if contents.plan.module else None,
        python=contents.plan.python,
        toil=toil_version if toil_version is not None else _installed_toil(),
        roots=contents.roots,
        files=tuple(
            ManifestFile(
                path=f.arcname,
                size=f.size,
                sha256=cache.file_sha256(f),
                executable=f.executable,
            )
            for f in contents.files
        ),
        native=contents.native,
    )
    manifest_bytes = manifest.to_json()
    manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
    known = cache.archive_for(manifest_digest, out_dir)
    if known is not None:
        cache.save(out_dir)
        logger.info("bundle %s unchanged (%d files, %d bytes): reused",
                    known[:12], len(manifest.files), manifest.total_bytes)
        path = out_dir / f"{known}{ARCHIVE_SUFFIX}"
        return Bundle(known, path, manifest, path.stat().st_size, reused=True)
    sha256 = _write_archive(manifest, manifest_bytes, contents.files, out_dir)
    cache.remember_archive(manifest_digest, sha256)
    cache.save(out_dir)
    path = out_dir / f"{sha256}{ARCHIVE_SUFFIX}"
    logger.info(
        "bundle %s: %d roots, %d files, %d bytes of code, %d bytes archived, in %.2f s",
        sha256[:12], len(manifest.roots), len(manifest.files), manifest.total_bytes,
        path.stat().st_size, time.monotonic() - started,
    )
    return Bundle(sha256, path, manifest, path.stat().st_size)


def _installed_toil() -> str | None:
    try:
        return metadata.version("toil")
    except metadata.PackageNotFoundError:
        return None


def _write_archive(
    manifest: Manifest, manifest_bytes: bytes, files: tuple[FileEntry, ...], out_dir: Path
) -> str:
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=".bundle-", suffix=".tmp", dir=out_dir)
    except OSError as exc:
        raise BundleError(f"cannot write a bundle into {out_dir}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            hashing = _HashingWriter(raw)
            with compressing_writer(hashing) as compressed, tarfile.open(  # type: ignore[arg-type]
                fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT
            ) as tar:
                tar.addfile(_member(MANIFEST_NAME, len(manifest_bytes), False),
                            io.BytesIO(manifest_bytes))
                for entry in files:
                    with _open_checked(entry) as stream:
                        tar.addfile(_member(entry.arcname, entry.size, entry.executable), stream)
            raw.flush()
            os.fsync(raw.fileno())
        sha256 = hashing.hexdigest()
        os.replace(tmp, out_dir / f"{sha256}{ARCHIVE_SUFFIX}")
        return sha256
    except OSError as exc:
        raise BundleError(
            f"cannot write the bundle into {out_dir}: {exc.strerror or exc}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _member(name: str, size: int, executable: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o755 if executable else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


@contextlib.contextmanager
def _open_checked(entry: FileEntry) -> Iterator[IO[bytes]]:
    """Open a file to archive, making sure it is still the file whose hash the manifest has.

    The stat key (size, times, inode) is compared before and after the copy, the same test
    that lets the build cache trust an unchanged file.
    """
    try:
        with entry.source.open("rb") as stream:
            if _stat_key(os.fstat(stream.fileno())) != entry.stat_key:
                raise BundleError(_changed(entry))
            yield stream
            if _stat_key(os.fstat(stream.fileno())) != entry.stat_key:
                raise BundleError(_changed(entry))
    except OSError as exc:
        raise BundleError(f"cannot read {entry.source}: {exc.strerror}") from None


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _changed(entry: FileEntry) -> str:
    return f"{entry.source} changed while the bundle was being built; build it again"


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes everything written through it."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self._sink.write(view)
        return len(view)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _BuildCache:
    """File hashes by stat key, and archives by manifest digest, kept in the output directory."""

    def __init__(self, files: dict[str, list[Any]], archives: dict[str, str]) -> None:
        self._files = files
        self._archives = archives
        self._used: dict[str, list[Any]] = {}
        self._changed = False

    @classmethod
    def load(cls, out_dir: Path) -> _BuildCache:
        try:
            document = json.loads((out_dir / _CACHE_NAME).read_text())
            if document.get("version") == _CACHE_VERSION:
                return cls(dict(document["files"]), dict(document["archives"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        return cls({}, {})

    def file_sha256(self, entry: FileEntry) -> str:
        key = str(entry.source)
        known = self._files.get(key)
        if known is not None and tuple(known[0]) == entry.stat_key:
            self._used[key] = known
            return str(known[1])
        digest = hashlib.sha256()
        try:
            with entry.source.open("rb") as stream:
                for chunk in iter(lambda: stream.read(_CHUNK), b""):
                    digest.update(chunk)
        except OSError as exc:
            raise BundleError(f"cannot read {entry.source}: {exc.strerror}") from None
        record = [list(entry.stat_key), digest.hexdigest()]
        self._used[key] = record
        self._changed = True
        return str(record[1])

    def archive_for(self, manifest_digest: str, out_dir: Path) -> str | None:
        sha256 = self._archives.get(manifest_digest)
        if sha256 and (out_dir / f"{sha256}{ARCHIVE_SUFFIX}").is_file():
            return sha256
        return None

    def remember_archive(self, manifest_digest: str, sha256: str) -> None:
        self._archives[manifest_digest] = sha256
        self._changed = True

    def save(self, out_dir: Path) -> None:
        """Keep the entries this build used (so the cache never grows without bound).

        An unchanged rebuild used exactly what the cache held: nothing to write.
        """
        if not self._changed and self._used.keys() == self._files.keys():
            return
        archives = {
            digest: sha256
            for digest, sha256 in self._archives.items()
            if (out_dir / f"{sha256}{ARCHIVE_SUFFIX}").is_file()
        }
        document = {"version": _CACHE_VERSION, "files": self._used, "archives": archives}
        try:
            fd, tmp = tempfile.mkstemp(prefix=".build-cache-", dir=out_dir)
            with os.fdopen(fd, "w") as stream:
                json.dump(document, stream, separators=(",", ":"))
            os.replace(tmp, out_dir / _CACHE_NAME)
        except OSError as exc:
            logger.warning("cannot save the build cache in %s: %s", out_dir, exc)
