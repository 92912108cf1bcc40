"""``toil-cwl-runner`` and ``toil-wdl-runner`` from the appliance image, on its own cluster.

Only the leader container holds the documents and their inputs; the job stores are on the
volume every container mounts. The runners are the image's own (Toil's ``cwl`` and ``wdl``
extras, Node.js from the base image), so nothing of the user's ships. Each run under Mesos must
give the outputs the same run gives under ``single_machine`` in the leader container, and the
contents the workflows are written to produce; its jobs must have run in agent containers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from appliance_helpers import HOME, JOB_STORES, ApplianceCluster, Run, put_tree, run_in
from runner_helpers import (
    CWL_EXPECTED,
    WDL_EXPECTED,
    WORKFLOWS,
    canonical_outputs,
    contents_only,
    expected_canonical,
)

pytestmark = [pytest.mark.integration, pytest.mark.appliance]

DOCUMENTS = f"{HOME}/workflows"
OUTPUTS = f"{HOME}/outputs"
NOTHING_TO_SHIP = "nothing to ship: the workflow's code is on the agents"


@pytest.fixture(scope="module")
def leader(appliance_cluster: ApplianceCluster) -> ApplianceCluster:
    """The leader container with the workflows and their inputs, which agents do not have."""
    assert run_in(appliance_cluster.leader, ["mkdir", "-p", HOME]).exit_code == 0
    put_tree(appliance_cluster.leader, WORKFLOWS, DOCUMENTS)
    return appliance_cluster


def run_runner(cluster: ApplianceCluster, runner: str, outdir_option: str, name: str,
               batch_system: str, arguments: Sequence[str]) -> tuple[Run, str]:
    outdir = f"{OUTPUTS}/{name}"
    mesos = ["--mesosName", name] if batch_system == "mesos" else []
    run = run_in(
        cluster.leader,
        [runner, "--jobStore", f"{JOB_STORES}/{name}", "--batchSystem", batch_system, *mesos,
         outdir_option, outdir, "--symlinkImports", "False", "--logLevel", "INFO",
         "--retryCount", "0", *arguments],
        workdir=DOCUMENTS,
    )
    return run, outdir


def canonical(cluster: ApplianceCluster, run: Run, outdir: str) -> Any:
    assert run.exit_code == 0, run.tail()

    def read(path: str) -> bytes:
        cat = run_in(cluster.leader, ["cat", path])
        assert cat.exit_code == 0, cat.tail()
        return cat.stdout.encode()

    return canonical_outputs(json.loads(run.stdout), read, outdir)


def assert_ran_in_agents(cluster: ApplianceCluster, name: str, at_least: int) -> None:
    frameworks = [f for f in (*cluster.master_state()["frameworks"],
                              *cluster.master_state().get("completed_frameworks", []))
                  if f["name"] == name]
    assert len(frameworks) == 1, frameworks
    tasks = [t for key in ("tasks", "completed_tasks") for t in frameworks[0].get(key, [])]
    assert len(tasks) >= at_least and all(t["state"] == "TASK_FINISHED" for t in tasks), tasks
    hosts = cluster.agent_hosts()
    agent_ips = {cluster.ip(c) for c in cluster.agent_containers()}
    assert {hosts[t["slave_id"]] for t in tasks} <= agent_ips, tasks


def test_agents_have_the_runners_but_not_the_documents(leader: ApplianceCluster):
    for agent in leader.agent_containers():
        assert run_in(agent, ["test", "-e", DOCUMENTS]).exit_code == 1
        probe = run_in(agent, ["sh", "-c", "node --version && cwltool --version && "
                                           "miniwdl --version"])
        assert probe.exit_code == 0, probe.tail()
    assert run_in(leader.leader, ["test", "-f", f"{DOCUMENTS}/cwl/main.cwl"]).exit_code == 0


def test_cwl_workflow(leader: ApplianceCluster):
    arguments = ["cwl/main.cwl", "cwl/inputs.yml"]
    on_mesos, outdir = run_runner(leader, "toil-cwl-runner", "--outdir", "cwl-mesos", "mesos",
                                  arguments)
    assert on_mesos.exit_code == 0, on_mesos.tail()
    assert NOTHING_TO_SHIP in on_mesos.stderr, on_mesos.tail()
    assert_ran_in_agents(leader, "cwl-mesos", at_least=3)
    mesos_outputs = canonical(leader, on_mesos, outdir)
    local, local_outdir = run_runner(leader, "toil-cwl-runner", "--outdir", "cwl-local",
                                     "single_machine", arguments)
    assert mesos_outputs == canonical(leader, local, local_outdir)
    assert contents_only(mesos_outputs) == expected_canonical(CWL_EXPECTED)


def test_wdl_workflow(leader: ApplianceCluster):
    # The workflow's own steps run as jobs on the agents (Toil keeps them on the leader
    # otherwise); WDL tasks would need a container engine in the agents.
    arguments = ["--runLocalJobsOnWorkers", "wdl/main.wdl", "wdl/inputs.json"]
    on_mesos, outdir = run_runner(leader, "toil-wdl-runner", "--outputDirectory", "wdl-mesos",
                                  "mesos", arguments)
    assert on_mesos.exit_code == 0, on_mesos.tail()
    assert NOTHING_TO_SHIP in on_mesos.stderr, on_mesos.tail()
    assert_ran_in_agents(leader, "wdl-mesos", at_least=3)
    mesos_outputs = canonical(leader, on_mesos, outdir)
    local, local_outdir = run_runner(leader, "toil-wdl-runner", "--outputDirectory",
                                     "wdl-local", "single_machine", arguments)
    assert mesos_outputs == canonical(leader, local, local_outdir)
    assert mesos_outputs == expected_canonical(WDL_EXPECTED)
