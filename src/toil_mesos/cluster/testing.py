"""A mini-cluster for tests: ``with MiniCluster(work_dir, agents=2) as cluster: ...``.

It does what ``toil-mesos cluster up`` does (same options, same ``cluster.json``, same
isolation), keeps the daemons as children of the test process, and on exit guarantees that no
process, mount, link or namespace it made is left behind. Fault tests stop, kill and restart
the master or single agents through it.

Work directories must not be under ``/tmp`` when agents get a private ``/tmp`` (root with a
working ``unshare``), so pytest's ``tmp_path`` does not do; :func:`cluster_work_dir` makes one
in a place agents share with the test::

    @pytest.fixture
    def cluster() -> Iterator[MiniCluster]:
        with cluster_work_dir() as work_dir, MiniCluster(work_dir, agents=2) as mini:
            yield mini
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

import toil_mesos
from toil_mesos.cluster._cluster_masters import leading_master
from toil_mesos.cluster._isolation import Network
from toil_mesos.cluster.launcher import (
    DEFAULT_READY_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    DEFAULT_ZK_SESSION_TIMEOUT,
    AgentRecord,
    Cluster,
    ClusterOptions,
    ClusterRecord,
    master_addresses,
)

__all__ = ["WORK_DIR_BASE_ENV", "MiniCluster", "cluster_work_dir", "leader_venv"]

#: Where :func:`cluster_work_dir` makes directories; default ``/var/tmp``, which agents share.
WORK_DIR_BASE_ENV: Final = "TOIL_MESOS_CLUSTER_TMPDIR"


def leader_venv(path: Path, *, with_pip: bool = False) -> Path:
    """A leader virtualenv like the seed's, where Toil comes from "the system"; its python.

    The Toil Appliance's leader makes ``virtualenv --system-site-packages``, so Toil and this
    project come from the image and only the user's code is the leader's own. Here the "system"
    is this environment: the venv is made by the base interpreter and a ``.pth`` file puts this
    environment's site-packages and this project's sources on its path. ``with_pip`` also
    installs pip and setuptools into the venv itself (so that bundles must leave them out).
    """
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", *(() if with_pip else ("--without-pip",)), str(path)],
                   check=True, capture_output=True, timeout=300)
    site = path / "lib" / "python{}.{}".format(*sys.version_info[:2]) / "site-packages"
    source = Path(toil_mesos.__file__).resolve().parents[1]
    (site / "_appliance.pth").write_text(f"{sysconfig.get_path('purelib')}\n{source}\n")
    return path / "bin" / "python"


@contextlib.contextmanager
def cluster_work_dir(prefix: str = "toil-mesos-cluster-", *, keep: bool = False) -> Iterator[Path]:
    """A fresh directory agents share with the test (not under ``/tmp``); removed afterwards.

    ``keep=True`` leaves it for a post-mortem. The base is ``$TOIL_MESOS_CLUSTER_TMPDIR`` or
    ``/var/tmp``.
    """
    base = Path(os.environ.get(WORK_DIR_BASE_ENV, "/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


class MiniCluster:
    """A master and agents running for the duration of a ``with`` block (or start()/close()).

    The options are ``cluster up``'s (``agents``, ``cpus``, ``mem``, ``disk``, ``hide``,
    ``netns``) plus ``timeout`` for readiness, ``private_tmp`` (None: when the machine can),
    extra daemon arguments (``master_args``, ``agent_args``, e.g. a short
    ``--agent-timeout`` for agent-loss tests), and ``executor_env``, the variables every
    executor gets (the agents' ``--executor-environment-variables``), ``reserve``, a role
    each agent's cpus, mem and disk are statically reserved for (``cluster up --reserve``),
    and ``gpus`` GPU devices for each of the first ``gpu_agents`` agents (``cluster up
    --gpus N --gpu-agents K``).

    ``masters`` > 1 needs ``zk``: True starts the cluster's own ZooKeeper (``cluster up
    --zk``), a ``zk://`` URL uses one already running; ``zk_session_timeout`` is how soon a
    dead leader is replaced. Frameworks are then given :attr:`endpoint`.
    """

    def __init__(
        self,
        work_dir: Path | str,
        *,
        agents: int = 1,
        cpus: float = 2.0,
        mem: int = 4096,
        disk: int = 8192,
        hide: Sequence[Path | str] = (),
        netns: bool = False,
        private_tmp: bool | None = None,
        timeout: float = DEFAULT_READY_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        master_args: Sequence[str] = (),
        agent_args: Sequence[str] = (),
        master_command: Sequence[str] = (),
        agent_command: Sequence[str] = (),
        executor_env: Mapping[str, str] | None = None,
        masters: int = 1,
        zk: bool | str = False,
        zk_session_timeout: float = DEFAULT_ZK_SESSION_TIMEOUT,
        reserve: str | None = None,
        gpus: int = 0,
        gpu_agents: int = 1,
    ) -> None:
        self._cluster = Cluster(
            work_dir,
            ClusterOptions(
                agents=agents,
                cpus=cpus,
                mem=mem,
                disk=disk,
                hide=tuple(Path(p) for p in hide),
                netns=netns,
                private_tmp=private_tmp,
                ready_timeout=timeout,
                stop_timeout=stop_timeout,
                master_args=tuple(master_args),
                agent_args=tuple(agent_args),
                master_command=tuple(master_command),
                agent_command=tuple(agent_command),
                executor_env=None if executor_env is None else dict(executor_env),
                masters=masters,
                start_zookeeper=zk is True,
                zk=zk if isinstance(zk, str) else None,
                zk_session_timeout=zk_session_timeout,
                reserve=reserve,
                gpus=gpus,
                gpu_agents=gpu_agents,
            ),
        )
        self._record: ClusterRecord | None = None

    def __repr__(self) -> str:
        return f"<MiniCluster {self._cluster!r}>"

    # -- lifecycle --

    def start(self) -> MiniCluster:
        """Start every daemon and wait until all are ready (ClusterError otherwise)."""
        self._record = self._cluster.start()
        return self

    def close(self) -> None:
        """Stop everything and remove what the cluster made; idempotent."""
        self._cluster.close()
        self._record = None

    def __enter__(self) -> MiniCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what runs --

    @property
    def record(self) -> ClusterRecord:
        """What ``cluster.json`` says now."""
        if self._record is None:
            raise RuntimeError("the MiniCluster is not running: use it in a with block")
        return self._record

    @property
    def work_dir(self) -> Path:
        """The cluster's work directory."""
        return self._cluster.work_dir

    @property
    def master(self) -> str:
        """The master's ``HOST:PORT`` (the host's bridge address with ``netns``)."""
        return self.record.master

    @property
    def endpoint(self) -> str:
        """What frameworks are given: the ``zk://`` URL with ZooKeeper, else :attr:`master`."""
        return self.record.endpoint

    @property
    def master_pid(self) -> int:
        """The master's pid now."""
        return self.record.master_pid

    @property
    def agents(self) -> tuple[AgentRecord, ...]:
        """Each agent's Mesos id, ``HOST:PORT`` and pid (the agent process itself)."""
        return self.record.agents

    @property
    def network(self) -> Network | None:
        """The agents' network namespaces and addresses, with ``netns``."""
        return self.record.network

    def log(self, which: str | int) -> Path:
        """The log file of ``"master"``, ``"master N"``, ``"zookeeper"`` or agent ``which``."""
        name = which.replace(" ", "-") if isinstance(which, str) else f"agent-{which}"
        return self.work_dir / "logs" / f"{name}.log"

    def running(self, which: str | int) -> bool:
        """Whether the master (``"master"``, ``"master N"``) or agent ``which`` runs."""
        return self._cluster.running(which)

    def leader(self, timeout: float = 5.0) -> str | None:
        """The leading master's name (``"master 2"``) as ZooKeeper says; None while none leads.

        :raises ConnectionError: when ZooKeeper does not answer.
        """
        record = self.record
        if not record.endpoint.startswith("zk://"):
            return "master" if self.running("master") else None
        return leading_master(record.endpoint, master_addresses(record), timeout=timeout)

    # -- faults --

    def stop_master(self, timeout: float | None = None, *, which: str = "master") -> None:
        """SIGTERM the master (or master ``which``) and wait for it to exit (SIGKILL after
        ``timeout``)."""
        self._cluster.stop(which, timeout=timeout)

    def kill_master(self, which: str = "master") -> None:
        """SIGKILL the master (or master ``which``, e.g. ``"master 2"``) and wait for its exit."""
        self._cluster.stop(which, sig=signal.SIGKILL)

    def restart_master(self, which: str = "master") -> None:
        """Start the master (or ``which``) again on the same address, stopping it first if it
        runs; a master electing a leader comes back as a standby."""
        self._restart(which)

    def stop_agent(self, index: int, timeout: float | None = None) -> None:
        """SIGTERM agent ``index`` (it shuts its executors down) and wait for it to exit."""
        self._cluster.stop(index, timeout=timeout)

    def kill_agent(self, index: int) -> None:
        """SIGKILL agent ``index``: its executors keep running, as on a real agent crash."""
        self._cluster.stop(index, sig=signal.SIGKILL)

    def restart_agent(self, index: int) -> None:
        """Start agent ``index`` again in the same namespaces, work dir and port, and wait for
        it; it recovers the executors of frameworks that checkpoint (agent recovery)."""
        self._restart(index)

    def _restart(self, which: str | int) -> None:
        self._cluster.restart(which)
        self._record = self._cluster.record()
