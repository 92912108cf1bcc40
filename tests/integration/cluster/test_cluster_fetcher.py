"""The fetcher against a local URI server, compared with the recorded fetcher behaviour.

Most tests drive :class:`~toil_mesos.cluster._fetcher.Fetcher` directly (real HTTP on
127.0.0.1, no processes); the last ones run it inside the agent process: the cache hit on a
second executor and the recorded failure of a 404.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import tarfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    AGENT_ID,
    FRAMEWORK_ID,
    TRANSCRIPTS,
    StubMaster,
    UriFile,
    UriServer,
    executor_task,
    running_agent,
    transcript_json,
    wait_until,
    write_recording_executor,
)

from toil_mesos.cluster._fetcher import Fetcher, FetcherCache, FetchError

JSON = dict[str, Any]
PAYLOAD = b"payload-v1: this file was served by the transcript uri_server\n"
_GLOG = re.compile(r"^([IWE])\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ (fetcher\.cpp:\d+)\] (.*)$")


class _Slow(UriFile):
    """A file whose body is held back until ``release`` is set (bounded)."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.release = threading.Event()


@pytest.fixture
def served() -> Any:
    files = {
        "/payload.txt": UriFile(PAYLOAD),
        "/nolen/payload.txt": UriFile(PAYLOAD, content_length=False),
        "/missing.txt": UriFile(b"", status=404),
    }
    with UriServer(files) as server:
        yield server


def fetch(
    server: UriServer,
    tmp_path: Path,
    uris: list[JSON],
    *,
    run: str,
    cache: FetcherCache | None = None,
    timeout: float = 20.0,
) -> tuple[Path, list[tuple[str, str, str]]]:
    sandbox = tmp_path / "runs" / run
    sandbox.mkdir(parents=True)
    cache = cache or FetcherCache(tmp_path / "fetchcache" / "root")
    fetcher = Fetcher(cache=cache, timeout=timeout, user="root")
    log = io.StringIO()
    try:
        fetcher.fetch(uris, sandbox=sandbox, container_id=run, log=log)
    finally:
        (sandbox / "stderr").write_text(log.getvalue())
    return sandbox, parse_log(log.getvalue())


def parse_log(text: str) -> list[tuple[str, str, str]]:
    lines = []
    for line in text.splitlines():
        match = _GLOG.match(line)
        assert match is not None, f"not a glog line: {line!r}"
        lines.append((match.group(1), match.group(2), match.group(3)))
    return lines


def transcript_text(*parts: str) -> str:
    path = TRANSCRIPTS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"Mesos transcripts not found at {TRANSCRIPTS}")
    return path.read_text()


def recorded_log(executor: str) -> list[tuple[str, str, str]]:
    return parse_log_lenient(transcript_text("fetcher", f"mesos-fetcher_stderr_{executor}.log"))


def parse_log_lenient(text: str) -> list[tuple[str, str, str]]:
    out = []
    for line in text.splitlines():
        match = _GLOG.match(line)
        if match is not None:
            out.append((match.group(1), match.group(2), match.group(3)))
    return out


def shape(lines: list[tuple[str, str, str]], sandbox: str, cache_dir: str, url: str) -> list[Any]:
    """Log lines with paths, URLs and the Fetcher Info JSON normalised for comparison."""
    shaped: list[Any] = []
    for level, where, message in lines:
        if message.startswith("Fetcher Info: "):
            info = json.loads(message[len("Fetcher Info: ") :])
            items = [
                {k: v for k, v in item.items() if k != "uri"}
                | {"uri": {k: v for k, v in item["uri"].items() if k != "value"}}
                for item in info["items"]
            ]
            shaped.append((level, where, "Fetcher Info", sorted(info), items))
            continue
        message = message.replace(sandbox, "<sandbox>").replace(cache_dir, "<cache>")
        message = message.replace(url, "<uri>")
        shaped.append((level, where, message))
    return shaped


def recorded_shape(executor: str, uri: str) -> list[Any]:
    lines = recorded_log(executor)
    info = json.loads(lines[0][2][len("Fetcher Info: ") :])
    return shape(lines, info["sandbox_directory"], info["cache_directory"], uri)


