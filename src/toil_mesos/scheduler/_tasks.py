"""Build the Mesos TaskInfo for one job: the executor with the bundle, and the JSON task spec.

Every task of a workflow on an agent names the same executor, with identical content (Mesos
refuses a task whose ExecutorInfo differs from the running one with the same id), so one
executor runs many tasks and fetches the bundle once. The executor id includes the bundle's
hash: a restarted workflow with changed code gets new executors, never a stale one.

A task that asks for GPUs is the exception: it gets an executor of its own (the shared id, a
dot, its task id), since Mesos' GPU isolator gives the devices to the executor's container and
tasks sharing a container would share its GPUs. Same command and bundle URI (the agent's
fetcher cache and the staged bundle make its start cheap), plus :data:`SINGLE_TASK_ENV` in its
environment, which tells it to exit once its task has ended
(:mod:`toil_mesos.executor._lifetime`).

The executor asks for no resources of its own, so a 2-core agent runs two 1-core jobs; the
tasks carry the jobs' resources. Memory and disk are whole MiB rounded up, cores in
thousandths rounded up, and a job with GPU accelerators also asks for that many ``gpus``. Each
task's resources are exact slices of the offer's own resource objects (reservations, role and
``allocation_info`` kept), reserved ones first: :mod:`toil_mesos.scheduler._carving`.
"""

from __future__ import annotations

import base64
import functools
import json
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

from toil_mesos.deploy.manifest import ARCHIVE_SUFFIX
from toil_mesos.executor._lifetime import SINGLE_TASK_ENV
from toil_mesos.scheduler._carving import UNRESERVED, OfferResources, thousandths
from toil_mesos.scheduler._matching import JobRequest, mib, millicores
from toil_mesos.task_spec import TaskSpec

__all__ = [
    "TaskBuilder",
    "executor_id_for",
    "executor_info",
    "installed_toil",
    "is_single_task_executor",
    "single_task_executor",
    "single_task_executor_id",
    "task_amounts",
    "task_info",
]


def executor_id_for(workflow_id: str, bundle_sha256: str | None) -> str:
    """One executor id per workflow and bundle.

    >>> executor_id_for("wf1", "ab" * 32)
    'toil-wf1-abababababab'
    """
    return f"toil-{workflow_id}-{(bundle_sha256 or 'nobundle')[:12]}"


def single_task_executor_id(shared_id: str, task_id: str) -> str:
    """The id of the executor made for one task (a GPU task), from the shared one.

    >>> single_task_executor_id("toil-wf1-abababababab", "toil-wf1-7")
    'toil-wf1-abababababab.toil-wf1-7'
    """
    return f"{shared_id}.{task_id}"


def is_single_task_executor(executor_id: str) -> bool:
    """Whether *executor_id* names an executor made for one task (shared ids have no dot).

    >>> is_single_task_executor("toil-wf1-abababababab.toil-wf1-7")
    True
    >>> is_single_task_executor("toil-wf1-abababababab")
    False
    """
    return "." in executor_id


def single_task_executor(shared: Mapping[str, Any], task_id: str) -> dict[str, Any]:
    """The ExecutorInfo of *task_id*'s own executor: *shared*'s, with its own id and
    :data:`SINGLE_TASK_ENV` set, so it exits after the task."""
    command = dict(shared["command"])
    variables = [v for v in command.get("environment", {}).get("variables", ())
                 if v.get("name") != SINGLE_TASK_ENV]
    variables.append({"name": SINGLE_TASK_ENV, "value": "1"})
    command["environment"] = {"variables": sorted(variables, key=lambda v: str(v["name"]))}
    info = dict(shared)
    info["executor_id"] = {
        "value": single_task_executor_id(str(shared["executor_id"]["value"]), task_id)}
    info["command"] = command
    return info


