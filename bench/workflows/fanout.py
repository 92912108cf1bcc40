"""A fan-out of trivial jobs: what launch latency and throughput are measured with.

    python fanout.py JOBSTORE --jobs N [toil options]
"""

from __future__ import annotations

from toil.common import Toil
from toil.job import Job


def nothing(job: Job, index: int) -> int:
    return index


def fan_out(job: Job, count: int) -> None:
    for index in range(count):
        job.addChildJobFn(nothing, index, cores=1, memory="100M", disk="10M")


if __name__ == "__main__":
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    options = parser.parse_args()
    with Toil(options) as toil:
        toil.start(Job.wrapJobFn(fan_out, options.jobs, cores=1, memory="100M", disk="10M"))
