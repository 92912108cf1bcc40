"""Serve this workflow's bundles to the Mesos fetchers on the agents.

The server answers exactly one kind of URL, ``/bundles/<secret>/<sha256>.tar.zst``, for bundles
registered with :meth:`BundleServer.add`, and nothing else: it never maps a URL to a path, so no
spelling of ``..``, encoded slashes or absolute paths can reach a file. A wrong or missing secret
gets 403, so a port scan cannot read the user's code.

The secret is derived from the bundle's hash and a key the leader keeps
(:func:`load_url_key`): HMAC-SHA256(key, sha256). The same code served on the same address
therefore has the same URL in every workflow of this user, and the Mesos fetcher cache, keyed by
URL, hands it to the next workflow's executors without a download. Knowing one bundle's URL
tells nothing about another's.

HEAD and GET both carry ``Content-Length``: the Mesos fetcher sizes a download with HEAD and
caches it only when the length is known. One thread serves every connection through a selector
(:mod:`toil_mesos.scheduler._http_loop`): the kernel copies the archive to each socket with
``sendfile``, so a thousand agents fetching at once cost a socket each, not a thread or a copy
of the bundle, and a slow or silent client holds back nobody else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
from pathlib import Path

from toil_mesos.deploy.manifest import ARCHIVE_SUFFIX, is_sha256
from toil_mesos.errors import BundleError
from toil_mesos.scheduler._http_loop import HttpLoop, Response

__all__ = ["KEY_FILE_ENV", "BundleServer", "default_key_file", "load_url_key"]

logger = logging.getLogger(__name__)

#: Environment variable naming the file that holds the leader's URL key.
KEY_FILE_ENV = "TOIL_MESOS_BUNDLE_KEY_FILE"

_URL = re.compile(r"/bundles/(?P<secret>[^/]*)/(?P<name>[^/]*)")
_KEY_BYTES = 32


def default_key_file() -> Path:
    """``$TOIL_MESOS_BUNDLE_KEY_FILE``, else ``$XDG_CONFIG_HOME/toil-mesos/bundle-url.key``."""
    configured = os.environ.get(KEY_FILE_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return base / "toil-mesos" / "bundle-url.key"


def load_url_key(path: Path | None = None) -> bytes:
    """The leader's key for bundle URLs, created (mode 0600) on first use and kept across runs.

    Kept so that a second workflow of the same code gets the same URL; private to the user,
    because whoever reads it can compute the URL of any bundle this user serves.

    :raises BundleError: the file cannot be created or read, is not the user's own, is readable
        by others, or does not hold a key.
    """
    file = default_key_file() if path is None else path
    try:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_key(file)
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            data = os.read(fd, 4 * _KEY_BYTES)
        finally:
            os.close(fd)
    except OSError as exc:
        raise BundleError(
            f"cannot use the bundle URL key {str(file)!r}: {exc.strerror or exc}; make its "
            f"directory writable or set {KEY_FILE_ENV} to a file in a private directory"
        ) from None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise BundleError(
            f"the bundle URL key {str(file)!r} is not private to this user (owner uid "
            f"{info.st_uid}, mode {info.st_mode & 0o777:o}); run `chmod 600 {file}` as its "
            "owner, or remove it to make a new one"
        )
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except ValueError:
        key = b""
    if len(key) != _KEY_BYTES:
        raise BundleError(
            f"the bundle URL key {str(file)!r} does not hold {_KEY_BYTES} hex-encoded bytes; "
            "remove it to make a new one"
        )
    return key


def _create_key(file: Path) -> None:
    """Write a new key unless one exists; two leaders starting at once agree on one key."""
    if file.exists():
        return
    tmp = file.with_name(f".{file.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, secrets.token_bytes(_KEY_BYTES).hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, file)  # never replaces a key another leader wrote first
            logger.info("created the bundle URL key %s", file)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


class BundleServer:
    """An HTTP server for registered bundles, started on construction and stopped by close().

    :param host: the address to listen on (the one agents can reach).
    :param port: 0 picks a free port.
    :param key: derive each bundle's secret from this key and its hash, so that URLs stay the
        same across servers with the same key and address (see :func:`load_url_key`).
    :param secret: one secret for every bundle; without a key or a secret, a random one, so
        URLs change with every server.
    """

    def __init__(
        self, host: str, port: int = 0, *, key: bytes | None = None, secret: str | None = None
    ) -> None:
        if key is not None and secret is not None:
            raise ValueError("give a key or a secret, not both")
        if key is None and secret is None:
            secret = secrets.token_urlsafe(24)
        #: The one secret of every bundle, or None when each has its own (:meth:`secret_for`).
        self.secret = secret
        self._key = key or b""
        self._bundles: dict[str, Path] = {}
        self._lock = threading.Lock()
        try:
            self._loop = HttpLoop(host, port, self._respond, name="bundle-server")
        except OSError as exc:
            raise BundleError(
                f"cannot serve bundles on {host}:{port}: {exc.strerror or exc}; "
                "choose another address or port for the bundle server"
            ) from None
        logger.info("bundle server listening on %s:%d", *self.address)

    @property
    def address(self) -> tuple[str, int]:
        return self._loop.address

    def add(self, archive: Path) -> str:
        """Register a bundle archive (named ``<sha256>.tar.zst``); return its sha256."""
        sha256 = archive.name.removesuffix(ARCHIVE_SUFFIX)
        if not is_sha256(sha256) or not archive.name.endswith(ARCHIVE_SUFFIX):
            raise BundleError(f"{archive} is not named <sha256>{ARCHIVE_SUFFIX}")
        if not archive.is_file():
            raise BundleError(f"bundle archive {archive} does not exist")
        with self._lock:
            self._bundles[sha256] = archive
        return sha256

    def secret_for(self, sha256: str) -> str:
        """The secret in the URL of bundle *sha256*."""
        if self.secret is not None:
            return self.secret
        mac = hmac.new(self._key, b"toil-mesos bundle " + sha256.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")

    def url(self, sha256: str, *, host: str | None = None) -> str:
        """The URL agents fetch *sha256* from; *host* is the address advertised to them."""
        advertised = host or self.address[0]
        if ":" in advertised and not advertised.startswith("["):
            advertised = f"[{advertised}]"
        secret = self.secret_for(sha256)
        return f"http://{advertised}:{self.address[1]}/bundles/{secret}/{sha256}{ARCHIVE_SUFFIX}"

    def lookup(self, secret: str, name: str) -> Path | int:
        """The archive for a request, or the HTTP status that refuses it.

        The secret is checked before the registry is consulted, so a refusal says nothing about
        which bundles exist.
        """
        sha256 = name.removesuffix(ARCHIVE_SUFFIX)
        well_formed = name.endswith(ARCHIVE_SUFFIX) and is_sha256(sha256)
        if self.secret is None and not well_formed:
            return 404  # no secret to check against: only a hash has one
        expected = self.secret_for(sha256) if self.secret is None else self.secret
        if not hmac.compare_digest(secret.encode(), expected.encode()):
            return 403
        if not well_formed:
            return 404
        with self._lock:
            archive = self._bundles.get(sha256)
        return archive if archive is not None else 404

    def _respond(self, target: str) -> Response:
        match = _URL.fullmatch(target.split("?", 1)[0])
        found = self.lookup(match["secret"], match["name"]) if match else 404
        if isinstance(found, int):
            return Response.refusal(found)
        return Response.file_at(found, content_type="application/zstd")

    def close(self) -> None:
        """Stop serving and release the port; bounded, safe to call twice."""
        self._loop.close()

    def __enter__(self) -> BundleServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
