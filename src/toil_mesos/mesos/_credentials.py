"""A framework's credentials for masters that authenticate frameworks (HTTP Basic).

The secret is kept out of every repr, log line and error message: only the principal is ever
shown. The ``Authorization`` header is built on demand and handed straight to the transport.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

__all__ = ["Credentials"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """A principal and its secret, as in the master's ``--credentials`` file."""

    principal: str
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        # RFC 7617: the user-id of Basic authentication cannot contain a colon.
        if not self.principal or ":" in self.principal:
            raise ValueError(
                f"a Mesos principal must be non-empty, without ':': {self.principal!r}"
            )

    def __str__(self) -> str:
        return f"principal {self.principal!r}"

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header every scheduler call carries."""
        token = base64.b64encode(f"{self.principal}:{self.secret}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}
