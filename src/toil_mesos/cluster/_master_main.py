"""The mini-cluster master's command line: options in, a serving :class:`MasterServer` out.

Kept apart from ``master.py`` (the HTTP shell) because parsing, validating and the process's
lifecycle (logging setup, signals, the ZooKeeper election, the ready file) are a job of their
own. ``python -m toil_mesos.cluster.master`` still starts a master: that module hands its
``__main__`` to :func:`main` here. Command line (``_protocol``)::

    python -m toil_mesos.cluster.master --host IP --port N --work-dir DIR --ready-file F
        [--agent-timeout S] [--heartbeat-interval S] [--offer-interval S] [--hostname H]
        [--zk zk://HOST:PORT[,...]/PATH] [--zk-session-timeout S] [--credentials FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from toil_mesos.cluster._master_auth import load_credentials
from toil_mesos.cluster._master_election import DEFAULT_SESSION_TIMEOUT, MasterElection
from toil_mesos.cluster.master import MasterServer
from toil_mesos.mesos._master_spec import ZooKeeperMasters, parse_master_spec

__all__ = ["main"]

logger = logging.getLogger("toil_mesos.cluster.master")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m toil_mesos.cluster.master",
        description="The toil-mesos mini-cluster master (a test and demo cluster, not Mesos).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on and advertise")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument("--work-dir", required=True, help="the master's working directory")
    parser.add_argument("--ready-file", required=True, help="JSON file written once serving")
    parser.add_argument(
        "--agent-timeout",
        type=_positive,
        default=10.0,
        help="seconds without an agent stream before the agent is lost (default: %(default)s)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=_positive,
        default=15.0,
        help="seconds between HEARTBEAT events (default: %(default)s)",
    )
    parser.add_argument(
        "--offer-interval",
        type=_positive,
        default=1.0,
        help="seconds between offer rounds (default: %(default)s)",
    )
    parser.add_argument("--hostname", default=None, help="hostname the master advertises")
    parser.add_argument(
        "--zk",
        default=None,
        help="zk://HOST:PORT[,...]/PATH: elect the leader with the other masters there",
    )
    parser.add_argument(
        "--zk-session-timeout",
        type=_positive,
        default=DEFAULT_SESSION_TIMEOUT,
        help="ZooKeeper session timeout in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--credentials",
        default=None,
        help="Mesos JSON credentials file: frameworks must authenticate (HTTP Basic)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    return parser


def _write_ready_file(path: Path, content: dict[str, Any]) -> None:
    # Atomic: ``cluster up`` polls for the file and must never read half of it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content))
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the master in the foreground until SIGTERM or SIGINT; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    zk: ZooKeeperMasters | None = None
    try:
        credentials = None if args.credentials is None else load_credentials(Path(args.credentials))
        if args.zk is not None:
            spec = parse_master_spec(args.zk)
            if not isinstance(spec, ZooKeeperMasters):
                raise ValueError(f"--zk {args.zk!r}: expected zk://HOST:PORT[,...]/PATH")
            zk = spec
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    try:
        server = MasterServer(
            host=args.host,
            port=args.port,
            work_dir=str(work_dir.resolve()),
            agent_timeout=args.agent_timeout,
            heartbeat_interval=args.heartbeat_interval,
            offer_interval=args.offer_interval,
            hostname=args.hostname,
            credentials=credentials,
        )
    except OSError as exc:
        logger.error("Cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("Received signal %s; stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if zk is not None:
        server.election = MasterElection(
            zk, server.info_data(), session_timeout=args.zk_session_timeout, on_deposed=stop.set
        )
        try:
            server.election.start()
        except Exception as exc:  # noqa: BLE001 - kazoo's own error types
            logger.error("Cannot join the election in ZooKeeper %s: %s", zk, exc)
            return 1
    server.start()
    _write_ready_file(Path(args.ready_file), {"address": server.address, "pid": os.getpid()})
    while not stop.wait(1.0):
        pass
    server.stop()
    if server.election is not None:
        server.election.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
