"""The master's sans-I/O state machine, without sockets, threads or sleeps.

The master id is the recorded one, so ids, and the messages that quote them, come out exactly
as in ``shared/mesos-transcripts``; where a transcript is available the expected texts and
event shapes are read from it.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from toil_mesos.cluster._master_state import (
    AGENT_TRANSITIONS,
    FRAMEWORK_TRANSITIONS,
    AgentLifecycle,
    CallRejected,
    Close,
    FrameworkLifecycle,
    MasterConfig,
    MasterState,
    Output,
    Send,
    executor_info_text,
    parse_agent_call,
    parse_scheduler_request,
)

MASTER_ID = "42f618ee-43f9-4ca8-88a7-31221df616de"
FW = f"{MASTER_ID}-0000"
AGENT = f"{MASTER_ID}-S0"
WALL = 1_795_547_392.0
TRANSCRIPTS = Path(
    os.environ.get(
        "TOIL_MESOS_TRANSCRIPTS",
        Path(__file__).resolve().parents[3].parent / "shared" / "mesos-transcripts",
    )
)
FW1 = TRANSCRIPTS / "scheduler" / "fw1_main"
FW2 = TRANSCRIPTS / "scheduler" / "fw2_partition_aware"


def recorded(path: Path) -> Any:
    if not path.is_file():
        pytest.skip(f"transcript {path} not available (set TOIL_MESOS_TRANSCRIPTS)")
    return json.loads(path.read_text())


def scalar(name: str, value: float) -> dict[str, Any]:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


PORTS = {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31009}]}}
SMALL = [scalar("cpus", 0.1), scalar("mem", 32)]


def agent_info(agent_id: str | None = None) -> dict[str, Any]:
    # The recorded agent: --resources=cpus:2;mem:2048;disk:4096;ports:[31000-31009], listed in
    # the order its offers list them.
    info: dict[str, Any] = {
        "hostname": "localhost",
        "port": 5051,
        "resources": [PORTS, scalar("cpus", 2.0), scalar("mem", 2048.0), scalar("disk", 4096.0)],
        "attributes": [
            {"name": "rack", "type": "TEXT", "text": {"value": "r1"}},
            {"name": "level", "type": "SCALAR", "scalar": {"value": 5.0}},
            {"name": "slots", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 4}]}},
        ],
    }
    if agent_id:
        info["id"] = {"value": agent_id}
    return info


def executor(eid: str = "E1", command: str = "python3 executor.py") -> dict[str, Any]:
    return {
        "executor_id": {"value": eid},
        "type": "CUSTOM",
        "name": f"executor {eid}",
        "command": {"value": command},
        "resources": copy.deepcopy(SMALL),
    }


def task(tid: str, *, agent: str = AGENT, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": f"task {tid}",
        "task_id": {"value": tid},
        "agent_id": {"value": agent},
        "resources": copy.deepcopy(SMALL),
    }
    if not extra:
        extra = {"executor": executor()}
    out.update(extra)
    return out


class Master:
    """A MasterState with a hand-driven clock and readable outputs."""

    def __init__(self, **config: Any) -> None:
        ids = (f"stream-{n}" for n in itertools.count())
        self.state = MasterState(
            MasterConfig(master_id=MASTER_ID, **config),
            wall_clock=lambda: WALL,
            new_uuid=lambda: next(ids),
        )
        self.now = 100.0
        self.outputs: list[Output] = []

    # inputs
    def subscribe(self, info: dict[str, Any] | None = None, **kw: Any) -> str:
        info = info if info is not None else framework_info(**kw)
        call: dict[str, Any] = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
        sub = self.state.subscribe(call, now=self.now)
        self.outputs += sub.outputs
        return sub.stream_id

    def register(self, agent_id: str | None = None, executors: Iterable[Any] = ()) -> str:
        body = {
            "type": "REGISTER",
            "register": {
                "agent_info": agent_info(agent_id),
                "address": "127.0.0.1:5051",
                "executors": list(executors),
            },
        }
        reg = self.state.register_agent(body, now=self.now)
        self.outputs += reg.outputs
        return reg.stream_id

    def call(self, stream: str, kind: str, body: Any = None, fw: str = FW) -> list[Output]:
        payload: dict[str, Any] = {"type": kind, "framework_id": {"value": fw}}
        if body is not None:
            payload[kind.lower()] = body
        out = self.state.call(payload, stream_id=stream, now=self.now)
        self.outputs += out
        return out

    def agent(self, stream: str, kind: str, body: Any) -> list[Output]:
        out = self.state.agent_call(
            {"type": kind, kind.lower(): body}, stream_id=stream, now=self.now
        )
        self.outputs += out
        return out

    def tick(self, seconds: float = 0.0) -> list[Output]:
        self.now += seconds
        out = self.state.tick(self.now)
        self.outputs += out
        return out

    # outputs
    def take(self, stream: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Events sent to *stream* since the last take (of that stream), optionally by type."""
        mine = [o for o in self.outputs if isinstance(o, Send) and o.stream_id == stream]
        self.outputs = [o for o in self.outputs if o not in mine]
        events = [dict(o.event) for o in mine]
        return [e for e in events if kind is None or e["type"] == kind]

    def closed(self, stream: str) -> bool:
        return any(isinstance(o, Close) and o.stream_id == stream for o in self.outputs)

    def offer(self, stream: str) -> dict[str, Any]:
        self.tick()
        offers = self.take(stream, "OFFERS")
        assert offers, "expected an OFFERS event"
        result: dict[str, Any] = offers[-1]["offers"]["offers"][0]
        return result

    def launch(
        self, stream: str, offer: dict[str, Any], *tasks: dict[str, Any], **accept: Any
    ) -> None:
        body = {
            "offer_ids": [offer["id"]],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": list(tasks)}}],
            **accept,
        }
        self.call(stream, "ACCEPT", body)

    def update(self, agent_stream: str, tid: str, state: str, uuid: str | None = "u") -> None:
        status: dict[str, Any] = {
            "task_id": {"value": tid},
            "state": state,
            "source": "SOURCE_EXECUTOR",
            "agent_id": {"value": AGENT},
            "timestamp": WALL,
        }
        if uuid:
            status["uuid"] = uuid
        self.agent(agent_stream, "UPDATE", {"framework_id": {"value": FW}, "status": status})


def framework_info(partition_aware: bool = False, **extra: Any) -> dict[str, Any]:
    caps = [{"type": "MULTI_ROLE"}, {"type": "TASK_KILLING_STATE"}]
    if partition_aware:
        caps.append({"type": "PARTITION_AWARE"})
    info = {
        "user": "root",
        "name": "transcript-fw1",
        "roles": ["*"],
        "failover_timeout": 120.0,
        "capabilities": caps,
    }
    info.update(extra)
    return info


