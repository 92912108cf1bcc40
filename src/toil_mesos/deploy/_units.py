"""Byte counts for people: error messages name sizes the way ``ls -h`` does."""

from __future__ import annotations

__all__ = ["human_size"]


def human_size(size: int) -> str:
    """Format a byte count with a binary unit.

    >>> human_size(512), human_size(1536), human_size(100 * 1024 * 1024)
    ('512 B', '1.5 KiB', '100.0 MiB')
    """
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
