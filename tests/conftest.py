"""What every test run shares: nothing it writes may land in the home of the user running it.

A workflow's leader keeps its bundle URL key in ``~/.config/toil-mesos`` so that URLs stay
the same across runs; the tests start many leaders, and a test run must not leave a key
behind (or reuse one a user made). ``XDG_CONFIG_HOME`` is pointed at a directory of the run's
own for the whole session (child processes inherit it, and tests that start leaders with only
the non-Toil variables keep it), and that directory is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_VARIABLE = "XDG_CONFIG_HOME"
_MADE: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    if _VARIABLE not in os.environ:
        directory = Path(tempfile.mkdtemp(prefix="toil-mesos-test-config-"))
        _MADE.append(directory)
        os.environ[_VARIABLE] = str(directory)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _MADE:
        os.environ.pop(_VARIABLE, None)
        shutil.rmtree(_MADE.pop(), ignore_errors=True)
