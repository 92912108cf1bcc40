"""Real Toil workflows on an isolated mini-cluster, for the seed's deployment scenarios.

Everything the leader has and the agents must not see (projects, virtualenvs, the cwd) lives
under one *leader* directory that every agent's mount namespace covers with an empty one. Job
stores, marker files and the "shared filesystem" live in a *visible* directory beside it.

Every job of a scenario workflow returns a report (agent, executor, the ``__file__`` of the user
module that defines it and of every helper module it uses, ``PYTHONPATH``, a computed value); the
leader prints one ``JOB {json}`` line per report, which :class:`Outcome` parses.

The leader virtualenvs come from :mod:`deploy_venvs` (Toil and toil-mesos reach them through a
``.pth`` file, as a ``--system-site-packages`` venv reaches the appliance's), and the small trees
(``write``, the editable layouts, the tiny third-party distribution) from the deploy scenarios.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy_venvs import clean_env
from test_deploy_scenarios import write

from toil_mesos.cluster.testing import MiniCluster

EXECUTOR = f"{sys.executable} -m toil_mesos.executor"
#: Where an agent stages bundles: ``cluster up`` gives each agent's executors a cache in that
#: agent's work dir, ``.../agents/<i>/bundle-cache/<sha>``.
STAGED = "/bundle-cache/"
#: How long one leader may run.
RUN_TIMEOUT = 300
REGISTERED = re.compile(r"registered with the Mesos master at \S+ as framework (\S+)")

WORKFLOW = '''\
"""A scenario workflow: fan out jobs that report where they ran and which code they imported."""
import json
import os
import sys

from toil.common import Toil
from toil.job import Job

{imports}

HELPERS = {helpers!r}


def report(job, index):
    return {{
        "index": index,
        "agent": os.environ.get("MESOS_SLAVE_ID"),
        "executor": os.environ.get("MESOS_EXECUTOR_ID"),
        "module": __file__,
        "helpers": {{name: sys.modules[name].__file__ for name in HELPERS}},
        "pythonpath": os.environ.get("PYTHONPATH"),
        "bundle_roots": os.environ.get("TOIL_MESOS_BUNDLE_ROOTS"),
        "value": {value},
    }}


def fan_out(job, count, cores):
    children = [job.addChildJobFn(report, i, cores=cores, memory="50M", disk="1M")
                for i in range(count)]
    return job.addFollowOnJobFn(collect, report(job, -1), [c.rv() for c in children],
                                cores=cores, memory="50M", disk="1M").rv()


def collect(job, first, reports):
    return [first, *reports, report(job, -2)]


def main():
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--cores", type=float, default=1)
    options = parser.parse_args()
    with Toil(options) as toil:
        if options.restart:
            result = toil.restart()
        else:
            root = Job.wrapJobFn(fan_out, options.jobs, options.cores,
                                 cores=options.cores, memory="50M", disk="1M")
            result = toil.start(root)
    for item in result:
        print("JOB " + json.dumps(item, sort_keys=True))


if __name__ == "__main__":
    main()
'''


def workflow_source(*, imports: str, helpers: Sequence[str], value: str,
                    shebang: str | None = None) -> str:
    """A scenario workflow whose jobs import *imports* and report *helpers*' files and *value*."""
    text = WORKFLOW.format(imports=imports, helpers=list(helpers), value=value)
    return f"#!{shebang}\n{text}" if shebang else text


#: The seed's package hierarchy: ``workflow/main.py`` using ``util/sort/quick.py``.
QUICK = """\
BROKEN = False


def sort(numbers):
    if BROKEN:
        raise RuntimeError("util.sort.quick is deliberately broken")
    return sorted(numbers)
"""
HIERARCHY_VALUE = "quick.sort([3, 1, 2])"


def package_hierarchy(root: Path, *, imports: str = "", helpers: Sequence[str] = (),
                      value: str = HIERARCHY_VALUE, quick: str = QUICK) -> Path:
    """``workflow/`` and ``util/sort/`` under *root*, with a setuptools ``pyproject.toml``."""
    return write(root, {
        "util/__init__.py": "",
        "util/sort/__init__.py": "",
        "util/sort/quick.py": quick,
        "workflow/__init__.py": "",
        "workflow/main.py": workflow_source(
            imports="from util.sort import quick\n" + imports,
            helpers=["util.sort.quick", *helpers], value=value),
        "pyproject.toml": """\
            [build-system]
            requires = ["setuptools>=64"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "my-project"
            version = "1.2.3"
            dependencies = ["tinydep"]
            [tool.setuptools]
            packages = ["workflow", "util", "util.sort"]
            """,
    })


