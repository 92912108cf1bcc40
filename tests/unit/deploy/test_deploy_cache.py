"""The staged-bundle cache: units, the LRU policy, leases, eviction and prune."""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _archives import Archive, make_bundle

from toil_mesos.deploy import cache as cache_module
from toil_mesos.deploy.cache import (
    DEFAULT_MAX_BYTES,
    MAX_BYTES_ENV,
    BundleLease,
    CacheEntry,
    acquire_lease,
    choose_stale,
    choose_victims,
    evict,
    list_cache,
    max_bytes_from_env,
    parse_duration,
    parse_size,
    prune,
)
from toil_mesos.deploy.stage import stage
from toil_mesos.errors import BundleError

# -- units ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("100", 100),
        ("512K", 512 << 10),
        ("512kb", 512 << 10),
        ("5G", 5 << 30),
        ("2GB", 2 << 30),
        ("1.5GiB", 3 << 29),
        ("3 M", 3 << 20),
        ("1T", 1 << 40),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-5G", "5X", "5 G B", "ten", "5e3"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("45", 45), ("90s", 90), ("30m", 1800), ("30mins", 1800), ("12h", 43200),
     ("7d", 604800), ("2w", 1209600), ("1.5h", 5400)],
)
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "d", "7y", "-1d", "7 days ago"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_max_bytes_from_env() -> None:
    assert max_bytes_from_env({}) == DEFAULT_MAX_BYTES == 10 << 30
    assert max_bytes_from_env({MAX_BYTES_ENV: " "}) == DEFAULT_MAX_BYTES
    assert max_bytes_from_env({MAX_BYTES_ENV: "300M"}) == 300 << 20
    with pytest.raises(BundleError, match=f"^{MAX_BYTES_ENV}: 'lots' is not a size"):
        max_bytes_from_env({MAX_BYTES_ENV: "lots"})


# -- the policy, exhaustively over small caches -----------------------------------------------


def _caches() -> list[list[CacheEntry]]:
    """Every cache of up to 4 bundles with sizes from {1, 3} and last uses from {0, 1, 2}."""
    caches: list[list[CacheEntry]] = []
    for count in range(5):
        for sizes in itertools.product((1, 3), repeat=count):
            for uses in itertools.product((0, 1, 2), repeat=count):
                caches.append(
                    [CacheEntry(f"{i:064x}", sizes[i], float(uses[i])) for i in range(count)]
                )
    return caches


def test_choose_victims_exhaustively() -> None:
    checked = 0
    for entries in _caches():
        hashes = [e.sha256 for e in entries]
        for held_count in range(len(entries) + 1):
            for held in itertools.combinations(hashes, held_count):
                for incoming in (0, 2):
                    for cap in range(0, 14, 2):
                        victims = choose_victims(entries, cap, held, incoming=incoming)
                        _check_victims(entries, set(held), cap, incoming, victims)
                        checked += 1
    assert checked > 10_000


def _check_victims(
    entries: list[CacheEntry], held: set[str], cap: int, incoming: int, victims: list[CacheEntry]
) -> None:
    chosen = {v.sha256 for v in victims}
    assert len(chosen) == len(victims), "a bundle chosen twice"
    assert not chosen & held, "a held bundle chosen"
    survivors = [e for e in entries if e.sha256 not in chosen]
    left = sum(e.size for e in survivors) + incoming
    unheld_survivors = [e for e in survivors if e.sha256 not in held]
    if left > cap:
        assert not unheld_survivors, "over the cap while an unused bundle survives"
    if victims:
        # Minimal: without the last victim the cache would not fit.
        assert left + victims[-1].size > cap
    # Least recently used first: every victim is at least as old as every unused survivor.
    for victim in victims:
        for survivor in unheld_survivors:
            assert (victim.last_used, victim.sha256) < (survivor.last_used, survivor.sha256)
    assert [(v.last_used, v.sha256) for v in victims] == sorted(
        (v.last_used, v.sha256) for v in victims
    )


