"""https:// masters: a certificate the client cannot verify stops the driver at once, naming the
master and --mesosCACert; with that CA given, the same master is reached.

The certificate is self-signed, made in the test with the openssl CLI; the server is a small
HTTPS server on 127.0.0.1 that refuses every SUBSCRIBE with the auth/ transcript's 401.
"""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.mesos.test_mesos_scheduler_driver import INFO, WAIT, FakeSleep, Recorder

from toil_mesos.mesos import Credentials, DriverStatus, SchedulerDriver
from toil_mesos.mesos._scheduler_state import AuthenticationRefused
from toil_mesos.mesos._transport import TlsError


class _Refuse(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self.server.authorizations.append(self.headers.get("Authorization"))  # type: ignore[attr-defined]
        body = b"401 Unauthorized."
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="mesos-master-scheduler"')
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, list]]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed")
    work = tmp_path_factory.mktemp("tls")
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    server.authorizations = []  # type: ignore[attr-defined]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert, server.authorizations  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


def test_untrusted_certificate_is_fatal(https_master: tuple[str, Path, list]) -> None:
    url, _cert, _ = https_master
    sleep = FakeSleep()
    recorder = Recorder()
    driver = SchedulerDriver(recorder, INFO, url, sleep=sleep, stop_timeout=WAIT)
    driver.start()
    with pytest.raises(TlsError) as caught:
        driver.join(WAIT)
    message = str(caught.value)
    assert url in message and "--mesosCACert" in message
    assert "certificate" in message.lower()
    assert sleep.delays == []  # not retried
    assert driver.status is DriverStatus.DRIVER_ABORTED


def test_trusted_with_the_ca_cert(https_master: tuple[str, Path, list]) -> None:
    url, cert, authorizations = https_master
    driver = SchedulerDriver(
        Recorder(), INFO, url, sleep=FakeSleep(), stop_timeout=WAIT, ca_cert=str(cert),
        credentials=Credentials("toil", "wrong-secret"),
    )
    driver.start()
    # The TLS handshake succeeded: the master's own answer (401) is what stops the driver.
    with pytest.raises(AuthenticationRefused, match="401"):
        driver.join(WAIT)
    assert authorizations[-1] == "Basic dG9pbDp3cm9uZy1zZWNyZXQ="
