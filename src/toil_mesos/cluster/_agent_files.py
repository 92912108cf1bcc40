"""``/files/read`` and ``/files/browse``: the executors' sandboxes, as the agent serves them.

Paths are real paths under the work dir or Mesos' virtual ones
(``[/slaves/<aid>]/frameworks/<fid>/executors/<eid>/runs/<run>/...``, ``<run>`` a container
id or ``latest``); anything resolving outside the work dir (through ``..`` or links) is
refused. Answers are :class:`FilesAnswer` values, written out by ``_agent_http``.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toil_mesos.cluster._agent_model import AgentCore

__all__ = ["FilesAnswer", "SandboxFiles"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FilesAnswer:
    """200 with a JSON *body*, or an error *status* with a ``text/plain`` *error*."""

    status: int = 200
    body: Any = None
    error: str = ""


_NOT_FOUND = FilesAnswer(status=404)


class SandboxFiles:
    """Reads and lists files under the agent's work dir."""

    def __init__(self, core: AgentCore) -> None:
        self._core = core

    def resolve(self, path: str) -> Path | None:
        """Map a real or virtual ``/files`` path to a real path under the work dir."""
        if not path:
            return None
        core = self._core
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "slaves" and parts[1] == core.agent_id:
            parts = parts[2:]
        real: Path | None = None
        if (
            len(parts) >= 6
            and parts[0] == "frameworks"
            and parts[2] == "executors"
            and parts[4] == "runs"
        ):
            with core.cond:
                executor = core.latest_run.get((parts[1], parts[3]))
            if executor is not None:
                container = executor.container_id if parts[5] == "latest" else parts[5]
                real = executor.sandbox.parent.joinpath(container, *parts[6:])
        if real is None:
            real = Path(path)
        try:
            resolved = real.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        root = core.config.work_dir.resolve()
        if resolved != root and root not in resolved.parents:
            return None
        return resolved

    def read(self, query: dict[str, list[str]]) -> FilesAnswer:
        """``/files/read``: up to 16 pages of a file from ``offset``."""
        path = (query.get("path") or [""])[0]
        if not path:
            return FilesAnswer(status=400, error="Expecting 'path' to be present")
        try:
            offset = int((query.get("offset") or ["0"])[0])
            length_values = query.get("length")
            length = int(length_values[0]) if length_values else None
        except ValueError:
            return FilesAnswer(status=400, error="Failed to parse offset or length")
        resolved = self.resolve(path)
        if resolved is None:
            return _NOT_FOUND
        if resolved.is_dir():
            return FilesAnswer(status=400, error="Cannot read a directory")
        size = resolved.stat().st_size
        if offset == -1:
            return FilesAnswer(body={"data": "", "offset": size})
        if offset < 0:
            return FilesAnswer(status=400, error="Negative offset provided")
        # Mesos caps one read at 16 pages (src/files/files.cpp).
        cap = 16 * os.sysconf("SC_PAGESIZE")
        count = cap if length is None or length < 0 else min(length, cap)
        with open(resolved, "rb") as file:
            file.seek(offset)
            data = file.read(count)
        return FilesAnswer(body={"data": data.decode("utf-8", errors="replace"), "offset": offset})

    def browse(self, query: dict[str, list[str]]) -> FilesAnswer:
        """``/files/browse``: a directory's entries (or one file's) as ``ls -l`` would."""
        path = (query.get("path") or [""])[0]
        resolved = self.resolve(path)
        if resolved is None:
            return _NOT_FOUND
        entries = sorted(resolved.iterdir()) if resolved.is_dir() else [resolved]
        listing = []
        for entry in entries:
            try:
                info = entry.lstat()
            except OSError:
                continue
            shown = path.rstrip("/") + "/" + entry.name if resolved.is_dir() else path
            listing.append(
                {
                    "gid": _group_name(info.st_gid),
                    "mode": stat.filemode(info.st_mode),
                    "mtime": float(int(info.st_mtime)),
                    "nlink": info.st_nlink,
                    "path": shown,
                    "size": info.st_size,
                    "uid": _user_name(info.st_uid),
                }
            )
        return FilesAnswer(body=listing)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
