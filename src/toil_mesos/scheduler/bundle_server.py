"""Serve this workflow's bundles to the Mesos fetchers on the agents.

The server answers exactly one kind of URL, ``/bundles/<secret>/<sha256>.tar.zst``, for bundles
registered with :meth:`BundleServer.add`, and nothing else: it never maps a URL to a path, so no
spelling of ``..``, encoded slashes or absolute paths can reach a file. The secret is per workflow
(a wrong or missing one gets 403), so another workflow or a port scan cannot read the user's code.

HEAD and GET both carry ``Content-Length``: the Mesos fetcher sizes a download with HEAD and
caches it only when the length is known. Each request is served by its own thread, so a slow
client holds back nobody else.
"""

from __future__ import annotations

import hmac
import http.server
import logging
import os
import re
import secrets
import socket
import threading
from pathlib import Path
from typing import ClassVar

from toil_mesos.deploy.manifest import ARCHIVE_SUFFIX, is_sha256
from toil_mesos.errors import BundleError

__all__ = ["BundleServer"]

logger = logging.getLogger(__name__)

_URL = re.compile(r"/bundles/(?P<secret>[^/]*)/(?P<name>[^/]*)")
_CHUNK = 1 << 20


class BundleServer:
    """An HTTP server for registered bundles, started on construction and stopped by close().

    :param host: the address to listen on (the one agents can reach).
    :param port: 0 picks a free port.
    :param secret: the per-workflow secret in every URL; a random one by default.
    """

    def __init__(self, host: str, port: int = 0, *, secret: str | None = None) -> None:
        self.secret = secret or secrets.token_urlsafe(24)
        self._bundles: dict[str, Path] = {}
        self._lock = threading.Lock()
        handler = type("_BoundHandler", (_Handler,), {"server_state": self})
        try:
            self._httpd = _HTTPServer((host, port), handler)
        except OSError as exc:
            raise BundleError(
                f"cannot serve bundles on {host}:{port}: {exc.strerror or exc}; "
                "choose another address or port for the bundle server"
            ) from None
        # A short poll interval keeps close() prompt; the loop is idle otherwise.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name="bundle-server", daemon=True,
        )
        self._thread.start()
        logger.info("bundle server listening on %s:%d", *self.address)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

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

    def url(self, sha256: str, *, host: str | None = None) -> str:
        """The URL agents fetch *sha256* from; *host* is the address advertised to them."""
        advertised = host or self.address[0]
        if ":" in advertised and not advertised.startswith("["):
            advertised = f"[{advertised}]"
        return f"http://{advertised}:{self.address[1]}/bundles/{self.secret}/{sha256}{ARCHIVE_SUFFIX}"

    def lookup(self, secret: str, name: str) -> Path | int:
        """The archive for a request, or the HTTP status that refuses it."""
        if not hmac.compare_digest(secret.encode(), self.secret.encode()):
            return 403
        sha256 = name.removesuffix(ARCHIVE_SUFFIX)
        if not name.endswith(ARCHIVE_SUFFIX) or not is_sha256(sha256):
            return 404
        with self._lock:
            archive = self._bundles.get(sha256)
        return archive if archive is not None else 404

    def close(self) -> None:
        """Stop serving and release the port; bounded, safe to call twice."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> BundleServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # When a workflow starts, every agent's fetcher may come at once. socketserver's backlog of
    # 5 makes the kernel drop the handshakes beyond it, and those clients then wait for SYN-ACK
    # retransmits (1, 2, 4, ... s): a crowd of 100 fetchers took up to a minute, some timed out.
    # The kernel caps this at net.core.somaxconn.
    request_queue_size = socket.SOMAXCONN


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: ClassVar[BundleServer]
    # A slow or silent client must not hold a thread for ever.
    timeout = 60

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _serve(self, *, send_body: bool) -> None:
        match = _URL.fullmatch(self.path.split("?", 1)[0])
        found = self.server_state.lookup(match["secret"], match["name"]) if match else 404
        if isinstance(found, int):
            self._refuse(found)
            return
        try:
            stream = found.open("rb")
        except OSError:
            self._refuse(404)
            return
        with stream:
            size = os.fstat(stream.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/zstd")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if send_body:
                try:
                    self.wfile.flush()
                    self.connection.sendfile(stream)
                except (BrokenPipeError, ConnectionResetError):
                    logger.debug("client went away while fetching %s", found.name)

    def _refuse(self, status: int) -> None:
        body = f"{status} {http.HTTPStatus(status).phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_response(self, code: int, message: str | None = None) -> None:
        # No Server header: it says nothing useful to a fetcher and something to a scanner.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def do_POST(self) -> None:
        self._refuse(405)

    do_PUT = do_DELETE = do_PATCH = do_POST

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("bundle server: %s - %s", self.address_string(), format % args)
