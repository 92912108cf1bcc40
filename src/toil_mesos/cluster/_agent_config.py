"""The agent's command line and the validated configuration it becomes.

Every agent option lives here: add the flag in :func:`build_parser`, validate it in
:func:`config_from_args` and carry it in :class:`AgentConfig`; the parts of the agent read it
from ``config``. The launcher passes the flags (``_protocol`` and ``launcher``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toil_mesos.cluster._executors import ENVIRONMENT_VARIABLES_FLAG, parse_environment_variables
from toil_mesos.cluster._fetcher import (
    DEFAULT_FETCHER_CACHE_SIZE,
    DEFAULT_FETCHER_TIMEOUT,
    fetcher_cache_size,
)
from toil_mesos.cluster._protocol import DEFAULT_AGENT_RESOURCES, STATUS_UPDATE_RETRY_SECONDS
from toil_mesos.cluster._resources import (
    InvalidFlagError,
    merge_default_resources,
    parse_attributes,
    parse_resources,
)
from toil_mesos.mesos._master_spec import BadMasterSpec, parse_master_spec

__all__ = ["AgentConfig", "build_parser", "config_from_args"]

#: Mesos' defaults (``src/slave/constants.hpp``): ``--recovery_timeout`` and
#: ``--executor_reregistration_timeout``.
DEFAULT_RECOVERY_TIMEOUT = 15 * 60.0
DEFAULT_EXECUTOR_REREGISTRATION_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """The agent's command line, validated."""

    master: str
    host: str
    port: int
    work_dir: Path
    ready_file: Path
    hostname: str
    resources: list[dict[str, Any]]
    attributes: list[dict[str, Any]]
    resources_flag: str
    attributes_flag: str
    fetcher_timeout: float = DEFAULT_FETCHER_TIMEOUT
    fetcher_cache_size: int = DEFAULT_FETCHER_CACHE_SIZE
    executor_registration_timeout: float = 60.0
    executor_shutdown_grace_period: float = 5.0
    status_update_retry_seconds: float = STATUS_UPDATE_RETRY_SECONDS
    #: ``--executor-environment-variables``: what every executor gets; None when not given.
    executor_environment_variables: Mapping[str, str] | None = None
    #: How long executors of checkpointing frameworks try to re-subscribe (Mesos' 15 mins).
    recovery_timeout: float = DEFAULT_RECOVERY_TIMEOUT
    #: How long a restarted agent waits for recovered executors to re-subscribe (2 secs).
    executor_reregistration_timeout: float = DEFAULT_EXECUTOR_REREGISTRATION_TIMEOUT


