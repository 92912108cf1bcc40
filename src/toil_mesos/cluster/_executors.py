"""Executor processes and sandboxes for the mini-cluster agent, and the built-in command executor.

What a Mesos 1.12 agent did, as recorded (``shared/mesos-transcripts/executor``):

* the sandbox is ``<work_dir>/slaves/<aid>/frameworks/<fid>/executors/<eid>/runs/<container>``
  with mode 0750, holding ``stdout`` and ``stderr`` (0644; the fetcher log goes first into
  ``stderr``) and the fetched files;
* ``command.value`` runs as ``sh -c <value>`` with the sandbox as its working directory and
  *exactly* the environment :func:`executor_environment` builds (the agent's own ``HOME`` and
  ``LANG`` are not passed on), plus the agent's ``--executor-environment-variables`` (Mesos'
  ``--executor_environment_variables``) and the ``CommandInfo.environment`` variables;
* the executor runs in a session of its own, so the agent can stop it and everything it
  started: SIGTERM to the session, then SIGKILL after a grace period.

A task with a ``command`` and no ``executor`` runs under the built-in command executor, which
this module also provides (``python -m toil_mesos.cluster._executors``). Like Mesos'
``mesos-executor`` it is an ordinary executor speaking ``/api/v1/executor``: it sends
TASK_STARTING and TASK_RUNNING, runs ``sh -c <command>``, and ends with TASK_FINISHED
``Command exited with status 0`` or TASK_FAILED; its executor id is the task id.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from toil_mesos.mesos._recordio import END_OF_STREAM, NEED_DATA, RecordIODecoder

__all__ = [
    "ENVIRONMENT_VARIABLES_FLAG",
    "EXECUTOR_PATH",
    "ExecutorProcess",
    "command_executor_info",
    "executor_environment",
    "format_duration",
    "main",
    "make_sandbox",
    "parse_environment_variables",
    "process_start_time",
    "raw_wait_status",
    "sandbox_path",
    "session_pids",
    "signal_session",
]

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

#: The PATH a real agent gives executors when it has none to pass on (recorded).
EXECUTOR_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: The agent flag that hands variables to every executor (Mesos' own spelling has underscores).
ENVIRONMENT_VARIABLES_FLAG = "--executor-environment-variables"
#: What the agent sets that the flag's variables may replace. Mesos' ``executorEnvironment()``
#: (``src/slave/slave.cpp``) starts from the agent's own ``LIBPROCESS_IP``, lets the flag's
#: variables overwrite it, and only then sets ``LIBPROCESS_PORT`` and the ``MESOS_*`` variables;
#: the launcher adds the default ``PATH`` only when nothing else gave one.
_FLAG_MAY_REPLACE = frozenset({"LIBPROCESS_IP", "PATH"})

_DURATION_UNITS = (
    ("weeks", 604800.0),
    ("days", 86400.0),
    ("hrs", 3600.0),
    ("mins", 60.0),
    ("secs", 1.0),
    ("ms", 1e-3),
    ("us", 1e-6),
    ("ns", 1e-9),
)


def format_duration(seconds: float) -> str:
    """Format seconds as stout's ``Duration`` prints them.

    >>> format_duration(5), format_duration(60), format_duration(0.25), format_duration(90)
    ('5secs', '1mins', '250ms', '1.5mins')
    """
    for unit, size in _DURATION_UNITS:
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return "0ns"


def sandbox_path(
    work_dir: Path, *, agent_id: str, framework_id: str, executor_id: str, container_id: str
) -> Path:
    """The run directory of one executor container, laid out as a real agent lays it out."""
    return (
        work_dir
        / "slaves"
        / agent_id
        / "frameworks"
        / framework_id
        / "executors"
        / executor_id
        / "runs"
        / container_id
    )


def make_sandbox(path: Path) -> None:
    """Create the sandbox (0750) with empty ``stdout`` and ``stderr`` (0644)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o750)
    for name in ("stdout", "stderr"):
        file = path / name
        file.touch(exist_ok=True)
        os.chmod(file, 0o644)


def parse_environment_variables(text: str) -> dict[str, str]:
    """Parse ``--executor-environment-variables``: a JSON object of strings, as Mesos takes it.

    >>> parse_environment_variables('{"PATH": "/bin:/usr/bin", "LANG": "C.UTF-8"}')
    {'PATH': '/bin:/usr/bin', 'LANG': 'C.UTF-8'}
    >>> parse_environment_variables('{"N": 1}')
    Traceback (most recent call last):
    ...
    ValueError: --executor-environment-variables must only contain string values, not 'N': 1

    :raises ValueError: not JSON, not an object, a value that is not a string, or a name
        ``execve`` cannot take (empty, or with ``=`` or NUL); the message names the flag.
    """
    flag = ENVIRONMENT_VARIABLES_FLAG
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{flag} is not JSON ({exc}): {text!r}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{flag} must be a JSON object of strings, not {text!r}")
    variables: dict[str, str] = {}
    for name, value in document.items():
        if not isinstance(value, str):
            raise ValueError(f"{flag} must only contain string values, not {name!r}: {value!r}")
        # Mesos would hand these to execve as they are; here they would fail every launch.
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"{flag} has an invalid variable {name!r}: {value!r}")
        variables[name] = value
    return variables


