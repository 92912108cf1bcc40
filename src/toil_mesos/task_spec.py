"""What the scheduler tells the executor about one Toil job: versioned JSON in ``TaskInfo.data``.

Toil's own Mesos batch system pickled its job objects into the task data, so an executor ran
whatever a master relayed to it. Here the data is plain JSON, validated into a frozen dataclass
before anything runs; the executor never evaluates what it receives.

Optional fields added later are read as null when a document lacks them, and readers ignore
keys they do not know, so such fields need no new version: leaders and executors on either
side of the change still understand each other (the newer side just skips the new check).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from toil_mesos.deploy.manifest import is_sha256

__all__ = ["TASK_SPEC_VERSION", "TaskSpec", "TaskSpecError"]

TASK_SPEC_VERSION = 1
_FORMAT = "toil-mesos-task"


class TaskSpecError(ValueError):
    """Task data that is not a task spec this executor understands."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """One job: the worker command, its environment, and the bundle that must be staged first."""

    job_id: int
    #: Toil's worker command line, as Toil gave it to the batch system.
    command: str
    environment: Mapping[str, str] = field(default_factory=dict)
    #: The bundle to stage before running; None when nothing ships (shared filesystem mode).
    bundle_sha256: str | None = None
    #: The leader's Python (major.minor) and Toil versions, which the worker must match.
    python: str = ""
    toil: str | None = None
    #: Toil's ``WorkerCleanupInfo`` fields (work_dir, coordination_dir, workflow_id,
    #: clean_work_dir), for the end-of-node cleanup the executor runs when it shuts down.
    cleanup: Mapping[str, str | None] | None = None
    #: The appliance image the leader expects the agents to run (its ``TOIL_MESOS_APPLIANCE``);
    #: None when the leader does not say. Optional in the JSON: older leaders leave it out.
    appliance: str | None = None
    version: int = TASK_SPEC_VERSION

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": _FORMAT,
                "version": self.version,
                "job_id": self.job_id,
                "command": self.command,
                "environment": dict(sorted(self.environment.items())),
                "bundle_sha256": self.bundle_sha256,
                "python": self.python,
                "toil": self.toil,
                "cleanup": None if self.cleanup is None else dict(self.cleanup),
                "appliance": self.appliance,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TaskSpec:
        """Parse and validate task data.

        >>> spec = TaskSpec(job_id=1, command="true", python="3.11", appliance="toil-mesos:1")
        >>> TaskSpec.from_json(spec.to_json()) == spec
        True
        >>> older = spec.to_json().replace(b',"appliance":"toil-mesos:1"', b"")
        >>> b"appliance" in older, TaskSpec.from_json(older).appliance is None
        (False, True)

        :raises TaskSpecError: not JSON, another format or version, a missing or mistyped field.
        """
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TaskSpecError(f"task data is not JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise TaskSpecError("task data is not a toil-mesos task spec")
        if document.get("version") != TASK_SPEC_VERSION:
            raise TaskSpecError(
                f"task spec version {document.get('version')!r} is not supported by this "
                f"executor (it reads version {TASK_SPEC_VERSION}); use the same toil-mesos "
                "version on the leader and in the appliance"
            )
        job_id = document.get("job_id")
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            raise TaskSpecError(f"task spec job_id must be an integer, not {job_id!r}")
        environment = document.get("environment", {})
        if not isinstance(environment, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in environment.items()
        ):
            raise TaskSpecError("task spec environment must map strings to strings")
        bundle = document.get("bundle_sha256")
        if bundle is not None and (not isinstance(bundle, str) or not is_sha256(bundle)):
            raise TaskSpecError(f"task spec bundle_sha256 is not a sha256: {bundle!r}")
        return cls(
            job_id=job_id,
            command=_str(document, "command"),
            environment=environment,
            bundle_sha256=bundle,
            python=_str(document, "python"),
            toil=_opt_str(document, "toil"),
            cleanup=_cleanup(document.get("cleanup")),
            appliance=_opt_str(document, "appliance"),
        )


_CLEANUP_FIELDS = ("work_dir", "coordination_dir", "workflow_id", "clean_work_dir")


def _cleanup(value: Any) -> dict[str, str | None] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != set(_CLEANUP_FIELDS)
        or not all(v is None or isinstance(v, str) for v in value.values())
        or not isinstance(value.get("workflow_id"), str)
    ):
        raise TaskSpecError(
            f"task spec cleanup must give {', '.join(_CLEANUP_FIELDS)} as strings "
            f"(work_dir and coordination_dir may be null), not {value!r}"
        )
    return dict(value)


def _str(document: dict[str, Any], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value:
        raise TaskSpecError(f"task spec {key!r} must be a non-empty string, not {value!r}")
    return value


def _opt_str(document: dict[str, Any], key: str) -> str | None:
    """The string at *key*; None when it is null or absent (a field older writers lack)."""
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise TaskSpecError(f"task spec {key!r} must be a string or null, not {value!r}")
    return value
