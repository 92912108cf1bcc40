"""Job-level ends keep their exact reason: Toil's exit reason and the words a user searches for."""

from __future__ import annotations

import base64
import json

import pytest
from toil.batchSystems.abstractBatchSystem import EXIT_STATUS_UNAVAILABLE_VALUE, BatchJobExitReason

from toil_mesos.scheduler._task_end import exit_of, explain_end
from toil_mesos.scheduler.batch_system import exit_of as exported_exit_of

UNAVAILABLE = EXIT_STATUS_UNAVAILABLE_VALUE


def exit_data(exit_status: int) -> str:
    return base64.b64encode(json.dumps({"exit_status": exit_status}).encode()).decode()


@pytest.mark.parametrize(
    ("status", "expected", "words"),
    [
        ({"state": "TASK_FAILED", "reason": "REASON_CONTAINER_LIMITATION_MEMORY",
          "message": "Memory limit exceeded: Requested: 100MB Maximum Used: 101MB"},
         (UNAVAILABLE, BatchJobExitReason.MEMLIMIT), "out of memory"),
        ({"state": "TASK_FAILED", "reason": "REASON_CONTAINER_LIMITATION_MEMORY",
          "data": exit_data(-9)},
         (137, BatchJobExitReason.MEMLIMIT), "out of memory"),
        ({"state": "TASK_FAILED", "reason": "REASON_CONTAINER_LIMITATION_DISK",
          "message": "Disk usage (11MB) exceeds quota (10MB)"},
         (UNAVAILABLE, BatchJobExitReason.FAILED), "disk limit"),
        ({"state": "TASK_FAILED", "reason": "REASON_MAX_COMPLETION_TIME_REACHED"},
         (UNAVAILABLE, BatchJobExitReason.TIMELIMIT), "time limit"),
        ({"state": "TASK_LOST", "reason": "REASON_AGENT_REMOVED"},
         (UNAVAILABLE, BatchJobExitReason.LOST), "agent lost"),
        ({"state": "TASK_GONE", "reason": "REASON_RECONCILIATION"},
         (UNAVAILABLE, BatchJobExitReason.LOST), "agent lost"),
        ({"state": "TASK_UNREACHABLE", "reason": "REASON_AGENT_DISCONNECTED"},
         (UNAVAILABLE, BatchJobExitReason.LOST), "agent lost"),
        ({"state": "TASK_FAILED", "reason": "REASON_AGENT_RESTARTED"},
         (UNAVAILABLE, BatchJobExitReason.LOST), "agent lost"),
        ({"state": "TASK_FAILED", "reason": "REASON_EXECUTOR_TERMINATED",
          "message": "Executor terminated"},
         (UNAVAILABLE, BatchJobExitReason.LOST), "executor terminated"),
        ({"state": "TASK_FAILED", "data": exit_data(-9)},
         (137, BatchJobExitReason.FAILED), "out-of-memory killer"),
        ({"state": "TASK_FAILED", "data": exit_data(3)},
         (3, BatchJobExitReason.FAILED), "exit status 3"),
        ({"state": "TASK_KILLED"}, (UNAVAILABLE, BatchJobExitReason.KILLED), "killed"),
    ],
)
def test_each_end_maps_to_toils_reason_and_says_it_plainly(status, expected, words):
    assert exit_of(status) == expected
    assert words in explain_end(status)
    message = status.get("message")
    if message:
        assert explain_end(status).endswith(f"({message})")


def test_the_batch_system_reports_with_the_same_mapping():
    assert exported_exit_of is exit_of
