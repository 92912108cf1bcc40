"""The ``toil-mesos`` command line.

Run it with the leader's interpreter (``python -m toil_mesos ...`` from the workflow's
virtualenv): what ships depends on that interpreter's ``sys.path`` and site-packages.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from toil_mesos import __version__, appliance
from toil_mesos._cache_commands import add_cache_commands, size_argument
from toil_mesos.cluster import launcher
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
    if args.command == "executor":
        # What the Mesos agent runs; it configures its own logging (INFO, to the sandbox).
        from toil_mesos.executor.__main__ import main as executor_main

        return executor_main()
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

    commands.add_parser(
        "executor",
        help="the Mesos executor that runs Toil's workers (started by Mesos agents, not by hand)",
    )

    bundle = commands.add_parser(
        "bundle", help="inspect or build the bundle of a workflow, or its staged cache"
    )
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
        help="directory to write <sha256>.tar.zst into",
    )
    build_cmd.set_defaults(handler=_build)
    add_cache_commands(bundle_commands)
    _add_cluster_commands(commands)

    appliance_cmd = commands.add_parser(
        "appliance",
        help="the Toil Appliance image's entrypoint: run a master, an agent or a leader",
    )
    appliance.add_arguments(appliance_cmd)
    appliance_cmd.set_defaults(handler=appliance.run)
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


# --- cluster up / status / down ----------------------------------------------------------------


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _megabytes(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def _add_cluster_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = commands.add_parser(
        "cluster",
        help="a local Mesos mini-cluster for tests and demos (not a replacement for Mesos)",
    )
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    defaults = launcher.ClusterOptions()

    up = cluster_commands.add_parser(
        "up", help="start masters and agents in the background; print what frameworks give as "
              "--mesosEndpoint (the master's HOST:PORT, or the zk:// URL with --zk)",
    )
    _add_work_dir(up)
    up.add_argument("--agents", type=_count, default=defaults.agents, metavar="N",
                    help="number of agents (default: %(default)s)")
    up.add_argument("--cpus", type=_positive, default=defaults.cpus, metavar="C",
                    help="cpus each agent offers (default: %(default)s)")
    up.add_argument("--mem", type=_megabytes, default=defaults.mem, metavar="MB",
                    help="memory each agent offers, in MB (default: %(default)s)")
    up.add_argument("--disk", type=_megabytes, default=defaults.disk, metavar="MB",
                    help="disk each agent offers, in MB (default: %(default)s)")
    up.add_argument(
        "--hide", type=Path, action="append", default=[], metavar="PATH",
        help="a path agents must not see: covered by an empty read-only directory in each "
             "agent's private mount namespace (repeatable; needs root and unshare)",
    )
    up.add_argument(
        "--netns", action="store_true",
        help="give each agent its own network namespace and address on a private bridge; "
             "the master listens on the host's address there (needs root and ip)",
    )
    up.add_argument(
        "--fetcher-cache-size", default=None, metavar="SIZE", type=size_argument,
        help="bound of each agent's fetcher cache, least recently used evicted first, as "
             "Mesos' --fetcher_cache_size (e.g. 500M; default: 2GB)",
    )
    up.add_argument(
        "--gpus", type=_count, default=defaults.gpus, metavar="N",
        help="GPU devices (the 'gpus' resource) on each GPU agent; the agent names the devices "
             "it gives a task, which its worker sees as CUDA_VISIBLE_DEVICES (default: none)",
    )
    up.add_argument(
        "--gpu-agents", type=_count, default=defaults.gpu_agents, metavar="K",
        help="how many agents, the first ones, have --gpus GPUs (default: %(default)s)",
    )
    up.add_argument("--timeout", type=_positive, default=defaults.ready_timeout, metavar="S",
                    help="seconds to wait for every daemon to be ready (default: %(default)s)")
    up.add_argument(
        "--reserve", default=None, metavar="ROLE",
        help="statically reserve each agent's cpus, mem and disk for ROLE (as a Mesos agent's "
             "--resources 'cpus(ROLE):C;...'): only frameworks in ROLE (--mesosRole ROLE) "
             "get them (default: all unreserved)",
    )
    _add_master_options(up, defaults)
    up.add_argument(
        "--agent-recovery-timeout", type=_positive, default=None, metavar="S",
        help="how long executors of frameworks that checkpoint keep running and retrying "
             "while their agent is away (restarting), as Mesos' --recovery_timeout "
             "(default: 900)",
    )
    up.add_argument(
        "--executor-reregistration-timeout", type=_positive, default=None, metavar="S",
        help="how long a restarted agent waits for those executors to re-subscribe before it "
             "reports their tasks lost, as Mesos' --executor_reregistration_timeout "
             "(default: 2)",
    )
    up.set_defaults(handler=_cluster_up)

    status = cluster_commands.add_parser(
        "status", help="show what runs and which master leads; exit 0 only if every master, "
                  "agent (and ZooKeeper) is alive and a master leads",
    )
    _add_work_dir(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(handler=_cluster_status)

    down = cluster_commands.add_parser(
        "down", help="stop the cluster, remove its namespaces, links, sandboxes and fetcher "
        "caches; keep its logs (idempotent)",
    )
    _add_work_dir(down)
    down.add_argument(
        "--timeout", type=_positive, default=launcher.DEFAULT_STOP_TIMEOUT, metavar="S",
        help="seconds between SIGTERM and SIGKILL (default: %(default)s)",
    )
    down.set_defaults(handler=_cluster_down)


def _add_master_options(up: argparse.ArgumentParser, defaults: launcher.ClusterOptions) -> None:
    masters = up.add_argument_group("masters")
    masters.add_argument(
        "--masters", type=_count, default=defaults.masters, metavar="N",
        help="number of masters; more than one elect a leader through ZooKeeper, so this "
             "needs --zk (default: %(default)s)",
    )
    masters.add_argument(
        "--zk", nargs="?", const="", default=None, metavar="zk://HOST:PORT/PATH",
        help="elect the leading master through ZooKeeper: alone, start one for the cluster "
             "(on loopback, or the agents' bridge with --netns; `down` stops it and removes "
             "its data); with a URL, use that one. `up` then prints the zk:// URL to give "
             "frameworks as --mesosEndpoint",
    )
    masters.add_argument(
        "--zk-session-timeout", type=_positive, default=defaults.zk_session_timeout,
        metavar="S", help="the masters' ZooKeeper session timeout: how soon a dead leader "
                          "is replaced (default: %(default)s)",
    )
    masters.add_argument(
        "--credentials", type=Path, default=None, metavar="FILE",
        help="Mesos JSON credentials file; frameworks must then authenticate",
    )


def _add_work_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--work-dir", type=Path, required=True, metavar="DIR",
        help="the cluster's directory: cluster.json, logs, sandboxes",
    )


def _cluster_up(args: argparse.Namespace) -> int:
    options = launcher.ClusterOptions(
        agents=args.agents, cpus=args.cpus, mem=args.mem, disk=args.disk,
        hide=tuple(args.hide), netns=args.netns, ready_timeout=args.timeout,
        masters=args.masters, start_zookeeper=args.zk == "", zk=args.zk or None,
        zk_session_timeout=args.zk_session_timeout, credentials=args.credentials,
        reserve=args.reserve,
        gpus=args.gpus, gpu_agents=args.gpu_agents,
        agent_args=(
            () if args.fetcher_cache_size is None
            else ("--fetcher-cache-size", str(args.fetcher_cache_size))
        ),
        agent_recovery_timeout=args.agent_recovery_timeout,
        executor_reregistration_timeout=args.executor_reregistration_timeout,
    )
    # A SIGTERM or SIGHUP while daemons start must still stop them: turn it into SystemExit,
    # which `up` cleans up after like any other failure.
    previous = {sig: signal.signal(sig, _exit_on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        record = launcher.up(args.work_dir, options)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stdout.write(f"{record.endpoint}\n")
    return 0


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _cluster_status(args: argparse.Namespace) -> int:
    found = launcher.status(args.work_dir)
    if found is None:
        sys.stderr.write(f"toil-mesos: no cluster in {args.work_dir} (no cluster.json)\n")
        return 1
    if args.json:
        report = {
            "cluster": found.record.to_json(),
            "running": dict(found.running),
            "healthy": found.healthy,
            "leader": found.leader,
            "leader_error": found.leader_error,
            "masters": found.roles,
            "state": found.state,
            "state_error": found.state_error,
        }
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(_format_status(found))
    return 0 if found.healthy else 1


def _format_status(found: launcher.ClusterStatus) -> str:
    record = found.record
    alive = {True: "alive", False: "DEAD"}
    lines = [f"cluster {record.cluster_id} in {record.work_dir}"]
    lines.append(f"endpoint  {record.endpoint}")
    pids = {d.name: d.pid for d in record.daemons}
    roles = found.roles
    for name, address in launcher.master_addresses(record).items():
        lines.append(f"{name:<9} {address:<21} pid {pids.get(name, record.master_pid):<8} "
                     f"{alive[found.running.get(name, False)]}  {roles[name]}")
    if found.leader is None:
        lines.append(f"no leading master: {found.leader_error}")
    zookeeper = next((d for d in record.daemons if d.role == "zookeeper"), None)
    if zookeeper is not None:
        lines.append(f"zookeeper {record.endpoint.removeprefix('zk://').split('/')[0]:<21} pid "
                     f"{zookeeper.pid:<8} {alive[found.running.get('zookeeper', False)]}")
    for i, agent in enumerate(record.agents):
        lines.append(f"agent {i:<3} {agent.address:<21} pid {agent.pid:<8} "
                     f"{alive[found.running.get(f'agent {i}', False)]}  {agent.id}")
    if record.network is not None:
        net = record.network
        lines.append(f"network   {net.subnet} (host {net.host_address} on {net.host_link})")
    if record.isolation is not None:
        hidden = ", ".join(str(p) for p in record.isolation.hide) or "nothing else"
        lines.append(f"isolation private /tmp; hidden: {hidden}")
    if found.state is not None:
        slaves = found.state.get("slaves") or []
        ids = {str(s.get("id")) for s in slaves if isinstance(s, dict)}
        missing = [a.id for a in record.agents if a.id not in ids]
        lines.append(
            f"{found.leader or 'master'} /state: {len(slaves)} agents registered, "
            f"{len(found.state.get('frameworks') or [])} frameworks"
            + (f"; not registered: {', '.join(missing)}" if missing else "")
        )
    else:
        lines.append(f"master /state unreachable: {found.state_error}")
    return "\n".join(lines) + "\n"


def _cluster_down(args: argparse.Namespace) -> int:
    for line in launcher.down(args.work_dir, timeout=args.timeout):
        sys.stdout.write(f"{line}\n")
    return 0
