"""The Mesos v1 HTTP drivers, with pymesos-compatible methods and callbacks.

:class:`SchedulerDriver` (``_scheduler_driver``) subscribes a framework to a master;
:class:`ExecutorDriver` (``_executor_driver``) subscribes an executor to its agent. Both are
threads and queues around the sans-I/O state machines, built on ``_driver_base``.
"""

from __future__ import annotations

from toil_mesos.mesos._driver_base import DriverStatus
from toil_mesos.mesos._executor_driver import ExecutorDriver
from toil_mesos.mesos._scheduler_driver import SchedulerDriver

__all__ = ["DriverStatus", "ExecutorDriver", "SchedulerDriver"]
