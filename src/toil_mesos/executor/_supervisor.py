"""Run one Toil worker command, and stop it and everything it started.

Toil hands batch systems shell commands (its own ``_toil_worker ...`` line, or anything at all
in its generic tests), so they run through ``/bin/sh`` as Toil's single-machine batch system runs
them. The first word ``_toil_worker`` is rewritten to the executor's own ``_toil_worker`` by
absolute path: a PATH search could find another Toil, or none (the shell's exit 127), and the
script's shebang pins the interpreter Toil was installed with.

Each command runs in a session of its own, so a kill reaches the whole process group: SIGTERM
first, then SIGKILL once the grace period is over. The session's leader is a small guard
(:mod:`toil_mesos.executor._guard`) that kills the session when the executor dies, so a worker
never outlives its executor (the agent reports its task failed and Toil runs the job again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "WorkerExit",
    "WorkerProcess",
    "describe_exit",
    "find_toil_worker",
    "worker_command",
]

logger = logging.getLogger(__name__)

#: Exit statuses Toil's worker and the shell give meaning to (see Toil's worker.py).
NO_JOB_STORE_EXIT_CODE = 76
WALLTIME_EXIT_CODE = 77
COMMAND_NOT_FOUND = 127

_TAIL_BYTES = 4096


def find_toil_worker(*, python: str | None = None) -> Path:
    """The ``_toil_worker`` of the Toil this interpreter imports (the appliance's Toil).

    It is looked for beside the interpreter (a virtualenv), then in the interpreter's scripts
    directory: a system Python's pip puts scripts elsewhere (Debian's in ``/usr/local/bin``
    while the interpreter is ``/usr/bin/python3``). *python* names another interpreter, whose
    own directory only is searched.

    :raises FileNotFoundError: Toil's worker entry point is not installed there.
    """
    interpreter = Path(python or sys.executable)
    candidates = [interpreter.parent / "_toil_worker"]
    if python is None:
        candidates.append(Path(sysconfig.get_path("scripts")) / "_toil_worker")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(
        "Toil's worker entry point _toil_worker is not installed in "
        f"{' or '.join(str(c.parent) for c in candidates)}; "
        f"install Toil in the environment the executor runs from ({interpreter})"
    )


def worker_command(command: str, toil_worker: Path) -> str:
    """Rewrite a leading ``_toil_worker`` to *toil_worker*; leave any other command alone.

    >>> worker_command("_toil_worker wf file:/js kind-x", Path("/opt/toil/bin/_toil_worker"))
    '/opt/toil/bin/_toil_worker wf file:/js kind-x'
    >>> worker_command("sleep 1", Path("/x/_toil_worker"))
    'sleep 1'
    """
    first, _, rest = command.lstrip().partition(" ")
    if first != "_toil_worker":
        return command
    return f"{shlex.quote(str(toil_worker))} {rest}".rstrip()


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """How a worker ended: its exit status (negative for a signal), stderr's tail, wall time."""

    status: int
    stderr_tail: str
    wall_time: float

    @property
    def succeeded(self) -> bool:
        return self.status == 0


def describe_exit(status: int, stderr_tail: str = "") -> str:
    """One line saying why a worker failed, for the leader's log.

    >>> describe_exit(76).startswith("Toil's worker could not find the job store")
    True
    """
    if status == NO_JOB_STORE_EXIT_CODE:
        return (
            "Toil's worker could not find the job store (exit 76): every agent must reach the "
            "job store at the same location as the leader (a shared filesystem for a file "
            "job store, or an object store)"
        )
    if status == COMMAND_NOT_FOUND:
        return f"the command was not found on the agent (exit 127): {_last_line(stderr_tail)}"
    if status == WALLTIME_EXIT_CODE:
        return "the job ran out of wall time (exit 77)"
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else -status
        return f"the worker was killed by signal {name}"
    detail = _last_line(stderr_tail)
    return f"the worker exited with status {status}" + (f": {detail}" if detail else "")


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


class WorkerProcess:
    """One running worker command; not thread-safe: one waiter thread owns it."""

    def __init__(
        self,
        command: str,
        *,
        env: Mapping[str, str],
        cwd: Path,
        stdout: Path,
        stderr: Path,
    ) -> None:
        self._stderr_path = stderr
        self._started = time.monotonic()
        # The worker runs under a guard (``_guard``) that kills the worker's session once this
        # process is gone: the write end of the lifeline stays here, and only here (PEP 446).
        # -I: the bundle first on the worker's PYTHONPATH must not shadow the guard itself.
        lifeline, self._lifeline = os.pipe()
        try:
            with stdout.open("ab") as out, stderr.open("ab") as err:
                self._process = subprocess.Popen(
                    [sys.executable, "-I", "-m", "toil_mesos.executor._guard", str(lifeline), "--",
                     command],
                    env=dict(env),
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    pass_fds=(lifeline,),
                )
        except BaseException:
            os.close(self._lifeline)
            raise
        finally:
            os.close(lifeline)
        logger.debug("worker %d started: %s", self._process.pid, command)

    @property
    def pid(self) -> int:
        return self._process.pid

    def wait(self, timeout: float | None = None) -> WorkerExit | None:
        """Wait for the worker; None if it is still running after *timeout* seconds."""
        try:
            status = self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._close_lifeline()
        return WorkerExit(status, self._stderr_tail(), time.monotonic() - self._started)

    def stop(self, grace_period: float) -> WorkerExit:
        """SIGTERM the worker's process group, then SIGKILL it after *grace_period* seconds."""
        self._signal_group(signal.SIGTERM)
        ended = self.wait(timeout=grace_period)
        if ended is None:
            logger.warning("worker %d ignored SIGTERM for %.1f s; killing it", self.pid,
                           grace_period)
            self._signal_group(signal.SIGKILL)
            ended = self.wait(timeout=30)
            if ended is None:  # pragma: no cover - a process SIGKILL cannot end
                raise RuntimeError(f"worker {self.pid} survived SIGKILL")
        # Descendants that left the group's leader behind still get the final SIGKILL.
        self._signal_group(signal.SIGKILL)
        return ended

    def _close_lifeline(self) -> None:
        if self._lifeline >= 0:
            os.close(self._lifeline)
            self._lifeline = -1

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signum)

    def _stderr_tail(self) -> str:
        try:
            with self._stderr_path.open("rb") as stream:
                stream.seek(max(0, stream.seek(0, os.SEEK_END) - _TAIL_BYTES))
                return stream.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
