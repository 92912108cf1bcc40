"""Mount and network namespaces for the mini-cluster's agents.

Why: on a real cluster an agent shares nothing with the leader but the network. A framework
that works here only because its agents can read the leader's files (its checkout, ``/tmp``) or
reach the leader on ``127.0.0.1`` would fail on real Mesos. So each agent, and everything it
starts, runs in a private mount namespace where the leader's paths (``--hide``) are covered by an
empty read-only tmpfs and ``/tmp`` is a fresh tmpfs; with ``--netns`` also in a network namespace
of its own, on a bridge inside namespaces the cluster made, so the only way back to the host is
the host's address on that bridge.

Everything here uses the ordinary tools (``unshare``, ``nsenter``, ``ip``) rather than raw
syscalls, so what the cluster did can be read and repeated by hand. Nothing here pretends: when
isolation is asked for and the machine cannot do it, the caller gets an :class:`IsolationError`
that says why.

Topology with ``--netns`` (``ID`` is the cluster's id, ``X`` a per-cluster subnet number)::

    host namespace                 toil-mesos-ID-hub           toil-mesos-ID-a<i>
    tmh-ID 10.213.X.1/24 <-veth-> uplink --+
                                           br0
                                  a<i> ----+  <-veth-> eth0 10.213.X.(10+i)/24, lo up

The host side needs no forwarding and no iptables rule: the host's end of the link carries an
address of the subnet, so the kernel delivers agents' packets to it locally and routes replies
back over the same link. The agent namespaces have no default route, so anything but the
subnet (the host's loopback included) is unreachable from them.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import ipaddress
import logging
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from toil_mesos.errors import MesosError

__all__ = [
    "HOST_LINK_PREFIX",
    "NETNS_PREFIX",
    "SUBNET_BASE",
    "IsolationError",
    "MountIsolation",
    "Network",
    "create_network",
    "link_exists",
    "minimal_roots",
    "mount_isolation_unavailable",
    "mount_namespace_of",
    "net_namespace_of",
    "netns_exists",
    "netns_unavailable",
    "pids_in_mount_namespace",
    "resolve_hide_paths",
]

logger = logging.getLogger(__name__)

#: Every network namespace the cluster makes is named ``toil-mesos-<cluster id>-...``, so
#: parallel clusters never collide and leftovers are easy to recognise.
NETNS_PREFIX: Final = "toil-mesos-"
#: Host-side link names are ``tmh-<cluster id>``: interface names are limited to 15 bytes.
HOST_LINK_PREFIX: Final = "tmh-"
#: Agents' subnets are ``10.213.X.0/24``: a private range, one ``X`` per cluster, chosen from
#: the cluster id and moved on while the host already has an address or route overlapping it.
SUBNET_BASE: Final = ipaddress.IPv4Network("10.213.0.0/16")
#: Agent ``i`` gets host number ``AGENT_HOST_OFFSET + i`` of its cluster's /24.
AGENT_HOST_OFFSET: Final = 10
MAX_NETNS_AGENTS: Final = 254 - AGENT_HOST_OFFSET

#: Short tool runs (``ip``, ``unshare`` probes) never take long; a hang means something is
#: badly wrong, so they get a bounded wait instead of blocking ``cluster up`` forever.
_TOOL_TIMEOUT: Final = 20.0
#: Serialises subnet choice between clusters started at the same time on this machine.
_NETNS_LOCK: Final = Path("/run/lock/toil-mesos-netns.lock")
_RUN_NETNS: Final = Path("/run/netns")


class IsolationError(MesosError):
    """Isolation was asked for and cannot be had, or setting it up or tearing it down failed."""


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise IsolationError(f"{name!r} is not installed (it is needed to isolate agents)")
    return path


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short tool; with ``check``, a failure becomes an IsolationError quoting stderr."""
    logger.debug("run %s", shlex.join(argv))
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=_TOOL_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IsolationError(f"{shlex.join(argv)} failed: {exc}") from exc
    if check and done.returncode != 0:
        raise IsolationError(
            f"{shlex.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()}"
        )
    return done


