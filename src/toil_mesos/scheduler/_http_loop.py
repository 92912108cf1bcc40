"""A small HTTP/1.1 server for GET and HEAD of whole files: one thread, a selector, sendfile.

When a workflow starts, every agent's fetcher may come at once. A thread per connection makes
a thousand threads (and a thousand stacks) for a thousand agents; a fixed pool of threads lets a
few slow clients hold every thread. Here one thread waits on all sockets at once, reads request
heads without blocking, and lets the kernel copy files to sockets (``os.sendfile`` on a
non-blocking socket sends what fits, then the selector says when there is room again). Memory is
a small buffer per connection and one open file per file being served, whatever the number of
clients; threads are one.

Bounded everywhere: a request head must arrive whole within :data:`HEAD_SECONDS` of the
connection being ready for it (a client sending a byte a second cannot hold it longer), a
response must make progress every :data:`SEND_SECONDS`, heads over :data:`MAX_HEAD_BYTES` are
refused, and the number of connections is capped below the process's file limit (beyond it,
new clients wait in the kernel's accept queue).
"""

from __future__ import annotations

import contextlib
import errno
import http
import logging
import os
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

__all__ = ["HEAD_SECONDS", "MAX_HEAD_BYTES", "SEND_SECONDS", "HttpLoop", "Response"]

logger = logging.getLogger(__name__)

HEAD_SECONDS = 60.0
SEND_SECONDS = 60.0
MAX_HEAD_BYTES = 16 * 1024
#: After the last response of a connection: how long unread request bytes are drained, so that
#: closing does not reset the connection before the client has read the response.
_LINGER_SECONDS = 2.0
_SWEEP_SECONDS = 0.5
_SENDFILE_BYTES = 8 << 20
_ACCEPTS_PER_WAKE = 256
_REFUSED_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})


@dataclass(frozen=True, slots=True)
class Response:
    """What to answer: a status with a short text body, or a whole file."""

    status: int
    content_type: str
    body: bytes = b""
    file: Path | None = None

    @classmethod
    def refusal(cls, status: int) -> Response:
        body = f"{status} {http.HTTPStatus(status).phrase}\n".encode()
        return cls(status, "text/plain; charset=utf-8", body)

    @classmethod
    def file_at(cls, path: Path, *, content_type: str) -> Response:
        return cls(200, content_type, file=path)


class _OpenFile:
    """One descriptor shared by every response sending the same file (sendfile takes offsets)."""

    __slots__ = ("fd", "size", "users")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.users = 0


class _Connection:
    __slots__ = ("close_after", "deadline", "end", "events", "file", "inbox", "lingering",
                 "offset", "outbox", "path", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: str, now: float) -> None:
        self.sock = sock
        self.peer = peer
        self.inbox = bytearray()
        self.outbox = b""
        self.file: _OpenFile | None = None
        self.path: Path | None = None
        self.offset = 0
        self.end = 0
        self.close_after = False
        self.deadline = now + HEAD_SECONDS
        self.lingering = False
        self.events = selectors.EVENT_READ


