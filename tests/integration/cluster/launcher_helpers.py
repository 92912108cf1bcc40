"""Helpers for the launcher and isolation tests, and stand-in daemons for the launcher.

Run as a script (``python launcher_helpers.py master|agent ...``) this file is a stand-in for
``toil_mesos.cluster.master``/``agent``: it takes the protocol's command line, listens where it
is told, writes the ready file atomically and stops on SIGTERM, so the launcher's process,
isolation and error handling are tested independently of the real daemons. The stand-in
agent registers with the stand-in master over HTTP, which proves the agent reaches the master
from inside its namespaces. ``--fake-*`` flags make agents misbehave on cue.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

HERE = Path(__file__).resolve()
FAKE_MASTER = (sys.executable, str(HERE), "master")
FAKE_AGENT = (sys.executable, str(HERE), "agent")
TOIL_MESOS = shutil.which("toil-mesos", path=str(Path(sys.executable).parent)) or "toil-mesos"
_PR_SET_CHILD_SUBREAPER = 36


def machine_cannot_isolate() -> str | None:
    """Why this machine cannot run the isolation tests (None when it can)."""
    from toil_mesos.cluster._isolation import mount_isolation_unavailable

    return mount_isolation_unavailable()


def machine_cannot_netns() -> str | None:
    """Why this machine cannot run the netns tests (None when it can)."""
    from toil_mesos.cluster._isolation import netns_unavailable

    return netns_unavailable()


def real_daemons_missing() -> str | None:
    """Why the real master/agent cannot be used yet (None when both modules exist)."""
    import importlib.util

    for role in ("master", "agent"):
        if importlib.util.find_spec(f"toil_mesos.cluster.{role}") is None:
            return f"toil_mesos.cluster.{role} does not exist yet"
    return None


def become_subreaper(on: bool) -> None:
    """Make orphans of this test process (daemons of `cluster up`) our children, so we reap them.

    PID 1 on these machines does not reap orphans; without this every daemon that `cluster up`
    detached would stay a zombie after `cluster down`.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)


def reap(pids: Sequence[int]) -> None:
    """Collect exited children among ``pids`` (zombies left by `cluster down`)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``toil-mesos ARGS`` and capture its output."""
    return subprocess.run(
        [TOIL_MESOS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def netns_names() -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def link_names() -> list[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def mounts_mentioning(text: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if text in line]


def processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``, e.g. a work dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if text in cmdline and state not in "ZXx":
            found.append(int(entry.name))
    return found


def get_json(url: str, timeout: float = 5.0) -> object:
    """GET a JSON document without any proxy (only loopback or our own namespaces)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as answer:
        return json.loads(answer.read())


@contextlib.contextmanager
def tcp_server(host: str) -> Iterator[int]:
    """A TCP listener on ``host``, port chosen by the kernel; yields the port."""
    import socket

    with socket.create_server((host, 0)) as sock:
        yield sock.getsockname()[1]


# --- stand-in daemons ---------------------------------------------------------------------------


def _write_ready(path: str, data: dict[str, object]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class _Handler(http.server.BaseHTTPRequestHandler):
    agents: ClassVar[list[str]] = []
    exit_on_register: ClassVar[bool] = False

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"fake: {format % args}\n")

    def _send(self, data: object) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send({"slaves": [{"id": a} for a in self.agents], "frameworks": []})

    def do_POST(self) -> None:
        data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.agents.append(data["id"])
        self._send({"ok": True})
        if self.exit_on_register:
            sys.stderr.write("fake master: dying on purpose after a registration\n")
            sys.stderr.flush()
            os._exit(4)


def _serve(host: str, port: int) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer((host, port), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _fake(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["master", "agent"])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--master")
    parser.add_argument("--resources")
    parser.add_argument("--fake-exit-before-ready", type=int, metavar="AGENT_INDEX")
    parser.add_argument("--fake-never-ready", action="store_true")
    parser.add_argument("--fake-ignore-sigterm", action="store_true")
    parser.add_argument("--fake-leave-child", action="store_true")
    parser.add_argument("--fake-wrong-pid", action="store_true")
    parser.add_argument("--fake-exit-on-register", action="store_true")
    args, _ = parser.parse_known_args(argv)
    index = Path(args.work_dir).name
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    if args.fake_ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.fake_exit_before_ready is not None and index == str(args.fake_exit_before_ready):
        sys.stderr.write("fake agent: failing on purpose before ready\n")
        return 3
    _Handler.exit_on_register = args.fake_exit_on_register
    server = _serve(args.host, args.port)
    address = f"{args.host}:{server.server_address[1]}"
    sys.stderr.write(f"fake {args.role}: listening on {address}\n")
    ready: dict[str, object] = {"address": address, "pid": os.getpid()}
    if args.role == "agent":
        agent_id = f"fake-{uuid.uuid4()}-S{index}"
        ready["id"] = agent_id
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(
            f"http://{args.master}/register",
            data=json.dumps({"id": agent_id}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with opener.open(request, timeout=10) as answer:
            answer.read()
        if args.fake_leave_child:
            # An "executor" in a session of its own that the agent never stops, with the
            # sandbox in its environment as an agent gives every executor; and a process of
            # the namespace that is no executor of this agent (another cluster's, found by a
            # reused namespace number), which teardown must leave alone.
            sandbox = Path(args.work_dir).resolve() / "slaves" / "S" / "runs" / "R"
            environment = {**os.environ, "MESOS_DIRECTORY": str(sandbox)}
            subprocess.Popen(["sleep", "300"], start_new_session=True, env=environment)
            subprocess.Popen(["sleep", "301"], start_new_session=True,
                             env={**environment, "MESOS_DIRECTORY": "/elsewhere/slaves/S"})
    if args.fake_wrong_pid:
        ready["pid"] = 1
    if not args.fake_never_ready:
        _write_ready(args.ready_file, ready)
    if args.fake_ignore_sigterm:
        threading.Event().wait(600)
        return 0
    signal.sigwait({signal.SIGTERM})
    sys.stderr.write(f"fake {args.role}: SIGTERM, stopping\n")
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(_fake(sys.argv[1:]))
