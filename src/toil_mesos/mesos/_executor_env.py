"""The environment a Mesos agent gives an executor, parsed and validated.

Variables follow executor-http-api.md, "Executor Environment Variables", corrected by what a
real Mesos 1.12 agent set (transcripts, ``executor/E1/environ.parent_sh.json``):
``MESOS_CHECKPOINT`` is the string ``"0"`` or ``"1"`` (so ``bool(value)`` is always true, which
is pymesos' bug), durations are stout strings such as ``"5secs"``, and the agent id comes under
its v0 name ``MESOS_SLAVE_ID``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from toil_mesos.errors import RemoteProtocolError

__all__ = [
    "DEFAULT_RECOVERY_TIMEOUT",
    "DEFAULT_SHUTDOWN_GRACE_PERIOD",
    "DEFAULT_SUBSCRIPTION_BACKOFF_MAX",
    "ExecutorEnvironment",
    "parse_checkpoint",
    "parse_duration",
]

# The agent's defaults (src/slave/constants.hpp): RECOVERY_TIMEOUT = 15 mins,
# EXECUTOR_REREGISTRATION_TIMEOUT = 2 secs (which MESOS_SUBSCRIPTION_BACKOFF_MAX reflects),
# DEFAULT_EXECUTOR_SHUTDOWN_GRACE_PERIOD = 5 secs. Used only when the variable is absent.
DEFAULT_RECOVERY_TIMEOUT = 15 * 60.0
DEFAULT_SUBSCRIPTION_BACKOFF_MAX = 2.0
DEFAULT_SHUTDOWN_GRACE_PERIOD = 5.0

# stout's Duration::parse accepts a decimal number followed by one of these units.
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "secs": 1.0,
    "mins": 60.0,
    "hrs": 3600.0,
    "days": 86400.0,
    "weeks": 604800.0,
}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([a-z]+)")


def parse_duration(text: str) -> float:
    """Parse a Mesos (stout) duration string into seconds.

    >>> parse_duration("5secs"), parse_duration("15mins"), parse_duration("250ms")
    (5.0, 900.0, 0.25)

    :raises RemoteProtocolError: for anything stout would not parse either.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None or match.group(2) not in _UNITS:
        raise RemoteProtocolError(
            f"invalid Mesos duration {text!r}; expected a number and one of " + ", ".join(_UNITS)
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_checkpoint(value: str | None) -> bool:
    """Read ``MESOS_CHECKPOINT``: ``"1"`` (or ``"true"``) means checkpointing is on.

    >>> parse_checkpoint("0"), parse_checkpoint("1"), parse_checkpoint(None)
    (False, True, False)

    :raises RemoteProtocolError: for any other value, rather than guessing.
    """
    if value is None:
        return False
    normalized = value.strip().lower()
    if normalized in ("1", "true"):
        return True
    if normalized in ("0", "false", ""):
        return False
    raise RemoteProtocolError(f"MESOS_CHECKPOINT must be '0' or '1', got {value!r}")


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    if not value:
        raise RemoteProtocolError(
            f"{name} is not set: this process was not started by a Mesos agent as an executor"
        )
    return value


def _duration(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name)
    return default if not value else parse_duration(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorEnvironment:
    """What the agent told the executor through its environment."""

    agent_endpoint: str
    framework_id: str
    executor_id: str
    agent_id: str | None
    directory: str | None
    sandbox: str | None
    checkpoint: bool
    recovery_timeout: float
    subscription_backoff_max: float
    shutdown_grace_period: float
    authentication_token: str | None

    def __repr__(self) -> str:
        # Never show the token: reprs end up in logs.
        token = "<set>" if self.authentication_token else None
        return (
            f"ExecutorEnvironment(agent_endpoint={self.agent_endpoint!r},"
            f" framework_id={self.framework_id!r}, executor_id={self.executor_id!r},"
            f" checkpoint={self.checkpoint}, recovery_timeout={self.recovery_timeout},"
            f" subscription_backoff_max={self.subscription_backoff_max},"
            f" shutdown_grace_period={self.shutdown_grace_period},"
            f" authentication_token={token})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExecutorEnvironment:
        """Validate *env* (normally ``os.environ``).

        ``MESOS_RECOVERY_TIMEOUT`` and ``MESOS_SUBSCRIPTION_BACKOFF_MAX`` are only set when
        checkpointing is on; the agent's defaults fill in otherwise.

        :raises RemoteProtocolError: if a required variable is missing or malformed.
        """
        return cls(
            agent_endpoint=_required(env, "MESOS_AGENT_ENDPOINT"),
            framework_id=_required(env, "MESOS_FRAMEWORK_ID"),
            executor_id=_required(env, "MESOS_EXECUTOR_ID"),
            agent_id=env.get("MESOS_AGENT_ID") or env.get("MESOS_SLAVE_ID") or None,
            directory=env.get("MESOS_DIRECTORY") or None,
            sandbox=env.get("MESOS_SANDBOX") or None,
            checkpoint=parse_checkpoint(env.get("MESOS_CHECKPOINT")),
            recovery_timeout=_duration(env, "MESOS_RECOVERY_TIMEOUT", DEFAULT_RECOVERY_TIMEOUT),
            subscription_backoff_max=_duration(
                env, "MESOS_SUBSCRIPTION_BACKOFF_MAX", DEFAULT_SUBSCRIPTION_BACKOFF_MAX
            ),
            shutdown_grace_period=_duration(
                env, "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", DEFAULT_SHUTDOWN_GRACE_PERIOD
            ),
            authentication_token=env.get("MESOS_EXECUTOR_AUTHENTICATION_TOKEN") or None,
        )
