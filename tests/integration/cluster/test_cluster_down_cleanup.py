"""``cluster down`` removes the sandboxes and fetcher caches the daemons made, and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from launcher_helpers import FAKE_AGENT, FAKE_MASTER, become_subreaper, cli, reap

from toil_mesos.cluster.launcher import ClusterOptions, read_record, up
from toil_mesos.cluster.testing import cluster_work_dir


@pytest.fixture(scope="module", autouse=True)
def _subreaper() -> Iterator[None]:
    become_subreaper(True)
    yield
    become_subreaper(False)


@pytest.fixture
def work_dir() -> Iterator[Path]:
    with cluster_work_dir("toil-mesos-down-") as path:
        yield path


def _write(path: Path, data: bytes = b"x" * 1000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_down_removes_sandboxes_and_caches_only(work_dir: Path) -> None:
    up(work_dir, ClusterOptions(master_command=FAKE_MASTER, agent_command=FAKE_AGENT, agents=2))
    record = read_record(work_dir)
    assert record is not None
    pids = [d.pid for d in record.daemons]
    # What real agents leave after many executors: sandboxes with bundles, the fetcher cache.
    made = [
        _write(work_dir / "agents" / str(i) / "slaves" / "A" / "frameworks" / "F" / "runs"
               / "R" / "bundle.tar.zst")
        for i in (0, 1)
    ] + [_write(work_dir / "agents" / str(i) / "fetchcache" / "root" / "c1-b.tar.zst")
         for i in (0, 1)
    ] + [_write(work_dir / "agents" / str(i) / "bundle-cache" / ("0" * 64) / "m.py")
         for i in (0, 1)
    ] + [_write(work_dir / "agents" / str(i) / "meta" / "agent.json") for i in (0, 1)]
    # What the cluster did not make.
    mine = _write(work_dir / "agents" / "0" / "notes.txt")
    elsewhere = _write(work_dir / "other" / "slaves" / "keep.txt")
    beside = _write(work_dir / "results.json")
    done = cli("cluster", "down", "--work-dir", str(work_dir))
    assert done.returncode == 0, done.stderr
    assert all(not p.exists() for p in made)
    for i in (0, 1):
        assert f"removed {work_dir / 'agents' / str(i) / 'slaves'}" in done.stdout
        assert f"removed {work_dir / 'agents' / str(i) / 'fetchcache'}" in done.stdout
        assert f"removed {work_dir / 'agents' / str(i) / 'bundle-cache'}" in done.stdout
        assert f"removed {work_dir / 'agents' / str(i) / 'meta'}" in done.stdout
    assert mine.exists() and elsewhere.exists() and beside.exists()
    assert not (work_dir / "agents" / "1").exists()  # emptied: removed
    assert (work_dir / "logs").is_dir()  # logs stay for post-mortems
    again = cli("cluster", "down", "--work-dir", str(work_dir))
    assert again.returncode == 0 and "no cluster" in again.stdout
    assert mine.exists() and elsewhere.exists() and beside.exists()
    reap(pids)


def test_down_never_follows_a_work_dir_outside_the_cluster(
    work_dir: Path, tmp_path: Path
) -> None:
    from toil_mesos.cluster._cleanup import remove_daemon_products

    outside = _write(tmp_path / "agent" / "slaves" / "precious.txt")
    linked = work_dir / "agents" / "0"
    linked.mkdir(parents=True)
    (linked / "slaves").symlink_to(tmp_path / "agent" / "slaves")
    done = remove_daemon_products(
        work_dir,
        [("agent", ["x", "--work-dir", str(tmp_path / "agent")]),
         ("agent", ["x", "--work-dir", str(linked)])],
    )
    assert done == []
    assert outside.exists()


def test_cluster_up_passes_the_fetcher_cache_size_to_every_agent(work_dir: Path) -> None:
    bad = cli("cluster", "up", "--work-dir", str(work_dir), "--fetcher-cache-size", "lots")
    assert bad.returncode == 2
    assert "--fetcher-cache-size" in bad.stderr and "is not a size" in bad.stderr
    done = cli(
        "cluster", "up", "--work-dir", str(work_dir), "--agents", "2",
        "--fetcher-cache-size", "1M",
    )
    assert done.returncode == 0, done.stderr
    record = read_record(work_dir)
    assert record is not None
    try:
        agents = [d for d in record.daemons if d.role == "agent"]
        assert len(agents) == 2
        for agent in agents:
            argv = list(agent.argv)
            assert argv[argv.index("--fetcher-cache-size") + 1] == str(1 << 20)
            cmdline = Path(f"/proc/{agent.pid}/cmdline").read_bytes().split(b"\0")
            assert b"--fetcher-cache-size" in cmdline
    finally:
        stopped = cli("cluster", "down", "--work-dir", str(work_dir))
    assert stopped.returncode == 0, stopped.stderr
    reap([d.pid for d in record.daemons])