def executor_info(
    *,
    executor_id: str,
    framework_id: str | None,
    command: Sequence[str],
    bundle_url: str | None,
    bundle_sha256: str | None,
    environment: Mapping[str, str],
    name: str = "toil-mesos executor",
) -> dict[str, Any]:
    """The ExecutorInfo every task of this workflow carries (identical for one executor id)."""
    command_info: dict[str, Any] = {
        "shell": True,
        "value": " ".join(shlex.quote(part) for part in command),
        "environment": {
            "variables": [{"name": k, "value": v} for k, v in sorted(environment.items())]
        },
    }
    if bundle_url is not None and bundle_sha256 is not None:
        command_info["uris"] = [
            {
                "value": bundle_url,
                "cache": True,
                "extract": False,
                "executable": False,
                "output_file": f"{bundle_sha256}{ARCHIVE_SUFFIX}",
            }
        ]
    info: dict[str, Any] = {
        "executor_id": {"value": executor_id},
        "type": "CUSTOM",
        "name": name,
        "command": command_info,
    }
    if framework_id is not None:
        info["framework_id"] = {"value": framework_id}
    return info


def task_info(
    *,
    job: JobRequest,
    name: str,
    task_id: str,
    offer: Mapping[str, Any],
    executor: Mapping[str, Any],
    spec: TaskSpec,
    role: str = UNRESERVED,
) -> dict[str, Any]:
    """The TaskInfo launching *job* on the agent of *offer*, as a framework in *role*."""
    return {
        "name": name,
        "task_id": {"value": task_id},
        "agent_id": dict(offer["agent_id"]),
        "resources": OfferResources(offer, role).take(task_amounts(job)),
        "executor": dict(executor),
        "data": base64.b64encode(spec.to_json()).decode("ascii"),
    }


def task_amounts(job: JobRequest) -> dict[str, float]:
    """What a task of *job* takes, by Mesos resource name, in Mesos' units.

    Cores are rounded up to thousandths and memory and disk to whole MiB, exactly as
    placement compared them. A job's GPUs are carved the same way as any other scalar.
    """
    amounts = {
        "cpus": millicores(job.cores) / 1000,
        "mem": float(mib(job.memory)),
        "disk": float(mib(job.disk)),
    }
    if job.gpus > 0:
        amounts["gpus"] = float(job.gpus)
    return amounts


