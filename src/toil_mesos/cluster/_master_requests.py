"""The HTTP-level checks of a request to the master, before any state is touched.

``Master::Http::scheduler`` checks the method, the media types, the JSON and the call's own
shape, in that order, and answers each failure with a recorded status and ``text/plain``
message; :func:`parse_scheduler_request` does the same. :func:`parse_agent_call` checks the
agents' internal calls (``_protocol``).
"""

from __future__ import annotations

import json
from typing import Any, Final, Protocol

from toil_mesos.cluster._master_model import CallRejected, value_of

__all__ = ["SCHEDULER_CALL_TYPES", "HeaderLookup", "parse_agent_call", "parse_scheduler_request"]


SCHEDULER_CALL_TYPES: Final = frozenset(
    {
        "SUBSCRIBE",
        "TEARDOWN",
        "ACCEPT",
        "DECLINE",
        "ACCEPT_INVERSE_OFFERS",
        "DECLINE_INVERSE_OFFERS",
        "REVIVE",
        "KILL",
        "SHUTDOWN",
        "ACKNOWLEDGE",
        "ACKNOWLEDGE_OPERATION_STATUS",
        "RECONCILE",
        "RECONCILE_OPERATIONS",
        "MESSAGE",
        "REQUEST",
        "SUPPRESS",
        "UPDATE_FRAMEWORK",
    }
)

#: The call field each call type must carry (``validation::scheduler::call::validate``).
_REQUIRED_FIELD: Final = {
    "ACCEPT": "accept",
    "DECLINE": "decline",
    "ACCEPT_INVERSE_OFFERS": "accept_inverse_offers",
    "DECLINE_INVERSE_OFFERS": "decline_inverse_offers",
    "KILL": "kill",
    "SHUTDOWN": "shutdown",
    "ACKNOWLEDGE": "acknowledge",
    "ACKNOWLEDGE_OPERATION_STATUS": "acknowledge_operation_status",
    "RECONCILE": "reconcile",
    "RECONCILE_OPERATIONS": "reconcile_operations",
    "MESSAGE": "message",
    "REQUEST": "request",
    "UPDATE_FRAMEWORK": "update_framework",
}


def _media_accepted(accept: str | None, media: str) -> bool:
    if accept is None or not accept.strip():
        return True
    kind = media.split("/")[0]
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        candidate = fields[0].lower()
        quality = 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if quality > 0 and candidate in (media, f"{kind}/*", "*/*"):
            return True
    return False


def _json_error(body: bytes) -> str | None:
    try:
        json.loads(body)
    except UnicodeDecodeError as exc:
        return f"syntax error at line 1 near: {body[exc.start : exc.start + 32]!r}"
    except json.JSONDecodeError as exc:
        return f"syntax error at line {exc.lineno} near: {exc.doc[exc.pos :]}"
    return None


class HeaderLookup(Protocol):
    """Request headers, looked up by name (``http.client.HTTPMessage``, or a dict in tests)."""

    def get(self, name: str, /) -> str | None: ...


def parse_scheduler_request(method: str, headers: HeaderLookup, body: bytes) -> dict[str, Any]:
    """Check a request to ``/api/v1/scheduler`` as Mesos does, and return the call.

    *headers* must look names up case-insensitively (``http.client.HTTPMessage`` does). The
    checks run in Mesos' order: method, Content-Type, JSON, call validation, Accept (SUBSCRIBE
    only), Mesos-Stream-Id on a SUBSCRIBE. An unknown ``type`` string counts as a missing type,
    because Mesos' JSON-to-protobuf conversion drops unknown enum values (recorded).

    :raises CallRejected: with the recorded status and message.
    """
    if method != "POST":
        raise CallRejected(
            405,
            f"405 Method Not Allowed. Expecting one of {{ 'POST' }}, but received '{method}'.",
            headers=(("Allow", "POST"),),
        )
    content_type = headers.get("Content-Type")
    if content_type is None:
        raise CallRejected(400, "Expecting 'Content-Type' to be present")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise CallRejected(
            415, "Expecting 'Content-Type' of application/json or application/x-protobuf"
        )
    error = _json_error(body)
    if error is not None:
        raise CallRejected(400, f"Failed to parse body into JSON: {error}")
    call = json.loads(body)
    if not isinstance(call, dict):
        raise CallRejected(
            400, "Failed to convert JSON into Call protobuf: Expecting a JSON object"
        )
    problem = _validate_call(call)
    if problem is not None:
        raise CallRejected(400, f"Failed to validate scheduler::Call: {problem}")
    if call["type"] == "SUBSCRIBE":
        if not _media_accepted(headers.get("Accept"), "application/json"):
            raise CallRejected(
                406, "Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'"
            )
        if headers.get("Mesos-Stream-Id") is not None:
            raise CallRejected(
                400, "Subscribe calls should not include the 'Mesos-Stream-Id' header"
            )
    return call


def _validate_call(call: dict[str, Any]) -> str | None:
    kind = call.get("type")
    if kind not in SCHEDULER_CALL_TYPES:
        return "Expecting 'type' to be present"
    if kind == "SUBSCRIBE":
        subscribe = call.get("subscribe")
        if not isinstance(subscribe, dict):
            return "Expecting 'subscribe' to be present"
        info = subscribe.get("framework_info")
        if not isinstance(info, dict):
            return "Not initialized: subscribe.framework_info"
        if value_of(info.get("id")) != value_of(call.get("framework_id")):
            return "'framework_id' differs from 'subscribe.framework_info.id'"
        return None
    if value_of(call.get("framework_id")) is None:
        return "Expecting 'framework_id' to be present"
    required = _REQUIRED_FIELD.get(kind)
    if required is not None and not isinstance(call.get(required), dict):
        return f"Expecting '{required}' to be present"
    return None


def parse_agent_call(body: bytes) -> dict[str, Any]:
    """Parse a call on ``/internal/agent/call`` (``_protocol.AGENT_CALLS``).

    :raises CallRejected: 400 naming what is wrong.
    """
    try:
        call = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CallRejected(400, f"Failed to parse body into JSON: {exc}") from None
    if not isinstance(call, dict):
        raise CallRejected(400, f"Expecting a JSON object, got {call!r}")
    kind = call.get("type")
    key = kind.lower() if isinstance(kind, str) else None
    if kind not in ("UPDATE", "MESSAGE", "EXECUTOR_EXITED") or key is None:
        raise CallRejected(400, f"Unknown agent call type {kind!r}")
    if not isinstance(call.get(key), dict):
        raise CallRejected(400, f"Expecting '{key}' to be present")
    return call
