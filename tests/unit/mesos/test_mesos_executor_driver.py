"""ExecutorDriver on a ScriptedTransport: threads are real but every wait is bounded."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from toil_mesos.errors import ConnectError, LocalProtocolError, RemoteProtocolError
from toil_mesos.mesos import (
    DriverStatus,
    Executor,
    ExecutorDriver,
    ExecutorState,
    ScriptedStream,
    ScriptedTransport,
    encode_record,
)
from toil_mesos.mesos._transport import BLOCK

FID = "42f618ee-43f9-4ca8-88a7-31221df616de-0000"
WAIT = 5.0


def record(obj: dict[str, Any]) -> bytes:
    return encode_record(json.dumps(obj).encode())


SUBSCRIBED = record(
    {
        "type": "SUBSCRIBED",
        "subscribed": {
            "executor_info": {"executor_id": {"value": "E1"}},
            "framework_info": {"user": "root", "name": "fw"},
            "agent_info": {"hostname": "localhost", "id": {"value": "S0"}},
            "container_id": {"value": "c1"},
        },
    }
)


def launch(task_id: str) -> bytes:
    return record(
        {
            "type": "LAUNCH",
            "launch": {
                "task": {
                    "name": task_id,
                    "task_id": {"value": task_id},
                    "agent_id": {"value": "S0"},
                }
            },
        }
    )


class Recorder(Executor):
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._cond = threading.Condition()
        self.on: dict[str, Callable[..., None]] = {}

    def _add(self, name: str, *args: Any) -> None:
        with self._cond:
            self.calls.append((name, args))
            self._cond.notify_all()
        if name in self.on:
            self.on[name](*args)

    def names(self) -> list[str]:
        with self._cond:
            return [n for n, _ in self.calls]

    def args(self, name: str) -> list[tuple[Any, ...]]:
        with self._cond:
            return [a for n, a in self.calls if n == name]

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = WAIT) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate([n for n, _ in self.calls]), timeout)
        assert ok, f"callbacks so far: {self.names()}"

    def registered(
        self, driver: Any, executorInfo: Any, frameworkInfo: Any, agentInfo: Any
    ) -> None:
        self._add("registered", executorInfo, frameworkInfo, agentInfo)

    def reregistered(self, driver: Any, agentInfo: Any) -> None:
        self._add("reregistered", agentInfo)

    def disconnected(self, driver: Any) -> None:
        self._add("disconnected")

    def launchTask(self, driver: Any, task: Any) -> None:
        self._add("launchTask", task)

    def launchTaskGroup(self, driver: Any, tasks: list[Any]) -> None:
        self._add("launchTaskGroup", tasks)

    def killTask(self, driver: Any, taskId: Any) -> None:
        self._add("killTask", taskId)

    def acknowledged(self, driver: Any, taskId: Any, uuid: str) -> None:
        self._add("acknowledged", taskId, uuid)

    def frameworkMessage(self, driver: Any, message: str) -> None:
        self._add("frameworkMessage", message)

    def shutdown(self, driver: Any) -> None:
        self._add("shutdown")

    def error(self, driver: Any, message: str) -> None:
        self._add("error", message)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_driver(
    transport: ScriptedTransport, recorder: Recorder, env: dict[str, str], **kwargs: Any
) -> tuple[ExecutorDriver, FakeClock]:
    clock = FakeClock()
    driver = ExecutorDriver(
        recorder,
        env=env,
        transport=transport,
        clock=clock,
        sleep=clock.sleep,
        wall_clock=lambda: 1795547396.5,
        stop_timeout=WAIT,
        **kwargs,
    )
    return driver, clock


def updates(transport: ScriptedTransport) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in transport.posts() if json.loads(r.body)["type"] == "UPDATE"]


def subscribes(transport: ScriptedTransport) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in transport.requests if r.kind == "stream"]


def ack_for(transport: ScriptedTransport, count: int) -> Callable[[], bytes]:
    """A stream step that waits for the count-th UPDATE and acknowledges it, as the agent does."""

    def step() -> bytes:
        assert transport.wait_for(
            lambda reqs: sum(r.kind == "post" and b'"UPDATE"' in r.body for r in reqs) >= count,
            WAIT,
        )
        status = updates(transport)[count - 1]["update"]["status"]
        return record(
            {
                "type": "ACKNOWLEDGED",
                "acknowledged": {"task_id": status["task_id"], "uuid": status["uuid"]},
            }
        )

    return step


class TestReplayE1:
    def test_recorded_stream_drives_every_callback(
        self, stream_body: Callable[[str], tuple[bytes, bool]], executor_env: dict[str, str]
    ) -> None:
        body, _ = stream_body("executor/E1")
        transport = ScriptedTransport(
            [ScriptedStream([body[i : i + 500] for i in range(0, len(body), 500)])]
        )
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder, executor_env)
        driver.start()
        # SHUTDOWN is the last recorded event: the driver reports it and stops by itself.
        assert driver.join(WAIT) is DriverStatus.DRIVER_STOPPED
        assert recorder.names() == [
            "registered",
            "launchTask",
            "acknowledged",
            "acknowledged",
            "acknowledged",
            "launchTask",
            "acknowledged",
            "acknowledged",
            "frameworkMessage",
            "killTask",
            "acknowledged",
            "acknowledged",
            "shutdown",
        ]
        executor_info, framework_info, agent_info = recorder.args("registered")[0]
        assert executor_info.executor_id.value == "E1"
        assert framework_info.id.value == FID
        assert agent_info.hostname == "localhost"
        assert recorder.args("killTask") == [({"value": "T2"},)]
        assert recorder.args("frameworkMessage") == [("cGluZyBmcm9tIHNjaGVkdWxlcg==",)]
        (subscribe,) = transport.requests
        assert subscribe.url == "http://127.0.0.1:5051/api/v1/executor"
        assert json.loads(subscribe.body)["subscribe"] == {
            "unacknowledged_tasks": [],
            "unacknowledged_updates": [],
        }
        assert "Authorization" not in subscribe.headers


class TestUpdates:
    def test_fresh_uuid_and_acknowledgement(self, executor_env: dict[str, str]) -> None:
        transport = ScriptedTransport([])
        steps: list[Any] = [SUBSCRIBED, launch("T1"), ack_for(transport, 1), BLOCK]
        transport._streams.append(ScriptedStream(steps))
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder, executor_env)
        recorder.on["launchTask"] = lambda task: (
            driver.sendStatusUpdate({"task_id": task.task_id, "state": "TASK_RUNNING"}),
            driver.sendStatusUpdate(
                {"task_id": task.task_id, "state": "TASK_RUNNING", "uuid": "old"}
            ),
        )
        driver.start()
        recorder.wait_for(lambda names: "acknowledged" in names)
        first, second = (u["update"]["status"] for u in updates(transport))
        assert first["uuid"] != second["uuid"] != "old"  # a fresh uuid for every update
        assert len(base64.b64decode(first["uuid"])) == 16
        assert first["timestamp"] == 1795547396.5
        assert first["source"] == "SOURCE_EXECUTOR"
        assert recorder.args("acknowledged") == [({"value": "T1"}, first["uuid"])]
        assert [u["uuid"] for u in driver.unacknowledged_updates] == [second["uuid"]]
        driver.stop()
        assert driver.executor_state is ExecutorState.CLOSED

    def test_authentication_token_is_sent(self, executor_env: dict[str, str]) -> None:
        executor_env["MESOS_EXECUTOR_AUTHENTICATION_TOKEN"] = "jwt-token"
        transport = ScriptedTransport([ScriptedStream([SUBSCRIBED, BLOCK])])
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder, executor_env)
        driver.start()
        recorder.wait_for(lambda names: "registered" in names)
        driver.sendFrameworkMessage("aGk=")
        driver.stop()
        assert all(r.headers["Authorization"] == "Bearer jwt-token" for r in transport.requests)
        (message,) = transport.posts()
        assert json.loads(message.body)["message"] == {"data": "aGk="}


class TestDisconnection:
    def test_without_checkpoint_shutdown_and_stop(self, executor_env: dict[str, str]) -> None:
        transport = ScriptedTransport([ScriptedStream([SUBSCRIBED, launch("T1")])])
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder, executor_env)
        driver.start()
        assert driver.join(WAIT) is DriverStatus.DRIVER_STOPPED
        assert recorder.names() == ["registered", "launchTask", "disconnected", "shutdown"]
        assert len(subscribes(transport)) == 1  # no retry without checkpointing

    def test_with_checkpoint_resubscribes_with_unacknowledged(
        self, executor_env: dict[str, str]
    ) -> None:
        executor_env.update(MESOS_CHECKPOINT="1", MESOS_RECOVERY_TIMEOUT="15mins")
        transport = ScriptedTransport([])
        first = ScriptedStream(
            [
                SUBSCRIBED,
                launch("T1"),
                launch("T2"),
                ack_for(transport, 1),
                lambda: transport.wait_for(lambda r: len(r) >= 3, WAIT) and None,
            ]
        )
        second = ScriptedStream([SUBSCRIBED, BLOCK])
        transport._streams.extend([first, ConnectError("agent restarting"), second])
        recorder = Recorder()
        driver, clock = make_driver(transport, recorder, executor_env)
        recorder.on["launchTask"] = lambda task: driver.sendStatusUpdate(
            {"task_id": task.task_id, "state": "TASK_RUNNING"}
        )
        driver.start()
        recorder.wait_for(lambda names: "reregistered" in names)
        assert recorder.names()[-2:] == ["disconnected", "reregistered"]
        assert "shutdown" not in recorder.names()
        assert clock.sleeps == [0.25, 0.5]
        sent = [u["update"]["status"] for u in updates(transport)]
        resub = subscribes(transport)[-1]["subscribe"]
        # T1's update was acknowledged (so T1 too); T2's update and task were not.
        assert resub["unacknowledged_tasks"] == [
            {"name": "T2", "task_id": {"value": "T2"}, "agent_id": {"value": "S0"}}
        ]
        assert resub["unacknowledged_updates"] == [{"status": sent[1]}]
        driver.stop()

    def test_with_checkpoint_gives_up_after_recovery_timeout(
        self, executor_env: dict[str, str]
    ) -> None:
        executor_env.update(
            MESOS_CHECKPOINT="1",
            MESOS_RECOVERY_TIMEOUT="3secs",
            MESOS_SUBSCRIPTION_BACKOFF_MAX="1secs",
        )
        transport = ScriptedTransport(
            [ScriptedStream([SUBSCRIBED])] + [ConnectError("agent gone")] * 20
        )
        recorder = Recorder()
        driver, clock = make_driver(transport, recorder, executor_env)
        driver.start()
        assert driver.join(WAIT) is DriverStatus.DRIVER_STOPPED
        assert recorder.names() == ["registered", "disconnected", "shutdown"]
        assert sum(clock.sleeps) == pytest.approx(3.0)
        assert max(clock.sleeps) <= 1.0

    def test_update_while_subscribing_goes_out_after_subscribed(
        self, executor_env: dict[str, str]
    ) -> None:
        executor_env.update(MESOS_CHECKPOINT="1")
        gate = threading.Event()
        transport = ScriptedTransport(
            [
                ScriptedStream([SUBSCRIBED]),
                ScriptedStream([lambda: gate.wait(WAIT) and None, SUBSCRIBED, BLOCK]),
            ]
        )
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder, executor_env)
        recorder.on["disconnected"] = lambda: driver.sendStatusUpdate(
            {"task_id": {"value": "T1"}, "state": "TASK_FINISHED"}
        )
        driver.start()
        recorder.wait_for(lambda names: "disconnected" in names)
        gate.set()
        recorder.wait_for(lambda names: "reregistered" in names)
        assert transport.wait_for(lambda reqs: any(r.kind == "post" for r in reqs), WAIT)
        driver.stop()
        # The second SUBSCRIBE was built before the update was made, so the update follows it.
        assert subscribes(transport)[1]["subscribe"]["unacknowledged_updates"] == []
        (update,) = updates(transport)
        assert update["update"]["status"]["state"] == "TASK_FINISHED"

    def test_update_while_disconnected_rides_on_subscribe(
        self, executor_env: dict[str, str]
    ) -> None:
        executor_env.update(MESOS_CHECKPOINT="1")
        transport = ScriptedTransport(
            [
                ScriptedStream([SUBSCRIBED]),
                ConnectError("agent restarting"),
                ScriptedStream([SUBSCRIBED, BLOCK]),
            ]
        )
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder, executor_env)
        recorder.on["disconnected"] = lambda: driver.sendStatusUpdate(
            {"task_id": {"value": "T1"}, "state": "TASK_FINISHED"}
        )
        driver.start()
        recorder.wait_for(lambda names: "reregistered" in names)
        driver.stop()
        assert updates(transport) == []  # never sent as an UPDATE call ...
        (status,) = subscribes(transport)[2]["subscribe"]["unacknowledged_updates"]
        assert status["status"]["state"] == "TASK_FINISHED"  # ... but carried by SUBSCRIBE


class TestShutdown:
    def test_killed_updates_after_shutdown_are_sent_before_stopping(
        self, executor_env: dict[str, str]
    ) -> None:
        transport = ScriptedTransport(
            [ScriptedStream([SUBSCRIBED, launch("T13"), record({"type": "SHUTDOWN"}), BLOCK])]
        )
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder, executor_env)
        recorder.on["shutdown"] = lambda: driver.sendStatusUpdate(
            {"task_id": {"value": "T13"}, "state": "TASK_KILLED"}
        )
        driver.start()
        assert driver.join(WAIT) is DriverStatus.DRIVER_STOPPED
        assert [u["update"]["status"]["state"] for u in updates(transport)] == ["TASK_KILLED"]
        with pytest.raises(LocalProtocolError, match="ended"):
            driver.sendStatusUpdate({"task_id": {"value": "T13"}, "state": "TASK_KILLED"})


class TestFailures:
    def test_garbage_without_checkpoint_ends_the_executor(
        self, executor_env: dict[str, str]
    ) -> None:
        transport = ScriptedTransport([ScriptedStream([SUBSCRIBED, encode_record(b"not json")])])
        recorder = Recorder()
        driver, _ = make_driver(transport, recorder, executor_env)
        driver.start()
        assert driver.join(WAIT) is DriverStatus.DRIVER_STOPPED
        assert recorder.names() == ["registered", "disconnected", "shutdown"]

    def test_callback_failure_is_reraised(self, executor_env: dict[str, str]) -> None:
        transport = ScriptedTransport([ScriptedStream([SUBSCRIBED, launch("T1"), BLOCK])])
        recorder = Recorder()

        def explode(task: Any) -> None:
            raise RuntimeError("launch failed")

        recorder.on["launchTask"] = explode
        driver, _ = make_driver(transport, recorder, executor_env)
        driver.start()
        with pytest.raises(RuntimeError, match="launch failed"):
            driver.join(WAIT)
        assert "Mesos executor driver failed" in recorder.args("error")[0][0]

    def test_stream_must_begin_with_subscribed(self, executor_env: dict[str, str]) -> None:
        transport = ScriptedTransport([ScriptedStream([launch("T1"), BLOCK])])
        driver, _ = make_driver(transport, Recorder(), executor_env)
        driver.start()
        with pytest.raises(RemoteProtocolError, match="SUBSCRIBING"):
            driver.join(WAIT)

    def test_missing_environment(self) -> None:
        with pytest.raises(RemoteProtocolError, match="MESOS_AGENT_ENDPOINT"):
            ExecutorDriver(Recorder(), env={}, transport=ScriptedTransport())


def test_task_group_and_error_reach_their_callbacks(executor_env: dict[str, str]) -> None:
    group = record(
        {
            "type": "LAUNCH_GROUP",
            "launch_group": {
                "task_group": {
                    "tasks": [
                        {"name": "a", "task_id": {"value": "a"}, "agent_id": {"value": "S0"}},
                        {"name": "b", "task_id": {"value": "b"}, "agent_id": {"value": "S0"}},
                    ]
                }
            },
        }
    )
    error = record({"type": "ERROR", "error": {"message": "bad call"}})
    unknown = record({"type": "NEW_THING"})
    heartbeat = record({"type": "HEARTBEAT"})
    transport = ScriptedTransport(
        [ScriptedStream([SUBSCRIBED, group, unknown, heartbeat, error, BLOCK])]
    )
    recorder = Recorder()
    driver, _ = make_driver(transport, recorder, executor_env)
    driver.start()
    recorder.wait_for(lambda names: "error" in names)
    driver.stop()
    ((tasks,),) = recorder.args("launchTaskGroup")
    assert [t.task_id.value for t in tasks] == ["a", "b"]
    assert recorder.args("error") == [("bad call",)]
    assert "disconnected" not in recorder.names()
