"""What an executor tells the scheduler about its node: versioned JSON in a framework message.

Toil's autoscaler asks the batch system how busy each node is (``getNodes``). Offers say what is
free, not what is in use, so each executor reports its node every so often: cores, memory,
load average, how many of this workflow's workers run there, the appliance image the node
runs when it knows one, and the bundles already staged there (placement prefers a node that
has the workflow's code: its first task skips the extraction), and whether the executor has
just re-subscribed with its restarted agent. The last three fields are optional: reports
without them still decode.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MAX_STAGED_BUNDLES", "NodeReport", "measure_node"]

_FORMAT = "toil-mesos-node"
_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: A cap on the hashes one report carries, so a huge cache cannot make a huge message.
MAX_STAGED_BUNDLES = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeReport:
    hostname: str
    cores: int
    memory: int
    load: float
    workers: int
    #: The node's ``TOIL_MESOS_APPLIANCE``; None when it has none.
    appliance: str | None = None
    #: sha256 of the bundles staged in the node's bundle cache, sorted; () when unknown.
    staged_bundles: tuple[str, ...] = ()
    #: Sent right after the executor re-subscribed with its restarted agent: the agent has
    #: registered with the master again, so the scheduler reconciles that agent's tasks.
    resubscribed: bool = False

    def encode(self) -> str:
        """Base64 JSON, as framework messages carry data."""
        document = {"format": _FORMAT, "version": _VERSION, "hostname": self.hostname,
                    "cores": self.cores, "memory": self.memory, "load": self.load,
                    "workers": self.workers, "appliance": self.appliance,
                    "staged_bundles": list(self.staged_bundles)}
        if self.resubscribed:
            document["resubscribed"] = True
        return base64.b64encode(json.dumps(document).encode()).decode("ascii")

    @classmethod
    def decode(cls, data: str) -> NodeReport | None:
        """The report in a framework message, or None when the message is something else."""
        try:
            document = json.loads(base64.b64decode(data, validate=True))
            if document.get("format") != _FORMAT or document.get("version") != _VERSION:
                return None
            appliance = document.get("appliance")
            return cls(hostname=str(document["hostname"]), cores=int(document["cores"]),
                       memory=int(document["memory"]), load=float(document["load"]),
                       workers=int(document["workers"]),
                       appliance=appliance if isinstance(appliance, str) and appliance else None,
                       staged_bundles=_hashes(document.get("staged_bundles")),
                       resubscribed=document.get("resubscribed") is True)
        except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
            return None


def _hashes(value: object) -> tuple[str, ...]:
    """The well-formed sha256 strings of a decoded list; anything else is dropped."""
    if not isinstance(value, list):
        return ()
    return _bounded(h for h in value if isinstance(h, str) and _SHA256.fullmatch(h))


def _bounded(hashes: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(hashes)))[:MAX_STAGED_BUNDLES]


def measure_node(hostname: str, workers: int, *, appliance: str | None = None,
                 staged_bundles: Iterable[str] = ()) -> NodeReport:
    """This machine's cores, memory (from ``/proc/meminfo``) and one-minute load average."""
    memory = 0
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return NodeReport(hostname=hostname, cores=os.cpu_count() or 1, memory=memory,
                      load=os.getloadavg()[0], workers=workers, appliance=appliance,
                      staged_bundles=_bounded(staged_bundles))