def build_parser() -> argparse.ArgumentParser:
    """The agent's command line, exactly as :mod:`toil_mesos.cluster._protocol` gives it."""
    parser = argparse.ArgumentParser(
        prog="python -m toil_mesos.cluster.agent",
        description="Mini-cluster Mesos agent (a test and demo agent, not a Mesos replacement).",
    )
    parser.add_argument(
        "--master",
        required=True,
        help="the master's IP:PORT, a comma-separated list of masters, or zk://HOST:PORT/PATH",
    )
    parser.add_argument("--host", required=True, help="IP to listen on and advertise")
    parser.add_argument("--port", required=True, type=int, help="port; 0 picks a free one")
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("--ready-file", required=True, type=Path)
    parser.add_argument("--hostname", default=None, help="default: localhost for loopback, else IP")
    parser.add_argument("--resources", default=DEFAULT_AGENT_RESOURCES)
    parser.add_argument("--attributes", default="")
    parser.add_argument("--fetcher-timeout", type=float, default=DEFAULT_FETCHER_TIMEOUT)
    parser.add_argument(
        "--fetcher-cache-size", type=fetcher_cache_size, default=DEFAULT_FETCHER_CACHE_SIZE,
        metavar="SIZE", help="bound of the fetcher cache, LRU evicted, as Mesos' "
        "--fetcher_cache_size (e.g. 2GB, 500M; default: 2GB)",
    )
    parser.add_argument("--executor-registration-timeout", type=float, default=60.0)
    parser.add_argument("--executor-shutdown-grace-period", type=float, default=5.0)
    parser.add_argument(
        "--status-update-retry-seconds",
        type=float,
        default=STATUS_UPDATE_RETRY_SECONDS,
        help="first resend of an unacknowledged status update; doubles after each resend "
        "(default: %(default)s, as Mesos; tests lower it)",
    )
    parser.add_argument(
        ENVIRONMENT_VARIABLES_FLAG,
        default=None,
        metavar="JSON",
        help="a JSON object of string variables every executor gets, as Mesos' "
        "--executor_environment_variables: they replace the default PATH, and the agent's "
        "MESOS_* and LIBPROCESS_PORT win over them (default: none)",
    )
    parser.add_argument(
        "--recovery-timeout", type=float, default=DEFAULT_RECOVERY_TIMEOUT, metavar="SECONDS",
        help="how long executors of frameworks that checkpoint keep trying to re-subscribe "
        "while this agent is away (restarting), as Mesos' --recovery_timeout "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--executor-reregistration-timeout", type=float,
        default=DEFAULT_EXECUTOR_REREGISTRATION_TIMEOUT, metavar="SECONDS",
        help="after a restart with the same --work-dir, how long to wait for the recovered "
        "executors to re-subscribe before they are shut down and their tasks reported lost, "
        "as Mesos' --executor_reregistration_timeout (default: %(default)s)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Validate parsed arguments.

    :raises InvalidFlagError: for a bad ``--resources`` or ``--attributes``.
    :raises ValueError: for non-positive timeouts, or ``--executor-environment-variables``
        that is not a JSON object of strings.
    """
    resources = merge_default_resources(
        parse_resources(args.resources), parse_resources(DEFAULT_AGENT_RESOURCES)
    )
    attributes = parse_attributes(args.attributes)
    _check_whole_gpus(resources, args.resources)
    for name in (
        "fetcher_timeout",
        "executor_registration_timeout",
        "status_update_retry_seconds",
        "recovery_timeout",
        "executor_reregistration_timeout",
    ):
        if getattr(args, name) <= 0:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be positive, got {getattr(args, name)!r}")
    if args.executor_shutdown_grace_period < 0:
        raise ValueError("--executor-shutdown-grace-period must not be negative")
    hostname = args.hostname or ("localhost" if args.host.startswith("127.") else args.host)
    try:
        parse_master_spec(args.master)
    except BadMasterSpec as exc:
        raise ValueError(str(exc).replace("--mesosEndpoint", "--master", 1)) from None
    variables = args.executor_environment_variables
    return AgentConfig(
        master=args.master,
        host=args.host,
        port=args.port,
        work_dir=args.work_dir.absolute(),
        ready_file=args.ready_file.absolute(),
        hostname=hostname,
        resources=resources,
        attributes=attributes,
        resources_flag=args.resources,
        attributes_flag=args.attributes,
        fetcher_timeout=args.fetcher_timeout,
        fetcher_cache_size=args.fetcher_cache_size,
        executor_registration_timeout=args.executor_registration_timeout,
        executor_shutdown_grace_period=args.executor_shutdown_grace_period,
        status_update_retry_seconds=args.status_update_retry_seconds,
        executor_environment_variables=(
            None if variables is None else parse_environment_variables(variables)
        ),
        recovery_timeout=args.recovery_timeout,
        executor_reregistration_timeout=args.executor_reregistration_timeout,
    )


def _check_whole_gpus(resources: list[dict[str, Any]], flag: str) -> None:
    """GPUs are whole devices (Mesos refuses fractional ``gpus`` too)."""
    for resource in resources:
        if resource.get("name") != "gpus" or resource.get("type") != "SCALAR":
            continue
        value = float(resource["scalar"]["value"])
        if not value.is_integer():
            raise InvalidFlagError(
                f"--resources {flag!r} gives gpus:{value:g}; GPUs are whole devices, "
                "so gpus must be a whole number"
            )