def statuses(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["update"]["status"] for e in events if e["type"] == "UPDATE"]


def without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


@pytest.fixture
def master() -> Master:
    return Master()


@pytest.fixture
def cluster(master: Master) -> tuple[Master, str, str]:
    """A registered agent and a subscribed framework, initial events consumed."""
    agent_stream = master.register()
    fw_stream = master.subscribe()
    master.take(agent_stream)
    master.take(fw_stream)
    return master, agent_stream, fw_stream


# ---------------------------------------------------------------------------------------------
# Request validation (HTTP level)


def meta(name: str) -> Any:
    return recorded(FW1 / "calls" / f"{name}.meta.json")


def raw_body(name: str) -> bytes:
    path = FW1 / "calls" / f"{name}.request.http"
    if not path.is_file():
        pytest.skip(f"transcript {path} not available")
    return path.read_bytes().split(b"\r\n\r\n", 1)[1]


def rejected(method: str, headers: dict[str, str], body: bytes) -> CallRejected:
    with pytest.raises(CallRejected) as info:
        parse_scheduler_request(method, headers, body)
    return info.value


JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class TestRequestValidation:
    @pytest.mark.parametrize(
        ("name", "method", "headers"),
        [
            ("01_ERR_unknown_type_no_stream", "POST", JSON_HEADERS),
            ("03_ERR_GET_method", "GET", {"Accept": "application/json"}),
            ("04_ERR_no_content_type", "POST", {"Accept": "application/json"}),
            ("05_ERR_malformed_json", "POST", JSON_HEADERS),
            ("06_ERR_subscribe_accept_text_html", "POST", {**JSON_HEADERS, "Accept": "text/html"}),
            ("08_ERR_subscribe_missing_subscribe_field", "POST", JSON_HEADERS),
            ("12_ERR_missing_framework_id", "POST", JSON_HEADERS),
        ],
    )
    def test_recorded_rejections(self, name: str, method: str, headers: dict[str, str]) -> None:
        expected = meta(name)
        body = b"" if method == "GET" else raw_body(name)
        error = rejected(method, headers, body)
        assert error.status == expected["status"]
        assert error.message == expected["response_body"]

    def test_405_names_allow_post(self) -> None:
        assert rejected("GET", {}, b"").headers == (("Allow", "POST"),)

    def test_unknown_type_with_a_stream_id_is_a_missing_type(self) -> None:
        error = rejected(
            "POST", {**JSON_HEADERS, "Mesos-Stream-Id": "s"}, b'{"type": "NOT_A_CALL_TYPE"}'
        )
        assert error.message == meta("11_ERR_unknown_type_with_stream")["response_body"]

    @pytest.mark.parametrize(
        ("call", "message"),
        [
            (
                {"type": "ACCEPT", "framework_id": {"value": "f"}},
                "Expecting 'accept' to be present",
            ),
            ({"type": "KILL", "framework_id": {"value": "f"}}, "Expecting 'kill' to be present"),
            (
                {"type": "ACKNOWLEDGE", "framework_id": {"value": "f"}},
                "Expecting 'acknowledge' to be present",
            ),
            (
                {
                    "type": "SUBSCRIBE",
                    "framework_id": {"value": "a"},
                    "subscribe": {"framework_info": {"user": "u", "name": "n"}},
                },
                "'framework_id' differs from 'subscribe.framework_info.id'",
            ),
        ],
    )
    def test_call_fields(self, call: dict[str, Any], message: str) -> None:
        error = rejected("POST", JSON_HEADERS, json.dumps(call).encode())
        assert (error.status, error.message) == (
            400,
            f"Failed to validate scheduler::Call: {message}",
        )

    def test_other_content_types_are_unsupported(self) -> None:
        error = rejected("POST", {"Content-Type": "text/plain"}, b"{}")
        assert error.status == 415

    def test_subscribe_must_not_carry_a_stream_id(self) -> None:
        body = json.dumps({"type": "SUBSCRIBE", "subscribe": {"framework_info": {}}}).encode()
        error = rejected("POST", {**JSON_HEADERS, "Mesos-Stream-Id": "x"}, body)
        assert error.message == "Subscribe calls should not include the 'Mesos-Stream-Id' header"

    @pytest.mark.parametrize(
        "accept", [None, "*/*", "application/*", "application/json;q=0.5, text/html"]
    )
    def test_accept_headers_that_allow_json(self, accept: str | None) -> None:
        headers = {"Content-Type": "application/json"}
        if accept is not None:
            headers["Accept"] = accept
        body = json.dumps({"type": "SUBSCRIBE", "subscribe": {"framework_info": {}}}).encode()
        assert parse_scheduler_request("POST", headers, body)["type"] == "SUBSCRIBE"

    def test_json_that_is_not_an_object(self) -> None:
        assert rejected("POST", JSON_HEADERS, b"[1]").status == 400

    def test_agent_calls(self) -> None:
        call = parse_agent_call(b'{"type": "UPDATE", "update": {"status": {}}}')
        assert call["type"] == "UPDATE"
        for bad in (b"nope", b"[]", b'{"type": "RUN"}', b'{"type": "MESSAGE"}'):
            with pytest.raises(CallRejected) as info:
                parse_agent_call(bad)
            assert info.value.status == 400


# ---------------------------------------------------------------------------------------------
# Subscription


class TestSubscribe:
    def test_subscribed_then_heartbeat_in_the_recorded_shape(self, master: Master) -> None:
        stream = master.subscribe()
        events = master.take(stream)
        expected = recorded(FW1 / "events" / "001_SUBSCRIBED.json")
        # Only the port differs from the recording (the recorded master ran on 5050).
        assert events[0] == expected
        assert events[1] == {"type": "HEARTBEAT"}

    def test_framework_ids_count_up(self, master: Master) -> None:
        master.subscribe()
        second = master.subscribe()
        (event,) = master.take(second, "SUBSCRIBED")
        assert event["subscribed"]["framework_id"] == {"value": f"{MASTER_ID}-0001"}

    def test_roles_without_multi_role_is_an_error_event(self, master: Master) -> None:
        info = framework_info()
        info["capabilities"] = []
        stream = master.subscribe(info)
        assert master.take(stream) == [
            {
                "type": "ERROR",
                "error": {
                    "message": "'FrameworkInfo.roles' must not be set when the framework is not"
                    " MULTI_ROLE capable"
                },
            }
        ]
        assert master.closed(stream)
        assert master.state.state_json()["frameworks"] == []

    def test_failover_moves_the_framework_to_the_new_stream(self, master: Master) -> None:
        old = master.subscribe()
        new = master.subscribe(framework_info(id={"value": FW}))
        assert master.take(old)[-1] == {
            "type": "ERROR",
            "error": {"message": "Framework failed over"},
        }
        assert master.closed(old)
        (event,) = master.take(new, "SUBSCRIBED")
        assert event["subscribed"]["framework_id"] == {"value": FW}
        with pytest.raises(CallRejected, match="didn't match the stream ID"):
            master.call(old, "REVIVE")
        assert master.call(new, "REVIVE") == []

    def test_unknown_id_is_accepted_after_a_master_restart(self, master: Master) -> None:
        stream = master.subscribe(framework_info(id={"value": "elsewhere-0007"}))
        (event,) = master.take(stream, "SUBSCRIBED")
        assert event["subscribed"]["framework_id"] == {"value": "elsewhere-0007"}

    def test_heartbeats_every_interval(self) -> None:
        master = Master(heartbeat_interval=15.0)
        agent = master.register()
        stream = master.subscribe()
        master.take(stream)
        master.take(agent)
        master.tick(14.9)
        assert master.take(stream, "HEARTBEAT") == []
        master.tick(0.2)
        assert master.take(stream, "HEARTBEAT") == [{"type": "HEARTBEAT"}]
        assert master.take(agent, "HEARTBEAT") == [{"type": "HEARTBEAT"}]


