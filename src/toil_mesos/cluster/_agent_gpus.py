"""The mini-agent's GPU devices: which of them each running task holds.

An agent started with ``gpus:N`` in ``--resources`` has devices ``0`` to ``N-1``. Mesos' own
agent leaves the choice to its Nvidia GPU isolator; the mini-agent picks the lowest free
indices when a task asking for ``gpus`` arrives, names them to the executor
(:mod:`toil_mesos.mesos._gpu_devices`), and frees them when the task's terminal status
update is taken, which is before the master learns of it and offers the ``gpus`` again, so
two live tasks never hold the same device. A task an agent recovers after a restart keeps the
devices its TaskInfo names (:meth:`GpuDevices.hold`).

Sans-I/O; the agent calls it under its lock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["GpuDevices", "gpus_in"]

logger = logging.getLogger(__name__)


def gpus_in(resources: Iterable[Mapping[str, Any]]) -> int:
    """The whole GPUs an agent's parsed ``--resources`` hold.

    >>> gpus_in([{"name": "gpus", "type": "SCALAR", "scalar": {"value": 2.0}}])
    2
    """
    total = 0.0
    for resource in resources:
        if resource.get("name") == "gpus" and resource.get("type") == "SCALAR":
            total += float(resource["scalar"]["value"])
    return math.floor(round(total, 6))


class GpuDevices:
    """Free and held device indices; a task holds its devices until its terminal update.

    >>> gpus = GpuDevices(2)
    >>> gpus.assign("t1", 1), gpus.assign("t2", 1), gpus.assign("t3", 1)
    ([0], [1], None)
    >>> gpus.release("t1"); gpus.assign("t3", 1)
    [0]
    """

    def __init__(self, count: int) -> None:
        self._free = list(range(count))
        self._held: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        return f"<GpuDevices free={self._free} held={self._held}>"

    @property
    def free(self) -> list[int]:
        return list(self._free)

    def assign(self, task_id: str, count: int) -> list[int] | None:
        """The devices *task_id* gets now, lowest first; None when *count* are not free.

        None only happens if the master offered GPUs the agent still holds, which it does
        not: devices are freed before the master hears of a task's end.
        """
        if task_id in self._held:
            return list(self._held[task_id])
        if count <= 0 or count > len(self._free):
            if count > 0:
                logger.warning("task %s asks for %d GPUs but only devices %s are free", task_id,
                               count, self._free)
            return None
        devices, self._free = self._free[:count], self._free[count:]
        self._held[task_id] = devices
        return list(devices)

    def hold(self, task_id: str, devices: Iterable[str | int]) -> None:
        """*task_id* already holds *devices*: a task recovered after the agent restarted,
        whose TaskInfo names them (:func:`toil_mesos.mesos._gpu_devices.devices_of`).

        >>> gpus = GpuDevices(2); gpus.hold("old", ["1"]); gpus.assign("new", 1)
        [0]
        """
        taken = [int(d) for d in devices if int(d) in self._free]
        if taken:
            self._free = [d for d in self._free if d not in taken]
            self._held[task_id] = sorted(self._held.get(task_id, []) + taken)

    def release(self, task_id: str) -> None:
        """The task has ended: its devices are free again (nothing if it held none)."""
        devices = self._held.pop(task_id, None)
        if devices:
            self._free = sorted(self._free + devices)
