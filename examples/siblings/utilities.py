"""A sibling module of userScript.py."""

from __future__ import annotations


def shout(word: str) -> str:
    return word.upper() + "!"
