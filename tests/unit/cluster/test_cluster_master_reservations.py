"""The mini-master and static reservations: who is offered what, and which tasks it refuses.

An agent started with ``--resources "cpus(toil):2;mem(toil):1024;..."`` reports reserved
resources; the master offers them only to frameworks in role ``toil`` (in the format each
framework speaks) and refuses, with TASK_ERROR, a task whose resources are not contained in
its offer, reservations and ``allocation_info`` included, as Mesos does.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from test_cluster_master_state import AGENT, PORTS, Master, framework_info, statuses

from toil_mesos.cluster._resources import parse_resources

REFINEMENT = {"type": "RESERVATION_REFINEMENT"}


def register(master: Master, resources: str) -> str:
    """An agent with the given ``--resources`` flag (ports added unreserved)."""
    body = {
        "type": "REGISTER",
        "register": {
            "agent_info": {"hostname": "localhost", "port": 5051,
                           "resources": [PORTS, *parse_resources(resources)]},
            "address": "127.0.0.1:5051",
            "executors": [],
        },
    }
    registered = master.state.register_agent(body, now=master.now)
    master.outputs += registered.outputs
    master.take(registered.stream_id)
    return registered.stream_id


def subscribe(master: Master, role: str, *, refinement: bool = True) -> str:
    info = framework_info(roles=[role])
    if refinement:
        info["capabilities"].append(REFINEMENT)
    stream = master.subscribe(info)
    master.take(stream, "SUBSCRIBED")
    return stream


def offers(master: Master, stream: str) -> list[dict[str, Any]]:
    master.tick()
    return [o for e in master.take(stream, "OFFERS") for o in e["offers"]["offers"]]


def scalars(offer: dict[str, Any]) -> dict[tuple[str, str], float]:
    out = {}
    for resource in offer["resources"]:
        if resource["type"] == "SCALAR":
            reservations = resource.get("reservations") or []
            role = reservations[-1]["role"] if reservations else resource.get("role", "*")
            out[resource["name"], role] = resource["scalar"]["value"]
    return out


def command_task(tid: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": tid, "task_id": {"value": tid}, "agent_id": {"value": AGENT},
            "resources": resources, "command": {"value": "true"}}


RESERVED_ONLY = "cpus(toil):2;mem(toil):1024;disk(toil):100"


class TestOffers:
    def test_reserved_resources_go_only_to_their_role(self) -> None:
        master = Master()
        register(master, RESERVED_ONLY)
        stream = subscribe(master, "*")
        # Only unreserved ports are left for role '*': below the minimum, nothing is offered.
        assert offers(master, stream) == []

    def test_their_role_gets_them_in_the_reservations_format(self) -> None:
        master = Master()
        register(master, RESERVED_ONLY)
        stream = subscribe(master, "toil")
        (offer,) = offers(master, stream)
        assert offer["allocation_info"] == {"role": "toil"}
        cpus = next(r for r in offer["resources"] if r["name"] == "cpus")
        assert cpus == {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0},
                        "reservations": [{"type": "STATIC", "role": "toil"}],
                        "allocation_info": {"role": "toil"}}
        ports = next(r for r in offer["resources"] if r["name"] == "ports")
        assert ports["role"] == "*" and ports["allocation_info"] == {"role": "toil"}

    def test_a_framework_without_refinement_gets_the_older_format(self) -> None:
        master = Master()
        register(master, RESERVED_ONLY)
        stream = subscribe(master, "toil", refinement=False)
        (offer,) = offers(master, stream)
        cpus = next(r for r in offer["resources"] if r["name"] == "cpus")
        assert cpus == {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0},
                        "role": "toil", "allocation_info": {"role": "toil"}}

    def test_child_roles_get_their_parents_reservations(self) -> None:
        master = Master()
        register(master, RESERVED_ONLY)
        stream = subscribe(master, "toil/batch")
        (offer,) = offers(master, stream)
        assert scalars(offer)["cpus", "toil"] == 2.0

    def test_reserved_and_unreserved_parts_go_to_different_frameworks(self) -> None:
        master = Master()
        register(master, "cpus:1;mem:512;cpus(toil):2;mem(toil):1024")
        anyone = subscribe(master, "*")
        toil = master.subscribe(framework_info(roles=["toil"]))  # the second framework
        master.take(toil, "SUBSCRIBED")
        master.tick()
        (for_anyone,) = [o for e in master.take(anyone, "OFFERS") for o in e["offers"]["offers"]]
        (for_toil,) = [o for e in master.take(toil, "OFFERS") for o in e["offers"]["offers"]]
        assert scalars(for_anyone) == {("cpus", "*"): 1.0, ("mem", "*"): 512.0}
        assert scalars(for_toil) == {("cpus", "toil"): 2.0, ("mem", "toil"): 1024.0}


class TestLaunch:
    @pytest.fixture
    def toil(self) -> tuple[Master, str, str, dict[str, Any]]:
        master = Master()
        agent_stream = register(master, RESERVED_ONLY)
        stream = subscribe(master, "toil")
        (offer,) = offers(master, stream)
        return master, agent_stream, stream, offer

    @staticmethod
    def cut(offer: dict[str, Any], **amounts: float) -> list[dict[str, Any]]:
        """The offer's own resources, with the values of *amounts*."""
        out = []
        for resource in offer["resources"]:
            if resource["name"] in amounts:
                piece = copy.deepcopy(resource)
                piece["scalar"]["value"] = amounts[resource["name"]]
                out.append(piece)
        return out

    def test_exact_slices_of_the_offer_launch(
        self, toil: tuple[Master, str, str, dict[str, Any]]
    ) -> None:
        master, agent_stream, stream, offer = toil
        master.launch(stream, offer, command_task("T1", self.cut(offer, cpus=1, mem=256)))
        (run,) = [e["run_task"] for e in master.take(agent_stream, "RUN_TASK")]
        assert {r["name"]: r["reservations"] for r in run["task"]["resources"]} == {
            "cpus": [{"type": "STATIC", "role": "toil"}],
            "mem": [{"type": "STATIC", "role": "toil"}]}
        assert statuses(master.take(stream)) == []
        # What is left is offered again, still reserved.
        master.tick(10)
        (again,) = [o for e in master.take(stream, "OFFERS") for o in e["offers"]["offers"]]
        assert scalars(again)["cpus", "toil"] == 1.0

    def test_the_older_format_names_the_same_resources(
        self, toil: tuple[Master, str, str, dict[str, Any]]
    ) -> None:
        master, agent_stream, stream, offer = toil
        resources = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}, "role": "toil"}]
        master.launch(stream, offer, command_task("T1", resources))
        assert len(master.take(agent_stream, "RUN_TASK")) == 1

    def test_unreserved_asks_against_reserved_offers_are_task_errors(
        self, toil: tuple[Master, str, str, dict[str, Any]]
    ) -> None:
        master, agent_stream, stream, offer = toil
        plain = [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1},
                  "allocation_info": {"role": "toil"}}]
        master.launch(stream, offer, command_task("T1", plain))
        (status,) = statuses(master.take(stream))
        assert (status["state"], status["reason"]) == ("TASK_ERROR", "REASON_TASK_INVALID")
        assert status["message"].startswith(
            "Total resources cpus(allocated: toil):1 required by task and its executor is more"
            " than available")
        assert "cpus(reservations: [(STATIC,toil)], allocated: toil):2" in status["message"]
        assert master.take(agent_stream, "RUN_TASK") == []

    def test_resources_reserved_for_another_role_are_task_errors(
        self, toil: tuple[Master, str, str, dict[str, Any]]
    ) -> None:
        master, agent_stream, stream, offer = toil
        other = self.cut(offer, cpus=1)
        other[0]["reservations"] = [{"type": "STATIC", "role": "other"}]
        master.launch(stream, offer, command_task("T1", other))
        (status,) = statuses(master.take(stream))
        assert status["state"] == "TASK_ERROR" and "more than available" in status["message"]
        assert master.take(agent_stream, "RUN_TASK") == []

    def test_resources_allocated_to_another_role_are_task_errors(
        self, toil: tuple[Master, str, str, dict[str, Any]]
    ) -> None:
        master, agent_stream, stream, offer = toil
        wrong = self.cut(offer, cpus=1)
        wrong[0]["allocation_info"] = {"role": "*"}
        master.launch(stream, offer, command_task("T1", wrong))
        (status,) = statuses(master.take(stream))
        assert status["state"] == "TASK_ERROR"
        assert "allocated to role(s) * but the framework is subscribed to role toil" in (
            status["message"])
        assert master.take(agent_stream, "RUN_TASK") == []

    def test_dynamic_reservations_are_invalid_resources(
        self, toil: tuple[Master, str, str, dict[str, Any]]
    ) -> None:
        master, _, stream, offer = toil
        dynamic = self.cut(offer, cpus=1)
        dynamic[0]["reservations"] = [{"type": "DYNAMIC", "role": "toil", "principal": "p"}]
        master.launch(stream, offer, command_task("T1", dynamic))
        (status,) = statuses(master.take(stream))
        assert status["message"].startswith("Task uses invalid resources:")

