"""Resource arithmetic for offers: parsing, +, -, contains, and Mesos' renderings."""

from __future__ import annotations

from typing import Any

import pytest

from toil_mesos.cluster._offers import ResourceBag, ResourceError, with_allocation_info


def scalar(name: str, value: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}, **extra}


def ports(*spans: tuple[int, int]) -> dict[str, Any]:
    return {
        "name": "ports",
        "type": "RANGES",
        "ranges": {"range": [{"begin": b, "end": e} for b, e in spans]},
    }


def bag(*resources: dict[str, Any]) -> ResourceBag:
    return ResourceBag.from_json(resources)


AGENT = bag(ports((31000, 31009)), scalar("cpus", 2), scalar("mem", 2048), scalar("disk", 4096))


class TestParse:
    def test_scalars_and_ranges_keep_first_seen_order(self) -> None:
        assert [name for name, _, _ in AGENT.items] == ["ports", "cpus", "mem", "disk"]
        assert AGENT.get("ports") == ((31000, 31009),)
        assert AGENT.scalar("cpus") == 2.0

    def test_same_name_twice_adds_up(self) -> None:
        assert bag(scalar("cpus", 0.1), scalar("cpus", 0.2)).scalar("cpus") == 0.3

    def test_ranges_are_merged_and_sorted(self) -> None:
        merged = bag(ports((5, 6), (1, 2), (3, 4), (9, 9)))
        assert merged.get("ports") == ((1, 6), (9, 9))

    def test_type_defaults_to_scalar(self) -> None:
        assert bag({"name": "cpus", "scalar": {"value": 1}}).scalar("cpus") == 1.0

    def test_zero_is_dropped(self) -> None:
        assert bag(scalar("gpus", 0)).is_empty()

    @pytest.mark.parametrize(
        ("resource", "message"),
        [
            ({"type": "SCALAR", "scalar": {"value": 1}}, "without a name"),
            (scalar("cpus", -1), "invalid scalar value -1"),
            (scalar("cpus", "1"), "invalid scalar value '1'"),  # type: ignore[arg-type]
            (scalar("cpus", True), "invalid scalar value True"),
            ({"name": "x", "type": "SET", "set": {"item": ["a"]}}, "type 'SET'"),
            (
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 5, "end": 1}]}},
                "invalid range",
            ),
            (scalar("cpus", 1, role="web", reservation={}), "dynamically reserved ('web')"),
            (scalar("cpus", 1, reservations=[{"type": "DYNAMIC", "role": "a"}]), "only has static"),
            (scalar("cpus", 1, reservations=[{"role": "a"}, {"role": "a/b"}]), "refined"),
            (scalar("cpus", 1, role="a b"), "whitespace"),
            ("cpus", "must be a JSON object"),
        ],
    )
    def test_rejects_what_it_cannot_account_for(self, resource: Any, message: str) -> None:
        with pytest.raises(ResourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
            ResourceBag.from_json([resource])

    def test_error_is_a_value_error(self) -> None:
        assert issubclass(ResourceError, ValueError)


class TestArithmetic:
    def test_subtract_scalars_at_mesos_precision(self) -> None:
        left = AGENT - bag(scalar("cpus", 0.1), scalar("mem", 32)) - bag(scalar("cpus", 0.1))
        assert left.scalar("cpus") == 1.8
        assert left.scalar("mem") == 2016.0

    def test_subtract_never_goes_negative_and_drops_empty(self) -> None:
        left = bag(scalar("cpus", 1)) - bag(scalar("cpus", 2))
        assert left.is_empty()
        assert left.get("cpus") is None

    @pytest.mark.parametrize(
        ("take", "left"),
        [
            ((31000, 31009), None),
            ((31003, 31004), ((31000, 31002), (31005, 31009))),
            ((31000, 31000), ((31001, 31009),)),
            ((30000, 31004), ((31005, 31009),)),
            ((32000, 32001), ((31000, 31009),)),
        ],
    )
    def test_subtract_ranges(self, take: tuple[int, int], left: Any) -> None:
        assert (AGENT - bag(ports(take))).get("ports") == left

    def test_add_then_subtract_round_trips(self) -> None:
        extra = bag(scalar("cpus", 0.3), ports((40000, 40001)))
        assert (AGENT + extra) - extra == AGENT

    def test_add_unknown_names_appends(self) -> None:
        assert [n for n, _, _ in (AGENT + bag(scalar("gpus", 1))).items][-1] == "gpus"

    def test_scalar_and_ranges_with_one_name_conflict(self) -> None:
        with pytest.raises(ResourceError, match="both a scalar and ranges"):
            _ = bag(scalar("ports", 1)) + bag(ports((1, 2)))


class TestContains:
    @pytest.mark.parametrize(
        ("want", "fits"),
        [
            ([scalar("cpus", 2)], True),
            ([scalar("cpus", 2.001)], False),
            ([scalar("cpus", 0.1), scalar("mem", 32)], True),
            ([scalar("gpus", 1)], False),
            ([ports((31000, 31009))], True),
            ([ports((31009, 31010))], False),
            ([ports((31001, 31001), (31005, 31006))], True),
            ([], True),
        ],
    )
    def test_contains(self, want: list[dict[str, Any]], fits: bool) -> None:
        assert AGENT.contains(bag(*want)) is fits

    def test_exact_fit_despite_float_noise(self) -> None:
        offered = bag(scalar("cpus", 0.3))
        assert offered.contains(bag(scalar("cpus", 0.1), scalar("cpus", 0.2)))


class TestRendering:
    def test_describe_matches_the_recorded_task_error(self) -> None:
        # fw1_main event 018: the offer after E1 (0.1 cpus, 32 MB) and T2 (the same) ran.
        offered = AGENT - bag(scalar("cpus", 0.2), scalar("mem", 64))
        assert offered.describe() == (
            "ports(allocated: *):[31000-31009]; cpus(allocated: *):1.8;"
            " mem(allocated: *):1984; disk(allocated: *):4096"
        )
        assert str(bag(scalar("cpus", 9.8), scalar("mem", 32))) == (
            "cpus(allocated: *):9.8; mem(allocated: *):32"
        )

    def test_describe_several_ranges_and_a_role(self) -> None:
        assert bag(ports((1, 2), (4, 5))).describe("web") == "ports(allocated: web):[1-2, 4-5]"

    def test_to_json_for_offers_has_role_and_allocation_info(self) -> None:
        assert bag(scalar("cpus", 2)).to_json() == [
            {
                "name": "cpus",
                "type": "SCALAR",
                "scalar": {"value": 2.0},
                "role": "*",
                "allocation_info": {"role": "*"},
            }
        ]
        assert bag(ports((1, 2))).to_json(allocation_role="web")[0]["allocation_info"] == {
            "role": "web"
        }

    def test_to_json_without_role(self) -> None:
        assert bag(ports((1, 2))).to_json(role=None) == [
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 2}]}}
        ]

    def test_to_json_round_trips(self) -> None:
        assert ResourceBag.from_json(AGENT.to_json()) == AGENT

    def test_to_state_is_the_recorded_shape(self) -> None:
        assert AGENT.to_state() == {
            "disk": 4096.0,
            "mem": 2048.0,
            "gpus": 0.0,
            "cpus": 2.0,
            "ports": "[31000-31009]",
        }
        assert list(ResourceBag().to_state()) == ["disk", "mem", "gpus", "cpus"]

    def test_with_allocation_info_fills_only_what_is_missing(self) -> None:
        given = [scalar("cpus", 1), scalar("mem", 1, allocation_info={"role": "x"})]
        out = with_allocation_info(given, "web")
        assert out[0]["allocation_info"] == {"role": "web"}
        assert out[1]["allocation_info"] == {"role": "x"}
        assert "allocation_info" not in given[0]


