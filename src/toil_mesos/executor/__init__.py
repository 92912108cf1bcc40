"""The custom Mesos executor: stage the bundle, run Toil's worker per task, report honestly."""

from __future__ import annotations

__all__: list[str] = []
