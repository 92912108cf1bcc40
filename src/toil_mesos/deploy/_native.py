"""Recognise native code among the files to ship.

Compiled extension modules run only on the platform and Python they were built for. Workers run
the leader's Python version (the executor checks it), so an extension tagged for another version
can never load there and is always refused; other native files are shipped or refused by policy.
"""

from __future__ import annotations

import re

__all__ = ["is_compatible", "is_native"]

_NATIVE_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")
_CPYTHON_TAG = re.compile(r"\.(?:cpython-|cp)(\d)(\d+)")
_OTHER_IMPLEMENTATION_TAG = re.compile(r"\.(?:pypy|graalpy)[\w-]*\.(?:so|pyd)$")


def is_native(name: str) -> bool:
    """Whether a file name is a compiled extension module or shared library.

    >>> [is_native(n) for n in ("a.cpython-311-x86_64-linux-gnu.so", "libz.so.1", "a.py")]
    [True, True, False]
    """
    return name.endswith(_NATIVE_SUFFIXES) or ".so." in name


def is_compatible(name: str, python_version: str) -> bool:
    """Whether an extension's file name allows it to load on *python_version* ("3.11").

    Untagged files and the stable ABI (``.abi3.so``) are taken as compatible.

    >>> is_compatible("m.cpython-310-x86_64-linux-gnu.so", "3.11")
    False
    >>> is_compatible("m.abi3.so", "3.11"), is_compatible("m.cpython-311-darwin.so", "3.11")
    (True, True)
    """
    if _OTHER_IMPLEMENTATION_TAG.search(name):
        return False
    match = _CPYTHON_TAG.search(name)
    return match is None or f"{match[1]}.{match[2]}" == python_version