# --- mount namespaces -------------------------------------------------------------------------


@functools.cache
def mount_isolation_unavailable() -> str | None:
    """Why agents cannot get a private mount namespace here, or None when they can.

    The probe does what agents will do (a new mount namespace with private propagation and a
    tmpfs on ``/tmp``), so "available" means it really worked once, not that it might.
    """
    if os.geteuid() != 0:
        return f"mount namespaces need root (running as uid {os.geteuid()})"
    try:
        unshare = _tool("unshare")
        _tool("mount")
    except IsolationError as exc:
        return str(exc)
    probe = [
        unshare,
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        "mount -t tmpfs toil-mesos-probe /tmp",
    ]
    try:
        _run(probe)
    except IsolationError as exc:
        return f"unshare cannot make a private mount namespace: {exc}"
    return None


def resolve_hide_paths(paths: Sequence[Path | str]) -> tuple[Path, ...]:
    """Check and normalise ``--hide`` paths: each must exist; nested ones collapse into parents.

    Raises IsolationError naming the path when it does not exist or is ``/``.
    """
    resolved: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise IsolationError(f"--hide {str(raw)!r}: no such file or directory")
        path = path.resolve()
        if path == Path("/"):
            raise IsolationError("--hide '/': hiding the root directory leaves agents nothing")
        resolved.append(path)
    # A parent covered first makes its children vanish, so mounting them would fail.
    return minimal_roots(resolved)


