"""The Toil Appliance's entrypoint: one image, three roles.

``toil-mesos appliance master | agent | leader [COMMAND...]`` is what every container of the
image runs. Where the image holds real Mesos binaries (``mesos-master``, ``mesos-agent``, added
at build time), the master and agent roles run them; otherwise they run this project's
mini-cluster daemons, which speak the same HTTP APIs. The leader role runs the user's command
(a Toil workflow) with the master's address in ``TOIL_MESOS_ENDPOINT``.

Each role is decided by a pure function from a :class:`ApplianceConfig` to an argv, so the
command lines (real Mesos ones included, which cannot run here) are checked by golden tests;
:func:`main` only reads the environment and replaces itself with that argv.

Configuration comes from the container's environment, so one ``docker run -e ...`` line per
host is enough:

``TOIL_MESOS_ENDPOINT``
    The master's ``HOST:PORT``: which master an agent joins and a leader's workflow talks to.
``TOIL_MESOS_IP``
    The address this container listens on and advertises (default: the address its hostname
    resolves to, which container engines set to the container's own).
``TOIL_MESOS_AGENT_RESOURCES``
    The agent's resources in Mesos' ``--resources`` syntax (default: Mesos detects them; the
    mini-cluster agent uses its own default).
``TOIL_MESOS_WORK_DIR``
    Where master and agent keep their state and the executors' sandboxes
    (default: ``/var/lib/mesos``).
``TOIL_MESOS_APPLIANCE``
    The image's own name (set by the image build). Agents pass it to executors, which refuse
    tasks from a leader that expects another image.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toil_mesos.errors import MesosError

__all__ = [
    "EXECUTOR_VARIABLES",
    "ROLES",
    "ApplianceConfig",
    "ApplianceError",
    "agent_command",
    "config_from_environment",
    "leader_command",
    "main",
    "master_command",
]

logger = logging.getLogger(__name__)

ROLES = ("master", "agent", "leader")

MASTER_PORT = 5050
AGENT_PORT = 5051

#: Variables of the appliance's environment that agents hand on to executors. A Mesos agent
#: gives executors only its own MESOS_* variables and a default PATH, unless told otherwise
#: with ``--executor_environment_variables``; the executor needs these from the image.
EXECUTOR_VARIABLES = (
    "PATH",
    "LANG",
    "TOIL_MESOS_BUNDLE_CACHE",
    "TOIL_MESOS_BUNDLE_CACHE_MAX_BYTES",
    "TOIL_MESOS_APPLIANCE",
)


class ApplianceError(MesosError):
    """The container was started with a configuration the role cannot run with."""


@dataclass(frozen=True, kw_only=True)
class ApplianceConfig:
    """What a role needs to know, read from the container's environment."""

    #: The address to listen on and advertise to the others.
    ip: str
    #: The master's ``HOST:PORT``; required by agents, optional for a leader.
    master: str | None = None
    work_dir: Path = Path("/var/lib/mesos")
    #: Mesos ``--resources`` syntax; None lets the agent decide.
    resources: str | None = None
    #: Variables every executor gets (see :data:`EXECUTOR_VARIABLES`).
    executor_environment: Mapping[str, str] = field(default_factory=dict)
    #: The Python interpreter that runs the mini-cluster daemons.
    python: str = sys.executable


def config_from_environment(
    environ: Mapping[str, str],
    *,
    master: str | None = None,
    ip: str | None = None,
    listens: bool = True,
) -> ApplianceConfig:
    """Read the role's configuration; explicit arguments win over the environment.

    *listens* is False for a leader, which advertises no address of its own here (the batch
    system finds the one agents reach it by).

    :raises ApplianceError: when a listening role finds no usable address.
    """
    address = ip or environ.get("TOIL_MESOS_IP") or (_own_address() if listens else "")
    executor_environment = {
        name: environ[name] for name in EXECUTOR_VARIABLES if environ.get(name)
    }
    return ApplianceConfig(
        ip=address,
        master=master or environ.get("TOIL_MESOS_ENDPOINT") or None,
        work_dir=Path(environ.get("TOIL_MESOS_WORK_DIR") or "/var/lib/mesos"),
        resources=environ.get("TOIL_MESOS_AGENT_RESOURCES") or None,
        executor_environment=executor_environment,
    )


def _own_address() -> str:
    # Container engines map the container's hostname to its address in /etc/hosts; on a
    # network without a default route there is nothing else to ask.
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError as exc:
        raise ApplianceError(
            f"cannot find this container's address ({exc}); set TOIL_MESOS_IP"
        ) from None
    if address.startswith("127."):
        raise ApplianceError(
            f"this container's hostname resolves to {address}, which other hosts cannot "
            "reach; set TOIL_MESOS_IP to the address they should use"
        )
    return address


