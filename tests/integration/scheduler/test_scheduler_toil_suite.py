"""Toil's own generic batch-system tests, run against MesosBatchSystem on a 1-agent mini-cluster.

``toil.test.batchSystems.batchSystemTest.hidden.AbstractBatchSystemTest`` is the contract every
Toil batch system meets: jobs run concurrently, kills are never reported, exit statuses are
exact, ``setEnv`` and per-job environments reach the job. Its commands are raw shell lines, so
auto-deployment is off here; the end-to-end tests cover shipping code.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("toil.test.batchSystems.batchSystemTest", reason="needs rsync (Toil's tests)")

from toil.test.batchSystems.batchSystemTest import hidden, numCores

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir
from toil_mesos.scheduler.batch_system import MesosBatchSystem

pytestmark = pytest.mark.integration

# As agents start it; absolute, since agents run executors with a fixed PATH.
EXECUTOR = f"{Path(sys.executable).parent / 'toil-mesos'} executor"


@pytest.fixture(scope="module")
def mini_cluster() -> Iterator[MiniCluster]:
    with cluster_work_dir() as work_dir, MiniCluster(work_dir, agents=1, cpus=numCores) as mini:
        yield mini


@pytest.fixture(scope="class")
def rootpath(request: pytest.FixtureRequest) -> None:
    """What ``toil.test.conftest`` provides to Toil's unittest-style classes."""
    request.cls._rootpath = request.config.rootpath


@pytest.fixture(autouse=True)
def _use_cluster(request: pytest.FixtureRequest, mini_cluster: MiniCluster) -> None:
    if request.instance is not None:
        request.instance.master = mini_cluster.master


@pytest.mark.usefixtures("rootpath")
class TestMesosBatchSystemContract(hidden.AbstractBatchSystemTest):  # type: ignore[misc]
    master: str

    def createConfig(self) -> Any:
        config = super().createConfig()
        config.mesos_endpoint = self.master
        config.mesos_executor = EXECUTOR
        config.disableAutoDeployment = True
        return config

    def createBatchSystem(self) -> MesosBatchSystem:
        return MesosBatchSystem(config=self.config, maxCores=numCores, maxMemory=1e9,
                                maxDisk=1001)

    def supportsWallTime(self) -> bool:
        return True
