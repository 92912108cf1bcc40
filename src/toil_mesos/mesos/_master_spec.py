"""Where the Mesos masters are, as Mesos users write it: parsing ``--mesosEndpoint``.

Four forms are accepted, the ones ``mesos-agent --master`` and the Mesos frameworks take:

* ``HOST:PORT`` (Toil's historical form) or ``HOST`` (port 5050);
* ``http://HOST:PORT`` or ``https://HOST:PORT`` (a path, if any, is ignored);
* a comma-separated list of either, for several masters of which one leads;
* ``zk://[USER:PASS@]HOST1:2181,HOST2:2181/PATH``, the ZooKeeper ensemble and the znode under
  which the masters elect their leader.

Parsing is pure: no DNS, no socket. The result is a typed value the driver turns into a master
detector (:mod:`toil_mesos.mesos._master_detection`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from toil_mesos.errors import MesosError

__all__ = [
    "DEFAULT_MASTER_PORT",
    "DEFAULT_ZOOKEEPER_PORT",
    "BadMasterSpec",
    "MasterList",
    "MasterSpec",
    "ZooKeeperMasters",
    "parse_master_spec",
]

DEFAULT_MASTER_PORT = 5050
DEFAULT_ZOOKEEPER_PORT = 2181
_OPTION = "--mesosEndpoint"


class BadMasterSpec(MesosError, ValueError):
    """The master address cannot be understood; the message names the option and the text."""


@dataclass(frozen=True, slots=True)
class MasterList:
    """One master or several, each ``scheme://host:port``, tried in the order given."""

    urls: tuple[str, ...]

    def __str__(self) -> str:
        return ",".join(self.urls)


@dataclass(frozen=True, slots=True)
class ZooKeeperMasters:
    """Masters that elect their leader in ZooKeeper.

    ``hosts`` is kazoo's ``host:port,host:port`` string; ``path`` the election znode (``/mesos``);
    ``auth`` the digest credentials ``user:pass`` when the URL carries them. ``scheme`` is how the
    masters themselves are reached (their MasterInfo says only host and port).
    """

    hosts: str
    path: str
    auth: str | None = None
    scheme: str = "http"

    def __repr__(self) -> str:
        # The digest credentials are a secret: never in a repr or a log line.
        auth = "" if self.auth is None else "***@"
        return f"ZooKeeperMasters(zk://{auth}{self.hosts}{self.path})"

    __str__ = __repr__


MasterSpec = MasterList | ZooKeeperMasters


def _fail(text: str, why: str) -> BadMasterSpec:
    return BadMasterSpec(
        f"{_OPTION} {text!r}: {why}; expected HOST:PORT, http(s)://HOST:PORT, a comma-separated "
        "list of those, or zk://[USER:PASS@]HOST:PORT[,HOST:PORT...]/PATH"
    )


def _host_port(item: str, whole: str, default_port: int) -> tuple[str, int]:
    """Split ``host[:port]`` (IPv6 in brackets) and check both halves."""
    if not item:
        raise _fail(whole, "an empty address in the list")
    if item.startswith("["):
        host, sep, rest = item[1:].partition("]")
        if not sep or not host:
            raise _fail(whole, f"unclosed IPv6 address in {item!r}")
        if rest and not rest.startswith(":"):
            raise _fail(whole, f"unexpected text after the IPv6 address in {item!r}")
        port_text = rest[1:] if rest else ""
        host = f"[{host}]"
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        if ":" in host:
            raise _fail(whole, f"{item!r} has several ':'; write an IPv6 address in brackets")
    if not host or any(c in host for c in "/?#@ "):
        raise _fail(whole, f"no valid host in {item!r}")
    if port_text == "":
        if item.endswith(":"):
            raise _fail(whole, f"no port after ':' in {item!r}")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _fail(whole, f"port {port_text!r} in {item!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _master_url(item: str, whole: str) -> str:
    text = item.strip()
    scheme = "http"
    if "://" in text:
        scheme, _, rest = text.partition("://")
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise _fail(whole, f"scheme {scheme!r} is not http, https or zk")
        text = rest
    text = text.split("/", 1)[0]
    host, port = _host_port(text, whole, DEFAULT_MASTER_PORT)
    return f"{scheme}://{host}:{port}"


def _zookeeper(text: str, scheme: str) -> ZooKeeperMasters:
    rest = text[len("zk://"):]
    authority, slash, path = rest.partition("/")
    if not slash or not path.strip("/"):
        raise _fail(text, "a zk:// address needs the masters' znode path, such as /mesos")
    auth: str | None = None
    if "@" in authority:
        credentials, _, authority = authority.rpartition("@")
        user, colon, password = credentials.partition(":")
        if not user or not colon:
            raise _fail(text.replace(credentials, "***"), "ZooKeeper credentials must be USER:PASS")
        auth = f"{unquote(user)}:{unquote(password)}"
    hosts = []
    for item in authority.split(","):
        host, port = _host_port(item.strip(), _redact(text), DEFAULT_ZOOKEEPER_PORT)
        hosts.append(f"{host}:{port}")
    if not hosts:
        raise _fail(_redact(text), "no ZooKeeper host")
    clean_path = "/" + path.strip("/")
    if any(not part for part in clean_path.split("/")[1:]):
        raise _fail(_redact(text), f"empty component in the znode path {clean_path!r}")
    return ZooKeeperMasters(hosts=",".join(hosts), path=clean_path, auth=auth, scheme=scheme)


def _redact(text: str) -> str:
    """*text* with any ``user:pass@`` of a zk:// URL hidden, for error messages."""
    if not text.startswith("zk://") or "@" not in text:
        return text
    parts = urlsplit(text)
    return text.replace(parts.netloc.rpartition("@")[0], "***", 1)


def parse_master_spec(text: str, *, master_scheme: str = "http") -> MasterSpec:
    """Parse *text* (``--mesosEndpoint``) into a :data:`MasterSpec`.

    *master_scheme* is the scheme used for masters found through ZooKeeper.

    >>> parse_master_spec("m1:5050,https://m2")
    MasterList(urls=('http://m1:5050', 'https://m2:5050'))
    >>> parse_master_spec("zk://z1:2181,z2/mesos")
    ZooKeeperMasters(zk://z1:2181,z2:2181/mesos)

    :raises BadMasterSpec: naming ``--mesosEndpoint`` and what is wrong.
    """
    stripped = text.strip()
    if not stripped:
        raise _fail(text, "it is empty")
    if stripped.lower().startswith("zk://"):
        return _zookeeper("zk://" + stripped[5:], master_scheme)
    if "zk://" in stripped.lower():
        raise _fail(_redact(stripped), "a zk:// address cannot be mixed with other masters")
    if "@" in stripped:
        raise _fail(stripped, "credentials belong in --mesosPrincipal/--mesosSecretFile")
    urls: list[str] = []
    for item in stripped.split(","):
        url = _master_url(item, stripped)
        if url not in urls:
            urls.append(url)
    return MasterList(tuple(urls))