class HttpLoop:
    """Serve *respond*'s answers on ``host:port`` from a thread named *name*, until close().

    *respond* gets the request target of each GET or HEAD and must not block; other methods and
    malformed requests are refused here without asking it.
    """

    def __init__(self, host: str, port: int, respond: Callable[[str], Response], *,
                 name: str, max_connections: int | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # The kernel caps the backlog at net.core.somaxconn; a short one drops the handshakes
        # of a crowd, which then wait for SYN retransmits (1, 2, 4, ... s).
        self._listener = socket.create_server((host, port), family=family,
                                              backlog=socket.SOMAXCONN)
        self._listener.setblocking(False)
        self._respond = respond
        self._max_connections = max_connections or _connection_limit()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._connections: set[_Connection] = set()
        self._files: dict[Path, _OpenFile] = {}
        self._accepting = True
        self._stopping = threading.Event()
        self._closed = False
        self._date = (0, "")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Stop, close every connection and the listening socket; bounded, safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        with contextlib.suppress(OSError):  # the pair is ours and open
            self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        if self._thread.is_alive():  # pragma: no cover - the loop wakes within one sweep
            logger.warning("the %s thread did not stop within 5 s", self._thread.name)
            return
        for conn in list(self._connections):
            self._drop(conn)
        self._selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        next_sweep = time.monotonic() + _SWEEP_SECONDS
        while not self._stopping.is_set():
            try:
                events = self._selector.select(timeout=_SWEEP_SECONDS)
            except InterruptedError:  # pragma: no cover - retried by Python since 3.5
                continue
            for key, mask in events:
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    self._drain_wake()
                else:
                    self._on_event(key.data, mask)
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + _SWEEP_SECONDS

    def _on_event(self, conn: _Connection, mask: int) -> None:
        if conn not in self._connections:  # dropped earlier in this round
            return
        try:
            if mask & selectors.EVENT_READ:
                self._on_readable(conn)
            if mask & selectors.EVENT_WRITE and conn in self._connections:
                self._on_writable(conn)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ETIMEDOUT):
                logger.debug("connection from %s failed: %s", conn.peer, exc)
            self._drop(conn)
        except Exception:  # one bad connection must not stop the server for everyone
            logger.exception("bundle server: dropping the connection from %s", conn.peer)
            self._drop(conn)

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            if len(self._connections) >= self._max_connections:
                self._pause_accepting()
                return
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: leave the rest in the kernel's queue
                logger.warning("bundle server cannot accept a connection: %s", exc)
                self._pause_accepting()
                return
            sock.setblocking(False)
            conn = _Connection(sock, str(peer[0]), time.monotonic())
            self._connections.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _pause_accepting(self) -> None:
        if self._accepting:
            self._selector.unregister(self._listener)
            self._accepting = False

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(64):
                pass
        except BlockingIOError:
            pass

    def _sweep(self, now: float) -> None:
        for conn in [c for c in self._connections if c.deadline <= now]:
            if not conn.lingering:
                logger.debug("dropping connection from %s: no progress in time", conn.peer)
            self._drop(conn)
        if not self._accepting and len(self._connections) < self._max_connections:
            self._selector.register(self._listener, selectors.EVENT_READ, None)
            self._accepting = True

    # ---- reading requests ----------------------------------------------------------------------

    def _on_readable(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            self._drop(conn)
            return
        if conn.lingering:
            return  # unread request bytes after the last response: discarded
        conn.inbox += data
        self._serve_inbox(conn)

    def _serve_inbox(self, conn: _Connection) -> None:
        """Answer the complete requests in the inbox, one after the other, while they fit.

        A loop, not recursion: a client may pipeline thousands of tiny requests in one read.
        """
        while True:
            end = conn.inbox.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.inbox) > MAX_HEAD_BYTES:
                    status = 431 if b"\r\n" in conn.inbox else 414
                    self._answer(conn, Response.refusal(status), head_only=False, close=True)
                    self._flush(conn)
                return
            head = bytes(conn.inbox[:end])
            del conn.inbox[: end + 4]
            self._answer_head(conn, head)
            if not self._flush(conn):
                return  # still sending (the selector says when to go on), or closing

    def _answer_head(self, conn: _Connection, head: bytes) -> None:
        lines = head.split(b"\r\n")
        try:
            method, target, version = lines[0].decode("ascii").split(" ")
            headers = dict(_header(line) for line in lines[1:])
        except ValueError:  # not three words, not ASCII, or a header line without a colon
            self._answer(conn, Response.refusal(400), head_only=False, close=True)
            return
        if version not in ("HTTP/1.1", "HTTP/1.0") or not target:
            self._answer(conn, Response.refusal(400), head_only=False, close=True)
            return
        with_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        close = (version == "HTTP/1.0" or headers.get("connection", "").lower() == "close"
                 or with_body)
        if method in ("GET", "HEAD"):
            response = self._respond(target)
        elif method in _REFUSED_METHODS:
            response, close = Response.refusal(405), True
        else:
            response, close = Response.refusal(501), True
        logger.debug("%s %s %s -> %d", conn.peer, method, target[:200], response.status)
        self._answer(conn, response, head_only=method == "HEAD", close=close)

    # ---- writing responses ---------------------------------------------------------------------

    def _answer(self, conn: _Connection, response: Response, *, head_only: bool,
                close: bool) -> None:
        length = len(response.body)
        if response.file is not None:
            opened = self._open(response.file)
            if opened is None:
                response = Response.refusal(404)
                length = len(response.body)
            else:
                conn.file, conn.path = opened, response.file
                conn.offset, conn.end = 0, 0 if head_only else opened.size
                length = opened.size
        lines = [f"HTTP/1.1 {response.status} {http.HTTPStatus(response.status).phrase}",
                 f"Date: {self._http_date()}", f"Content-Type: {response.content_type}",
                 f"Content-Length: {length}"]
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        conn.outbox = head if head_only else head + response.body
        conn.close_after = close
        conn.deadline = time.monotonic() + SEND_SECONDS

    def _on_writable(self, conn: _Connection) -> None:
        if self._flush(conn):
            self._serve_inbox(conn)

    def _want(self, conn: _Connection, events: int) -> None:
        if conn.events != events:
            self._selector.modify(conn.sock, events, conn)
            conn.events = events

    def _flush(self, conn: _Connection) -> bool:
        """Send what the socket takes; True when the answer is complete and more may follow."""
        progress = False
        try:
            while conn.outbox:
                sent = conn.sock.send(conn.outbox)
                conn.outbox = conn.outbox[sent:]
                progress = True
            while conn.file is not None and conn.offset < conn.end:
                count = min(conn.end - conn.offset, _SENDFILE_BYTES)
                sent = os.sendfile(conn.sock.fileno(), conn.file.fd, conn.offset, count)
                if sent == 0:  # the file shrank under us: the length we promised is a lie now
                    raise OSError(errno.EIO, f"{conn.path} shrank while being served")
                conn.offset += sent
                progress = True
        except BlockingIOError:
            if progress:
                conn.deadline = time.monotonic() + SEND_SECONDS
            self._want(conn, selectors.EVENT_WRITE)
            return False
        self._release_file(conn)
        if conn.close_after:
            self._linger(conn)
            return False
        conn.deadline = time.monotonic() + HEAD_SECONDS
        self._want(conn, selectors.EVENT_READ)
        return True

    def _linger(self, conn: _Connection) -> None:
        """Close our side, then read and discard until the client closes (bounded)."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        conn.lingering = True
        conn.inbox.clear()
        conn.deadline = time.monotonic() + _LINGER_SECONDS
        self._want(conn, selectors.EVENT_READ)

    def _drop(self, conn: _Connection) -> None:
        if conn not in self._connections:
            return
        self._connections.discard(conn)
        self._release_file(conn)
        with contextlib.suppress(KeyError, ValueError):  # registered on accept
            self._selector.unregister(conn.sock)
        conn.sock.close()

    # ---- files ---------------------------------------------------------------------------------

    def _open(self, path: Path) -> _OpenFile | None:
        opened = self._files.get(path)
        if opened is None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                logger.warning("cannot serve %s: %s", path, exc)
                return None
            opened = _OpenFile(fd, os.fstat(fd).st_size)
            self._files[path] = opened
        opened.users += 1
        return opened

    def _release_file(self, conn: _Connection) -> None:
        opened, path = conn.file, conn.path
        conn.file = conn.path = None
        if opened is None or path is None:
            return
        opened.users -= 1
        if opened.users == 0:
            del self._files[path]
            os.close(opened.fd)

    def _http_date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]


def _header(line: bytes) -> tuple[str, str]:
    name, sep, value = line.decode("latin-1").partition(":")
    if not sep or not name or name != name.strip():
        raise ValueError(f"malformed header line {line[:80]!r}")
    return name.lower(), value.strip()


def _connection_limit() -> int:
    """Connections to hold at once: well below the file limit (each may hold a socket)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(10_000, soft - 256, soft // 2 + soft // 4))
