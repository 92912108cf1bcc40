"""Parse the agent's ``--resources`` and ``--attributes`` flags into v1 JSON.

The flag grammar is Mesos' own (``docs/attributes-resources.md`` in apache/mesos):
``name:value`` pairs separated by ``;``, where a value is a scalar (``2``, ``4096.5``), a list
of ranges (``[31000-31099,32000-32000]``) or a set (``{a,b}``). A name may carry a role,
``cpus(toil):8``: a static reservation for that role (``reservation.md``), which a name may
have next to unreserved resources (``cpus:4;cpus(toil):8``). Unreserved resources become v1
``Resource`` objects with the deprecated ``"role": "*"`` that the recorded offers and agent
``/state`` still carry; reserved ones get the ``reservations`` stack
(``[{"type": "STATIC", "role": "toil"}]``), Mesos' own format since reservation refinement;
attributes become ``Attribute`` objects of type TEXT, SCALAR or RANGES,
exactly as ``agent_info.attributes`` looks in the recorded SUBSCRIBED event.

Pure functions, no I/O. A bad flag raises :class:`InvalidFlagError` naming the text at fault.
"""

from __future__ import annotations

import math
import re
from typing import Any

from toil_mesos.mesos._roles import check_role

__all__ = [
    "InvalidFlagError",
    "attributes_summary",
    "merge_default_resources",
    "parse_attributes",
    "parse_resources",
    "reserved_full",
    "reserved_summary",
    "resources_summary",
    "unreserved",
]

JSON = dict[str, Any]

_NAME = re.compile(r"[A-Za-z0-9_./-]+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_RANGE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")
# Resource names may carry a role, ``cpus(toil):2``: a static reservation (``*``: none).
_ROLE = re.compile(r"(?P<name>[^()]+)\((?P<role>[^()]*)\)")


class InvalidFlagError(ValueError):
    """A ``--resources`` or ``--attributes`` flag cannot be parsed; the message names the text."""


