"""Stand-ins and builders shared by the scheduler's unit tests.

The batch system's rules (packing, declines, GPUs, agent health, failover) are tested by feeding
its callbacks by hand, in the shapes the master sends, and reading back what it asked of Mesos.
Every such test needs the same pieces: a driver that records each call instead of talking to a
master, a Toil ``Config`` that needs no master or job store, offers and job descriptions of a
given size, and a batch system built around the driver. They live here once so that a change in
the driver's interface or in Toil's ``Config`` is made in one place, and so that every test reads
what was launched or declined the same way. A test that needs a driver with a behaviour of its
own (a master that answers, a subscription state) subclasses :class:`RecordingDriver`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

from toil.common import Config
from toil.job import JobDescription

from toil_mesos.scheduler.batch_system import MesosBatchSystem

GIB = 1024**3


class RecordingDriver:
    """Plays the scheduler driver: records every call the batch system makes, acts on none.

    ``calls`` holds one ``(name, argument)`` pair per call, in order: ``("launch", tasks)``,
    ``("decline", filters)``, ``("kill", task id)``, ``("reconcile", tasks)``,
    ``("stop", failover)``, and ``("start" | "join" | "revive" | "suppress", None)``. The offer
    ids of each launch and decline are kept beside them, in ``launch_offers`` and
    ``decline_offers``, one list per call.
    """

    def __init__(self, scheduler: Any, framework: dict[str, Any], master: str) -> None:
        self.scheduler = scheduler
        self.framework = framework
        self.master = master
        self.calls: list[tuple[str, Any]] = []
        self.launch_offers: list[list[str]] = []
        self.decline_offers: list[list[str]] = []
        self.killed = threading.Event()

    def start(self) -> None:
        self.calls.append(("start", None))

    def stop(self, failover: bool = False) -> None:
        self.calls.append(("stop", failover))

    def join(self, timeout: float | None = None) -> None:
        self.calls.append(("join", None))

    def reviveOffers(self) -> None:
        self.calls.append(("revive", None))

    def suppressOffers(self) -> None:
        self.calls.append(("suppress", None))

    def launchTasks(self, offer_ids: Any, tasks: Any) -> None:
        self.calls.append(("launch", tasks))
        self.launch_offers.append([o["value"] for o in offer_ids])

    def declineOffer(self, offer_ids: Any, filters: Any = None) -> None:
        self.calls.append(("decline", filters))
        self.decline_offers.append([o["value"] for o in offer_ids])

    def killTask(self, task_id: Any, agent_id: Any = None) -> None:
        self.calls.append(("kill", task_id["value"]))
        self.killed.set()

    def reconcileTasks(self, tasks: Any) -> None:
        self.calls.append(("reconcile", tasks))

    # ---- reading the record ------------------------------------------------------------------

    def names(self) -> list[str]:
        """The calls' names, in order."""
        return [name for name, _ in self.calls]

    def launched(self) -> list[dict[str, Any]]:
        """Every task launched, in order."""
        return [task for name, tasks in self.calls if name == "launch" for task in tasks]

    def launches(self) -> list[tuple[str, dict[str, Any]]]:
        """Every task launched, with the (first) offer id it was launched on."""
        tasks = [tasks for name, tasks in self.calls if name == "launch"]
        return [(offer_ids[0], task)
                for offer_ids, batch in zip(self.launch_offers, tasks, strict=True)
                for task in batch]

    def declines(self) -> list[tuple[list[str], Any]]:
        """Each decline call: the offer ids declined together, and its filters."""
        filters = [f for name, f in self.calls if name == "decline"]
        return list(zip(self.decline_offers, filters, strict=True))

    def declined(self) -> list[str]:
        """Every offer id declined, in order."""
        return [offer_id for offer_ids in self.decline_offers for offer_id in offer_ids]

    def reconciles(self) -> list[Any]:
        """The task lists of each reconciliation asked for."""
        return [tasks for name, tasks in self.calls if name == "reconcile"]

    def forget(self) -> None:
        """Drops the record so far, to read only what the next callbacks cause."""
        self.calls.clear()
        self.launch_offers.clear()
        self.decline_offers.clear()


def config(**settings: Any) -> Config:
    """A Toil ``Config`` for a batch system that only talks to a recording driver."""
    cfg = Config()
    cfg.workflowID = str(uuid4())
    cfg.cleanWorkDir = "always"
    cfg.disableAutoDeployment = True
    cfg.mesos_endpoint = "127.0.0.1:5050"
    for name, value in settings.items():
        setattr(cfg, name, value)
    return cfg


def job(name: str = "j", cores: float = 1, memory: int = GIB, disk: int = GIB,
        preemptible: bool = False,
        accelerators: Iterable[dict[str, Any]] = ()) -> JobDescription:
    """A job description asking for the given resources."""
    return JobDescription(jobName=name, unitName=None, requirements={
        "cores": cores, "memory": memory, "disk": disk, "accelerators": list(accelerators),
        "preemptible": preemptible})


def gpu(count: int = 1, **extra: str) -> dict[str, Any]:
    """A GPU accelerator requirement, as Toil writes it."""
    return {"kind": "gpu", "count": count, **extra}


def offer(agent: str = "a1", *, cpus: float = 2, mem: float = 4096, disk: float = 8192,
          gpus: float = 0, offer_id: str | None = None) -> dict[str, Any]:
    """A v1 offer of unreserved scalars from *agent* (``gpus`` only when there are any).

    Its id is ``o-<agent>`` unless given, its hostname ``host-<agent>``.
    """
    scalars: list[tuple[str, float]] = [("cpus", cpus), ("mem", mem), ("disk", disk)]
    if gpus:
        scalars.append(("gpus", gpus))
    return {
        "id": {"value": offer_id if offer_id is not None else f"o-{agent}"},
        "agent_id": {"value": agent},
        "hostname": f"host-{agent}",
        "resources": [{"name": n, "type": "SCALAR", "scalar": {"value": v},
                       "allocation_info": {"role": "*"}}
                      for n, v in scalars],
    }


def status(task: dict[str, Any], state: str, **extra: Any) -> dict[str, Any]:
    """A status update for a launched task."""
    return {"task_id": task["task_id"], "state": state, **extra}


def batch_system(cfg: Config | None = None, *, driver: type[RecordingDriver] = RecordingDriver,
                 max_cores: float = 2, max_memory: int = 8 * GIB) -> MesosBatchSystem:
    """A batch system whose driver is *driver* (it is the caller's to shut down)."""
    return MesosBatchSystem(cfg if cfg is not None else config(), maxCores=max_cores,
                            maxMemory=max_memory, maxDisk=64 * GIB, driver_factory=driver)


@contextmanager
def running(cfg: Config | None = None, *, driver: type[RecordingDriver] = RecordingDriver,
            max_cores: float = 2, max_memory: int = 8 * GIB) -> Iterator[MesosBatchSystem]:
    """:func:`batch_system`, shut down on leaving the block."""
    batch = batch_system(cfg, driver=driver, max_cores=max_cores, max_memory=max_memory)
    try:
        yield batch
    finally:
        batch.shutdown()


def driver_of(system: MesosBatchSystem) -> RecordingDriver:
    """The recording driver (or subclass) of *system*."""
    driver = system._driver
    assert isinstance(driver, RecordingDriver), f"{driver!r} is no recording driver"
    return driver
