"""The agents' isolation primitives: private mount namespaces and the cluster's own network.

Each test that needs root and ``unshare``/``ip`` skips with the machine's own reason when it
cannot run here; none is silently weakened. Traffic goes only to loopback and to addresses of
namespaces these tests create.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from launcher_helpers import (
    FAKE_AGENT,
    FAKE_MASTER,
    get_json,
    link_names,
    machine_cannot_isolate,
    machine_cannot_netns,
    mounts_mentioning,
    netns_names,
    tcp_server,
)

from toil_mesos.cluster._cluster_options import needed_under_tmp as _needed_under_tmp
from toil_mesos.cluster._isolation import (
    NETNS_PREFIX,
    IsolationError,
    MountIsolation,
    Network,
    create_network,
    mount_namespace_of,
    pids_in_mount_namespace,
    resolve_hide_paths,
)
from toil_mesos.cluster.launcher import ClusterOptions, ProcessRef
from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir

needs_isolation = pytest.mark.skipif(
    machine_cannot_isolate() is not None,
    reason=f"no private mount namespaces here: {machine_cannot_isolate()}",
)
needs_netns = pytest.mark.skipif(
    machine_cannot_netns() is not None,
    reason=f"no network namespaces here: {machine_cannot_netns()}",
)

PROBE = textwrap.dedent("""
    import json, os, sys
    secret_dir, secret_file, host_tmp_file = sys.argv[1:4]
    out = {"hidden_listing": os.listdir(secret_dir), "tmp_listing": os.listdir("/tmp"),
           "host_tmp_file_visible": os.path.exists(host_tmp_file), "cwd": os.getcwd()}
    try:
        out["secret"] = open(secret_file).read()
    except OSError as exc:
        out["secret_error"] = exc.strerror
    try:
        open(os.path.join(secret_dir, "new"), "w").close()
        out["write_error"] = None
    except OSError as exc:
        out["write_error"] = exc.strerror
    print(json.dumps(out))
""")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    with cluster_work_dir("toil-mesos-isolation-") as path:
        yield path


# --- hide-path checks (no processes) ------------------------------------------------------------


def test_hide_path_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(IsolationError, match=r"--hide .*missing.*no such file"):
        resolve_hide_paths([missing])


def test_hiding_root_is_refused() -> None:
    with pytest.raises(IsolationError, match="root directory"):
        resolve_hide_paths(["/"])


def test_nested_hide_paths_collapse_into_parent(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert resolve_hide_paths([tmp_path / "a" / "b", tmp_path / "a", tmp_path / "a"]) == (
        (tmp_path / "a").resolve(),
    )


def test_isolation_script_covers_hidden_paths_then_tmp(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    hidden = Path("/usr/lib")  # any directory outside /tmp: the script is only generated here
    script = MountIsolation(hide=(hidden, tmp_path / "f")).script()
    lines = script.splitlines()
    assert lines[0] == "set -e" and lines[-1] == 'exec "$@"'
    assert any(line.endswith(f"toil-mesos-hidden {hidden}") for line in lines)
    # The agents' fresh /tmp covers tmp_path, so no mount is attempted for it.
    assert not any(str(tmp_path) in line for line in lines)
    assert lines[-4].endswith("toil-mesos-tmp /tmp")
    assert lines.index("cd /") == len(lines) - 2


def test_network_plan_names_and_addresses() -> None:
    network = Network.plan("abc123", 3, ipaddress.IPv4Network("10.213.7.0/24"))
    assert network.hub == "toil-mesos-abc123-hub"
    assert network.namespaces == tuple(f"toil-mesos-abc123-a{i}" for i in range(3))
    assert network.host_link == "tmh-abc123" and len(network.host_link) <= 15
    assert network.host_address == "10.213.7.1"
    assert network.addresses == ("10.213.7.10", "10.213.7.11", "10.213.7.12")
    assert Network.from_json(network.to_json()) == network


@pytest.mark.parametrize(
    ("field", "value"),
    [("hub", "some-other-netns"), ("namespaces", ["toil-mesos-ffffff-a0"]), ("host_link", "eth0")],
)
def test_network_record_naming_foreign_objects_is_refused(field: str, value: object) -> None:
    # A damaged cluster.json must never make `cluster down` delete what it did not make.
    data = Network.plan("abc123", 1, ipaddress.IPv4Network("10.213.7.0/24")).to_json()
    data[field] = value
    with pytest.raises(IsolationError, match="foreign"):
        Network.from_json(data)


# --- mount namespaces ----------------------------------------------------------------------------


def kept_under_tmp(keep: tuple[Path, ...]) -> list[str]:
    """The names in an agent's fresh /tmp: the top directories of what it had to keep."""
    return sorted({p.relative_to("/tmp").parts[0] for p in keep})


