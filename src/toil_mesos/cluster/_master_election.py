"""The mini-master's part in a leader election through ZooKeeper, as Mesos masters do it.

Each master publishes an ephemeral sequential member ``json.info_<10 digits>`` under the
election znode, whose data is its compact JSON ``MasterInfo`` (sorted keys, no newline, as
recorded from Mesos 1.12); the member with the lowest sequence leads
(:func:`~toil_mesos.mesos._master_detection.leading_member`). A master that is not the leader
answers with ``307`` and a scheme-relative ``Location`` of the leader, built from the leader's
own MasterInfo (:func:`redirect_location`). A master whose member disappears while it led (its
ZooKeeper session expired) must stop, as a Mesos master aborts: another may lead by now.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from toil_mesos.mesos._master_detection import leading_member, master_url_of
from toil_mesos.mesos._master_spec import ZooKeeperMasters

__all__ = ["MasterElection", "current_leader", "master_info_data", "redirect_location"]

logger = logging.getLogger("toil_mesos.cluster.master")

#: The ZooKeeper session timeout of a mini-master: how long after a master dies its member
#: stays, and so how long the survivors still redirect to it (Mesos' default is 10 s).
DEFAULT_SESSION_TIMEOUT = 10.0


def master_info_data(*, master_id: str, ip: str, port: int, hostname: str) -> bytes:
    """A master's election data: compact JSON MasterInfo with sorted keys, as Mesos writes."""
    parts = [int(p) for p in ip.split(".")] if ip.count(".") == 3 else [0, 0, 0, 0]
    packed = parts[0] | parts[1] << 8 | parts[2] << 16 | parts[3] << 24  # network order, LE int
    info = {
        "address": {"hostname": hostname, "ip": ip, "port": port},
        "hostname": hostname,
        "id": master_id,
        "ip": packed,
        "pid": f"master@{ip}:{port}",
        "port": port,
        "version": "1.12.0",
    }
    return json.dumps(info, sort_keys=True, separators=(",", ":")).encode()


def redirect_location(request_path: str, leader_data: bytes) -> str:
    """The ``Location`` a non-leader sends for *request_path*, from the leader's MasterInfo.

    Scheme-relative, with the leader's hostname and ``/master`` before the path; the redirect
    endpoints point at the bare master (ha/ transcript, calls 02-07).

    >>> data = master_info_data(master_id="m", ip="127.0.0.1", port=5050, hostname="localhost")
    >>> redirect_location("/api/v1/scheduler", data)
    '//localhost:5050/master/api/v1/scheduler'
    >>> redirect_location("/redirect", data), redirect_location("/master/state", data)
    ('//localhost:5050', '//localhost:5050/master/state')
    """
    info = json.loads(leader_data)
    address = info.get("address") or {}
    host = address.get("hostname") or info.get("hostname") or address.get("ip")
    port = address.get("port") or info.get("port")
    base = f"//{host}:{port}"
    path = request_path.split("?", 1)[0]
    if path in ("/redirect", "/master/redirect"):
        return base
    if not path.startswith("/master/"):
        path = "/master" + path
    return base + path


class MasterElection:
    """This master's membership in the election, and who leads.

    :param on_change: called (from kazoo's thread) whenever the leader may have changed.
    :param on_deposed: called once if this master led and its member went away.
    """

    def __init__(
        self,
        spec: ZooKeeperMasters,
        data: bytes,
        *,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        on_deposed: Callable[[], None] | None = None,
    ) -> None:
        self._spec = spec
        self._data = data
        self._session_timeout = session_timeout
        self._on_deposed = on_deposed
        self._lock = threading.Lock()
        self._client: Any = None
        self._member: str | None = None
        self._leader_member: str | None = None
        self._leader_data: bytes | None = None
        self._led = False

    def __repr__(self) -> str:
        return f"<MasterElection {self._spec} member={self._member} leads={self.is_leader}>"

    def start(self, timeout: float = 15.0) -> None:
        """Join the election: publish this master's member and watch the others."""
        from kazoo.client import KazooClient
        from kazoo.recipe.watchers import ChildrenWatch

        auth = self._spec.auth
        self._client = KazooClient(
            hosts=self._spec.hosts,
            timeout=self._session_timeout,
            auth_data=None if auth is None else [("digest", auth)],
        )
        self._client.start(timeout=timeout)
        self._client.ensure_path(self._spec.path)
        created = self._client.create(
            f"{self._spec.path}/json.info_", self._data, ephemeral=True, sequence=True
        )
        self._member = str(created).rsplit("/", 1)[1]
        logger.info("Joined the election in ZooKeeper %s as %s", self._spec, self._member)
        ChildrenWatch(self._client, self._spec.path, self._children_changed)

    def _children_changed(self, children: list[str]) -> bool:
        leader = leading_member(children)
        data: bytes | None = None
        if leader is not None:
            try:
                data, _ = self._client.get(f"{self._spec.path}/{leader}")
            except Exception:  # noqa: BLE001 - gone meanwhile; the next change tells
                return True
        deposed = False
        with self._lock:
            self._leader_member, self._leader_data = leader, data
            leads = leader is not None and leader == self._member
            if leads and not self._led:
                self._led = True
                logger.info("Elected as the leading master!")
            elif self._led and not leads:
                deposed = True
            elif leader is not None and not leads:
                logger.info("The leading master is %s", leader)
        if deposed and self._on_deposed is not None:
            logger.error("This master lost its leadership (its election member is gone)")
            self._on_deposed()
            return False
        return True

    @property
    def is_leader(self) -> bool:
        """Whether this master leads now."""
        with self._lock:
            return self._member is not None and self._leader_member == self._member

    @property
    def leader_data(self) -> bytes | None:
        """The leading master's MasterInfo (None while no master leads)."""
        with self._lock:
            return self._leader_data

    def stop(self) -> None:
        """Leave the election (the member goes at once) and close the session."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.stop()
            finally:
                client.close()


def current_leader(spec: ZooKeeperMasters, *, timeout: float = 5.0) -> str | None:
    """``IP:PORT`` of the master leading *spec*'s election now; None while none leads.

    One look, not a watch: what ``cluster status`` shows and what fault tests aim at. It asks
    ZooKeeper, as frameworks and agents do, rather than the masters themselves, so it names
    the master they follow.

    :raises ConnectionError: when no ZooKeeper server answers within *timeout*.
    """
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError

    auth = spec.auth
    client = KazooClient(
        hosts=spec.hosts, read_only=True, auth_data=None if auth is None else [("digest", auth)]
    )
    try:
        try:
            client.start(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - kazoo raises its own timeout type
            raise ConnectionError(
                f"ZooKeeper at {spec.hosts} did not answer within {timeout:g}s ({exc!r})"
            ) from None
        for _ in range(3):  # the leader may leave between the listing and the read
            try:
                leader = leading_member(client.get_children(spec.path))
                if leader is None:
                    return None
                data, _ = client.get(f"{spec.path}/{leader}")
            except NoNodeError:
                continue
            return master_url_of(data).removeprefix("http://")
        return None
    finally:
        client.stop()
        client.close()
