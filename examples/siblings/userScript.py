#!/usr/bin/env python3
"""The seed's sibling modules: run it as ``./userScript.py JOBSTORE [toil options]``.

``utilities.py`` beside it is shipped to the workers with the script.
"""

from __future__ import annotations

from toil.common import Toil
from toil.job import Job

import utilities


def shout(job: Job, word: str) -> str:
    return utilities.shout(word)


if __name__ == "__main__":
    parser = Job.Runner.getDefaultArgumentParser()
    options = parser.parse_args()
    with Toil(options) as toil:
        job = Job.wrapJobFn(shout, "hello", cores=1, memory="100M", disk="10M")
        print(toil.restart() if options.restart else toil.start(job))
