"""Worker processes: exact exit statuses, the stderr tail, and kills that reach every descendant."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from toil_mesos.executor._supervisor import (
    WorkerProcess,
    describe_exit,
    find_toil_worker,
    worker_command,
)

pytestmark = pytest.mark.integration


def start(tmp_path: Path, command: str, **env: str) -> WorkerProcess:
    return WorkerProcess(command, env={"PATH": os.environ["PATH"], **env}, cwd=tmp_path,
                         stdout=tmp_path / "stdout", stderr=tmp_path / "stderr")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_exit_status_environment_and_stderr_tail(tmp_path):
    worker = start(tmp_path, 'echo "to stdout"; echo "boom: $FOO" >&2; exit 23', FOO="bar")
    ended = worker.wait(timeout=30)
    assert ended is not None and ended.status == 23 and not ended.succeeded
    assert ended.stderr_tail.strip() == "boom: bar"
    assert (tmp_path / "stdout").read_text() == "to stdout\n"
    explained = describe_exit(ended.status, ended.stderr_tail)
    assert explained == "the worker exited with status 23: boom: bar"


def test_wait_with_a_timeout_returns_none_while_running(tmp_path):
    worker = start(tmp_path, "sleep 30")
    try:
        assert worker.wait(timeout=0.1) is None
    finally:
        worker.stop(grace_period=5)


def test_stop_kills_the_whole_process_group_including_grandchildren(tmp_path):
    # The shell starts a grandchild that ignores SIGTERM; stop() must still end it.
    worker = start(tmp_path, "(trap '' TERM; sleep 300) & echo $! > grandchild; wait")
    deadline = time.monotonic() + 10
    while not (tmp_path / "grandchild").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int((tmp_path / "grandchild").read_text())
    assert alive(grandchild)
    ended = worker.stop(grace_period=0.5)
    assert ended.status in (-signal.SIGTERM, -signal.SIGKILL, 143, 137)
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(grandchild)


def test_toil_worker_is_run_by_absolute_path(tmp_path):
    toil_worker = find_toil_worker()
    assert toil_worker.name == "_toil_worker" and toil_worker.is_absolute()
    command = worker_command("_toil_worker --help", toil_worker)
    # An empty PATH: only the absolute path can work.
    worker = WorkerProcess(command, env={"PATH": "/nonexistent"}, cwd=tmp_path,
                           stdout=tmp_path / "stdout", stderr=tmp_path / "stderr")
    ended = worker.wait(timeout=120)
    assert ended is not None and ended.status != 127, ended.stderr_tail
    bare = WorkerProcess("_toil_worker --help", env={"PATH": "/nonexistent"}, cwd=tmp_path,
                         stdout=tmp_path / "out2", stderr=tmp_path / "err2")
    missing = bare.wait(timeout=30)
    assert missing is not None and missing.status == 127
    assert describe_exit(127, missing.stderr_tail).startswith("the command was not found")


def test_no_toil_worker_beside_the_interpreter_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="_toil_worker is not installed in"):
        find_toil_worker(python=str(tmp_path / "python"))


@pytest.mark.parametrize(("status", "text"), [
    (76, "could not find the job store"),
    (77, "ran out of wall time"),
    (-9, "killed by signal SIGKILL"),
])
def test_exit_statuses_are_explained(status, text):
    assert text in describe_exit(status)


OWNER = """
import sys
from pathlib import Path
from toil_mesos.executor._supervisor import WorkerProcess
here = Path(sys.argv[1])
worker = WorkerProcess("sleep 300 & echo $! > grandchild; wait", env={"PATH": "/usr/bin:/bin"},
                       cwd=here, stdout=here / "stdout", stderr=here / "stderr")
print(worker.pid, flush=True)
worker.wait()
"""


def test_a_worker_does_not_outlive_its_sigkilled_executor(tmp_path):
    # An executor that is SIGKILLed cannot stop its workers; left running, a worker would
    # overlap the attempt Toil issues next for the same job.
    import subprocess
    import sys

    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        guard = int(owner.stdout.readline())
        deadline = time.monotonic() + 10
        while not (tmp_path / "grandchild").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        sleeper = int((tmp_path / "grandchild").read_text())
        assert alive(guard) and alive(sleeper)
        owner.kill()
        owner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (alive(guard) or alive(sleeper)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(sleeper) and not alive(guard)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(timeout=10)
        assert owner.stdout is not None
        owner.stdout.close()


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGKILL])
def test_the_exit_status_of_a_signalled_worker_passes_through_the_guard(tmp_path, signum):
    # SIGKILL is what the kernel's OOM killer sends: Toil must see it, not a guard's error.
    worker = start(tmp_path, f"kill -{signum.name.removeprefix('SIG')} $$")
    ended = worker.wait(timeout=30)
    assert ended is not None and ended.status == -signum
    assert "Traceback" not in ended.stderr_tail
