"""--mesosEndpoint forms, --mesosPrincipal/--mesosSecretFile and --mesosCACert as read by the
batch system: clear errors naming the option, and the secret in no repr or message."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from toil_mesos.errors import MesosError
from toil_mesos.mesos import BadMasterSpec
from toil_mesos.mesos._master_spec import MasterList, ZooKeeperMasters
from toil_mesos.scheduler.options import MesosOptions, read_credentials

SECRET = "s3cret-for-tests"


def _config(**values: Any) -> SimpleNamespace:
    return SimpleNamespace(mesos_user="toil", **values)


def test_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    options = MesosOptions.from_config(
        _config(mesos_principal="toil", mesos_secret_file=str(secret))
    )
    assert options.credentials is not None
    assert options.credentials.principal == "toil"
    assert options.credentials.headers() == {
        "Authorization": "Basic dG9pbDpzM2NyZXQtZm9yLXRlc3Rz"  # the auth/ transcript's header
    }
    assert SECRET not in repr(options) and SECRET not in str(options.credentials)


@pytest.mark.parametrize(
    ("principal", "content", "expected"),
    [
        ("toil", None, "go together"),
        (None, SECRET, "go together"),
        ("toil", "", "is empty"),
        ("to:il", SECRET, "--mesosPrincipal"),
    ],
)
def test_bad_credentials(
    tmp_path: Path, principal: str | None, content: str | None, expected: str
) -> None:
    path: str | None = None
    if content is not None:
        (tmp_path / "secret").write_text(content)
        path = str(tmp_path / "secret")
    with pytest.raises(MesosError, match=expected) as caught:
        read_credentials(principal, path)
    assert SECRET not in str(caught.value)


def test_unreadable_secret_file(tmp_path: Path) -> None:
    with pytest.raises(MesosError, match=r"--mesosSecretFile .*cannot read"):
        read_credentials("toil", str(tmp_path / "missing"))


def test_no_credentials() -> None:
    assert read_credentials(None, None) is None


def test_endpoint_forms_and_route_target() -> None:
    zk = MesosOptions.from_config(_config(mesos_endpoint="zk://10.0.0.5:2181,z2/mesos"))
    assert isinstance(zk.masters, ZooKeeperMasters)
    assert zk.route_target == "10.0.0.5:2181"
    listed = MesosOptions.from_config(_config(mesos_endpoint="https://m1:5050,m2:5051"))
    assert listed.masters == MasterList(("https://m1:5050", "http://m2:5051"))
    assert listed.route_target == "m1:5050"
    with pytest.raises(BadMasterSpec, match="--mesosEndpoint"):
        MesosOptions.from_config(_config(mesos_endpoint="zk://z1:2181"))


def test_missing_ca_cert(tmp_path: Path) -> None:
    with pytest.raises(MesosError, match="--mesosCACert"):
        MesosOptions.from_config(_config(mesos_ca_cert=str(tmp_path / "nope.pem")))