def executor_environment(
    *,
    executor_id: str,
    framework_id: str,
    agent_id: str,
    agent_address: str,
    sandbox: Path,
    shutdown_grace_period: float,
    command: JSON,
    variables: Mapping[str, str] | None = None,
    recovery: tuple[float, float] | None = None,
) -> dict[str, str]:
    """The exact environment a Mesos 1.12 agent gave an executor, in its recorded order.

    *recovery* is ``(recovery timeout, subscription backoff max)`` for an executor of a
    framework that checkpoints: ``MESOS_CHECKPOINT`` is then ``1`` and the two durations tell
    the executor how long, and how often, to try to re-subscribe when its agent goes away.

    *variables* are the agent's ``--executor-environment-variables``: they are added, may
    replace ``LIBPROCESS_IP`` and the default ``PATH``, and give way to every other variable
    the agent sets (``LIBPROCESS_PORT``, ``MESOS_*``), as in Mesos. ``CommandInfo.environment``
    variables of type VALUE come last and may override anything.
    """
    host = agent_address.rsplit(":", 1)[0]
    env = {
        "MESOS_SANDBOX": str(sandbox),
        "MESOS_SLAVE_ID": agent_id,
        "MESOS_HTTP_COMMAND_EXECUTOR": "0",
        "MESOS_FRAMEWORK_ID": framework_id,
        "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": format_duration(shutdown_grace_period),
        "MESOS_CHECKPOINT": "0" if recovery is None else "1",
        "MESOS_AGENT_ENDPOINT": agent_address,
        "PATH": EXECUTOR_PATH,
        "MESOS_SLAVE_PID": f"slave(1)@{agent_address}",
        "MESOS_EXECUTOR_ID": executor_id,
        "LIBPROCESS_PORT": "0",
        "MESOS_DIRECTORY": str(sandbox),
        "LIBPROCESS_IP": host,
    }
    if recovery is not None:
        env["MESOS_RECOVERY_TIMEOUT"] = format_duration(recovery[0])
        env["MESOS_SUBSCRIPTION_BACKOFF_MAX"] = format_duration(recovery[1])
    if variables:
        agent_set = {
            name: value
            for name, value in env.items()
            if not (name in _FLAG_MAY_REPLACE and name in variables)
        }
        env = {**variables, **agent_set}
    for variable in command.get("environment", {}).get("variables", []):
        if variable.get("type", "VALUE") == "VALUE" and "name" in variable:
            env[str(variable["name"])] = str(variable.get("value", ""))
    return env


def raw_wait_status(returncode: int) -> int:
    """Turn ``Popen.returncode`` back into the raw wait status Mesos reports.

    >>> raw_wait_status(137), raw_wait_status(1), raw_wait_status(-9)
    (35072, 256, 9)
    """
    return -returncode if returncode < 0 else (returncode & 0xFF) << 8


def session_pids(session_id: int) -> list[int]:
    """Every live process whose session is *session_id* (read from ``/proc``)."""
    pids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command name: state, ppid, pgrp, session.
        if len(fields) > 3 and int(fields[3]) == session_id and fields[0] != b"Z":
            pids.append(int(entry.name))
    return pids


