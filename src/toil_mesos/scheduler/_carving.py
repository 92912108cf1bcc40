"""Which of an offer's resources this framework may use, and each task's exact share of them.

Mesos checks that the resources a task names are *contained* in what was offered, comparing
every field that tells resources apart: the name, the reservation (its role, type and stack),
the ``allocation_info`` and any disk or provider details. A task asking for ``cpus:1`` when
the offer holds only ``cpus`` reserved for ``toil`` is refused (TASK_ERROR), so a task's
resources are cut from the offer's own objects: each keeps every field of the resource it
came from, only its ``scalar.value`` is the task's share. One resource may be split over
several offered ones (two reserved ``cpus`` and one unreserved make a 3-core task).

Reservations come in two formats (Mesos' ``reservation.md`` and ``reservation refinement``):
a framework with the ``RESERVATION_REFINEMENT`` capability gets the ``reservations`` stack
(``[{"type": "STATIC", "role": "toil"}]``, the last entry the most refined) and no ``role``
field; one without it gets the older ``"role": "toil"`` (plus ``reservation`` when dynamic).
Unreserved resources are ``"role": "*"`` in both, or have no role at all. Both are read here,
and since tasks repeat the offer's own fields, both are answered in the format they came in.

The rules, in order:

* A resource reserved for a role is usable when this framework's role is that role or one of
  its descendants (``eng`` reservations serve ``eng/toil``: hierarchical roles); reservations
  for any other role are never used, even if a master offered them.
* Every resource of one task must be allocated to a single role (Mesos'
  ``validateAllocatedToSingleRole``): only resources allocated to this framework's role (or
  carrying no ``allocation_info``, as from masters before multi-role) are used.
* Reserved resources are taken before unreserved ones (more refined first), so work goes
  where the operator set capacity aside for it and the shared pool stays for others.
* Only scalars are carved (``cpus``, ``mem``, ``disk``, ``gpus`` or any other scalar name).
  Shared resources, persistent volumes and ``MOUNT``/``BLOCK`` disks cannot be split, so
  they are left alone.

Quantities are kept in thousandths, Mesos' fixed-point precision for scalars, so shares
add up exactly to what was offered. Pure functions and one small class, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toil_mesos.mesos._roles import UNRESERVED, check_role, reservation_role, serves

__all__ = [
    "UNRESERVED",
    "NotEnoughResources",
    "OfferResources",
    "check_role",
    "reservation_role",
    "restricted",
    "thousandths",
    "usable_resources",
]


class NotEnoughResources(ValueError):
    """An offer holds less of a resource than a task was to take (the message says which)."""


def _allocation_role(resource: Mapping[str, Any], offer: Mapping[str, Any]) -> str | None:
    for holder in (resource, offer):
        info = holder.get("allocation_info")
        if isinstance(info, Mapping) and isinstance(info.get("role"), str):
            return str(info["role"])
    return None


def _splittable(resource: Mapping[str, Any]) -> bool:
    if resource.get("type", "SCALAR") != "SCALAR" or resource.get("shared") is not None:
        return False
    disk = resource.get("disk")
    if isinstance(disk, Mapping):
        if disk.get("persistence") is not None or disk.get("volume") is not None:
            return False
        source = disk.get("source")
        if isinstance(source, Mapping) and source.get("type") in ("MOUNT", "BLOCK", "RAW"):
            return False
    return True


def usable_resources(offer: Mapping[str, Any], role: str) -> list[Mapping[str, Any]]:
    """The scalar resources of *offer* a framework in *role* may give its tasks, in order."""
    usable = []
    offered_to = _allocation_role({}, offer)
    for resource in offer.get("resources") or ():
        if not isinstance(resource, Mapping):
            continue
        # The common case first (an unreserved plain scalar): an offer round looks at every
        # resource of up to thousands of offers.
        plain = (resource.get("type", "SCALAR") == "SCALAR" and "reservations" not in resource
                 and resource.get("role", UNRESERVED) == UNRESERVED
                 and "disk" not in resource and "shared" not in resource)
        if not plain and not (_splittable(resource)
                              and serves(reservation_role(resource), role)):
            continue
        info = resource.get("allocation_info")
        allocated = info.get("role") if isinstance(info, Mapping) else offered_to
        if allocated is None or allocated == role:
            usable.append(resource)
    return usable


def restricted(offer: Mapping[str, Any], role: str) -> dict[str, Any]:
    """A shallow copy of *offer* holding only the resources :func:`usable_resources` keeps.

    Placement sizes offers from this copy, so a job is never placed on capacity reserved for
    another role; the task's resources are then carved from the same copy.
    """
    copy = dict(offer)
    copy["resources"] = usable_resources(offer, role)
    return copy


def _thousandths(value: float) -> int:
    # Mesos rounds scalars to three decimals; rounding first absorbs 0.1 + 0.2 style noise.
    return math.floor(round(value * 1000, 6))


def thousandths(amounts: Mapping[str, float]) -> tuple[tuple[str, int], ...]:
    """*amounts* in thousandths, rounded up as placement compares them; zeros left out.

    >>> thousandths({"cpus": 0.0001, "mem": 32, "disk": 0})
    (('cpus', 1), ('mem', 32000))
    """
    return tuple((name, math.ceil(round(value * 1000, 6)))
                 for name, value in amounts.items() if value > 0)


@dataclass(slots=True)
class _Pool:
    """One offered scalar resource and how much of it is left, in thousandths."""

    template: Mapping[str, Any]
    left: int
    rank: tuple[int, int]  # (minus the reservation depth, position in the offer)


class OfferResources:
    """What is left of one offer's usable scalars, carved into exact task resources.

    Built once per offer and launch; :meth:`take` returns the ``Resource`` objects of one task
    and removes them from what is left. Tasks that take the same slices of the same offered
    resources get the same list object (thousands of equal tasks share one), so callers must
    not change what they get.
    """

    def __init__(self, offer: Mapping[str, Any], role: str = UNRESERVED) -> None:
        self._pools: dict[str, list[_Pool]] = {}
        for position, resource in enumerate(usable_resources(offer, role)):
            value = (resource.get("scalar") or {}).get("value", 0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            left = _thousandths(float(value))
            if left <= 0:
                continue
            reservations = resource.get("reservations")
            depth = (len(reservations) if isinstance(reservations, Sequence) and reservations
                     else int(reservation_role(resource) != UNRESERVED))
            # Reserved first, more refined before less, then the offer's own order.
            self._pools.setdefault(str(resource["name"]), []).append(
                _Pool(template=resource, left=left, rank=(-depth, position)))
        for pools in self._pools.values():
            pools.sort(key=lambda pool: pool.rank)
        #: What is left per name, every pool together (kept as pools shrink).
        self._left = {name: sum(p.left for p in pools) for name, pools in self._pools.items()}
        self._shared: dict[tuple[tuple[int, int], ...], list[dict[str, Any]]] = {}

    def left(self, name: str) -> float:
        """How much of *name* is left (every usable pool together)."""
        return self._left.get(name, 0) / 1000

    def totals(self) -> dict[str, float]:
        """What is left of every scalar, by name."""
        return {name: self.left(name) for name in self._pools}

    def take(self, amounts: Mapping[str, float]) -> list[dict[str, Any]]:
        """The ``Resource`` objects for one task taking *amounts* (name -> quantity).

        Zero amounts are left out: a task names only what it takes.

        :raises NotEnoughResources: when the offer holds less of some resource than asked
            for; nothing is taken then.
        """
        return self.take_thousandths(thousandths(amounts))

    def take_thousandths(self, wanted: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
        """:meth:`take` with amounts already in thousandths (:func:`thousandths`), for callers
        that launch many tasks of the same size and convert each size once."""
        left = self._left
        for name, want in wanted:
            have = left.get(name, 0)
            if have < want:
                raise NotEnoughResources(
                    f"the offer has {have / 1000:g} {name} usable by this framework's role, "
                    f"a task needs {want / 1000:g}")
        slices: list[tuple[_Pool, int]] = []
        for name, want in wanted:
            left[name] -= want
            for pool in self._pools[name]:
                part = pool.left if pool.left < want else want
                if part:
                    pool.left -= part
                    want -= part
                    slices.append((pool, part))
                    if not want:
                        break
        key = tuple([(pool.rank[1], part) for pool, part in slices])
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = [_slice(pool.template, part) for pool, part in slices]
        return shared


def _slice(template: Mapping[str, Any], thousandths: int) -> dict[str, Any]:
    resource = dict(template)
    resource["scalar"] = {"value": thousandths / 1000}
    return resource