@dataclass(frozen=True, kw_only=True)
class MountIsolation:
    """What an agent's private mount namespace hides: ``hide`` paths, and ``/tmp`` if private.

    ``keep`` lists paths under ``/tmp`` the agents need in order to run at all (a checkout or
    virtualenv living in ``/tmp``, as in a CI clone): they are bound back, read-only, into the
    agents' fresh ``/tmp``, which is assembled on ``staging`` (an empty directory outside
    ``/tmp``) and then moved onto ``/tmp``.
    """

    hide: tuple[Path, ...] = ()
    private_tmp: bool = True
    keep: tuple[Path, ...] = ()
    staging: Path | None = None

    def private_roots(self) -> tuple[Path, ...]:
        """Paths whose contents agents do not share with the host."""
        return ((Path("/tmp"),) if self.private_tmp else ()) + self.hide

    def script(self) -> str:
        """The shell script that sets up the namespace, then execs the agent (``"$@"``).

        Hidden directories get an empty read-only tmpfs. Hidden files get a read-only bind of an
        empty regular file made on a scratch tmpfs that is then detached (``/dev/null`` would
        not do: a device node stays writable on a read-only mount). ``/run/netns`` is detached
        in the agent's namespace: its copies of the host's netns bind mounts would otherwise
        keep every cluster's namespaces alive after ``ip netns del`` until this agent exits.
        ``cd /`` because a working directory inside a hidden path would still reach the files.
        """
        lines = ["set -e"]
        hide = [p for p in self.hide if not (self.private_tmp and p.is_relative_to("/tmp"))]
        files = [p for p in hide if not p.is_dir()]
        if files:
            lines.append("mount -t tmpfs -o size=4k,mode=0755 toil-mesos-scratch /tmp")
            lines.append(": > /tmp/empty && chmod 0444 /tmp/empty")
            for path in files:
                quoted = shlex.quote(str(path))
                lines.append(f"mount --bind /tmp/empty {quoted}")
                lines.append(f"mount -o remount,bind,ro {quoted}")
            lines.append("umount -l /tmp")
        for path in hide:
            if path.is_dir():
                lines.append(
                    "mount -t tmpfs -o ro,nosuid,nodev,noexec,size=4k,mode=0755 "
                    f"toil-mesos-hidden {shlex.quote(str(path))}"
                )
        if self.private_tmp and self.keep:
            if self.staging is None:
                raise IsolationError("paths to keep under /tmp need a staging directory")
            stage = self.staging
            lines.append(f"mount -t tmpfs -o nosuid,nodev,mode=1777 toil-mesos-tmp {_q(stage)}")
            for path in self.keep:
                inside = stage / path.relative_to("/tmp")
                make = "mkdir -p" if path.is_dir() else f"mkdir -p {_q(inside.parent)} && touch"
                lines.append(f"{make} {_q(inside)}")
                lines.append(f"mount --bind {_q(path)} {_q(inside)}")
                lines.append(f"mount -o remount,bind,ro {_q(inside)}")
            lines.append(f"mount --move {_q(stage)} /tmp")
        elif self.private_tmp:
            lines.append("mount -t tmpfs -o nosuid,nodev,mode=1777 toil-mesos-tmp /tmp")
        lines.append("if mountpoint -q /run/netns; then umount -l /run/netns; fi")
        lines.append("cd /")
        lines.append('exec "$@"')
        return "\n".join(lines)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run in a new private mount namespace; the pid stays that of the agent.

        ``unshare`` without ``--fork`` and ``exec`` in the script mean the process we spawn
        becomes the agent itself, so the pid recorded in ``cluster.json`` is the agent's.
        """
        return [
            _tool("unshare"),
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            self.script(),
            "toil-mesos-isolate",
            *argv,
        ]


def _q(path: Path) -> str:
    return shlex.quote(str(path))


def minimal_roots(paths: Sequence[Path]) -> tuple[Path, ...]:
    """``paths`` without those inside another of them (sorted, parents first)."""
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: (len(p.parts), str(p))):
        if not any(path.is_relative_to(parent) for parent in kept):
            kept.append(path)
    return tuple(kept)


def _namespace_inode(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def mount_namespace_of(pid: int) -> int | None:
    """Inode of the mount namespace of ``pid`` (None when it is gone or unreadable)."""
    return _namespace_inode(pid, "mnt")


def net_namespace_of(pid: int) -> int | None:
    """Inode of the network namespace of ``pid`` (None when it is gone or unreadable)."""
    return _namespace_inode(pid, "net")


def pids_in_mount_namespace(inode: int) -> list[int]:
    """Processes whose mount namespace is ``inode``; never our own namespace's processes.

    Used after an agent has stopped to find what it left running (executors it failed to
    stop): everything in that namespace was started by the agent. Our own namespace is refused
    outright, so a wrong record can never make teardown touch the host's processes.
    """
    own = {mount_namespace_of(os.getpid()), mount_namespace_of(1)}
    if inode in own:
        raise IsolationError(f"mount namespace {inode} is the host's, not an agent's")
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and mount_namespace_of(int(entry.name)) == inode:
            found.append(int(entry.name))
    return found


# --- network namespaces -----------------------------------------------------------------------


@functools.cache
def netns_unavailable() -> str | None:
    """Why the cluster cannot make network namespaces here, or None when it can."""
    if os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.geteuid()})"
    try:
        _tool("ip")
        _tool("nsenter")
    except IsolationError as exc:
        return str(exc)
    return mount_isolation_unavailable()


def netns_exists(name: str) -> bool:
    """Whether ``ip netns`` knows a namespace called ``name``."""
    return (_RUN_NETNS / name).exists()


def link_exists(name: str, *, netns: str | None = None) -> bool:
    """Whether a network link called ``name`` exists (on the host, or in ``netns``)."""
    argv = [_tool("ip")] + (["-n", netns] if netns else []) + ["link", "show", "dev", name]
    return _run(argv, check=False).returncode == 0


def _host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address in or a route to."""
    ip = _tool("ip")
    text = _run([ip, "-4", "-o", "addr", "show"]).stdout + _run([ip, "-4", "route", "show"]).stdout
    networks = []
    for match in re.finditer(r"(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", text):
        with contextlib.suppress(ValueError):
            networks.append(ipaddress.IPv4Network(match.group(1), strict=False))
    return networks


