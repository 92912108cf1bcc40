"""The mini-cluster's private link between agents and the master, and its daemons' command lines.

Real Mesos agents talk to the master over libprocess, which nothing outside Mesos speaks. The
mini-cluster replaces that one link with a small HTTP protocol of its own, framed exactly like the
public APIs (JSON records in RecordIO, in a chunked response), so the same sans-I/O code reads
both. Frameworks and executors never see this link: they use the public v1 scheduler and
executor APIs, which the master and agents implement as the Mesos documentation and the recorded
transcripts (``shared/mesos-transcripts``) say.

Registration stream (agent -> master)
-------------------------------------
``POST /internal/agent`` with ``Content-Type: application/json``, body::

    {"type": "REGISTER",
     "register": {"agent_info": AgentInfo,     # v1 JSON: hostname, port, resources, attributes,
                                               # and "id" when re-registering
                  "address": "HOST:PORT",      # where the agent's HTTP API listens
                  "executors": [ExecutorState, ...]}}   # what runs now (empty on first start)

``ExecutorState`` is ``{"framework_id": {...}, "framework_info": FrameworkInfo,
"executor_info": ExecutorInfo, "tasks": [TaskInfo, ...], "statuses": [TaskStatus, ...]}``: the
latest status of each task, so a restarted master learns the tasks it lost.

The answer is ``200`` with a ``Mesos-Stream-Id`` header and a chunked RecordIO stream of the
master's events to that agent (``MASTER_EVENTS`` below). The agent keeps the stream open; when it
ends or breaks, the agent registers again (with its id) with bounded backoff. The master treats an
agent whose stream has been gone for ``--agent-timeout`` seconds as lost.

Calls (agent -> master)
-----------------------
``POST /internal/agent/call`` with the ``Mesos-Stream-Id`` of the agent's stream and a JSON body
with one of ``AGENT_CALLS``; ``202`` on success, ``400`` with a ``text/plain`` reason otherwise
(``404`` when the stream id is unknown: the agent must register again).

* ``{"type": "UPDATE", "update": {"framework_id": {...}, "status": TaskStatus}}``: a status
  update as a real agent forwards it (``agent_id`` and ``container_status`` added, the executor's
  ``uuid``, ``timestamp``, ``message`` and ``data`` kept). The master forwards it to the framework
  as an ``UPDATE`` event. The agent keeps one queue per task: it sends only the oldest
  unacknowledged update, resends it after 10 s, then 20 s, 40 s... (as recorded), and sends the
  next one only after the master's ``ACKNOWLEDGE`` for it.
* ``{"type": "MESSAGE", "message": {"framework_id", "executor_id", "data"}}``: executor to
  framework; forwarded as a ``MESSAGE`` event.
* ``{"type": "EXECUTOR_EXITED", "executor_exited": {"framework_id", "executor_id",
  "status": int}}``: ``status`` is the raw wait status; the master sends the framework a
  ``FAILURE`` event (then the agent's ``TASK_FAILED`` updates follow through ``UPDATE``).

Master events (master -> agent)
-------------------------------
* ``REGISTERED {"agent_id": {...}, "heartbeat_interval_seconds": float}``
* ``RUN_TASK {"framework_id", "framework_info", "task": TaskInfo}``: the task carries its
  ``executor`` and the ``agent_id``; the agent starts the executor if it is not running (fetcher
  first) and hands it the task as ``LAUNCH``.
* ``KILL_TASK {"framework_id", "task_id"}``
* ``MESSAGE {"framework_id", "executor_id", "data"}``: framework to executor.
* ``ACKNOWLEDGE {"framework_id", "task_id", "uuid"}``: the framework acknowledged that update.
* ``SHUTDOWN_EXECUTOR {"framework_id", "executor_id"}``
* ``SHUTDOWN_FRAMEWORK {"framework_id"}``: teardown or failover timeout; every executor of the
  framework gets ``SHUTDOWN``, and is killed after its grace period.
* ``HEARTBEAT {}``

Daemon command lines
--------------------
Both daemons run in the foreground, log to stderr, stop cleanly on SIGTERM (executors get
``SHUTDOWN``, then are killed by process group after the grace period), and announce readiness by
atomically writing a JSON file (``--ready-file``), which is what ``cluster up`` waits for:

``python -m toil_mesos.cluster.master --host IP --port N --work-dir DIR --ready-file F``
    ``[--agent-timeout S] [--heartbeat-interval S] [--offer-interval S]``;
    ready file: ``{"address": "IP:PORT", "pid": PID}``. Port 0 picks a free port.

``python -m toil_mesos.cluster.agent --master IP:PORT --host IP --port N --work-dir DIR``
    ``--ready-file F [--hostname NAME] [--attributes "rack:r1;preemptible:true"]``
    ``[--resources "cpus:2;mem:4096;disk:8192;ports:[31000-31099]"] [--fetcher-timeout S]``
    ``[--executor-registration-timeout S] [--executor-shutdown-grace-period S]``;
    ready file, written once the master has answered ``REGISTERED``:
    ``{"id": AGENT_ID, "address": "IP:PORT", "pid": PID}``.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AGENT_CALLS",
    "AGENT_CALL_PATH",
    "AGENT_STREAM_PATH",
    "DEFAULT_AGENT_RESOURCES",
    "MASTER_EVENTS",
    "STATUS_UPDATE_RETRY_SECONDS",
]

AGENT_STREAM_PATH: Final = "/internal/agent"
AGENT_CALL_PATH: Final = "/internal/agent/call"

AGENT_CALLS: Final = frozenset({"UPDATE", "MESSAGE", "EXECUTOR_EXITED"})
MASTER_EVENTS: Final = frozenset(
    {
        "REGISTERED",
        "RUN_TASK",
        "KILL_TASK",
        "MESSAGE",
        "ACKNOWLEDGE",
        "SHUTDOWN_EXECUTOR",
        "SHUTDOWN_FRAMEWORK",
        "HEARTBEAT",
    }
)

#: Fits Toil's default job (1 core, 2 GiB memory, 2 GiB disk) twice over on cores and memory.
DEFAULT_AGENT_RESOURCES: Final = "cpus:2;mem:4096;disk:8192;ports:[31000-31099]"

#: First resend of an unacknowledged status update; it doubles after each resend (recorded from
#: Mesos 1.12: 10 s, then 20 s).
STATUS_UPDATE_RETRY_SECONDS: Final = 10.0
