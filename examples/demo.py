"""``make demo``: the example workflow with ``--batchSystem=mesos`` on agents that cannot see it.

1. ``toil-mesos cluster up`` starts a local Mesos mini-cluster: a master and two agents, each in
   a private mount namespace where the leader's directory (``$TOIL_MESOS_DEMO_DIR/leader``,
   default ``/var/tmp/toil-mesos-demo/leader``) is empty.
2. A leader virtualenv like the seed's (``--system-site-packages`` over an environment that has
   Toil and toil-mesos) runs ``python -m workflow.main JOBSTORE --batchSystem=mesos`` from a copy
   of ``examples/package-hierarchy`` in that directory. toil-mesos bundles the code, serves it,
   and the agents' executors stage it and run Toil's workers.
3. The workflow prints its result and, for each job, the agent and executor that ran it and
   where it imported the user's code from (the staged bundle). ``cluster down`` stops it all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from toil_mesos.cluster.testing import leader_venv

HERE = Path(__file__).resolve().parent
# Outside this checkout: its .gitignore excludes build/, and toil-mesos honours .gitignore files
# up to the top of a checkout, as git does. Not under /tmp, which each agent has privately.
WORK = Path(os.environ.get("TOIL_MESOS_DEMO_DIR", "/var/tmp/toil-mesos-demo"))
LEADER = WORK / "leader"
CLUSTER = WORK / "cluster"


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("$", " ".join(args), flush=True)
    return subprocess.run(args, text=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def main() -> int:
    cli = [sys.executable, "-m", "toil_mesos"]
    run([*cli, "cluster", "down", "--work-dir", str(CLUSTER)], capture_output=True)
    shutil.rmtree(WORK, ignore_errors=True)
    LEADER.mkdir(parents=True)
    project = LEADER / "package-hierarchy"
    shutil.copytree(HERE / "package-hierarchy", project)
    python = leader_venv(LEADER / "venv")

    step("start a master and two agents that cannot see the leader's directory")
    up = run([*cli, "cluster", "up", "--work-dir", str(CLUSTER), "--agents", "2",
              "--hide", str(LEADER)], capture_output=True)
    sys.stdout.write(up.stdout)
    if up.returncode != 0:
        sys.stderr.write(up.stderr)
        return up.returncode
    master = json.loads((CLUSTER / "cluster.json").read_text())["master"]
    try:
        step("run the workflow on the leader with --batchSystem=mesos")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TOIL"))}
        workflow = run(
            [str(python), "-m", "workflow.main", str(WORK / "jobstore"), "--batchSystem",
             "mesos", "--mesosEndpoint", master,
             "--mesosExecutor", f"{Path(sys.executable).parent / 'toil-mesos'} executor",
             "--logLevel", "WARNING"],
            cwd=project, env=env,
        )
    finally:
        step("stop the cluster")
        run([*cli, "cluster", "down", "--work-dir", str(CLUSTER)])
    return workflow.returncode


if __name__ == "__main__":
    sys.exit(main())
