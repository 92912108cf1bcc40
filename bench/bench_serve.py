"""The bundle server under a crowd: one bundle to many agents at once, on loopback.

A workflow's first jobs make every agent's fetcher ask the leader for the bundle at the same
moment. Here N clients (default 1,000) fetch an archive of S bytes (default 100 MB) at once
from a :class:`BundleServer` in its own process, which is sampled meanwhile for its resident
memory and thread count. The clients are one selector loop in this process: most discard the
body as the kernel receives it (``MSG_TRUNC``, no copy), a few read and hash it to check the
bytes. For comparison, the same crowd is served in the same run by a thread-per-connection
``http.server`` with ``sendfile`` (the former design), unless ``--no-compare``.

    python bench/bench_serve.py [--quick] [--clients N] [--megabytes S] [--no-compare]
                                [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

VERIFYING_CLIENTS = 4
DEADLINE_SECONDS = 1800.0

_SERVER = r"""
import http.server, os, socket, sys
from pathlib import Path
mode, archive = sys.argv[1], Path(sys.argv[2])
if mode == "selector":
    from toil_mesos.scheduler.bundle_server import BundleServer
    server = BundleServer("127.0.0.1", key=b"k" * 32)
    server.add(archive)
    url = server.url(archive.name.split(".")[0])
    print(url.split(str(server.address[1]), 1)[1], server.address[1], flush=True)
