"""Which GPU devices a task got, as an agent tells its executor (TaskInfo labels).

Mesos hands GPUs out as the scalar ``gpus`` resource; its Nvidia isolator on the agent picks
the devices and fences the container in with the devices cgroup, telling the executor nothing.
The mini-cluster's agent has no such isolator, so it picks device indices itself and writes
them into the TaskInfo it hands the executor, as the label ``gpu_devices`` (``"0,2"``). A label
is the one free-form part of a TaskInfo, travels inside the LAUNCH event the executor already
reads, and is per task, whereas an executor's environment is fixed when its container starts,
before most of its tasks exist. An executor that finds no such label (a real Mesos agent)
leaves the worker's ``CUDA_VISIBLE_DEVICES`` as the agent set it.

Pure functions on the v1 JSON shapes, used by the mini-agent and by the executor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["GPU_DEVICES_LABEL", "devices_of", "task_gpus", "with_devices"]

#: The TaskInfo label through which the mini-agent names a task's GPU devices.
GPU_DEVICES_LABEL = "gpu_devices"


def task_gpus(task: Mapping[str, Any]) -> int:
    """The whole GPUs a v1 TaskInfo asks for (its ``gpus`` scalars, summed).

    >>> task_gpus({"resources": [{"name": "gpus", "type": "SCALAR", "scalar": {"value": 2}}]})
    2
    >>> task_gpus({"resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}}]})
    0
    """
    total = 0.0
    for resource in task.get("resources") or ():
        if resource.get("name") == "gpus" and resource.get("type", "SCALAR") == "SCALAR":
            total += float((resource.get("scalar") or {}).get("value", 0.0))
    return math.floor(round(total, 6))


def with_devices(task: Mapping[str, Any], devices: Sequence[int]) -> dict[str, Any]:
    """A copy of *task* whose labels name *devices* (replacing any such label it had).

    >>> with_devices({"name": "t"}, [0, 2])["labels"]
    {'labels': [{'key': 'gpu_devices', 'value': '0,2'}]}
    """
    labels = [label for label in (task.get("labels") or {}).get("labels") or ()
              if label.get("key") != GPU_DEVICES_LABEL]
    labels.append({"key": GPU_DEVICES_LABEL, "value": ",".join(str(d) for d in devices)})
    return {**task, "labels": {"labels": labels}}


def devices_of(task: Mapping[str, Any]) -> list[str] | None:
    """The GPU devices the agent named for *task*, or None when it named none.

    >>> devices_of(with_devices({}, [1, 3]))
    ['1', '3']
    >>> devices_of({"labels": {"labels": [{"key": "other", "value": "x"}]}}) is None
    True
    """
    for label in (task.get("labels") or {}).get("labels") or ():
        if label.get("key") == GPU_DEVICES_LABEL:
            value = str(label.get("value") or "")
            return [part.strip() for part in value.split(",") if part.strip()]
    return None
