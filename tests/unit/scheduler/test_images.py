"""Image references: the spellings of one image compare equal, different images never do."""

from __future__ import annotations

import pytest

from toil_mesos.images import normalize_image, same_image

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("toil-mesos:dev", "toil-mesos:dev"),
        ("toil-mesos", "toil-mesos:latest"),
        ("localhost/toil-mesos:dev", "toil-mesos:dev"),
        ("localhost/toil-mesos", "toil-mesos:latest"),
        ("docker.io/library/python:3.11", "python:3.11"),
        ("index.docker.io/library/python", "python:latest"),
        ("docker.io/me/toil-mesos:1.0", "me/toil-mesos:1.0"),
        ("index.docker.io/me/toil-mesos", "me/toil-mesos:latest"),
        ("quay.io/me/toil-mesos", "quay.io/me/toil-mesos:latest"),
        ("localhost:5000/toil-mesos", "localhost:5000/toil-mesos:latest"),
        ("registry.example:5000/a/b:7", "registry.example:5000/a/b:7"),
        (f"toil-mesos@{DIGEST}", f"toil-mesos@{DIGEST}"),
        (f"docker.io/library/toil-mesos:1.0@{DIGEST}", f"toil-mesos@{DIGEST}"),
        (f"localhost:5000/toil-mesos:1.0@{DIGEST}", f"localhost:5000/toil-mesos@{DIGEST}"),
        ("  toil-mesos:dev\n", "toil-mesos:dev"),
    ],
)
def test_normalize_image(reference: str, expected: str) -> None:
    assert normalize_image(reference) == expected
    assert normalize_image(expected) == expected


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("localhost/x:dev", "x:dev"),
        ("x", "x:latest"),
        ("docker.io/library/x", "localhost/x:latest"),
        ("docker.io/me/x:1", "me/x:1"),
        (f"x:1@{DIGEST}", f"x@{DIGEST}"),
    ],
)
def test_spellings_of_one_image_are_the_same(first: str, second: str) -> None:
    assert same_image(first, second) and same_image(second, first)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("x:dev", "x:1.0"),
        ("x:dev", "y:dev"),
        ("quay.io/x:dev", "x:dev"),
        ("localhost:5000/x:dev", "x:dev"),
        ("me/x:dev", "you/x:dev"),
        (f"x@{DIGEST}", "x:latest"),
        ("X:dev", "x:dev"),
    ],
)
def test_different_images_are_not(first: str, second: str) -> None:
    assert not same_image(first, second) and not same_image(second, first)
