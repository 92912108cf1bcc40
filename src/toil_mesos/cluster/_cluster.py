"""A mini-cluster in a work directory: its masters and agents as supervised daemons.

:class:`Cluster` starts ZooKeeper when the masters elect their leader through one it owns,
then the masters, then the agents (in their namespaces when isolated), waits for every ready
file (:func:`~toil_mesos.cluster._cluster_daemons.wait_ready`, which also checks each agent
really is isolated), and writes ``cluster.json``; it can stop and
restart single daemons (fault injection) and tears everything down again. The daemons'
command lines are built here (:meth:`Cluster._master` and :meth:`Cluster._agent`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from toil_mesos.cluster._cleanup import AGENT_BUNDLE_CACHE
from toil_mesos.cluster._cluster_daemons import Daemon, wait_ready
from toil_mesos.cluster._cluster_masters import ZK_PATH, master_argv, start_zookeeper
from toil_mesos.cluster._cluster_options import (
    ClusterError,
    ClusterOptions,
    check_work_dir,
    isolation_for,
)
from toil_mesos.cluster._cluster_record import (
    CLUSTER_FILE,
    AgentRecord,
    ClusterRecord,
    locked,
    read_record,
    write_json_atomically,
)
from toil_mesos.cluster._isolation import (
    IsolationError,
    MountIsolation,
    Network,
    create_network,
)
from toil_mesos.cluster._supervision import (
    KILL_WAIT,
    spawn,
    teardown,
)
from toil_mesos.deploy.stage import CACHE_ENV

__all__ = ["Cluster"]

logger = logging.getLogger("toil_mesos.cluster.launcher")


class Cluster:
    """A mini-cluster in ``work_dir``: start it, stop or restart its parts, tear it down.

    :meth:`start` is all or nothing: if any daemon fails to become ready, everything started
    is stopped and every namespace and link made is removed before the error propagates.
    ``cluster up`` calls :meth:`start` then :meth:`detach`, leaving the daemons running;
    :class:`~toil_mesos.cluster.testing.MiniCluster` keeps the object and calls :meth:`close`.
    """

    def __init__(self, work_dir: Path | str, options: ClusterOptions | None = None) -> None:
        self.options = options or ClusterOptions()
        self.work_dir = Path(work_dir).expanduser().resolve()
        self.cluster_id = secrets.token_hex(3)
        self.isolation: MountIsolation | None = None
        self.network: Network | None = None
        self.masters: list[Daemon] = []
        self.zookeeper: Daemon | None = None
        #: What frameworks and agents are given: the zk:// URL, or the lone master's address.
        self.endpoint = ""
        self.agents: list[Daemon] = []
        self._lock: contextlib.ExitStack | None = None
        self._owns_record = False  # True once we hold the lock and any old record is gone
        self._made: list[Path] = []

    def __repr__(self) -> str:
        state = "running" if self.master and self.master.process else "stopped"
        return f"<Cluster {self.cluster_id} {state} agents={len(self.agents)} {self.work_dir}>"

    @property
    def master(self) -> Daemon | None:
        """The first master (the only one unless the masters elect a leader)."""
        return self.masters[0] if self.masters else None

    # -- lifecycle --

    def start(self) -> ClusterRecord:
        """Check options, start the master and the agents, wait until all are ready.

        Raises ClusterError (nothing left running) on bad options, a busy work dir, a daemon
        that exits or is not ready before the timeout, or isolation that cannot be had.
        """
        self.options.validate()
        self.isolation = isolation_for(self.options)
        check_work_dir(self.work_dir, self.isolation)
        if self.work_dir.exists() and not self.work_dir.is_dir():
            raise ClusterError(f"--work-dir {str(self.work_dir)!r} is not a directory")
        # The work dir itself stays on failure: its logs/ explain what went wrong.
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._lock = contextlib.ExitStack()
        try:
            self._lock.enter_context(locked(self.work_dir))
            self._clear_stale_record()
            self._owns_record = True
            return self._start_all()
        except BaseException:
            self.close()
            for path in reversed(self._made):
                shutil.rmtree(path, ignore_errors=True)
            self._made.clear()
            raise

    def _clear_stale_record(self) -> None:
        record = read_record(self.work_dir)
        if record is None:
            return
        alive = [d.name for d in record.daemons if d.process.running()]
        if alive:
            raise ClusterError(
                f"the work dir is busy: {self.work_dir / CLUSTER_FILE} records a running cluster "
                f"({', '.join(alive)} alive); run `toil-mesos cluster down --work-dir "
                f"{self.work_dir}` first"
            )
        logger.warning("%s records a dead cluster: cleaning up after it", CLUSTER_FILE)
        teardown(record, timeout=self.options.stop_timeout)
        (self.work_dir / CLUSTER_FILE).unlink(missing_ok=True)

    def _start_all(self) -> ClusterRecord:
        started = time.monotonic()
        run = self.work_dir / "run"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir()
        self._made.append(run)
        if self.options.netns:
            try:
                self.network = create_network(self.cluster_id, self.options.agents)
            except IsolationError as exc:
                raise ClusterError(str(exc)) from exc
        host = self.network.host_address if self.network else "127.0.0.1"
        zk = self._start_zookeeper(host) if self.options.start_zookeeper else self.options.zk
        count = self.options.masters
        indexes = [0] if count == 1 else range(1, count + 1)
        self.masters = [self._master(i, host, zk) for i in indexes]
        for master in self.masters:
            self._launch(master)
        self._wait_ready(self.masters)
        for master in self.masters:
            # Restarts must come back on the same port: agents and frameworks know only it.
            port = master.ready["address"].rpartition(":")[2]
            master.argv[master.argv.index("--port") + 1] = port
        self.endpoint = zk or str(self.masters[0].ready["address"])
        if self.isolation is not None and self.isolation.keep:
            staging = self._make_dir(run / "tmp-staging")
            self.isolation = replace(self.isolation, staging=staging)
        self.agents = [self._agent(i) for i in range(self.options.agents)]
        for agent in self.agents:
            self._launch(agent)
        self._wait_ready(self.agents)
        for agent in self.agents:
            # A restarted agent comes back on its port: its executors re-subscribe there
            # (MESOS_AGENT_ENDPOINT), and it recovers them from its work dir.
            port = agent.ready["address"].rpartition(":")[2]
            agent.argv[agent.argv.index("--port") + 1] = port
        record = self.record()
        write_json_atomically(self.work_dir / CLUSTER_FILE, record.to_json())
        logger.info(
            "cluster %s up in %.2f s: masters at %s, %d agents",
            self.cluster_id,
            time.monotonic() - started,
            record.endpoint,
            len(record.agents),
        )
        return record

    def _command(self, role: str) -> list[str]:
        custom = self.options.master_command if role == "master" else self.options.agent_command
        # -P: `python -m` would put the working directory first on sys.path.
        return list(custom) or [self.options.python, "-P", "-m", f"toil_mesos.cluster.{role}"]

    def _make_dir(self, path: Path) -> Path:
        if not path.exists():
            path.mkdir(parents=True)
            self._made.append(path)
        return path

    def _start_zookeeper(self, host: str) -> str:
        """Start the cluster's own ZooKeeper on *host*; the masters' ``zk://`` URL."""
        log = self.work_dir / "logs" / "zookeeper.log"
        data_dir = self._make_dir(self.work_dir / "zookeeper")
        argv, process, port = start_zookeeper(
            data_dir, host, log, timeout=self.options.ready_timeout
        )
        self.zookeeper = Daemon(
            role="zookeeper",
            index=0,
            argv=argv,
            log=log,
            ready_file=self.work_dir / "run" / "zookeeper.ready",  # never written: it answers
            process=process,
            first_start_time=process.start_time,
            ready={"address": f"{host}:{port}", "pid": process.pid},
        )
        return f"zk://{host}:{port}{ZK_PATH}"

    def _master(self, index: int, host: str, zk: str | None) -> Daemon:
        """Master ``index``: 0 for a lone master, 1..N for masters electing a leader."""
        stem = "master" if index == 0 else f"master-{index}"
        parent = self.work_dir if index == 0 else self._make_dir(self.work_dir / "masters")
        work_dir = self._make_dir(parent / ("master" if index == 0 else str(index)))
        ready = self.work_dir / "run" / f"{stem}.ready"
        argv = master_argv(
            self._command("master"), self.options, host=host, work_dir=work_dir, ready=ready, zk=zk
        )
        return Daemon(
            role="master",
            index=index,
            argv=argv,
            log=self.work_dir / "logs" / f"{stem}.log",
            ready_file=ready,
        )

    def _agent(self, index: int) -> Daemon:
        assert self.endpoint
        run = self.work_dir / "run"
        host = self.network.addresses[index] if self.network else "127.0.0.1"
        work_dir = self._make_dir(self._make_dir(self.work_dir / "agents") / str(index))
        argv = [
            *self._command("agent"),
            "--master",
            self.endpoint,
            "--host",
            host,
            "--port",
            "0",
            "--work-dir",
            str(work_dir),
            "--ready-file",
            str(run / f"agent-{index}.ready"),
            "--resources",
            self.options.resources(index),
        ]
        # Each agent stages bundles in its own work dir, as each node of a real cluster has its
        # own disk: otherwise all agents would share the user's ~/.cache, one agent's staging
        # would warm the others, and `cluster down` would leave the bundles behind.
        executor_env = {CACHE_ENV: str(work_dir / AGENT_BUNDLE_CACHE),
                        **(self.options.executor_env or {})}
        argv += ["--executor-environment-variables", json.dumps(executor_env, sort_keys=True)]
        argv += self.options.recovery_args()
        argv += self.options.agent_args
        if self.isolation is not None:
            argv = self.isolation.wrap(argv)
        if self.network is not None:
            argv = self.network.wrap(index, argv)
        return Daemon(
            role="agent",
            index=index,
            argv=argv,
            ready_file=run / f"agent-{index}.ready",
            log=self.work_dir / "logs" / f"agent-{index}.log",
        )

    def _launch(self, daemon: Daemon) -> None:
        daemon.ready_file.unlink(missing_ok=True)
        daemon.ready = {}
        logger.debug("starting %s: %s", daemon.name, daemon.argv)
        daemon.process = spawn(daemon.argv, daemon.log)
        if daemon.first_start_time is None:
            daemon.first_start_time = daemon.process.start_time

    def _wait_ready(self, daemons: Sequence[Daemon]) -> None:
        lone = self.masters[0] if len(self.masters) == 1 else None
        wait_ready(
            daemons,
            run_dir=self.work_dir / "run",
            timeout=self.options.ready_timeout,
            lone_master=lone,
            isolation=self.isolation,
            network=self.network,
        )

    def record(self) -> ClusterRecord:
        """What ``cluster.json`` says about this cluster now."""
        assert self.master is not None and self.master.process is not None
        daemons = [*([self.zookeeper] if self.zookeeper else []), *self.masters, *self.agents]
        return ClusterRecord(
            master=str(self.master.ready["address"]),
            master_pid=self.master.process.pid,
            endpoint=self.endpoint,
            masters=tuple(str(m.ready.get("address", "")) for m in self.masters),
            agents=tuple(
                AgentRecord(
                    id=str(a.ready.get("id", "")),
                    address=str(a.ready.get("address", "")),
                    pid=a.process.pid if a.process else 0,
                )
                for a in self.agents
            ),
            cluster_id=self.cluster_id,
            work_dir=str(self.work_dir),
            daemons=tuple(d.record() for d in daemons if d.process is not None),
            isolation=self.isolation,
            network=self.network,
            options=self.options.to_json(),
        )

    def _write_record(self) -> None:
        write_json_atomically(self.work_dir / CLUSTER_FILE, self.record().to_json())

    # -- parts, for fault injection --

    def _daemon(self, which: str | int) -> Daemon:
        if which == "master":
            if self.master is None:
                raise ClusterError("the cluster has no master: it was not started")
            return self.master
        if isinstance(which, int) and 0 <= which < len(self.agents):
            return self.agents[which]
        for daemon in self.masters:
            if which == daemon.name:
                return daemon
        names = ", ".join(d.name for d in self.masters)
        raise ClusterError(
            f"no such daemon: {which!r} (agents are 0..{len(self.agents) - 1}; masters: {names})"
        )

    def stop(
        self,
        which: str | int,
        *,
        sig: signal.Signals = signal.SIGTERM,
        timeout: float | None = None,
    ) -> None:
        """Stop a master (``"master"``, ``"master 2"``) or agent ``which`` with ``sig``, and wait.

        SIGKILL follows if it has not exited after ``timeout`` (default: the stop timeout).
        Executors a SIGKILLed agent leaves behind keep running, as on a real agent crash;
        :meth:`close` stops them.
        """
        daemon = self._daemon(which)
        if daemon.process is None:
            return
        timeout = self.options.stop_timeout if timeout is None else timeout
        daemon.process.send(sig)
        if not daemon.process.wait(timeout):
            logger.warning("%s did not exit on %s: sending SIGKILL", daemon.name, sig.name)
            daemon.process.send(signal.SIGKILL)
            daemon.process.wait(KILL_WAIT)

    def restart(self, which: str | int) -> None:
        """Start a master or agent ``which`` again (same address and work dir) and wait.

        Stops it first if it still runs. ``cluster.json`` is rewritten with the new pid.
        """
        daemon = self._daemon(which)
        if daemon.process is not None and daemon.process.running():
            self.stop(which)
        self._launch(daemon)
        try:
            self._wait_ready([daemon])
        finally:
            self._write_record()

    def running(self, which: str | int) -> bool:
        """Whether the master, master ``"master N"`` or agent ``which`` runs now."""
        daemon = self._daemon(which)
        return daemon.process is not None and daemon.process.running()

    # -- teardown --

    def detach(self) -> None:
        """Leave the daemons running and forget them (``cluster up`` exiting)."""
        self._owns_record = False
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def close(self) -> None:
        """Stop everything, remove namespaces, links and ``cluster.json``; idempotent.

        Logs and the daemons' work dirs (sandboxes) are kept, for post-mortems.
        """
        try:
            every = (self.zookeeper, *self.masters, *self.agents)
            daemons = [d for d in every if d and d.process]
            if daemons or self.network is not None:
                record = ClusterRecord(
                    master="",
                    master_pid=0,
                    agents=(),
                    cluster_id=self.cluster_id,
                    work_dir=str(self.work_dir),
                    daemons=tuple(d.record() for d in daemons),
                    isolation=self.isolation,
                    network=self.network,
                )
                teardown(record, timeout=self.options.stop_timeout)
            self.network = None
            for daemon in daemons:
                daemon.process = None
            if self.zookeeper is not None:
                # Its data is of this run only: a new cluster starts a new election.
                shutil.rmtree(self.work_dir / "zookeeper", ignore_errors=True)
                self.zookeeper = None
            if self._owns_record:
                (self.work_dir / CLUSTER_FILE).unlink(missing_ok=True)
                shutil.rmtree(self.work_dir / "run", ignore_errors=True)
                self._owns_record = False
        finally:
            self.detach()
