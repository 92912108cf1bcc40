"""Staging and pruning at the same time, in real processes: nobody ever sees half a bundle.

Two stager processes stage the same few bundles over and over under a cap that holds only two
of them (so they evict each other's), while a third process prunes the cache in a loop. This
process watches the cache directory meanwhile: every staged directory it finds at
``<cache>/<sha256>`` must have its roots file and every file of its manifest, unless it was
renamed away (evicted) while being looked at.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from _archives import Archive, make_bundle

from toil_mesos.deploy.cache import MAX_BYTES_ENV
from toil_mesos.deploy.manifest import is_sha256

_STAGER = """
import json, sys
from pathlib import Path
from toil_mesos.deploy.stage import stage
cache, rounds, bundles = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
staged, errors = 0, []
for _ in range(rounds):
    for path, sha256, files in bundles:
        try:
            bundle = stage(Path(path), sha256, cache_dir=cache)
        except Exception as exc:
            errors.append(repr(exc))
            continue
        # Under the lease stage() returned, the bundle is whole and stays whole.
        missing = [f for f in [".roots.json", *files] if not (bundle.directory / f).is_file()]
        if missing:
            errors.append(f"{sha256[:12]} missing {missing[:3]} under a lease")
        bundle.lease.release()
        staged += 1
print(json.dumps({"staged": staged, "errors": errors}))
"""

_PRUNER = """
import json, sys
from pathlib import Path
from toil_mesos.deploy.cache import prune
cache, stop, cap = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
removed = runs = 0
while not stop.exists():
    removed += len(prune(cache, max_bytes=cap).removed)
    runs += 1
print(json.dumps({"removed": removed, "runs": runs}))
"""

_ROUNDS = 15


def _bundles(out: Path) -> list[tuple[Archive, list[str]]]:
    bundles = []
    for i in range(4):
        files = {f"r0/pkg/m{j}.py": f"VALUE = {i * 100 + j}\n".encode() * 300 for j in range(30)}
        bundles.append((make_bundle(out, files), ["manifest.json", *sorted(files)]))
    return bundles


class _Watcher:
    """Looks at every staged directory again and again until told to stop."""

    def __init__(self, cache: Path, files: dict[str, list[str]]) -> None:
        self.cache, self.files = cache, files
        self.looked = 0
        self.partial: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                names = os.listdir(self.cache)
            except FileNotFoundError:
                continue
            for name in names:
                if is_sha256(name):
                    self._look(name)

    def _look(self, name: str) -> None:
        try:
            fd = os.open(self.cache / name, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            missing = []
            for relative in [".roots.json", *self.files[name]]:
                try:
                    os.stat(relative, dir_fd=fd)
                except FileNotFoundError:
                    missing.append(relative)
            self.looked += 1
            if missing and self._still_published(name, fd):
                self.partial.append(f"{name[:12]} lacks {missing[:3]}")
        finally:
            os.close(fd)

    def _still_published(self, name: str, fd: int) -> bool:
        try:
            now = os.stat(self.cache / name)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def test_two_stagers_and_a_pruner_never_show_half_a_bundle(tmp_path: Path) -> None:
    out, cache = tmp_path / "archives", tmp_path / "cache"
    out.mkdir()
    bundles = _bundles(out)
    # Disk usage of one staged bundle: 30 files of one block each, manifest, dirs, roots.
    cap = 2 * 40 * 4096
    argument = json.dumps([[str(a.path), a.sha256, files] for a, files in bundles])
    env = {**os.environ, MAX_BYTES_ENV: str(cap)}
    watcher = _Watcher(cache, {a.sha256: files for a, files in bundles})
    watching = threading.Thread(target=watcher.run)
    stop = tmp_path / "stop"
    watching.start()
    pruner = subprocess.Popen(
        [sys.executable, "-c", _PRUNER, str(cache), str(stop), str(cap // 2)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    stagers = [
        subprocess.Popen(
            [sys.executable, "-c", _STAGER, str(cache), str(_ROUNDS), argument],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for _ in range(2)
    ]
    try:
        results = [json.loads(p.communicate(timeout=300)[0]) for p in stagers]
    finally:
        stop.touch()
        pruned = json.loads(pruner.communicate(timeout=60)[0])
        watcher.stop.set()
        watching.join(timeout=30)
        for process in (*stagers, pruner):
            if process.poll() is None:
                process.kill()
                process.communicate()
    for result in results:
        assert result["errors"] == []
        assert result["staged"] == _ROUNDS * len(bundles)
    assert pruned["runs"] > 0 and pruned["removed"] > 0, pruned  # the pruner really removed
    assert watcher.looked > 0
    assert watcher.partial == []
    leftovers = [n for n in os.listdir(cache) if n.startswith(".evicting-")]
    assert leftovers == []
    # Any bundle evicted along the way stages again from scratch.
    again = subprocess.run(
        [sys.executable, "-c", _STAGER, str(cache), "1", argument],
        check=True, capture_output=True, text=True, env=env, timeout=60,
    )
    assert json.loads(again.stdout) == {"staged": len(bundles), "errors": []}
