"""``python -m toil_mesos.executor._guard FD -- COMMAND``: run a worker that dies with its executor.

Why: the executor starts each worker in a session of its own, so that a kill reaches everything
the worker started. The same session makes the worker outlive an executor that is SIGKILLed or
crashes: the agent then reports the task failed, Toil reissues the job, and the orphan and the new
attempt run the same job at once. The executor cannot clean up after a SIGKILL, so this guard,
the session's leader, does: it holds the read end of a pipe whose only writer is the executor,
and when that pipe reaches end of file (the executor is gone) it SIGKILLs its process group.

Otherwise it is transparent: it runs ``/bin/sh -c COMMAND`` in its own group, ignores SIGTERM and
SIGINT itself (the executor signals the whole group; the guard waits for the worker to act on
them), and exits with the worker's exit status, or dies by the signal that ended it.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

__all__ = ["main"]


def _ignore(signum: int, frame: object) -> None:
    """A handler, not SIG_IGN: ignored signals would stay ignored in the worker after exec."""


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m toil_mesos.executor._guard FD -- COMMAND\n")
        return 2
    lifeline = int(argv[0])
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    child = subprocess.Popen(argv[2], shell=True, executable="/bin/sh")
    os.set_blocking(lifeline, False)
    pidfd = os.pidfd_open(child.pid)
    poller = select.poll()
    poller.register(lifeline, select.POLLIN | select.POLLHUP)
    poller.register(pidfd, select.POLLIN)
    while child.poll() is None:
        for fd, _ in poller.poll():
            if fd == lifeline and not _drain(lifeline):
                # The executor is gone: end the worker and everything it started, and us.
                os.killpg(0, signal.SIGKILL)
    status = child.returncode
    if status >= 0:
        return status
    signum = -status
    if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be caught anyway
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 - status  # pragma: no cover - the signal above ends the process


def _drain(fd: int) -> bool:
    """Read what the executor wrote (nothing, normally); False at end of file."""
    try:
        return os.read(fd, 512) != b""
    except BlockingIOError:
        return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