class TestReservations:
    """Static reservations: kept apart from unreserved resources, read in both formats."""

    RESERVED = bag(scalar("cpus", 8, reservations=[{"type": "STATIC", "role": "toil"}]),
                   scalar("cpus", 2, role="*"), scalar("mem", 1024, role="toil"))

    def test_both_formats_mean_the_same_reservation(self) -> None:
        assert bag(scalar("cpus", 1, role="toil")) == bag(
            scalar("cpus", 1, reservations=[{"type": "STATIC", "role": "toil"}]))

    def test_reserved_and_unreserved_are_separate_quantities(self) -> None:
        assert self.RESERVED.get("cpus", "toil") == 8.0 and self.RESERVED.get("cpus") == 2.0
        assert self.RESERVED.scalar("cpus") == 10.0
        assert self.RESERVED.roles() == ["toil"]

    def test_unreserved_asks_are_not_paid_from_reservations(self) -> None:
        assert not self.RESERVED.contains(bag(scalar("cpus", 3)))
        assert not self.RESERVED.contains(bag(scalar("mem", 1)))
        assert self.RESERVED.contains(bag(scalar("cpus", 8, role="toil"), scalar("cpus", 2)))
        assert not self.RESERVED.contains(bag(scalar("cpus", 1, role="other")))

    def test_usable_by_keeps_unreserved_and_the_roles_own(self) -> None:
        assert self.RESERVED.usable_by("*") == bag(scalar("cpus", 2))
        assert self.RESERVED.usable_by("toil") == self.RESERVED
        assert self.RESERVED.usable_by("toil/sub") == self.RESERVED  # hierarchical roles
        assert self.RESERVED.usable_by("toilet") == bag(scalar("cpus", 2))

    def test_subtraction_takes_from_the_named_reservation(self) -> None:
        left = self.RESERVED - bag(scalar("cpus", 3, role="toil"))
        assert (left.get("cpus", "toil"), left.get("cpus")) == (5.0, 2.0)

    def test_offers_render_in_the_frameworks_format(self) -> None:
        refined = self.RESERVED.to_json(allocation_role="toil")
        assert refined[0] == {"name": "cpus", "type": "SCALAR", "scalar": {"value": 8.0},
                              "reservations": [{"type": "STATIC", "role": "toil"}],
                              "allocation_info": {"role": "toil"}}
        assert refined[1]["role"] == "*" and "reservations" not in refined[1]
        old = self.RESERVED.to_json(allocation_role="toil", refinement=False)
        assert old[0] == {"name": "cpus", "type": "SCALAR", "scalar": {"value": 8.0},
                          "role": "toil", "allocation_info": {"role": "toil"}}
        for rendering in (refined, old, self.RESERVED.to_json(role=None)):
            assert ResourceBag.from_json(rendering) == self.RESERVED

    def test_describe_names_the_reservation(self) -> None:
        assert bag(scalar("cpus", 2, role="toil")).describe("toil") == (
            "cpus(reservations: [(STATIC,toil)], allocated: toil):2")

    def test_state_adds_every_reservation(self) -> None:
        assert self.RESERVED.to_state()["cpus"] == 10.0