def test_choose_victims_respects_in_use_flag() -> None:
    old_held = CacheEntry("a" * 64, 10, 0.0, in_use=True)
    newer = CacheEntry("b" * 64, 10, 5.0)
    assert choose_victims([old_held, newer], cap=5) == [newer]


def test_choose_stale() -> None:
    entries = [
        CacheEntry("a" * 64, 1, 100.0),
        CacheEntry("b" * 64, 1, 10.0, in_use=True),
        CacheEntry("c" * 64, 1, 50.0),
        CacheEntry("d" * 64, 1, 990.0),
    ]
    stale = choose_stale(entries, older_than=500, now=1000.0)
    assert [e.sha256[0] for e in stale] == ["c", "a"]
    assert choose_stale(entries, older_than=500, now=1000.0, in_use=["c" * 64]) == [entries[0]]


# -- leases and eviction on disk ----------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def archives(tmp_path: Path) -> list[Archive]:
    out = tmp_path / "archives"
    out.mkdir()
    # Distinct contents, about 40 KiB each on disk (ten 4 KiB-rounded files).
    return [
        make_bundle(out, {f"r0/m{j}.py": f"V = {i}\n".encode() * 400 for j in range(10)})
        for i in range(6)
    ]


def _set_last_use(cache: Path, sha256: str, when: float) -> None:
    os.utime(cache / f"{sha256}.lease", (when, when))


def test_held_lease_is_never_evicted(cache: Path, archives: list[Archive]) -> None:
    first = archives[0]
    staged = stage(first.path, first.sha256, cache_dir=cache)
    assert staged.lease is not None and staged.lease.held
    assert evict(cache, first.sha256) is False
    assert (staged.directory / ".roots.json").is_file()
    [entry] = list_cache(cache)
    assert entry.in_use and entry.size > 0
    staged.lease.release()
    assert list_cache(cache)[0].in_use is False
    assert evict(cache, first.sha256) is True
    assert not staged.directory.exists()
    assert sorted(os.listdir(cache)) == [".locks", ".tmp"]  # no lease, no .evicting- left
    assert os.listdir(cache / ".locks") == []  # nor the bundle's staging lock
    # Staging an evicted hash again simply works.
    again = stage(first.path, first.sha256, cache_dir=cache)
    assert (again.directory / "r0" / "m0.py").read_bytes().startswith(b"V = 0")


def test_dropping_the_staged_bundle_releases_its_lease(
    cache: Path, archives: list[Archive]
) -> None:
    staged = stage(archives[0].path, archives[0].sha256, cache_dir=cache)
    assert list_cache(cache)[0].in_use
    del staged
    assert list_cache(cache)[0].in_use is False


def test_lease_waiting_on_an_evictor_relocks_the_new_file(cache: Path) -> None:
    sha = "e" * 64
    path = cache / f"{sha}.lease"
    cache.mkdir()
    # Play the evictor: hold the lease file exclusively while a stager waits for it.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    got: list[BundleLease] = []
    waiter = threading.Thread(target=lambda: got.append(acquire_lease(cache, sha)))
    waiter.start()
    time.sleep(0.2)
    assert not got  # still waiting for the evictor
    os.unlink(path)
    os.close(fd)
    waiter.join(timeout=10)
    [lease] = got
    assert lease.held
    # It locked the file now at the path, not the unlinked one: that keeps evictors off.
    assert evict(cache, sha) is False and path.exists()
    lease.release()


def test_last_use_is_the_lease_release(cache: Path, archives: list[Archive]) -> None:
    staged = stage(archives[0].path, archives[0].sha256, cache_dir=cache)
    _set_last_use(cache, staged.sha256, 1000.0)
    assert list_cache(cache)[0].last_used == 1000.0
    before = time.time()
    assert staged.lease is not None
    staged.lease.release()
    assert list_cache(cache)[0].last_used >= before - 1


