"""How a task ended, in Toil's terms and in the words a user searches for.

Mesos says why a task ended in ``state`` and ``reason``; Toil wants an exit status and one of
its :class:`BatchJobExitReason` values, which decide what it does next (``MEMLIMIT`` lets
``--doubleMem`` retry with more memory, ``LOST`` may be retried without charge with
``--enableUnlimitedPreemptibleRetries``). The log line says it plainly: "out of memory",
"disk limit", "agent lost", "executor terminated", "time limit".
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from toil.batchSystems.abstractBatchSystem import EXIT_STATUS_UNAVAILABLE_VALUE, BatchJobExitReason

__all__ = ["EXECUTOR_ENDED", "exit_of", "explain_end"]

#: States after which the task is gone with its agent or never reached it.
LOST_STATES = frozenset(
    {"TASK_LOST", "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNREACHABLE",
     "TASK_UNKNOWN"}
)
#: Reasons that mean the agent went away or was replaced under the task.
AGENT_GONE = frozenset(
    {"REASON_AGENT_REMOVED", "REASON_AGENT_RESTARTED", "REASON_AGENT_DISCONNECTED",
     "REASON_AGENT_UNKNOWN", "REASON_AGENT_REMOVED_BY_OPERATOR", "REASON_AGENT_REREGISTERED",
     "REASON_MASTER_DISCONNECTED"}
)
#: Reasons that mean the task's executor ended (or never subscribed) under it.
EXECUTOR_ENDED = frozenset(
    {"REASON_EXECUTOR_TERMINATED", "REASON_EXECUTOR_REGISTRATION_TIMEOUT",
     "REASON_EXECUTOR_REREGISTRATION_TIMEOUT", "REASON_EXECUTOR_UNREGISTERED"}
)
_MEMORY = "REASON_CONTAINER_LIMITATION_MEMORY"
_DISK = "REASON_CONTAINER_LIMITATION_DISK"
_LIMITATION = "REASON_CONTAINER_LIMITATION"
_TIME = "REASON_MAX_COMPLETION_TIME_REACHED"
_PREEMPTED = "REASON_CONTAINER_PREEMPTED"


def exit_of(status: Mapping[str, Any]) -> tuple[int, BatchJobExitReason]:
    """Toil's exit status and reason for a terminal TaskStatus.

    The executor puts the worker's exact exit status in ``data``; a limit Mesos enforced keeps
    that status when there is one; anything the master or agent decided alone (a lost agent, a
    dead executor, an invalid task) has no exit status.
    """
    state = str(status.get("state"))
    reason = str(status.get("reason") or "")
    if state == "TASK_FINISHED":
        return 0, BatchJobExitReason.FINISHED
    exit_status = _reported_exit_status(status.get("data"))
    if exit_status is not None and exit_status < 0:  # killed by a signal, as a shell says it
        exit_status = 128 - exit_status
    known = EXIT_STATUS_UNAVAILABLE_VALUE if exit_status is None else exit_status
    if reason == _MEMORY:
        return known, BatchJobExitReason.MEMLIMIT
    if reason in (_DISK, _LIMITATION):
        return known, BatchJobExitReason.FAILED  # Toil has no reason for a disk limit
    if reason == _TIME:
        return known, BatchJobExitReason.TIMELIMIT
    if state in LOST_STATES or reason in AGENT_GONE or reason in EXECUTOR_ENDED or (
            reason == _PREEMPTED):
        return EXIT_STATUS_UNAVAILABLE_VALUE, BatchJobExitReason.LOST
    if state == "TASK_KILLED":
        return EXIT_STATUS_UNAVAILABLE_VALUE, BatchJobExitReason.KILLED
    if state == "TASK_ERROR":
        return EXIT_STATUS_UNAVAILABLE_VALUE, BatchJobExitReason.ERROR
    return known, BatchJobExitReason.FAILED


def explain_end(status: Mapping[str, Any]) -> str:
    """A few words on why a task did not finish, for the log, with Mesos's own message.

    """
    state = str(status.get("state"))
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "").strip()
    exit_status, _ = exit_of(status)
    if reason == _MEMORY:
        words = ("out of memory: the job used more memory than it asked for and Mesos killed "
                 "it; ask for more memory (the job's memory=, --defaultMemory; --doubleMem "
                 "retries with twice as much)")
    elif reason == _DISK:
        words = ("disk limit: the job wrote more to disk than it asked for and Mesos killed it; "
                 "ask for more disk (the job's disk=, --defaultDisk)")
    elif reason == _LIMITATION:
        words = "resource limit: Mesos killed the job for going over what it asked for"
    elif reason == _TIME:
        words = "time limit: the job ran longer than Mesos allowed"
    elif reason == _PREEMPTED:
        words = "preempted: Mesos took the job's resources back"
    elif state in LOST_STATES or reason in AGENT_GONE:
        words = "agent lost: the job's agent went away or stopped answering; Toil may reissue it"
    elif reason in EXECUTOR_ENDED:
        words = "executor terminated: the job's executor ended under it; Toil may reissue it"
    elif state == "TASK_KILLED":
        words = "killed"
    elif state == "TASK_ERROR":
        words = "invalid task: Mesos refused it"
    elif exit_status == 137:
        words = ("exited 137 (killed by SIGKILL; when nobody killed it, often the kernel's "
                 "out-of-memory killer: ask for more memory)")
    elif exit_status != EXIT_STATUS_UNAVAILABLE_VALUE:
        words = f"failed with exit status {exit_status}"
    else:
        words = "failed"
    return f"{words} ({message})" if message else words


def _reported_exit_status(data: Any) -> int | None:
    if not data:
        return None
    try:
        document = json.loads(base64.b64decode(str(data), validate=True))
    except (binascii.Error, ValueError):
        return None
    value = document.get("exit_status") if isinstance(document, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