@dataclass(frozen=True)
class Outcome:
    """One leader run: its process and the job reports it printed."""

    proc: subprocess.CompletedProcess[str]
    reports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def tail(self, chars: int = 6000) -> str:
        return self.output[-chars:]


@dataclass(frozen=True)
class Site:
    """The isolated cluster, the hidden leader directory and the directory agents also see."""

    mini: MiniCluster
    leader: Path
    visible: Path

    def path(self, *parts: str, visible: bool = False) -> Path:
        """A fresh directory under the leader's (hidden) or the visible directory."""
        path = (self.visible if visible else self.leader).joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def run(self, argv: Sequence[str], *, name: str, cwd: Path,
            toil_args: Sequence[str] = (), env: dict[str, str] | None = None,
            job_store: Path | None = None) -> Outcome:
        """Run one leader: ``argv JOBSTORE --batchSystem mesos ... toil_args``, bounded."""
        store = job_store or self.visible / "stores" / name
        store.parent.mkdir(parents=True, exist_ok=True)
        environment = {k: v for k, v in clean_env().items() if not k.startswith("TOIL")}
        environment.update(env or {})
        proc = subprocess.run(
            [*argv, str(store), "--batchSystem", "mesos", "--mesosEndpoint", self.mini.master,
             "--mesosExecutor", EXECUTOR, "--mesosName", name, "--logLevel", "INFO",
             "--retryCount", "0", *toil_args],
            cwd=cwd, env=environment, capture_output=True, text=True, timeout=RUN_TIMEOUT,
            check=False,
        )
        reports = [json.loads(line[4:]) for line in proc.stdout.splitlines()
                   if line.startswith("JOB ")]
        return Outcome(proc, reports)

    def agent_ids(self) -> set[str]:
        return {agent.id for agent in self.mini.agents}

    def master_state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.mini.master}/state", timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def frameworks_named(self, name: str) -> list[dict[str, Any]]:
        """The master's record of every framework named *name*, running or done."""
        state = self.master_state()
        return [f for f in (*state["frameworks"], *state.get("completed_frameworks", []))
                if f["name"] == name]


def tasks_of(framework: dict[str, Any]) -> list[dict[str, Any]]:
    return [task for key in ("tasks", "unreachable_tasks", "completed_tasks")
            for task in framework.get(key, [])]


def assert_ran_from_bundle(site: Site, outcome: Outcome, *, expected: object,
                           jobs: int, keys: Iterable[str] = ("module",),
                           agents: int = 2) -> list[dict[str, Any]]:
    """The run succeeded; each of its *jobs* reports computed *expected* under an executor, on
    one of the cluster's agents (at least *agents* of them in all), with the user's code (the
    job's module and each helper named in *keys*) imported from a staged bundle."""
    assert outcome.proc.returncode == 0, outcome.tail()
    reports = outcome.reports
    assert len(reports) == jobs, outcome.tail()
    assert all(r["value"] == expected for r in reports), reports
    assert all(str(r["executor"]).startswith("toil-") for r in reports), reports
    used = {r["agent"] for r in reports}
    assert used <= site.agent_ids() and len(used) >= agents, used
    for report in reports:
        for key in keys:
            file = report["module"] if key == "module" else report["helpers"][key]
            assert STAGED in file and not file.startswith(str(site.leader)), (key, report)
    return reports


def assert_cannot_import_without_bundle(outcome: Outcome, *names: str) -> None:
    """A ``--disableAutoDeployment True`` twin: the agents could not import the user's code."""
    assert outcome.proc.returncode != 0, outcome.tail()
    assert not outcome.reports
    assert any(f"No module named '{name}'" in outcome.output for name in names), outcome.tail()


def assert_stopped_before_any_job(site: Site, outcome: Outcome, name: str) -> None:
    """The leader failed before issuing a job, and the master never saw a task of its own.

    The leader registers its framework before the first job is issued (the bundle is built
    then), so the master's record of that framework is there to check, with no task in it.
    """
    assert outcome.proc.returncode != 0, outcome.tail()
    assert "Issued job" not in outcome.output, outcome.tail()
    registered = REGISTERED.search(outcome.output)
    frameworks = site.frameworks_named(name)
    if registered is not None:
        assert registered[1] in {f["id"] for f in frameworks}, frameworks
    assert all(tasks_of(f) == [] for f in frameworks), frameworks


