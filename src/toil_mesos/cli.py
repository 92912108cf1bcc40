"""The ``toil-mesos`` command line.

Run it with the leader's interpreter (``python -m toil_mesos ...`` from the workflow's
virtualenv): what ships depends on that interpreter's ``sys.path`` and site-packages.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from toil_mesos import __version__
from toil_mesos.deploy import (
    DeployOptions,
    NativePolicy,
    UserModule,
    build,
    check_native,
    find_module,
    locate,
    scan,
    script_module,
)
from toil_mesos.deploy._environment import PythonEnvironment
from toil_mesos.deploy.scan import Contents, list_native
from toil_mesos.errors import MesosError

__all__ = ["main"]

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``toil-mesos`` and ``python -m toil_mesos``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args))
    except MesosError as exc:
        sys.stderr.write(f"toil-mesos: error: {exc}\n")
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toil-mesos", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True)

    bundle = commands.add_parser("bundle", help="inspect or build the bundle of a workflow")
    bundle_commands = bundle.add_subparsers(dest="bundle_command", required=True)
    inspect = bundle_commands.add_parser(
        "inspect", help="show what would ship to the workers, and why"
    )
    _add_deploy_arguments(inspect)
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(handler=_inspect)
    build_cmd = bundle_commands.add_parser("build", help="write the bundle archive")
    _add_deploy_arguments(build_cmd)
    build_cmd.add_argument(
        "-o", "--output", type=Path, required=True, metavar="DIR",
        help="directory to write <sha256>.tar.gz into",
    )
    build_cmd.set_defaults(handler=_build)
    return parser


def _add_deploy_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--module", metavar="NAME",
        help="the workflow's module, resolved like `python -m NAME` (cwd, then PYTHONPATH)",
    )
    target.add_argument("script", nargs="?", type=Path, help="the workflow script")
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="PATTERN",
        help="gitignore-style pattern of paths to leave out (repeatable)",
    )
    parser.add_argument(
        "--exclude-distribution", action="append", default=[], metavar="NAME",
        help="a distribution the workers already have (repeatable)",
    )
    parser.add_argument(
        "--max-bytes", type=int, default=DeployOptions().max_bytes, metavar="N",
        help="size limit of the code to ship (default: %(default)s)",
    )
    parser.add_argument(
        "--native", choices=[p.value for p in NativePolicy], default=NativePolicy.WARN.value,
        help="ship native code with a warning, or refuse it (default: %(default)s)",
    )
    parser.add_argument(
        "--shared-path", action="append", default=[], type=Path, metavar="PATH",
        help="a path every node mounts: code below it is not shipped (repeatable)",
    )


def _options(args: argparse.Namespace) -> DeployOptions:
    return DeployOptions(
        excludes=tuple(args.exclude),
        exclude_distributions=tuple(args.exclude_distribution),
        max_bytes=args.max_bytes,
        native=NativePolicy(args.native),
        shared_paths=tuple(args.shared_path),
    )


def _environment_and_module(
    args: argparse.Namespace,
) -> tuple[PythonEnvironment, UserModule]:
    if args.module:
        # `python -m NAME` puts the cwd first; our own sys.path[0] is this tool's directory.
        sys_path = [os.getcwd(), *sys.path[1:]]
        return PythonEnvironment.current(sys_path=sys_path), find_module(args.module, sys_path)
    module = script_module(args.script)
    # Running a script puts its directory first.
    sys_path = [str(module.file.parent), *sys.path[1:]]
    return PythonEnvironment.current(sys_path=sys_path), module


def _contents(args: argparse.Namespace) -> tuple[Contents, DeployOptions]:
    options = _options(args)
    environment, module = _environment_and_module(args)
    contents = scan(locate(module, environment=environment, options=options), options)
    return contents, options


def _build(args: argparse.Namespace) -> int:
    contents, options = _contents(args)
    check_native(contents, options.native)
    bundle = build(contents, args.output)
    sys.stdout.write(f"{bundle.path}\n")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    contents, options = _contents(args)
    with tempfile.TemporaryDirectory(prefix="toil-mesos-inspect-") as tmp:
        try:
            check_native(contents, options.native)
            refused = None
        except MesosError as exc:
            refused = str(exc)
        sha256 = None if refused else build(contents, Path(tmp)).sha256
    if args.json:
        sys.stdout.write(json.dumps(_report(contents, sha256, refused), indent=2) + "\n")
    else:
        sys.stdout.write(_format_report(contents, sha256, refused))
    return 0 if refused is None else 2


def _report(contents: Contents, sha256: str | None, refused: str | None) -> dict[str, object]:
    plan = contents.plan
    return {
        "module": plan.module.name if plan.module else None,
        "module_file": str(plan.module.file) if plan.module else None,
        "roots": [
            {"name": r.name, "kind": r.kind.value, "source": r.source, "entry": r.entry,
             "distribution": r.distribution}
            for r in contents.roots
        ],
        "files": len(contents.files),
        "bytes": contents.total_bytes,
        "sha256": sha256,
        "native": [
            {"path": n.path, "distribution": n.distribution, "compatible": n.compatible}
            for n in contents.native
        ],
        "refused": refused,
        "largest": [{"path": f.arcname, "bytes": f.size} for f in contents.largest()],
        "sys_path": [
            {"path": e.path, "status": e.status, "reason": e.reason, "root": e.root}
            for e in plan.entries
        ],
        "skipped": [{"path": s.path, "reason": s.reason} for s in contents.skipped],
    }


def _format_report(contents: Contents, sha256: str | None, refused: str | None) -> str:
    plan = contents.plan
    module = f"{plan.module.name} ({plan.module.file})" if plan.module else "(none)"
    lines = [f"module:  {module}", "roots, in import order:"]
    for root in contents.roots:
        extra = f" [{root.distribution}]" if root.distribution else ""
        lines.append(f"  {root.name:<4} {root.kind.value:<13} {root.source}{extra}")
    lines.append(f"files:   {len(contents.files)}  bytes: {contents.total_bytes}")
    lines.append(f"sha256:  {sha256 or '(not built: refused)'}")
    lines.append(f"native:  {len(contents.native) or 'none'}")
    if contents.native:
        lines.append(list_native(contents.native))
    lines.append("largest entries:")
    lines.extend(f"  {f.size:>10}  {f.arcname}" for f in contents.largest())
    lines.append("sys.path:")
    for e in plan.entries:
        where = f" ({e.root})" if e.root else ""
        lines.append(f"  {e.status:<12} {e.path}{where}: {e.reason}")
    if contents.skipped:
        lines.append(f"left out: {len(contents.skipped)} paths")
        lines.extend(f"  {s.path}: {s.reason}" for s in contents.skipped[:20])
    if refused:
        lines.append(f"refused: {refused}")
    return "\n".join(lines) + "\n"
