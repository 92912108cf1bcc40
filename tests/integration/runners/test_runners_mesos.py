"""``toil-cwl-runner`` and ``toil-wdl-runner`` with ``--batchSystem mesos`` on isolated agents.

The workflows, their inputs and the output directory live under the leader's directory, which
every agent's mount namespace covers with an empty one; the job store is in a directory the
agents see, as a shared filesystem would be. So the agents reach the inputs only through the
job store the leader imported them into, and the outputs reach the leader only through Toil's
export from it. Each run under Mesos must give the same outputs, byte for byte, as the same
run under ``single_machine``, and the contents the workflows are written to produce.

The runners are Toil's own console scripts, so nothing of the user's ships: the leader says so
and builds no bundle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deploy_venvs import clean_env
from runner_helpers import (
    CWL_EXPECTED,
    WDL_EXPECTED,
    WORKFLOWS,
    canonical_outputs,
    contents_only,
    expected_canonical,
)
from scenario_helpers import EXECUTOR, Site, tasks_of

from toil_mesos.cluster.testing import MiniCluster, cluster_work_dir, leader_venv

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 300
NOTHING_TO_SHIP = "nothing to ship: the workflow's code is on the agents"
LINKED_WARNING = re.compile(r"input file\(s\) are in the job store as links to this leader's "
                            r"files.*")
#: Agents see only the job store: imported inputs must be copies, not links to leader paths.
COPY_IMPORTS = ("--symlinkImports", "False")
#: Toil's console scripts, as pip writes them into a virtualenv's bin.
ENTRY_POINTS = {"toil-cwl-runner": "toil.cwl.cwltoil", "toil-wdl-runner": "toil.wdl.wdltoil"}


@dataclass(frozen=True)
class RunnerRun:
    proc: subprocess.CompletedProcess[str]
    outdir: Path

    def tail(self, chars: int = 6000) -> str:
        return (self.proc.stdout + self.proc.stderr)[-chars:]

    def canonical(self) -> Any:
        assert self.proc.returncode == 0, self.tail()
        document = json.loads(self.proc.stdout)
        return canonical_outputs(document, lambda path: Path(path).read_bytes(),
                                 str(self.outdir))


@dataclass(frozen=True)
class Runners:
    site: Site
    bin: Path
    workflows: Path

    def run(self, runner: str, document: str, inputs: str, *, name: str, batch_system: str,
            outdir_option: str, extra: Sequence[str] = ()) -> RunnerRun:
        store = self.site.visible / "stores" / name
        store.parent.mkdir(parents=True, exist_ok=True)
        outdir = self.site.leader / "outputs" / name
        mesos = ("--mesosEndpoint", self.site.mini.master, "--mesosExecutor", EXECUTOR,
                 "--mesosName", name) if batch_system == "mesos" else ()
        environment = {k: v for k, v in clean_env().items() if not k.startswith("TOIL")}
        # The leader venv's bin first, as an activated venv would have it; then this
        # interpreter's, for the tools Toil's CWL runner calls on a single machine.
        environment["PATH"] = os.pathsep.join(
            [str(self.bin), str(Path(sys.executable).parent), environment.get("PATH", "")])
        proc = subprocess.run(
            [str(self.bin / runner), "--jobStore", str(store), "--batchSystem", batch_system,
             *mesos, outdir_option, str(outdir), "--logLevel", "INFO", "--retryCount", "0",
             *extra, document, inputs],
            cwd=self.workflows, env=environment, capture_output=True,
            text=True, timeout=RUN_TIMEOUT, check=False,
        )
        return RunnerRun(proc, outdir)

    def cwl(self, name: str, batch_system: str, *extra: str) -> RunnerRun:
        return self.run("toil-cwl-runner", "cwl/main.cwl", "cwl/inputs.yml", name=name,
                        batch_system=batch_system, outdir_option="--outdir", extra=extra)

    def wdl(self, name: str, batch_system: str, *extra: str) -> RunnerRun:
        # Toil runs a WDL workflow's own steps (not its tasks) as leader-local jobs unless told
        # otherwise; on the workers they exercise the job store from the agents.
        return self.run("toil-wdl-runner", "wdl/main.wdl", "wdl/inputs.json", name=name,
                        batch_system=batch_system, outdir_option="--outputDirectory",
                        extra=("--runLocalJobsOnWorkers", *extra))


@pytest.fixture(scope="module")
def runners() -> Iterator[Runners]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding the leader's files from agents needs root and unshare")
    if shutil.which("node") is None:
        pytest.skip("CWL JavaScript needs Node.js (`node`): run scripts/system-deps")
    with cluster_work_dir("toil-mesos-runners-") as work:
        leader = work / "leader"
        visible = work / "visible"
        visible.mkdir()
        python = leader_venv(leader / "venv")
        for script, module in ENTRY_POINTS.items():
            path = python.parent / script
            path.write_text(f"#!{python}\nimport sys\nfrom {module} import main\n"
                            "if __name__ == '__main__':\n    sys.exit(main())\n")
            path.chmod(0o755)
        workflows = shutil.copytree(WORKFLOWS, leader / "workflows")
        with MiniCluster(work / "cluster", agents=2, hide=[leader]) as mini:
            yield Runners(Site(mini, leader, visible), python.parent, workflows)


def finished_tasks(site: Site, name: str) -> list[dict[str, Any]]:
    """The tasks the framework *name* ran, after checking that each finished on an agent."""
    frameworks = site.frameworks_named(name)
    assert len(frameworks) == 1, frameworks
    tasks = tasks_of(frameworks[0])
    assert tasks and all(t["state"] == "TASK_FINISHED" for t in tasks), tasks
    assert {t["slave_id"] for t in tasks} <= site.agent_ids(), tasks
    return tasks


class TestCwl:
    def test_same_outputs_as_single_machine(self, runners: Runners):
        on_mesos = runners.cwl("cwl-mesos", "mesos", *COPY_IMPORTS)
        assert on_mesos.proc.returncode == 0, on_mesos.tail()
        assert NOTHING_TO_SHIP in on_mesos.proc.stderr, on_mesos.tail()
        assert "shipping the workflow's code" not in on_mesos.proc.stderr
        assert LINKED_WARNING.search(on_mesos.proc.stderr) is None
        # The CommandLineTools ran on agents: at least the 3 scattered greetings (Toil may
        # chain the subworkflow's steps and the lookup into fewer worker runs).
        assert len(finished_tasks(runners.site, "cwl-mesos")) >= 3
        local = runners.cwl("cwl-local", "single_machine")
        assert on_mesos.canonical() == local.canonical()
        assert contents_only(on_mesos.canonical()) == expected_canonical(CWL_EXPECTED)
        # --outdir is on the leader, where the outputs were exported to.
        written = sorted(p.name for p in on_mesos.outdir.iterdir())
        assert written == ["ada.txt", "barbara.txt", "counts.txt", "found.txt", "grace.txt"]

    def test_linked_imports_are_out_of_reach_of_the_agents(self, runners: Runners):
        """The control: with Toil's default, the job store holds links to the leader's input
        files, which the agents cannot follow; so the runs above read copies from the job
        store, not the leader's files."""
        linked = runners.cwl("cwl-linked", "mesos")
        assert linked.proc.returncode != 0, linked.tail()
        assert "does not exist" in linked.proc.stderr, linked.tail()
        # The leader said why before any job ran, naming the option that copies instead.
        warning = LINKED_WARNING.search(linked.proc.stderr)
        assert warning is not None and "--symlinkImports False" in warning[0], linked.tail()
        assert linked.proc.stderr.index(warning[0]) < linked.proc.stderr.index("Issued job")


class TestWdl:
    def test_same_outputs_as_single_machine(self, runners: Runners):
        on_mesos = runners.wdl("wdl-mesos", "mesos", *COPY_IMPORTS)
        assert on_mesos.proc.returncode == 0, on_mesos.tail()
        assert NOTHING_TO_SHIP in on_mesos.proc.stderr, on_mesos.tail()
        # The scatter's branches, the gather and the output step ran on agents.
        assert len(finished_tasks(runners.site, "wdl-mesos")) >= 3
        local = runners.wdl("wdl-local", "single_machine")
        assert on_mesos.canonical() == local.canonical()
        assert on_mesos.canonical() == expected_canonical(WDL_EXPECTED)
        assert all(str(path).startswith(str(on_mesos.outdir))
                   for path in json.loads(on_mesos.proc.stdout)["greetings.greetings"])
