"""The appliance image and a dockerized cluster made from it, shared by this directory's tests.

These tests need a Docker-compatible engine (`appliance/dev-engine up` makes one with podman).
Without one they skip, saying why; with ``TOIL_MESOS_REQUIRE_ENGINE=1`` (as CI sets) they fail
instead, so a broken engine cannot pass for a green run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import docker
import pytest
from appliance_helpers import ApplianceCluster, engine_client
from build_image import DEFAULT_BASE_IMAGE, build_image

IMAGE = os.environ.get("TOIL_MESOS_TEST_IMAGE", "toil-mesos-appliance:test")
_TIMINGS = pytest.StashKey[dict[str, float]]()


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    client, reason = engine_client()
    if client is None:
        if os.environ.get("TOIL_MESOS_REQUIRE_ENGINE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def appliance_image(engine: docker.DockerClient, request: pytest.FixtureRequest) -> str:
    """The image built from this checkout (the engine's layer cache makes a rebuild quick)."""
    started = time.monotonic()
    base = os.environ.get("TOIL_MESOS_BASE_IMAGE", DEFAULT_BASE_IMAGE)
    built = build_image(engine, tag=IMAGE, base_image=base)
    _timings(request)["image built"] = time.monotonic() - started
    return built.tag


@pytest.fixture(scope="module")
def appliance_cluster(
    engine: docker.DockerClient, appliance_image: str, request: pytest.FixtureRequest
) -> Iterator[ApplianceCluster]:
    cluster = ApplianceCluster(engine, appliance_image, agents=3)
    started = time.monotonic()
    try:
        cluster.start()
        _timings(request)["cluster up"] = time.monotonic() - started
        yield cluster
    finally:
        cluster.close()
        _timings(request)["tests with the cluster"] = time.monotonic() - started


def _timings(request: pytest.FixtureRequest) -> dict[str, float]:
    return request.config.stash.setdefault(_TIMINGS, {})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    timings = terminalreporter.config.stash.get(_TIMINGS, None)
    if timings:
        terminalreporter.write_sep("-", "appliance summary")
        parts = [f"{name} in {seconds:.1f} s" for name, seconds in timings.items()]
        terminalreporter.write_line("appliance: " + "; ".join(parts))
