"""``toil-mesos cluster up/status/down`` and the launcher behind it.

The launcher's own behaviour (options, busy work dirs, failures midway, teardown, pid safety)
is tested with stand-in daemons from ``launcher_helpers``, so it does not depend on the real
master and agent; the end-to-end tests at the bottom run the real ones. Only loopback and the
cluster's own namespaces are contacted; only processes these tests start are stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from launcher_helpers import (
    FAKE_AGENT,
    FAKE_MASTER,
    TOIL_MESOS,
    become_subreaper,
    cli,
    get_json,
    link_names,
    machine_cannot_isolate,
    machine_cannot_netns,
    netns_names,
    processes_mentioning,
    real_daemons_missing,
    reap,
    tcp_server,
)

from toil_mesos.cluster._protocol import DEFAULT_AGENT_RESOURCES
from toil_mesos.cluster.launcher import (
    CLUSTER_FILE,
    Cluster,
    ClusterError,
    ClusterOptions,
    ProcessRef,
    down,
    read_record,
    up,
)
from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir

pytestmark = pytest.mark.integration

needs_isolation = pytest.mark.skipif(
    machine_cannot_isolate() is not None,
    reason=f"no private mount namespaces here: {machine_cannot_isolate()}",
)
needs_netns = pytest.mark.skipif(
    machine_cannot_netns() is not None,
    reason=f"no network namespaces here: {machine_cannot_netns()}",
)
needs_real_daemons = pytest.mark.skipif(
    real_daemons_missing() is not None, reason=f"{real_daemons_missing()}"
)


def fakes(**options: Any) -> ClusterOptions:
    """Options for a cluster of stand-in daemons."""
    return ClusterOptions(master_command=FAKE_MASTER, agent_command=FAKE_AGENT, **options)


def fake_mini(work_dir: Path, **options: Any) -> MiniCluster:
    """A MiniCluster of stand-in daemons."""
    return MiniCluster(work_dir, master_command=FAKE_MASTER, agent_command=FAKE_AGENT, **options)


@pytest.fixture(scope="module", autouse=True)
def _subreaper() -> Iterator[None]:
    become_subreaper(True)
    yield
    become_subreaper(False)


@pytest.fixture
def work_dir() -> Iterator[Path]:
    with cluster_work_dir("toil-mesos-launcher-") as path:
        yield path


def recorded_pids(work_dir: Path) -> list[ProcessRef]:
    record = read_record(work_dir)
    assert record is not None
    return [d.process for d in record.daemons]


def assert_nothing_left(work_dir: Path, refs: list[ProcessRef], cluster_id: str = "") -> None:
    assert not [r.pid for r in refs if r.running()]
    assert processes_mentioning(str(work_dir)) == []
    assert not (work_dir / CLUSTER_FILE).exists()
    if cluster_id and machine_cannot_netns() is None:
        assert not [n for n in netns_names() if cluster_id in n]
        assert not [n for n in link_names() if cluster_id in n]
    reap([r.pid for r in refs])


# --- bad options: clear error naming the option, nothing started ---------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agents", "0"], "argument --agents: must be at least 1"),
        (["--agents", "-2"], "argument --agents: must be at least 1"),
        (["--agents", "two"], "argument --agents: invalid"),
        (["--cpus", "-1"], "argument --cpus: must be positive"),
        (["--cpus", "0"], "argument --cpus: must be positive"),
        (["--mem", "-5"], "argument --mem: must not be negative"),
        (["--disk", "-1"], "argument --disk: must not be negative"),
        (["--hide", "/nonexistent/toil-mesos"], "--hide '/nonexistent/toil-mesos': no such"),
        (["--timeout", "0"], "argument --timeout: must be positive"),
    ],
)
def test_bad_option_is_named_and_nothing_starts(
    work_dir: Path, args: list[str], message: str
) -> None:
    target = work_dir / "cluster"
    done = cli("cluster", "up", "--work-dir", str(target), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""
    assert not target.exists()
    assert processes_mentioning(str(target)) == []


def test_zero_memory_is_refused_by_the_library(work_dir: Path) -> None:
    with pytest.raises(ClusterError, match="--mem must be positive"):
        Cluster(work_dir, fakes(mem=0)).start()
    assert list(work_dir.iterdir()) == []


def test_agent_resources_follow_the_protocol_defaults() -> None:
    assert ClusterOptions().resources(0) == DEFAULT_AGENT_RESOURCES
    assert ClusterOptions(cpus=0.5, mem=100, disk=0).resources(2) == (
        "cpus:0.5;mem:100;disk:0;ports:[31200-31299]"
    )


@needs_isolation
def test_work_dir_under_tmp_is_refused_when_agents_get_a_private_tmp() -> None:
    target = Path("/tmp/toil-mesos-test-refused")
    done = cli("cluster", "up", "--work-dir", str(target))
    assert done.returncode == 2
    assert (
        "--work-dir '/tmp/toil-mesos-test-refused' is refused: agents get a private /tmp"
        in done.stderr
    )
    assert "would not be shared" in done.stderr
    assert not target.exists()


@needs_isolation
def test_work_dir_under_a_hidden_path_is_refused(work_dir: Path) -> None:
    target = work_dir / "cluster"
    done = cli("cluster", "up", "--work-dir", str(target), "--hide", str(work_dir))
    assert done.returncode == 2
    assert f"--hide {str(work_dir)!r} covers it for agents" in done.stderr
    assert not target.exists()


@needs_isolation
def test_hiding_the_agents_own_python_is_refused(work_dir: Path) -> None:
    done = cli("cluster", "up", "--work-dir", str(work_dir), "--hide", sys.prefix)
    assert done.returncode == 2
    assert "would hide the Python environment agents run from" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--netns"], "--netns is impossible here: network namespaces need root"),
        (["--hide", "/usr/share"], "--hide needs a private mount namespace per agent"),
    ],
)
def test_isolation_that_cannot_be_had_is_refused_not_faked(args: list[str], message: str) -> None:
    target = f"/var/tmp/toil-mesos-test-unprivileged-{os.getpid()}"
    argv = [TOIL_MESOS, "cluster", "up", "--work-dir", target, *args]
    if os.geteuid() == 0:  # run it as nobody, where isolation is impossible
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv is not installed: cannot drop root to test the refusal")
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if "Permission denied" in done.stderr and message not in done.stderr:
        pytest.skip(f"user nobody cannot run this checkout's toil-mesos: {done.stderr[-300:]}")
    assert done.returncode == 2
    assert message in done.stderr
    assert not Path(target).exists()


# --- busy work dirs, stale records, failures midway -----------------------------------------------


def test_busy_work_dir_is_refused_and_the_running_cluster_is_untouched(work_dir: Path) -> None:
    up(work_dir, fakes(agents=2))
    refs = recorded_pids(work_dir)
    before = (work_dir / CLUSTER_FILE).read_text()
    try:
        done = cli("cluster", "up", "--work-dir", str(work_dir))
        assert done.returncode == 2
        assert (
            f"the work dir is busy: {work_dir / CLUSTER_FILE} records a running cluster"
            in done.stderr
        )
        assert "cluster down" in done.stderr
        assert (work_dir / CLUSTER_FILE).read_text() == before
        assert all(r.running() for r in refs)
    finally:
        down(work_dir)
    assert_nothing_left(work_dir, refs)


def test_a_minicluster_holds_its_work_dir(work_dir: Path) -> None:
    with fake_mini(work_dir):
        done = cli("cluster", "up", "--work-dir", str(work_dir))
        assert done.returncode == 2
        assert "is working on" in done.stderr


def _executor_env_flags(cluster: Any) -> list[dict[str, str]]:
    flags = []
    for agent in (d for d in cluster.record.daemons if d.role == "agent"):
        argv = list(agent.argv)
        flag = argv.index("--executor-environment-variables")
        flags.append(json.loads(argv[flag + 1]))
    return flags


def test_executor_env_is_added_to_every_agents_flag(work_dir: Path) -> None:
    variables = {"TOIL_MESOS_APPLIANCE": "toil-mesos:dev", "LANG": "C.UTF-8"}
    with fake_mini(work_dir, agents=2, executor_env=variables) as cluster:
        flags = _executor_env_flags(cluster)
        refs = [d.process for d in cluster.record.daemons]
    assert len(flags) == 2
    for index, flag in enumerate(flags):
        cache = flag.pop("TOIL_MESOS_BUNDLE_CACHE")
        assert flag == variables
        assert Path(cache) == work_dir / "agents" / str(index) / "bundle-cache"
    assert_nothing_left(work_dir, refs)


def test_each_agent_stages_bundles_in_its_own_work_dir(work_dir: Path) -> None:
    mine = {"TOIL_MESOS_BUNDLE_CACHE": "/srv/bundles"}
    with fake_mini(work_dir, agents=2) as cluster:
        caches = [flag["TOIL_MESOS_BUNDLE_CACHE"] for flag in _executor_env_flags(cluster)]
        refs = [d.process for d in cluster.record.daemons]
    assert len(set(caches)) == 2
    assert all(Path(c).is_relative_to(work_dir) for c in caches)
    assert_nothing_left(work_dir, refs)
    with fake_mini(work_dir, agents=1, executor_env=mine) as cluster:
        assert _executor_env_flags(cluster) == [mine]  # the user's choice wins


def test_stale_record_of_a_dead_cluster_is_cleaned_up(work_dir: Path) -> None:
    up(work_dir, fakes())
    old = recorded_pids(work_dir)
    for ref in old:
        ref.send(signal.SIGKILL)
        assert ref.wait(30)
    record = up(work_dir, fakes())
    assert record.master_pid not in {r.pid for r in old}
    refs = recorded_pids(work_dir)
    assert all(r.running() for r in refs)
    down(work_dir)
    assert_nothing_left(work_dir, refs)


def _failing_cluster(work_dir: Path, **options: Any) -> Cluster:
    return Cluster(work_dir, fakes(**options))


def test_agent_exiting_before_ready_stops_everything(work_dir: Path) -> None:
    cluster = _failing_cluster(work_dir, agents=2, agent_args=("--fake-exit-before-ready", "1"))
    with pytest.raises(ClusterError, match=r"agent 1 exited with status 3 before it was ready"):
        cluster.start()
    assert cluster.master is not None and cluster.master.process is None
    assert_nothing_left(work_dir, [])
    assert not (work_dir / "run").exists()
    log = (work_dir / "logs" / "agent-1.log").read_text()
    assert "failing on purpose" in log  # logs are kept for the post-mortem


@needs_netns
def test_failure_midway_removes_the_network_it_made(work_dir: Path) -> None:
    before = set(link_names())
    cluster = _failing_cluster(
        work_dir, agents=2, netns=True, agent_args=("--fake-exit-before-ready", "0")
    )
    with pytest.raises(ClusterError, match="agent 0 exited"):
        cluster.start()
    assert_nothing_left(work_dir, [], cluster.cluster_id)
    assert set(link_names()) == before


def test_master_dying_while_agents_start_is_reported_as_such(work_dir: Path) -> None:
    cluster = _failing_cluster(
        work_dir,
        master_args=("--fake-exit-on-register",),
        agent_args=("--fake-never-ready",),
    )
    with pytest.raises(ClusterError, match=r"master exited with status 4 while agent 0 started"):
        cluster.start()
    assert_nothing_left(work_dir, [])


def test_daemon_never_ready_times_out_with_its_log(work_dir: Path) -> None:
    cluster = _failing_cluster(work_dir, agent_args=("--fake-never-ready",), ready_timeout=2.0)
    with pytest.raises(ClusterError, match=r"agent 0 not ready after 2 s") as caught:
        cluster.start()
    assert f"see {work_dir / 'logs' / 'agent-0.log'}" in str(caught.value)
    assert_nothing_left(work_dir, [])


def test_ready_file_naming_another_pid_is_refused(work_dir: Path) -> None:
    cluster = _failing_cluster(work_dir, agent_args=("--fake-wrong-pid",))
    with pytest.raises(ClusterError, match=r"names pid 1, but the process started is"):
        cluster.start()
    assert_nothing_left(work_dir, [])


def test_daemon_ignoring_sigterm_is_killed_after_the_timeout(work_dir: Path) -> None:
    with fake_mini(work_dir, agent_args=["--fake-ignore-sigterm"], stop_timeout=0.5) as cluster:
        refs = [r for r in map(ProcessRef.of, [a.pid for a in cluster.agents]) if r]
    assert_nothing_left(work_dir, refs)


# --- status and down -----------------------------------------------------------------------------


def test_status_reports_alive_and_dead_daemons(work_dir: Path) -> None:
    record = up(work_dir, fakes(agents=2))
    refs = recorded_pids(work_dir)
    assert record.to_json() == json.loads((work_dir / CLUSTER_FILE).read_text())
    assert read_record(work_dir) == record
    try:
        done = cli("cluster", "status", "--work-dir", str(work_dir))
        assert done.returncode == 0, done.stderr
        assert f"master    {record.master}" in done.stdout
        assert done.stdout.count("alive") == 3
        assert "master /state: 2 agents registered" in done.stdout
        as_json = json.loads(cli("cluster", "status", "--work-dir", str(work_dir), "--json").stdout)
        assert as_json["healthy"] is True and as_json["cluster"]["master"] == record.master

        agent = ProcessRef(record.agents[1].pid, refs[2].start_time)
        assert agent.send(signal.SIGKILL) and agent.wait(30)
        done = cli("cluster", "status", "--work-dir", str(work_dir))
        assert done.returncode == 1
        assert f"pid {record.agents[1].pid}" in done.stdout and "DEAD" in done.stdout
    finally:
        down(work_dir)
    assert_nothing_left(work_dir, refs)


def test_down_without_a_cluster_succeeds_with_a_message(work_dir: Path) -> None:
    done = cli("cluster", "down", "--work-dir", str(work_dir))
    assert done.returncode == 0
    assert f"no cluster in {work_dir}" in done.stdout
    done = cli("cluster", "status", "--work-dir", str(work_dir))
    assert done.returncode == 1 and "no cluster" in done.stderr


def test_down_never_signals_a_pid_that_is_not_the_recorded_process(work_dir: Path) -> None:
    up(work_dir, fakes())
    refs = recorded_pids(work_dir)
    data = json.loads((work_dir / CLUSTER_FILE).read_text())
    me = ProcessRef.of(os.getpid())
    assert me is not None
    # Pretend the master's pid was reused by this test process: same pid, other start time.
    data["master_pid"] = me.pid
    data["daemons"][0].update(pid=me.pid, start_time=me.start_time + 1)
    (work_dir / CLUSTER_FILE).write_text(json.dumps(data))
    done = cli("cluster", "down", "--work-dir", str(work_dir))
    assert done.returncode == 0
    assert "stopped master" not in done.stdout  # and we are still alive to check it
    assert not refs[1].running()
    master = refs[0]
    assert master.running()  # the real master was not recorded any more: stop it ourselves
    master.send(signal.SIGTERM)
    assert master.wait(30)
    assert_nothing_left(work_dir, refs)


# --- the real daemons, end to end ----------------------------------------------------------------


def _check_schema(data: dict[str, object]) -> None:
    assert {"master", "master_pid", "agents"} <= set(data)
    assert isinstance(data["master"], str) and data["master"].count(":") == 1
    assert isinstance(data["master_pid"], int)
    agents = data["agents"]
    assert isinstance(agents, list)
    for agent in agents:
        assert set(agent) == {"id", "address", "pid"}
        assert isinstance(agent["id"], str) and agent["id"]
        assert isinstance(agent["address"], str) and agent["address"].count(":") == 1
        assert isinstance(agent["pid"], int)


@needs_real_daemons
def test_cluster_up_status_down_with_real_daemons(work_dir: Path) -> None:
    done = cli("cluster", "up", "--work-dir", str(work_dir), "--agents", "2")
    assert done.returncode == 0, done.stderr
    try:
        data = json.loads((work_dir / CLUSTER_FILE).read_text())
        _check_schema(data)
        assert done.stdout == f"{data['master']}\n"
        assert len(data["agents"]) == 2
        refs = recorded_pids(work_dir)
        assert all(r.running() for r in refs)
        for agent in data["agents"]:
            cmdline = Path(f"/proc/{agent['pid']}/cmdline").read_bytes().split(b"\0")
            assert b"toil_mesos.cluster.agent" in cmdline  # the pid is the agent itself
        state = get_json(f"http://{data['master']}/state")
        assert isinstance(state, dict)
        registered = {s["id"] for s in state["slaves"]}
        assert registered == {a["id"] for a in data["agents"]}
        status = cli("cluster", "status", "--work-dir", str(work_dir))
        assert status.returncode == 0, status.stdout + status.stderr
        assert "2 agents registered" in status.stdout
    finally:
        stopped = cli("cluster", "down", "--work-dir", str(work_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped agent 0" in stopped.stdout and "stopped master" in stopped.stdout
    assert_nothing_left(work_dir, refs, data["cluster_id"])
    again = cli("cluster", "down", "--work-dir", str(work_dir))
    assert again.returncode == 0 and "no cluster" in again.stdout


AGENT_VIEW = """
import json, os, socket, sys
hidden, host, port, loopback_port, host_tmp_file = sys.argv[1:]
def reach(address):
    try:
        socket.create_connection(address, timeout=5).close()
        return "reachable"
    except OSError as exc:
        return type(exc).__name__
