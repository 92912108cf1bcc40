"""The Toil batch system that runs jobs on Mesos, and the bundle server it ships code with."""

from __future__ import annotations

__all__: list[str] = []