def test_cache_download_then_retrieve_without_any_request(
    served: UriServer, tmp_path: Path
) -> None:
    url = served.url("/payload.txt")
    uri = {
        "value": url,
        "executable": False,
        "extract": False,
        "cache": True,
        "output_file": "fetched_payload.txt",
    }
    cache = FetcherCache(tmp_path / "fetchcache" / "root")
    first, log1 = fetch(served, tmp_path, [uri], run="E1", cache=cache)
    assert served.seen() == [("HEAD", "/payload.txt"), ("GET", "/payload.txt")]
    # Only Host and Accept: */* (the recorded requests had no User-Agent).
    recorded = [
        json.loads(line)
        for line in transcript_text("fetcher", "uri_server_access.jsonl").splitlines()
    ]
    for request in served.requests:
        assert [name for name, _ in request["headers"]] == list(recorded[0]["request_headers"])
        assert dict(request["headers"])["Accept"] == "*/*"
    assert (first / "fetched_payload.txt").read_bytes() == PAYLOAD
    assert (first / "fetched_payload.txt").stat().st_mode & 0o777 == 0o644
    assert (cache.directory / "c1-payload.txt").read_bytes() == PAYLOAD
    assert shape(log1, str(first), str(cache.directory), url) == recorded_shape(
        "E1", "http://127.0.0.1:18080/payload.txt"
    )

    second, log2 = fetch(served, tmp_path, [uri], run="E2", cache=cache)
    assert len(served.requests) == 2, "a cache hit makes no request at all"
    assert (second / "fetched_payload.txt").read_bytes() == PAYLOAD
    assert shape(log2, str(second), str(cache.directory), url) == recorded_shape(
        "E2", "http://127.0.0.1:18080/payload.txt"
    )


