"""What ships for a workflow: the bundle, built once before the first job, and its server.

Everything the batch system does with the bundle server is here, so a change in how bundles
are served touches one module. The build has a lock of its own: holding the scheduler's lock for
seconds would stall the driver's callbacks (offers, updates) meanwhile.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toil_mesos.deploy import UserModule, build, contents_to_ship, user_module_of
from toil_mesos.deploy._environment import PythonEnvironment
from toil_mesos.deploy.scan import Contents
from toil_mesos.errors import BundleError
from toil_mesos.scheduler.bundle_server import BundleServer, load_url_key
from toil_mesos.scheduler.options import MesosOptions

__all__ = ["Deployer", "Deployment", "default_bundle_dir"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Deployment:
    """What ships for this workflow: the bundle (None when nothing ships) and its contents."""

    sha256: str | None
    url: str | None
    contents: Contents | None


NOTHING_SHIPS = Deployment(None, None, None)


class Deployer:
    """Builds and serves the workflow's bundle once; explains jobs the bundle does not cover."""

    def __init__(self, options: MesosOptions, *, auto_deploy: bool, bundle_dir: Path,
                 environment: PythonEnvironment | None) -> None:
        self._options = options
        self._auto_deploy = auto_deploy
        self._bundle_dir = bundle_dir
        self._python_environment = environment
        self._lock = threading.Lock()
        self._server: BundleServer | None = None
        #: Set once; read without the lock by the driver's thread.
        self.deployment: Deployment | None = None

    def deploy(self, job_desc: Any) -> Deployment:
        """The deployment, built and served at the first call; a failure stops the workflow."""
        deployment = self.deployment
        if deployment is not None:
            return deployment
        with self._lock:
            if self.deployment is None:
                self.deployment = self._build_and_serve(job_desc)
            return self.deployment

    def fetch_failure(self, hostname: str | None, message: str) -> BundleError:
        """The error that stops the workflow when an agent could not fetch the bundle."""
        url = self.deployment.url if self.deployment else None
        server = url.split("/bundles/")[0] if url else "this leader"
        return BundleError(
            f"the agent on {hostname} could not fetch the workflow's code from "
            f"{server}: {message}. Set --mesosBundleAddress (or "
            "TOIL_MESOS_BUNDLE_ADDRESS) to an address and port of this leader that the "
            "agents can reach."
        )

    def uncovered_module(self, job_desc: Any, deployment: Deployment) -> str | None:
        """Why the bundle cannot run this job (its module did not ship), or None."""
        name = _module_name_of(job_desc)
        if name is None or deployment.sha256 is None or deployment.contents is None:
            return None
        if deployment.contents.ships_module(name):
            return None
        return (f"the job's module {name!r} is not in the workflow's bundle (it was not "
                "under any root the leader shipped); run the workflow so that every job's "
                "module ships with it, e.g. `python -m` from the project root")

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _build_and_serve(self, job_desc: Any) -> Deployment:
        if not self._auto_deploy:
            logger.info("auto-deployment is disabled: the workflow's code must already be "
                        "importable on every agent")
            return NOTHING_SHIPS
        module = user_module_of(sys.modules["__main__"]) or _module_of(job_desc)
        try:
            contents = contents_to_ship(module, environment=self._python_environment,
                                        options=self._options.deploy)
            if contents is None:
                return NOTHING_SHIPS
            bundle = build(contents, self._bundle_dir)
        except BundleError as exc:
            raise BundleError(
                f"{exc}\nNo job of this workflow has run. Fix the problem, then run the "
                "same command with --restart (the job store is kept), or `toil clean` the "
                "job store and run it again."
            ) from None
        host, port = self._bundle_endpoint()
        self._server = BundleServer(host, port, key=load_url_key())
        self._server.add(bundle.path)
        url = self._server.url(bundle.sha256, host=self._advertised_host(host))
        logger.info(
            "shipping the workflow's code to the agents: bundle %s (%d roots, %d files, "
            "%d bytes) from %s",
            bundle.sha256[:12], len(contents.roots), len(contents.files),
            contents.total_bytes, url.split("/bundles/")[0],
        )
        return Deployment(bundle.sha256, url, contents)

    def _bundle_endpoint(self) -> tuple[str, int]:
        address = self._options.bundle_address
        if address:
            _, _, port = address.rpartition(":") if ":" in address else (address, "", "0")
            return "0.0.0.0", int(port or 0)
        return _route_to(self._options.route_target), 0

    def _advertised_host(self, bound: str) -> str:
        address = self._options.bundle_address
        if address:
            host = address.rpartition(":")[0] if ":" in address else address
            return host or _route_to(self._options.endpoint)  # ":PORT" pins only the port
        return bound


def default_bundle_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "toil-mesos" / "builds"


def _module_name_of(job_desc: Any) -> str | None:
    """The name of the user module a job was defined in (None for Toil's own and bodiless)."""
    has_body = getattr(job_desc, "has_body", None)
    if has_body is None or not has_body():
        return None
    name = str(job_desc.get_body()[1].name)
    return None if name == "toil" or name.startswith("toil.") else name


def _module_of(job_desc: Any) -> UserModule | None:
    """The user module a job was defined in, from Toil's record of it (None for Toil's own)."""
    has_body = getattr(job_desc, "has_body", None)
    if has_body is None or not has_body():
        return None
    descriptor = job_desc.get_body()[1]
    name = str(descriptor.name)
    if name == "toil" or name.startswith("toil."):
        return None
    base = Path(descriptor.dirPath).joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            mode = "module" if "." in name else "script"
            return UserModule(name, candidate, mode)  # type: ignore[arg-type]
    return None


def _route_to(endpoint: str) -> str:
    """This host's address on its route to the master (no packet is sent)."""
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host or endpoint, int(port or 5050)))
            return str(probe.getsockname()[0])
    except OSError as exc:
        raise BundleError(
            f"cannot find this leader's address on its route to the Mesos master {endpoint!r} "
            f"({exc.strerror or exc}); check --mesosEndpoint, or set --mesosBundleAddress"
        ) from None
