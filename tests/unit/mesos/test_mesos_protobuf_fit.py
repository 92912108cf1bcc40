"""The JSON we build or parse fits the Mesos protobuf schema (v0, from PyPI ``mesos.interface``).

``mesos.interface`` 1.7.2 is the last Mesos schema on PyPI. Its generated ``mesos_pb2.py`` is
too old to import under protobuf >= 4 (it builds descriptors directly), so the test does not
import it: it reads the serialized ``FileDescriptorProto`` embedded in that file and builds the
message classes in a private descriptor pool, which works with any protobuf runtime. Field names
are translated from v1 where they differ (``agent_id`` -> ``slave_id``), and
``json_format.ParseDict`` then rejects any field or enum value the schema does not know.
"""

from __future__ import annotations

import ast
import base64
import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from toil_mesos.mesos import (
    ExecutorDriver,
    Offers,
    ScriptedStream,
    ScriptedTransport,
    Update,
    parse_executor_event,
    parse_scheduler_event,
)
from toil_mesos.mesos._transport import BLOCK

json_format = pytest.importorskip("google.protobuf.json_format")
descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
descriptor_pool = pytest.importorskip("google.protobuf.descriptor_pool")
message_factory = pytest.importorskip("google.protobuf.message_factory")

# v1 name -> v0 name, for the messages checked here (mesos.proto v0 vs v1/mesos.proto):
# field names, and enum values that say AGENT where v0 says SLAVE.
V1_TO_V0 = {"agent_id": "slave_id", "agent_info": "slave_info"}
V1_TO_V0_ENUM_PREFIXES = {"SOURCE_AGENT": "SOURCE_SLAVE", "REASON_AGENT_": "REASON_SLAVE_"}


def _schema_source() -> str:
    try:
        dist = importlib.metadata.distribution("mesos.interface")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("PyPI package mesos.interface is not installed")
    return Path(str(dist.locate_file("mesos/interface/mesos_pb2.py"))).read_text()


def _serialized_descriptor(source: str) -> bytes:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.keyword) and node.arg == "serialized_pb":
            value = node.value
            if isinstance(value, ast.Call) and isinstance(value.args[0], ast.Constant):
                # protoc wrote the bytes as a latin-1 str passed to _b().
                return str(value.args[0].value).encode("latin-1")
    raise AssertionError("no serialized_pb in mesos_pb2.py")


@pytest.fixture(scope="module")
def v0() -> Callable[[str], Any]:
    """Message class by short name (``"TaskInfo"``) from the v0 ``mesos`` package."""
    proto = descriptor_pb2.FileDescriptorProto.FromString(_serialized_descriptor(_schema_source()))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)

    def message(name: str) -> Any:
        descriptor = pool.FindMessageTypeByName(f"mesos.{name}")
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(descriptor)
        return message_factory.MessageFactory(pool).GetPrototype(descriptor)  # protobuf < 4.21

    return message


