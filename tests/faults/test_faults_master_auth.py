"""A master that authenticates frameworks: the right secret runs the workflow, a wrong one stops
it before any job, naming the options, and the secret shows nowhere."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_helpers import (
    check_outputs,
    count_starts,
    executor_command,
    finish,
    leader_env,
    master_state,
    write_workflow,
)

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir, leader_venv

pytestmark = pytest.mark.integration

SECRET = "s3cret-for-tests"
JOBS = 3


@pytest.fixture(scope="module")
def secured() -> Iterator[tuple[MiniCluster, Path]]:
    with cluster_work_dir("toil-mesos-auth-") as work:
        credentials = work / "credentials.json"
        credentials.write_text(json.dumps({"credentials": [{"principal": "toil",
                                                            "secret": SECRET}]}))
        with MiniCluster(work / "cluster", agents=1,
                         master_args=["--credentials", str(credentials)]) as mini:
            yield mini, work


def _run(mini: MiniCluster, work: Path, name: str, secret: str) -> tuple[int, str, Path]:
    base = work / name
    records = base / "records"
    records.mkdir(parents=True)
    script = write_workflow(base / "project")
    python = leader_venv(base / "venv")
    secret_file = base / "secret"
    secret_file.write_text(secret + "\n")
    log = base / "leader.log"
    with log.open("ab") as out:
        leader = subprocess.Popen(
            [str(python), script.name, str(base / "jobstore"), "--batchSystem", "mesos",
             "--mesosEndpoint", mini.master, "--mesosPrincipal", "toil",
             "--mesosSecretFile", str(secret_file),
             "--mesosExecutor", executor_command(base / "bundle-cache"),
             "--logLevel", "INFO", "--records", str(records), "--jobs", str(JOBS),
             "--seconds", "0.5", "--cores", "0.2"],
            cwd=script.parent, env=leader_env(), stdout=out, stderr=subprocess.STDOUT,
        )
    code = finish(leader, timeout=180)
    return code, log.read_text(), records


def test_a_wrong_secret_stops_before_any_job(secured: tuple[MiniCluster, Path]) -> None:
    mini, work = secured
    code, output, records = _run(mini, work, "wrong", "wrong-secret")
    assert code != 0
    assert "--mesosPrincipal" in output and "--mesosSecretFile" in output, output[-4000:]
    assert "401" in output
    assert "wrong-secret" not in output
    assert count_starts(records) == 0
    assert master_state(mini)["frameworks"] == []


def test_the_right_secret_runs_the_workflow(secured: tuple[MiniCluster, Path]) -> None:
    mini, work = secured
    code, output, records = _run(mini, work, "right", SECRET)
    assert code == 0, output[-4000:]
    assert not check_outputs(records, JOBS)
    assert SECRET not in output