class TaskBuilder:
    """Builds the TaskInfos of one leader run, with what every task shares computed once.

    The executor info, Toil's version, the Python version and the cleanup info are the same
    for every task of a run (the executor info changes only with the framework id or the
    bundle), so an offer round that launches thousands of tasks builds them once.
    """

    def __init__(self, *, run_id: str, executor_command: Sequence[str],
                 cleanup: Mapping[str, Any], appliance: str | None,
                 role: str = UNRESERVED) -> None:
        self._run_id = run_id
        #: The framework's role: which reserved resources of an offer tasks may take.
        self._role = role
        self._command = list(executor_command)
        self._cleanup = dict(cleanup)
        self._appliance = appliance
        self._python = "{}.{}".format(*sys.version_info[:2])
        self._toil = installed_toil()
        self._executor_key: tuple[str | None, str | None, str | None] | None = None
        self._executor: dict[str, Any] = {}
        self._spec_parts: dict[str | None, tuple[bytes, bytes]] = {}
        self._environments: dict[int, tuple[Mapping[str, str], bytes]] = {}

    def task_id_of(self, job_id: int, attempt: int = 0) -> str:
        """The task id of a job's *attempt* (how often it went back to the queue before)."""
        return f"toil-{self._run_id}-{job_id}" + (f"-{attempt}" if attempt else "")

    def executor_id(self, bundle_sha256: str | None, task_id: str | None = None) -> str:
        """The shared executor's id, or with *task_id* the id of that task's own executor."""
        shared = executor_id_for(self._run_id, bundle_sha256)
        return shared if task_id is None else single_task_executor_id(shared, task_id)

    def executor(self, *, framework_id: str | None, bundle_url: str | None,
                 bundle_sha256: str | None) -> dict[str, Any]:
        key = (framework_id, bundle_url, bundle_sha256)
        if key != self._executor_key:
            self._executor = executor_info(
                executor_id=executor_id_for(self._run_id, bundle_sha256),
                framework_id=framework_id,
                command=self._command,
                bundle_url=bundle_url,
                bundle_sha256=bundle_sha256,
                environment={"PYTHONUNBUFFERED": "1"},
            )
            self._executor_key = key
        return self._executor

    def tasks(self, *, offer: Mapping[str, Any], jobs: Sequence[tuple[JobRequest, str, str,
                                                                      Mapping[str, str]]],
              executor: Mapping[str, Any], bundle_sha256: str | None,
              attempt_of: Callable[[int], int] | None = None) -> list[dict[str, Any]]:
        """The TaskInfos launching *jobs* (request, name, command, environment) on *offer*.

        The same as :func:`task_info` with a :class:`TaskSpec` per job, built for thousands of
        tasks a round: what tasks share (agent, executor, resources cut alike, the spec's
        fixed fields, a shared environment) is built once and shared, not copied.

        :raises NotEnoughResources: when *offer* cannot hold every job (placement sized it
            wrongly); no task is returned then.
        """
        carver = OfferResources(offer, self._role)
        agent_id = dict(offer["agent_id"])
        head, tail = self._spec_ends(bundle_sha256)
        built = []
        sizes: dict[tuple[Any, ...], tuple[tuple[str, int], ...]] = {}
        for job, name, command, environment in jobs:
            size = (*job.size, job.gpus)
            wanted = sizes.get(size)
            if wanted is None:  # once per size, not per task
                wanted = sizes[size] = thousandths(task_amounts(job))
            shared = carver.take_thousandths(wanted)
            data = b'%s"job_id":%d,"command":%s,"environment":%s,%s' % (
                head, job.job_id, _dumps(command).encode(),
                self._environment_json(environment), tail)
            task_id = self.task_id_of(job.job_id, attempt_of(job.job_id) if attempt_of else 0)
            built.append({
                "name": name,
                "task_id": {"value": task_id},
                "agent_id": agent_id,
                "resources": shared,
                # GPUs go to the executor's container: a GPU task's container is its own.
                "executor": single_task_executor(executor, task_id) if job.gpus else executor,
                "data": base64.b64encode(data).decode("ascii"),
            })
        return built

    def _spec_ends(self, bundle_sha256: str | None) -> tuple[bytes, bytes]:
        """The spec's JSON before the job id and after the environment, the same for every
        task of the run (cut from a real :meth:`TaskSpec.to_json`, so the format stays one)."""
        ends = self._spec_parts.get(bundle_sha256)
        if ends is None:
            whole = TaskSpec(job_id=0, command="", bundle_sha256=bundle_sha256,
                             python=self._python, toil=self._toil, cleanup=self._cleanup,
                             appliance=self._appliance).to_json()
            head = whole[:whole.index(b'"job_id":')]
            tail = whole[whole.index(b',"bundle_sha256":') + 1:]
            ends = self._spec_parts[bundle_sha256] = (head, tail)
        return ends

    def _environment_json(self, environment: Mapping[str, str]) -> bytes:
        # Jobs without an environment of their own share one mapping: encode it once.
        cached = self._environments.get(id(environment))
        if cached is not None and cached[0] is environment:
            return cached[1]
        data = _dumps(dict(sorted(environment.items()))).encode()
        if len(self._environments) > 64:
            self._environments.clear()
        self._environments[id(environment)] = (environment, data)
        return data


_dumps = json.JSONEncoder(separators=(",", ":")).encode


@functools.cache
def installed_toil() -> str | None:
    """Toil's version on the leader (looked up once: it costs a millisecond each time)."""
    try:
        return metadata.version("toil")
    except metadata.PackageNotFoundError:
        return None