print(json.dumps({"hidden": os.listdir(hidden), "tmp": os.path.exists(host_tmp_file),
                  "master": reach((host, int(port))),
                  "host_loopback": reach(("127.0.0.1", int(loopback_port)))}))
"""


@needs_real_daemons
@needs_netns
def test_netns_cluster_with_real_daemons_advertises_the_bridge_address(work_dir: Path) -> None:
    hidden = work_dir / "leader"
    hidden.mkdir()
    (hidden / "workflow.py").write_text("the leader's code\n")
    before = set(link_names())
    done = cli(
        "cluster",
        "up",
        "--work-dir",
        str(work_dir / "c"),
        "--agents",
        "2",
        "--netns",
        "--hide",
        str(hidden),
    )
    assert done.returncode == 0, done.stderr
    data = json.loads((work_dir / "c" / CLUSTER_FILE).read_text())
    refs = recorded_pids(work_dir / "c")
    try:
        _check_schema(data)
        network = data["network"]
        assert data["master"].rpartition(":")[0] == network["host_address"]
        for agent, address in zip(data["agents"], network["addresses"], strict=True):
            assert agent["address"].rpartition(":")[0] == address
        state = get_json(f"http://{data['master']}/state")
        assert isinstance(state, dict) and len(state["slaves"]) == 2
        # Seen from inside agent 0's own namespaces: the hidden path is empty, /tmp is fresh,
        # the master answers on the bridge, and the host's loopback is out of reach.
        host, port = data["master"].rsplit(":", 1)
        with (
            tcp_server("127.0.0.1") as loopback_port,
            tempfile.NamedTemporaryFile(dir="/tmp") as host_tmp,
        ):
            probe = subprocess.run(
                [
                    "nsenter",
                    f"--target={data['agents'][0]['pid']}",
                    "--net",
                    "--mount",
                    "--",
                    sys.executable,
                    "-c",
                    AGENT_VIEW,
                    str(hidden),
                    host,
                    port,
                    str(loopback_port),
                    host_tmp.name,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
        assert json.loads(probe.stdout) == {
            "hidden": [],
            "tmp": False,
            "master": "reachable",
            "host_loopback": "ConnectionRefusedError",
        }
    finally:
        stopped = cli("cluster", "down", "--work-dir", str(work_dir / "c"))
    assert stopped.returncode == 0, stopped.stderr
    assert f"removed link {network['host_link']}" in stopped.stdout
    assert_nothing_left(work_dir / "c", refs, data["cluster_id"])
    assert set(link_names()) == before


@needs_real_daemons
def test_minicluster_restarts_an_agent_and_the_master(work_dir: Path) -> None:
    with MiniCluster(work_dir, agents=1) as cluster:
        master, agent = cluster.master, cluster.agents[0]
        cluster.kill_agent(0)
        assert not cluster.running(0)
        cluster.restart_agent(0)
        assert cluster.running(0) and cluster.agents[0].pid != agent.pid
        cluster.restart_master()
        assert cluster.master == master and cluster.running("master")
        record = read_record(work_dir)
        assert record is not None and record.master_pid == cluster.master_pid
        refs = [r for r in map(ProcessRef.of, [cluster.master_pid, cluster.agents[0].pid]) if r]
    assert_nothing_left(work_dir, refs)
