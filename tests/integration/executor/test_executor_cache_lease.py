"""A bundle that a running task uses is never evicted from the staged cache, whatever the cap.

The executor holds the lease of every bundle it staged for as long as it lives; here its task
runs for as long as the test needs, while other bundles are staged past the cap.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from toil_mesos.deploy import build, find_module, locate, scan
from toil_mesos.deploy._environment import PythonEnvironment
from toil_mesos.deploy.cache import MAX_BYTES_ENV, list_cache, prune
from toil_mesos.deploy.stage import stage
from toil_mesos.executor.executor import ToilExecutor
from toil_mesos.task_spec import TaskSpec

pytestmark = pytest.mark.integration

PYTHON = "{}.{}".format(*sys.version_info[:2])


class _Driver:
    def __init__(self) -> None:
        self.states: list[tuple[str, str]] = []
        self.changed = threading.Condition()

    def sendStatusUpdate(self, status: dict[str, Any]) -> dict[str, Any]:
        with self.changed:
            self.states.append((status["task_id"]["value"], status["state"]))
            self.changed.notify_all()
        return status

    def wait_for(self, task_id: str, state: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while (task_id, state) not in self.states:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{task_id} never reached {state}: {self.states}"
                self.changed.wait(remaining)


def _bundle(tmp_path: Path, answer: int) -> tuple[str, Path]:
    project = tmp_path / f"leader{answer}" / "proj"
    (project / "workflow").mkdir(parents=True)
    (project / "workflow" / "__init__.py").write_text("")
    for i in range(8):
        (project / "workflow" / f"m{i}.py").write_text(f"ANSWER = {answer}\n" * 200)
    env0 = PythonEnvironment.current()
    env = PythonEnvironment(sys_path=(str(project),), venv_site_packages=(),
                            base_paths=env0.base_paths, user_site=None)
    contents = scan(locate(find_module("workflow.m0", [str(project)]), environment=env))
    built = build(contents, tmp_path / "bundles")
    return built.sha256, built.path


def _task(task_id: str, command: str, sha256: str) -> dict[str, Any]:
    data = TaskSpec(job_id=1, command=command, bundle_sha256=sha256, python=PYTHON,
                    toil="9.6.0").to_json()
    return {"task_id": {"value": task_id}, "data": base64.b64encode(data).decode()}


def test_the_bundle_of_a_running_task_survives_eviction_past_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    bundles = [_bundle(tmp_path, answer) for answer in range(5)]
    held_sha, held_archive = bundles[0]
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    shutil.copy(held_archive, sandbox / held_archive.name)
    env = {"PATH": "/usr/bin:/bin", "MESOS_SANDBOX": str(sandbox), "MESOS_EXECUTOR_ID": "ex1",
           "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "1secs"}
    executor = ToilExecutor(env=env, cache_dir=cache, toil_version="9.6.0")
    driver = _Driver()
    executor.launchTask(driver, _task("long", "sleep 300", held_sha))
    try:
        driver.wait_for("long", "TASK_RUNNING")
        # Three more workflows' bundles, staged and finished with, used after the held one.
        for index, (sha256, archive) in enumerate(bundles[1:4], start=1):
            staged = stage(archive, sha256, cache_dir=cache)
            assert staged.lease is not None
            staged.lease.release()
            os.utime(cache / f"{sha256}.lease", (1000.0 + index, 1000.0 + index))
        os.utime(cache / f"{held_sha}.lease", (1.0, 1.0))  # the held one is the oldest
        one = max(e.size for e in list_cache(cache))
        cap = 3 * one + one // 2
        monkeypatch.setenv(MAX_BYTES_ENV, str(cap))
        stage(bundles[4][1], bundles[4][0], cache_dir=cache)
        left = {e.sha256: e for e in list_cache(cache)}
        assert held_sha in left and left[held_sha].in_use
        assert bundles[1][0] not in left and bundles[2][0] not in left  # oldest unused went
        assert bundles[3][0] in left and bundles[4][0] in left
        assert sum(e.size for e in left.values()) <= cap
        # An operator's prune while the task runs keeps it too.
        result = prune(cache, max_bytes=0)
        assert held_sha not in {e.sha256 for e in result.removed}
        assert (cache / held_sha / ".roots.json").is_file()
        executor.killTask(driver, {"value": "long"})
        driver.wait_for("long", "TASK_KILLED", timeout=30)
        # The executor still lives and may run more tasks of this workflow: still held.
        assert {e.sha256: e.in_use for e in list_cache(cache)} == {held_sha: True}
    finally:
        executor.shutdown(driver)
