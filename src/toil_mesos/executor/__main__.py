"""``python -m toil_mesos.executor``: what the Mesos agent starts for a toil-mesos task.

The agent gives the executor its ``MESOS_*`` environment; the executor subscribes to the agent,
runs Toil's worker for each task and exits when the agent shuts it down.
"""

from __future__ import annotations

import logging
import sys

from toil_mesos.executor.executor import ToilExecutor
from toil_mesos.mesos.driver import DriverStatus, ExecutorDriver


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    status = ExecutorDriver(ToilExecutor()).run()
    return 0 if status == DriverStatus.DRIVER_STOPPED else 1


if __name__ == "__main__":
    sys.exit(main())
