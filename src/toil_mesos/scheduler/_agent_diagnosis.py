"""Why an executor ended without running its task, from the end of its sandbox ``stderr``.

When an agent cannot start the executor (``toil-mesos`` missing from the agents' ``PATH``, a
``--mesosExecutor`` path that does not exist there, a Python that cannot import Toil), Mesos
tells the framework only ``TASK_FAILED ... Executor terminated``. The reason is in the
executor's sandbox on the agent, which the agent serves over ``/files/read``. This module is
the pure part: where that file is, how to ask for its last few KiB and read the answer, and
how to turn the text (and the executor's exit status, when the master sent it) into one
cause, the lines worth quoting, and a hint that says what to do. No I/O happens here.
"""

from __future__ import annotations

import enum
import json
import os
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Cause",
    "Diagnosis",
    "classify",
    "decode_wait_status",
    "parse_files_read",
    "sandbox_from_state",
    "sandbox_virtual_path",
    "tail_window",
    "unreadable",
]

#: How much of the end of ``stderr`` is read and classified.
TAIL_BYTES = 4096
#: At most this many lines are quoted (a traceback keeps its first line and its last ones).
QUOTE_LINES = 12
_EXECUTOR_OPTION = "--mesosExecutor (TOIL_MESOS_EXECUTOR)"

_NOT_FOUND = re.compile(
    r"(?:: (?:command )?not found|: No such file or directory|can't open file .*No such file)\s*$"
)
_PERMISSION = re.compile(r"Permission denied\s*$")
_TRACEBACK = "Traceback (most recent call last):"
_MISSING_MODULE = re.compile(r"^ModuleNotFoundError: No module named '([^']+)'")
#: A line the agent's fetcher or containerizer logged into the sandbox (glog's format).
_AGENT_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\] ")


class Cause(enum.Enum):
    """What went wrong, as a user would search for it."""

    COMMAND_NOT_FOUND = "command not found"
    PERMISSION_DENIED = "permission denied"
    PYTHON_ERROR = "Python error"
    EXITED = "executor exited"
    NO_OUTPUT = "no output"
    UNREADABLE = "stderr unreadable"


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnosis:
    """One executor failure explained: the cause, the lines that show it, what to do."""

    cause: Cause
    #: A few words for one-line summaries ("command not found (exit status 127)").
    summary: str
    #: Lines of the executor's ``stderr`` that show the cause (may be empty).
    quote: tuple[str, ...]
    hint: str
    #: The sandbox file quoted: ``stderr``, or ``stdout`` when stderr was empty.
    source: str = "stderr"

    def describe(self) -> str:
        """The summary, the quoted lines (indented, one per line) and the hint."""
        quoted = "".join(f"\n    {line}" for line in self.quote)
        lead = (f"{self.summary}; its {self.source} ends with:{quoted}\n" if quoted
                else f"{self.summary}; ")
        return lead + self.hint


def sandbox_virtual_path(framework_id: str, executor_id: str, name: str = "stderr") -> str:
    """The ``/files`` virtual path of a file in the executor's latest run's sandbox.

    >>> sandbox_virtual_path("F-0001", "toil-ab")
    '/frameworks/F-0001/executors/toil-ab/runs/latest/stderr'
    """
    return f"/frameworks/{framework_id}/executors/{executor_id}/runs/latest/{name}"


def tail_window(size: int, max_bytes: int = TAIL_BYTES) -> tuple[int, int]:
    """The ``offset`` and ``length`` that read the last ``max_bytes`` of a ``size``-byte file.

    >>> tail_window(10_000, 4096)
    (5904, 4096)
    >>> tail_window(100, 4096)
    (0, 100)
    """
    offset = max(0, size - max_bytes)
    return offset, size - offset


