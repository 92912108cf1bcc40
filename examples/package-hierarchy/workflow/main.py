"""The seed's package hierarchy: run it as ``python -m workflow.main JOBSTORE [toil options]``.

It splits a list of numbers into chunks, sorts each chunk in its own job with
``util.sort.quick`` (a sibling package of ``workflow``, which Toil's own auto-deployment would
leave behind), and merges the results. Each job reports where it ran and where it imported the
user's code from, so a run shows that workers used the shipped bundle.
"""

from __future__ import annotations

import heapq
import os
import random
import socket
from pathlib import Path

from toil.common import Toil
from toil.job import Job

from util.sort import quick


def where() -> dict[str, str | None]:
    """Where this job ran, and which copy of the user's code it imported."""
    return {
        "host": socket.gethostname(),
        "agent": os.environ.get("MESOS_SLAVE_ID") or os.environ.get("MESOS_AGENT_ID"),
        "executor": os.environ.get("MESOS_EXECUTOR_ID"),
        "code": str(Path(quick.__file__).resolve().parents[2]),
    }


def sort_chunk(job: Job, chunk: list[int]) -> dict[str, object]:
    return {"sorted": quick.quicksort(chunk), "where": where()}


def merge(job: Job, results: list[dict[str, object]]) -> dict[str, object]:
    chunks = [r["sorted"] for r in results]
    return {
        "sorted": list(heapq.merge(*chunks)),  # type: ignore[arg-type]
        "where": [r["where"] for r in results],
    }


def split(job: Job, numbers: list[int], chunks: int) -> object:
    size = max(1, len(numbers) // chunks)
    parts = [numbers[i : i + size] for i in range(0, len(numbers), size)]
    children = [job.addChildJobFn(sort_chunk, part, cores=1, memory="100M", disk="10M")
                for part in parts]
    return job.addFollowOnJobFn(merge, [c.rv() for c in children],
                                cores=1, memory="100M", disk="10M").rv()


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--count", type=int, default=40, help="how many numbers to sort")
    parser.add_argument("--chunks", type=int, default=4, help="how many sorting jobs")
    options = parser.parse_args(argv)
    numbers = random.Random(7).sample(range(1000), options.count)
    with Toil(options) as toil:
        if options.restart:
            result = toil.restart()
        else:
            root = Job.wrapJobFn(split, numbers, options.chunks,
                                 cores=1, memory="100M", disk="10M")
            result = toil.start(root)
    assert result["sorted"] == sorted(numbers), "the workflow sorted wrongly"
    print(f"sorted {len(numbers)} numbers in {len(result['where'])} jobs")
    for place in result["where"]:
        print(f"  job ran on host={place['host']} agent={place['agent']} "
              f"executor={place['executor']} with code from {place['code']}")
    return result


if __name__ == "__main__":
    main()