def test_no_content_length_falls_back_to_the_sandbox(
    served: UriServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = served.url("/nolen/payload.txt")
    uri = {
        "value": url,
        "executable": False,
        "extract": False,
        "cache": True,
        "output_file": "fetched_payload.txt",
    }
    cache = FetcherCache(tmp_path / "fetchcache" / "root")
    with caplog.at_level(logging.WARNING, logger="toil_mesos.cluster._fetcher"):
        sandbox, log = fetch(served, tmp_path, [uri], run="E3", cache=cache)
    assert served.seen() == [("HEAD", "/nolen/payload.txt"), ("GET", "/nolen/payload.txt")]
    assert (sandbox / "fetched_payload.txt").read_bytes() == PAYLOAD
    assert shape(log, str(sandbox), str(cache.directory), url) == recorded_shape(
        "E3", "http://127.0.0.1:18080/nolen/payload.txt"
    )
    recorded_warning = transcript_text("fetcher", "agent_log_fetcher_lines.txt").splitlines()[0]
    expected = recorded_warning.split("] ", 1)[1].replace(
        "http://127.0.0.1:18080/nolen/payload.txt", url
    )
    assert expected in caplog.messages
    # Not cached: the next executor asks again.
    fetch(served, tmp_path, [uri], run="E3b", cache=cache)
    assert len(served.requests) == 4
    assert not cache.directory.exists() or not list(cache.directory.iterdir())


def test_cache_false_is_a_single_get(served: UriServer, tmp_path: Path) -> None:
    url = served.url("/nolen/payload.txt")
    uri = {
        "value": url,
        "executable": False,
        "extract": False,
        "cache": False,
        "output_file": "fetched_payload.txt",
    }
    sandbox, log = fetch(served, tmp_path, [uri], run="E4")
    assert served.seen() == [("GET", "/nolen/payload.txt")]
    assert shape(log, str(sandbox), str(tmp_path / "fetchcache" / "root"), url) == (
        recorded_shape("E4", "http://127.0.0.1:18080/nolen/payload.txt")
    )


def test_executable_gives_0755(served: UriServer, tmp_path: Path) -> None:
    url = served.url("/payload.txt")
    uri = {
        "value": url,
        "executable": True,
        "extract": False,
        "cache": False,
        "output_file": "fetched_payload.txt",
    }
    sandbox, log = fetch(served, tmp_path, [uri], run="E6")
    assert served.seen() == [("GET", "/payload.txt")]
    assert (sandbox / "fetched_payload.txt").stat().st_mode & 0o777 == 0o755
    assert shape(log, str(sandbox), str(tmp_path / "fetchcache" / "root"), url) == (
        recorded_shape("E6", "http://127.0.0.1:18080/payload.txt")
    )


def _tar_gz() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("pkg/a.txt", b"A\n"), ("b.txt", b"B\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("z/c.txt", "C\n")
    return buffer.getvalue()


@pytest.mark.parametrize("cache", [False, True])
def test_extract_tar_gz_zip_and_gz(tmp_path: Path, cache: bool) -> None:
    files = {
        "/bundle.tar.gz": UriFile(_tar_gz()),
        "/more.zip": UriFile(_zip()),
        "/notes.txt.gz": UriFile(gzip.compress(b"N\n")),
        "/plain.tar.gz.txt": UriFile(b"not an archive\n"),
    }
    with UriServer(files) as server:
        uris = [
            {"value": server.url("/bundle.tar.gz"), "extract": True, "cache": cache},
            {"value": server.url("/more.zip"), "cache": cache},  # extract defaults to true
            {"value": server.url("/notes.txt.gz"), "cache": cache},
            {"value": server.url("/plain.tar.gz.txt"), "cache": cache},
        ]
        sandbox, log = fetch(server, tmp_path, uris, run="X")
    assert (sandbox / "pkg" / "a.txt").read_bytes() == b"A\n"
    assert (sandbox / "b.txt").read_bytes() == b"B\n"
    assert (sandbox / "z" / "c.txt").read_bytes() == b"C\n"
    assert (sandbox / "notes.txt").read_bytes() == b"N\n"
    assert (sandbox / "plain.tar.gz.txt").read_bytes() == b"not an archive\n"
    # Fetched directly, the archives stay in the sandbox; through the cache, Mesos extracts
    # from the cache file and copies no archive.
    assert (sandbox / "bundle.tar.gz").exists() is (not cache)
    assert (sandbox / "more.zip").exists() is (not cache)
    assert any(m.startswith("Extracted '") for _, _, m in log)


def test_archive_escaping_the_sandbox_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../evil.txt", "x")
    with UriServer({"/evil.zip": UriFile(buffer.getvalue())}) as server:
        uri = {"value": server.url("/evil.zip"), "extract": True}
        with pytest.raises(FetchError):
            fetch(server, tmp_path, [uri], run="Z")
    assert not (tmp_path / "runs" / "evil.txt").exists()


def test_output_file_outside_the_sandbox_is_refused(served: UriServer, tmp_path: Path) -> None:
    uri = {"value": served.url("/payload.txt"), "output_file": "../../escape.txt"}
    with pytest.raises(FetchError):
        fetch(served, tmp_path, [uri], run="O")
    assert not (tmp_path / "escape.txt").exists()


def test_404_fails_with_the_recorded_messages(served: UriServer, tmp_path: Path) -> None:
    url = served.url("/missing.txt")
    uri = {
        "value": url,
        "executable": False,
        "extract": False,
        "cache": False,
        "output_file": "fetched_payload.txt",
    }
    with pytest.raises(FetchError) as info:
        fetch(served, tmp_path, [uri], run="bb6762a2")
    assert str(info.value) == (
        "Failed to fetch all URIs for container 'bb6762a2': exited with status 1"
    )
    sandbox = tmp_path / "runs" / "bb6762a2"
    log = parse_log((sandbox / "stderr").read_text())
    assert shape(log, str(sandbox), str(tmp_path / "fetchcache" / "root"), url) == (
        recorded_shape("FE1", "http://127.0.0.1:18080/missing.txt")
    )


def test_fetch_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    slow = _Slow(PAYLOAD)

    with UriServer({"/slow.txt": slow}) as server:
        original = server._server.RequestHandlerClass

        class Stalling(original):  # type: ignore[misc,valid-type]
            def do_GET(self) -> None:
                slow.release.wait(timeout=10)
                super().do_GET()

        server._server.RequestHandlerClass = Stalling
        uri = {"value": server.url("/slow.txt"), "cache": False}
        try:
            with pytest.raises(FetchError):
                fetch(server, tmp_path, [uri], run="T", timeout=0.5)
        finally:
            slow.release.set()
    log = (tmp_path / "runs" / "T" / "stderr").read_text()
    assert "Timeout was reached" in log


@pytest.mark.integration
def test_agent_cache_hit_on_the_second_executor(tmp_path: Path) -> None:
    script = write_recording_executor(tmp_path)
    with UriServer({"/payload.txt": UriFile(PAYLOAD)}) as server, StubMaster() as master:
        uri = {
            "value": server.url("/payload.txt"),
            "executable": False,
            "extract": False,
            "cache": True,
            "output_file": "fetched_payload.txt",
        }
        with running_agent(tmp_path, master) as agent:
            for task_id, executor_id in (("T1", "E1"), ("T7", "E2")):
                out = tmp_path / executor_id
                task = executor_task(task_id, executor_id, script=script, out_dir=out, uris=[uri])
                master.run_task(task)
                master.wait_for_state(task_id, "TASK_FINISHED")
            assert server.seen() == [("HEAD", "/payload.txt"), ("GET", "/payload.txt")]
            for executor_id, action in (
                ("E1", "DOWNLOAD_AND_CACHE"),
                ("E2", "RETRIEVE_FROM_CACHE"),
            ):
                listing = json.loads((tmp_path / executor_id / "sandbox_at_start.json").read_text())
                entry = next(e for e in listing["entries"] if e["name"] == "fetched_payload.txt")
                assert (entry["content"].encode(), entry["mode"]) == (PAYLOAD, "0o644")
                runs = (
                    agent.work_dir
                    / "agent"
                    / "slaves"
                    / AGENT_ID
                    / "frameworks"
                    / FRAMEWORK_ID
                    / "executors"
                    / executor_id
                    / "runs"
                )
                [sandbox] = runs.iterdir()
                assert f'"action":"{action}"' in (sandbox / "stderr").read_text()


@pytest.mark.integration
def test_agent_fetch_failure_fails_the_task_as_recorded(tmp_path: Path) -> None:
    script = write_recording_executor(tmp_path)
    fw3 = transcript_json(
        "scheduler", "fw3_fetch_failure", "events", "005_UPDATE_TASK_FAILED_F1.json"
    )
    recorded = fw3["update"]["status"]
    with UriServer({}) as server, StubMaster() as master, running_agent(tmp_path, master) as agent:
        uri = {
            "value": server.url("/missing.txt"),
            "executable": False,
            "extract": False,
            "cache": False,
            "output_file": "fetched_payload.txt",
        }
        out = tmp_path / "FE1"
        master.run_task(executor_task("F1", "FE1", script=script, out_dir=out, uris=[uri]))
        failed = master.wait_for_state("F1", "TASK_FAILED")
        exited = master.wait_for_call("EXECUTOR_EXITED")
        assert exited["executor_exited"]["status"] == 256
        runs = (
            agent.work_dir
            / "agent"
            / "slaves"
            / AGENT_ID
            / "frameworks"
            / FRAMEWORK_ID
            / "executors"
            / "FE1"
            / "runs"
        )
        [sandbox] = runs.iterdir()
        assert list(failed) == list(recorded)
        assert failed["message"] == recorded["message"].replace(
            "bb6762a2-e878-4a42-84c3-7f6a76598323", sandbox.name
        )
        for key in ("state", "source", "reason"):
            assert failed[key] == recorded[key]
        assert failed["executor_id"] == {"value": "FE1"}
        assert not out.exists(), "the executor must not have started"
        assert "EXIT with status 1: Failed to fetch" in (sandbox / "stderr").read_text()


def test_concurrent_fetches_of_one_uri_download_once(tmp_path: Path) -> None:
    slow = _Slow(PAYLOAD)
    with UriServer({"/slow.txt": slow}) as server:
        original = server._server.RequestHandlerClass

        class Stalling(original):  # type: ignore[misc,valid-type]
            def do_GET(self) -> None:
                slow.release.wait(timeout=10)
                super().do_GET()

        server._server.RequestHandlerClass = Stalling
        uri = {"value": server.url("/slow.txt"), "cache": True, "extract": False}
        cache = FetcherCache(tmp_path / "fetchcache" / "root")
        errors: list[FetchError] = []

        def first() -> None:
            try:
                fetch(server, tmp_path, [uri], run="A", cache=cache)
            except FetchError as exc:  # reported below, in the test's thread
                errors.append(exc)

        thread = threading.Thread(target=first)
        thread.start()
        try:
            url = str(uri["value"])
            wait_until(lambda: cache.lookup(url) is not None, 10, "the first fetch to reserve")
            releaser = threading.Timer(0.3, slow.release.set)
            releaser.start()
            sandbox, log = fetch(server, tmp_path, [uri], run="B", cache=cache)
        finally:
            slow.release.set()
            thread.join(timeout=20)
    assert errors == []
    assert server.seen() == [("HEAD", "/slow.txt"), ("GET", "/slow.txt")]
    assert (sandbox / "slow.txt").read_bytes() == PAYLOAD
    assert (tmp_path / "runs" / "A" / "slow.txt").read_bytes() == PAYLOAD
    info = json.loads(log[0][2][len("Fetcher Info: ") :])
    assert info["items"][0]["action"] == "RETRIEVE_FROM_CACHE"


@pytest.mark.parametrize(
    ("value", "cache", "why"),
    [
        ("http://127.0.0.1:9/", True, "Malformed URI (no basename)"),
        ("ftp://127.0.0.1/file.txt", False, "Unsupported URI scheme"),
        ("/no/such/local/file.txt", False, "Failed to copy"),
    ],
)
def test_bad_uris_fail_like_a_fetcher_exit(
    tmp_path: Path, value: str, cache: bool, why: str
) -> None:
    with UriServer({}) as server, pytest.raises(FetchError, match="exited with status 1"):
        fetch(server, tmp_path, [{"value": value, "cache": cache}], run="B")
    last = (tmp_path / "runs" / "B" / "stderr").read_text().splitlines()[-1]
    assert f"EXIT with status 1: Failed to fetch '{value}': {why}" in last


def test_local_files_are_copied(tmp_path: Path) -> None:
    source = tmp_path / "local.txt"
    source.write_bytes(PAYLOAD)
    with UriServer({}) as server:
        sandbox, _ = fetch(
            server, tmp_path, [{"value": f"file://{source}", "cache": True}], run="L"
        )
    assert (sandbox / "local.txt").read_bytes() == PAYLOAD


@pytest.mark.integration
def test_agent_fetcher_timeout_and_sigterm_during_a_fetch(tmp_path: Path) -> None:
    script = write_recording_executor(tmp_path)
    slow = _Slow(PAYLOAD)
    with UriServer({"/slow.txt": slow}) as server, StubMaster() as master:
        original = server._server.RequestHandlerClass

        class Stalling(original):  # type: ignore[misc,valid-type]
            def do_GET(self) -> None:
                slow.release.wait(timeout=20)
                super().do_GET()

        server._server.RequestHandlerClass = Stalling
        uri = {"value": server.url("/slow.txt"), "cache": False}
        try:
            with running_agent(tmp_path, master, "--fetcher-timeout", "1") as agent:
                out = tmp_path / "S1"
                master.run_task(executor_task("S1", "SE1", script=script, out_dir=out, uris=[uri]))
                failed = master.wait_for_state("S1", "TASK_FAILED", timeout=15)
                assert failed["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
                assert master.wait_for_call("EXECUTOR_EXITED")["executor_exited"]["status"] == 256
                # A second fetch is still hanging when the agent is told to stop: it stops anyway
                # (running_agent asserts a clean exit 0 within its bound).
                master.run_task(
                    executor_task("S2", "SE2", script=script, out_dir=tmp_path / "S2", uris=[uri])
                )
                wait_until(lambda: "SE2" in agent.log(), 10, "the second fetch to start")
            assert not out.exists()
        finally:
            slow.release.set()
