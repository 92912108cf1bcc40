"""The bundle manifest: what a bundle holds, as versioned JSON.

A bundle is a Zstandard-compressed tar archive. Its first member is ``manifest.json`` (this module);
the others are regular files named ``<root name>/<path inside the root>``, in sorted order. The
manifest is what a worker reads to know which paths go first on ``sys.path`` and in which order,
and what the leader's Python and Toil were, so a mismatched worker can refuse the bundle.

Parsing is strict: a manifest from another format version, or with a field of the wrong type, is
refused with :class:`~toil_mesos.errors.BundleError`, never half-understood.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from toil_mesos.errors import BundleError

__all__ = [
    "ARCHIVE_SUFFIX",
    "FORMAT",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "Manifest",
    "ManifestFile",
    "ManifestRoot",
    "NativeModule",
    "RootKind",
    "is_safe_member_name",
    "is_sha256",
]

FORMAT = "toil-mesos-bundle"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
ARCHIVE_SUFFIX = ".tar.zst"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_ROOT_NAME = re.compile(r"r[0-9]+")


def is_sha256(value: str) -> bool:
    """Whether *value* is a lowercase hex sha256 digest, the only form bundle names take.

    >>> is_sha256("0" * 64), is_sha256("../etc/passwd")
    (True, False)
    """
    return _SHA256.fullmatch(value) is not None


class RootKind(enum.StrEnum):
    """Where a root came from on the leader; it decides how the root was collected."""

    #: The directory of a script run directly, with its sibling modules and packages.
    SCRIPT_DIR = "script_dir"
    #: The ``sys.path`` entry holding the top-level package of a ``python -m`` module.
    PACKAGE_ROOT = "package_root"
    #: A virtualenv's site-packages, minus what workers already have.
    SITE_PACKAGES = "site_packages"
    #: The source root of an editable install, with its distribution's dist-info.
    EDITABLE = "editable"
    #: A zipped ``.egg``: one file that goes on ``sys.path`` as it is.
    EGG = "egg"
    #: A path every node mounts: nothing ships, the path is put on ``sys.path`` as it is.
    SHARED = "shared"


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestRoot:
    """One entry of the ordered list of roots.

    ``entry`` is what goes on ``sys.path``: a path relative to the staging directory (``r0``, or
    ``r2/dep.egg`` for an egg), or for a shared root the absolute path every node mounts.
    """

    name: str
    kind: RootKind
    entry: str
    source: str
    distribution: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestFile:
    """One archive member: its name, size, content hash and whether it is executable."""

    path: str
    size: int
    sha256: str
    executable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NativeModule:
    """A shipped file of native code, with the distribution it belongs to (if any)."""

    path: str
    distribution: str | None
    #: False when built for another Python than the leader's (such bundles are never built).
    compatible: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """The whole manifest. Build it with keyword arguments; serialise with :meth:`to_json`."""

    module: str | None
    python: str
    toil: str | None
    roots: tuple[ManifestRoot, ...]
    files: tuple[ManifestFile, ...]
    native: tuple[NativeModule, ...] = ()
    version: int = MANIFEST_VERSION

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        """Serialise deterministically: the same manifest always gives the same bytes."""
        document = {
            "format": FORMAT,
            "version": self.version,
            "module": self.module,
            "python": self.python,
            "toil": self.toil,
            "roots": [
                {
                    "name": r.name,
                    "kind": r.kind.value,
                    "entry": r.entry,
                    "source": r.source,
                    "distribution": r.distribution,
                }
                for r in self.roots
            ],
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "executable": f.executable}
                for f in self.files
            ],
            "native": [
                {"path": n.path, "distribution": n.distribution, "compatible": n.compatible}
                for n in self.native
            ],
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and validate a manifest.

        :raises BundleError: not JSON, another format or version, a missing or mistyped field,
            a root or file name that is not safe to use as a relative path.
        """
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"bundle manifest is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise BundleError(f"not a {FORMAT} manifest")
        if document.get("version") != MANIFEST_VERSION:
            raise BundleError(
                f"bundle manifest version {document.get('version')!r} is not supported "
                f"(this toil-mesos reads version {MANIFEST_VERSION}); "
                "use the same toil-mesos version on the leader and the workers"
            )
        try:
            roots = tuple(_parse_root(r) for r in _list(document, "roots"))
            files = tuple(_parse_file(f) for f in _list(document, "files"))
            native = tuple(_parse_native(n) for n in _list(document, "native"))
            manifest = cls(
                module=_opt_str(document, "module"),
                python=_str(document, "python"),
                toil=_opt_str(document, "toil"),
                roots=roots,
                files=files,
                native=native,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"bundle manifest is malformed: {exc}") from None
        _check_names(manifest)
        return manifest


def _list(document: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = document[key]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TypeError(f"{key!r} must be a list of objects")
    return value


def _str(document: dict[str, Any], key: str) -> str:
    value = document[key]
    if not isinstance(value, str):
        raise TypeError(f"{key!r} must be a string, not {value!r}")
    return value


def _opt_str(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key!r} must be a string or null, not {value!r}")
    return value


def _bool(document: dict[str, Any], key: str) -> bool:
    value = document.get(key, False)
    if not isinstance(value, bool):
        raise TypeError(f"{key!r} must be true or false, not {value!r}")
    return value


def _parse_root(document: dict[str, Any]) -> ManifestRoot:
    return ManifestRoot(
        name=_str(document, "name"),
        kind=RootKind(_str(document, "kind")),
        entry=_str(document, "entry"),
        source=_str(document, "source"),
        distribution=_opt_str(document, "distribution"),
    )


def _parse_file(document: dict[str, Any]) -> ManifestFile:
    size = document["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise TypeError(f"'size' must be a non-negative integer, not {size!r}")
    return ManifestFile(
        path=_str(document, "path"),
        size=size,
        sha256=_str(document, "sha256"),
        executable=_bool(document, "executable"),
    )


def _parse_native(document: dict[str, Any]) -> NativeModule:
    return NativeModule(
        path=_str(document, "path"),
        distribution=_opt_str(document, "distribution"),
        compatible=_bool(document, "compatible") if "compatible" in document else True,
    )


def _check_names(manifest: Manifest) -> None:
    """Refuse names that could point outside the staging directory once joined to it."""
    names = set()
    for root in manifest.roots:
        if not _ROOT_NAME.fullmatch(root.name) or root.name in names:
            raise BundleError(f"bundle manifest has a bad or repeated root name {root.name!r}")
        names.add(root.name)
        if root.kind is RootKind.SHARED:
            if not root.entry.startswith("/"):
                raise BundleError(f"shared root {root.name!r} needs an absolute path")
        elif not (root.entry == root.name or root.entry.startswith(root.name + "/")):
            raise BundleError(f"root entry {root.entry!r} is not inside root {root.name!r}")
        elif not is_safe_member_name(root.entry):
            raise BundleError(f"root entry {root.entry!r} is not a safe relative path")
    for file in manifest.files:
        if not is_safe_member_name(file.path) or file.path.split("/", 1)[0] not in names:
            raise BundleError(f"bundle manifest names an unsafe file path {file.path!r}")
        if not is_sha256(file.sha256):
            raise BundleError(f"bundle manifest has a bad sha256 for {file.path!r}")


def is_safe_member_name(name: str) -> bool:
    """Whether an archive member name is a plain relative path that stays where it is put.

    >>> [is_safe_member_name(n) for n in ("r0/a.py", "/etc/passwd", "r0/../x", "r0//a", "")]
    [True, False, False, False, False]
    """
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))
