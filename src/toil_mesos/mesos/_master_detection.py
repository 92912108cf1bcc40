"""Finding the leading Mesos master: from a list of masters, or through ZooKeeper.

Mesos masters elect their leader in ZooKeeper: each publishes an ephemeral sequential child
``json.info_<10 digits>`` of the election znode (``/mesos``), whose data is the compact JSON
``MasterInfo``; the member with the lowest sequence number leads. The choice of leader and the
reading of MasterInfo are pure functions here (:func:`leading_member`, :func:`master_url_of`);
:class:`ZooKeeperDetector` only adds kazoo's watches around them.

A detector answers one question for the scheduler driver, *which master to SUBSCRIBE to next*
(:meth:`MasterDetector.next_master`), and tells it when the leader changes (``on_change``), so
the driver moves to the new leader without waiting for a timeout.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from toil_mesos.errors import ConnectError, RemoteProtocolError
from toil_mesos.mesos._master_spec import MasterList, MasterSpec, ZooKeeperMasters

__all__ = [
    "MEMBER_PREFIX",
    "MasterDetector",
    "StaticMasters",
    "ZooKeeperDetector",
    "detector_for",
    "leading_member",
    "master_url_of",
]

logger = logging.getLogger(__name__)

#: The prefix of the masters' election members whose data is JSON (Mesos >= 0.24).
MEMBER_PREFIX = "json.info_"
#: How long to wait for the ZooKeeper ensemble when the driver starts.
DEFAULT_ZK_CONNECT_TIMEOUT = 15.0

ChangeCallback = Callable[[str | None], None]


class MasterDetector(Protocol):
    """What the scheduler driver asks about the masters."""

    def start(self, on_change: ChangeCallback) -> None:
        """Begin watching; *on_change* gets the new leader's URL (or None) from any thread."""

    def next_master(self) -> str | None:
        """The master to SUBSCRIBE to now, ``scheme://host:port``; None if none is known."""

    def round_done(self) -> bool:
        """Whether every master was tried since the last success (then back off)."""

    def succeeded(self) -> None:
        """The last master given out accepted the subscription."""

    def close(self) -> None:
        """Stop watching; release connections and threads."""


class StaticMasters:
    """A fixed list of masters, tried in turn; a non-leader's 307 leads to the leader."""

    def __init__(self, masters: MasterList) -> None:
        self._urls = masters.urls
        self._next = 0
        self._tried_since_success = 0

    def __repr__(self) -> str:
        return f"StaticMasters({','.join(self._urls)})"

    def start(self, on_change: ChangeCallback) -> None:
        """Nothing to watch: the list never changes."""

    def next_master(self) -> str:
        url = self._urls[self._next % len(self._urls)]
        self._next += 1
        self._tried_since_success += 1
        return url

    def round_done(self) -> bool:
        return self._tried_since_success % len(self._urls) == 0

    def succeeded(self) -> None:
        # The master that answered is tried first again next time.
        self._next = max(0, self._next - 1)
        self._tried_since_success = 0

    def close(self) -> None:
        """Nothing to release."""


# ---- pure ZooKeeper helpers -----------------------------------------------------------------


def leading_member(children: Iterable[str]) -> str | None:
    """The election member that leads: the ``json.info_`` child with the lowest sequence.

    Children of other kinds (``log_replicas``, the legacy ``info_`` members) are ignored, as is
    a name whose suffix is not a number.

    >>> leading_member(["json.info_0000000003", "log_replicas", "json.info_0000000001"])
    'json.info_0000000001'
    >>> leading_member(["info_0000000000"]) is None
    True
    """
    best: tuple[int, str] | None = None
    for name in children:
        if not name.startswith(MEMBER_PREFIX):
            continue
        suffix = name[len(MEMBER_PREFIX):]
        if not suffix.isdigit():
            continue
        key = (int(suffix), name)
        if best is None or key < best:
            best = key
    return None if best is None else best[1]


def master_url_of(data: bytes, *, scheme: str = "http") -> str:
    """The URL of a master from its election member's data (JSON ``MasterInfo``).

    Over http the address's IP is used (a hostname need not resolve where the leader runs);
    over https the hostname, which is what the master's certificate names.

    >>> master_url_of(b'{"address":{"hostname":"m1","ip":"10.0.0.1","port":5050},"port":5050}')
    'http://10.0.0.1:5050'

    :raises RemoteProtocolError: if *data* is not a MasterInfo with a host and a port.
    """
    try:
        info = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RemoteProtocolError(f"master election data is not JSON: {exc}") from None
    if not isinstance(info, dict):
        raise RemoteProtocolError("master election data is not a JSON object")
    address = info.get("address")
    address = address if isinstance(address, dict) else {}
    hosts: list[Any] = [address.get("ip"), address.get("hostname"), info.get("hostname")]
    if scheme == "https":
        hosts = [address.get("hostname"), info.get("hostname"), address.get("ip")]
    host = next((h for h in hosts if isinstance(h, str) and h), None)
    port = address.get("port", info.get("port"))
    if host is None or not isinstance(port, int) or not 0 < port < 65536:
        raise RemoteProtocolError(f"master election data has no host and port: {info!r:.200}")
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


