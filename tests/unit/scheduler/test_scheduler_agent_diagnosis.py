"""Failed executors explained: stderr tails classified, ``/files`` answers read, no sockets.

The ``/files/read`` bodies are the ones a real Mesos 1.12 agent sent (the golden transcripts:
``offset=-1`` answers the size with no data; a read answers ``{"data", "offset"}``); the reads
go through httpx's mock transport, which checks the parameters the agent would get.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import httpx
import pytest

from toil_mesos.scheduler._agent_diagnosis import (
    Cause,
    classify,
    decode_wait_status,
    parse_files_read,
    sandbox_from_state,
    tail_window,
    unreadable,
)
from toil_mesos.scheduler._agent_files import (
    ExecutorDiagnostics,
    FailedExecutor,
    FilesUnreadable,
    read_sandbox_tail,
)

COMMAND = "/opt/x/toil-mesos executor"
#: As the recorded agent answered ``offset=-1`` and a read of a virtual path.
RECORDED_SIZE = b'{"data":"","offset":1803}'
RECORDED_READ = b'{"data":"[recording_executor] started pid=26756\\n","offset":0}'


# ---- classification ----------------------------------------------------------------------

def test_a_shell_that_cannot_find_the_executor_is_quoted_with_the_option_to_fix():
    tail = ("I1204 fetcher.cpp:623] Successfully fetched all URIs into '/sandbox'\n"
            "sh: 1: /opt/x/toil-mesos: not found\n")
    diagnosis = classify(tail, executor_command=COMMAND, exit_code=127)
    assert diagnosis.cause is Cause.COMMAND_NOT_FOUND
    assert diagnosis.quote == ("sh: 1: /opt/x/toil-mesos: not found",)
    assert "install toil-mesos in the agents' image" in diagnosis.hint
    assert "--mesosExecutor (TOIL_MESOS_EXECUTOR)" in diagnosis.hint and COMMAND in diagnosis.hint
    text = diagnosis.describe()
    assert text.startswith("command not found (exit status 127)")
    assert "\n    sh: 1: /opt/x/toil-mesos: not found\n" in text


@pytest.mark.parametrize("line", [
    "bash: line 1: toil-mesos: command not found",
    "/bin/sh: 1: exec: toil-mesos: not found",
    "bash: /opt/x/toil-mesos: No such file or directory",
])
def test_every_shells_not_found_is_recognised_without_an_exit_status(line):
    diagnosis = classify(f"{line}\n", executor_command=COMMAND)
    assert diagnosis.cause is Cause.COMMAND_NOT_FOUND and diagnosis.quote == (line,)


def test_exit_127_alone_still_says_command_not_found():
    diagnosis = classify("", executor_command=COMMAND, exit_code=127)
    assert diagnosis.cause is Cause.COMMAND_NOT_FOUND and diagnosis.quote == ()


@pytest.mark.parametrize(("tail", "code"), [
    ("sh: 1: /opt/x/toil-mesos: Permission denied\n", None),
    ("", 126),
])
def test_permission_denied_says_to_make_it_executable(tail, code):
    diagnosis = classify(tail, executor_command=COMMAND, exit_code=code)
    assert diagnosis.cause is Cause.PERMISSION_DENIED
    assert "executable" in diagnosis.hint and "--mesosExecutor" in diagnosis.hint
    assert diagnosis.summary.startswith("permission denied")


def test_a_python_traceback_is_quoted_from_its_first_line_and_a_missing_module_named():
    tail = ("some earlier noise\n"
            "Traceback (most recent call last):\n"
            '  File "/usr/bin/toil-mesos", line 5, in <module>\n'
            "    from toil_mesos.cli import main\n"
            "ModuleNotFoundError: No module named 'toil_mesos'\n")
    diagnosis = classify(tail, executor_command=COMMAND, exit_code=1)
    assert diagnosis.cause is Cause.PYTHON_ERROR
    assert diagnosis.quote[0] == "Traceback (most recent call last):"
    assert diagnosis.quote[-1] == "ModuleNotFoundError: No module named 'toil_mesos'"
    assert "some earlier noise" not in diagnosis.quote
    assert "cannot import 'toil_mesos'" in diagnosis.hint


def test_a_long_traceback_keeps_its_first_line_and_its_end():
    frames = [f'  File "m{i}.py", line {i}, in f{i}' for i in range(40)]
    tail = "\n".join(["Traceback (most recent call last):", *frames, "ValueError: boom"])
    diagnosis = classify(tail, executor_command=COMMAND)
    assert len(diagnosis.quote) == 12
    assert diagnosis.quote[0].startswith("Traceback") and diagnosis.quote[-1] == "ValueError: boom"
    assert "cannot import" not in diagnosis.hint


def test_other_output_is_quoted_as_it_is_with_the_exit_status():
    tail = "".join(f"line {i}\n" for i in range(8)) + "wrapper: scratch is not mounted\n"
    diagnosis = classify(tail, executor_command=COMMAND, exit_code=3)
    assert diagnosis.cause is Cause.EXITED
    assert diagnosis.quote[-1] == "wrapper: scratch is not mounted" and len(diagnosis.quote) == 5
    assert "(exit status 3)" in diagnosis.summary


def test_silence_and_a_signal_are_said_as_such():
    diagnosis = classify("\n\n", executor_command=COMMAND, signal_number=9)
    assert diagnosis.cause is Cause.NO_OUTPUT and diagnosis.quote == ()
    assert "killed by SIGKILL" in diagnosis.summary and "nothing" in diagnosis.summary


def test_a_stdout_tail_is_named_as_stdout():
    diagnosis = classify("wrapper says no\n", executor_command=COMMAND, source="stdout")
    assert "its stdout ends with:\n    wrapper says no" in diagnosis.describe()


def test_an_unreadable_sandbox_says_where_it_is_and_keeps_what_the_status_tells():
    found = unreadable("ConnectError: refused", "/var/lib/mesos/slaves/S0/runs/latest",
                       host="node7", executor_command=COMMAND, exit_code=127)
    assert found.cause is Cause.COMMAND_NOT_FOUND
    assert "could not be read through the agent's /files (ConnectError: refused)" in found.hint
    assert "on node7 at /var/lib/mesos/slaves/S0/runs/latest/stderr" in found.hint
    unknown = unreadable("GET /files/read answered 404", None, host="node7",
                         executor_command=COMMAND)
    assert unknown.cause is Cause.UNREADABLE
    assert "<the agent's --work_dir>/slaves/" in unknown.hint


def test_wait_statuses_decode_like_the_shell():
    assert decode_wait_status(127 << 8) == (127, None)
    assert decode_wait_status(35072) == (137, None)  # the recorded kill -9 under sh -c
    assert decode_wait_status(9) == (None, 9)


# ---- /files answers ------------------------------------------------------------------------

def test_recorded_files_read_answers_parse():
    assert parse_files_read(RECORDED_SIZE) == ("", 1803)
    assert parse_files_read(RECORDED_READ) == ("[recording_executor] started pid=26756\n", 0)


@pytest.mark.parametrize("body", [b"", b"[]", b'{"data": 3, "offset": 0}',
                                  b'{"data": "", "offset": true}', b'{"data": "", "offset": -4}',
                                  b"<html>"])
def test_other_answers_are_refused_saying_what_they_were(body):
    with pytest.raises(ValueError, match=r"\S"):
        parse_files_read(body)


def test_the_tail_window_reads_the_last_bytes_only():
    assert tail_window(1803, 4096) == (0, 1803)
    assert tail_window(10_000, 4096) == (5904, 4096)
    assert tail_window(0, 4096) == (0, 0)


def test_the_sandbox_comes_from_the_agents_state_or_its_work_dir():
    state = {
        "flags": {"work_dir": "/var/lib/mesos/agent"},
        "completed_frameworks": [{"id": "F", "completed_executors": [
            {"id": "E", "directory": "/w/run1"}, {"id": "E", "directory": "/w/run2"}]}],
    }
    assert sandbox_from_state(state, agent_id="S0", framework_id="F", executor_id="E") == "/w/run2"
    assert sandbox_from_state(state, agent_id="S0", framework_id="F", executor_id="other") == (
        "/var/lib/mesos/agent/slaves/S0/frameworks/F/executors/other/runs/latest")
    assert sandbox_from_state({}, agent_id="S0", framework_id="F", executor_id="E") is None


def agent(files: dict[str, bytes], *, seen: list[httpx.Request],
          state: dict[str, Any] | None = None) -> httpx.MockTransport:
    """An agent serving ``/files/read`` over these files as Mesos does, and ``/state``."""
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/state":
            return httpx.Response(200, json=state) if state else httpx.Response(503)
        path = request.url.params["path"]
        if path not in files:
            return httpx.Response(404)
        content = files[path]
        offset = int(request.url.params["offset"])
        if offset == -1:
            return httpx.Response(200, json={"data": "", "offset": len(content)})
        length = int(request.url.params.get("length", len(content)))
        data = content[offset:offset + length].decode()
        return httpx.Response(200, json={"data": data, "offset": offset})
    return httpx.MockTransport(handle)


LATEST = "/frameworks/F/executors/E/runs/latest/"


def test_the_tail_is_read_with_the_size_first_and_a_partial_line_dropped():
    stderr = ("x" * 5000 + "\n" + "sh: 1: /opt/x/toil-mesos: not found\n").encode()
    seen: list[httpx.Request] = []
    source, text = read_sandbox_tail("10.0.0.2:5051", agent_id="S0", framework_id="F",
                                     executor_id="E", max_bytes=100,
                                     transport=agent({LATEST + "stderr": stderr}, seen=seen))
    assert (source, text) == ("stderr", "sh: 1: /opt/x/toil-mesos: not found\n")
    assert [dict(r.url.params) for r in seen] == [
        {"path": LATEST + "stderr", "offset": "-1"},
        {"path": LATEST + "stderr", "offset": str(len(stderr) - 100), "length": "100"},
    ]
    assert all(r.url.host == "10.0.0.2" and r.url.port == 5051 for r in seen)


def test_an_empty_stderr_falls_back_to_stdout():
    seen: list[httpx.Request] = []
    files = {LATEST + "stderr": b"", LATEST + "stdout": b"wrapper: no scratch disk\n"}
    assert read_sandbox_tail("a:1", agent_id="S0", framework_id="F", executor_id="E",
                             transport=agent(files, seen=seen)) == (
        "stdout", "wrapper: no scratch disk\n")


def test_a_missing_file_is_unreadable_with_the_sandbox_from_state():
    seen: list[httpx.Request] = []
    state = {"flags": {"work_dir": "/var/lib/mesos"}}
    with pytest.raises(FilesUnreadable) as caught:
        read_sandbox_tail("a:1", agent_id="S0", framework_id="F", executor_id="E",
                          transport=agent({}, seen=seen, state=state))
    assert "404" in caught.value.reason
    assert caught.value.sandbox == "/var/lib/mesos/slaves/S0/frameworks/F/executors/E/runs/latest"


def test_an_unreachable_agent_is_unreadable_without_a_sandbox():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(FilesUnreadable) as caught:
        read_sandbox_tail("a:1", agent_id="S0", framework_id="F", executor_id="E",
                          transport=httpx.MockTransport(refuse))
    assert "ConnectError" in caught.value.reason and caught.value.sandbox is None


# ---- the worker ----------------------------------------------------------------------------

FAILED = FailedExecutor(agent_id="S0", hostname="node7", address="10.0.0.2:5051",
                        framework_id="F", executor_id="E")


def test_each_agent_is_read_once_off_the_callers_thread_and_logged_once(caplog):
    calls: list[tuple[str, str]] = []
    release = threading.Event()

    def reader(address: str, **ids: str) -> tuple[str, str]:
        calls.append((address, threading.current_thread().name))
        assert release.wait(10)
        return "stderr", "sh: 1: /opt/x/toil-mesos: not found\n"

    diagnostics = ExecutorDiagnostics(COMMAND, reader=reader)
    caplog.set_level(logging.ERROR)
    try:
        diagnostics.exited("S0", 127 << 8)
        diagnostics.request(FAILED)  # returns at once although the read blocks
        diagnostics.request(FAILED)
        assert diagnostics.pending("S0") and diagnostics.summary("S0") is None
        release.set()
        found = diagnostics.wait(["S0"], timeout=10)
    finally:
        diagnostics.close()
    assert found["S0"].cause is Cause.COMMAND_NOT_FOUND and not diagnostics.pending("S0")
    assert calls == [("10.0.0.2:5051", "toil-mesos-diagnosis")]
    assert diagnostics.summary("S0") == "command not found (exit status 127)"
    logged = [r.getMessage() for r in caplog.records if "failed on agent" in r.getMessage()]
    assert len(logged) == 1
    assert "node7 (10.0.0.2:5051, agent S0)" in logged[0]
    assert "sh: 1: /opt/x/toil-mesos: not found" in logged[0]


def test_an_unreadable_agent_is_still_explained_from_its_exit_status():
    def reader(address: str, **ids: str) -> tuple[str, str]:
        raise FilesUnreadable("ReadTimeout", "/var/lib/mesos/slaves/S0/x")

    diagnostics = ExecutorDiagnostics(COMMAND, reader=reader)
    try:
        diagnostics.exited("S0", 126 << 8)
        diagnostics.request(FAILED)
        found = diagnostics.wait(["S0"], timeout=10)["S0"]
    finally:
        diagnostics.close()
    assert found.cause is Cause.PERMISSION_DENIED
    assert "on node7 at /var/lib/mesos/slaves/S0/x/stderr" in found.hint


def test_wait_gives_up_on_time_with_what_it_has():
    blocked = threading.Event()

    def reader(address: str, **ids: str) -> tuple[str, str]:
        blocked.wait(10)
        return "stderr", ""

    diagnostics = ExecutorDiagnostics(COMMAND, reader=reader)
    try:
        diagnostics.request(FAILED)
        assert diagnostics.wait(["S0", "never-requested"], timeout=0.2) == {}
    finally:
        blocked.set()
        diagnostics.close()



def test_the_agents_own_fetcher_lines_are_not_quoted_when_the_executor_said_something():
    tail = ("I1204 18:27:36.272685  2759 fetcher.cpp:623] Successfully fetched all URIs into '/s'\n"
            "wrapper: no scratch\n")
    assert classify(tail, executor_command=COMMAND, exit_code=3).quote == ("wrapper: no scratch",)
    only_agent = "E1204 18:27:36.272685  2759 fetcher.cpp:99] Failed to fetch 'http://x'\n"
    assert classify(only_agent, executor_command=COMMAND).quote == (only_agent.strip(),)
