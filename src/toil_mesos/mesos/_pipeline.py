"""Many small POSTs to one URL, pipelined on one kept-alive connection (HTTP/1.1).

A leader running 100,000 jobs acknowledges 200,000 status updates. One request at a time
through a general HTTP client costs each acknowledgement a round trip and a few hundred
microseconds of Python, enough to fall behind the master, which then resends the updates. The
calls are tiny and all alike, so they are written back to back in one ``sendall`` and their
answers read in order, as HTTP/1.1 allows; the master answers each as it would alone.

Only plain ``http://`` URLs are handled; anything unexpected (a closed connection, a chunked
answer) raises :class:`~toil_mesos.errors.TransportError`, and the caller sends the rest one by
one through its ordinary client.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from toil_mesos.errors import ConnectError, TransportError

__all__ = ["PipelinedPoster"]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024


class PipelinedPoster:
    """One kept-alive connection per ``host:port``, used by one thread at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: dict[tuple[str, int], socket.socket] = {}
        self._buffers: dict[tuple[str, int], bytearray] = {}

    def post_many(self, url: str, bodies: Sequence[bytes], headers: Mapping[str, str], *,
                  timeout: float) -> list[int]:
        """POST each of *bodies* to *url*; return the HTTP status of each, in order.

        :raises TransportError: when the answers could not all be read; statuses read so far
            are lost with it, so the caller may send some calls twice (harmless for
            acknowledgements, which the master treats as idempotent).
        """
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise TransportError(f"cannot pipeline calls to {url}")
        key = (parts.hostname, parts.port or 80)
        path = (parts.path or "/").encode()
        host = parts.netloc.encode()
        fixed = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items()
                         if k.lower() not in ("content-length", "host", "connection"))
        request = b"".join(
            b"POST %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n%s"
            % (path, host, fixed, len(body), body)
            for body in bodies
        )
        with self._lock:
            try:
                sock = self._connect(key, timeout)
                sock.settimeout(timeout)
                sock.sendall(request)
                return [self._read_status(key, sock) for _ in bodies]
            except (OSError, ValueError) as exc:
                self._drop(key)
                raise TransportError(f"pipelined POST {url}: {exc}") from None
            except TransportError:
                self._drop(key)
                raise

    def close(self) -> None:
        with self._lock:
            for key in list(self._sockets):
                self._drop(key)

    def _connect(self, key: tuple[str, int], timeout: float) -> socket.socket:
        sock = self._sockets.get(key)
        if sock is not None:
            return sock
        try:
            sock = socket.create_connection(key, timeout=timeout)
        except OSError as exc:
            raise ConnectError(f"cannot connect to {key[0]}:{key[1]}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sockets[key] = sock
        self._buffers[key] = bytearray()
        return sock

    def _drop(self, key: tuple[str, int]) -> None:
        sock = self._sockets.pop(key, None)
        self._buffers.pop(key, None)
        if sock is not None:
            sock.close()

    def _read_status(self, key: tuple[str, int], sock: socket.socket) -> int:
        buffer = self._buffers[key]
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > _MAX_HEAD:
                raise TransportError("an answer's head is too long")
            self._fill(sock, buffer)
        head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        del buffer[:end + 4]
        status = int(head[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip()
                  for k, _, v in (line.partition(":") for line in head[1:])}
        if "chunked" in fields.get("transfer-encoding", "").lower():
            raise TransportError("a chunked answer to a pipelined call")
        length = int(fields.get("content-length", "0"))
        if length > _MAX_BODY:
            raise TransportError("an answer's body is too long")
        while len(buffer) < length:
            self._fill(sock, buffer)
        del buffer[:length]
        if fields.get("connection", "").lower() == "close":
            self._drop(key)
            raise TransportError("the peer closed the connection after an answer")
        return status

    @staticmethod
    def _fill(sock: socket.socket, buffer: bytearray) -> None:
        data = sock.recv(65536)
        if not data:
            raise TransportError("the peer closed the connection")
        buffer += data
