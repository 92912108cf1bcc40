"""The manifest: round trip, and strict refusal of anything malformed or unsafe."""

from __future__ import annotations

import json

import pytest

from toil_mesos.deploy._native import is_compatible, is_native
from toil_mesos.deploy.manifest import (
    Manifest,
    ManifestFile,
    ManifestRoot,
    NativeModule,
    RootKind,
)
from toil_mesos.errors import BundleError

SHA = "a" * 64


def sample() -> Manifest:
    return Manifest(
        module="workflow.main",
        python="3.11",
        toil="9.6.0",
        roots=(
            ManifestRoot(name="r0", kind=RootKind.PACKAGE_ROOT, entry="r0", source="/p"),
            ManifestRoot(name="r1", kind=RootKind.EGG, entry="r1/d.egg", source="/e/d.egg"),
            ManifestRoot(name="r2", kind=RootKind.SHARED, entry="/nfs/lib", source="/nfs/lib"),
        ),
        files=(
            ManifestFile(path="r0/workflow/main.py", size=3, sha256=SHA),
            ManifestFile(path="r1/d.egg", size=9, sha256=SHA, executable=True),
        ),
        native=(NativeModule(path="r0/x.so", distribution=None),),
    )


def test_round_trip_is_exact_and_deterministic():
    manifest = sample()
    data = manifest.to_json()
    assert Manifest.from_json(data) == manifest
    assert Manifest.from_json(data).to_json() == data
    assert manifest.total_bytes == 12


def mutate(**changes: object) -> bytes:
    document = json.loads(sample().to_json())
    for key, value in changes.items():
        if "." in key:
            outer, index, inner = key.split(".")
            document[outer][int(index)][inner] = value
        else:
            document[key] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "not a toil-mesos-bundle manifest"),
        (mutate(format="other"), "not a toil-mesos-bundle manifest"),
        (mutate(version=2), "version 2 is not supported"),
        (mutate(python=3.11), "'python' must be a string"),
        (mutate(**{"files.0.size": -1}), "non-negative integer"),
        (mutate(**{"files.0.size": True}), "non-negative integer"),
        (mutate(**{"roots.0.kind": "weird"}), "malformed"),
        (mutate(**{"roots.1.name": "r0"}), "bad or repeated root name"),
        (mutate(**{"roots.0.name": "../r0"}), "bad or repeated root name"),
        (mutate(**{"roots.0.entry": "r1"}), "not inside root"),
        (mutate(**{"roots.2.entry": "relative"}), "needs an absolute path"),
        (mutate(**{"files.0.path": "r0/../../etc/passwd"}), "unsafe file path"),
        (mutate(**{"files.0.path": "/etc/passwd"}), "unsafe file path"),
        (mutate(**{"files.0.path": "r9/x.py"}), "unsafe file path"),
        (mutate(**{"files.0.sha256": "XYZ"}), "bad sha256"),
        (mutate(roots="nope"), "must be a list"),
    ],
)
def test_malformed_manifests_are_refused(data, problem):
    with pytest.raises(BundleError, match=problem):
        Manifest.from_json(data)


@pytest.mark.parametrize(
    ("name", "native", "compatible"),
    [
        ("mod.cpython-311-x86_64-linux-gnu.so", True, True),
        ("mod.cpython-310-x86_64-linux-gnu.so", True, False),
        ("mod.cpython-312-darwin.so", True, False),
        ("mod.abi3.so", True, True),
        ("mod.so", True, True),
        ("libfoo.so.1.2", True, True),
        ("mod.cp311-win_amd64.pyd", True, True),
        ("mod.cp39-win_amd64.pyd", True, False),
        ("mod.pypy39-pp73-x86_64-linux-gnu.so", True, False),
        ("mod.py", False, True),
        ("so.txt", False, True),
    ],
)
def test_native_code_is_recognised_by_name(name, native, compatible):
    assert is_native(name) is native
    assert is_compatible(name, "3.11") is compatible