class TestCallGuards:
    def test_unknown_framework(self, cluster: tuple[Master, str, str]) -> None:
        master, _, stream = cluster
        with pytest.raises(CallRejected) as info:
            master.call(stream, "REVIVE", fw="nope")
        assert (info.value.status, info.value.message) == (
            meta("02_ERR_revive_unknown_framework")["status"],
            meta("02_ERR_revive_unknown_framework")["response_body"],
        )

    def test_missing_stream_id(self, cluster: tuple[Master, str, str]) -> None:
        master, _, _ = cluster
        with pytest.raises(CallRejected) as info:
            master.state.call(
                {"type": "REVIVE", "framework_id": {"value": FW}}, stream_id=None, now=master.now
            )
        assert info.value.message == meta("09_ERR_revive_without_stream_id")["response_body"]

    def test_wrong_stream_id(self, cluster: tuple[Master, str, str]) -> None:
        master, _, _ = cluster
        wrong = "03cc0c64-1bcb-4487-a468-d7315f874cac"
        with pytest.raises(CallRejected) as info:
            master.call(wrong, "REVIVE")
        assert info.value.message == meta("10_ERR_revive_wrong_stream_id")["response_body"]

    def test_disconnected_framework_is_not_subscribed(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, _, stream = cluster
        master.state.framework_stream_closed(stream, now=master.now)
        with pytest.raises(CallRejected) as info:
            master.call(stream, "REVIVE")
        assert (info.value.status, info.value.message) == (403, "Framework is not subscribed")

    def test_unsupported_calls_are_accepted_and_ignored(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, _, stream = cluster
        assert master.call(stream, "REQUEST", {"requests": []}) == []


# ---------------------------------------------------------------------------------------------
# Offers


class TestOffers:
    def test_offer_in_the_recorded_shape(self, cluster: tuple[Master, str, str]) -> None:
        master, _, stream = cluster
        master.tick()
        (event,) = master.take(stream, "OFFERS")
        expected = recorded(FW1 / "events" / "003_OFFERS.json")
        assert event == expected

    def test_no_second_offer_while_one_is_outstanding(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, _, stream = cluster
        master.offer(stream)
        master.tick(5)
        assert master.take(stream, "OFFERS") == []

    def test_offers_wait_for_a_subscribed_framework(self, master: Master) -> None:
        master.register()
        assert [o for o in master.tick() if isinstance(o, Send)] == []

    def test_decline_filters_for_refuse_seconds_then_revive(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, _, stream = cluster
        offer = master.offer(stream)
        master.call(
            stream, "DECLINE", {"offer_ids": [offer["id"]], "filters": {"refuse_seconds": 3600.0}}
        )
        master.tick(4)
        assert master.take(stream, "OFFERS") == []
        master.call(stream, "REVIVE")
        assert master.state.next_deadline() == float("-inf")  # at once, not next round
        again = master.offer(stream)
        assert again["id"] == {"value": f"{MASTER_ID}-O1"}

    def test_decline_default_filter_is_five_seconds(self, cluster: tuple[Master, str, str]) -> None:
        master, _, stream = cluster
        offer = master.offer(stream)
        master.call(stream, "DECLINE", {"offer_ids": [offer["id"]]})
        master.tick(4.9)
        assert master.take(stream, "OFFERS") == []
        master.tick(1.1)  # the filter expired at 5 s; the next allocation round offers
        assert len(master.take(stream, "OFFERS")) == 1

    def test_decline_of_an_unknown_offer_is_ignored(self, cluster: tuple[Master, str, str]) -> None:
        master, _, stream = cluster
        assert master.call(stream, "DECLINE", {"offer_ids": [{"value": "no-such-offer"}]}) == []

    def test_suppress_then_revive(self, cluster: tuple[Master, str, str]) -> None:
        master, _, stream = cluster
        master.call(stream, "SUPPRESS")
        master.tick(10)
        assert master.take(stream, "OFFERS") == []
        master.call(stream, "REVIVE")
        assert master.offer(stream)

    def test_offers_are_shared_between_agents_and_frameworks(self, master: Master) -> None:
        master.register()
        master.register()
        first = master.subscribe()
        second = master.subscribe()
        master.tick()
        got = master.take(first, "OFFERS") + master.take(second, "OFFERS")
        agents = {o["agent_id"]["value"] for e in got for o in e["offers"]["offers"]}
        assert agents == {f"{MASTER_ID}-S0", f"{MASTER_ID}-S1"}
        assert len(got) == 2  # one agent each

    def test_disconnected_framework_loses_its_offers_to_another(self, master: Master) -> None:
        master.register()
        first = master.subscribe()
        master.offer(first)
        second = master.subscribe()
        master.take(second)
        assert master.state.framework_stream_closed(first, now=master.now) == []
        assert master.offer(second)["agent_id"] == {"value": AGENT}

    def test_nothing_to_do_means_no_deadline_but_the_next_round(self, master: Master) -> None:
        assert master.state.next_deadline() == float("-inf")  # first round due at once
        master.tick()
        assert master.state.next_deadline() == master.now + 1.0


# ---------------------------------------------------------------------------------------------
# ACCEPT


def launched(master: Master, agent_stream: str) -> list[dict[str, Any]]:
    return [e["run_task"] for e in master.take(agent_stream, "RUN_TASK")]


class TestAccept:
    def test_valid_task_goes_to_the_agent(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T1"))
        (run,) = launched(master, agent_stream)
        assert run["framework_id"] == {"value": FW}
        assert run["framework_info"]["id"] == {"value": FW}
        assert run["task"]["agent_id"] == {"value": AGENT}
        assert run["task"]["executor"]["framework_id"] == {"value": FW}
        assert all(r["allocation_info"] == {"role": "*"} for r in run["task"]["resources"])
        assert master.take(stream, "UPDATE") == []

    def test_resources_without_allocation_info_get_it(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T6", command={"value": "sleep 1"}))
        (run,) = launched(master, agent_stream)
        assert [r["allocation_info"] for r in run["task"]["resources"]] == [{"role": "*"}] * 2

    def test_next_offer_is_what_is_left_and_names_the_executor(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, _, stream = cluster
        master.launch(stream, master.offer(stream), task("T1"), filters={"refuse_seconds": 1.0})
        master.tick(0.5)
        assert master.take(stream, "OFFERS") == []  # the remainder is filtered for 1 s
        master.tick(1.0)
        (event,) = master.take(stream, "OFFERS")
        expected = recorded(FW1 / "events" / "007_OFFERS.json")
        (offer,) = event["offers"]["offers"]
        assert offer["resources"] == expected["offers"]["offers"][0]["resources"]
        assert offer["executor_ids"] == [{"value": "E1"}]

    def test_finished_task_frees_its_resources(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T1"))
        master.update(agent_stream, "T1", "TASK_FINISHED")
        assert master.state.next_deadline() == float("-inf")
        offer = master.offer(stream)
        cpus = next(r for r in offer["resources"] if r["name"] == "cpus")
        assert cpus["scalar"]["value"] == 1.9  # only the executor still holds 0.1

    def both_or_neither(self) -> str:
        event = recorded(FW1 / "events" / "016_UPDATE_TASK_ERROR_T3.json")
        return str(event["update"]["status"]["message"])

    def errors(self, master: Master, stream: str) -> list[dict[str, Any]]:
        return statuses(master.take(stream, "UPDATE"))

    def test_task_with_command_and_executor(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.launch(
            stream, master.offer(stream), task("T3", executor=executor(), command={"value": "x"})
        )
        (status,) = self.errors(master, stream)
        expected = recorded(FW1 / "events" / "016_UPDATE_TASK_ERROR_T3.json")["update"]["status"]
        assert without(status, "timestamp") == without(expected, "timestamp")
        assert launched(master, agent_stream) == []

    def test_task_with_neither(self, cluster: tuple[Master, str, str]) -> None:
        master, _, stream = cluster
        bare = task("T3")
        del bare["executor"]
        master.launch(stream, master.offer(stream), bare)
        (status,) = self.errors(master, stream)
        assert status["message"] == self.both_or_neither()
        assert "uuid" not in status

    def test_more_than_offered_quotes_both(self, cluster: tuple[Master, str, str]) -> None:
        master, _, stream = cluster
        master.launch(stream, master.offer(stream), task("T2"))
        master.tick(5)
        offer = master.offer(stream)
        t4 = task(
            "T4",
            command={"value": "sleep 1"},
        )
        t4["resources"] = [scalar("cpus", 9.8), scalar("mem", 32)]
        master.launch(stream, offer, t4)
        (status,) = self.errors(master, stream)
        expected = recorded(FW1 / "events" / "018_UPDATE_TASK_ERROR_T4.json")["update"]["status"]
        assert without(status, "timestamp") == without(expected, "timestamp")

    def test_executor_info_must_match_the_running_one(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, _, stream = cluster
        t1 = recorded(FW1 / "calls" / "16_ACCEPT_LAUNCH_T1_on_E1.request.json")
        t5 = recorded(
            FW1 / "calls" / "29_ACCEPT_T5_same_executor_id_different_ExecutorInfo.request.json"
        )
        master.launch(
            stream, master.offer(stream), t1["accept"]["operations"][0]["launch"]["task_infos"][0]
        )
        master.tick(5)
        master.launch(
            stream, master.offer(stream), t5["accept"]["operations"][0]["launch"]["task_infos"][0]
        )
        (status,) = self.errors(master, stream)
        expected = recorded(FW1 / "events" / "020_UPDATE_TASK_ERROR_T5.json")["update"]["status"]
        assert status["message"].startswith(
            "ExecutorInfo is not compatible with existing ExecutorInfo with same ExecutorID."
        )
        assert without(status, "timestamp") == without(expected, "timestamp")

    def test_two_tasks_in_one_accept_with_different_executor_infos(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, agent_stream, stream = cluster
        other = task("B", executor=executor(command="other"))
        master.launch(stream, master.offer(stream), task("A"), other)
        (status,) = self.errors(master, stream)
        assert status["task_id"] == {"value": "B"}
        assert [r["task"]["task_id"] for r in launched(master, agent_stream)] == [{"value": "A"}]

    def test_duplicate_task_id(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T1"), task("T1"))
        (status,) = self.errors(master, stream)
        assert status["message"] == "Task has duplicate ID: T1"
        assert (status["state"], status["reason"], status["source"]) == (
            "TASK_ERROR",
            "REASON_TASK_INVALID",
            "SOURCE_MASTER",
        )
        assert len(launched(master, agent_stream)) == 1

    def test_second_task_must_fit_in_what_the_first_left(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, _, stream = cluster
        big = task("big", command={"value": "x"})
        big["resources"] = [scalar("cpus", 1.5)]
        bigger = task("bigger", command={"value": "x"})
        bigger["resources"] = [scalar("cpus", 0.6)]
        master.launch(stream, master.offer(stream), big, bigger)
        (status,) = self.errors(master, stream)
        assert status["task_id"] == {"value": "bigger"}
        assert "is more than available" in status["message"]

    @pytest.mark.parametrize(
        ("mutate", "message"),
        [
            (lambda t: t.update(resources=[]), "Task uses no resources"),
            (
                lambda t: t.update(agent_id={"value": "x"}),
                f"Task uses invalid agent x while agent {AGENT} is expected",
            ),
            (
                lambda t: t["executor"].update(type="DEFAULT"),
                "'ExecutorInfo.type' must be 'CUSTOM'",
            ),
            (lambda t: t["executor"].pop("command"), "'ExecutorInfo.command' must be set"),
            (
                lambda t: t["task_id"].update(value=""),
                "Task has an invalid TaskID: ID must not be empty",
            ),
            (
                lambda t: t["resources"].append({"name": "x", "type": "SET"}),
                "Task uses invalid resources: resource 'x' has type 'SET'",
            ),
        ],
    )
    def test_other_task_rules(
        self, cluster: tuple[Master, str, str], mutate: Any, message: str
    ) -> None:
        master, _, stream = cluster
        bad = task("T9")
        mutate(bad)
        master.launch(stream, master.offer(stream), bad)
        (status,) = self.errors(master, stream)
        assert status["message"].startswith(message)

    @pytest.mark.parametrize(("pa", "state"), [(False, "TASK_LOST"), (True, "TASK_DROPPED")])
    def test_unknown_offer(self, master: Master, pa: bool, state: str) -> None:
        master.register()
        stream = master.subscribe(partition_aware=pa)
        master.take(stream)
        master.launch(stream, {"id": {"value": "gone"}}, task("T1"))
        (status,) = statuses(master.take(stream, "UPDATE"))
        assert status == {
            "task_id": {"value": "T1"},
            "state": state,
            "message": "Task launched with invalid offers: Offer gone is no longer valid",
            "source": "SOURCE_MASTER",
            "reason": "REASON_INVALID_OFFERS",
            "agent_id": {"value": AGENT},
            "timestamp": WALL,
        }

    def test_used_offer_is_no_longer_valid(self, cluster: tuple[Master, str, str]) -> None:
        master, _, stream = cluster
        offer = master.offer(stream)
        master.launch(stream, offer, task("T1"))
        master.launch(stream, offer, task("T2"))
        (status,) = statuses(master.take(stream, "UPDATE"))
        assert status["message"].endswith(f"Offer {offer['id']['value']} is no longer valid")

    def test_duplicate_offer_ids(self, cluster: tuple[Master, str, str]) -> None:
        master, _, stream = cluster
        offer = master.offer(stream)
        master.call(
            stream,
            "ACCEPT",
            {
                "offer_ids": [offer["id"], offer["id"]],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task("T1")]}}],
            },
        )
        (status,) = statuses(master.take(stream, "UPDATE"))
        assert "Duplicate offer" in status["message"]
        # the offer was discarded: its resources are offered again
        assert master.offer(stream)

    def test_no_offers_specified(self, cluster: tuple[Master, str, str]) -> None:
        master, _, stream = cluster
        master.call(
            stream,
            "ACCEPT",
            {
                "offer_ids": [],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task("T1")]}}],
            },
        )
        (status,) = statuses(master.take(stream, "UPDATE"))
        assert status["message"] == "Task launched with invalid offers: No offers specified"


# ---------------------------------------------------------------------------------------------
# Updates, acknowledgements, kill, messages, executors


class TestTaskTraffic:
    def test_update_is_forwarded_unchanged(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T1"))
        expected = recorded(FW1 / "events" / "005_UPDATE_TASK_STARTING_T1.json")
        body = {"framework_id": {"value": FW}, "status": expected["update"]["status"]}
        master.agent(agent_stream, "UPDATE", body)
        assert master.take(stream, "UPDATE") == [expected]

    def test_update_for_a_disconnected_framework_is_dropped(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T1"))
        master.state.framework_stream_closed(stream, now=master.now)
        master.update(agent_stream, "T1", "TASK_RUNNING")
        assert master.take(stream) == []

    def test_acknowledge_goes_to_the_agent_and_retires_terminal_tasks(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T1"))
        master.update(agent_stream, "T1", "TASK_FINISHED", uuid="done")
        ack = {"agent_id": {"value": AGENT}, "task_id": {"value": "T1"}, "uuid": "done"}
        master.call(stream, "ACKNOWLEDGE", ack)
        assert master.take(agent_stream, "ACKNOWLEDGE") == [
            {
                "type": "ACKNOWLEDGE",
                "acknowledge": {
                    "framework_id": {"value": FW},
                    "task_id": {"value": "T1"},
                    "uuid": "done",
                },
            }
        ]
        master.take(stream)
        master.call(stream, "RECONCILE", {"tasks": []})
        assert master.take(stream, "UPDATE") == []
        state = master.state.state_json()["frameworks"][0]
        assert [t["id"] for t in state["completed_tasks"]] == ["T1"]

    def test_acknowledging_a_running_task_keeps_it(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T1"))
        master.update(agent_stream, "T1", "TASK_RUNNING", uuid="r")
        master.call(
            stream,
            "ACKNOWLEDGE",
            {"agent_id": {"value": AGENT}, "task_id": {"value": "T1"}, "uuid": "r"},
        )
        master.take(stream)
        master.call(stream, "RECONCILE", {"tasks": []})
        assert [s["state"] for s in statuses(master.take(stream))] == ["TASK_RUNNING"]

    def test_kill_known_task(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T2"))
        master.call(stream, "KILL", {"task_id": {"value": "T2"}, "agent_id": {"value": AGENT}})
        assert master.take(agent_stream, "KILL_TASK") == [
            {
                "type": "KILL_TASK",
                "kill_task": {"framework_id": {"value": FW}, "task_id": {"value": "T2"}},
            }
        ]

    def test_kill_unknown_task_reconciles_it(self, cluster: tuple[Master, str, str]) -> None:
        master, _, stream = cluster
        master.call(
            stream,
            "KILL",
            {"task_id": {"value": "no-such-task-kill"}, "agent_id": {"value": AGENT}},
        )
        (status,) = statuses(master.take(stream))
        expected = recorded(FW1 / "events" / "054_UPDATE_TASK_LOST_no-such-task-kill.json")
        assert without(status, "timestamp") == without(expected["update"]["status"], "timestamp")

    def test_messages_both_ways(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        to_executor = recorded(FW1 / "calls" / "23_MESSAGE_to_executor_E1.request.json")["message"]
        master.call(stream, "MESSAGE", to_executor)
        assert master.take(agent_stream, "MESSAGE") == [
            {
                "type": "MESSAGE",
                "message": {
                    "framework_id": {"value": FW},
                    "executor_id": {"value": "E1"},
                    "data": to_executor["data"],
                },
            }
        ]
        expected = recorded(FW1 / "events" / "011_MESSAGE.json")
        master.agent(
            agent_stream,
            "MESSAGE",
            {
                "framework_id": {"value": FW},
                "executor_id": {"value": "E1"},
                "data": expected["message"]["data"],
            },
        )
        assert master.take(stream, "MESSAGE") == [expected]

    def test_shutdown_executor(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.call(
            stream, "SHUTDOWN", {"executor_id": {"value": "E1"}, "agent_id": {"value": AGENT}}
        )
        (event,) = master.take(agent_stream, "SHUTDOWN_EXECUTOR")
        assert event["shutdown_executor"]["executor_id"] == {"value": "E1"}

    def test_executor_exited_is_a_failure_and_frees_it(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T10", executor=executor("E5")))
        master.agent(
            agent_stream,
            "EXECUTOR_EXITED",
            {"framework_id": {"value": FW}, "executor_id": {"value": "E5"}, "status": 35072},
        )
        assert master.take(stream, "FAILURE") == [recorded(FW1 / "events" / "057_FAILURE.json")]
        master.update(agent_stream, "T10", "TASK_FAILED")
        offer = master.offer(stream)
        assert "executor_ids" not in offer
        assert next(r for r in offer["resources"] if r["name"] == "cpus")["scalar"]["value"] == 2.0

    def test_unknown_agent_stream_must_register_again(self, master: Master) -> None:
        with pytest.raises(CallRejected) as info:
            master.agent("nope", "UPDATE", {"status": {}})
        assert info.value.status == 404


# ---------------------------------------------------------------------------------------------
# Reconciliation


class TestReconcile:
    def test_implicit_gives_latest_state_without_uuid(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T2"))
        running = recorded(FW1 / "events" / "010_UPDATE_TASK_RUNNING_T2.json")["update"]["status"]
        master.agent(agent_stream, "UPDATE", {"framework_id": {"value": FW}, "status": running})
        master.take(stream)
        master.call(stream, "RECONCILE", {"tasks": []})
        (status,) = statuses(master.take(stream))
        expected = recorded(FW1 / "events" / "012_UPDATE_TASK_RUNNING_T2.json")["update"]["status"]
        assert without(status, "timestamp") == without(expected, "timestamp")
        assert list(status) == list(expected)

    @pytest.mark.parametrize(
        ("pa", "with_agent", "event"),
        [
            (False, True, FW1 / "events" / "013_UPDATE_TASK_LOST_no-such-task.json"),
            (False, False, FW1 / "events" / "014_UPDATE_TASK_LOST_no-such-task-2.json"),
            (True, True, FW2 / "events" / "004_UPDATE_TASK_GONE_no-such-task.json"),
            (True, False, FW2 / "events" / "005_UPDATE_TASK_UNKNOWN_no-such-task-2.json"),
        ],
    )
    def test_explicit_unknown_task(
        self, master: Master, pa: bool, with_agent: bool, event: Path
    ) -> None:
        expected = recorded(event)["update"]["status"]
        master.register()
        stream = master.subscribe(partition_aware=pa)
        master.take(stream)
        item: dict[str, Any] = {"task_id": expected["task_id"]}
        if with_agent:
            item["agent_id"] = {"value": AGENT}
        master.call(stream, "RECONCILE", {"tasks": [item]})
        (status,) = statuses(master.take(stream))
        assert without(status, "timestamp") == without(expected, "timestamp")

    def test_explicit_known_task(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T2"))
        master.update(agent_stream, "T2", "TASK_RUNNING")
        master.take(stream)
        master.call(stream, "RECONCILE", {"tasks": [{"task_id": {"value": "T2"}}]})
        (status,) = statuses(master.take(stream))
        assert (status["state"], status["message"]) == (
            "TASK_RUNNING",
            "Reconciliation: Latest task state",
        )

    def test_explicit_after_terminal_ack_is_gone(self, master: Master) -> None:
        agent_stream = master.register()
        stream = master.subscribe(partition_aware=True)
        master.take(stream)
        master.launch(stream, master.offer(stream), task("P1"))
        master.update(agent_stream, "P1", "TASK_FAILED", uuid="f")
        ack = {"agent_id": {"value": AGENT}, "task_id": {"value": "P1"}, "uuid": "f"}
        master.call(stream, "ACKNOWLEDGE", ack)
        master.take(stream)
        master.call(
            stream,
            "RECONCILE",
            {"tasks": [{"task_id": {"value": "P1"}, "agent_id": {"value": AGENT}}]},
        )
        (status,) = statuses(master.take(stream))
        expected = recorded(FW2 / "events" / "011_UPDATE_TASK_GONE_P1.json")["update"]["status"]
        assert without(status, "timestamp") == without(expected, "timestamp")


# ---------------------------------------------------------------------------------------------
# Agents: loss, re-registration, master restart


class TestAgents:
    def test_registered_and_ids(self, master: Master) -> None:
        stream = master.register()
        assert master.take(stream) == [
            {
                "type": "REGISTERED",
                "registered": {"agent_id": {"value": AGENT}, "heartbeat_interval_seconds": 15.0},
            }
        ]
        master.register()
        assert [s["id"] for s in master.state.state_json()["slaves"]] == [AGENT, f"{MASTER_ID}-S1"]

    def test_bad_registration(self, master: Master) -> None:
        for body in ({"type": "CALL"}, {"type": "REGISTER", "register": {"agent_info": {}}}):
            with pytest.raises(CallRejected):
                master.state.register_agent(body, now=master.now)

    @pytest.mark.parametrize(("pa", "state"), [(False, "TASK_LOST"), (True, "TASK_UNREACHABLE")])
    def test_agent_lost_after_the_timeout(self, master: Master, pa: bool, state: str) -> None:
        agent_stream = master.register()
        stream = master.subscribe(partition_aware=pa, checkpoint=True)
        master.launch(stream, master.offer(stream), task("T1"))
        master.tick(2)
        pending = master.take(stream, "OFFERS")
        master.tick(5)  # past the default ACCEPT filter: the rest is offered
        pending += master.take(stream, "OFFERS")
        assert pending
        master.take(stream)
        closed = master.state.agent_stream_closed(agent_stream, now=master.now)
        rescinds = [o.event for o in closed if isinstance(o, Send)]
        assert [e["type"] for e in rescinds] == ["RESCIND"]  # offers on a vanished agent go
        assert rescinds[0]["rescind"]["offer_id"] == pending[-1]["offers"]["offers"][0]["id"]
        master.tick(9.9)
        assert statuses(master.take(stream)) == []
        master.tick(0.2)
        events = master.take(stream)
        (status,) = statuses(events)
        assert status == {
            "task_id": {"value": "T1"},
            "state": state,
            "message": "health check timed out",
            "source": "SOURCE_MASTER",
            "reason": "REASON_AGENT_REMOVED",
            "agent_id": {"value": AGENT},
            "executor_id": {"value": "E1"},
            "timestamp": WALL,
            "unreachable_time": {"nanoseconds": int(WALL * 1e9)},
        }
        assert events[-1] == {"type": "FAILURE", "failure": {"agent_id": {"value": AGENT}}}
        master.call(
            stream,
            "RECONCILE",
            {"tasks": [{"task_id": {"value": "T1"}, "agent_id": {"value": AGENT}}]},
        )
        (again,) = statuses(master.take(stream))
        assert again["message"] == "Reconciliation: Task is unreachable"
        assert again["state"] == state
        assert master.state.state_json()["unreachable_slaves"] == 1.0

    def test_every_connected_framework_hears_of_a_lost_agent(self, master: Master) -> None:
        agent_stream = master.register()
        first, second = master.subscribe(), master.subscribe()
        master.state.agent_stream_closed(agent_stream, now=master.now)
        master.tick(10)
        for stream in (first, second):
            assert master.take(stream, "FAILURE") == [
                {"type": "FAILURE", "failure": {"agent_id": {"value": AGENT}}}
            ]
        assert master.state.state_json()["slaves"] == []

    def test_reregistration_within_the_timeout_keeps_everything(self, master: Master) -> None:
        agent_stream = master.register()
        stream = master.subscribe(checkpoint=True)
        master.launch(stream, master.offer(stream), task("T1"))
        master.state.agent_stream_closed(agent_stream, now=master.now)
        master.tick(5)
        still = {"framework_id": {"value": FW}, "executor_info": executor(), "tasks": [task("T1")]}
        new_stream = master.register(agent_id=AGENT, executors=[still])
        master.tick(20)
        assert statuses(master.take(stream)) == []
        (event,) = master.take(new_stream, "REGISTERED")
        assert event["registered"]["agent_id"] == {"value": AGENT}
        assert master.state.state_json()["frameworks"][0]["tasks"][0]["id"] == "T1"

    @pytest.mark.parametrize("pa", [False, True])
    def test_a_framework_that_does_not_checkpoint_loses_its_tasks_at_once(
        self, master: Master, pa: bool
    ) -> None:
        # Mesos' Master::disconnect: such executors cannot outlive their agent's restart.
        agent_stream = master.register()
        stream = master.subscribe(partition_aware=pa)
        master.launch(stream, master.offer(stream), task("T1"))
        master.take(stream)
        master.outputs += master.state.agent_stream_closed(agent_stream, now=master.now)
        (status,) = statuses(master.take(stream))
        assert without(status, "timestamp") == {
            "task_id": {"value": "T1"},
            "state": "TASK_LOST",
            "message": "Agent localhost disconnected",
            "source": "SOURCE_MASTER",
            "reason": "REASON_AGENT_DISCONNECTED",
            "agent_id": {"value": AGENT},
            "executor_id": {"value": "E1"},
        }
        assert master.state.state_json()["frameworks"][0]["tasks"] == []
        master.tick(11)  # and it is not reported again when the agent is marked unreachable
        assert statuses(master.take(stream)) == []

    def test_a_checkpointing_framework_keeps_its_tasks_while_the_agent_is_away(
        self, master: Master
    ) -> None:
        agent_stream = master.register()
        stream = master.subscribe(checkpoint=True)
        master.launch(stream, master.offer(stream), task("T1"))
        master.take(stream)
        master.outputs += master.state.agent_stream_closed(agent_stream, now=master.now)
        assert statuses(master.take(stream)) == []
        assert master.state.state_json()["frameworks"][0]["tasks"][0]["id"] == "T1"

    @pytest.mark.parametrize(("pa", "state"), [(False, "TASK_LOST"), (True, "TASK_DROPPED")])
    def test_a_launch_the_reregistering_agent_never_got_ends(
        self, master: Master, pa: bool, state: str
    ) -> None:
        agent_stream = master.register()
        stream = master.subscribe(partition_aware=pa, checkpoint=True)
        master.launch(stream, master.offer(stream), task("T1"), task("T2"), task("T3"))
        master.update(agent_stream, "T3", "TASK_RUNNING")  # ran: its own updates end it
        master.take(stream)
        master.state.agent_stream_closed(agent_stream, now=master.now)
        reported = {"framework_id": {"value": FW}, "executor_info": executor(),
                    "tasks": [task("T2")]}
        master.register(agent_id=AGENT, executors=[reported])  # T1's RUN_TASK was lost
        (lost,) = statuses(master.take(stream))
        assert lost["task_id"] == {"value": "T1"}
        assert (lost["state"], lost["reason"]) == (state, "REASON_RECONCILIATION")
        assert lost["message"] == "Reconciliation: task unknown to the agent"
        tasks = master.state.state_json()["frameworks"][0]["tasks"]
        assert sorted(t["id"] for t in tasks) == ["T2", "T3"]

    def test_an_agent_new_to_this_master_ends_no_task(self) -> None:
        master = Master()  # a restarted master learns the tasks from the agents instead
        stream = master.subscribe(framework_info(id={"value": FW}))
        master.register(agent_id=AGENT, executors=[])
        assert statuses(master.take(stream)) == []

    def test_reregistration_on_a_live_stream_closes_the_old_one(self, master: Master) -> None:
        old = master.register()
        master.register(agent_id=AGENT)
        assert master.closed(old)
        assert master.state.agent_stream_closed(old, now=master.now) == []  # stale: ignored

    def test_unreachable_agent_coming_back(self, master: Master) -> None:
        agent_stream = master.register()
        stream = master.subscribe(checkpoint=True)
        master.launch(stream, master.offer(stream), task("T1"))
        master.state.agent_stream_closed(agent_stream, now=master.now)
        master.tick(11)
        back = master.register(
            agent_id=AGENT,
            executors=[
                {"framework_id": {"value": FW}, "executor_info": executor(), "tasks": [task("T1")]}
            ],
        )
        # the framework is not partition-aware: its tasks were reported LOST, so they must go
        assert master.take(back, "SHUTDOWN_FRAMEWORK") == [
            {"type": "SHUTDOWN_FRAMEWORK", "shutdown_framework": {"framework_id": {"value": FW}}}
        ]

    def test_restarted_master_compares_executors_by_value(self) -> None:
        # The agent reports the ExecutorInfo with protobuf defaults filled in (command.shell);
        # the framework's next task on that executor carries the one it always sent.
        master = Master()
        reported = executor()
        reported["framework_id"] = {"value": FW}
        reported["command"]["shell"] = True
        for r in reported["resources"]:
            r["allocation_info"] = {"role": "*"}
        master.register(
            agent_id=AGENT,
            executors=[
                {
                    "framework_id": {"value": FW},
                    "framework_info": framework_info(id={"value": FW}),
                    "executor_info": reported,
                    "tasks": [task("T2")],
                    "statuses": [],
                }
            ],
        )
        stream = master.subscribe(framework_info(id={"value": FW}))
        master.take(stream)
        master.launch(stream, master.offer(stream), task("T3"))
        assert statuses(master.take(stream, "UPDATE")) == []

    def test_recovered_framework_that_never_returns_is_removed(self) -> None:
        master = Master()
        agent_stream = master.register(
            agent_id=AGENT,
            executors=[
                {
                    "framework_id": {"value": FW},
                    "framework_info": framework_info(id={"value": FW}, failover_timeout=30.0),
                    "executor_info": executor(),
                    "tasks": [task("T2")],
                }
            ],
        )
        master.tick(29)
        assert master.take(agent_stream, "SHUTDOWN_FRAMEWORK") == []
        master.tick(2)
        assert len(master.take(agent_stream, "SHUTDOWN_FRAMEWORK")) == 1

    def test_restarted_master_learns_from_agents(self) -> None:
        master = Master()
        running = {
            "task_id": {"value": "T2"},
            "state": "TASK_RUNNING",
            "source": "SOURCE_EXECUTOR",
            "agent_id": {"value": AGENT},
            "timestamp": WALL,
            "uuid": "u",
        }
        ex = executor()
        ex["framework_id"] = {"value": FW}
        master.register(
            agent_id=AGENT,
            executors=[
                {
                    "framework_id": {"value": FW},
                    "framework_info": framework_info(id={"value": FW}),
                    "executor_info": ex,
                    "tasks": [task("T2")],
                    "statuses": [running],
                }
            ],
        )
        state = master.state.state_json()
        assert state["frameworks"][0]["recovered"] is True
        assert state["slaves"][0]["used_resources"]["cpus"] == 0.2
        stream = master.subscribe(framework_info(id={"value": FW}))
        master.take(stream)
        master.call(stream, "RECONCILE", {"tasks": []})
        (status,) = statuses(master.take(stream))
        assert (status["task_id"], status["state"]) == ({"value": "T2"}, "TASK_RUNNING")
        offer = master.offer(stream)
        assert offer["executor_ids"] == [{"value": "E1"}]


# ---------------------------------------------------------------------------------------------
# Framework removal


class TestRemoval:
    def test_teardown(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T13"))
        master.call(stream, "TEARDOWN")
        assert master.closed(stream)
        assert master.take(agent_stream, "SHUTDOWN_FRAMEWORK") == [
            {"type": "SHUTDOWN_FRAMEWORK", "shutdown_framework": {"framework_id": {"value": FW}}}
        ]
        assert statuses(master.take(stream)) == []  # no update for T13 reached the scheduler
        with pytest.raises(CallRejected) as info:
            master.call(stream, "REVIVE")
        assert info.value.message == meta("66_REVIVE_after_teardown")["response_body"]
        state = master.state.state_json()
        assert state["frameworks"] == []
        assert state["completed_frameworks"][0]["id"] == FW
        assert state["slaves"][0]["used_resources"]["cpus"] == 0.0

    def test_failover_timeout(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.state.framework_stream_closed(stream, now=master.now)
        master.tick(119)
        assert master.take(agent_stream, "SHUTDOWN_FRAMEWORK") == []
        master.tick(2)
        assert len(master.take(agent_stream, "SHUTDOWN_FRAMEWORK")) == 1
        with pytest.raises(CallRejected, match="Framework cannot be found"):
            master.call(stream, "REVIVE")
        again = master.subscribe(framework_info(id={"value": FW}))
        assert master.take(again) == [
            {"type": "ERROR", "error": {"message": "Framework has been removed"}}
        ]
        assert master.closed(again)

    def test_zero_failover_timeout_removes_at_once(self, master: Master) -> None:
        agent_stream = master.register()
        stream = master.subscribe(framework_info(failover_timeout=0.0))
        master.state.framework_stream_closed(stream, now=master.now)
        master.tick()
        assert len(master.take(agent_stream, "SHUTDOWN_FRAMEWORK")) == 1

    def test_resubscribe_within_the_timeout(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.state.framework_stream_closed(stream, now=master.now)
        master.tick(60)
        master.subscribe(framework_info(id={"value": FW}))
        master.tick(120)
        assert master.take(agent_stream, "SHUTDOWN_FRAMEWORK") == []

    def test_agent_reporting_a_removed_framework_is_told_to_shut_it_down(
        self, cluster: tuple[Master, str, str]
    ) -> None:
        master, _, stream = cluster
        master.call(stream, "TEARDOWN")
        back = master.register(
            agent_id=AGENT, executors=[{"framework_id": {"value": FW}, "tasks": []}]
        )
        assert len(master.take(back, "SHUTDOWN_FRAMEWORK")) == 1


# ---------------------------------------------------------------------------------------------
# Tables, /state, text format


class TestTables:
    def test_removed_is_final(self) -> None:
        assert not [k for k in FRAMEWORK_TRANSITIONS if k[0] is FrameworkLifecycle.REMOVED]

    def test_every_agent_state_can_register(self) -> None:
        assert {s for (s, e) in AGENT_TRANSITIONS if e == "register"} == set(AgentLifecycle)

    def test_illegal_transition_is_our_bug(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, _ = cluster
        from toil_mesos.errors import LocalProtocolError

        master.state.agent_stream_closed(agent_stream, now=master.now)
        master.tick(11)
        with pytest.raises(LocalProtocolError, match="no transition for 'timeout'"):
            master.state._agent_lost(master.state._agents[AGENT], master.now)


class TestStateJson:
    def test_keys_match_the_recording(self, cluster: tuple[Master, str, str]) -> None:
        master, agent_stream, stream = cluster
        master.launch(stream, master.offer(stream), task("T2"))
        master.update(agent_stream, "T2", "TASK_RUNNING")
        master.tick(6)  # past the ACCEPT's default 5 s filter
        master.launch(stream, master.offer(stream), task("T1"))
        master.update(agent_stream, "T1", "TASK_FINISHED", uuid="x")
        master.call(
            stream,
            "ACKNOWLEDGE",
            {"agent_id": {"value": AGENT}, "task_id": {"value": "T1"}, "uuid": "x"},
        )
        ours = master.state.state_json()
        expected = recorded(TRANSCRIPTS / "state" / "master_state.json")
        assert set(ours) == set(expected)
        assert set(ours["slaves"][0]) == set(expected["slaves"][0])
        assert ours["slaves"][0]["attributes"] == expected["slaves"][0]["attributes"]
        assert ours["slaves"][0]["resources"] == expected["slaves"][0]["resources"]
        framework, recorded_fw = ours["frameworks"][0], expected["frameworks"][0]
        assert set(framework) == set(recorded_fw)
        assert set(framework["tasks"][0]) == set(recorded_fw["tasks"][0])
        assert set(framework["completed_tasks"][0]) == set(recorded_fw["completed_tasks"][0])
        assert set(framework["executors"][0]) == set(recorded_fw["executors"][0])
        assert framework["used_resources"] == recorded_fw["used_resources"]
        assert ours["activated_slaves"] == 1.0
        json.dumps(ours)  # serialisable


def test_executor_info_text_matches_protobuf_text_format() -> None:
    ex = executor()
    ex["data"] = "AAE="
    text = executor_info_text(ex)
    assert text.splitlines()[:3] == ["executor_id {", '  value: "E1"', "}"]
    assert 'data: "\\000\\001"' in text
    assert text.index("resources {") < text.index("command {") < text.index('name: "executor E1"')
    assert text.endswith("type: CUSTOM\n")
