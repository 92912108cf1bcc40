"""The executor's task lifecycle with real bundles and real worker processes.

The driver is a recorder: what matters here is which updates the executor sends, in which order,
with which exit statuses, and that no task is ever reported twice.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import toil_mesos.executor.executor as executor_module
from toil_mesos.deploy import build, find_module, locate, scan
from toil_mesos.deploy._environment import PythonEnvironment
from toil_mesos.executor.executor import BUNDLE_ROOTS_ENV, ToilExecutor
from toil_mesos.mesos._gpu_devices import with_devices
from toil_mesos.task_spec import TaskSpec

pytestmark = pytest.mark.integration

PYTHON = "{}.{}".format(*sys.version_info[:2])


class RecordingDriver:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.changed = threading.Condition()

    def sendStatusUpdate(self, status: dict[str, Any]) -> dict[str, Any]:
        with self.changed:
            self.updates.append(status)
            self.changed.notify_all()
        return status

    def states(self, task_id: str) -> list[str]:
        return [u["state"] for u in self.updates if u["task_id"]["value"] == task_id]

    def wait_for(self, task_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for update in self.updates:
                    if update["task_id"]["value"] == task_id and update["state"] == state:
                        return update
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{task_id} never reached {state}: {self.updates}")
                self.changed.wait(remaining)


def data_of(update: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(update["data"]))


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[str, Path]:
    """A real bundle of a small package, and the sandbox the fetcher left it in."""
    project = tmp_path / "leader" / "proj"
    (project / "workflow").mkdir(parents=True)
    (project / "workflow" / "__init__.py").write_text("")
    (project / "workflow" / "main.py").write_text("ANSWER = 42\n")
    env0 = PythonEnvironment.current()
    env = PythonEnvironment(sys_path=(str(project),), venv_site_packages=(),
                            base_paths=env0.base_paths, user_site=None)
    contents = scan(locate(find_module("workflow.main", [str(project)]), environment=env))
    built = build(contents, tmp_path / "bundles")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    shutil.copy(built.path, sandbox / built.path.name)
    shutil.rmtree(tmp_path / "leader")  # the worker can only get the code from the bundle
    return built.sha256, sandbox


def make_executor(sandbox: Path, tmp_path: Path, *, extra_env: dict[str, str] | None = None,
                  **kwargs: Any) -> ToilExecutor:
    env = {"PATH": "/usr/bin:/bin", "MESOS_SANDBOX": str(sandbox), "MESOS_EXECUTOR_ID": "ex1",
           "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "1secs", **(extra_env or {})}
    return ToilExecutor(env=env, cache_dir=tmp_path / "cache", toil_version="9.6.0", **kwargs)


def task(task_id: str, command: str, sha256: str | None, **spec: Any) -> dict[str, Any]:
    fields = {"python": PYTHON, "toil": "9.6.0", **spec}
    data = TaskSpec(job_id=1, command=command, bundle_sha256=sha256, **fields).to_json()
    return {"task_id": {"value": task_id}, "data": base64.b64encode(data).decode()}


def test_a_job_runs_with_the_bundle_first_on_its_path(bundle, tmp_path):
    sha256, sandbox = bundle
    driver = RecordingDriver()
    out = tmp_path / "seen.json"
    probe = (f"{sys.executable} -c 'import json, os, workflow.main as m; "
             f"json.dump([m.ANSWER, m.__file__, os.environ[\"{BUNDLE_ROOTS_ENV}\"], "
             f"os.environ[\"TMPDIR\"], os.environ[\"JOBVAR\"]], open(\"{out}\", \"w\"))'")
    executor = make_executor(sandbox, tmp_path)
    executor.launchTask(driver, task("t1", probe, sha256, environment={"JOBVAR": "x"}))
    finished = driver.wait_for("t1", "TASK_FINISHED")
    assert driver.states("t1") == ["TASK_RUNNING", "TASK_FINISHED"]
    assert data_of(finished) == {"exit_status": 0, "failure": None}
    answer, module_file, roots, tmpdir, jobvar = json.loads(out.read_text())
    assert answer == 42 and jobvar == "x"
    assert module_file.startswith(str(tmp_path / "cache" / sha256))
    assert roots == str(tmp_path / "cache" / sha256 / "r0")
    assert tmpdir.startswith(str(sandbox))
    assert finished["executor_id"] == {"value": "ex1"}


def test_the_exact_exit_status_and_stderr_tail_are_reported(bundle, tmp_path):
    sha256, sandbox = bundle
    driver = RecordingDriver()
    executor = make_executor(sandbox, tmp_path)
    executor.launchTask(driver, task("t2", "echo 'no such job' >&2; exit 3", sha256))
    failed = driver.wait_for("t2", "TASK_FAILED")
    assert driver.states("t2") == ["TASK_RUNNING", "TASK_FAILED"]
    assert data_of(failed) == {"exit_status": 3, "failure": None}
    assert failed["message"] == "the worker exited with status 3: no such job"


def test_kill_stops_the_worker_and_reports_killed_once(bundle, tmp_path):
    sha256, sandbox = bundle
    driver = RecordingDriver()
    executor = make_executor(sandbox, tmp_path)
    executor.launchTask(driver, task("t3", "trap '' TERM; sleep 300", sha256))
    driver.wait_for("t3", "TASK_RUNNING")
    executor.killTask(driver, {"value": "t3"})
    executor.killTask(driver, {"value": "t3"})  # a second kill changes nothing
    driver.wait_for("t3", "TASK_KILLED", timeout=30)
    executor.shutdown(driver)
    assert driver.states("t3") == ["TASK_RUNNING", "TASK_KILLED"]


def test_shutdown_kills_every_task(bundle, tmp_path):
    sha256, sandbox = bundle
    driver = RecordingDriver()
    executor = make_executor(sandbox, tmp_path)
    for name in ("a", "b"):
        executor.launchTask(driver, task(name, "sleep 300", sha256))
    for name in ("a", "b"):
        driver.wait_for(name, "TASK_RUNNING")
    executor.shutdown(driver)
    assert {n: driver.states(n) for n in ("a", "b")} == {
        "a": ["TASK_RUNNING", "TASK_KILLED"], "b": ["TASK_RUNNING", "TASK_KILLED"]}


def test_a_bundle_whose_bytes_do_not_match_runs_nothing(bundle, tmp_path):
    sha256, sandbox = bundle
    archive = next(sandbox.glob("*.tar.zst"))
    archive.write_bytes(archive.read_bytes()[:-10] + b"0123456789")
    marker = tmp_path / "ran"
    driver = RecordingDriver()
    make_executor(sandbox, tmp_path).launchTask(driver, task("t4", f"touch {marker}", sha256))
    failed = driver.wait_for("t4", "TASK_FAILED")
    assert driver.states("t4") == ["TASK_FAILED"]
    assert "cannot stage the bundle" in failed["message"] and "expected " + sha256 in failed[
        "message"]
    assert data_of(failed) == {"exit_status": None, "failure": "staging"}
    assert not marker.exists()


@pytest.mark.parametrize(
    ("spec", "failure", "text"),
    [
        ({"python": "3.9"}, "version", "the leader runs Python 3.9"),
        ({"toil": "8.0.0"}, "version", "the leader runs Toil 8.0.0"),
    ],
)
def test_version_mismatch_fails_the_task_with_the_fix(bundle, tmp_path, spec, failure, text):
    sha256, sandbox = bundle
    driver = RecordingDriver()
    make_executor(sandbox, tmp_path).launchTask(driver, task("t5", "true", sha256, **spec))
    failed = driver.wait_for("t5", "TASK_FAILED")
    assert text in failed["message"] and data_of(failed)["failure"] == failure


def test_an_appliance_mismatch_fails_the_task_before_anything_runs(bundle, tmp_path):
    sha256, sandbox = bundle
    marker = tmp_path / "ran"
    driver = RecordingDriver()
    executor = make_executor(sandbox, tmp_path, appliance="quay.io/me/toil-mesos:1.0")
    executor.launchTask(driver, task("t8", f"touch {marker}", sha256,
                                     appliance="quay.io/me/toil-mesos:2.0"))
    failed = driver.wait_for("t8", "TASK_FAILED")
    assert driver.states("t8") == ["TASK_FAILED"]
    assert failed["message"] == (
        "this agent runs the appliance image quay.io/me/toil-mesos:1.0 but the leader expects "
        "quay.io/me/toil-mesos:2.0 (TOIL_MESOS_APPLIANCE on the leader); start the agents from "
        "quay.io/me/toil-mesos:2.0, or set TOIL_MESOS_APPLIANCE on the leader to "
        "quay.io/me/toil-mesos:1.0"
    )
    assert data_of(failed) == {"exit_status": None, "failure": "appliance"}
    assert not marker.exists()
    assert not (tmp_path / "cache" / sha256).exists(), "nothing may be staged"


def test_the_appliance_mismatch_is_named_before_a_version_mismatch(bundle, tmp_path):
    sha256, sandbox = bundle
    driver = RecordingDriver()
    executor = make_executor(sandbox, tmp_path, appliance="toil-mesos:old")
    executor.launchTask(driver, task("t9", "true", sha256, python="3.9",
                                     appliance="toil-mesos:new"))
    failed = driver.wait_for("t9", "TASK_FAILED")
    assert data_of(failed)["failure"] == "appliance"
    assert "start the agents from toil-mesos:new" in failed["message"]


@pytest.mark.parametrize(
    ("agent_env", "agent", "leader"),
    [
        ({}, "localhost/toil-mesos:dev", "toil-mesos:dev"),  # Podman's name for a local build
        ({}, "docker.io/library/toil-mesos", "toil-mesos:latest"),
        ({}, "toil-mesos:dev", None),  # the leader does not say: nothing to check
        ({}, "", "toil-mesos:dev"),  # the agent does not know its image: nothing to check
        ({"TOIL_MESOS_APPLIANCE": "localhost/toil-mesos:dev"}, None, "toil-mesos:dev"),
        ({"TOIL_MESOS_APPLIANCE": ""}, None, "toil-mesos:dev"),
    ],
)
def test_the_same_appliance_or_an_unknown_one_runs_the_job(bundle, tmp_path, agent_env, agent,
                                                            leader):
    sha256, sandbox = bundle
    marker = tmp_path / "ran"
    driver = RecordingDriver()
    executor = make_executor(sandbox, tmp_path, appliance=agent, extra_env=agent_env)
    executor.launchTask(driver, task("t10", f"touch {marker}", sha256, appliance=leader))
    finished = driver.wait_for("t10", "TASK_FINISHED")
    assert data_of(finished) == {"exit_status": 0, "failure": None}
    assert marker.exists()


def test_the_executor_reads_its_appliance_from_its_environment(bundle, tmp_path):
    sha256, sandbox = bundle
    driver = RecordingDriver()
    executor = make_executor(sandbox, tmp_path,
                             extra_env={"TOIL_MESOS_APPLIANCE": "toil-mesos:agent"})
    executor.launchTask(driver, task("t11", "true", sha256, appliance="toil-mesos:leader"))
    failed = driver.wait_for("t11", "TASK_FAILED")
    assert data_of(failed)["failure"] == "appliance"
    assert "this agent runs the appliance image toil-mesos:agent" in failed["message"]


@pytest.mark.parametrize("data", ["not base64!", base64.b64encode(b"\x80\x04pickle").decode()])
def test_malformed_task_data_is_refused_without_running_anything(tmp_path, data):
    driver = RecordingDriver()
    executor = make_executor(tmp_path, tmp_path)
    executor.launchTask(driver, {"task_id": {"value": "t6"}, "data": data})
    failed = driver.wait_for("t6", "TASK_FAILED")
    assert failed["message"].startswith("bad task data")
    assert data_of(failed) == {"exit_status": None, "failure": "task-spec"}


def test_a_task_killed_while_staging_never_starts(bundle, tmp_path, monkeypatch):
    sha256, sandbox = bundle
    staging = threading.Event()
    release = threading.Event()
    real_stage = executor_module.stage

    def slow_stage(*args: Any, **kwargs: Any) -> Any:
        staging.set()
        release.wait(30)
        return real_stage(*args, **kwargs)

    monkeypatch.setattr(executor_module, "stage", slow_stage)
    marker = tmp_path / "ran"
    driver = RecordingDriver()
    executor = make_executor(sandbox, tmp_path)
    executor.launchTask(driver, task("t7", f"touch {marker}", sha256))
    assert staging.wait(30)
    executor.killTask(driver, {"value": "t7"})
    release.set()
    driver.wait_for("t7", "TASK_KILLED")
    executor.shutdown(driver)
    assert driver.states("t7") == ["TASK_KILLED"] and not marker.exists()


def test_the_node_is_reported_from_registration_until_shutdown(tmp_path):
    from toil_mesos.node_report import NodeReport

    class Driver(RecordingDriver):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []
            self.sent = threading.Event()

        def sendFrameworkMessage(self, data: str) -> None:
            self.messages.append(data)
            self.sent.set()

    driver = Driver()
    executor = make_executor(tmp_path, tmp_path, appliance="localhost/toil-mesos:dev")
    executor.registered(driver, {}, {}, {"hostname": "agent-host"})
    assert driver.sent.wait(10)
    executor.shutdown(driver)
    report = NodeReport.decode(driver.messages[0])
    assert report is not None and report.hostname == "agent-host" and report.workers == 0
    assert report.appliance == "localhost/toil-mesos:dev"
    sent = len(driver.messages)
    assert executor._reporter is not None
    executor._reporter.join(10)
    assert not executor._reporter.is_alive() and len(driver.messages) == sent


def test_a_bundle_already_staged_is_not_read_from_the_sandbox_and_is_reported(bundle,
                                                                              tmp_path):
    from toil_mesos.deploy.stage import stage
    from toil_mesos.node_report import NodeReport

    sha256, sandbox = bundle
    archive = sandbox / f"{sha256}.tar.zst"
    stage(archive, sha256, cache_dir=tmp_path / "cache")  # an earlier workflow's executor did
    archive.write_bytes(b"not a bundle: a fetched copy the warm path must not read")

    class Driver(RecordingDriver):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []
            self.sent = threading.Event()

        def sendFrameworkMessage(self, data: str) -> None:
            self.messages.append(data)
            self.sent.set()

    driver = Driver()
    executor = make_executor(sandbox, tmp_path)
    executor.registered(driver, {}, {}, {"hostname": "agent-host"})
    executor.launchTask(driver, task("t1", f"{sys.executable} -c 'import workflow.main'",
                                     sha256))
    finished = driver.wait_for("t1", "TASK_FINISHED")
    assert data_of(finished) == {"exit_status": 0, "failure": None}
    assert driver.sent.wait(10)
    executor.shutdown(driver)
    report = NodeReport.decode(driver.messages[0])
    assert report is not None and report.staged_bundles == (sha256,)


# ---- GPUs: the mini-agent names a task's devices in a TaskInfo label; Mesos' agent names none,
# and then the agent's own CUDA_VISIBLE_DEVICES (if any) reaches the worker untouched.


def gpu_probe(out: Path) -> str:
    return (f"{sys.executable} -c 'import json, os; json.dump([os.environ.get(n) for n in "
            f"(\"CUDA_VISIBLE_DEVICES\", \"SINGULARITYENV_CUDA_VISIBLE_DEVICES\")], "
            f"open(\"{out}\", \"w\"))'")


def test_the_devices_the_agent_named_become_cuda_visible_devices(bundle, tmp_path):
    sha256, sandbox = bundle
    driver = RecordingDriver()
    out = tmp_path / "seen.json"
    executor = make_executor(sandbox, tmp_path, extra_env={"CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    executor.launchTask(driver, with_devices(task("g1", gpu_probe(out), sha256), [1, 3]))
    driver.wait_for("g1", "TASK_FINISHED")
    assert json.loads(out.read_text()) == ["1,3", "1,3"]


def test_without_named_devices_the_agents_setting_stands(bundle, tmp_path):
    sha256, sandbox = bundle
    driver = RecordingDriver()
    out = tmp_path / "seen.json"
    executor = make_executor(sandbox, tmp_path, extra_env={"CUDA_VISIBLE_DEVICES": "2"})
    executor.launchTask(driver, task("g2", gpu_probe(out), sha256))
    driver.wait_for("g2", "TASK_FINISHED")
    assert json.loads(out.read_text()) == ["2", None]


def test_workers_keep_running_while_the_agent_is_away_and_the_return_is_reported(bundle,
                                                                                tmp_path):
    from toil_mesos.node_report import NodeReport

    class Driver(RecordingDriver):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def sendFrameworkMessage(self, data: str) -> None:
            self.messages.append(data)

    sha256, sandbox = bundle
    driver = Driver()
    executor = make_executor(sandbox, tmp_path)
    marker = tmp_path / "released"
    executor.launchTask(driver, task("r1", f"while [ ! -e {marker} ]; do sleep 0.05; done",
                                     sha256))
    driver.wait_for("r1", "TASK_RUNNING")
    executor.disconnected(driver)  # the agent went away (a restart, with checkpointing)
    marker.touch()
    driver.wait_for("r1", "TASK_FINISHED")  # the worker was not stopped: it ended on its own
    executor.reregistered(driver, {"hostname": "agent-host"})
    [message] = driver.messages
    report = NodeReport.decode(message)
    assert report is not None and report.resubscribed and report.hostname == "agent-host"
    executor.shutdown(driver)
    assert driver.states("r1") == ["TASK_RUNNING", "TASK_FINISHED"]
