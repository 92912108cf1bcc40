#!/usr/bin/env python3
"""Build the toil-mesos appliance image with any Docker-compatible engine.

    python appliance/build_image.py [--tag NAME] [--base-image IMAGE] [--slim]
                                    [--mesos-package FILE]...

The build runs offline: this script makes the build context on the host (the Dockerfile, a
wheelhouse of this checkout and its dependencies made with ``pip wheel``, and the Mesos
packages given), then asks the engine at ``DOCKER_HOST`` to build it through the Docker API
(the ``docker`` package, which Toil already depends on).

The image carries Toil's ``cwl`` and ``wdl`` extras, so agents run ``toil-cwl-runner`` and
``toil-wdl-runner`` jobs (CWL's JavaScript needs the base image's ``node``); ``--slim`` (the
build argument ``TOIL_EXTRAS`` set empty) leaves them out.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import docker

logger = logging.getLogger("appliance.build")

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
DEFAULT_TAG = "toil-mesos-appliance:dev"
DEFAULT_BASE_IMAGE = "toil-mesos-base:bookworm"
#: Toil's extras the image carries by default: the CWL and WDL runners.
DEFAULT_EXTRAS = ("cwl", "wdl")
# Wheels of this checkout are made with fixed timestamps, so an unchanged checkout gives
# identical bytes and the engine's layer cache holds.
SOURCE_DATE_EPOCH = "1700000000"


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    id: str


def make_context(
    context: Path, *, mesos_packages: Sequence[Path] = (), extras: Sequence[str] = DEFAULT_EXTRAS
) -> Path:
    """Lay out the build context in *context* (emptied first) and return it.

    The wheelhouse holds this checkout's wheel and every dependency, with Toil's *extras*;
    ``wheelhouse/deps/requirements.txt`` names what the image installs from it before this
    project, so that layer is cached while only this project changes.
    """
    if context.exists():
        shutil.rmtree(context)
    deps = context / "wheelhouse" / "deps"
    project = context / "wheelhouse" / "project"
    mesos = context / "mesos"
    for directory in (deps, project, mesos):
        directory.mkdir(parents=True)
    shutil.copy2(HERE / "Dockerfile", context / "Dockerfile")
    (mesos / "README").write_text("Mesos packages supplied at build time go here.\n")
    for package in mesos_packages:
        if not package.is_file():
            raise SystemExit(f"build_image.py: error: --mesos-package {package}: no such file")
        if not package.name.endswith((".deb", ".tar.gz", ".tgz", ".tar.xz")):
            raise SystemExit(
                f"build_image.py: error: --mesos-package {package}: expected a .deb or a "
                ".tar.gz/.tgz/.tar.xz of an installed tree"
            )
        shutil.copy2(package, mesos / package.name)
    wheels = context / "wheels.partial"
    env = {
        **os.environ,
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    requirements = project_requirements()
    toil = next(r for r in requirements if r.startswith("toil"))
    with_extras = [f"toil[{','.join(extras)}]{toil[len('toil'):]}"] if extras else []
    logger.info("making the wheelhouse with pip wheel%s",
                f" (Toil with {', '.join(extras)})" if extras else "")
    made = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels),
         str(PROJECT), *with_extras],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        raise SystemExit(f"build_image.py: error: pip wheel failed:\n{made.stdout}{made.stderr}")
    for wheel in sorted(wheels.glob("*.whl")):
        target = project if wheel.name.startswith("toil_mesos-") else deps
        wheel.rename(target / wheel.name)
    wheels.rmdir()
    if not any(project.iterdir()):
        raise SystemExit("build_image.py: error: pip wheel made no toil_mesos wheel")
    (deps / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return context


def project_requirements() -> list[str]:
    """This project's runtime requirements, as its ``pyproject.toml`` states them."""
    with (PROJECT / "pyproject.toml").open("rb") as file:
        return list(tomllib.load(file)["project"]["dependencies"])


def build_image(
    client: docker.DockerClient,
    *,
    tag: str = DEFAULT_TAG,
    base_image: str = DEFAULT_BASE_IMAGE,
    mesos_packages: Sequence[Path] = (),
    context: Path | None = None,
    extras: Sequence[str] = DEFAULT_EXTRAS,
) -> BuiltImage:
    """Make the context and build the image; the engine's layer cache makes rebuilds quick.

    *extras* are Toil's extras to install (empty for a slim image without the runners).
    """
    context = make_context(
        context or PROJECT / "build" / "appliance-context", mesos_packages=mesos_packages,
        extras=extras,
    )
    try:
        client.images.get(base_image)
    except docker.errors.ImageNotFound:
        raise SystemExit(
            f"build_image.py: error: the base image {base_image} is not in the engine; "
            "make it with `appliance/dev-engine up` or name another with --base-image"
        ) from None
    logger.info("building %s from %s", tag, base_image)
    try:
        image, log = client.images.build(
            path=str(context),
            tag=tag,
            buildargs={"BASE_IMAGE": base_image, "IMAGE_NAME": tag,
                       "TOIL_EXTRAS": ",".join(extras)},
            rm=True,
            forcerm=True,
            pull=False,
        )
    except docker.errors.BuildError as exc:
        output = "".join(str(chunk.get("stream", "")) for chunk in exc.build_log)
        raise SystemExit(
            f"build_image.py: error: the image build failed: {exc}\n{output}"
        ) from None
    for chunk in log:
        if "stream" in chunk:
            logger.debug("%s", str(chunk["stream"]).rstrip())
    return BuiltImage(tag=tag, id=str(image.id))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default=DEFAULT_TAG, help="image name (default: %(default)s)")
    parser.add_argument(
        "--base-image", default=DEFAULT_BASE_IMAGE,
        help="a Debian-like image with python3, python3-venv and python3-pip "
        "(default: %(default)s, made by appliance/dev-engine up)",
    )
    parser.add_argument(
        "--mesos-package", action="append", default=[], type=Path, metavar="FILE",
        help="real Mesos to install: a .deb, or a tarball of an installed tree (repeatable)",
    )
    parser.add_argument(
        "--slim", action="store_true",
        help="leave out Toil's cwl and wdl extras (toil-cwl-runner, toil-wdl-runner)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the build log")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(name)s: %(message)s"
    )
    client = docker.from_env()
    built = build_image(
        client, tag=args.tag, base_image=args.base_image, mesos_packages=args.mesos_package,
        extras=() if args.slim else DEFAULT_EXTRAS,
    )
    sys.stdout.write(f"{built.tag} {built.id}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
