"""The project's exception hierarchy.

Callers catch these types only: lower layers translate OS, HTTP and archive errors at the
boundary (``raise X(...) from exc``). Messages name the offending value with ``!r`` and say
what to do about it.
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ConnectError",
    "LocalProtocolError",
    "MesosError",
    "ProtocolError",
    "ReadTimeout",
    "RemoteProtocolError",
    "StreamClosed",
    "TransportError",
]


class MesosError(Exception):
    """Root of every error this project raises on purpose."""


class ProtocolError(MesosError):
    """A Mesos protocol rule was broken; see the two subclasses for who broke it."""


class LocalProtocolError(ProtocolError):
    """We misused the Mesos API (a call in the wrong state, a malformed call)."""


class RemoteProtocolError(ProtocolError):
    """The master or agent sent something that does not follow the protocol."""


class TransportError(MesosError):
    """The connection to a master or agent failed."""


class ConnectError(TransportError):
    """The peer could not be reached."""


class ReadTimeout(TransportError):
    """The peer stopped sending (for a subscription: heartbeats were missed)."""


class StreamClosed(TransportError):
    """The peer closed a stream that should have stayed open."""


class BundleError(MesosError, ValueError):
    """The user's code cannot be bundled or staged as asked.

    A ``ValueError`` because it is bad input: a layout, option or archive that the user or the
    leader has to fix. The message says which file or option is at fault and how to fix it.
    """
