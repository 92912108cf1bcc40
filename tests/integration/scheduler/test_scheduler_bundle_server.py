"""The bundle server: serves registered bundles under the secret, and nothing else."""

from __future__ import annotations

import hashlib
import http.client
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from toil_mesos.errors import BundleError
from toil_mesos.scheduler.bundle_server import BundleServer, default_key_file, load_url_key

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


# -- stable URLs: secrets derived from a key the leader keeps ---------------------------------


def test_the_same_key_and_port_give_the_same_url_in_every_workflow(archive, tmp_path):
    key = load_url_key(tmp_path / "config" / "bundle-url.key")
    sha = archive.name.split(".")[0]
    with BundleServer("127.0.0.1", key=key) as first:
        first.add(archive)
        url = first.url(sha)
        port = first.address[1]
    with BundleServer("127.0.0.1", port, key=load_url_key(tmp_path / "config" / "bundle-url.key")
                      ) as second:
        second.add(archive)
        assert second.url(sha) == url
        path = url.split(str(port), 1)[1]
        status, _, body = request(second, "GET", path)
        assert status == 200 and body == archive.read_bytes()
    with BundleServer("127.0.0.1", port, key=load_url_key(tmp_path / "other.key")) as other:
        other.add(archive)
        assert other.url(sha) != url
        assert request(other, "GET", path)[0] == 403  # the old URL opens nothing under a new key


def test_one_bundle_s_secret_opens_no_other_bundle(tmp_path):
    archives = []
    for content in (b"first bundle", b"second bundle"):
        path = tmp_path / f"{hashlib.sha256(content).hexdigest()}.tar.zst"
        path.write_bytes(content)
        archives.append(path)
    first, second = (a.name.split(".")[0] for a in archives)
    with BundleServer("127.0.0.1", key=b"k" * 32) as server:
        for path in archives:
            server.add(path)
        first_secret = server.secret_for(first)
        assert server.secret_for(second) != first_secret
        assert request(server, "GET", f"/bundles/{first_secret}/{first}.tar.zst")[2] == (
            b"first bundle")
        # Right secret for the wrong bundle, for an unknown one, no secret: all the same 403.
        for path in (f"/bundles/{first_secret}/{second}.tar.zst",
                     f"/bundles/{first_secret}/{'0' * 64}.tar.zst",
                     f"/bundles//{second}.tar.zst"):
            assert request(server, "GET", path)[:1] == (403,), path
        assert request(server, "GET", f"/bundles/{server.secret_for('0' * 64)}/{'0' * 64}"
                       ".tar.zst")[0] == 404
        assert request(server, "GET", f"/bundles/{first_secret}/{first}")[0] == 404


def test_the_url_key_is_made_once_private_and_refused_when_others_can_read_it(tmp_path):
    path = tmp_path / "config" / "toil-mesos" / "bundle-url.key"
    key = load_url_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_url_key(path) == key  # kept, not remade
    path.chmod(0o644)
    with pytest.raises(BundleError, match=r"not private to this user .*chmod 600"):
        load_url_key(path)
    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(BundleError, match="does not hold 32 hex-encoded bytes"):
        load_url_key(path)


def test_the_key_file_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TOIL_MESOS_BUNDLE_KEY_FILE", str(tmp_path / "mine.key"))
    assert default_key_file() == tmp_path / "mine.key"
    monkeypatch.delenv("TOIL_MESOS_BUNDLE_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_key_file() == tmp_path / "xdg" / "toil-mesos" / "bundle-url.key"


def test_many_open_connections_cost_no_threads(server, archive):
    before = threading.active_count()
    sockets = []
    try:
        for _ in range(200):
            conn = socket.create_connection(server.address, timeout=10)
            conn.sendall(b"GET /bundles/s3cret/")  # half a request line, then silence
            sockets.append(conn)
        status, _, body = request(server, "GET", f"/bundles/s3cret/{archive.name}")
        assert status == 200 and body == archive.read_bytes()
        assert threading.active_count() == before
    finally:
        for conn in sockets:
            conn.close()


def test_pipelined_requests_are_answered_in_order_without_recursion(server, archive):
    path = f"/bundles/s3cret/{archive.name}"
    burst = f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 1000
    with socket.create_connection(server.address, timeout=10) as conn:
        conn.sendall(burst + b"GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n")
        received = bytearray()
        while chunk := conn.recv(1 << 16):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 1000
    assert received.rstrip().endswith(b"404 Not Found")


def test_a_failure_answering_one_client_stops_nobody_else(server, archive, monkeypatch):
    path = f"/bundles/s3cret/{archive.name}"
    real_lookup = server.lookup
    calls = []

    def failing_once(secret: str, name: str) -> Path | int:
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("a bug in answering one request")
        return real_lookup(secret, name)

    monkeypatch.setattr(server, "lookup", failing_once)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        request(server, "GET", path)
    status, _, body = request(server, "GET", path)
    assert status == 200 and body == archive.read_bytes() and len(calls) == 2
