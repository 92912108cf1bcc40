"""--mesosEndpoint parsing and the pure choice of the leading master (ZooKeeper layout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toil_mesos.errors import RemoteProtocolError
from toil_mesos.mesos._master_detection import StaticMasters, leading_member, master_url_of
from toil_mesos.mesos._master_spec import (
    BadMasterSpec,
    MasterList,
    ZooKeeperMasters,
    parse_master_spec,
)


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("127.0.0.1:5050", ("http://127.0.0.1:5050",)),
        ("  m1:5051 ", ("http://m1:5051",)),
        ("m1", ("http://m1:5050",)),
        ("http://m1:5050", ("http://m1:5050",)),
        ("HTTPS://m1:8443/", ("https://m1:8443",)),
        ("https://m1", ("https://m1:5050",)),
        ("http://m1:5050/master/api/v1/scheduler", ("http://m1:5050",)),
        ("[::1]:5050", ("http://[::1]:5050",)),
        ("[fe80::1]", ("http://[fe80::1]:5050",)),
        ("m1:5050,m2:5051,https://m3:5052", ("http://m1:5050", "http://m2:5051", "https://m3:5052")),
        ("m1:5050, m2:5050 ,m1:5050", ("http://m1:5050", "http://m2:5050")),
    ],
)
def test_master_lists(text: str, urls: tuple[str, ...]) -> None:
    assert parse_master_spec(text) == MasterList(urls)


@pytest.mark.parametrize(
    ("text", "hosts", "path", "auth"),
    [
        ("zk://127.0.0.1:2181/mesos", "127.0.0.1:2181", "/mesos", None),
        ("zk://z1,z2:2182,z3:2183/mesos", "z1:2181,z2:2182,z3:2183", "/mesos", None),
        ("ZK://z1:2181/a/b/", "z1:2181", "/a/b", None),
        ("zk://alice:s%40cret@z1:2181,z2:2181/mesos", "z1:2181,z2:2181", "/mesos", "alice:s@cret"),
    ],
)
def test_zookeeper(text: str, hosts: str, path: str, auth: str | None) -> None:
    spec = parse_master_spec(text)
    assert isinstance(spec, ZooKeeperMasters)
    assert (spec.hosts, spec.path, spec.auth, spec.scheme) == (hosts, path, auth, "http")


def test_zookeeper_credentials_never_shown() -> None:
    spec = parse_master_spec("zk://alice:topsecret@z1:2181/mesos")
    assert "topsecret" not in repr(spec) and "topsecret" not in str(spec)
    with pytest.raises(BadMasterSpec) as caught:
        parse_master_spec("zk://alice:topsecret@z1:bad/mesos")
    assert "topsecret" not in str(caught.value)


def test_master_scheme_for_zookeeper_masters() -> None:
    spec = parse_master_spec("zk://z1/mesos", master_scheme="https")
    assert isinstance(spec, ZooKeeperMasters) and spec.scheme == "https"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("m1:", "no port"),
        ("m1:0", "1 to 65535"),
        ("m1:65536", "1 to 65535"),
        ("m1:http", "1 to 65535"),
        ("m1:5050,,m2:5050", "empty address"),
        ("ftp://m1:21", "scheme 'ftp'"),
        ("::1:5050", "IPv6 address in brackets"),
        ("[::1:5050", "unclosed IPv6"),
        ("zk://z1:2181", "znode path"),
        ("zk://z1:2181/", "znode path"),
        ("zk://z1:2181//mesos//x", "empty component"),
        ("zk://:2181/mesos", "no valid host"),
        ("zk://alice@z1/mesos", "USER:PASS"),
        ("m1:5050,zk://z1/mesos", "cannot be mixed"),
        ("user:pw@m1:5050", "--mesosPrincipal"),
    ],
)
def test_bad_input_names_the_option(text: str, why: str) -> None:
    with pytest.raises(BadMasterSpec) as caught:
        parse_master_spec(text)
    message = str(caught.value)
    assert message.startswith("--mesosEndpoint")
    assert why in message
    assert isinstance(caught.value, ValueError)


def test_static_masters_rotate_and_report_rounds() -> None:
    masters = StaticMasters(MasterList(("http://a:1", "http://b:2", "http://c:3")))
    got = [masters.next_master() for _ in range(4)]
    assert got == ["http://a:1", "http://b:2", "http://c:3", "http://a:1"]
    assert not masters.round_done()
    masters.succeeded()  # a answered: it is tried first next time
    assert masters.next_master() == "http://a:1"
    assert not masters.round_done()
    masters.next_master(), masters.next_master()
    assert masters.round_done()


def test_leading_member_is_lowest_sequence() -> None:
    assert leading_member(["json.info_0000000010", "json.info_0000000009"]) == (
        "json.info_0000000009"
    )
    assert leading_member(["log_replicas", "info_0000000000", "json.info_x"]) is None
    assert leading_member([]) is None


def test_transcript_tree_leader(transcripts: Path) -> None:
    """The recorded election: m1 (port 5050) leads with json.info_0000000000, then m2."""
    ha = transcripts / "ha"
    before = json.loads((ha / "zk_tree_initial.json").read_text())
    after = json.loads((ha / "zk_tree_after_kill.json").read_text())
    leader = leading_member(n["name"] for n in before)
    assert leader == "json.info_0000000000"
    data = (ha / "zk_nodes_initial" / f"{leader}.data.bin").read_bytes()
    assert master_url_of(data) == "http://127.0.0.1:5050"
    assert master_url_of(data, scheme="https") == "https://localhost:5050"
    survivor = leading_member(n["name"] for n in after)
    assert survivor == "json.info_0000000001"
    node = next(n for n in after if n["name"] == survivor)
    assert master_url_of(node["data_utf8"].encode()) == "http://127.0.0.1:5052"


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[1]", b"{}", b'{"address":{"ip":"1.2.3.4"}}', b'{"hostname":"m","port":0}'],
)
def test_bad_master_info(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        master_url_of(data)


def test_master_info_fallbacks() -> None:
    assert master_url_of(b'{"hostname":"m9","port":5055}') == "http://m9:5055"
    assert master_url_of(b'{"address":{"ip":"::1","port":1}}') == "http://[::1]:1"
