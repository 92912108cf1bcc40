"""Resource arithmetic on Mesos v1 ``Resource`` JSON, as the master needs it for offers.

The master keeps, per agent, ``total - used - offered`` and checks that what a task asks for is
contained in what was offered. Mesos does this with its ``Resources`` class; this module does the
small part of it the mini-cluster needs: ``SCALAR`` resources (``cpus``, ``mem``, ``disk``,
anything else scalar) and ``RANGES`` resources (``ports``), unreserved (role ``*``) or
statically reserved for one role (an agent's ``--resources "cpus(toil):8"``). Quantities are
kept per name *and* reservation, so ``cpus`` reserved for ``toil`` never pays for a task asking
for unreserved ``cpus`` (Mesos refuses that task too). Reservations are read in both of Mesos'
formats (``reservations`` stack, or the older ``role`` field) and written in the one the
framework speaks (:meth:`ResourceBag.to_json`).

Scalars are kept at Mesos' fixed-point precision (three decimal places), so ``0.1 + 0.2`` is
``0.3`` here as it is in Mesos, and a task asking for exactly what was offered always fits.

:class:`ResourceBag` is immutable; ``+``, ``-`` and :meth:`ResourceBag.contains` return new bags.
``str(bag)`` is Mesos' own rendering (``cpus(allocated: *):1.8; mem(allocated: *):32``), which
the master quotes in TASK_ERROR messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toil_mesos.mesos._roles import check_role, serves

__all__ = [
    "DEFAULT_ROLE",
    "Ranges",
    "ResourceBag",
    "ResourceError",
    "with_allocation_info",
]

#: The role of unreserved resources and of frameworks that name none.
DEFAULT_ROLE = "*"

#: A normalised set of ``[begin, end]`` ranges: sorted, disjoint, not adjacent.
Ranges = tuple[tuple[int, int], ...]


class ResourceError(ValueError):
    """A ``Resource`` JSON object the mini-cluster cannot account for."""


def _fixed(value: float) -> float:
    # Mesos stores scalars as fixed point with three decimals (Value::Scalar arithmetic).
    return round(value + 0.0, 3)


def _normalise(ranges: Iterable[tuple[int, int]]) -> Ranges:
    out: list[tuple[int, int]] = []
    for begin, end in sorted(ranges):
        if out and begin <= out[-1][1] + 1:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((begin, end))
    return tuple(out)


def _ranges_minus(have: Ranges, take: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    for begin, end in have:
        pieces = [(begin, end)]
        for t_begin, t_end in take:
            next_pieces: list[tuple[int, int]] = []
            for p_begin, p_end in pieces:
                if t_end < p_begin or t_begin > p_end:
                    next_pieces.append((p_begin, p_end))
                    continue
                if p_begin < t_begin:
                    next_pieces.append((p_begin, t_begin - 1))
                if t_end < p_end:
                    next_pieces.append((t_end + 1, p_end))
            pieces = next_pieces
        out.extend(pieces)
    return _normalise(out)


def _ranges_contain(have: Ranges, want: Ranges) -> bool:
    return all(
        any(h_begin <= begin and end <= h_end for h_begin, h_end in have) for begin, end in want
    )


def _format_scalar(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text if text != "-0" else "0"


def _format_ranges(ranges: Ranges) -> str:
    return "[" + ", ".join(f"{begin}-{end}" for begin, end in ranges) + "]"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceBag:
    """Named quantities per reservation: ``(name, role, quantity)``, role ``*`` if unreserved.

    A quantity is a scalar (``float``) or port ranges (:data:`Ranges`). Entries keep their
    first-seen order, which is the order offers and messages list them in. Empty entries (a
    zero scalar, no ranges) are dropped, so ``bag.is_empty()`` means "nothing".
    """

    items: tuple[tuple[str, str, float | Ranges], ...] = ()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_json(cls, resources: Iterable[Mapping[str, Any]]) -> ResourceBag:
        """Parse a list of v1 ``Resource`` objects (either reservation format).

        :raises ResourceError: for a resource without a name, of a type other than ``SCALAR``
            or ``RANGES``, with a negative or non-numeric value, or with a reservation the
            mini-cluster does not make (dynamic or refined: it only has static ones).
        """
        bag = cls()
        for resource in resources:
            bag = bag + cls._from_one(resource)
        return bag

    @classmethod
    def _from_one(cls, resource: Mapping[str, Any]) -> ResourceBag:
        if not isinstance(resource, Mapping):
            raise ResourceError(f"a resource must be a JSON object, got {resource!r}")
        name = resource.get("name")
        if not isinstance(name, str) or not name:
            raise ResourceError(f"resource without a name: {dict(resource)!r}")
        role = _reserved_for(name, resource)
        kind = resource.get("type", "SCALAR")
        if kind == "SCALAR":
            raw = (resource.get("scalar") or {}).get("value")
            if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
                raise ResourceError(f"invalid scalar value {raw!r} for resource {name!r}")
            return cls(items=((name, role, _fixed(float(raw))),)).compact()
        if kind == "RANGES":
            spans: list[tuple[int, int]] = []
            for item in (resource.get("ranges") or {}).get("range", []):
                begin, end = item.get("begin"), item.get("end")
                if not isinstance(begin, int) or not isinstance(end, int) or begin > end:
                    raise ResourceError(f"invalid range {item!r} for resource {name!r}")
                spans.append((begin, end))
            return cls(items=((name, role, _normalise(spans)),)).compact()
        raise ResourceError(
            f"resource {name!r} has type {kind!r}; only SCALAR and RANGES are supported"
        )

    def compact(self) -> ResourceBag:
        """The same bag without empty entries."""
        return ResourceBag(items=tuple(i for i in self.items if i[2] not in (0.0, ())))

    # -- queries ------------------------------------------------------------------------------

    def get(self, name: str, role: str = DEFAULT_ROLE) -> float | Ranges | None:
        """The quantity named *name* reserved for *role* (unreserved by default), or ``None``."""
        for item_name, item_role, value in self.items:
            if item_name == name and item_role == role:
                return value
        return None

    def scalar(self, name: str) -> float:
        """The scalar named *name*, whatever its reservation; ``0.0`` when absent."""
        total = 0.0
        for item_name, _, value in self.items:
            if item_name == name and isinstance(value, float):
                total = _fixed(total + value)
        return total

    def roles(self) -> list[str]:
        """The roles something in the bag is reserved for, in first-seen order."""
        return list(dict.fromkeys(role for _, role, _ in self.items if role != DEFAULT_ROLE))

    def usable_by(self, role: str) -> ResourceBag:
        """What a framework in *role* may be offered: unreserved, and reserved for its role
        or an ancestor of it (Mesos' hierarchical roles)."""
        return ResourceBag(items=tuple(i for i in self.items if serves(i[1], role)))

    def reserved_only(self, role: str) -> ResourceBag:
        """What is reserved for exactly *role*."""
        return ResourceBag(items=tuple(i for i in self.items if i[1] == role))

    def is_empty(self) -> bool:
        """True when the bag holds nothing."""
        return not self.compact().items

    def contains(self, other: ResourceBag) -> bool:
        """True when every quantity in *other* fits in this bag, reservation for reservation."""
        for name, role, want in other.compact().items:
            have = self.get(name, role)
            if isinstance(want, float):
                if not isinstance(have, float) or _fixed(have - want) < 0:
                    return False
            elif not isinstance(have, tuple) or not _ranges_contain(have, want):
                return False
        return True

    # -- arithmetic ---------------------------------------------------------------------------

    def __add__(self, other: ResourceBag) -> ResourceBag:
        merged: dict[tuple[str, str], float | Ranges] = {(n, r): v for n, r, v in self.items}
        for name, role, value in other.items:
            have = merged.get((name, role))
            if have is None:
                _check_kind(name, value, merged)
                merged[name, role] = value
            elif isinstance(have, float) and isinstance(value, float):
                merged[name, role] = _fixed(have + value)
            elif isinstance(have, tuple) and isinstance(value, tuple):
                merged[name, role] = _normalise(have + value)
            else:
                raise ResourceError(f"resource {name!r} is both a scalar and ranges")
        return ResourceBag(items=tuple((n, r, v) for (n, r), v in merged.items())).compact()

    def __sub__(self, other: ResourceBag) -> ResourceBag:
        """Remove *other*; quantities never go below zero (as in Mesos)."""
        taken = {(n, r): v for n, r, v in other.items}
        out: list[tuple[str, str, float | Ranges]] = []
        for name, role, have in self.items:
            take = taken.get((name, role))
            if take is None:
                out.append((name, role, have))
            elif isinstance(have, float) and isinstance(take, float):
                out.append((name, role, max(0.0, _fixed(have - take))))
            elif isinstance(have, tuple) and isinstance(take, tuple):
                out.append((name, role, _ranges_minus(have, take)))
            else:
                raise ResourceError(f"resource {name!r} is both a scalar and ranges")
        return ResourceBag(items=tuple(out)).compact()

    # -- rendering ----------------------------------------------------------------------------

    def to_json(
        self,
        *,
        role: str | None = DEFAULT_ROLE,
        allocation_role: str | None = None,
        refinement: bool = True,
    ) -> list[dict[str, Any]]:
        """v1 ``Resource`` objects; with *role*, each gets a role and ``allocation_info``.

        Unreserved resources carry the deprecated ``"role": "*"`` (recorded from Mesos 1.12)
        and ``allocation_info`` names the role the offer was made to, *allocation_role*
        (default: *role*). A reserved resource is written as Mesos writes it for a framework
        with the ``RESERVATION_REFINEMENT`` capability (*refinement*): the ``reservations``
        stack and no ``role``; or, for one without it, ``"role": "<role>"``. ``role=None``
        leaves ``role`` and ``allocation_info`` out (an agent's total), keeping reservations.
        """
        out: list[dict[str, Any]] = []
        for name, reserved, value in self.compact().items:
            resource: dict[str, Any]
            if isinstance(value, float):
                resource = {"name": name, "type": "SCALAR", "scalar": {"value": value}}
            else:
                resource = {
                    "name": name,
                    "type": "RANGES",
                    "ranges": {"range": [{"begin": b, "end": e} for b, e in value]},
                }
            if reserved != DEFAULT_ROLE and (refinement or role is None):
                resource["reservations"] = [{"type": "STATIC", "role": reserved}]
            elif reserved != DEFAULT_ROLE:
                resource["role"] = reserved
            if role is not None:
                if reserved == DEFAULT_ROLE:
                    resource["role"] = role
                resource["allocation_info"] = {"role": allocation_role or role}
            out.append(resource)
        return out

    def to_state(self) -> dict[str, float | str]:
        """The ``/state`` form: ``disk``, ``mem``, ``gpus``, ``cpus`` always, then the rest.

        Scalars are numbers (every reservation together) and ranges are Mesos' text form
        (``"[31000-31009]"``).
        """
        out: dict[str, float | str] = {
            "disk": self.scalar("disk"),
            "mem": self.scalar("mem"),
            "gpus": self.scalar("gpus"),
            "cpus": self.scalar("cpus"),
        }
        ranges: dict[str, Ranges] = {}
        for name, _, value in self.compact().items:
            if isinstance(value, float):
                out.setdefault(name, self.scalar(name))
            else:
                ranges[name] = _normalise(ranges.get(name, ()) + value)
                out[name] = _format_ranges(ranges[name])
        return out

    def describe(self, allocation_role: str = DEFAULT_ROLE) -> str:
        """Mesos' text form, ``cpus(allocated: *):1.8; ports(allocated: *):[31000-31009]``.

        Reserved entries name their reservation first, as Mesos does:
        ``cpus(reservations: [(STATIC,toil)], allocated: toil):2``.

        >>> ResourceBag(items=(("cpus", "*", 9.8), ("mem", "*", 32.0))).describe()
        'cpus(allocated: *):9.8; mem(allocated: *):32'
        """
        parts = []
        for name, reserved, value in self.compact().items:
            text = _format_scalar(value) if isinstance(value, float) else _format_ranges(value)
            where = f"allocated: {allocation_role}"
            if reserved != DEFAULT_ROLE:
                where = f"reservations: [(STATIC,{reserved})], {where}"
            parts.append(f"{name}({where}):{text}")
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.describe()


def _check_kind(name: str, value: float | Ranges,
                merged: Mapping[tuple[str, str], float | Ranges]) -> None:
    """One name is a scalar or ranges, whatever the reservation (Mesos' rule)."""
    for (other_name, _), other in merged.items():
        if other_name == name and isinstance(other, float) != isinstance(value, float):
            raise ResourceError(f"resource {name!r} is both a scalar and ranges")


def _reserved_for(name: str, resource: Mapping[str, Any]) -> str:
    """The role *resource* is statically reserved for (``*``: unreserved), in either format.

    :raises ResourceError: for dynamic or refined reservations, which the mini-cluster never
        makes (so no offer could hold them), and for invalid role names.
    """
    reservations = resource.get("reservations")
    if reservations:
        if not isinstance(reservations, list) or len(reservations) != 1:
            raise ResourceError(
                f"resource {name!r} has a refined reservation {reservations!r}; the mini-cluster "
                "only has static reservations for one role"
            )
        only = reservations[0]
        if not isinstance(only, Mapping) or only.get("type", "STATIC") != "STATIC":
            raise ResourceError(
                f"resource {name!r} has reservation {only!r}; the mini-cluster only has static "
                "reservations"
            )
        role = only.get("role")
    else:
        role = resource.get("role", DEFAULT_ROLE)
        if role not in (None, DEFAULT_ROLE) and resource.get("reservation") is not None:
            raise ResourceError(
                f"resource {name!r} is dynamically reserved ({role!r}); the mini-cluster only "
                "has static reservations"
            )
    if role is None or role == DEFAULT_ROLE:
        return DEFAULT_ROLE
    if not isinstance(role, str):
        raise ResourceError(f"resource {name!r} has an invalid role {role!r}")
    try:
        return check_role(role)
    except ValueError as exc:
        raise ResourceError(f"resource {name!r}: {exc}") from None


def with_allocation_info(
    resources: Sequence[Mapping[str, Any]], role: str = DEFAULT_ROLE
) -> list[dict[str, Any]]:
    """Copy *resources* with ``allocation_info`` set on each, as the master injects it.

    A MULTI_ROLE framework may leave ``allocation_info`` out of the resources of a task it
    launches (recorded: T6 in fw1_main); Mesos fills it in from the offer before the task goes
    to the agent. Existing ``allocation_info`` is kept.

    >>> with_allocation_info([{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}}])
    [{'name': 'cpus', 'type': 'SCALAR', 'scalar': {'value': 1}, 'allocation_info': {'role': '*'}}]
    """
    out = []
    for resource in resources:
        copy = dict(resource)
        copy.setdefault("allocation_info", {"role": role})
        out.append(copy)
    return out
