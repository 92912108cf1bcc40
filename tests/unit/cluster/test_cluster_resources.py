"""Parsing of the agent's --resources and --attributes flags, against the recorded shapes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from toil_mesos.cluster._protocol import DEFAULT_AGENT_RESOURCES
from toil_mesos.cluster._resources import (
    InvalidFlagError,
    attributes_summary,
    merge_default_resources,
    parse_attributes,
    parse_resources,
    reserved_summary,
    resources_summary,
    unreserved,
)

TRANSCRIPTS = Path(os.environ.get("TOIL_MESOS_TRANSCRIPTS", "/work/shared/mesos-transcripts"))


def _recorded_agent_info() -> dict[str, object]:
    path = TRANSCRIPTS / "executor" / "E1" / "events" / "001_SUBSCRIBED.json"
    if not path.exists():
        pytest.skip("transcripts not available")
    info: dict[str, object] = json.loads(path.read_text())["subscribed"]["agent_info"]
    return info


class TestParseResources:
    def test_recorded_flag_matches_recorded_agent_info(self) -> None:
        # The recorded agent ran with this flag; its SUBSCRIBED agent_info lists the resources
        # without the role, which the agent strips there.
        parsed = parse_resources("cpus:2;mem:2048;disk:4096;ports:[31000-31009]")
        stripped = [{k: v for k, v in r.items() if k != "role"} for r in parsed]
        assert stripped == _recorded_agent_info()["resources"]
        assert all(r["role"] == "*" for r in parsed)

    def test_default_resources_fit_toils_default_job(self) -> None:
        summary = resources_summary(parse_resources(DEFAULT_AGENT_RESOURCES))
        minimum = {"cpus": 2.0, "mem": 4096.0, "disk": 8192.0}
        for name, least in minimum.items():
            value = summary[name]
            assert isinstance(value, float) and value >= least
        assert summary["ports"] == "[31000-31099]"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("cpus:1.5", [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.5}}]),
            ("cpus:0.12345", [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.123}}]),
            (" mem : 10 ; ", [{"name": "mem", "type": "SCALAR", "scalar": {"value": 10.0}}]),
            (
                "ports:[2000-2001,1000-1005]",
                [
                    {
                        "name": "ports",
                        "type": "RANGES",
                        "ranges": {
                            "range": [{"begin": 1000, "end": 1005}, {"begin": 2000, "end": 2001}]
                        },
                    }
                ],
            ),
            ("gpus(*):1", [{"name": "gpus", "type": "SCALAR", "scalar": {"value": 1.0}}]),
            ("zones:{a,b}", [{"name": "zones", "type": "SET", "set": {"item": ["a", "b"]}}]),
            ("", []),
        ],
    )
    def test_shapes(self, text: str, expected: list[dict[str, object]]) -> None:
        assert parse_resources(text) == [dict(e, role="*") for e in expected]

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("cpus", "'cpus'"),
            ("cpus:", "'cpus:'"),
            (":2", "':2'"),
            ("cpus:two", "'two'"),
            ("cpus:-1", "negative"),
            ("cpus:inf", "'inf'"),
            ("ports:[10-5]", "ends before it begins"),
            ("ports:[a-b]", "'a-b'"),
            ("ports:[]", "empty ranges"),
            ("cpus:1;cpus:2", "given twice"),
            ("cpus(a b):1", "whitespace"),
            ("cpus(toil):1;cpus(toil):2", "given twice for role 'toil'"),
            ("cpus:1;cpus(toil):[1-2]", "one name has one type"),
            ("c p u:1", "'c p u'"),
        ],
    )
    def test_errors_name_the_bad_text(self, text: str, fragment: str) -> None:
        with pytest.raises(InvalidFlagError, match="--resources") as info:
            parse_resources(text)
        assert fragment in str(info.value)
        assert isinstance(info.value, ValueError)

    def test_static_reservations_next_to_unreserved(self) -> None:
        parsed = parse_resources("cpus:4;mem:2048;cpus(toil):8;mem(toil):4096")
        assert [(r["name"], r.get("role"), r.get("reservations")) for r in parsed] == [
            ("cpus", "*", None), ("mem", "*", None),
            ("cpus", None, [{"type": "STATIC", "role": "toil"}]),
            ("mem", None, [{"type": "STATIC", "role": "toil"}])]
        assert reserved_summary(parsed)["toil"]["cpus"] == 8.0
        assert resources_summary(unreserved(parsed))["cpus"] == 4.0
        assert resources_summary(parsed)["cpus"] == 12.0

    def test_reserved_names_are_not_filled_in_with_defaults(self) -> None:
        merged = merge_default_resources(
            parse_resources("cpus(toil):2"), parse_resources(DEFAULT_AGENT_RESOURCES))
        assert [r.get("reservations") for r in merged if r["name"] == "cpus"] == [
            [{"type": "STATIC", "role": "toil"}]]

    def test_merge_defaults_keeps_given_and_fills_missing(self) -> None:
        merged = merge_default_resources(
            parse_resources("mem:100;gpus:1"), parse_resources(DEFAULT_AGENT_RESOURCES)
        )
        assert [r["name"] for r in merged] == ["cpus", "mem", "disk", "ports", "gpus"]
        assert merged[1]["scalar"] == {"value": 100.0}


class TestParseAttributes:
    def test_recorded_flag_matches_recorded_agent_info(self) -> None:
        parsed = parse_attributes("rack:r1;level:5;slots:[1-4]")
        assert parsed == _recorded_agent_info()["attributes"]

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "preemptible:true",
                {"name": "preemptible", "type": "TEXT", "text": {"value": "true"}},
            ),
            ("level:2.5", {"name": "level", "type": "SCALAR", "scalar": {"value": 2.5}}),
            ("os:ubuntu-22.04", {"name": "os", "type": "TEXT", "text": {"value": "ubuntu-22.04"}}),
        ],
    )
    def test_types(self, text: str, expected: dict[str, object]) -> None:
        assert parse_attributes(text) == [expected]

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [("rack", "'rack'"), ("a:{x,y}", "set"), ("a:1;a:2", "given twice"), ("s:[3-1]", "ends")],
    )
    def test_errors_name_the_bad_text(self, text: str, fragment: str) -> None:
        with pytest.raises(InvalidFlagError, match="--attributes") as info:
            parse_attributes(text)
        assert fragment in str(info.value)


class TestSummaries:
    def test_state_summaries_match_recorded_agent_state(self) -> None:
        path = TRANSCRIPTS / "state" / "agent_state.json"
        if not path.exists():
            pytest.skip("transcripts not available")
        recorded = json.loads(path.read_text())
        resources = parse_resources("cpus:2;mem:2048;disk:4096;ports:[31000-31009]")
        assert resources_summary(resources) == recorded["resources"]
        assert list(resources_summary(resources)) == list(recorded["resources"])
        assert resources == recorded["unreserved_resources_full"]
        attributes = parse_attributes("rack:r1;level:5;slots:[1-4]")
        assert attributes_summary(attributes) == recorded["attributes"]
