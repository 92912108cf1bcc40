"""Auto-deployment: find the user's code on the leader, bundle it, stage it on workers.

The pipeline on the leader is :func:`locate` (which roots ship) → :func:`scan` (which files) →
:func:`check_native` → :func:`build` (one deterministic archive); :func:`make_bundle` runs it all.
On a worker, :func:`toil_mesos.deploy.stage.stage` verifies and extracts it (import it from
its module: the name ``stage`` in this package is the module).

This package imports neither Toil nor the Mesos client: it works on paths, distributions and
archives only, so it is tested without a cluster.
"""

from __future__ import annotations

import logging
from pathlib import Path

from toil_mesos.deploy._environment import PythonEnvironment
from toil_mesos.deploy.build import Bundle, build
from toil_mesos.deploy.locate import (
    Plan,
    UserModule,
    find_module,
    locate,
    script_module,
    user_module_of,
)
from toil_mesos.deploy.options import DeployOptions, NativePolicy
from toil_mesos.deploy.scan import Contents, check_native, scan

__all__ = [
    "NOTHING_TO_SHIP",
    "Bundle",
    "Contents",
    "DeployOptions",
    "NativePolicy",
    "Plan",
    "UserModule",
    "build",
    "check_native",
    "contents_to_ship",
    "find_module",
    "locate",
    "make_bundle",
    "scan",
    "script_module",
    "user_module_of",
]

logger = logging.getLogger(__name__)

#: The one line a leader logs when it builds and serves no bundle.
NOTHING_TO_SHIP = "nothing to ship: the workflow's code is on the agents"


def contents_to_ship(
    module: UserModule | None,
    *,
    environment: PythonEnvironment | None = None,
    options: DeployOptions | None = None,
) -> Contents | None:
    """Locate, scan and check the user's code; None (logged once) when nothing needs shipping.

    None means the workers run the workflow as they are: ``__main__`` and the job modules are
    Toil's (the CWL and WDL runners), the virtualenv adds nothing of the user's, or every root
    is on a shared filesystem (its path reaches workers through the leader's ``PYTHONPATH``).
    Callers then build and serve nothing, and tasks name no bundle.

    :raises BundleError: anything wrong with the user's code or options.
    """
    opts = options or DeployOptions()
    plan = locate(module, environment=environment, options=opts)
    if plan.ships_nothing:
        logger.info(NOTHING_TO_SHIP)
        return None
    contents = scan(plan, opts)
    check_native(
        contents,
        opts.native,
        option=opts.option_names.get("native", "--native"),
        exclude_option=opts.option_names.get("exclude_distributions", "--exclude-distribution"),
    )
    if not contents.files:
        logger.info(NOTHING_TO_SHIP)
        return None
    return contents


def make_bundle(
    module: UserModule | None, out_dir: Path, options: DeployOptions | None = None
) -> Bundle:
    """Locate, scan, check and build in one call: what the leader does before the first job.

    :raises BundleError: anything wrong with the user's code or options, before any file is
        written to *out_dir*.
    """
    opts = options or DeployOptions()
    contents = scan(locate(module, options=opts), opts)
    check_native(
        contents,
        opts.native,
        option=opts.option_names.get("native", "--native"),
        exclude_option=opts.option_names.get("exclude_distributions", "--exclude-distribution"),
    )
    return build(contents, out_dir)