def _pick_subnet(cluster_id: str) -> ipaddress.IPv4Network:
    taken = [n for n in _host_networks() if n.prefixlen > 0]  # a default route overlaps all
    subnets = list(SUBNET_BASE.subnets(new_prefix=24))
    start = int(hashlib.sha256(cluster_id.encode()).hexdigest(), 16) % len(subnets)
    for step in range(len(subnets)):
        candidate = subnets[(start + step) % len(subnets)]
        if not any(candidate.overlaps(n) for n in taken):
            return candidate
    raise IsolationError(f"every /24 of {SUBNET_BASE} is in use on this host")


@contextlib.contextmanager
def _netns_lock(timeout: float = _TOOL_TIMEOUT * 3) -> Iterator[None]:
    """Hold the machine-wide lock under which clusters pick subnets and add links.

    Without it two clusters started together could both see a subnet free and both take it.
    The holder keeps it well under a second. ``flock`` has no timeout, so the wait retries a
    non-blocking attempt with a short pause, up to ``timeout``: no other primitive waits on a
    lock another process holds with a bound.
    """
    _NETNS_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_NETNS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise IsolationError(
                        f"another cluster held {_NETNS_LOCK} for over {timeout:g} s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True, kw_only=True)
class Network:
    """The namespaces, links and addresses of one cluster's agent network (see module doc)."""

    cluster_id: str
    hub: str
    host_link: str
    subnet: str
    host_address: str
    namespaces: tuple[str, ...]
    addresses: tuple[str, ...]

    @classmethod
    def plan(cls, cluster_id: str, agents: int, subnet: ipaddress.IPv4Network) -> Network:
        """Names and addresses for ``agents`` agents; nothing is created."""
        if not 1 <= agents <= MAX_NETNS_AGENTS:
            raise IsolationError(f"--netns supports 1 to {MAX_NETNS_AGENTS} agents, not {agents}")
        hosts = list(subnet.hosts())
        return cls(
            cluster_id=cluster_id,
            hub=f"{NETNS_PREFIX}{cluster_id}-hub",
            host_link=f"{HOST_LINK_PREFIX}{cluster_id}",
            subnet=str(subnet),
            host_address=str(hosts[0]),
            namespaces=tuple(f"{NETNS_PREFIX}{cluster_id}-a{i}" for i in range(agents)),
            addresses=tuple(str(hosts[AGENT_HOST_OFFSET + i - 1]) for i in range(agents)),
        )

    def to_json(self) -> dict[str, object]:
        """The record ``cluster.json`` keeps so that ``cluster down`` can undo all of it."""
        return {
            "cluster_id": self.cluster_id,
            "hub": self.hub,
            "host_link": self.host_link,
            "subnet": self.subnet,
            "host_address": self.host_address,
            "namespaces": list(self.namespaces),
            "addresses": list(self.addresses),
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Network:
        """Read back :meth:`to_json`; raises IsolationError on a malformed record."""
        namespaces = data.get("namespaces")
        addresses = data.get("addresses")
        if not isinstance(namespaces, list) or not isinstance(addresses, list):
            raise IsolationError(f"malformed network record: {data!r}")
        try:
            network = cls(
                cluster_id=str(data["cluster_id"]),
                hub=str(data["hub"]),
                host_link=str(data["host_link"]),
                subnet=str(data["subnet"]),
                host_address=str(data["host_address"]),
                namespaces=tuple(str(n) for n in namespaces),
                addresses=tuple(str(a) for a in addresses),
            )
        except KeyError as exc:
            raise IsolationError(f"malformed network record: {data!r}") from exc
        for name in (network.hub, *network.namespaces):
            # Never let a damaged cluster.json make us delete a namespace we did not make.
            if not name.startswith(f"{NETNS_PREFIX}{network.cluster_id}-"):
                raise IsolationError(f"network record names a foreign namespace {name!r}")
        if network.host_link != f"{HOST_LINK_PREFIX}{network.cluster_id}":
            raise IsolationError(f"network record names a foreign link {network.host_link!r}")
        return network

    def wrap(self, index: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run in agent ``index``'s network namespace (``nsenter`` execs: same pid)."""
        return [_tool("nsenter"), f"--net={_RUN_NETNS / self.namespaces[index]}", "--", *argv]

    def namespace_inode(self, index: int) -> int | None:
        """Inode of agent ``index``'s network namespace (to check an agent really is in it)."""
        try:
            return (_RUN_NETNS / self.namespaces[index]).stat().st_ino
        except OSError:
            return None

    def create(self) -> None:
        """Make the namespaces, bridge and links; on failure undo what was made, then raise."""
        ip = _tool("ip")
        prefix = ipaddress.IPv4Network(self.subnet).prefixlen
        # Checked before anything is made: the rollback below must only remove what we made.
        for name in (self.hub, *self.namespaces):
            if netns_exists(name):
                raise IsolationError(f"network namespace {name!r} already exists")
        if link_exists(self.host_link):
            raise IsolationError(f"network link {self.host_link!r} already exists")
        try:
            for name in (self.hub, *self.namespaces):
                _run([ip, "netns", "add", name])
                _run([ip, "-n", name, "link", "set", "lo", "up"])
            hub = [ip, "-n", self.hub]
            _run([*hub, "link", "add", "br0", "type", "bridge"])
            _run([*hub, "link", "set", "br0", "up"])
            _run(
                [
                    ip,
                    "link",
                    "add",
                    self.host_link,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "uplink",
                    "netns",
                    self.hub,
                ]
            )
            _run([*hub, "link", "set", "uplink", "master", "br0", "up"])
            _run([ip, "addr", "add", f"{self.host_address}/{prefix}", "dev", self.host_link])
            _run([ip, "link", "set", self.host_link, "up"])
            for i, (name, address) in enumerate(zip(self.namespaces, self.addresses, strict=True)):
                _run(
                    [
                        *hub,
                        "link",
                        "add",
                        f"a{i}",
                        "type",
                        "veth",
                        "peer",
                        "name",
                        "eth0",
                        "netns",
                        name,
                    ]
                )
                _run([*hub, "link", "set", f"a{i}", "master", "br0", "up"])
                _run([ip, "-n", name, "addr", "add", f"{address}/{prefix}", "dev", "eth0"])
                _run([ip, "-n", name, "link", "set", "eth0", "up"])
        except BaseException:
            self.destroy()
            raise
        logger.info(
            "network %s: host %s on %s, agents %s",
            self.subnet,
            self.host_address,
            self.host_link,
            ", ".join(self.addresses),
        )

    def leftover_pids(self) -> list[int]:
        """Processes still inside this cluster's namespaces (all were started by its agents)."""
        pids: list[int] = []
        for name in (self.hub, *self.namespaces):
            if netns_exists(name):
                out = _run([_tool("ip"), "netns", "pids", name], check=False).stdout
                pids.extend(int(p) for p in out.split() if p.isdigit())
        return pids

    def destroy(self) -> list[str]:
        """Remove the host link and every namespace; idempotent; returns what it removed.

        The host link goes first and explicitly: deleting a namespace frees its veth ends
        asynchronously, and a host link lingering after ``cluster down`` would look like a leak.
        """
        removed: list[str] = []
        errors: list[str] = []
        ip = _tool("ip")
        if link_exists(self.host_link):
            done = _run([ip, "link", "del", "dev", self.host_link], check=False)
            if done.returncode == 0:
                removed.append(f"link {self.host_link}")
            else:
                errors.append(done.stderr.strip())
        for name in (*self.namespaces, self.hub):
            if netns_exists(name):
                done = _run([ip, "netns", "del", name], check=False)
                if done.returncode == 0:
                    removed.append(f"netns {name}")
                else:
                    errors.append(done.stderr.strip())
        if errors:
            raise IsolationError(f"could not remove the network of {self.cluster_id}: {errors}")
        if removed:
            logger.info("removed %s", ", ".join(removed))
        return removed


def create_network(cluster_id: str, agents: int) -> Network:
    """Pick a free subnet and create the network for ``agents`` agents (see module doc)."""
    reason = netns_unavailable()
    if reason is not None:
        raise IsolationError(f"--netns is impossible here: {reason}")
    with _netns_lock():
        network = Network.plan(cluster_id, agents, _pick_subnet(cluster_id))
        network.create()
    return network