def process_start_time(pid: int) -> int | None:
    """The start time of *pid* in clock ticks (``/proc/PID/stat``), ``None`` when it is gone
    or a zombie. With the pid it names one process for good: pids are reused, the pair is not.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 20 or fields[0] in (b"Z", b"X", b"x"):
        return None
    return int(fields[19])


def signal_session(session_id: int, sig: signal.Signals) -> None:
    """Send *sig* to the process group *session_id* and to every process of that session.

    The group covers the usual case; the session scan also reaches children that moved into
    process groups of their own (the command executor's task), so nothing is orphaned.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(session_id, sig)
    for pid in session_pids(session_id):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class ExecutorProcess:
    """One executor process: ``sh -c <command>`` in its own session, output to the sandbox."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen

    def __repr__(self) -> str:
        return f"<ExecutorProcess pid={self.pid} returncode={self._popen.returncode}>"

    @property
    def pid(self) -> int:
        return self._popen.pid

    @classmethod
    def start(cls, *, command: str, env: Mapping[str, str], sandbox: Path) -> ExecutorProcess:
        """Start the executor; ``stdout``/``stderr`` are appended to the sandbox files.

        :raises OSError: if ``sh`` cannot be started.
        """
        with open(sandbox / "stdout", "ab") as out, open(sandbox / "stderr", "ab") as err:
            popen = subprocess.Popen(
                ["sh", "-c", command],
                cwd=sandbox,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        return cls(popen)

    def wait(self, timeout: float | None = None) -> int | None:
        """The raw wait status once the process exited, ``None`` on timeout."""
        try:
            code = self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return raw_wait_status(code)

    def poll(self) -> int | None:
        code = self._popen.poll()
        return None if code is None else raw_wait_status(code)

    def signal(self, sig: signal.Signals) -> None:
        """Signal the executor's whole session (its pid is the session id)."""
        signal_session(self._popen.pid, sig)


def command_executor_info(task: JSON, *, framework_id: str) -> JSON:
    """The ExecutorInfo an agent makes for a command task: executor id = task id.

    The command runs under this module's command executor; the task's URIs are fetched into the
    executor's sandbox, as Mesos does.
    """
    task_id = str(task["task_id"]["value"])
    command = task.get("command", {})
    shown = str(command.get("value", ""))
    launcher = f"{shlex.quote(sys.executable)} -m toil_mesos.cluster._executors"
    info: JSON = {
        "executor_id": {"value": task_id},
        "framework_id": {"value": framework_id},
        "command": {"uris": list(command.get("uris", [])), "shell": True, "value": launcher},
        "resources": list(task.get("resources", [])),
        "name": f"Command Executor (Task: {task_id}) (Command: sh -c '{shown[:30]}')",
        "source": task_id,
    }
    if not info["command"]["uris"]:
        del info["command"]["uris"]
    return info


# -- the built-in command executor -----------------------------------------------------------

_KILL_GRACE_SECONDS = 3.0
_ACK_WAIT_SECONDS = 5.0


class _CommandExecutor:
    """A minimal executor for command tasks, speaking ``/api/v1/executor`` to its agent."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._framework_id = env["MESOS_FRAMEWORK_ID"]
        self._executor_id = env["MESOS_EXECUTOR_ID"]
        self._url = f"http://{env['MESOS_AGENT_ENDPOINT']}/api/v1/executor"
        self._sandbox = env.get("MESOS_SANDBOX", os.getcwd())
        self._env = dict(env)
        self._events: queue.Queue[JSON | None] = queue.Queue()
        self._client = httpx.Client(timeout=10.0, trust_env=False)
        self._child: subprocess.Popen[bytes] | None = None
        self._task: JSON | None = None
        self._killing_state = False
        self._killed = False
        self._kill_deadline: float | None = None
        self._terminal_uuid: str | None = None
        self._terminal_at: float | None = None
        self._acked: set[str] = set()

    def run(self) -> int:
        body = {
            "type": "SUBSCRIBE",
            "executor_id": {"value": self._executor_id},
            "framework_id": {"value": self._framework_id},
            "subscribe": {"unacknowledged_tasks": [], "unacknowledged_updates": []},
        }
        reader = threading.Thread(
            target=self._read, args=(body,), name="command-executor-reader", daemon=True
        )
        reader.start()
        while True:
            try:
                event = self._events.get(timeout=0.1)
            except queue.Empty:
                event = {}
            if event is None or (event and self._handle(event)):
                # The agent closed the stream, or sent SHUTDOWN.
                self._stop_child()
                return 0
            self._watch_child()
            if self._terminal_at is not None and (
                self._terminal_uuid in self._acked
                or time.monotonic() - self._terminal_at > _ACK_WAIT_SECONDS
            ):
                return 0

    def _watch_child(self) -> None:
        if self._child is None or self._terminal_at is not None:
            return
        code = self._child.poll()
        if code is not None:
            self._finish(code)
        elif self._kill_deadline is not None and time.monotonic() > self._kill_deadline:
            self._kill_child(signal.SIGKILL)
            self._kill_deadline = None

    def _read(self, body: JSON) -> None:
        decoder = RecordIODecoder()
        try:
            with self._client.stream(
                "POST",
                self._url,
                json=body,
                headers={"Accept": "application/json"},
                timeout=httpx.Timeout(10.0, read=None),
            ) as response:
                if response.status_code != 200:
                    logger.error("SUBSCRIBE answered %s", response.status_code)
                    return
                for chunk in response.iter_raw():
                    decoder.feed(chunk)
                    while True:
                        record = decoder.next_record()
                        if record is NEED_DATA or record is END_OF_STREAM:
                            break
                        assert isinstance(record, bytes)
                        self._events.put(json.loads(record))
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("executor stream ended: %s", exc)
        finally:
            self._events.put(None)

    def _handle(self, event: JSON) -> bool:
        kind = event.get("type")
        if kind == "SUBSCRIBED":
            capabilities = event["subscribed"].get("framework_info", {}).get("capabilities", [])
            self._killing_state = any(c.get("type") == "TASK_KILLING_STATE" for c in capabilities)
        elif kind == "LAUNCH":
            self._launch(event["launch"]["task"])
        elif kind == "KILL":
            self._kill()
        elif kind == "ACKNOWLEDGED":
            self._acked.add(str(event["acknowledged"]["uuid"]))
        elif kind == "SHUTDOWN":
            running = self._child is not None and self._child.poll() is None
            self._kill()
            self._stop_child()
            if (
                running
                and self._terminal_at is None
                and self._child is not None
                and self._child.returncode is not None
            ):
                # The task dies with its executor: report it, as mesos-executor does.
                self._finish(self._child.returncode)
            return True
        return False

    def _launch(self, task: JSON) -> None:
        if self._task is not None:
            logger.error("command executor got a second task; ignoring it")
            return
        self._task = task
        self._update("TASK_STARTING")
        command = task.get("command", {})
        env = dict(self._env)
        for variable in command.get("environment", {}).get("variables", []):
            if variable.get("type", "VALUE") == "VALUE" and "name" in variable:
                env[str(variable["name"])] = str(variable.get("value", ""))
        if command.get("shell", True):
            argv = ["sh", "-c", str(command.get("value", ""))]
        else:
            argv = [str(command.get("value", ""))] + [str(a) for a in command.get("arguments", [])]
        try:
            # Its own process group inside the executor's session: the executor can signal the
            # task alone, and the agent still reaches it through the session.
            self._child = subprocess.Popen(
                argv, cwd=self._sandbox, env=env, stdin=subprocess.DEVNULL, process_group=0
            )
        except OSError as exc:
            message = f"Failed to launch the command: {exc}"
            self._terminal_uuid = self._update("TASK_FAILED", message=message)
            self._terminal_at = time.monotonic()
            return
        self._update("TASK_RUNNING")

    def _kill(self) -> None:
        if self._child is None or self._child.poll() is not None or self._killed:
            return
        self._killed = True
        if self._killing_state:
            self._update("TASK_KILLING")
        self._kill_child(signal.SIGTERM)
        self._kill_deadline = time.monotonic() + _KILL_GRACE_SECONDS

    def _kill_child(self, sig: signal.Signals) -> None:
        if self._child is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._child.pid, sig)

    def _stop_child(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._kill_child(signal.SIGTERM)
            try:
                self._child.wait(timeout=_KILL_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self._kill_child(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._child.wait(timeout=_KILL_GRACE_SECONDS)

    def _finish(self, code: int) -> None:
        if code < 0:
            name = signal.Signals(-code).name
            description = signal.strsignal(-code) or name
            message = f"Command terminated with signal {description}"
            state = "TASK_KILLED" if self._killed else "TASK_FAILED"
        else:
            message = f"Command exited with status {code}"
            state = "TASK_FINISHED" if code == 0 else "TASK_FAILED"
            if self._killed and code != 0:
                state = "TASK_KILLED"
        self._terminal_uuid = self._update(state, message=message)
        self._terminal_at = time.monotonic()

    def _update(self, state: str, *, message: str | None = None) -> str:
        assert self._task is not None
        update_uuid = base64.b64encode(uuid.uuid4().bytes).decode("ascii")
        status: JSON = {"task_id": self._task["task_id"], "state": state}
        if message is not None:
            status["message"] = message
        status["source"] = "SOURCE_EXECUTOR"
        status["executor_id"] = {"value": self._executor_id}
        status["timestamp"] = time.time()
        status["uuid"] = update_uuid
        call = {
            "type": "UPDATE",
            "executor_id": {"value": self._executor_id},
            "framework_id": {"value": self._framework_id},
            "update": {"status": status},
        }
        try:
            response = self._client.post(self._url, json=call)
            if response.status_code != 202:
                logger.error("UPDATE %s answered %s", state, response.status_code)
        except httpx.HTTPError as exc:
            logger.error("UPDATE %s failed: %s", state, exc)
        return update_uuid


def main() -> int:
    """Entry point of the built-in command executor (run by the agent, never by hand)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s command-executor %(message)s")
    return _CommandExecutor(os.environ).run()


if __name__ == "__main__":
    sys.exit(main())
