"""Container image references, and the appliance image a leader and its agents must share.

The appliance image sets ``TOIL_MESOS_APPLIANCE`` to its own name in every container, much as
Toil's ``TOIL_APPLIANCE_SELF`` names the image of Toil's own nodes. A leader with that variable
puts the name into each task spec; an executor with it compares that name with its own before
it stages or runs anything, so agents started from another image fail the task with both names
instead of running a worker whose environment differs in ways no version number shows.

The same image can be written several ways: Podman names local builds ``localhost/NAME``,
Docker Hub images may carry ``docker.io/`` or ``docker.io/library/``, and a missing tag means
``latest``. :func:`normalize_image` removes those differences, and nothing else: two names of
different registries, repositories, tags or digests stay different.
"""

from __future__ import annotations

from typing import Final

__all__ = ["APPLIANCE_ENV", "normalize_image", "same_image"]

#: The variable naming the appliance image, on the leader and in every agent's executors.
APPLIANCE_ENV: Final = "TOIL_MESOS_APPLIANCE"

#: Registry prefixes that name the default place of an image; longest first, one is removed.
_DEFAULT_PREFIXES: Final = (
    "index.docker.io/library/",
    "docker.io/library/",
    "index.docker.io/",
    "docker.io/",
    "localhost/",
)


def normalize_image(reference: str) -> str:
    """The canonical spelling of an image reference, for comparing two of them.

    Removes one default-registry prefix (``localhost/``, ``docker.io/library/``,
    ``docker.io/``, ``index.docker.io/library/``, ``index.docker.io/``) and adds ``:latest``
    when there is neither a tag nor a digest. A reference with a digest keeps only the digest,
    which is what Docker pulls.

    >>> normalize_image("localhost/toil-mesos:dev")
    'toil-mesos:dev'
    >>> normalize_image("docker.io/library/python")
    'python:latest'
    >>> normalize_image("docker.io/me/toil-mesos:1.0")
    'me/toil-mesos:1.0'
    >>> normalize_image("registry.example:5000/toil-mesos")
    'registry.example:5000/toil-mesos:latest'
    >>> normalize_image("toil-mesos:1.0@sha256:" + "ab" * 32) == "toil-mesos@sha256:" + "ab" * 32
    True
    """
    name = reference.strip()
    for prefix in _DEFAULT_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    name, at, digest = name.partition("@")
    # A registry's port also has a colon; only the last path component carries the tag.
    head, slash, last = name.rpartition("/")
    if at:
        last = last.partition(":")[0]
        return f"{head}{slash}{last}@{digest}"
    if ":" not in last:
        last += ":latest"
    return f"{head}{slash}{last}"


def same_image(first: str, second: str) -> bool:
    """Whether two references name the same image once normalized.

    >>> same_image("localhost/x:dev", "x:dev"), same_image("x", "docker.io/library/x:latest")
    (True, True)
    >>> same_image("x:dev", "x:1.0"), same_image("quay.io/x:dev", "x:dev")
    (False, False)
    """
    return normalize_image(first) == normalize_image(second)
