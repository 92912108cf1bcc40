"""``cluster up``'s options, and what they require of the machine.

Every cluster option lives here: add a field to :class:`ClusterOptions`, check it in
:meth:`ClusterOptions.validate`, and pass it on in ``_cluster.Cluster`` (the agents' or the
master's command line); ``cli.py`` maps the command line onto it. :func:`isolation_for`
decides the agents' mount isolation from the options and the machine, refusing what cannot be
had rather than pretending.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import toil_mesos
from toil_mesos.cluster._isolation import (
    IsolationError,
    MountIsolation,
    minimal_roots,
    mount_isolation_unavailable,
    netns_unavailable,
    resolve_hide_paths,
)
from toil_mesos.cluster._master_auth import load_credentials
from toil_mesos.cluster._master_election import DEFAULT_SESSION_TIMEOUT
from toil_mesos.cluster._zookeeper import zookeeper_available
from toil_mesos.errors import MesosError
from toil_mesos.mesos._master_spec import BadMasterSpec, ZooKeeperMasters, parse_master_spec
from toil_mesos.mesos._roles import check_role

__all__ = [
    "DEFAULT_READY_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "DEFAULT_ZK_SESSION_TIMEOUT",
    "ClusterError",
    "ClusterOptions",
    "check_work_dir",
    "isolation_for",
    "needed_under_tmp",
]

logger = logging.getLogger("toil_mesos.cluster.launcher")

#: Long enough for Python to start and an agent to register on a loaded 2-core machine; the
#: target for 3 agents is under 5 s.
DEFAULT_READY_TIMEOUT: Final = 60.0
#: SIGTERM grace: an agent first gives its executors their shutdown grace period (Mesos'
#: default is 5 s), so this must be longer than that.
DEFAULT_STOP_TIMEOUT: Final = 20.0
#: The masters' ZooKeeper session timeout (Mesos' default too).
DEFAULT_ZK_SESSION_TIMEOUT: Final = DEFAULT_SESSION_TIMEOUT

#: Each agent offers its own port range so that tasks of agents sharing the host's network
#: (no ``--netns``) cannot collide.
_PORTS_BASE: Final = 31000
_PORTS_PER_AGENT: Final = 100


class ClusterError(MesosError):
    """``cluster up/status/down`` cannot do what was asked; the message says what to fix."""


@dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    """How big the cluster is and how its agents are isolated (``cluster up``'s options).

    ``private_tmp`` None means "when the machine can" (root and a working ``unshare``), which
    is what ``cluster up`` does; False turns it off for callers that know their agents must
    share ``/tmp``; True insists. ``master_command`` and ``agent_command`` replace
    ``python -P -m toil_mesos.cluster.master`` (``agent``) before the protocol's arguments:
    the launcher's own tests run it with stand-in daemons. ``executor_env`` is added to every
    agent's ``--executor-environment-variables``, which always names a bundle cache in the
    agent's own work dir (``TOIL_MESOS_BUNDLE_CACHE``; ``executor_env`` may name another).
    """

    agents: int = 1
    cpus: float = 2.0
    mem: int = 4096
    disk: int = 8192
    hide: tuple[Path, ...] = ()
    netns: bool = False
    private_tmp: bool | None = None
    ready_timeout: float = DEFAULT_READY_TIMEOUT
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    master_args: tuple[str, ...] = ()
    agent_args: tuple[str, ...] = ()
    python: str = sys.executable
    master_command: tuple[str, ...] = ()
    agent_command: tuple[str, ...] = ()
    executor_env: Mapping[str, str] | None = None
    # -- masters: how many, how they elect a leader, whom they let in --
    #: Masters to start; more than one needs ZooKeeper (``start_zookeeper`` or ``zk``).
    masters: int = 1
    #: Start a ZooKeeper server for the masters (``cluster up --zk``), stopped by ``down``.
    start_zookeeper: bool = False
    #: ``zk://HOST:PORT[,...]/PATH`` of a ZooKeeper already running (``--zk URL``).
    zk: str | None = None
    #: The masters' ZooKeeper session timeout: how soon a dead leader is replaced.
    zk_session_timeout: float = DEFAULT_ZK_SESSION_TIMEOUT
    #: Mesos JSON credentials file: frameworks must authenticate to the masters.
    credentials: Path | None = None

    # -- roles: static reservations --
    #: Reserve each agent's cpus, mem and disk for this role (Mesos' ``cpus(ROLE):C`` in the
    #: agents' ``--resources``); only frameworks in that role are offered them. None: all
    #: unreserved. Ports stay unreserved either way.
    reserve: str | None = None

    # -- GPUs: ``gpus`` GPU devices on each of the first ``gpu_agents`` agents ---------------
    gpus: int = 0
    gpu_agents: int = 1

    @property
    def uses_zookeeper(self) -> bool:
        """Whether the masters elect their leader through ZooKeeper."""
        return self.start_zookeeper or self.zk is not None

    # -- agent recovery (a restarted agent reconnects to executors of checkpointing
    # frameworks): the agents' --recovery-timeout and --executor-reregistration-timeout, in
    # seconds; None leaves Mesos' defaults (15 minutes, 2 seconds).
    agent_recovery_timeout: float | None = None
    executor_reregistration_timeout: float | None = None

    def recovery_args(self) -> tuple[str, ...]:
        """The agents' recovery flags these options ask for."""
        args: tuple[str, ...] = ()
        if self.agent_recovery_timeout is not None:
            args += ("--recovery-timeout", str(self.agent_recovery_timeout))
        if self.executor_reregistration_timeout is not None:
            args += ("--executor-reregistration-timeout", str(self.executor_reregistration_timeout))
        return args

    def validate(self) -> None:
        """Raise ClusterError naming the first bad option."""
        if self.agents < 1:
            raise ClusterError(f"--agents must be at least 1, not {self.agents}")
        if not self.cpus > 0:
            raise ClusterError(f"--cpus must be positive, not {self.cpus}")
        if self.mem <= 0:
            raise ClusterError(f"--mem must be positive (MB), not {self.mem}")
        if self.disk < 0:
            raise ClusterError(f"--disk must not be negative (MB), not {self.disk}")
        if not self.ready_timeout > 0:
            raise ClusterError(f"--timeout must be positive, not {self.ready_timeout}")
        for flag, value in (
            ("--agent-recovery-timeout", self.agent_recovery_timeout),
            ("--executor-reregistration-timeout", self.executor_reregistration_timeout),
        ):
            if value is not None and not value > 0:
                raise ClusterError(f"{flag} must be positive, not {value}")
        if self.reserve is not None:
            try:
                check_role(self.reserve)
            except ValueError as exc:
                raise ClusterError(
                    f"--reserve {self.reserve!r} is not a Mesos role: {exc}"
                ) from None
            if self.reserve == "*":
                raise ClusterError("--reserve '*' reserves nothing; name a role such as 'toil'")
        self._validate_gpus()
        self._validate_masters()

    def _validate_masters(self) -> None:
        if self.masters < 1:
            raise ClusterError(f"--masters must be at least 1, not {self.masters}")
        if self.masters > 1 and not self.uses_zookeeper:
            # Without an election every master would lead, each with its own agents and
            # frameworks: several clusters pretending to be one.
            raise ClusterError(
                f"--masters {self.masters} needs ZooKeeper to elect the leader: add --zk "
                "(starts one on loopback) or --zk zk://HOST:PORT/PATH (uses yours)"
            )
        if self.start_zookeeper and self.zk is not None:
            raise ClusterError("--zk: give a zk:// URL or start one, not both")
        if self.start_zookeeper:
            problem = zookeeper_available()
            if problem is not None:
                raise ClusterError(f"--zk cannot start ZooKeeper here: {problem}")
        if self.zk is not None:
            try:
                spec = parse_master_spec(self.zk)
            except BadMasterSpec as exc:
                raise ClusterError(str(exc).replace("--mesosEndpoint", "--zk", 1)) from None
            if not isinstance(spec, ZooKeeperMasters):
                raise ClusterError(f"--zk {self.zk!r}: expected zk://HOST:PORT[,...]/PATH")
            hosts = [h.rpartition(":")[0] or h for h in spec.hosts.split(",")]
            if self.netns and any(h == "localhost" or h.startswith("127.") for h in hosts):
                raise ClusterError(
                    f"--zk {self.zk!r} is on loopback, which agents in their own network "
                    "namespaces (--netns) cannot reach: use an address they can, or --zk alone"
                )
        if not self.zk_session_timeout > 0:
            raise ClusterError(
                f"--zk-session-timeout must be positive, not {self.zk_session_timeout}"
            )
        if self.credentials is not None:
            try:
                load_credentials(self.credentials)
            except ValueError as exc:
                raise ClusterError(str(exc)) from None

    def _validate_gpus(self) -> None:
        if self.gpus < 0:
            raise ClusterError(f"--gpus must not be negative, not {self.gpus}")
        if not self.gpus and self.gpu_agents != 1:
            raise ClusterError("--gpu-agents says which agents get --gpus; give --gpus N too")
        if self.gpus and not 1 <= self.gpu_agents <= self.agents:
            raise ClusterError(
                f"--gpu-agents must be between 1 and --agents ({self.agents}), "
                f"not {self.gpu_agents}"
            )

    def agent_gpus(self, index: int) -> int:
        """How many GPU devices agent *index* has: ``gpus`` on the first ``gpu_agents``."""
        return self.gpus if index < self.gpu_agents else 0

    def resources(self, index: int) -> str:
        """The agent's ``--resources`` string (see ``_protocol``), Mesos' own syntax.

        With :attr:`reserve`, cpus, mem and disk are ``cpus(ROLE):C``: statically reserved.
        """
        low = _PORTS_BASE + index * _PORTS_PER_AGENT
        cpus = int(self.cpus) if float(self.cpus).is_integer() else self.cpus
        role = f"({self.reserve})" if self.reserve is not None else ""
        text = (f"cpus{role}:{cpus};mem{role}:{self.mem};disk{role}:{self.disk};"
                f"ports:[{low}-{low + 99}]")
        gpus = self.agent_gpus(index)
        return f"{text};gpus:{gpus}" if gpus else text

    def to_json(self) -> dict[str, object]:
        """The options as ``cluster.json`` records them (for people reading it)."""
        return {
            "agents": self.agents,
            "cpus": self.cpus,
            "mem": self.mem,
            "disk": self.disk,
            "hide": [str(p) for p in self.hide],
            "netns": self.netns,
            "masters": self.masters,
            "zookeeper": "started" if self.start_zookeeper else self.zk,
            "credentials": None if self.credentials is None else str(self.credentials),
            "reserve": self.reserve,
            "gpus": self.gpus,
            "gpu_agents": self.gpu_agents if self.gpus else 0,
        }


def isolation_for(options: ClusterOptions) -> MountIsolation | None:
    """The agents' mount isolation, or None; raises when it is asked for and impossible."""
    try:
        hide = resolve_hide_paths(options.hide)
    except IsolationError as exc:
        raise ClusterError(str(exc)) from None
    if options.netns:
        reason = netns_unavailable()
        if reason is not None:
            raise ClusterError(f"--netns is impossible here: {reason}")
    reason = mount_isolation_unavailable()
    if hide and reason is not None:
        raise ClusterError(f"--hide needs a private mount namespace per agent: {reason}")
    if options.private_tmp and reason is not None:
        raise ClusterError(f"a private /tmp for agents is impossible here: {reason}")
    if options.private_tmp is False and hide:
        raise ClusterError("--hide needs agents' private mount namespaces; private_tmp=False")
    if reason is not None or options.private_tmp is False:
        if reason is not None:
            logger.info("agents share the host's mounts: %s", reason)
        return None
    for needed, what in (
        (Path(sys.prefix), "the Python environment agents run from"),
        (Path(toil_mesos.__file__).resolve().parent, "the toil_mesos package"),
        (Path(options.python).resolve().parent, "the Python interpreter"),
    ):
        for path in hide:
            if needed.resolve().is_relative_to(path):
                raise ClusterError(
                    f"--hide {str(path)!r} would hide {what} ({needed}) from the agents"
                )
    return MountIsolation(hide=hide, private_tmp=True, keep=needed_under_tmp(options))


def needed_under_tmp(options: ClusterOptions) -> tuple[Path, ...]:
    """What agents need from the host's ``/tmp`` to run: Python, this package, their command.

    Usually nothing. A checkout and virtualenv cloned under ``/tmp`` (as CI may do) would
    otherwise vanish under the agents' fresh ``/tmp`` and no agent could start.
    """
    package_root = Path(toil_mesos.__file__).resolve().parent.parent
    candidates = [
        Path(sys.prefix).resolve(),
        Path(sys.base_prefix).resolve(),
        Path(options.python).resolve().parent,
        package_root,
        *(
            Path(a).resolve()
            for a in options.agent_command
            if a.startswith("/") and Path(a).exists()
        ),
    ]
    tmp = Path("/tmp").resolve()
    return minimal_roots([p for p in candidates if p.is_relative_to(tmp) and p != tmp])


def check_work_dir(work_dir: Path, isolation: MountIsolation | None) -> None:
    """Refuse a work dir that agents would see privately (so not share with the leader)."""
    if isolation is None:
        return
    for private in isolation.private_roots():
        if work_dir.is_relative_to(private):
            why = (
                "agents get a private /tmp"
                if private == Path("/tmp")
                else f"--hide {str(private)!r} covers it for agents"
            )
            raise ClusterError(
                f"--work-dir {str(work_dir)!r} is refused: {why}, so job stores and sandboxes "
                "there would not be shared between the leader and the agents; "
                "use a directory elsewhere (e.g. under /var/tmp)"
            )