else:  # the former design: a thread per connection, sendfile from the handler
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            with open(archive, "rb") as stream:
                self.send_response(200)
                self.send_header("Content-Length", str(os.fstat(stream.fileno()).st_size))
                self.end_headers()
                self.wfile.flush()
                try:
                    self.connection.sendfile(stream)
                except OSError:
                    pass
        def log_message(self, *args):
            pass
    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = socket.SOMAXCONN
    httpd = Server(("127.0.0.1", 0), Handler)
    import threading
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    print("/bundle", httpd.server_address[1], flush=True)
sys.stdin.read()
"""


class Sampler:
    """Peak resident memory and thread count of a process, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.baseline_rss = self._status().get("VmRSS", 0)
        self.peak_rss = self.baseline_rss
        self.peak_threads = self._status().get("Threads", 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _status(self) -> dict[str, int]:
        values = {}
        try:
            with open(f"/proc/{self._pid}/status") as status:
                for line in status:
                    name, _, value = line.partition(":")
                    if name in ("VmRSS", "VmHWM", "Threads"):
                        values[name] = int(value.split()[0])
        except OSError:
            pass
        return values

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            status = self._status()
            self.peak_rss = max(self.peak_rss, status.get("VmHWM", 0), status.get("VmRSS", 0))
            self.peak_threads = max(self.peak_threads, status.get("Threads", 0))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Client:
    sock: socket.socket
    verify: bool
    head: bytearray = field(default_factory=bytearray)
    length: int = -1
    received: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    done_at: float = 0.0
    error: str | None = None


def crowd(port: int, path: str, clients: int, size: int) -> tuple[float, list[Client]]:
    """Fetch *path* with *clients* connections at once; the wall time and the clients."""
    selector = selectors.DefaultSelector()
    request = f"GET {path} HTTP/1.1\r\nHost: bundles\r\nAccept: */*\r\n\r\n".encode()
    everyone = []
    for index in range(clients):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        client = Client(sock, verify=index < VERIFYING_CLIENTS)
        everyone.append(client)
        selector.register(sock, selectors.EVENT_WRITE, client)
    sink = bytearray(1 << 20)
    pending = clients
    started = time.perf_counter()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            client = key.data
            try:
                if key.events == selectors.EVENT_WRITE:  # connected: send the request
                    client.sock.send(request)  # a few dozen bytes: fits
                    selector.modify(client.sock, selectors.EVENT_READ, client)
                    continue
                finished = _on_readable(client, sink)
            except OSError as exc:
                client.error, finished = str(exc), True
            if finished:
                client.done_at = time.perf_counter() - started
                selector.unregister(client.sock)
                client.sock.close()
                pending -= 1
    elapsed = time.perf_counter() - started
    for client in everyone:
        if client.done_at == 0.0:
            client.error = client.error or "did not finish in time"
            client.sock.close()
    selector.close()
    return elapsed, everyone


def _on_readable(client: Client, sink: bytearray) -> bool:
    if client.length < 0:
        data = client.sock.recv(65536)
        if not data:
            raise OSError("closed before the response head")
        client.head += data
        end = client.head.find(b"\r\n\r\n")
        if end < 0:
            return False
        head, body = bytes(client.head[:end]), bytes(client.head[end + 4:])
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise OSError(f"status {status.decode()}")
        length = [line for line in head.split(b"\r\n") if line.lower().startswith(
            b"content-length:")]
        client.length = int(length[0].split(b":", 1)[1])
        client.received = len(body)
        client.digest.update(body)
        return client.received >= client.length
    if client.verify:
        data = client.sock.recv(1 << 20)
        client.digest.update(data)
        count = len(data)
    else:
        count = client.sock.recv_into(sink, len(sink), socket.MSG_TRUNC)
    if count == 0:
        raise OSError(f"closed after {client.received} of {client.length} bytes")
    client.received += count
    return client.received >= client.length


def serve_crowd(mode: str, archive: Path, clients: int, expected: str) -> dict[str, float]:
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, mode, str(archive)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        path, port = proc.stdout.readline().split()
        sampler = Sampler(proc.pid)
        elapsed, everyone = crowd(int(port), path, clients, archive.stat().st_size)
        sampler.stop()
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)
    failed = [c.error for c in everyone if c.error]
    wrong = [c for c in everyone if c.verify and not c.error and c.digest.hexdigest() != expected]
    if failed or wrong:
        print(f"  {mode}: {len(failed)} failed (first: {failed[:1]}), {len(wrong)} wrong bytes")
    times = [c.done_at for c in everyone if not c.error]
    return {
        "wall_s": elapsed,
        "failed": len(failed) + len(wrong),
        "client_median_s": statistics.median(times) if times else float("nan"),
        "client_max_s": max(times) if times else float("nan"),
        "gbit_per_s": sum(c.received for c in everyone) * 8 / elapsed / 1e9,
        "baseline_rss_mb": sampler.baseline_rss / 1024,
        "peak_rss_mb": sampler.peak_rss / 1024,
        "peak_threads": sampler.peak_threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 clients, 10 MB")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--megabytes", type=int)
    parser.add_argument("--no-compare", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    clients = args.clients or (100 if args.quick else 1000)
    megabytes = args.megabytes or (10 if args.quick else 100)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < clients + 64 <= hard:  # the clients' sockets; the server makes its own room
        resource.setrlimit(resource.RLIMIT_NOFILE, (clients + 64, hard))
    results: dict[str, object] = {"clients": clients, "bytes": megabytes * 10**6}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        data = os.urandom(megabytes * 10**6)
        expected = hashlib.sha256(data).hexdigest()
        archive = Path(tmp) / f"{expected}.tar.zst"
        archive.write_bytes(data)
        del data
        modes = ["selector"] if args.no_compare else ["selector", "thread per connection"]
        for mode in modes:
            results[mode] = serve_crowd(mode if mode == "selector" else "threads", archive,
                                        clients, expected)
    print(f"{clients} clients at once, each fetching {megabytes} MB over loopback "
          f"({clients * megabytes / 1000:.1f} GB in all)")
    print(f"{'server':<24}{'all done':>10}{'client med':>12}{'Gbit/s':>8}{'RSS idle':>10}"
          f"{'RSS peak':>10}{'threads':>9}{'failed':>8}")
    for mode in modes:
        r: dict[str, float] = results[mode]  # type: ignore[assignment]
        print(f"{mode:<24}{r['wall_s']:>9.1f}s{r['client_median_s']:>11.1f}s"
              f"{r['gbit_per_s']:>8.1f}{r['baseline_rss_mb']:>8.0f}MB{r['peak_rss_mb']:>8.0f}MB"
              f"{r['peak_threads']:>9.0f}{r['failed']:>8.0f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