# ---- kazoo ----------------------------------------------------------------------------------


class ZooKeeperDetector:
    """Watches the masters' election znode with kazoo and follows the leader.

    The children watch fires on every membership change; the leader's data is read then, and
    *on_change* is told when the leading URL differs from the last one. A lost ZooKeeper
    session is kazoo's to recover; meanwhile the last known leader is kept (the masters may
    well still be there).
    """

    def __init__(
        self,
        masters: ZooKeeperMasters,
        *,
        connect_timeout: float = DEFAULT_ZK_CONNECT_TIMEOUT,
        client_factory: Callable[..., Any] | None = None,
    ) -> None:
        self._masters = masters
        self._connect_timeout = connect_timeout
        self._client_factory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()
        self._leader: str | None = None
        self._on_change: ChangeCallback | None = None
        self._watch: Any = None
        self._closed = False
        self._warned_empty = False

    def __repr__(self) -> str:
        return f"ZooKeeperDetector({self._masters!r} leader={self._leader})"

    def start(self, on_change: ChangeCallback) -> None:
        """Connect to the ensemble and watch the election.

        :raises ConnectError: if no ZooKeeper server answers within the connect timeout.
        """
        factory = self._client_factory
        if factory is None:
            from kazoo.client import KazooClient

            factory = KazooClient
        auth = self._masters.auth
        self._client = factory(
            hosts=self._masters.hosts,
            read_only=True,
            auth_data=None if auth is None else [("digest", auth)],
        )
        self._on_change = on_change
        try:
            self._client.start(timeout=self._connect_timeout)
        except Exception as exc:  # noqa: BLE001 - kazoo raises its own timeout type
            self._client.close()
            raise ConnectError(
                f"cannot reach ZooKeeper at {self._masters.hosts} (from --mesosEndpoint) "
                f"within {self._connect_timeout:g}s: {type(exc).__name__}"
            ) from None
        self._ensure_watch()

    def _ensure_watch(self) -> None:
        """Watch the election znode's children, if it exists (a master creates it)."""
        if self._closed or (self._watch is not None and not self._watch._stopped):
            return
        from kazoo.recipe.watchers import ChildrenWatch

        if self._client.exists(self._masters.path) is None:
            if not self._warned_empty:
                self._warned_empty = True
                logger.warning("no Mesos master has registered in ZooKeeper %s yet", self._masters)
            return
        self._watch = ChildrenWatch(self._client, self._masters.path, self._children_changed)

    def _children_changed(self, children: list[str]) -> bool:
        """(kazoo's thread.) Re-read the leader; return False to stop watching once closed."""
        if self._closed:
            return False
        member = leading_member(children)
        url: str | None = None
        if member is not None:
            try:
                data, _stat = self._client.get(f"{self._masters.path}/{member}")
                url = master_url_of(data, scheme=self._masters.scheme)
            except RemoteProtocolError as exc:
                logger.error("cannot read the leading Mesos master %s: %s", member, exc)
            except Exception as exc:  # noqa: BLE001 - gone meanwhile; the next change tells
                logger.info("leading Mesos master %s vanished while read: %s", member, exc)
                return True
        with self._lock:
            changed = url != self._leader
            self._leader = url
            callback = self._on_change
        if changed:
            logger.info("ZooKeeper %s: the leading Mesos master is now %s", self._masters, url)
            if callback is not None:
                callback(url)
        return True

    def next_master(self) -> str | None:
        if self._leader is None:
            self._ensure_watch()  # the election znode may have appeared since
        with self._lock:
            return self._leader

    def round_done(self) -> bool:
        return True

    def succeeded(self) -> None:
        """Nothing to remember: ZooKeeper says who leads."""

    def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            try:
                client.stop()
            finally:
                client.close()


def detector_for(spec: MasterSpec) -> MasterDetector:
    """The detector for a parsed ``--mesosEndpoint``."""
    if isinstance(spec, ZooKeeperMasters):
        return ZooKeeperDetector(spec)
    return StaticMasters(spec)
