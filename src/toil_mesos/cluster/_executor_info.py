"""ExecutorInfo as the master compares and prints it.

Two tasks naming the same executor must carry equal ExecutorInfos (Mesos' ``operator==`` on
the protobuf, defaults filled in); when they do not, the TASK_ERROR message quotes both in
protobuf text format, as ``stringify(ExecutorInfo)`` prints them (recorded).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from toil_mesos.cluster._offers import DEFAULT_ROLE

__all__ = ["comparable_executor_info", "executor_info_text", "incompatible_executor_message"]

# Protobuf text format of an ExecutorInfo, for the "not compatible" TASK_ERROR message. Mesos
# prints fields in field-number order; these tables give that order for the messages an
# ExecutorInfo usually holds (unknown fields follow in JSON order).
_FIELD_ORDER: Final[Mapping[str, tuple[str, ...]]] = {
    "ExecutorInfo": (
        "executor_id",
        "data",
        "resources",
        "command",
        "framework_id",
        "name",
        "source",
        "container",
        "discovery",
        "shutdown_grace_period",
        "labels",
        "type",
    ),
    "Resource": (
        "name",
        "type",
        "scalar",
        "ranges",
        "set",
        "role",
        "disk",
        "reservation",
        "revocable",
        "shared",
        "allocation_info",
        "provider_id",
        "reservations",
    ),
    "CommandInfo": ("uris", "environment", "value", "user", "shell", "arguments"),
    "URI": ("value", "executable", "extract", "cache", "output_file"),
    "Environment": ("variables",),
    "Variable": ("name", "value", "type", "secret"),
    "Ranges": ("range",),
    "Range": ("begin", "end"),
}
_CHILD_TYPE: Final[Mapping[str, str]] = {
    "resources": "Resource",
    "command": "CommandInfo",
    "uris": "URI",
    "environment": "Environment",
    "variables": "Variable",
    "ranges": "Ranges",
    "range": "Range",
}
_ENUM_FIELDS: Final = frozenset({"type"})
_BYTES_FIELDS: Final = frozenset({"data"})


def _text_scalar(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if name in _ENUM_FIELDS and re.fullmatch(r"[A-Z][A-Z0-9_]*", text):
        return text
    if name in _BYTES_FIELDS:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = text.encode()
    else:
        raw = text.encode()
    escaped = "".join(
        chr(b)
        if 32 <= b < 127 and chr(b) not in "\"\\'"
        else ("\\" + chr(b) if chr(b) in "\"\\'" else f"\\{b:03o}")
        for b in raw
    )
    return f'"{escaped}"'


def _text_message(obj: Mapping[str, Any], kind: str, indent: str) -> list[str]:
    order = _FIELD_ORDER.get(kind, ())
    keys = [k for k in order if k in obj] + [k for k in obj if k not in order]
    lines: list[str] = []
    for key in keys:
        values = obj[key] if isinstance(obj[key], list) else [obj[key]]
        for value in values:
            if isinstance(value, Mapping):
                lines.append(f"{indent}{key} {{")
                lines.extend(_text_message(value, _CHILD_TYPE.get(key, key), indent + "  "))
                lines.append(f"{indent}}}")
            else:
                lines.append(f"{indent}{key}: {_text_scalar(key, value)}")
    return lines


def executor_info_text(executor: Mapping[str, Any]) -> str:
    """An ExecutorInfo in protobuf text format, as ``stringify(ExecutorInfo)`` prints it.

    >>> print(executor_info_text({"executor_id": {"value": "E1"}, "type": "CUSTOM"}), end="")
    executor_id {
      value: "E1"
    }
    type: CUSTOM
    """
    return "".join(line + "\n" for line in _text_message(executor, "ExecutorInfo", ""))


def incompatible_executor_message(existing: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """The TASK_ERROR message for a task whose ExecutorInfo differs from the running one."""
    line = "-" * 60
    return (
        "ExecutorInfo is not compatible with existing ExecutorInfo with same"
        f" ExecutorID.\n{line}\nExisting ExecutorInfo:\n"
        f"{executor_info_text(existing)}\n{line}\nExecutorInfo:\n"
        f"{executor_info_text(new)}\n{line}\n"
    )


def comparable_executor_info(executor: Mapping[str, Any]) -> dict[str, Any]:
    """An ExecutorInfo with protobuf defaults filled in, for Mesos' ``operator==``.

    Mesos compares field values, so an unset ``command.shell`` equals ``true`` and an unset
    ``URI.extract`` equals ``true``; an agent that reports the executor with those filled in
    (as the recorded agent does) must not make the next task's identical ExecutorInfo look
    different to a restarted master.
    """
    out: dict[str, Any] = json.loads(json.dumps(executor))
    out.setdefault("type", "CUSTOM")
    command = out.get("command")
    if isinstance(command, dict):
        command.setdefault("shell", True)
        for uri in command.get("uris") or []:
            if isinstance(uri, dict):
                uri.setdefault("executable", False)
                uri.setdefault("extract", True)
                uri.setdefault("cache", False)
    for resource in out.get("resources") or []:
        if isinstance(resource, dict):
            resource.setdefault("type", "SCALAR")
            resource.pop("role", None)
            resource.setdefault("allocation_info", {"role": DEFAULT_ROLE})
    return out
