"""A workflow survives the death of its leading Mesos master.

Three mini-masters elect their leader through a real ZooKeeper on loopback; the agents follow
the leader through ZooKeeper. The test SIGKILLs the leading master while jobs run. With the
masters given as ``zk://`` or as a list, the driver finds the new leader, re-subscribes with the
same framework id and the workflow finishes, every job's output right and none run twice. The
twin, given only the killed master, must not finish: that shows the test can fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_helpers import (
    Records,
    check_outputs,
    count_starts,
    executor_command,
    finish,
    leader_env,
    wait_until,
    write_workflow,
)
from tests import zk_fixture

from toil_mesos.cluster._zookeeper import ZooKeeperServer
from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir, leader_venv

pytestmark = pytest.mark.integration

zookeeper = zk_fixture.zookeeper
JOBS = 16
ZK_PATH = "/mesos"
SESSION_TIMEOUT = "4"
LEADER_TIMEOUT = 240.0
#: How long the single-master twin is given after the kill (the others need about 20 s).
TWIN_WAIT = 60.0


def _start_master(work: Path, index: int, zk: str) -> tuple[subprocess.Popen[bytes], str]:
    """A further master joining the election; its process and ``HOST:PORT``."""
    ready = work / f"master-{index}.ready"
    log = (work / f"master-{index}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "toil_mesos.cluster.master", "--host", "127.0.0.1",
         "--port", "0", "--work-dir", str(work / f"master-{index}"), "--ready-file", str(ready),
         "--zk", zk, "--zk-session-timeout", SESSION_TIMEOUT, "--offer-interval", "0.5"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    log.close()
    if not wait_until(lambda: ready.exists() or process.poll() is not None, timeout=60):
        process.kill()
        raise AssertionError(f"master {index} never became ready")
    assert process.poll() is None, (work / f"master-{index}.log").read_text()[-3000:]
    return process, json.loads(ready.read_text())["address"]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


@pytest.fixture
def work() -> Iterator[Path]:
    with cluster_work_dir("toil-mesos-ha-") as path:
        yield path


@pytest.mark.parametrize("form", ["zk", "list", "single"])
def test_the_leading_master_dies_mid_workflow(
    work: Path, zookeeper: ZooKeeperServer, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    zk = f"zk://{zookeeper.hosts}{ZK_PATH}-{form}"
    leader_dir, records = work / "leader", work / "records"
    for path in (leader_dir, records):
        path.mkdir(parents=True)
    script = write_workflow(leader_dir / "project")
    python = leader_venv(leader_dir / "venv")
    extra: list[subprocess.Popen[bytes]] = []
    masters_dir = work / "masters"
    masters_dir.mkdir()
    with MiniCluster(work / "cluster", agents=2,
                     master_args=["--zk", zk, "--zk-session-timeout", SESSION_TIMEOUT],
                     agent_args=["--master", zk]) as mini:
        try:
            addresses = [mini.master]
            for index in (2, 3):
                process, address = _start_master(masters_dir, index, zk)
                extra.append(process)
                addresses.append(address)
            endpoint = {"zk": zk, "list": ",".join(reversed(addresses)),
                        "single": mini.master}[form]
            log = work / "leader.log"
            with log.open("ab") as out:
                leader = subprocess.Popen(
                    [str(python), script.name, str(work / "jobstore"), "--batchSystem", "mesos",
                     "--mesosEndpoint", endpoint,
                     "--mesosExecutor", executor_command(work / "bundle-cache"),
                     "--logLevel", "INFO", "--records", str(records), "--jobs", str(JOBS),
                     "--seconds", "3", "--cores", "0.2", "--retryCount", "3"],
                    cwd=script.parent, env=leader_env(), stdout=out, stderr=subprocess.STDOUT,
                )
            try:
                assert wait_until(lambda: count_starts(records) >= 4 or leader.poll() is not None,
                                  timeout=120), "no job started"
                assert leader.poll() is None, log.read_text()[-4000:]
                killed = time.monotonic()
                mini.kill_master()  # SIGKILL the leading master mid-workflow
                if form == "single":
                    finished = wait_until(lambda: leader.poll() is not None, timeout=TWIN_WAIT)
                    assert not finished or leader.returncode != 0, (
                        "a workflow given only the dead master finished anyway")
                    return
                code = finish(leader, timeout=LEADER_TIMEOUT)
                took = time.monotonic() - killed
            finally:
                if leader.poll() is None:
                    leader.kill()
                    leader.wait(timeout=30)
        finally:
            for process in extra:
                _stop(process)
    output = log.read_text()
    assert code == 0, output[-6000:]
    assert 'RESULT ["v1:0", "v1:1"' in output, output[-3000:]
    result = Records.read(records)
    lost = check_outputs(records, JOBS)
    assert not lost, lost
    assert not result.overlaps(), result.overlaps()
    assert result.reissued() == 0, "a job ran twice across the failover"
    assert "re-registered with the Mesos master" in output
    with capsys.disabled():
        print(f"\nmaster failover ({form}): workflow finished {took:.0f} s after the leading "
              f"master was killed; {JOBS} jobs, none lost or run twice")
