"""Fixtures for the deploy tests: a hand-made view of the interpreter."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from toil_mesos.deploy._environment import PythonEnvironment


@pytest.fixture
def environment() -> Callable[..., PythonEnvironment]:
    """Build a PythonEnvironment whose base paths are the real interpreter's."""
    real = PythonEnvironment.current()

    def make(
        sys_path: Sequence[Path | str],
        *,
        venv_site_packages: Sequence[Path] = (),
        user_site: Path | None = None,
    ) -> PythonEnvironment:
        return PythonEnvironment(
            sys_path=tuple(str(p) for p in sys_path) + tuple(sys.path),
            venv_site_packages=tuple(p.resolve() for p in venv_site_packages),
            base_paths=real.base_paths,
            user_site=user_site,
        )

    return make

