"""The bundle server under abuse: wrong secrets, path tricks, a crowd, and clients that dawdle.

A real bundle is served from a store directory. Beside the store lies a sentinel file, and in
the store lie an unregistered file and a sha256-named link to the sentinel: what a path trick
would try to reach. An inotify watch on both directories sees every open and read of anything
in them, so "touched nothing outside the bundle store" is observed, not inferred from the
answers. (``tests/integration/scheduler/test_scheduler_bundle_server.py`` covers the server's
ordinary behaviour; this module is its hostile twin.)
"""

from __future__ import annotations

import ctypes
import hashlib
import http.client
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from toil_mesos.deploy import build, find_module, locate, scan
from toil_mesos.deploy._environment import PythonEnvironment
from toil_mesos.scheduler.bundle_server import BundleServer

pytestmark = pytest.mark.integration

SENTINEL = b"the sentinel beside the bundle store: never to be served\n"
#: Generous bounds: these catch a server that blocks, not one that is slow.
TIMEOUT = 60.0
CROWD_SECONDS = 30.0

_IN_ACCESS = 0x001
_IN_OPEN = 0x020
_IN_ISDIR = 0x40000000
_EVENT = struct.Struct("iIII")


class FileWatch:
    """inotify on some directories: every open or read of them or of any file in them."""

    def __init__(self, *directories: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            pytest.skip(f"inotify is not available: errno {ctypes.get_errno()}")
        self._dirs: dict[int, Path] = {}
        for directory in directories:
            wd = self._libc.inotify_add_watch(self._fd, bytes(directory), _IN_OPEN | _IN_ACCESS)
            assert wd >= 0, f"cannot watch {directory}: errno {ctypes.get_errno()}"
            self._dirs[wd] = directory

    def events(self) -> list[str]:
        """What was opened or read since the last call, as ``path (open|read)`` lines."""
        found = []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return found
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                what = "open" if mask & _IN_OPEN else "read"
                kind = " (dir)" if mask & _IN_ISDIR else ""
                found.append(f"{self._dirs[wd] / name.decode()}{kind} {what}")

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True)
class Store:
    server: BundleServer
    archive: Path
    sha256: str
    sentinel: Path
    decoy_link: str
    watch: FileWatch

    @property
    def secret(self) -> str:
        return self.server.secret

    @property
    def path(self) -> str:
        return f"/bundles/{self.secret}/{self.archive.name}"

    def expected_digest(self) -> str:
        return hashlib.sha256(self.archive.read_bytes()).hexdigest()


def real_bundle(directory: Path, *, data_bytes: int) -> tuple[Path, str]:
    """A bundle built by the builder from a small project with an incompressible data file."""
    project = directory / "project"
    (project / "flow").mkdir(parents=True)
    (project / "flow" / "__init__.py").write_text("")
    (project / "flow" / "main.py").write_text("ANSWER = 42\n")
    (project / "flow" / "data.bin").write_bytes(os.urandom(data_bytes))
    env0 = PythonEnvironment.current()
    env = PythonEnvironment(sys_path=(str(project),), venv_site_packages=(),
                            base_paths=env0.base_paths, user_site=None)
    contents = scan(locate(find_module("flow.main", [str(project)]), environment=env))
    built = build(contents, directory / "store")
    return built.path, built.sha256


def open_store(base: Path, *, data_bytes: int) -> Iterator[Store]:
    archive, sha256 = real_bundle(base, data_bytes=data_bytes)
    store = archive.parent
    sentinel = base / "outside.txt"
    sentinel.write_bytes(SENTINEL)
    (store / "notes.txt").write_bytes(SENTINEL)
    decoy = hashlib.sha256(b"decoy").hexdigest()
    (store / f"{decoy}.tar.zst").symlink_to(sentinel)
    # atime before mtime: under relatime any read of the sentinel moves its atime.
    os.utime(sentinel, ns=(1_000_000_000 * 10**9, time.time_ns()))
    watch = FileWatch(base, store)
    try:
        with BundleServer("127.0.0.1") as server:
            server.add(archive)
            yield Store(server, archive, sha256, sentinel, decoy, watch)
    finally:
        watch.close()


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Store]:
    yield from open_store(tmp_path, data_bytes=64 * 1024)


