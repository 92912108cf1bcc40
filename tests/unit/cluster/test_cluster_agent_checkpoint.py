"""The agent's checkpoint and what recovery makes of it, without processes or sockets: the
store's records, the status update streams a restart restores, the executor environment of a
framework that checkpoints, and the recovery flags."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from toil_mesos.cluster._agent_checkpoint import (
    CheckpointedExecutor,
    CheckpointedTask,
    CheckpointStore,
)
from toil_mesos.cluster._agent_recovery import RecoveredProcess, lost_state
from toil_mesos.cluster._executors import executor_environment, process_start_time
from toil_mesos.cluster._status_updates import StatusUpdateManager, StreamState, TakeResult
from toil_mesos.cluster.agent import build_parser, config_from_args

FW = "F0"


def update(task: str, state: str, uuid: str) -> dict[str, Any]:
    return {
        "framework_id": {"value": FW},
        "status": {"task_id": {"value": task}, "state": state, "uuid": uuid},
    }


def saved(tmp_path: Path, **framework_info: Any) -> CheckpointedExecutor:
    task = CheckpointedTask(
        info={"task_id": {"value": "T1"}, "name": "t"},
        state="TASK_RUNNING",
        latest=update("T1", "TASK_RUNNING", "u1")["status"],
        delivered=True,
        pending=(update("T1", "TASK_FINISHED", "u2"),),
        seen=("u1", "u2"),
    )
    return CheckpointedExecutor(
        framework_id=FW,
        framework_info={"name": "toil", **framework_info},
        executor_id="E1",
        container_id="C1",
        info={"executor_id": {"value": "E1"}, "command": {"value": "run"}},
        sandbox=tmp_path / "sandbox",
        pid=4242,
        start_time=77,
        for_command_task=False,
        tasks=(task,),
    )


class TestStore:
    def test_a_first_start_has_nothing_to_recover(self, tmp_path: Path) -> None:
        store = CheckpointStore(tmp_path)
        assert store.agent_id() is None
        assert store.load() == []

    def test_records_round_trip(self, tmp_path: Path) -> None:
        store = CheckpointStore(tmp_path)
        store.save_agent_id("S7")
        executor = saved(tmp_path, checkpoint=True)
        store.save(executor)
        again = CheckpointStore(tmp_path)  # as a restarted agent reads it
        assert again.agent_id() == "S7"
        assert again.load() == [executor]
        assert again.load()[0].checkpoint is True
        store.remove("C1")
        assert again.load() == []

    def test_only_an_explicit_checkpoint_counts(self, tmp_path: Path) -> None:
        assert saved(tmp_path).checkpoint is False
        assert saved(tmp_path, checkpoint=False).checkpoint is False

    def test_an_unreadable_record_is_moved_aside_not_half_recovered(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = CheckpointStore(tmp_path)
        store.save(saved(tmp_path, checkpoint=True))
        bad = tmp_path / "meta" / "executors" / "C2.json"
        bad.write_text(json.dumps({"version": 1, "framework_id": FW}))
        [recovered] = store.load()
        assert recovered.container_id == "C1"
        assert bad.with_suffix(".bad").exists() and not bad.exists()
        assert str(bad) in caplog.text

    def test_another_version_is_not_recovered(self, tmp_path: Path) -> None:
        doc = saved(tmp_path).to_json()
        doc["version"] = 99
        with pytest.raises(ValueError, match="version 99"):
            CheckpointedExecutor.from_json(doc)


class TestRestoredStreams:
    def test_the_pending_update_is_resent_after_registration_and_duplicates_dropped(
        self,
    ) -> None:
        updates = StatusUpdateManager(retry_interval=10.0)
        updates.restore(
            FW, "T1", pending=[update("T1", "TASK_FINISHED", "u2")], seen=["u1", "u2"], now=0.0
        )
        assert updates.state(FW, "T1") is StreamState.AWAITING_ACK
        [resent] = updates.resend_all(now=1.0)
        assert resent.update["status"]["uuid"] == "u2"
        # The executor sends again what it never saw acknowledged: the agent already has it.
        result, forwards = updates.update(update("T1", "TASK_FINISHED", "u2"), now=2.0)
        assert (result, forwards) == (TakeResult.DUPLICATE, [])
        assert updates.update(update("T1", "TASK_RUNNING", "u1"), now=2.0)[0] is (
            TakeResult.DUPLICATE
        )
        # After a terminal update nothing more is taken, as before the restart.
        assert updates.update(update("T1", "TASK_FAILED", "u3"), now=2.0)[0] is (
            TakeResult.REFUSED
        )
        assert updates.acknowledge(FW, "T1", "u2", now=3.0) == []
        assert updates.state(FW, "T1") is StreamState.CLOSED

    def test_a_task_with_nothing_pending_takes_its_next_update(self) -> None:
        updates = StatusUpdateManager(retry_interval=10.0)
        updates.restore(FW, "T1", pending=[], seen=["u1"], now=0.0)
        assert updates.resend_all(now=1.0) == []
        result, [forward] = updates.update(update("T1", "TASK_FINISHED", "u2"), now=1.0)
        assert result is TakeResult.QUEUED and forward.update["status"]["uuid"] == "u2"


class TestEnvironment:
    def environment(self, recovery: tuple[float, float] | None) -> dict[str, str]:
        return executor_environment(
            executor_id="E1",
            framework_id=FW,
            agent_id="S0",
            agent_address="10.0.0.5:5051",
            sandbox=Path("/sandbox"),
            shutdown_grace_period=5.0,
            command={},
            recovery=recovery,
        )

    def test_a_checkpointing_framework_gets_the_recovery_variables(self) -> None:
        env = self.environment((900.0, 1.0))
        assert env["MESOS_CHECKPOINT"] == "1"
        assert env["MESOS_RECOVERY_TIMEOUT"] == "15mins"
        assert env["MESOS_SUBSCRIPTION_BACKOFF_MAX"] == "1secs"

    def test_the_others_do_not(self) -> None:
        env = self.environment(None)
        assert env["MESOS_CHECKPOINT"] == "0"
        assert "MESOS_RECOVERY_TIMEOUT" not in env
        assert "MESOS_SUBSCRIPTION_BACKOFF_MAX" not in env


class TestRecoveryPieces:
    def test_lost_tasks_are_gone_for_partition_aware_frameworks(self) -> None:
        assert lost_state({"capabilities": [{"type": "PARTITION_AWARE"}]}) == "TASK_GONE"
        assert lost_state({"capabilities": [{"type": "MULTI_ROLE"}]}) == "TASK_LOST"

    def test_a_recorded_process_is_found_only_with_its_start_time(self) -> None:
        start = process_start_time(os.getpid())
        assert start is not None
        found = RecoveredProcess.find(os.getpid(), start)
        assert found is not None and found.poll() is None
        assert found.wait(timeout=0) is None  # still running
        assert RecoveredProcess.find(os.getpid(), start + 1) is None  # a reused pid

    @pytest.mark.parametrize(
        "flag", ["--recovery-timeout", "--executor-reregistration-timeout"]
    )
    def test_recovery_flags_must_be_positive(self, tmp_path: Path, flag: str) -> None:
        args = build_parser().parse_args(
            [
                "--master", "127.0.0.1:5050", "--host", "127.0.0.1", "--port", "0",
                "--work-dir", str(tmp_path), "--ready-file", str(tmp_path / "r"), flag, "0",
            ]
        )
        with pytest.raises(ValueError, match=flag):
            config_from_args(args)

    def test_recovery_flags_default_to_mesos(self, tmp_path: Path) -> None:
        args = build_parser().parse_args(
            [
                "--master", "127.0.0.1:5050", "--host", "127.0.0.1", "--port", "0",
                "--work-dir", str(tmp_path), "--ready-file", str(tmp_path / "r"),
            ]
        )
        config = config_from_args(args)
        assert (config.recovery_timeout, config.executor_reregistration_timeout) == (900.0, 2.0)


class TestClusterOptions:
    def test_recovery_options_become_agent_flags(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from toil_mesos import cli
        from toil_mesos.cluster import launcher

        seen: list[launcher.ClusterOptions] = []

        def up(work_dir: Path, options: launcher.ClusterOptions) -> Any:
            seen.append(options)
            raise launcher.ClusterError("stop here")

        monkeypatch.setattr(launcher, "up", up)
        argv = ["cluster", "up", "--work-dir", "/nonexistent", "--agent-recovery-timeout", "60",
                "--executor-reregistration-timeout", "5"]
        assert cli.main(argv) != 0
        [options] = seen
        assert options.recovery_args() == (
            "--recovery-timeout", "60.0", "--executor-reregistration-timeout", "5.0"
        )
        assert launcher.ClusterOptions().recovery_args() == ()

    def test_a_bad_value_names_its_option(self) -> None:
        from toil_mesos.cluster.launcher import ClusterError, ClusterOptions

        with pytest.raises(ClusterError, match="--executor-reregistration-timeout"):
            ClusterOptions(executor_reregistration_timeout=0).validate()
