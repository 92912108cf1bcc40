"""``cluster up --reserve ROLE``: the agents' ``--resources`` reserve cpus, mem and disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from toil_mesos.cli import main as cli_main
from toil_mesos.cluster._agent_config import build_parser as agent_parser
from toil_mesos.cluster._agent_config import config_from_args
from toil_mesos.cluster._cluster_options import ClusterError, ClusterOptions
from toil_mesos.cluster._offers import ResourceBag


def test_reserve_makes_the_agents_resources_static_reservations() -> None:
    options = ClusterOptions(cpus=2, mem=1024, disk=100, reserve="toil")
    options.validate()
    text = options.resources(1)
    assert text == "cpus(toil):2;mem(toil):1024;disk(toil):100;ports:[31100-31199]"
    args = agent_parser().parse_args(["--master", "m:1", "--host", "127.0.0.1", "--port", "0",
                                      "--work-dir", "/w", "--ready-file", "/r",
                                      "--resources", text])
    total = ResourceBag.from_json(config_from_args(args).resources)
    assert (total.get("cpus", "toil"), total.get("cpus")) == (2.0, None)
    assert total.usable_by("*").scalar("mem") == 0.0
    assert options.to_json()["reserve"] == "toil"


def test_without_reserve_nothing_is_reserved() -> None:
    assert ClusterOptions(cpus=2, mem=1024, disk=100).resources(0) == (
        "cpus:2;mem:1024;disk:100;ports:[31000-31099]")


@pytest.mark.parametrize(("role", "fragment"), [
    ("a b", "whitespace"), ("-x", "'-'"), ("*", "reserves nothing"), ("", "empty")])
def test_bad_roles_name_the_option(role: str, fragment: str) -> None:
    with pytest.raises(ClusterError, match="--reserve") as info:
        ClusterOptions(reserve=role).validate()
    assert fragment in str(info.value)


def test_cluster_up_refuses_a_bad_role_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work_dir = tmp_path / "cluster"
    assert cli_main(["cluster", "up", "--work-dir", str(work_dir), "--reserve", "a b"]) == 2
    assert "--reserve 'a b' is not a Mesos role" in capsys.readouterr().err
    assert not work_dir.exists()
