"""The mini-cluster's GPUs without sockets: offers, device assignment, options, flags."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from test_cluster_master_state import Master, agent_info, framework_info, scalar

from toil_mesos.cluster._agent_config import build_parser, config_from_args
from toil_mesos.cluster._agent_gpus import GpuDevices, gpus_in
from toil_mesos.cluster._cluster_options import ClusterError, ClusterOptions
from toil_mesos.cluster._resources import InvalidFlagError
from toil_mesos.mesos._gpu_devices import GPU_DEVICES_LABEL, devices_of, task_gpus, with_devices

# ---- the master offers GPU agents only to frameworks that declare GPU_RESOURCES -------------


def register(master: Master, *, gpus: float) -> str:
    info = agent_info()
    if gpus:
        info["resources"] = [*info["resources"], scalar("gpus", gpus)]
    body = {"type": "REGISTER",
            "register": {"agent_info": info, "address": "127.0.0.1:5051", "executors": []}}
    return master.state.register_agent(body, now=master.now).stream_id


def offered(master: Master, stream: str) -> list[dict[str, Any]]:
    master.tick()
    return [o for event in master.take(stream, "OFFERS") for o in event["offers"]["offers"]]


def gpu_capable() -> dict[str, Any]:
    info = framework_info()
    info["capabilities"] = [*info["capabilities"], {"type": "GPU_RESOURCES"}]
    return info


def test_a_gpu_agent_is_not_offered_to_a_framework_without_gpu_resources() -> None:
    master = Master()
    register(master, gpus=2)
    stream = master.subscribe()
    assert offered(master, stream) == []


def test_a_gpu_agent_is_offered_with_its_gpus_to_a_gpu_framework() -> None:
    master = Master()
    register(master, gpus=2)
    stream = master.subscribe(gpu_capable())
    offers = offered(master, stream)
    assert len(offers) == 1
    gpus = [r["scalar"]["value"] for r in offers[0]["resources"] if r["name"] == "gpus"]
    assert gpus == [2.0]


def test_agents_without_gpus_are_offered_to_every_framework() -> None:
    master = Master()
    register(master, gpus=0)
    stream = master.subscribe()
    assert len(offered(master, stream)) == 1


# ---- the agent's devices --------------------------------------------------------------------


def test_devices_are_held_until_released_and_never_given_twice() -> None:
    devices = GpuDevices(3)
    assert devices.assign("a", 2) == [0, 1]
    assert devices.assign("a", 2) == [0, 1]  # the same task asking again gets the same
    assert devices.assign("b", 2) is None  # one left
    assert devices.assign("b", 1) == [2]
    devices.release("a")
    assert devices.free == [0, 1]
    assert devices.assign("c", 0) is None
    devices.release("unknown")
    assert devices.free == [0, 1]


def test_devices_of_a_recovered_task_are_held_and_freed_with_it() -> None:
    devices = GpuDevices(3)
    devices.hold("recovered", ["2", "0"])
    assert devices.free == [1]
    assert devices.assign("new", 2) is None
    devices.release("recovered")
    assert devices.assign("new", 2) == [0, 1]


def test_gpus_in_the_agents_resources() -> None:
    assert gpus_in([scalar("cpus", 2), scalar("gpus", 4)]) == 4
    assert gpus_in([scalar("cpus", 2)]) == 0


def test_a_task_label_names_its_devices_and_replaces_an_older_one() -> None:
    task = {"task_id": {"value": "t"}, "labels": {"labels": [
        {"key": "keep", "value": "1"}, {"key": GPU_DEVICES_LABEL, "value": "9"}]},
        "resources": [scalar("cpus", 1), scalar("gpus", 2)]}
    labelled = with_devices(task, [0, 1])
    assert devices_of(labelled) == ["0", "1"]
    assert {"key": "keep", "value": "1"} in labelled["labels"]["labels"]
    assert devices_of(task) == ["9"] and task_gpus(task) == 2
    assert devices_of({"task_id": {"value": "t"}}) is None


def agent_args(resources: str) -> argparse.Namespace:
    return build_parser().parse_args(
        ["--master", "127.0.0.1:5050", "--host", "127.0.0.1", "--port", "0",
         "--work-dir", "/nonexistent", "--ready-file",
         "/nonexistent/ready", "--resources", resources])


def test_the_agent_refuses_a_fraction_of_a_gpu() -> None:
    with pytest.raises(InvalidFlagError, match=r"--resources .*gpus:1\.5.*whole"):
        config_from_args(agent_args("cpus:2;gpus:1.5"))
    config = config_from_args(agent_args("cpus:2;gpus:2"))
    assert gpus_in(config.resources) == 2


# ---- cluster up --gpus ----------------------------------------------------------------------


def test_gpus_go_to_the_first_gpu_agents_only() -> None:
    options = ClusterOptions(agents=3, gpus=2, gpu_agents=2)
    options.validate()
    assert [r.endswith(";gpus:2") for r in map(options.resources, range(3))] \
        == [True, True, False]
    assert "gpus" not in ClusterOptions(agents=2).resources(0)
    assert options.to_json()["gpus"] == 2


@pytest.mark.parametrize(("options", "flag"), [
    (ClusterOptions(agents=2, gpus=-1), "--gpus"),
    (ClusterOptions(agents=2, gpus=1, gpu_agents=3), "--gpu-agents"),
    (ClusterOptions(agents=2, gpus=1, gpu_agents=0), "--gpu-agents"),
    (ClusterOptions(agents=2, gpu_agents=2), "--gpu-agents .*--gpus"),
])
def test_bad_gpu_options_name_the_option(options: ClusterOptions, flag: str) -> None:
    with pytest.raises(ClusterError, match=flag):
        options.validate()

