"""Fixtures for the Mesos client unit tests: transcript access and byte-feeding helpers.

The golden transcripts (recorded from a real Mesos 1.12) live outside the repository, in
``../shared/mesos-transcripts`` next to the checkout; ``TOIL_MESOS_TRANSCRIPTS`` overrides the
location. Tests that need them are skipped, with the reason, when they are absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from toil_mesos.mesos import END_OF_STREAM, NEED_DATA, EventStream

_DEFAULT = Path(__file__).resolve().parents[3].parent / "shared" / "mesos-transcripts"


def _transcripts_dir() -> Path:
    return Path(os.environ.get("TOIL_MESOS_TRANSCRIPTS", _DEFAULT))


@pytest.fixture(scope="session")
def transcripts() -> Path:
    """Root of the golden Mesos 1.12 transcripts."""
    root = _transcripts_dir()
    if not (root / "README.md").is_file():
        pytest.skip(f"Mesos transcripts not found at {root} (set TOIL_MESOS_TRANSCRIPTS)")
    return root


def dechunk(raw: bytes) -> tuple[bytes, bool]:
    """Strip HTTP/1.1 chunk framing; return the body and whether the last-chunk was seen."""
    out = bytearray()
    pos = 0
    while pos < len(raw):
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            return bytes(out), True
        out += raw[pos : pos + size]
        pos += size
        assert raw[pos : pos + 2] == b"\r\n", "bad chunk terminator"
        pos += 2
    return bytes(out), False


@pytest.fixture(scope="session")
def stream_body(transcripts: Path) -> Callable[[str], tuple[bytes, bool]]:
    """RecordIO body of ``<role>/<name>/subscribe.stream.raw.bin``, de-chunked."""

    def load(name: str) -> tuple[bytes, bool]:
        return dechunk((transcripts / name / "subscribe.stream.raw.bin").read_bytes())

    return load


@pytest.fixture(scope="session")
def recorded_events(transcripts: Path) -> Callable[[str], list[tuple[str, bytes]]]:
    """``(file stem, record bytes)`` of every ``events/*.recordio.bin`` of a transcript."""

    def load(name: str) -> list[tuple[str, bytes]]:
        files = sorted((transcripts / name / "events").glob("*.recordio.bin"))
        return [(f.name.removesuffix(".recordio.bin"), f.read_bytes()) for f in files]

    return load


@pytest.fixture(scope="session")
def request_body(transcripts: Path) -> Callable[[str], bytes]:
    """Exact body bytes of a recorded ``*.request.http`` (everything after the blank line)."""

    def load(path: str) -> bytes:
        raw = (transcripts / path).read_bytes()
        return raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[1]

    return load


def drain(stream: EventStream) -> tuple[list[Any], Any]:
    """All events up to NEED_DATA or END_OF_STREAM, and which of the two stopped us."""
    events = []
    while True:
        event = stream.next_event()
        if event is NEED_DATA or event is END_OF_STREAM:
            return events, event
        events.append(event)


@pytest.fixture
def drain_events() -> Callable[[EventStream], tuple[list[Any], Any]]:
    return drain


@pytest.fixture
def executor_env() -> dict[str, str]:
    """The environment a real Mesos 1.12 agent gave executor E1 (transcripts), inline so that
    executor tests run without the transcripts."""
    sandbox = (
        "/var/lib/mesos/agent/slaves/42f618ee-43f9-4ca8-88a7-31221df616de-S0/frameworks/"
        "42f618ee-43f9-4ca8-88a7-31221df616de-0000/executors/E1/runs/"
        "de77bc02-27b6-46a6-be08-f637e9eaeb7a"
    )
    return {
        "LIBPROCESS_IP": "127.0.0.1",
        "LIBPROCESS_PORT": "0",
        "MESOS_AGENT_ENDPOINT": "127.0.0.1:5051",
        "MESOS_CHECKPOINT": "0",
        "MESOS_DIRECTORY": sandbox,
        "MESOS_EXECUTOR_ID": "E1",
        "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "5secs",
        "MESOS_FRAMEWORK_ID": "42f618ee-43f9-4ca8-88a7-31221df616de-0000",
        "MESOS_HTTP_COMMAND_EXECUTOR": "0",
        "MESOS_SANDBOX": sandbox,
        "MESOS_SLAVE_ID": "42f618ee-43f9-4ca8-88a7-31221df616de-S0",
        "MESOS_SLAVE_PID": "slave(1)@127.0.0.1:5051",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
