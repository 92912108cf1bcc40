"""The environment an agent gives executors, with and without --executor-environment-variables.

Mesos' ``executorEnvironment()`` (``src/slave/slave.cpp``) and its launcher define the order:
the agent's ``LIBPROCESS_IP``, then the flag's variables, then ``LIBPROCESS_PORT`` and the
``MESOS_*`` variables; the default ``PATH`` only when nothing gave one; ``CommandInfo``
variables last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from toil_mesos.cluster._executors import (
    EXECUTOR_PATH,
    executor_environment,
    parse_environment_variables,
)
from toil_mesos.cluster.agent import build_parser, config_from_args

SANDBOX = Path("/work/slaves/S0/frameworks/F0/executors/E1/runs/C1")
AGENT = "10.0.0.5:5051"


def environment(
    variables: dict[str, str] | None = None, command: dict[str, Any] | None = None
) -> dict[str, str]:
    return executor_environment(
        executor_id="E1",
        framework_id="F0",
        agent_id="S0",
        agent_address=AGENT,
        sandbox=SANDBOX,
        shutdown_grace_period=5.0,
        command=command or {},
        variables=variables,
    )


BASELINE = environment()


class TestExecutorEnvironment:
    def test_without_the_flag_the_recorded_variables_only(self) -> None:
        assert list(BASELINE) == [
            "MESOS_SANDBOX", "MESOS_SLAVE_ID", "MESOS_HTTP_COMMAND_EXECUTOR",
            "MESOS_FRAMEWORK_ID", "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "MESOS_CHECKPOINT",
            "MESOS_AGENT_ENDPOINT", "PATH", "MESOS_SLAVE_PID", "MESOS_EXECUTOR_ID",
            "LIBPROCESS_PORT", "MESOS_DIRECTORY", "LIBPROCESS_IP",
        ]
        assert BASELINE["PATH"] == EXECUTOR_PATH and BASELINE["LIBPROCESS_IP"] == "10.0.0.5"

    def test_an_empty_object_changes_nothing(self) -> None:
        assert environment({}) == BASELINE

    def test_the_flags_variables_are_added(self) -> None:
        env = environment({"TOIL_MESOS_APPLIANCE": "toil-mesos:dev", "LANG": "C.UTF-8"})
        assert env == {**BASELINE, "TOIL_MESOS_APPLIANCE": "toil-mesos:dev", "LANG": "C.UTF-8"}

    def test_a_path_in_the_flag_replaces_the_default(self) -> None:
        assert environment({"PATH": "/opt/venv/bin:/usr/bin"})["PATH"] == "/opt/venv/bin:/usr/bin"

    @pytest.mark.parametrize(
        "name",
        ["MESOS_FRAMEWORK_ID", "MESOS_EXECUTOR_ID", "MESOS_SANDBOX", "MESOS_DIRECTORY",
         "MESOS_AGENT_ENDPOINT", "MESOS_SLAVE_PID", "LIBPROCESS_PORT"],
    )
    def test_what_the_agent_sets_wins_over_the_flag(self, name: str) -> None:
        env = environment({name: "from-the-flag", "OTHER": "kept"})
        assert env[name] == BASELINE[name] and env["OTHER"] == "kept"

    def test_the_flag_may_replace_libprocess_ip_as_in_mesos(self) -> None:
        assert environment({"LIBPROCESS_IP": "10.9.9.9"})["LIBPROCESS_IP"] == "10.9.9.9"

    def test_commandinfo_variables_come_last(self) -> None:
        command: dict[str, Any] = {"environment": {"variables": [
            {"name": "SHARED", "value": "from-the-task"},
            {"name": "MESOS_CHECKPOINT", "value": "1"},
            {"name": "SECRET", "type": "SECRET", "secret": {}},
        ]}}
        env = environment({"SHARED": "from-the-flag", "PATH": "/flag/bin"}, command)
        assert env["SHARED"] == "from-the-task"
        assert env["MESOS_CHECKPOINT"] == "1" and env["PATH"] == "/flag/bin"
        assert "SECRET" not in env


class TestParseEnvironmentVariables:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("{}", {}),
            ('{"A": "1", "PATH": "/bin"}', {"A": "1", "PATH": "/bin"}),
            ('{"EMPTY": ""}', {"EMPTY": ""}),
            (' {"UNICODE": "\\u00e9"} ', {"UNICODE": "\u00e9"}),
        ],
    )
    def test_a_json_object_of_strings(self, text: str, expected: dict[str, str]) -> None:
        assert parse_environment_variables(text) == expected

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("", "is not JSON"),
            ("PATH=/bin", "is not JSON"),
            ('{"A": "1"', "is not JSON"),
            ('["A", "1"]', "must be a JSON object of strings"),
            ('"A=1"', "must be a JSON object of strings"),
            ("null", "must be a JSON object of strings"),
            ('{"A": 1}', "must only contain string values"),
            ('{"A": null}', "must only contain string values"),
            ('{"A": {"B": "c"}}', "must only contain string values"),
            ('{"": "x"}', "invalid variable"),
            ('{"A=B": "x"}', "invalid variable"),
            ('{"A": "x\\u0000y"}', "invalid variable"),
        ],
    )
    def test_anything_else_is_refused_naming_the_flag(self, text: str, problem: str) -> None:
        with pytest.raises(ValueError, match=problem) as caught:
            parse_environment_variables(text)
        assert str(caught.value).startswith("--executor-environment-variables ")


class TestAgentFlag:
    REQUIRED = ("--master", "127.0.0.1:1", "--host", "127.0.0.1", "--port", "0",
                "--work-dir", "w", "--ready-file", "r.json")

    def test_absent_means_none(self) -> None:
        config = config_from_args(build_parser().parse_args(list(self.REQUIRED)))
        assert config.executor_environment_variables is None

    def test_given_it_is_parsed(self) -> None:
        args = build_parser().parse_args(
            [*self.REQUIRED, "--executor-environment-variables", '{"TOIL_MESOS_APPLIANCE": "x"}']
        )
        config = config_from_args(args)
        assert config.executor_environment_variables == {"TOIL_MESOS_APPLIANCE": "x"}

    def test_bad_json_is_a_value_error_for_the_parser_to_report(self) -> None:
        args = build_parser().parse_args(
            [*self.REQUIRED, "--executor-environment-variables", '{"A": 1}']
        )
        with pytest.raises(ValueError, match="--executor-environment-variables must only"):
            config_from_args(args)
