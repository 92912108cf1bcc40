"""The bundle server: serves registered bundles under the secret, and nothing else."""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from toil_mesos.errors import BundleError
from toil_mesos.scheduler.bundle_server import BundleServer

pytestmark = pytest.mark.integration


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    data = bytes(range(256)) * 4096  # 1 MiB
    path = tmp_path / f"{hashlib.sha256(data).hexdigest()}.tar.zst"
    path.write_bytes(data)
    (tmp_path / "secret.txt").write_text("never served")
    return path


@pytest.fixture
def server(archive: Path):  # type: ignore[no-untyped-def]
    with BundleServer("127.0.0.1", secret="s3cret") as bundle_server:
        bundle_server.add(archive)
        yield bundle_server


def request(server: BundleServer, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_get_and_head_carry_the_length(server, archive):
    sha = archive.name.split(".")[0]
    url = server.url(sha)
    assert url == f"http://127.0.0.1:{server.address[1]}/bundles/s3cret/{sha}.tar.zst"
    path = url.split(str(server.address[1]), 1)[1]
    status, headers, body = request(server, "HEAD", path)
    assert (status, headers["Content-Length"], body) == (200, str(archive.stat().st_size), b"")
    status, headers, body = request(server, "GET", path)
    assert status == 200 and body == archive.read_bytes()
    assert "Server" not in headers


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/bundles/wrong/{sha}.tar.zst", 403),
        ("/bundles//{sha}.tar.zst", 403),
        ("/bundles/s3cret/{other}.tar.zst", 404),
        ("/bundles/s3cret/{sha}", 404),
        ("/bundles/s3cret/../secret.txt", 404),
        ("/bundles/s3cret/..%2Fsecret.txt", 404),
        ("/bundles/s3cret/%2e%2e/%2e%2e/etc/passwd", 404),
        ("/bundles/s3cret//etc/passwd", 404),
        ("/etc/passwd", 404),
        ("/bundles/s3cret/{sha}.tar.zst/extra", 404),
        ("/", 404),
    ],
)
def test_everything_else_is_refused(server, archive, path, status):
    sha = archive.name.split(".")[0]
    got, _, body = request(server, "GET", path.format(sha=sha, other="0" * 64))
    assert got == status
    assert b"never served" not in body and body != archive.read_bytes()


def test_other_methods_are_refused(server, archive):
    assert request(server, "POST", f"/bundles/s3cret/{archive.name}")[0] == 405


def test_concurrent_fetches_get_identical_bytes_and_a_slow_client_blocks_nobody(server, archive):
    path = f"/bundles/s3cret/{archive.name}"
    expected = hashlib.sha256(archive.read_bytes()).hexdigest()
    slow = socket.create_connection(server.address, timeout=10)
    try:
        slow.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n")  # never finishes
        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(lambda _: request(server, "GET", path), range(100)))
    finally:
        slow.close()
    assert {(s, hashlib.sha256(b).hexdigest()) for s, _, b in results} == {(200, expected)}


def test_registering_something_that_is_not_a_bundle_is_refused(server, tmp_path):
    with pytest.raises(BundleError, match="is not named"):
        server.add(tmp_path / "secret.txt")
    with pytest.raises(BundleError, match="does not exist"):
        server.add(tmp_path / f"{'a' * 64}.tar.zst")


def test_a_busy_port_is_a_clear_error(server):
    with pytest.raises(BundleError, match=r"cannot serve bundles on 127\.0\.0\.1"):
        BundleServer("127.0.0.1", server.address[1])


def test_close_releases_the_port_and_stops_the_thread(archive):
    bundle_server = BundleServer("127.0.0.1")
    port = bundle_server.address[1]
    bundle_server.close()
    assert not any(t.name == "bundle-server" and t.is_alive() for t in threading.enumerate())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free again
