"""``cluster up --masters N --zk``: the options' checks, the record, the masters' roles.

All without processes: what the launcher refuses (each message naming the option), what
``cluster.json`` keeps about several masters and their endpoint (and how an older record
without them reads), and how ``cluster status`` words each master's role.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toil_mesos.cluster._cleanup import _work_dir_of
from toil_mesos.cluster._cluster_masters import master_argv
from toil_mesos.cluster._cluster_options import ClusterError, ClusterOptions
from toil_mesos.cluster._cluster_record import ClusterRecord, DaemonRecord
from toil_mesos.cluster._zookeeper import zookeeper_available, zookeeper_command
from toil_mesos.cluster.launcher import ClusterStatus, master_addresses


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"masters": 0}, "--masters must be at least 1, not 0"),
        ({"masters": 3}, "--masters 3 needs ZooKeeper to elect the leader: add --zk"),
        ({"masters": 2, "zk": "127.0.0.1:2181"}, "expected zk://HOST:PORT[,...]/PATH"),
        ({"zk": "zk://"}, "--zk"),
        ({"zk": "zk://127.0.0.1:2181/mesos", "start_zookeeper": True}, "not both"),
        ({"zk": "zk://127.0.0.1:2181/mesos", "zk_session_timeout": 0.0},
         "--zk-session-timeout must be positive"),
        ({"zk": "zk://localhost:2181/mesos", "netns": True}, "is on loopback, which agents"),
    ],
)
def test_bad_master_options_are_named(options: dict[str, object], message: str) -> None:
    with pytest.raises(ClusterError) as info:
        ClusterOptions(**options).validate()  # type: ignore[arg-type]
    assert message in str(info.value)


def test_one_master_needs_no_zookeeper_and_several_accept_a_url() -> None:
    ClusterOptions(masters=1).validate()
    ClusterOptions(masters=3, zk="zk://127.0.0.1:2181,127.0.0.1:2182/mesos").validate()
    assert ClusterOptions(masters=3, zk="zk://h:1/p").uses_zookeeper
    assert not ClusterOptions().uses_zookeeper


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it as JSON"),
        ("{not json", "cannot read it as JSON"),
        ('{"credentials": []}', "expected a non-empty 'credentials' list"),
        ('{"credentials": [{"principal": "toil"}]}', "entry 0 needs a string"),
    ],
)
def test_bad_credentials_file_is_named(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "credentials.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ClusterError) as info:
        ClusterOptions(credentials=path).validate()
    assert f"--credentials {path}" in str(info.value)
    assert message in str(info.value)


def test_good_credentials_file_passes(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"credentials": [{"principal": "toil", "secret": "s"}]}))
    ClusterOptions(credentials=path).validate()


def _daemon(role: str, index: int, pid: int, argv: tuple[str, ...] = ("x",)) -> DaemonRecord:
    return DaemonRecord(role=role, index=index, pid=pid, start_time=1, first_start_time=1,
                        argv=argv, log="l", ready_file="r")


def _ha_record() -> ClusterRecord:
    return ClusterRecord(
        master="127.0.0.1:101", master_pid=11, agents=(), cluster_id="c", work_dir="/w",
        endpoint="zk://127.0.0.1:2181/mesos",
        masters=("127.0.0.1:101", "127.0.0.1:102", "127.0.0.1:103"),
        daemons=(_daemon("zookeeper", 0, 10), *(_daemon("master", i, 10 + i) for i in (1, 2, 3))),
        isolation=None, network=None,
    )


def test_the_record_keeps_every_master_and_the_endpoint() -> None:
    record = _ha_record()
    data = json.loads(json.dumps(record.to_json()))
    assert list(data)[:5] == ["master", "master_pid", "agents", "endpoint", "masters"]
    assert ClusterRecord.from_json(data) == record
    assert master_addresses(record) == {
        "master 1": "127.0.0.1:101", "master 2": "127.0.0.1:102", "master 3": "127.0.0.1:103",
    }
    assert [d.name for d in record.daemons] == ["zookeeper", "master 1", "master 2", "master 3"]


def test_a_record_from_before_several_masters_reads_as_one() -> None:
    data = _ha_record().to_json()
    for key in ("endpoint", "masters"):
        del data[key]
    data["daemons"] = [_daemon("master", 0, 11).to_json()]
    record = ClusterRecord.from_json(data)
    assert (record.endpoint, record.masters) == ("127.0.0.1:101", ("127.0.0.1:101",))
    assert master_addresses(record) == {"master": "127.0.0.1:101"}


def _status(leader: str | None, running: dict[str, bool]) -> ClusterStatus:
    return ClusterStatus(record=_ha_record(), running=running, state=None, state_error=None,
                         leader=leader, leader_error=None if leader else "no master leads")


def test_status_words_each_masters_role() -> None:
    alive = {"zookeeper": True, "master 1": True, "master 2": True, "master 3": True}
    found = _status("master 2", alive)
    assert found.roles == {"master 1": "standby", "master 2": "leading", "master 3": "standby"}
    assert found.healthy
    found = _status("master 2", {**alive, "master 2": False})
    assert found.roles["master 2"] == "down (leading until its session expires)"
    assert not found.healthy
    found = _status("master 3", {**alive, "master 2": False})
    assert found.roles == {"master 1": "standby", "master 2": "down", "master 3": "leading"}
    assert not _status(None, alive).healthy  # everything runs, but nobody leads


def test_down_finds_zookeepers_data_dir_in_its_command_line(tmp_path: Path) -> None:
    if zookeeper_available() is not None:
        pytest.skip(str(zookeeper_available()))
    argv = zookeeper_command("127.0.0.1", 2181, tmp_path / "zk")
    assert _work_dir_of("zookeeper", argv) == tmp_path / "zk"
    assert _work_dir_of("zookeeper", ["java", "-cp", "x"]) is None
    assert _work_dir_of("master", ["m", "--work-dir", "/w/m"]) == Path("/w/m")


def test_master_command_lines(tmp_path: Path) -> None:
    secrets = tmp_path / "credentials.json"
    lone = master_argv(["m"], ClusterOptions(master_args=("--offer-interval", "0.5")),
                       host="127.0.0.1", work_dir=tmp_path / "w", ready=tmp_path / "r", zk=None)
    assert lone == ["m", "--host", "127.0.0.1", "--port", "0", "--work-dir", str(tmp_path / "w"),
                    "--ready-file", str(tmp_path / "r"), "--offer-interval", "0.5"]
    options = ClusterOptions(masters=3, start_zookeeper=True, zk_session_timeout=2.5,
                             credentials=secrets)
    elected = master_argv(["m"], options, host="10.0.0.1", work_dir=tmp_path, ready=tmp_path,
                          zk="zk://10.0.0.1:2181/mesos")
    assert elected[-6:] == ["--zk", "zk://10.0.0.1:2181/mesos", "--zk-session-timeout", "2.5",
                            "--credentials", str(secrets)]
