"""HTTP Basic authentication of frameworks, as a Mesos master with
``--authenticate_http_frameworks --http_framework_authenticators=basic --credentials=FILE`` does.

Pure: the master's handler passes the ``Authorization`` header and the parsed call and gets
back the authenticated principal or a :class:`~._master_state.CallRejected` with the recorded
answer (auth/ transcript): every missing, malformed, unknown or wrong credential gets the same
``401`` with realm ``mesos-master-scheduler`` and body ``401 Unauthorized.``; a SUBSCRIBE whose
``FrameworkInfo.principal`` differs gets ``400``; one without a principal gets the
authenticated one filled in.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toil_mesos.cluster._master_state import CallRejected

__all__ = ["REALM", "authenticate", "check_principal", "load_credentials"]

REALM = "mesos-master-scheduler"


def _unauthorized() -> CallRejected:
    return CallRejected(
        401, "401 Unauthorized.", headers=(("WWW-Authenticate", f'Basic realm="{REALM}"'),)
    )


def load_credentials(path: Path) -> dict[str, str]:
    """Principal to secret, from Mesos' JSON credentials file
    (``{"credentials": [{"principal": ..., "secret": ...}]}``).

    :raises ValueError: naming the file and what is wrong (never a secret).
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--credentials {path}: cannot read it as JSON ({exc})") from None
    entries = document.get("credentials") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"--credentials {path}: expected a non-empty 'credentials' list")
    credentials: dict[str, str] = {}
    for index, entry in enumerate(entries):
        principal = entry.get("principal") if isinstance(entry, dict) else None
        secret = entry.get("secret") if isinstance(entry, dict) else None
        if not isinstance(principal, str) or not principal or not isinstance(secret, str):
            raise ValueError(
                f"--credentials {path}: entry {index} needs a string 'principal' and 'secret'"
            )
        credentials[principal] = secret
    return credentials


def authenticate(authorization: str | None, credentials: Mapping[str, str]) -> str:
    """The principal an ``Authorization`` header proves.

    :raises CallRejected: 401, the same for every kind of failure.
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        raise _unauthorized()
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _unauthorized() from None
    principal, colon, secret = decoded.partition(":")
    known = credentials.get(principal)
    if not colon or known is None or not hmac.compare_digest(known.encode(), secret.encode()):
        raise _unauthorized()
    return principal


def check_principal(call: dict[str, Any], principal: str) -> None:
    """Check (or fill in) ``FrameworkInfo.principal`` of a SUBSCRIBE, in place.

    :raises CallRejected: 400 with the recorded message when it names another principal.
    """
    if call.get("type") != "SUBSCRIBE":
        return
    info = call.get("subscribe", {}).get("framework_info")
    if not isinstance(info, dict):
        return
    given = info.get("principal")
    if given is None:
        info["principal"] = principal
    elif given != principal:
        raise CallRejected(
            400,
            "Failed to validate scheduler::Call: Authenticated principal "
            f"'{principal}' does not match principal '{given}' set in `FrameworkInfo`",
        )
