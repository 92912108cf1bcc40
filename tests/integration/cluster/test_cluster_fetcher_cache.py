"""The fetcher cache's size bound, as Mesos' ``--fetcher_cache_size``: LRU eviction, entries in
use kept, downloads larger than the cache fetched straight into the sandbox.

The first tests drive :class:`~toil_mesos.cluster._fetcher.Fetcher` directly over real HTTP on
127.0.0.1, one sandbox per simulated executor; the last runs many executors on an agent
process started with ``--fetcher-cache-size``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import (
    StubMaster,
    UriFile,
    UriServer,
    executor_task,
    running_agent,
    wait_until,
    write_recording_executor,
)

from toil_mesos.cluster._fetcher import Fetcher, FetcherCache, FetchError

JSON = dict[str, Any]
SIZE = 10_000  # bytes per served file


def _files(count: int) -> dict[str, UriFile]:
    return {f"/b{i}.tar.zst": UriFile(bytes([i % 256]) * SIZE) for i in range(count)}


def _uri(server: UriServer, index: int) -> JSON:
    return {"value": server.url(f"/b{index}.tar.zst"), "cache": True, "extract": False}


def _fetch(cache: FetcherCache, uris: list[JSON], sandbox: Path) -> JSON:
    sandbox.mkdir(parents=True)
    log = io.StringIO()
    Fetcher(cache=cache, timeout=20.0, user="root").fetch(
        uris, sandbox=sandbox, container_id=sandbox.name, log=log
    )
    first = log.getvalue().splitlines()[0]
    info: JSON = json.loads(first.split("Fetcher Info: ", 1)[1])
    return info


def _on_disk(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir()) if directory.exists() else 0


def test_cache_stays_under_its_bound_across_many_executors(tmp_path: Path) -> None:
    bound = 3 * SIZE + SIZE // 2  # three entries fit, not four
    cache = FetcherCache(tmp_path / "fetchcache", max_bytes=bound)
    with UriServer(_files(12)) as server:
        for run in range(24):
            index = run % 12
            info = _fetch(cache, [_uri(server, index)], tmp_path / "runs" / f"E{run}")
            assert (tmp_path / "runs" / f"E{run}" / f"b{index}.tar.zst").stat().st_size == SIZE
            assert info["items"][0]["action"] == "DOWNLOAD_AND_CACHE"  # evicted since last use
            assert cache.used_bytes <= bound
            assert _on_disk(cache.directory) <= bound
        assert len(list(cache.directory.iterdir())) == 3
        # The three most recently used are hits, with no request at all.
        before = len(server.requests)
        for index in (9, 10, 11):
            info = _fetch(cache, [_uri(server, index)], tmp_path / "runs" / f"hit{index}")
            assert info["items"][0]["action"] == "RETRIEVE_FROM_CACHE"
        assert len(server.requests) == before


def test_least_recently_used_goes_first(tmp_path: Path) -> None:
    cache = FetcherCache(tmp_path / "fetchcache", max_bytes=2 * SIZE)
    with UriServer(_files(3)) as server:
        _fetch(cache, [_uri(server, 0)], tmp_path / "runs" / "a")
        _fetch(cache, [_uri(server, 1)], tmp_path / "runs" / "b")
        _fetch(cache, [_uri(server, 0)], tmp_path / "runs" / "c")  # 0 is now the newer
        _fetch(cache, [_uri(server, 2)], tmp_path / "runs" / "d")  # evicts 1, not 0
        assert cache.lookup(_uri(server, 1)["value"]) is None
        kept = cache.lookup(_uri(server, 0)["value"])
        assert kept is not None
        cache.release(kept)


def test_entry_in_use_by_a_fetch_in_progress_is_not_evicted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FetcherCache(tmp_path / "fetchcache", max_bytes=2 * SIZE)
    release = threading.Event()
    with UriServer(_files(4)) as server:
        original = server._server.RequestHandlerClass
        slow_path = "/b0.tar.zst"

        class Stalling(original):  # type: ignore[misc,valid-type]
            def do_GET(self) -> None:
                if self.path == slow_path:
                    release.wait(timeout=10)
                super().do_GET()

        server._server.RequestHandlerClass = Stalling
        errors: list[FetchError] = []

        def slow_fetch() -> None:
            try:
                _fetch(cache, [_uri(server, 0)], tmp_path / "runs" / "slow")
            except FetchError as exc:
                errors.append(exc)

        thread = threading.Thread(target=slow_fetch)
        thread.start()
        try:
            slow_uri = _uri(server, 0)["value"]
            wait_until(lambda: cache.used_bytes >= SIZE, 10, "the slow fetch to reserve")
            with caplog.at_level(logging.WARNING, logger="toil_mesos.cluster._fetcher"):
                # Room for one more entry beside the held one: each new one evicts the last.
                for index in (1, 2, 3):
                    info = _fetch(cache, [_uri(server, index)], tmp_path / "runs" / f"r{index}")
                    assert info["items"][0]["action"] == "DOWNLOAD_AND_CACHE"
                    assert cache.used_bytes <= 2 * SIZE
            assert "Reverting" not in caplog.text
        finally:
            release.set()
            thread.join(timeout=20)
    assert errors == []
    assert (tmp_path / "runs" / "slow" / "b0.tar.zst").read_bytes() == bytes([0]) * SIZE
    held = cache.lookup(slow_uri)
    assert held is not None and held.ok  # never evicted while its download ran
    cache.release(held)


def test_download_larger_than_the_cache_goes_straight_to_the_sandbox(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FetcherCache(tmp_path / "fetchcache", max_bytes=SIZE - 1)
    with UriServer(_files(1)) as server:
        with caplog.at_level(logging.WARNING, logger="toil_mesos.cluster._fetcher"):
            info = _fetch(cache, [_uri(server, 0)], tmp_path / "runs" / "big")
        assert server.seen() == [("HEAD", "/b0.tar.zst"), ("GET", "/b0.tar.zst")]
    assert info["items"][0]["action"] == "BYPASS_CACHE"
    assert "Reverting to fetching directly into the sandbox" in caplog.text
    assert "exceed the whole cache" in caplog.text
    assert (tmp_path / "runs" / "big" / "b0.tar.zst").stat().st_size == SIZE
    assert _on_disk(cache.directory) == 0 and cache.used_bytes == 0


def test_failed_download_gives_its_room_back(tmp_path: Path) -> None:
    cache = FetcherCache(tmp_path / "fetchcache", max_bytes=2 * SIZE)
    files = _files(1) | {"/gone.tar.zst": UriFile(b"x" * SIZE, status=404)}
    with UriServer(files) as server, pytest.raises(FetchError):
        _fetch(cache, [{"value": server.url("/gone.tar.zst"), "cache": True}],
               tmp_path / "runs" / "bad")
    assert cache.used_bytes == 0


@pytest.mark.parametrize("bad", ["-1", "lots", "2XB"])
def test_bad_fetcher_cache_size_is_refused(bad: str) -> None:
    from toil_mesos.cluster.agent import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["--master", "m:1", "--host", "127.0.0.1", "--port", "0", "--work-dir", "w",
             "--ready-file", "r", "--fetcher-cache-size", bad]
        )


@pytest.mark.integration
def test_agent_fetcher_cache_bounded_over_many_executors(tmp_path: Path) -> None:
    script = write_recording_executor(tmp_path)
    bound = 2 * SIZE + SIZE // 2
    with (
        UriServer(_files(8)) as server,
        StubMaster() as master,
        running_agent(tmp_path, master, "--fetcher-cache-size", str(bound)) as agent,
    ):
        cache_dir = agent.work_dir / "agent" / "fetchcache"
        for index in range(8):
            task_id, executor_id = f"T{index}", f"E{index}"
            out = tmp_path / executor_id
            task = executor_task(
                task_id, executor_id, script=script, out_dir=out, uris=[_uri(server, index)]
            )
            master.run_task(task)
            master.wait_for_state(task_id, "TASK_FINISHED")
            listing = json.loads((out / "sandbox_at_start.json").read_text())
            names = {e["name"] for e in listing["entries"]}
            assert f"b{index}.tar.zst" in names
            cached = [p for d, _, fs in os.walk(cache_dir) for p in (Path(d, f) for f in fs)]
            assert sum(p.stat().st_size for p in cached) <= bound
        cached = [f for _, _, fs in os.walk(cache_dir) for f in fs]
        assert len(cached) == 2  # the bound holds two entries, the latest
        assert all(name.endswith(("b6.tar.zst", "b7.tar.zst")) for name in cached)
