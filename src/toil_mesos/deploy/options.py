"""What the user can tell auto-deployment: extra excludes, the size limit, native-code policy."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_MAX_BYTES", "DeployOptions", "NativePolicy"]

#: Large enough for any workflow's code with a few pure-Python dependencies, small enough that
#: running a script from a directory full of data (``/tmp``, ``$HOME``) fails fast and loudly.
DEFAULT_MAX_BYTES = 100 * 1024 * 1024


class NativePolicy(enum.StrEnum):
    """What to do when the code to ship contains compiled extension modules or libraries."""

    #: Ship them and log which ones: fine when workers run the same platform as the leader.
    WARN = "warn"
    #: Refuse to build the bundle: the user installs them on the workers instead.
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeployOptions:
    """Options of :func:`~toil_mesos.deploy.locate.locate` and the scan and build that follow.

    ``option_names`` maps each setting to the flag that sets it where the options come from
    (the CLI or the batch system), so error messages name the flag the user actually has.
    """

    #: Extra gitignore-style patterns, matched against paths relative to each root.
    excludes: tuple[str, ...] = ()
    #: Distributions that workers already have, on top of Toil's own and its dependencies.
    exclude_distributions: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    native: NativePolicy = NativePolicy.WARN
    #: Paths every node mounts at the same place: code below them is not shipped, its path is
    #: put on the workers' ``PYTHONPATH`` instead.
    shared_paths: tuple[Path, ...] = ()
    option_names: dict[str, str] = field(
        default_factory=lambda: {
            "excludes": "--exclude",
            "exclude_distributions": "--exclude-distribution",
            "max_bytes": "--max-bytes",
            "native": "--native",
            "shared_paths": "--shared-path",
        }
    )