def master_command(config: ApplianceConfig, *, mesos_master: str | None) -> list[str]:
    """The master's argv: real ``mesos-master`` when *mesos_master* is its path."""
    work_dir = config.work_dir / "master"
    if mesos_master:
        # No --zk: a single master with its registry in a replicated log under work_dir.
        return [
            mesos_master,
            f"--ip={config.ip}",
            f"--port={MASTER_PORT}",
            f"--hostname={config.ip}",
            f"--work_dir={work_dir}",
            f"--log_dir={config.work_dir / 'log'}",
        ]
    return [
        config.python, "-P", "-m", "toil_mesos.cluster.master",
        "--host", config.ip,
        "--port", str(MASTER_PORT),
        "--hostname", config.ip,
        "--work-dir", str(work_dir),
        "--ready-file", str(work_dir / "ready.json"),
    ]


def agent_command(config: ApplianceConfig, *, mesos_agent: str | None) -> list[str]:
    """The agent's argv: real ``mesos-agent`` when *mesos_agent* is its path.

    :raises ApplianceError: when no master is configured.
    """
    if not config.master:
        raise ApplianceError(
            "the agent role needs the master's address: set TOIL_MESOS_ENDPOINT=HOST:PORT "
            "or pass --master HOST:PORT"
        )
    work_dir = config.work_dir / "agent"
    environment = json.dumps(dict(config.executor_environment), sort_keys=True)
    if mesos_agent:
        argv = [
            mesos_agent,
            f"--master={config.master}",
            f"--ip={config.ip}",
            f"--port={AGENT_PORT}",
            f"--hostname={config.ip}",
            f"--work_dir={work_dir}",
            f"--log_dir={config.work_dir / 'log'}",
            # The container is the isolation: no systemd and no cgroups hierarchy to manage.
            "--no-systemd_enable_support",
            "--launcher=posix",
            "--isolation=posix/cpu,posix/mem",
            # Run executors as the agent's own user: the framework's user (the leader's, by
            # default) need not exist in this image.
            "--no-switch_user",
            f"--executor_environment_variables={environment}",
        ]
        if config.resources:
            argv.append(f"--resources={config.resources}")
        return argv
    argv = [
        config.python, "-P", "-m", "toil_mesos.cluster.agent",
        "--master", config.master,
        "--host", config.ip,
        "--port", str(AGENT_PORT),
        "--hostname", config.ip,
        "--work-dir", str(work_dir),
        "--ready-file", str(work_dir / "ready.json"),
        "--executor-environment-variables", environment,
    ]
    if config.resources:
        argv += ["--resources", config.resources]
    return argv


def leader_command(
    config: ApplianceConfig, command: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """The leader's argv and the variables to add: the user's command, told where the master is.

    An empty *command* means "stay up", for a leader that is driven with ``docker exec``.
    """
    extra = {"TOIL_MESOS_ENDPOINT": config.master} if config.master else {}
    if not command:
        return [config.python, "-m", "toil_mesos.appliance", "idle"], extra
    return list(command), extra


def role_argv(
    role: str,
    config: ApplianceConfig,
    command: Sequence[str] = (),
    *,
    which: Callable[[str], str | None] = shutil.which,
) -> tuple[list[str], dict[str, str]]:
    """The argv a role runs and the variables it adds to the environment."""
    if role == "master":
        return master_command(config, mesos_master=which("mesos-master")), {}
    if role == "agent":
        return agent_command(config, mesos_agent=which("mesos-agent")), {}
    if role == "leader":
        return leader_command(config, command)
    raise ApplianceError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``toil-mesos appliance`` command line."""
    parser.add_argument("role", choices=ROLES, help="what this container is")
    parser.add_argument(
        "--master", metavar="HOST:PORT",
        help="the master's address (default: $TOIL_MESOS_ENDPOINT)",
    )
    parser.add_argument(
        "--ip", help="the address to listen on and advertise (default: $TOIL_MESOS_IP, "
        "else the address of this container's hostname)",
    )
    parser.add_argument(
        "command", nargs=argparse.REMAINDER,
        help="leader only: the command to run, e.g. python -m workflow.main JOBSTORE ...",
    )


def run(args: argparse.Namespace) -> int:
    """Replace this process with the role's program; returns only on a configuration error."""
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if command and args.role != "leader":
        raise ApplianceError(f"the {args.role} role takes no command, got {command!r}")
    config = config_from_environment(
        os.environ, master=args.master, ip=args.ip, listens=args.role != "leader"
    )
    argv, extra = role_argv(args.role, config, command)
    if args.role != "leader":
        log_dir = config.work_dir / "log"
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ApplianceError(
                f"cannot make the log directory {log_dir} ({exc.strerror}); "
                "set TOIL_MESOS_WORK_DIR to a writable directory"
            ) from None
    logger.info("appliance %s: %s", args.role, argv)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, {**os.environ, **extra})
    except OSError as exc:
        raise ApplianceError(f"cannot run {argv[0]}: {exc}") from None


def _idle() -> int:
    """Wait for SIGTERM or SIGINT, then exit 0: a leader container waiting for ``exec``."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    while True:
        signal.pause()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m toil_mesos.appliance idle``: the leader's stand-by process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["idle"]:
        return _idle()
    sys.stderr.write("usage: python -m toil_mesos.appliance idle\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
