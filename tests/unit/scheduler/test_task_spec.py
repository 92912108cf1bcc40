"""The task spec: JSON round trip and strict refusal of anything else."""

from __future__ import annotations

import json

import pytest

from toil_mesos.task_spec import TaskSpec, TaskSpecError

SPEC = TaskSpec(
    job_id=7,
    command="_toil_worker j file:/js kind-x",
    environment={"B": "2", "A": "1"},
    bundle_sha256="b" * 64,
    python="3.11",
    toil="9.6.0",
    cleanup={"work_dir": None, "coordination_dir": None, "workflow_id": "wf",
             "clean_work_dir": "always"},
    appliance="quay.io/me/toil-mesos:1.0",
)


def test_round_trip():
    data = SPEC.to_json()
    assert TaskSpec.from_json(data) == SPEC
    assert b"pickle" not in data and json.loads(data)["environment"] == {"A": "1", "B": "2"}


def mutated(**changes: object) -> bytes:
    document = json.loads(SPEC.to_json())
    document.update(changes)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x80\x04\x95", "not JSON"),
        (b"{}", "not a toil-mesos task spec"),
        (mutated(version=2), "version 2 is not supported"),
        (mutated(job_id="7"), "job_id must be an integer"),
        (mutated(job_id=True), "job_id must be an integer"),
        (mutated(command=""), "'command' must be a non-empty string"),
        (mutated(environment={"A": 1}), "environment must map strings to strings"),
        (mutated(bundle_sha256="../x"), "bundle_sha256 is not a sha256"),
        (mutated(toil=9), "'toil' must be a string or null"),
        (mutated(appliance=["x:dev"]), "'appliance' must be a string or null"),
        (mutated(cleanup={"workflow_id": "wf"}), "cleanup must give work_dir"),
        (mutated(cleanup={"work_dir": None, "coordination_dir": None, "workflow_id": None,
                          "clean_work_dir": "always"}), "cleanup must give"),
    ],
)
def test_bad_task_data_is_refused(data, problem):
    with pytest.raises(TaskSpecError, match=problem):
        TaskSpec.from_json(data)


def test_no_bundle_is_allowed_for_shared_filesystems():
    spec = TaskSpec(job_id=1, command="true", python="3.11")
    assert TaskSpec.from_json(spec.to_json()).bundle_sha256 is None


def test_the_appliance_is_optional_and_null_by_default():
    spec = TaskSpec(job_id=1, command="true", python="3.11")
    assert spec.appliance is None and json.loads(spec.to_json())["appliance"] is None
    assert TaskSpec.from_json(spec.to_json()) == spec


def test_task_data_without_the_appliance_key_is_still_version_1():
    """Leaders from before the field existed write no ``appliance``; their tasks still run."""
    document = json.loads(SPEC.to_json())
    del document["appliance"]
    assert document["version"] == 1
    parsed = TaskSpec.from_json(json.dumps(document).encode())
    assert parsed.appliance is None and parsed.job_id == SPEC.job_id


def test_readers_ignore_keys_they_do_not_know():
    """What lets an optional field be added without a new version, in either direction."""
    data = mutated(later_field={"anything": 1})
    assert TaskSpec.from_json(data) == SPEC
