"""``python -m toil_mesos``: the command line, run with the leader's own interpreter."""

from __future__ import annotations

import sys

from toil_mesos.cli import main

if __name__ == "__main__":
    sys.exit(main())
