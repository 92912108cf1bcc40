"""Toil plugin: makes ``--batchSystem=mesos`` mean toil-mesos' batch system.

Toil imports every top-level module named ``toil_batch_system_*`` and lets it register batch
systems. This one registers a factory under ``mesos`` (replacing Toil's built-in, which needs
pymesos and cannot load on Python 3.11+). It imports nothing heavy and defines no class: a plugin
that fails at import time breaks every Toil command line.
"""

from __future__ import annotations

from typing import Any

from toil.batchSystems.registry import add_batch_system_factory

__all__: list[str] = []


def _mesos_batch_system_factory() -> Any:
    from toil_mesos.scheduler.batch_system import MesosBatchSystem

    return MesosBatchSystem


add_batch_system_factory("mesos", _mesos_batch_system_factory)