@pytest.fixture
def large_store(tmp_path: Path) -> Iterator[Store]:
    # Large enough that a client reading 1 byte/s holds its server thread mid-transfer.
    yield from open_store(tmp_path, data_bytes=8 << 20)


def raw_request(address: tuple[str, int], request: bytes, *,
                head_only: bool = False) -> tuple[int, bytes]:
    """Send *request* as it is; return the status and the body its Content-Length gives."""
    with socket.create_connection(address, timeout=TIMEOUT) as conn:
        conn.sendall(request)
        received = bytearray()
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            if not chunk:  # an HTTP/0.9-style answer to a line that is not HTTP: no head
                code = re.search(rb"Error code: (\d+)", received)
                assert code, f"connection closed before a response head: {bytes(received)!r}"
                return int(code[1]), bytes(received)
            received += chunk
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = 0 if head_only else int(headers.get(b"content-length", b"0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            assert chunk, "connection closed in the middle of a body"
            body += chunk
    return int(lines[0].split(b" ", 2)[1]), body


def get(address: tuple[str, int], target: str, method: str = "GET") -> tuple[int, bytes]:
    return raw_request(address, f"{method} {target} HTTP/1.1\r\nHost: bundles\r\n\r\n".encode(),
                       head_only=method == "HEAD")


def percent_all(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode())


def abuse_cases(store: Store) -> list[tuple[str, str, int]]:
    """(what, request target, expected status): every one must be refused."""
    sha, secret, name = store.sha256, store.secret, store.archive.name
    outside = str(store.sentinel)
    host = "{}:{}".format(*store.server.address)
    return [
        # the secret: missing, wrong, nearly right, or spelled differently
        ("no secret", f"/bundles//{name}", 403),
        ("wrong secret", f"/bundles/wrong/{name}", 403),
        ("secret prefix", f"/bundles/{secret[:-1]}/{name}", 403),
        ("secret plus a byte", f"/bundles/{secret}x/{name}", 403),
        ("secret in other case", f"/bundles/{secret.swapcase()}/{name}", 403),
        ("secret percent-encoded", f"/bundles/{percent_all(secret)}/{name}", 403),
        ("wrong secret, unknown hash", f"/bundles/wrong/{'0' * 64}.tar.zst", 403),
        ("no secret segment", f"/bundles/{name}", 404),
        ("secret in the query", f"/bundles/{name}?secret={secret}", 404),
        # the right secret, but not a registered bundle
        ("unknown hash", f"/bundles/{secret}/{'0' * 64}.tar.zst", 404),
        ("hash in upper case", f"/bundles/{secret}/{sha.upper()}.tar.zst", 404),
        ("hash without suffix", f"/bundles/{secret}/{sha}", 404),
        ("unregistered link in the store", f"/bundles/{secret}/{store.decoy_link}.tar.zst", 404),
        ("unregistered file in the store", f"/bundles/{secret}/notes.txt", 404),
        # dot segments and encoded slashes, plain and double-encoded
        ("dot-dot", f"/bundles/{secret}/../outside.txt", 404),
        ("dot-dot out of the bundle", f"/bundles/{secret}/{name}/../../outside.txt", 404),
        ("dot segment", f"/bundles/{secret}/./{name}", 404),
        ("encoded slash", f"/bundles/{secret}/..%2Foutside.txt", 404),
        ("encoded dots and slash", f"/bundles/{secret}/%2e%2e%2foutside.txt", 404),
        ("double-encoded slash", f"/bundles/{secret}/..%252Foutside.txt", 404),
        ("double-encoded dots", f"/bundles/{secret}/%252e%252e%252foutside.txt", 404),
        ("backslash", f"/bundles/{secret}/..\\outside.txt", 404),
        ("encoded NUL", f"/bundles/{secret}/{name}%00.txt", 404),
        ("path parameter", f"/bundles/{secret}/{name};.txt", 404),
        ("trailing slash", f"/bundles/{secret}/{name}/", 404),
        # absolute paths, in the path and as the request target
        ("absolute path after the secret", f"/bundles/{secret}/{outside}", 404),
        ("encoded absolute path", f"/bundles/{secret}/{outside.replace('/', '%2F')}", 404),
        ("absolute path", f"/{outside}", 404),
        ("absolute path, double slash", f"//{outside.lstrip('/')}", 404),
        ("absolute-form target", f"http://{host}/bundles/{secret}/../outside.txt", 404),
        ("absolute-form file URL", f"file://{outside}", 404),
        ("root", "/", 404),
    ]


def test_wrong_secrets_and_path_tricks_are_refused_and_touch_nothing(small_store: Store, tally):
    store = small_store
    address = store.server.address
    archive = store.archive.read_bytes()
    atime_before = store.sentinel.stat().st_atime_ns
    assert store.watch.events()  # the test's own read of the bundle, just now; from here on
    answers: dict[str, tuple[int, bytes]] = {}
    for what, target, expected in abuse_cases(store):
        status, body = get(address, target)
        tally.bad_input()
        answers[what] = (status, body)
        assert status == expected, (what, target, status, body[:200])
        assert SENTINEL not in body and archive[:64] not in body, (what, target)
    # The refusal says nothing about which hashes exist.
    assert answers["wrong secret"] == answers["wrong secret, unknown hash"]

    # Requests no client library would send: raw bytes, other methods, an endless line.
    raw = [
        (b"GET /bundles/" + store.secret.encode() + b"/\x00/../outside.txt HTTP/1.1\r\n\r\n",
         {400, 404}),
        (b"GET /bundles/" + store.secret.encode() + b"/" + store.archive.name.encode()
         + b"\xff HTTP/1.1\r\nConnection: close\r\n\r\n", {400, 404}),
        (b"GET /" + b"../" * 20_000 + b"outside.txt HTTP/1.1\r\n\r\n", {400, 404, 414}),
        (f"POST {store.path} HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode(),
         {405}),
        (f"DELETE {store.path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode(), {405}),
        (f"PUT {store.path} HTTP/1.1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nevil"
         .encode(), {405}),
        (b"BREW /bundles/ HTTP/1.1\r\nConnection: close\r\n\r\n", {501}),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 32 + b"\r\n\r\n", {400}),
    ]
    for request, allowed in raw:
        status, body = raw_request(address, request)
        tally.bad_input()
        assert status in allowed, (request[:80], status, body[:200])
        assert SENTINEL not in body and archive[:64] not in body
    status, body = get(address, f"/bundles/{store.secret}/../outside.txt", method="HEAD")
    tally.bad_input()
    assert (status, body) == (404, b"")

    # Nothing in the store's directory or beside it was opened or read, not even the bundle.
    touched = store.watch.events()
    assert touched == [], touched
    assert store.archive.read_bytes() == archive
    assert store.sentinel.stat().st_atime_ns == atime_before  # before our own read below
    assert store.sentinel.read_bytes() == SENTINEL

    # The watch sees what the server does open: a good request, now.
    status, body = get(address, store.path)
    assert status == 200 and hashlib.sha256(body).hexdigest() == store.sha256
    assert f"{store.archive} open" in store.watch.events()
    store.sentinel.read_bytes()
    assert any(e.startswith(f"{store.sentinel} ") for e in store.watch.events())


class SlowClient:
    """A client that holds a connection open while it dawdles, in one of three ways."""

    def __init__(self, address: tuple[str, int], path: str, how: str) -> None:
        self.how = how
        self.received = 0
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._sock = socket.socket()
        if how == "read":
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self._sock.settimeout(TIMEOUT)
        self._sock.connect(address)
        self._request = f"GET {path} HTTP/1.1\r\nHost: bundles\r\n\r\n".encode()
        self._thread = threading.Thread(target=self._run, name=f"slow-{how}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self.how == "read":  # a full request, then the answer at 1 byte/s
                self._sock.sendall(self._request)
                while not self._stop.wait(1.0):
                    if not self._sock.recv(1):
                        return
                    self.received += 1
            elif self.how == "send":  # the request at 1 byte/s (slowloris)
                for byte in self._request[:-2]:
                    if self._stop.wait(1.0):
                        return
                    self._sock.send(bytes([byte]))
                    self.sent += 1
            else:  # "partial": half a request line, then silence
                self._sock.sendall(self._request[:14])
                self._stop.wait(TIMEOUT * 2)
        except OSError as exc:
            self.error = exc

    def still_dangling(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def fetch_digest(address: tuple[str, int], path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(*address, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        digest = hashlib.sha256()
        while chunk := response.read(1 << 16):
            digest.update(chunk)
        return response.status, digest.hexdigest()
    finally:
        conn.close()


def test_a_crowd_gets_identical_bytes_while_slow_clients_block_nobody(large_store: Store, tally):
    store = large_store
    address = store.server.address
    expected = store.expected_digest()
    size = store.archive.stat().st_size
    slow: list[SlowClient] = []
    idle: list[socket.socket] = []
    try:  # each made inside: closed below even if a later one cannot connect
        for how in ("read", "read", "read", "send", "send", "partial", "partial", "partial"):
            slow.append(SlowClient(address, store.path, how))
        for _ in range(20):
            idle.append(socket.create_connection(address, timeout=TIMEOUT))
        tally.bad_input(len(slow) + len(idle))
        time.sleep(2.0)  # let the slow readers' server threads fill their sockets and block
        start = threading.Barrier(100)
        results: list[tuple[int, str] | BaseException] = []
        lock = threading.Lock()

        def one() -> None:
            start.wait(TIMEOUT)
            try:
                result: tuple[int, str] | BaseException = fetch_digest(address, store.path)
            except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                result = exc
            with lock:
                results.append(result)

        began = time.monotonic()
        crowd = [threading.Thread(target=one, daemon=True) for _ in range(100)]
        for thread in crowd:
            thread.start()
        for thread in crowd:
            thread.join(max(0.0, 2 * TIMEOUT - (time.monotonic() - began)))
        elapsed = time.monotonic() - began
        assert not any(t.is_alive() for t in crowd), f"fetches still running after {elapsed:.0f} s"
        # A generous bound, far above the second or so this takes: a crowd must not queue for
        # the server's accept (a short listen backlog made some wait a minute, or time out).
        assert elapsed < CROWD_SECONDS, f"100 fetches of {size} bytes took {elapsed:.0f} s"
        assert len(results) == 100
        assert all(r == (200, expected) for r in results), [
            r for r in results if r != (200, expected)][:5]
        # The dawdlers are still there, mid-request or mid-answer: they blocked nobody.
        assert all(c.still_dangling() for c in slow), [(c.how, c.error) for c in slow]
        assert all(0 < c.received < size for c in slow if c.how == "read"), [
            c.received for c in slow if c.how == "read"]
        assert all(c.sent > 0 for c in slow if c.how == "send")
    finally:
        for client in slow:
            client.close()
        for conn in idle:
            conn.close()
    assert fetch_digest(address, store.path) == (200, expected)
    # The crowd opened the registered bundle and nothing else in or beside the store.
    touched = {e for e in store.watch.events() if not e.startswith(f"{store.archive} ")}
    assert touched == set(), touched
