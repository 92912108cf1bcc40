"""toil-mesos: Toil's ``--batchSystem=mesos`` on modern Python, with auto-deployment.

Importing this package has no side effects: no threads, sockets, environment changes or probes.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