@pytest.mark.integration
@needs_isolation
def test_agent_namespace_hides_paths_and_has_empty_tmp(shared_dir: Path) -> None:
    secret_dir = shared_dir / "leader-checkout"
    secret_dir.mkdir()
    secret_file = secret_dir / "workflow.py"
    secret_file.write_text("the leader's code")
    # When this checkout lives under /tmp (a CI clone), Python itself must stay visible.
    keep = _needed_under_tmp(ClusterOptions())
    staging = shared_dir / "staging"
    staging.mkdir()
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="host-only-") as host_tmp:
        before = mounts_mentioning("toil-mesos")
        isolation = MountIsolation(hide=resolve_hide_paths([secret_dir]), keep=keep,
                                   staging=staging if keep else None)
        argv = isolation.wrap(
            [sys.executable, "-c", PROBE, str(secret_dir), str(secret_file), host_tmp.name]
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
        seen = json.loads(done.stdout)

        assert seen["hidden_listing"] == []
        assert "secret" not in seen and seen["secret_error"] == "No such file or directory"
        assert seen["write_error"] == "Read-only file system"
        assert seen["tmp_listing"] == kept_under_tmp(keep)
        assert seen["host_tmp_file_visible"] is False
        assert seen["cwd"] == "/"
        # The host's view is unchanged: same files, no mount leaked out of the namespace.
        assert secret_file.read_text() == "the leader's code"
        assert sorted(p.name for p in secret_dir.iterdir()) == ["workflow.py"]
        assert Path(host_tmp.name).exists()
        assert mounts_mentioning("toil-mesos") == before


@pytest.mark.integration
@needs_isolation
def test_hidden_file_reads_empty_and_is_read_only(shared_dir: Path) -> None:
    secret = shared_dir / "token"
    secret.write_text("s3cret")
    argv = MountIsolation(hide=resolve_hide_paths([secret])).wrap(
        ["/bin/sh", "-c", f"cat {secret}; echo x > {secret} || echo refused"]
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == "refused\n"
    assert secret.read_text() == "s3cret"


@pytest.mark.integration
@needs_isolation
def test_leftover_search_refuses_the_hosts_namespace() -> None:
    own = mount_namespace_of(os.getpid())
    assert own is not None
    with pytest.raises(IsolationError, match="host's"):
        pids_in_mount_namespace(own)


@pytest.mark.integration
@needs_isolation
def test_executor_left_behind_by_agent_is_stopped_at_teardown(shared_dir: Path) -> None:
    with MiniCluster(
        shared_dir,
        master_command=FAKE_MASTER,
        agent_command=FAKE_AGENT,
        agent_args=["--fake-leave-child"],
    ) as cluster:
        inode = mount_namespace_of(cluster.agents[0].pid)
        assert inode is not None and inode != mount_namespace_of(os.getpid())
        inside = {pid: ProcessRef.of(pid) for pid in pids_in_mount_namespace(inode)}
        refs = {pid: r for pid, r in inside.items() if r is not None}
        assert len(refs) == 3  # the agent, its "executor" and a stranger
        stranger = next(pid for pid in refs if b"301" in Path(f"/proc/{pid}/cmdline").read_bytes())
        cluster.kill_agent(0)  # a crash: the executor keeps running
        assert any(r.running() for r in refs.values())
    try:
        assert [pid for pid, r in refs.items() if r.running()] == [stranger]
    finally:
        os.kill(stranger, signal.SIGKILL)


# --- network namespaces --------------------------------------------------------------------------

NETNS_PROBE = textwrap.dedent("""
    import socket, sys
    for host, port in zip(sys.argv[1::2], sys.argv[2::2]):
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            print(host, "reachable")
        except OSError as exc:
            print(host, "unreachable", type(exc).__name__)
""")


@pytest.mark.integration
@needs_netns
def test_netns_agents_reach_the_host_only_through_the_bridge() -> None:
    cluster_id = secrets.token_hex(3)
    forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    network = create_network(cluster_id, 2)
    try:
        assert set(network.namespaces) | {network.hub} <= set(netns_names())
        assert network.host_link in link_names()
        assert network.host_address.startswith("10.213.")
        for name, address in zip(network.namespaces, network.addresses, strict=True):
            shown = subprocess.run(
                ["ip", "-n", name, "-o", "addr", "show"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            assert f"inet {address}/24" in shown
            assert "inet 127.0.0.1/8" in shown  # lo is up
        with (
            tcp_server("127.0.0.1") as loopback_port,
            tcp_server(network.host_address) as bridge_port,
        ):
            argv = network.wrap(
                0,
                [
                    sys.executable,
                    "-c",
                    NETNS_PROBE,
                    "127.0.0.1",
                    str(loopback_port),
                    network.host_address,
                    str(bridge_port),
                ],
            )
            out = subprocess.run(
                argv, capture_output=True, text=True, timeout=60, check=True
            ).stdout.splitlines()
        assert out[0].startswith("127.0.0.1 unreachable")
        assert out[1] == f"{network.host_address} reachable"
        # The agents' own addresses are theirs: agent 1 listens, agent 0 connects to it.
        with subprocess.Popen(
            network.wrap(
                1,
                [
                    sys.executable,
                    "-c",
                    "import socket,sys; s=socket.create_server((sys.argv[1], 0));"
                    "print(s.getsockname()[1], flush=True); s.accept()",
                    network.addresses[1],
                ],
            ),
            stdout=subprocess.PIPE,
            text=True,
        ) as server:
            try:
                assert server.stdout is not None
                port = server.stdout.readline().strip()
                probe = network.wrap(
                    0, [sys.executable, "-c", NETNS_PROBE, network.addresses[1], port]
                )
                out = subprocess.run(
                    probe, capture_output=True, text=True, timeout=60, check=True
                ).stdout.splitlines()
                assert out == [f"{network.addresses[1]} reachable"]
                server.wait(timeout=30)
            finally:
                server.kill()  # bounds the wait in Popen.__exit__ if an assertion failed
    finally:
        network.destroy()
    assert not [n for n in netns_names() if n.startswith(f"{NETNS_PREFIX}{cluster_id}")]
    assert network.host_link not in link_names()
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forwarding
    assert network.destroy() == []  # idempotent


@pytest.mark.integration
@needs_netns
def test_netns_cluster_runs_each_agent_in_its_namespace(shared_dir: Path) -> None:
    hidden = shared_dir / "hidden"
    hidden.mkdir()
    before_links = set(link_names())
    with MiniCluster(
        shared_dir,
        agents=2,
        netns=True,
        hide=[hidden],
        master_command=FAKE_MASTER,
        agent_command=FAKE_AGENT,
    ) as cluster:
        network = cluster.network
        assert network is not None
        assert cluster.master.rpartition(":")[0] == network.host_address
        for i, agent in enumerate(cluster.agents):
            assert agent.address.rpartition(":")[0] == network.addresses[i]
            assert (
                os.stat(f"/proc/{agent.pid}/ns/net").st_ino
                == os.stat(f"/run/netns/{network.namespaces[i]}").st_ino
            )
            assert mount_namespace_of(agent.pid) != mount_namespace_of(os.getpid())
        # The stand-in agents registered with the master over the bridge.
        state = get_json(f"http://{cluster.master}/state")
        assert isinstance(state, dict)
        assert sorted(s["id"] for s in state["slaves"]) == sorted(a.id for a in cluster.agents)
        pids = [cluster.master_pid, *(a.pid for a in cluster.agents)]
        refs = [r for r in map(ProcessRef.of, pids) if r is not None]
    assert not any(r.running() for r in refs)
    assert not [n for n in netns_names() if network.cluster_id in n]
    assert set(link_names()) == before_links
    assert mounts_mentioning(str(shared_dir)) == []


@pytest.mark.integration
@needs_netns
def test_parallel_netns_clusters_do_not_collide() -> None:
    with (
        cluster_work_dir() as one,
        cluster_work_dir() as two,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        clusters = [
            MiniCluster(d, netns=True, master_command=FAKE_MASTER, agent_command=FAKE_AGENT)
            for d in (one, two)
        ]
        try:
            for started in [pool.submit(c.start) for c in clusters]:
                started.result(timeout=120)
            networks = [c.network for c in clusters]
            assert networks[0] is not None and networks[1] is not None
            assert networks[0].subnet != networks[1].subnet
            assert networks[0].hub != networks[1].hub
            for cluster in clusters:
                state = get_json(f"http://{cluster.master}/state")
                assert isinstance(state, dict)
                assert [s["id"] for s in state["slaves"]] == [cluster.agents[0].id]
        finally:
            for cluster in clusters:
                cluster.close()
    for network in networks:
        assert network is not None
        assert not [n for n in netns_names() if network.cluster_id in n]
        assert network.host_link not in link_names()


@pytest.mark.integration
@needs_isolation
def test_agent_code_under_tmp_stays_visible_read_only_in_the_fresh_tmp(shared_dir: Path) -> None:
    # As when CI clones the checkout and its virtualenv under /tmp: the agents' own code
    # there is bound back into their fresh /tmp, read-only, and nothing else of /tmp is.
    with (
        tempfile.TemporaryDirectory(dir="/tmp", prefix="toil-mesos-code-") as code,
        tempfile.NamedTemporaryFile(dir="/tmp", prefix="host-only-") as marker,
    ):
        script = Path(code) / "fake_daemon.py"
        shutil.copy(FAKE_AGENT[1], script)
        agent = (sys.executable, str(script), "agent")
        with MiniCluster(shared_dir, master_command=FAKE_MASTER, agent_command=agent) as cluster:
            agent_tmp = Path(f"/proc/{cluster.agents[0].pid}/root/tmp")
            expected = sorted({Path(code).name, *kept_under_tmp(_needed_under_tmp(
                ClusterOptions()))})
            assert sorted(p.name for p in agent_tmp.iterdir()) == expected
            assert not (agent_tmp / Path(marker.name).name).exists()
            with pytest.raises(OSError, match="Read-only file system"):
                (agent_tmp / Path(code).name / script.name).write_text("x")
            record = cluster.record
            assert record.isolation is not None and script in record.isolation.keep
        assert script.read_text() == Path(FAKE_AGENT[1]).read_text()
        assert mounts_mentioning(str(shared_dir)) == []
