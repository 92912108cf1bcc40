"""Resource arithmetic on Mesos v1 ``Resource`` JSON, as the master needs it for offers.

The master keeps, per agent, ``total - used - offered`` and checks that what a task asks for is
contained in what was offered. Mesos does this with its ``Resources`` class; this module does the
small part of it the mini-cluster needs: unreserved ``SCALAR`` resources (``cpus``, ``mem``,
``disk``, anything else scalar) and ``RANGES`` resources (``ports``), all in role ``*``.

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

__all__ = [
    "DEFAULT_ROLE",
    "Ranges",
    "ResourceBag",
    "ResourceError",
    "with_allocation_info",
]

#: The only role the mini-cluster knows.
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
    """Named quantities: a scalar (``float``) or port ranges (:data:`Ranges`) per name.

    Names keep their first-seen order, which is the order offers and messages list them in.
    Empty entries (a zero scalar, no ranges) are dropped, so ``bag.is_empty()`` means "nothing".
    """

    items: tuple[tuple[str, float | Ranges], ...] = ()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_json(cls, resources: Iterable[Mapping[str, Any]]) -> ResourceBag:
        """Parse a list of v1 ``Resource`` objects.

        :raises ResourceError: for a resource without a name, of a type other than ``SCALAR``
            or ``RANGES``, with a negative or non-numeric value, or reserved for a role other
            than ``*`` (the mini-cluster has no reservations).
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
        role = resource.get("role", DEFAULT_ROLE)
        if role != DEFAULT_ROLE or resource.get("reservations"):
            raise ResourceError(
                f"resource {name!r} is reserved ({role!r}); the mini-cluster only has role '*'"
            )
        kind = resource.get("type", "SCALAR")
        if kind == "SCALAR":
            raw = (resource.get("scalar") or {}).get("value")
            if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
                raise ResourceError(f"invalid scalar value {raw!r} for resource {name!r}")
            return cls(items=((name, _fixed(float(raw))),)).compact()
        if kind == "RANGES":
            spans: list[tuple[int, int]] = []
            for item in (resource.get("ranges") or {}).get("range", []):
                begin, end = item.get("begin"), item.get("end")
                if not isinstance(begin, int) or not isinstance(end, int) or begin > end:
                    raise ResourceError(f"invalid range {item!r} for resource {name!r}")
                spans.append((begin, end))
            return cls(items=((name, _normalise(spans)),)).compact()
        raise ResourceError(
            f"resource {name!r} has type {kind!r}; only SCALAR and RANGES are supported"
        )

    def compact(self) -> ResourceBag:
        """The same bag without empty entries."""
        return ResourceBag(items=tuple((n, v) for n, v in self.items if v not in (0.0, ())))

    # -- queries ------------------------------------------------------------------------------

    def get(self, name: str) -> float | Ranges | None:
        """The quantity named *name*, or ``None``."""
        for item_name, value in self.items:
            if item_name == name:
                return value
        return None

    def scalar(self, name: str) -> float:
        """The scalar named *name*, ``0.0`` when absent or not a scalar."""
        value = self.get(name)
        return value if isinstance(value, float) else 0.0

    def is_empty(self) -> bool:
        """True when the bag holds nothing."""
        return not self.compact().items

    def contains(self, other: ResourceBag) -> bool:
        """True when every quantity in *other* fits in this bag."""
        for name, want in other.compact().items:
            have = self.get(name)
            if isinstance(want, float):
                if not isinstance(have, float) or _fixed(have - want) < 0:
                    return False
            elif not isinstance(have, tuple) or not _ranges_contain(have, want):
                return False
        return True

    # -- arithmetic ---------------------------------------------------------------------------

    def __add__(self, other: ResourceBag) -> ResourceBag:
        merged: dict[str, float | Ranges] = dict(self.items)
        for name, value in other.items:
            have = merged.get(name)
            if have is None:
                merged[name] = value
            elif isinstance(have, float) and isinstance(value, float):
                merged[name] = _fixed(have + value)
            elif isinstance(have, tuple) and isinstance(value, tuple):
                merged[name] = _normalise(have + value)
            else:
                raise ResourceError(f"resource {name!r} is both a scalar and ranges")
        return ResourceBag(items=tuple(merged.items())).compact()

    def __sub__(self, other: ResourceBag) -> ResourceBag:
        """Remove *other*; quantities never go below zero (as in Mesos)."""
        taken = dict(other.items)
        out: list[tuple[str, float | Ranges]] = []
        for name, have in self.items:
            take = taken.get(name)
            if take is None:
                out.append((name, have))
            elif isinstance(have, float) and isinstance(take, float):
                out.append((name, max(0.0, _fixed(have - take))))
            elif isinstance(have, tuple) and isinstance(take, tuple):
                out.append((name, _ranges_minus(have, take)))
            else:
                raise ResourceError(f"resource {name!r} is both a scalar and ranges")
        return ResourceBag(items=tuple(out)).compact()

    # -- rendering ----------------------------------------------------------------------------

    def to_json(
        self, *, role: str | None = DEFAULT_ROLE, allocation_role: str | None = None
    ) -> list[dict[str, Any]]:
        """v1 ``Resource`` objects; with *role*, each gets ``role`` and ``allocation_info``.

        Offers carry both the deprecated ``role`` field (always ``*``: nothing is reserved) and
        ``allocation_info`` naming the role the offer was made to, *allocation_role*, which
        defaults to *role* (recorded from Mesos 1.12). ``role=None`` leaves both out (an
        agent's total, for example).
        """
        out: list[dict[str, Any]] = []
        for name, value in self.compact().items:
            resource: dict[str, Any]
            if isinstance(value, float):
                resource = {"name": name, "type": "SCALAR", "scalar": {"value": value}}
            else:
                resource = {
                    "name": name,
                    "type": "RANGES",
                    "ranges": {"range": [{"begin": b, "end": e} for b, e in value]},
                }
            if role is not None:
                resource["role"] = role
                resource["allocation_info"] = {"role": allocation_role or role}
            out.append(resource)
        return out

    def to_state(self) -> dict[str, float | str]:
        """The ``/state`` form: ``disk``, ``mem``, ``gpus``, ``cpus`` always, then the rest.

        Scalars are numbers and ranges are Mesos' text form (``"[31000-31009]"``).
        """
        out: dict[str, float | str] = {
            "disk": self.scalar("disk"),
            "mem": self.scalar("mem"),
            "gpus": self.scalar("gpus"),
            "cpus": self.scalar("cpus"),
        }
        for name, value in self.compact().items:
            if name not in out:
                out[name] = value if isinstance(value, float) else _format_ranges(value)
        return out

    def describe(self, allocation_role: str = DEFAULT_ROLE) -> str:
        """Mesos' text form, ``cpus(allocated: *):1.8; ports(allocated: *):[31000-31009]``.

        >>> ResourceBag(items=(("cpus", 9.8), ("mem", 32.0))).describe()
        'cpus(allocated: *):9.8; mem(allocated: *):32'
        """
        parts = []
        for name, value in self.compact().items:
            text = _format_scalar(value) if isinstance(value, float) else _format_ranges(value)
            parts.append(f"{name}(allocated: {allocation_role}):{text}")
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.describe()


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
