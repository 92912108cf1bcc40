"""Auto-deployment: find the user's code on the leader, bundle it, stage it on workers.

The pipeline on the leader is :func:`locate` (which roots ship) → :func:`scan` (which files) →
:func:`check_native` → :func:`build` (one deterministic archive); :func:`make_bundle` runs it all.
On a worker, :func:`toil_mesos.deploy.stage.stage` verifies and extracts it (import it from
its module: the name ``stage`` in this package is the module).

This package imports neither Toil nor the Mesos client: it works on paths, distributions and
archives only, so it is tested without a cluster.
"""

from __future__ import annotations

from pathlib import Path

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
    "Bundle",
    "Contents",
    "DeployOptions",
    "NativePolicy",
    "Plan",
    "UserModule",
    "build",
    "check_native",
    "find_module",
    "locate",
    "make_bundle",
    "scan",
    "script_module",
    "user_module_of",
]


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
