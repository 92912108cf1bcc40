"""Mesos roles on the wire: which names are roles, and whom a resource is reserved for.

Shared by the scheduler (which resources of an offer a framework may use) and the
mini-cluster (which resources an agent reserves and a master offers to whom), so both read
the two reservation formats the same way. Mesos' ``roles.md`` and ``reservation.md`` are the
spec: with the ``RESERVATION_REFINEMENT`` capability a reservation is the ``reservations``
stack (the last entry the most refined); without it, ``role`` names the reserved role (and
``reservation`` is present when dynamic). Unreserved resources have ``role`` ``*`` or none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["UNRESERVED", "check_role", "reservation_role", "serves"]

#: The role of unreserved resources and of frameworks that name none.
UNRESERVED: Final = "*"

#: Characters Mesos refuses in role names (``roles.md``: no whitespace, no backslash).
_BAD_ROLE_CHARACTERS = re.compile(r"[\s\\]")


def check_role(role: str) -> str:
    """*role* if Mesos would accept it as a framework role, else ``ValueError`` saying why.

    Mesos' rules (``roles.md``): not empty, ``.`` or ``..``; no leading ``-``; no whitespace or
    backslash; ``/`` separates the levels of a hierarchical role, each of which obeys the same
    rules. ``*`` is the default role.

    >>> check_role("toil"), check_role("eng/toil"), check_role("*")
    ('toil', 'eng/toil', '*')
    """
    if role == UNRESERVED:
        return role
    if not role:
        raise ValueError("a role must not be empty")
    for level in role.split("/"):
        if level in ("", ".", ".."):
            raise ValueError(f"role {role!r} has an empty, '.' or '..' level")
        if level.startswith("-"):
            raise ValueError(f"role {role!r} has a level starting with '-'")
        if level == UNRESERVED:
            raise ValueError(f"role {role!r} uses '*' as a level; '*' is only a whole role")
        if _BAD_ROLE_CHARACTERS.search(level):
            raise ValueError(f"role {role!r} contains whitespace or a backslash")
    return role


def reservation_role(resource: Mapping[str, Any]) -> str:
    """The role *resource* is reserved for, in either format; ``*`` when unreserved.

    >>> reservation_role({"name": "cpus", "role": "*"})
    '*'
    >>> reservation_role({"name": "cpus", "reservations": [{"type": "STATIC", "role": "a"},
    ...                                                     {"type": "DYNAMIC", "role": "a/b"}]})
    'a/b'
    >>> reservation_role({"name": "cpus", "role": "a", "reservation": {"principal": "p"}})
    'a'
    """
    reservations = resource.get("reservations")
    if isinstance(reservations, Sequence) and reservations:
        last = reservations[-1]
        role = last.get("role") if isinstance(last, Mapping) else None
        return str(role) if role else UNRESERVED
    role = resource.get("role")
    return str(role) if isinstance(role, str) and role else UNRESERVED


def serves(reserved_for: str, role: str) -> bool:
    """Whether resources reserved for *reserved_for* may go to a framework in *role*.

    Unreserved resources serve every role; a reservation serves its role and the role's
    descendants (hierarchical roles: ``eng`` serves ``eng/toil``, never ``engine``).

    >>> serves("*", "toil"), serves("eng", "eng/toil"), serves("eng", "engine")
    (True, True, False)
    """
    if reserved_for == UNRESERVED:
        return True
    return role == reserved_for or role.startswith(reserved_for + "/")