def test_stage_past_the_cap_evicts_oldest_unused_keeps_held(
    cache: Path, archives: list[Archive], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A running task holds the first bundle, from another process, as an executor does.
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path\n"
         "from toil_mesos.deploy.stage import stage\n"
         "s = stage(Path(sys.argv[1]), sys.argv[2], cache_dir=Path(sys.argv[3]))\n"
         "print('held', flush=True); time.sleep(60)",
         str(archives[0].path), archives[0].sha256, str(cache)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        for index, archive in enumerate(archives[1:4], start=1):
            stage(archive.path, archive.sha256, cache_dir=cache).lease.release()  # type: ignore[union-attr]
            _set_last_use(cache, archive.sha256, 1000.0 + index)
        _set_last_use(cache, archives[0].sha256, 1.0)  # the oldest of all, but held
        sizes = {e.sha256: e.size for e in list_cache(cache)}
        one = max(sizes.values())
        cap = 3 * one + one // 2  # room for three bundles and a half
        monkeypatch.setenv(MAX_BYTES_ENV, str(cap))
        with caplog.at_level(logging.INFO, logger="toil_mesos.deploy.cache"):
            stage(archives[4].path, archives[4].sha256, cache_dir=cache)
        left = {e.sha256: e for e in list_cache(cache)}
        assert archives[0].sha256 in left and left[archives[0].sha256].in_use
        assert archives[1].sha256 not in left  # the oldest unused went first
        assert archives[2].sha256 not in left
        assert archives[3].sha256 in left and archives[4].sha256 in left
        assert sum(e.size for e in left.values()) <= cap
        assert "evicted staged bundle" in caplog.text
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    # Once the task is gone, its bundle may go.
    result = prune(cache, max_bytes=0)
    assert archives[0].sha256 in {e.sha256 for e in result.removed}


def test_everything_in_use_stages_anyway_and_logs_once(
    cache: Path, archives: list[Archive], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(MAX_BYTES_ENV, "1")
    monkeypatch.setattr(cache_module, "_warned_full", set())
    with caplog.at_level(logging.WARNING, logger="toil_mesos.deploy.cache"):
        held = [stage(a.path, a.sha256, cache_dir=cache) for a in archives[:3]]
    assert all((s.directory / ".roots.json").is_file() for s in held)
    assert len(list_cache(cache)) == 3
    assert caplog.text.count("over its cap") == 1


def test_bad_cap_fails_cold_staging_naming_the_variable(
    cache: Path, archives: list[Archive], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_BYTES_ENV, "10 gigs")
    with pytest.raises(BundleError, match=MAX_BYTES_ENV):
        stage(archives[0].path, archives[0].sha256, cache_dir=cache)
    assert list_cache(cache) == []
    assert not any(n.endswith(".lease") for n in os.listdir(cache))


def test_prune_older_than_and_max_bytes(cache: Path, archives: list[Archive]) -> None:
    for index, archive in enumerate(archives[:4]):
        stage(archive.path, archive.sha256, cache_dir=cache).lease.release()  # type: ignore[union-attr]
        _set_last_use(cache, archive.sha256, 1000.0 * (index + 1))
    result = prune(cache, older_than=1500.0, now=4100.0)
    assert sorted(e.sha256 for e in result.removed) == sorted(a.sha256 for a in archives[:2])
    one = max(e.size for e in list_cache(cache))
    result = prune(cache, max_bytes=one)
    assert [e.sha256 for e in result.removed] == [archives[2].sha256]
    assert [e.sha256 for e in list_cache(cache)] == [archives[3].sha256]
    assert result.remaining_bytes <= one
    result = prune(cache)
    assert [e.sha256 for e in result.removed] == [archives[3].sha256]
    assert list_cache(cache) == []


def test_leftovers_of_a_dead_evictor_are_removed(cache: Path, archives: list[Archive]) -> None:
    stage(archives[0].path, archives[0].sha256, cache_dir=cache).lease.release()  # type: ignore[union-attr]
    dead = cache / f".evicting-{archives[0].sha256}-dead"
    os.rename(cache / archives[0].sha256, dead)
    prune(cache, max_bytes=1 << 40)
    assert not dead.exists()
    assert not (cache / f"{archives[0].sha256}.lease").exists()


def test_stray_staging_locks_go_but_a_held_one_stays(
    cache: Path, archives: list[Archive]
) -> None:
    staged = stage(archives[0].path, archives[0].sha256, cache_dir=cache)
    locks = cache / ".locks"
    stray, busy = "a" * 64, "b" * 64
    (locks / f"{stray}.lock").touch()  # left by a staging that failed, or an older version
    busy_lease = acquire_lease(cache, busy)  # someone is staging this one right now
    (locks / f"{busy}.lock").touch()
    prune(cache, max_bytes=1 << 40)
    assert sorted(os.listdir(locks)) == sorted(f"{h}.lock" for h in (archives[0].sha256, busy))
    busy_lease.release()
    assert staged.lease is not None
    staged.lease.release()
    prune(cache)
    assert os.listdir(locks) == []
    assert not any(n.endswith(".lease") for n in os.listdir(cache))


def test_a_stager_waiting_on_an_unlinked_lock_relocks_the_new_file(
    cache: Path, archives: list[Archive]
) -> None:
    bundle = archives[0]
    lock = cache / ".locks" / f"{bundle.sha256}.lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another stager, whose bundle is then evicted
    got: list[object] = []
    waiter = threading.Thread(
        target=lambda: got.append(stage(bundle.path, bundle.sha256, cache_dir=cache))
    )
    waiter.start()
    time.sleep(0.2)
    assert not got  # waiting for the lock
    os.unlink(lock)
    fcntl.flock(fd, fcntl.LOCK_UN)  # kept open: the old inode cannot be reused meanwhile
    waiter.join(timeout=30)
    try:
        assert got and (cache / bundle.sha256 / ".roots.json").is_file()
        # It staged under a lock file at the path, not the unlinked one.
        assert lock.exists() and os.stat(lock).st_ino != os.fstat(fd).st_ino
    finally:
        os.close(fd)


def test_cli_list_and_prune(cache: Path, archives: list[Archive]) -> None:
    held = stage(archives[0].path, archives[0].sha256, cache_dir=cache)
    stage(archives[1].path, archives[1].sha256, cache_dir=cache).lease.release()  # type: ignore[union-attr]
    _set_last_use(cache, archives[1].sha256, time.time() - 30 * 86400)
    cli = [sys.executable, "-m", "toil_mesos", "bundle", "cache"]
    listed = subprocess.run(
        [*cli, "list", "--cache-dir", str(cache), "--json"],
        capture_output=True, text=True, check=True,
    )
    document = json.loads(listed.stdout)
    states = {b["sha256"]: b["in_use"] for b in document["bundles"]}
    assert states == {archives[0].sha256: True, archives[1].sha256: False}
    text = subprocess.run(
        [*cli, "list", "--cache-dir", str(cache)], capture_output=True, text=True, check=True
    ).stdout
    assert "in use" in text and "unused" in text and archives[1].sha256 in text
    pruned = subprocess.run(
        [*cli, "prune", "--cache-dir", str(cache), "--older-than", "7d"],
        capture_output=True, text=True, check=True,
    )
    assert f"removed {archives[1].sha256}" in pruned.stdout
    pruned = subprocess.run(
        [*cli, "prune", "--cache-dir", str(cache), "--max-bytes", "0"],
        capture_output=True, text=True, check=True,
    )
    assert f"kept    {archives[0].sha256}" in pruned.stdout
    assert (held.directory / ".roots.json").is_file()
    bad = subprocess.run(
        [*cli, "prune", "--cache-dir", str(cache), "--max-bytes", "lots"],
        capture_output=True, text=True, check=False,
    )
    assert bad.returncode == 2 and "--max-bytes" in bad.stderr and "is not a size" in bad.stderr
