"""Toil's test package applies markers of its own when imported (``toil/test/__init__.py``);
with ``--strict-markers`` each must be registered before Toil's generic suite is imported."""

from __future__ import annotations

import pytest

TOIL_TEST_MARKERS = [
    "appliance",
    "aws_batch",
    "aws_ec2",
    "aws_s3",
    "celery",
    "cwl",
    "docker",
    "docker_cuda",
    "encryption",
    "fetchable_appliance",
    "google_project",
    "google_storage",
    "gridengine",
    "htcondor",
    "integrative",
    "java",
    "kubernetes",
    "local_cuda",
    "lsf",
    "mesos",
    "online",
    "rsync",
    "server_mode",
    "singularity",
    "slow",
    "slurm",
    "stubserver",
    "torque",
    "wdl",
    "wes_server",
]


def pytest_configure(config: pytest.Config) -> None:
    for name in TOIL_TEST_MARKERS:
        config.addinivalue_line("markers", f"{name}: a marker of Toil's own test suite")
