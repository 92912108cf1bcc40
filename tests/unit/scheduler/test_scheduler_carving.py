"""Carving task resources out of offers: reservations in both formats, roles, exact slices.

The unreserved resources come from a recorded Mesos 1.12 offer (a MULTI_ROLE framework in
role ``*``); the reserved ones are shaped as Mesos' ``reservation.md`` shows them, in the
``reservations`` stack (framework with RESERVATION_REFINEMENT) and in the older
``role``/``reservation`` format (framework without it).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from toil_mesos.errors import MesosError
from toil_mesos.scheduler._carving import (
    NotEnoughResources,
    OfferResources,
    check_role,
    reservation_role,
    restricted,
    usable_resources,
)
from toil_mesos.scheduler._matching import offer_capacity

TRANSCRIPTS = Path(__file__).resolve().parents[3].parent / "shared" / "mesos-transcripts"


def recorded_offer() -> dict[str, Any]:
    path = TRANSCRIPTS / "ha" / "stream_new_leader" / "events" / "003_OFFERS.json"
    if not path.exists():
        pytest.skip(f"no recorded offer at {path}")
    return json.loads(path.read_text())["offers"]["offers"][0]  # type: ignore[no-any-return]


def in_role(offer: dict[str, Any], role: str) -> dict[str, Any]:
    """The recorded offer as Mesos makes it to a framework subscribed in *role*."""
    offer = copy.deepcopy(offer)
    offer["allocation_info"] = {"role": role}
    for resource in offer["resources"]:
        resource["allocation_info"] = {"role": role}
    return offer


def scalar(name: str, value: float, allocated: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value},
            "allocation_info": {"role": allocated}, **fields}


def static(role: str) -> dict[str, Any]:
    """Post-refinement: the ``reservations`` stack, no ``role`` field."""
    return {"reservations": [{"type": "STATIC", "role": role}]}


def old_static(role: str) -> dict[str, Any]:
    """Pre-refinement: ``role`` names the reservation."""
    return {"role": role}


def amounts(resources: list[dict[str, Any]], name: str) -> list[float]:
    return [r["scalar"]["value"] for r in resources if r["name"] == name]


# ---- what is reserved for whom ----------------------------------------------------------------


def test_the_recorded_unreserved_resources_are_unreserved() -> None:
    assert {reservation_role(r) for r in recorded_offer()["resources"]} == {"*"}


@pytest.mark.parametrize(("resource", "role"), [
    ({"name": "cpus"}, "*"),
    (old_static("toil"), "toil"),
    ({"role": "toil", "reservation": {"principal": "ops"}}, "toil"),
    (static("toil"), "toil"),
    ({"reservations": [{"type": "STATIC", "role": "eng"},
                       {"type": "DYNAMIC", "role": "eng/toil", "principal": "ops"}]}, "eng/toil"),
])
def test_both_reservation_formats_name_the_role(resource: dict[str, Any], role: str) -> None:
    assert reservation_role({"name": "cpus", **resource}) == role


# ---- carving ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reserved", [static, old_static])
def test_reserved_resources_are_taken_first_and_kept_exactly(reserved: Any) -> None:
    offer = in_role(recorded_offer(), "toil")  # cpus 2, mem 2048, disk 4096 unreserved
    offer["resources"].append(scalar("cpus", 1.5, "toil", **reserved("toil")))
    offer["resources"].append(scalar("mem", 512, "toil", **reserved("toil")))
    carver = OfferResources(offer, "toil")
    taken = carver.take({"cpus": 2, "mem": 256, "disk": 100})
    # 1.5 reserved cpus, then 0.5 unreserved; memory all reserved; disk only unreserved.
    assert [(r["name"], r["scalar"]["value"], reservation_role(r)) for r in taken] == [
        ("cpus", 1.5, "toil"), ("cpus", 0.5, "*"), ("mem", 256.0, "toil"), ("disk", 100.0, "*")]
    by_role = {(r["name"], reservation_role(r)): r for r in taken}
    # Every field of the offered resource is repeated; only the value is the task's share.
    original = offer["resources"][-2]
    assert {k: v for k, v in by_role["cpus", "toil"].items() if k != "scalar"} == {
        k: v for k, v in original.items() if k != "scalar"}
    assert all(r["allocation_info"] == {"role": "toil"} for r in taken)
    assert "role" not in by_role["cpus", "toil"] or reserved is old_static
    assert by_role["cpus", "*"]["role"] == "*"
    assert carver.totals() == {"cpus": 1.5, "mem": 2304.0, "disk": 3996.0}


def test_the_offer_itself_is_not_changed() -> None:
    offer = in_role(recorded_offer(), "toil")
    offer["resources"].append(scalar("cpus", 1, "toil", **static("toil")))
    before = copy.deepcopy(offer)
    OfferResources(offer, "toil").take({"cpus": 2})
    assert offer == before


def test_reservations_for_other_roles_are_never_used() -> None:
    offer = in_role(recorded_offer(), "toil")
    offer["resources"].append(scalar("cpus", 8, "toil", **static("other")))
    offer["resources"].append(scalar("cpus", 8, "toil", **old_static("toil-other")))
    carver = OfferResources(offer, "toil")
    assert carver.left("cpus") == 2.0
    with pytest.raises(NotEnoughResources, match=r"2 cpus usable .* needs 3"):
        carver.take({"cpus": 3})
    assert all(reservation_role(r) == "*" for r in carver.take({"cpus": 2}))


def test_a_framework_without_a_role_uses_only_unreserved_resources() -> None:
    offer = recorded_offer()
    offer["resources"].append(scalar("cpus", 8, "*", **static("toil")))
    usable = usable_resources(offer, "*")
    assert usable and all(reservation_role(r) == "*" for r in usable)
    assert offer_capacity(restricted(offer, "*")).millicores == 2000


def test_only_reserved_resources_make_an_offer_usable_only_in_that_role() -> None:
    offer = in_role(recorded_offer(), "toil")
    offer["resources"] = [r for r in offer["resources"] if r["type"] != "SCALAR"]
    for name, value in (("cpus", 4), ("mem", 4096), ("disk", 1000)):
        offer["resources"].append(scalar(name, value, "toil", **static("toil")))
    assert offer_capacity(restricted(offer, "toil")).millicores == 4000
    assert offer_capacity(restricted(offer, "*")).millicores == 0
    assert offer_capacity(restricted(offer, "other")).mem_mib == 0


def test_parent_reservations_serve_child_roles_but_not_lookalikes() -> None:
    resource = scalar("cpus", 2, "eng/toil", **static("eng"))
    offer = {"allocation_info": {"role": "eng/toil"}, "resources": [resource]}
    assert usable_resources(offer, "eng/toil") == [resource]
    lookalike = {"allocation_info": {"role": "engine"},
                 "resources": [scalar("cpus", 2, "engine", **static("eng"))]}
    assert usable_resources(lookalike, "engine") == []


def test_refined_reservations_go_before_their_parents() -> None:
    offer = {"resources": [
        scalar("cpus", 1, "eng/toil", **static("eng")),
        scalar("cpus", 1, "eng/toil", reservations=[
            {"type": "STATIC", "role": "eng"}, {"type": "DYNAMIC", "role": "eng/toil"}]),
    ]}
    taken = OfferResources(offer, "eng/toil").take({"cpus": 1})
    assert len(taken) == 1 and reservation_role(taken[0]) == "eng/toil"


def test_a_task_takes_resources_allocated_to_one_role_only() -> None:
    offer = {"resources": [scalar("cpus", 1, "toil"), scalar("cpus", 4, "other")]}
    carver = OfferResources(offer, "toil")
    assert carver.left("cpus") == 1.0
    assert {r["allocation_info"]["role"] for r in carver.take({"cpus": 1})} == {"toil"}


def test_gpus_and_any_other_scalar_carve_like_cpus() -> None:
    offer = in_role(recorded_offer(), "toil")
    offer["resources"] += [scalar("gpus", 1, "toil", **static("toil")),
                           scalar("gpus", 2, "toil", role="*")]
    taken = OfferResources(offer, "toil").take({"gpus": 2, "cpus": 1})
    assert [(r["scalar"]["value"], reservation_role(r)) for r in taken if r["name"] == "gpus"] \
        == [(1.0, "toil"), (1.0, "*")]


def test_shares_add_up_exactly_to_what_was_offered() -> None:
    offer = in_role(recorded_offer(), "toil")
    offer["resources"].append(scalar("cpus", 0.3, "toil", **static("toil")))
    carver = OfferResources(offer, "toil")
    taken = [carver.take({"cpus": 0.1}) for _ in range(23)]  # 0.3 reserved + 2 unreserved
    assert sum(amounts(t, "cpus")[0] if len(t) == 1 else sum(amounts(t, "cpus"))
               for t in taken) == pytest.approx(2.3)
    assert carver.left("cpus") == 0.0
    with pytest.raises(NotEnoughResources):
        carver.take({"cpus": 0.001})


def test_a_refused_take_takes_nothing() -> None:
    carver = OfferResources(in_role(recorded_offer(), "*"), "*")
    with pytest.raises(NotEnoughResources, match="mem"):
        carver.take({"cpus": 1, "mem": 99999})
    assert carver.left("cpus") == 2.0


def test_zero_amounts_and_unknown_zero_resources_are_left_out() -> None:
    taken = OfferResources(recorded_offer()).take({"cpus": 1, "disk": 0, "gpus": 0})
    assert [r["name"] for r in taken] == ["cpus"]


def test_amounts_round_up_to_mesos_precision() -> None:
    taken = OfferResources(recorded_offer()).take({"cpus": 0.0001})
    assert amounts(taken, "cpus") == [0.001]


def test_volumes_shared_and_mount_disks_are_never_split() -> None:
    offer = {"resources": [
        scalar("disk", 100, "*", role="*", disk={"persistence": {"id": "v"},
                                                 "volume": {"container_path": "p", "mode": "RW"}}),
        scalar("disk", 100, "*", role="*", disk={"source": {"type": "MOUNT"}}),
        scalar("disk", 100, "*", role="*", shared={}),
        scalar("disk", 5, "*", role="*", disk={"source": {"type": "PATH"}}),
    ]}
    assert OfferResources(offer).left("disk") == 5.0


def test_equal_tasks_from_the_same_slices_share_one_list() -> None:
    carver = OfferResources(in_role(recorded_offer(), "*"), "*")
    first, second = carver.take({"cpus": 0.5}), carver.take({"cpus": 0.5})
    assert first is second and amounts(first, "cpus") == [0.5]


# ---- role names -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["toil", "eng/toil", "*", "a.b", "x-y"])
def test_valid_roles(role: str) -> None:
    assert check_role(role) == role


@pytest.mark.parametrize("role", ["", ".", "..", "-x", "a b", "a//b", "a/*", "a\\b", "/a"])
def test_invalid_roles_say_why(role: str) -> None:
    with pytest.raises(ValueError, match="role"):
        check_role(role)


def test_mesos_role_option_names_itself_when_invalid() -> None:
    from types import SimpleNamespace

    from toil_mesos.scheduler.options import MesosOptions

    with pytest.raises(MesosError, match="--mesosRole 'a b' is not a valid Mesos role"):
        MesosOptions.from_config(SimpleNamespace(mesos_role="a b"))
    assert MesosOptions.from_config(SimpleNamespace(mesos_role="toil")).role == "toil"
