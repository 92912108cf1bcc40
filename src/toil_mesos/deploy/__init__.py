"""Auto-deployment: find the user's code on the leader, bundle it, stage it on workers.

This package imports neither Toil nor the Mesos client: it works on paths, distributions and
archives only, so it is tested without a cluster.
"""

from __future__ import annotations

__all__: list[str] = []