def to_v0(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {V1_TO_V0.get(k, k): to_v0(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_v0(v) for v in obj]
    if isinstance(obj, str):
        for v1, v0_prefix in V1_TO_V0_ENUM_PREFIXES.items():
            if obj.startswith(v1):
                return v0_prefix + obj[len(v1) :]
    return obj


def fits(v0: Callable[[str], Any], name: str, obj: Any) -> Any:
    message = v0(name)()
    json_format.ParseDict(to_v0(json.loads(json.dumps(obj))), message)
    return message


def data_of(path: Path) -> bytes:
    return path.read_bytes().split(b"\n", 1)[1]


class TestSchemaHasTeeth:
    def test_unknown_field_is_rejected(self, v0: Callable[[str], Any]) -> None:
        with pytest.raises(json_format.ParseError, match="task_idd"):
            fits(v0, "TaskStatus", {"task_idd": {"value": "T"}, "state": "TASK_RUNNING"})

    def test_untranslated_v1_name_is_rejected(self, v0: Callable[[str], Any]) -> None:
        message = v0("TaskStatus")()
        with pytest.raises(json_format.ParseError, match="agent_id"):
            json_format.ParseDict({"agent_id": {"value": "S0"}}, message)

    def test_bad_enum_is_rejected(self, v0: Callable[[str], Any]) -> None:
        with pytest.raises(json_format.ParseError, match="TASK_SPLENDID"):
            fits(v0, "TaskStatus", {"task_id": {"value": "T"}, "state": "TASK_SPLENDID"})


class TestParsedPayloadsFit:
    def test_every_recorded_offer(self, v0: Callable[[str], Any], transcripts: Path) -> None:
        count = 0
        for path in sorted(transcripts.glob("scheduler/*/events/*_OFFERS.recordio.bin")):
            event = parse_scheduler_event(data_of(path))
            assert isinstance(event, Offers)
            for offer in event.offers:
                message = fits(v0, "Offer", offer)
                assert message.slave_id.value == offer.agent_id.value
                assert message.IsInitialized(), path.name
                count += 1
        assert count > 15

    def test_every_recorded_task_status(self, v0: Callable[[str], Any], transcripts: Path) -> None:
        count = 0
        for path in sorted(transcripts.glob("scheduler/*/events/*_UPDATE_*.recordio.bin")):
            event = parse_scheduler_event(data_of(path))
            assert isinstance(event, Update)
            message = fits(v0, "TaskStatus", event.status)
            assert message.IsInitialized(), path.name
            if event.uuid is not None:
                assert base64.b64encode(message.uuid).decode() == event.uuid
            count += 1
        assert count > 40

    def test_launched_task_infos_and_executor_infos(
        self, v0: Callable[[str], Any], transcripts: Path
    ) -> None:
        count = 0
        for path in sorted(transcripts.glob("executor/*/events/*.recordio.bin")):
            event = parse_executor_event(data_of(path))
            task = getattr(event, "task", None)
            if task is not None:
                assert fits(v0, "TaskInfo", task).IsInitialized(), path.name
                assert fits(v0, "ExecutorInfo", task.executor).IsInitialized(), path.name
                count += 1
            executor_info = getattr(event, "executor_info", None)
            if executor_info is not None:
                assert fits(v0, "ExecutorInfo", executor_info).IsInitialized(), path.name
        assert count >= 7


class TestBuiltPayloadsFit:
    def test_task_infos_we_encode_in_accept(
        self, v0: Callable[[str], Any], transcripts: Path
    ) -> None:
        # test_mesos_calls shows our ACCEPT encoding reproduces these bodies byte for byte.
        for path in sorted(transcripts.glob("scheduler/*/calls/*_ACCEPT_*.request.json")):
            accept = json.loads(path.read_text())["accept"]
            for operation in accept["operations"]:
                assert fits(v0, "Offer.Operation", operation).IsInitialized(), path.name
                for task in operation["launch"]["task_infos"]:
                    assert fits(v0, "TaskInfo", task).IsInitialized(), path.name
            assert fits(v0, "Filters", accept.get("filters", {})).IsInitialized()

    def test_status_the_executor_driver_sends(
        self, v0: Callable[[str], Any], executor_env: dict[str, str]
    ) -> None:
        subscribed = (
            b'{"type":"SUBSCRIBED","subscribed":{"executor_info":{"executor_id":{"value":"E1"}},'
            b'"framework_info":{"user":"u","name":"n"},"agent_info":{"hostname":"h"}}}'
        )
        transport = ScriptedTransport(
            [ScriptedStream([b"%d\n%s" % (len(subscribed), subscribed), BLOCK])]
        )
        driver = ExecutorDriver(_Quiet(), env=executor_env, transport=transport, stop_timeout=5.0)
        driver.start()
        assert transport.wait_for(lambda reqs: len(reqs) == 1, 5.0)
        driver.sendStatusUpdate(
            {
                "task_id": {"value": "T1"},
                "state": "TASK_FAILED",
                "message": "exit 3",
                "reason": "REASON_COMMAND_EXECUTOR_FAILED",
                "data": base64.b64encode(b'{"exit_code": 3}').decode(),
            }
        )
        assert transport.wait_for(lambda reqs: len(reqs) == 2, 5.0)
        driver.stop()
        status = json.loads(transport.posts()[0].body)["update"]["status"]
        message = fits(v0, "TaskStatus", status)
        assert message.IsInitialized()
        assert len(message.uuid) == 16
        assert message.source == v0("TaskStatus").SOURCE_EXECUTOR


class _Quiet:
    """An executor that ignores every callback."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: None