def _split_pairs(text: str, flag: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise InvalidFlagError(
                f"invalid {flag} entry {item!r} in {text!r}: expected 'name:value'"
            )
        pairs.append((name, value))
    return pairs


def _parse_scalar(value: str, *, item: str, flag: str) -> float:
    if _NUMBER.fullmatch(value) is None:
        raise InvalidFlagError(f"invalid scalar {value!r} in {flag} entry {item!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidFlagError(f"scalar {value!r} in {flag} entry {item!r} is not finite")
    # Mesos keeps three decimal digits of precision for scalar resources.
    return round(number, 3)


def _parse_ranges(value: str, *, item: str, flag: str) -> list[dict[str, int]]:
    inner = value[1:-1].strip()
    if not inner:
        raise InvalidFlagError(f"empty ranges {value!r} in {flag} entry {item!r}")
    ranges: list[dict[str, int]] = []
    for part in inner.split(","):
        match = _RANGE.fullmatch(part)
        if match is None:
            raise InvalidFlagError(
                f"invalid range {part.strip()!r} in {flag} entry {item!r}: expected 'BEGIN-END'"
            )
        begin, end = int(match.group(1)), int(match.group(2))
        if begin > end:
            raise InvalidFlagError(
                f"range {part.strip()!r} in {flag} entry {item!r} ends before it begins"
            )
        ranges.append({"begin": begin, "end": end})
    return sorted(ranges, key=lambda r: (r["begin"], r["end"]))


def _parse_set(value: str, *, item: str, flag: str) -> list[str]:
    members = [m.strip() for m in value[1:-1].split(",") if m.strip()]
    if not members:
        raise InvalidFlagError(f"empty set {value!r} in {flag} entry {item!r}")
    return members


def parse_resources(text: str) -> list[JSON]:
    """Parse a ``--resources`` flag into v1 ``Resource`` JSON, in flag order.

    >>> parse_resources("cpus:2;ports:[31000-31009]") == [
    ...     {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2.0}, "role": "*"},
    ...     {"name": "ports", "type": "RANGES",
    ...      "ranges": {"range": [{"begin": 31000, "end": 31009}]}, "role": "*"}]
    True
    >>> parse_resources("cpus(toil):8") == [
    ...     {"name": "cpus", "type": "SCALAR", "scalar": {"value": 8.0},
    ...      "reservations": [{"type": "STATIC", "role": "toil"}]}]
    True

    :raises InvalidFlagError: for malformed entries, negative scalars, invalid role names, a
        name given twice for one role, and a name that is a scalar for one role and ranges or
        a set for another.
    """
    flag = "--resources"
    resources: list[JSON] = []
    seen: set[tuple[str, str]] = set()
    kinds: dict[str, str] = {}
    for name, value in _split_pairs(text, flag):
        item = f"{name}:{value}"
        role = "*"
        role_match = _ROLE.fullmatch(name)
        if role_match is not None:
            name = role_match.group("name").strip()
            role = role_match.group("role").strip()
            try:
                check_role(role)
            except ValueError as exc:
                raise InvalidFlagError(f"invalid role in {flag} entry {item!r}: {exc}") from None
        if _NAME.fullmatch(name) is None:
            raise InvalidFlagError(f"invalid resource name {name!r} in {flag} {text!r}")
        if (name, role) in seen:
            whose = "" if role == "*" else f" for role {role!r}"
            raise InvalidFlagError(f"resource {name!r} is given twice{whose} in {flag} {text!r}")
        seen.add((name, role))
        resource: JSON = {"name": name}
        if value.startswith("[") and value.endswith("]"):
            resource["type"] = "RANGES"
            resource["ranges"] = {"range": _parse_ranges(value, item=item, flag=flag)}
        elif value.startswith("{") and value.endswith("}"):
            resource["type"] = "SET"
            resource["set"] = {"item": _parse_set(value, item=item, flag=flag)}
        else:
            number = _parse_scalar(value, item=item, flag=flag)
            if number < 0:
                raise InvalidFlagError(f"negative resource {item!r} in {flag} {text!r}")
            resource["type"] = "SCALAR"
            resource["scalar"] = {"value": number}
        if kinds.setdefault(name, resource["type"]) != resource["type"]:
            raise InvalidFlagError(
                f"resource {name!r} is {kinds[name]} and {resource['type']} in {flag} {text!r}; "
                "one name has one type for every role"
            )
        if role == "*":
            resource["role"] = "*"
        else:
            resource["reservations"] = [{"type": "STATIC", "role": role}]
        resources.append(resource)
    return resources


def parse_attributes(text: str) -> list[JSON]:
    """Parse an ``--attributes`` flag into v1 ``Attribute`` JSON, in flag order.

    A number becomes SCALAR, ``[a-b,...]`` RANGES and anything else TEXT (so
    ``preemptible:true`` is the text ``"true"``, as on a real agent).

    >>> [a["type"] for a in parse_attributes("rack:r1;level:5;slots:[1-4]")]
    ['TEXT', 'SCALAR', 'RANGES']

    :raises InvalidFlagError: for malformed entries, sets (Mesos refuses set attributes) and
        names given twice.
    """
    flag = "--attributes"
    attributes: list[JSON] = []
    seen: set[str] = set()
    for name, value in _split_pairs(text, flag):
        item = f"{name}:{value}"
        if name in seen:
            raise InvalidFlagError(f"attribute {name!r} is given twice in {flag} {text!r}")
        seen.add(name)
        attribute: JSON = {"name": name}
        if value.startswith("[") and value.endswith("]"):
            attribute["type"] = "RANGES"
            attribute["ranges"] = {"range": _parse_ranges(value, item=item, flag=flag)}
        elif value.startswith("{") and value.endswith("}"):
            raise InvalidFlagError(
                f"{flag} entry {item!r} is a set; attributes may only be text, scalars or ranges"
            )
        elif _NUMBER.fullmatch(value) is not None:
            attribute["type"] = "SCALAR"
            attribute["scalar"] = {"value": _parse_scalar(value, item=item, flag=flag)}
        else:
            attribute["type"] = "TEXT"
            attribute["text"] = {"value": value}
        attributes.append(attribute)
    return attributes


def merge_default_resources(resources: list[JSON], defaults: list[JSON]) -> list[JSON]:
    """Add every default resource the flag did not name, as a real agent auto-detects them.

    >>> [r["name"] for r in merge_default_resources(
    ...     parse_resources("mem:100"), parse_resources("cpus:2;mem:4096"))]
    ['cpus', 'mem']
    """
    named = {r["name"] for r in resources}
    merged = [d for d in defaults if d["name"] not in named]
    merged.extend(resources)
    order = {d["name"]: i for i, d in enumerate(defaults)}
    return sorted(merged, key=lambda r: order.get(r["name"], len(order)))


def _ranges_text(ranges: list[dict[str, int]]) -> str:
    return "[" + ", ".join(f"{r['begin']}-{r['end']}" for r in ranges) + "]"


def reserved_summary(resources: list[JSON]) -> dict[str, dict[str, float | str]]:
    """``reserved_resources`` of agent ``/state``: the summary of each role's reservations.

    >>> reserved_summary(parse_resources("cpus:2;cpus(toil):1"))["toil"]["cpus"]
    1.0
    """
    return {role: resources_summary(reserved)
            for role, reserved in reserved_full(resources).items()}


def reserved_full(resources: list[JSON]) -> dict[str, list[JSON]]:
    """``reserved_resources_full`` of agent ``/state``: each role's reserved resources."""
    roles: dict[str, list[JSON]] = {}
    for resource in resources:
        for reservation in resource.get("reservations") or ():
            roles.setdefault(str(reservation.get("role")), []).append(resource)
    return roles


def unreserved(resources: list[JSON]) -> list[JSON]:
    """The resources that no role has reserved."""
    return [r for r in resources if not r.get("reservations")]


def resources_summary(resources: list[JSON]) -> dict[str, float | str]:
    """The flat ``{"disk": 4096.0, "mem": ..., "gpus": 0.0, "cpus": ..., "ports": "[..]"}`` form
    of agent ``/state`` (the recorded key order: disk, mem, gpus, cpus, then the rest).

    >>> resources_summary(parse_resources("cpus:2;mem:10;ports:[1-2]"))
    {'disk': 0.0, 'mem': 10.0, 'gpus': 0.0, 'cpus': 2.0, 'ports': '[1-2]'}
    """
    summary: dict[str, float | str] = {"disk": 0.0, "mem": 0.0, "gpus": 0.0, "cpus": 0.0}
    for resource in resources:
        kind = resource.get("type")
        if kind == "SCALAR":
            previous = summary.get(resource["name"], 0.0)
            base = previous if isinstance(previous, float) else 0.0
            summary[resource["name"]] = base + float(resource["scalar"]["value"])
        elif kind == "RANGES":
            summary[resource["name"]] = _ranges_text(resource["ranges"]["range"])
        elif kind == "SET":
            summary[resource["name"]] = "{" + ", ".join(resource["set"]["item"]) + "}"
    return summary


def attributes_summary(attributes: list[JSON]) -> dict[str, float | str]:
    """The flat ``{"rack": "r1", "level": 5.0, "slots": "[1-4]"}`` form of agent ``/state``.

    >>> attributes_summary(parse_attributes("rack:r1;level:5;slots:[1-4]"))
    {'rack': 'r1', 'level': 5.0, 'slots': '[1-4]'}
    """
    summary: dict[str, float | str] = {}
    for attribute in attributes:
        kind = attribute["type"]
        if kind == "SCALAR":
            summary[attribute["name"]] = float(attribute["scalar"]["value"])
        elif kind == "RANGES":
            summary[attribute["name"]] = _ranges_text(attribute["ranges"]["range"])
        else:
            summary[attribute["name"]] = str(attribute["text"]["value"])
    return summary
