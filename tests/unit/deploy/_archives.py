"""Bundle archives for the staging tests, valid and hostile.

Valid archives follow the builder's exact format (its compression, PAX tar, ``manifest.json``
first, then regular files in sorted order, mode 0644/0755, uid/gid 0, mtime 0), so staging is
tested without depending on ``build()``. Hostile archives are lists of raw members written with
``tarfile`` directly: anything a crafted archive could hold.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from toil_mesos.deploy._compression import compressing_writer
from toil_mesos.deploy.manifest import (
    ARCHIVE_SUFFIX,
    MANIFEST_NAME,
    Manifest,
    ManifestFile,
    ManifestRoot,
    RootKind,
)

__all__ = [
    "Archive",
    "Member",
    "egg",
    "hardlink",
    "make_bundle",
    "manifest_for",
    "manifest_member",
    "regular",
    "root",
    "sha",
    "special",
    "symlink",
    "write_archive",
    "write_raw",
]

#: A tar header and its content (None for members without content).
Member = tuple[tarfile.TarInfo, bytes | None]


@dataclass(frozen=True, slots=True)
class Archive:
    path: Path
    sha256: str


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _info(name: str, type_: bytes, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def regular(name: str, data: bytes, *, executable: bool = False, size: int | None = None) -> Member:
    """A regular file; *size* overrides the header's size (the content is still *data*)."""
    info = _info(name, tarfile.REGTYPE, 0o755 if executable else 0o644)
    info.size = len(data) if size is None else size
    return info, data


def symlink(name: str, target: str) -> Member:
    info = _info(name, tarfile.SYMTYPE, 0o777)
    info.linkname = target
    return info, None


def hardlink(name: str, target: str) -> Member:
    info = _info(name, tarfile.LNKTYPE)
    info.linkname = target
    return info, None


def special(name: str, type_: bytes) -> Member:
    """A device node, FIFO or directory member (CHRTYPE, BLKTYPE, FIFOTYPE, DIRTYPE)."""
    info = _info(name, type_, 0o755 if type_ == tarfile.DIRTYPE else 0o644)
    if type_ in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info, None


def root(name: str, kind: RootKind = RootKind.SCRIPT_DIR, entry: str | None = None) -> ManifestRoot:
    return ManifestRoot(name=name, kind=kind, entry=entry or name, source=f"/leader/{name}")


def manifest_for(
    files: Mapping[str, bytes],
    *,
    roots: Sequence[ManifestRoot] = (root("r0"),),
    executable: Collection[str] = (),
    module: str | None = "mod",
) -> Manifest:
    """The manifest the builder would write for *files* (archive name -> content)."""
    return Manifest(
        module=module,
        python="3.11",
        toil="9.6.0",
        roots=tuple(roots),
        files=tuple(
            ManifestFile(path=n, size=len(d), sha256=sha(d), executable=n in executable)
            for n, d in sorted(files.items())
        ),
    )


def manifest_member(manifest: Manifest | bytes) -> Member:
    data = manifest.to_json() if isinstance(manifest, Manifest) else manifest
    return regular(MANIFEST_NAME, data)


def write_raw(directory: Path, data: bytes) -> Archive:
    """Write *data* as an archive named by its sha256, as the fetcher would leave it."""
    digest = sha(data)
    path = directory / f"{digest}{ARCHIVE_SUFFIX}"
    path.write_bytes(data)
    return Archive(path, digest)


def write_archive(directory: Path, members: Iterable[Member]) -> Archive:
    """Write *members* in order, exactly as given, into a compressed PAX tar."""
    buffer = io.BytesIO()
    with (
        compressing_writer(buffer) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for info, data in members:
            tar.addfile(info, None if data is None else io.BytesIO(data))
    return write_raw(directory, buffer.getvalue())


def make_bundle(
    directory: Path,
    files: Mapping[str, bytes],
    *,
    roots: Sequence[ManifestRoot] = (root("r0"),),
    executable: Collection[str] = (),
) -> Archive:
    """A valid bundle of *files*, in the builder's format."""
    manifest = manifest_for(files, roots=roots, executable=executable)
    members = [manifest_member(manifest)]
    members += [regular(n, files[n], executable=n in executable) for n in sorted(files)]
    return write_archive(directory, members)


def egg(modules: Mapping[str, str]) -> bytes:
    """A zipped egg holding *modules* (module file name -> source), importable by zipimport."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, source in sorted(modules.items()):
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), source)
    return buffer.getvalue()
