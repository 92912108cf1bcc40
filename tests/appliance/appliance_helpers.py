"""A dockerized cluster from the appliance image: one master, agents and a leader.

Every container runs the image's entrypoint in one role, on a private network of its own. The
job store lives on a volume that every container mounts (as NFS would on a real cluster);
the user's project is copied into the leader container only, so agents can reach the user's
code only through the bundle the leader serves.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

logger = logging.getLogger(__name__)

#: Where the socket of `appliance/dev-engine up` is, when DOCKER_HOST is not set.
ENGINE_DIR = Path(os.environ.get("TOIL_MESOS_ENGINE_DIR", "/var/tmp/toil-mesos-engine"))
DEV_ENGINE_SOCKET = ENGINE_DIR / "podman.sock"
LABEL = "io.toil-mesos.test"
JOB_STORES = "/jobstores"
HOME = "/home/user"
VENV = f"{HOME}/venv"
#: Where the appliance's executors stage bundles (TOIL_MESOS_BUNDLE_CACHE in the image).
STAGED = "/var/lib/toil-mesos/bundles/"
RUN_TIMEOUT = 300


def engine_client() -> tuple[docker.DockerClient | None, str]:
    """A client for a reachable engine, or None and the reason there is none."""
    if os.environ.get("DOCKER_HOST"):
        where = os.environ["DOCKER_HOST"]
    elif DEV_ENGINE_SOCKET.exists():
        where = f"unix://{DEV_ENGINE_SOCKET}"
    else:
        where = "unix:///var/run/docker.sock"
    client = None
    try:
        if where.startswith("unix://"):
            # docker's own unix connection leaks its socket when connect() fails.
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(5)
                probe.connect(where[len("unix://"):])
        client = docker.DockerClient(base_url=where, timeout=120)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        if client is not None:
            client.close()
        return None, (
            f"no Docker-compatible engine at {where} ({type(exc).__name__}); start one with "
            "`appliance/dev-engine up` and export the DOCKER_HOST it prints"
        )
    return client, where


@dataclass(frozen=True)
class Run:
    """One command run in a container."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def tail(self, chars: int = 6000) -> str:
        return self.output[-chars:]

    @property
    def reports(self) -> list[dict[str, Any]]:
        lines = self.stdout.splitlines()
        return [json.loads(line[4:]) for line in lines if line.startswith("JOB ")]


def run_in(container: Container, argv: Sequence[str], *, workdir: str = "/",
           environment: Mapping[str, str] | None = None, timeout: float = RUN_TIMEOUT) -> Run:
    """Run *argv* in *container*, bounded by *timeout* seconds (the process is killed after)."""
    # exec has no timeout of its own in the Docker API: `timeout` from coreutils bounds it.
    bounded = ["timeout", "--kill-after=10", str(int(timeout)), *argv]
    result = container.exec_run(bounded, workdir=workdir, environment=dict(environment or {}),
                                demux=True)
    out, err = result.output
    return Run(result.exit_code, (out or b"").decode(errors="replace"),
               (err or b"").decode(errors="replace"))


def put_tree(container: Container, source: Path, target: str) -> None:
    """Copy the directory *source* into *container* as *target* (its parent must exist)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(source, arcname=Path(target).name)
    assert container.put_archive(str(Path(target).parent), buffer.getvalue())


@dataclass
class ApplianceCluster:
    """The containers of one test module; :meth:`close` removes everything it made."""

    client: docker.DockerClient
    image: str
    agents: int = 3
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    containers: dict[str, Container] = field(default_factory=dict)
    network: Any = None
    volume: Any = None

    @property
    def master(self) -> Container:
        return self.containers["master"]

    @property
    def leader(self) -> Container:
        return self.containers["leader"]

    def agent_containers(self) -> list[Container]:
        return [c for name, c in self.containers.items() if name.startswith("agent")]

    def ip(self, container: Container) -> str:
        container.reload()
        return str(container.attrs["NetworkSettings"]["Networks"][self.network.name]["IPAddress"])

    @property
    def endpoint(self) -> str:
        return f"{self.ip(self.master)}:5050"

    def start(self) -> None:
        labels = {LABEL: self.run_id}
        # --internal: nothing in the cluster reaches outside, and the host reaches containers by IP.
        self.network = self.client.networks.create(
            f"toil-mesos-{self.run_id}", driver="bridge", internal=True, labels=labels
        )
        self.volume = self.client.volumes.create(
            f"toil-mesos-jobstores-{self.run_id}", labels=labels
        )
        self._run("master", ["master"])
        endpoint = self.endpoint
        for index in range(self.agents):
            self._run(f"agent{index}", ["agent"], env={"TOIL_MESOS_ENDPOINT": endpoint})
        self._run("leader", ["leader"], env={"TOIL_MESOS_ENDPOINT": endpoint})
        self.wait_for_agents()

    def _run(self, name: str, command: list[str], env: Mapping[str, str] | None = None) -> None:
        container = self.client.containers.run(
            self.image,
            command,
            name=f"toil-mesos-{self.run_id}-{name}",
            hostname=name,
            detach=True,
            # Python is not a good PID 1: a tiny init reaps orphans and forwards signals.
            init=True,
            network=self.network.name,
            environment=dict(env or {}),
            volumes={self.volume.name: {"bind": JOB_STORES, "mode": "rw"}},
            labels={LABEL: self.run_id},
        )
        self.containers[name] = container

    def run_leader(self, command: Sequence[str], *, project: Path, workdir: str,
                   env: Mapping[str, str] | None = None, timeout: float = RUN_TIMEOUT) -> Run:
        """A second leader container, whose role runs *command* and exits with it; *project*
        is copied in before it starts."""
        container = self.client.containers.create(
            self.image,
            ["leader", "--", *command],
            name=f"toil-mesos-{self.run_id}-leader-run",
            detach=True,
            init=True,
            network=self.network.name,
            environment={"TOIL_MESOS_ENDPOINT": self.endpoint, **(env or {})},
            volumes={self.volume.name: {"bind": JOB_STORES, "mode": "rw"}},
            working_dir=workdir,
            labels={LABEL: self.run_id},
        )
        self.containers["leader-run"] = container
        try:
            put_tree(container, project, workdir)
            container.start()
            status = container.wait(timeout=timeout)
            stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
            stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
            return Run(int(status["StatusCode"]), stdout, stderr)
        finally:
            container.remove(force=True)
            del self.containers["leader-run"]

    def master_state(self) -> dict[str, Any]:
        url = f"http://{self.endpoint}/state"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def wait_for_agents(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if len(self.master_state()["slaves"]) == self.agents:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.agents} agents did not register:\n{self.logs()}")
            time.sleep(0.25)

    def agent_hosts(self) -> dict[str, str]:
        """Agent id -> the container IP the agent advertises."""
        return {a["id"]: a["hostname"] for a in self.master_state()["slaves"]}

    def logs(self, names: Iterable[str] | None = None) -> str:
        lines = []
        for name in names or self.containers:
            try:
                text = self.containers[name].logs(tail=40).decode(errors="replace")
            except docker.errors.APIError as exc:
                text = f"(no logs: {exc})"
            lines.append(f"--- {name}\n{text}")
        return "\n".join(lines)

    def close(self) -> None:
        for container in self.containers.values():
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        if self.network is not None:
            self.network.remove()
        if self.volume is not None:
            self.volume.remove(force=True)
