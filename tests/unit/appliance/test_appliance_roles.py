"""The appliance entrypoint's command lines, real Mesos ones included (which cannot run here:
these golden lists are what the image runs when mesos-master and mesos-agent are installed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from toil_mesos import appliance
from toil_mesos.appliance import (
    ApplianceConfig,
    ApplianceError,
    agent_command,
    config_from_environment,
    master_command,
    role_argv,
)
from toil_mesos.cli import main as cli_main

IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "HOSTNAME": "agent0",
    "TOIL_MESOS_BUNDLE_CACHE": "/var/lib/toil-mesos/bundles",
    "TOIL_MESOS_APPLIANCE": "toil-mesos-appliance:1.0",
    "TOIL_MESOS_ENDPOINT": "10.0.0.2:5050",
    "TOIL_MESOS_IP": "10.0.0.3",
}
EXECUTOR_ENV = (
    '{"LANG": "C.UTF-8", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", '
    '"TOIL_MESOS_APPLIANCE": "toil-mesos-appliance:1.0", '
    '"TOIL_MESOS_BUNDLE_CACHE": "/var/lib/toil-mesos/bundles"}'
)


def test_the_real_mesos_master_command_line():
    config = ApplianceConfig(ip="10.0.0.2")
    assert master_command(config, mesos_master="/usr/sbin/mesos-master") == [
        "/usr/sbin/mesos-master",
        "--ip=10.0.0.2",
        "--port=5050",
        "--hostname=10.0.0.2",
        "--work_dir=/var/lib/mesos/master",
        "--log_dir=/var/lib/mesos/log",
    ]


def test_the_real_mesos_agent_command_line():
    config = config_from_environment({**IMAGE_ENV, "TOIL_MESOS_AGENT_RESOURCES": "cpus:4;mem:8192"})
    assert agent_command(config, mesos_agent="/usr/sbin/mesos-agent") == [
        "/usr/sbin/mesos-agent",
        "--master=10.0.0.2:5050",
        "--ip=10.0.0.3",
        "--port=5051",
        "--hostname=10.0.0.3",
        "--work_dir=/var/lib/mesos/agent",
        "--log_dir=/var/lib/mesos/log",
        "--no-systemd_enable_support",
        "--launcher=posix",
        "--isolation=posix/cpu,posix/mem",
        "--no-switch_user",
        f"--executor_environment_variables={EXECUTOR_ENV}",
        "--resources=cpus:4;mem:8192",
    ]


def test_executors_get_only_what_they_need_from_the_image():
    """HOME, HOSTNAME and the leader-facing variables stay with the agent."""
    config = config_from_environment(IMAGE_ENV)
    assert json.loads(EXECUTOR_ENV) == dict(config.executor_environment)


def test_the_bundle_cache_cap_reaches_executors_when_set():
    config = config_from_environment({**IMAGE_ENV, "TOIL_MESOS_BUNDLE_CACHE_MAX_BYTES": "5G"})
    assert dict(config.executor_environment) == {
        **json.loads(EXECUTOR_ENV), "TOIL_MESOS_BUNDLE_CACHE_MAX_BYTES": "5G"
    }
    argv = agent_command(config, mesos_agent="/usr/sbin/mesos-agent")
    [flag] = [a for a in argv if a.startswith("--executor_environment_variables=")]
    assert json.loads(flag.split("=", 1)[1])["TOIL_MESOS_BUNDLE_CACHE_MAX_BYTES"] == "5G"


def test_without_mesos_the_roles_run_the_mini_cluster_daemons():
    config = config_from_environment(IMAGE_ENV)
    master, _ = role_argv("master", config, which=lambda name: None)
    agent, _ = role_argv("agent", config, which=lambda name: None)
    assert master == [
        sys.executable, "-P", "-m", "toil_mesos.cluster.master",
        "--host", "10.0.0.3", "--port", "5050", "--hostname", "10.0.0.3",
        "--work-dir", "/var/lib/mesos/master", "--ready-file", "/var/lib/mesos/master/ready.json",
    ]
    assert agent == [
        sys.executable, "-P", "-m", "toil_mesos.cluster.agent",
        "--master", "10.0.0.2:5050", "--host", "10.0.0.3", "--port", "5051",
        "--hostname", "10.0.0.3", "--work-dir", "/var/lib/mesos/agent",
        "--ready-file", "/var/lib/mesos/agent/ready.json",
        "--executor-environment-variables", EXECUTOR_ENV,
    ]


def test_the_mini_agent_accepts_the_command_line_it_is_given():
    from toil_mesos.cluster.agent import build_parser, config_from_args

    config = config_from_environment(IMAGE_ENV)
    argv, _ = role_argv("agent", config, which=lambda name: None)
    parsed = config_from_args(build_parser().parse_args(argv[4:]))
    assert parsed.master == "10.0.0.2:5050" and parsed.host == "10.0.0.3"


def test_which_binary_decides_real_or_mini():
    config = config_from_environment(IMAGE_ENV)
    found = {"mesos-master": "/opt/mesos/sbin/mesos-master"}
    argv, _ = role_argv("master", config, which=found.get)
    assert argv[0] == "/opt/mesos/sbin/mesos-master"
    argv, _ = role_argv("agent", config, which=found.get)
    assert argv[:4] == [sys.executable, "-P", "-m", "toil_mesos.cluster.agent"]


def test_an_agent_without_a_master_is_told_how_to_name_one():
    config = config_from_environment({"TOIL_MESOS_IP": "10.0.0.3"})
    with pytest.raises(ApplianceError, match="TOIL_MESOS_ENDPOINT=HOST:PORT or pass --master"):
        role_argv("agent", config, which=lambda name: None)


def test_explicit_arguments_win_over_the_environment():
    config = config_from_environment(IMAGE_ENV, master="10.9.9.9:5050", ip="10.9.9.10")
    assert (config.master, config.ip) == ("10.9.9.9:5050", "10.9.9.10")
    moved = config_from_environment({**IMAGE_ENV, "TOIL_MESOS_WORK_DIR": "/data"})
    assert moved.work_dir == Path("/data")


def test_a_listening_role_refuses_a_loopback_address(monkeypatch):
    monkeypatch.setattr(appliance.socket, "gethostbyname", lambda name: "127.0.1.1")
    with pytest.raises(ApplianceError, match="set TOIL_MESOS_IP"):
        config_from_environment({})
    # A leader listens on nothing of the appliance's, so it needs no address.
    assert config_from_environment({}, listens=False).ip == ""


def test_the_leader_runs_the_users_command_told_where_the_master_is():
    config = config_from_environment(IMAGE_ENV, listens=False)
    argv, extra = role_argv("leader", config, ["python", "-m", "workflow.main", "file:js"])
    assert argv == ["python", "-m", "workflow.main", "file:js"]
    assert extra == {"TOIL_MESOS_ENDPOINT": "10.0.0.2:5050"}
    idle, _ = role_argv("leader", config, [])
    assert idle[1:] == ["-m", "toil_mesos.appliance", "idle"]


def test_the_cli_runs_the_role(monkeypatch, capsys):
    """``toil-mesos appliance leader -- CMD`` replaces itself with CMD, with the endpoint set."""
    calls = []

    def execvpe(file, argv, env):
        calls.append((file, argv, env["TOIL_MESOS_ENDPOINT"]))
        raise OSError(2, "No such file or directory")

    monkeypatch.setattr(appliance.os, "execvpe", execvpe)
    monkeypatch.setenv("TOIL_MESOS_WORK_DIR", "/nonexistent/appliance")
    monkeypatch.setattr(appliance.Path, "mkdir", lambda *a, **k: None)
    status = cli_main(["appliance", "--master", "10.1.1.1:5050", "leader", "--", "wf", "js"])
    assert calls == [("wf", ["wf", "js"], "10.1.1.1:5050")]
    assert status == 2 and "cannot run wf" in capsys.readouterr().err


def test_a_command_is_refused_for_the_master_role(capsys):
    assert cli_main(["appliance", "--ip", "10.0.0.2", "master", "echo"]) == 2
    assert "the master role takes no command" in capsys.readouterr().err


def test_an_unwritable_work_dir_is_named_with_the_variable_to_set(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TOIL_MESOS_WORK_DIR", str(blocker / "mesos"))
    assert cli_main(["appliance", "--ip", "10.0.0.2", "master"]) == 2
    err = capsys.readouterr().err
    assert f"cannot make the log directory {blocker}/mesos/log" in err
    assert "set TOIL_MESOS_WORK_DIR" in err