def parse_files_read(body: bytes | str) -> tuple[str, int]:
    """``data`` and ``offset`` of a ``/files/read`` answer (``{"data": "...", "offset": N}``).

    With ``offset=-1`` the agent answers with no data and the file's size as ``offset``.

    :raises ValueError: the body is not that shape (the message says what it was).
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(
            f"expected an object with 'data' and 'offset', got {type(document).__name__}")
    data, offset = document.get("data"), document.get("offset")
    if not isinstance(data, str) or not isinstance(offset, int) or isinstance(offset, bool):
        raise ValueError(
            f"expected 'data' (a string) and 'offset' (an integer), got {document!r:.200}")
    if offset < 0:
        raise ValueError(f"negative offset {offset}")
    return data, offset


def sandbox_from_state(
    state: Mapping[str, Any], *, agent_id: str, framework_id: str, executor_id: str
) -> str | None:
    """Where the executor's sandbox is on the agent, from the agent's ``/state``.

    The executor's own ``directory`` when the agent still lists it (the last run listed is the
    latest), else the path Mesos lays sandboxes out at under the agent's ``work_dir``.
    """
    directory: str | None = None
    frameworks = [*state.get("frameworks", ()), *state.get("completed_frameworks", ())]
    for framework in frameworks:
        if not isinstance(framework, Mapping) or framework.get("id") != framework_id:
            continue
        executors = [*framework.get("executors", ()), *framework.get("completed_executors", ())]
        for executor in executors:
            if isinstance(executor, Mapping) and executor.get("id") == executor_id:
                found = executor.get("directory")
                directory = str(found) if found else directory
    if directory:
        return directory
    flags = state.get("flags")
    work_dir = flags.get("work_dir") if isinstance(flags, Mapping) else None
    if not work_dir:
        return None
    return (f"{str(work_dir).rstrip('/')}/slaves/{agent_id}/frameworks/{framework_id}"
            f"/executors/{executor_id}/runs/latest")


def decode_wait_status(status: int | None) -> tuple[int | None, int | None]:
    """``(exit code, signal)`` of the raw wait status a Mesos FAILURE event carries.

    >>> decode_wait_status(127 << 8)
    (127, None)
    >>> decode_wait_status(9)
    (None, 9)
    >>> decode_wait_status(None)
    (None, None)
    """
    if status is None:
        return None, None
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None


def classify(
    tail: str,
    *,
    executor_command: str,
    exit_code: int | None = None,
    signal_number: int | None = None,
    source: str = "stderr",
) -> Diagnosis:
    """Turn the end of an executor's ``stderr`` (and its exit, when known) into a diagnosis.

    A Python traceback wins over everything (the executor started and failed in Python); then
    a shell's "not found" or exit status 127; then "Permission denied" or 126; otherwise the
    last lines are quoted as they are, after the lines the agent itself logged there (the
    fetcher's), unless there is nothing else.
    """
    lines = [line.rstrip() for line in tail.splitlines() if line.strip()]
    lines = [line for line in lines if not _AGENT_LOG.match(line)] or lines
    status = _status_words(exit_code, signal_number)
    option = (f"set {_EXECUTOR_OPTION} to the command that starts it there "
              f"(now: {executor_command!r})")
    if _TRACEBACK in lines:
        start = len(lines) - 1 - lines[::-1].index(_TRACEBACK)
        trace = lines[start:]
        if len(trace) > QUOTE_LINES:
            trace = [trace[0], *trace[-(QUOTE_LINES - 1):]]
        quote = tuple(trace)
        missing = _MISSING_MODULE.match(trace[-1])
        if missing:
            hint = (f"the executor's Python cannot import {missing[1]!r}: install toil-mesos "
                    f"(with Toil) for the Python the executor command runs on the agents, or "
                    f"{option}")
        else:
            hint = ("the executor failed with the Python error quoted; check that toil-mesos and "
                    "Toil on the agents are the leader's versions")
        return Diagnosis(cause=Cause.PYTHON_ERROR, summary=f"a Python error{status}",
                         quote=quote, hint=hint, source=source)
    not_found = [line for line in lines if _NOT_FOUND.search(line)]
    if not_found or exit_code == 127:
        return Diagnosis(
            source=source,
            cause=Cause.COMMAND_NOT_FOUND,
            summary=f"command not found{status}",
            quote=tuple(not_found[-3:]),
            hint=(f"the agents cannot find the executor: install toil-mesos in the agents' image "
                  f"so that it is on their PATH, or {option}"),
        )
    denied = [line for line in lines if _PERMISSION.search(line)]
    if denied or exit_code == 126:
        return Diagnosis(
            source=source,
            cause=Cause.PERMISSION_DENIED,
            summary=f"permission denied{status}",
            quote=tuple(denied[-3:]),
            hint=(f"the executor command exists on the agents but cannot be run: make it "
                  f"executable for the user the agent runs executors as, or {option}"),
        )
    if lines:
        return Diagnosis(
            source=source,
            cause=Cause.EXITED,
            summary=f"the executor ended before running its task{status}",
            quote=tuple(lines[-5:]),
            hint=f"its stderr (quoted) says why; fix that on the agents, or {option}",
        )
    return Diagnosis(
        source=source,
        cause=Cause.NO_OUTPUT,
        summary=(f"the executor ended before running its task{status}, writing nothing to "
                 "stderr or stdout"),
        quote=(),
        hint=f"look at the agent's own log on that host; check the executor command, or {option}",
    )


def unreadable(reason: str, sandbox: str | None, *, host: str, executor_command: str,
               exit_code: int | None = None, signal_number: int | None = None) -> Diagnosis:
    """The diagnosis when ``/files`` could not be read: say so, and where the sandbox is.

    The exit status alone still tells "command not found" (127) and "permission denied" (126).
    """
    where = (f"{sandbox.rstrip('/')}/stderr" if sandbox else
             "<the agent's --work_dir>/slaves/<agent id>/frameworks/<framework id>/executors/"
             "<executor id>/runs/latest/stderr")
    read = (f"its stderr could not be read through the agent's /files ({reason}); "
            f"it is on {host} at {where}")
    known = classify("", executor_command=executor_command, exit_code=exit_code,
                     signal_number=signal_number)
    if known.cause in (Cause.COMMAND_NOT_FOUND, Cause.PERMISSION_DENIED):
        return Diagnosis(cause=known.cause, summary=known.summary, quote=(),
                         hint=f"{known.hint}; {read}")
    status = _status_words(exit_code, signal_number)
    return Diagnosis(cause=Cause.UNREADABLE,
                     summary=f"the executor ended before running its task{status}",
                     quote=(), hint=read)


def _status_words(exit_code: int | None, signal_number: int | None) -> str:
    if exit_code is not None:
        return f" (exit status {exit_code})"
    if signal_number is not None:
        try:
            name = signal.Signals(signal_number).name
        except ValueError:
            name = f"signal {signal_number}"
        return f" (killed by {name})"
    return ""
