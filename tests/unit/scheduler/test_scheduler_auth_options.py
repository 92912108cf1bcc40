"""--mesosEndpoint forms, --mesosPrincipal/--mesosSecretFile and --mesosCACert as read by the
batch system: clear errors naming the option, and the secret in no repr or message."""

from __future__ import annotations

import threading
import time
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


def test_launched_tasks_are_reconciled_after_a_resubscription(monkeypatch):  # type: ignore[no-untyped-def]
    """After re-registering with a (new) master, the batch system asks about every task it
    launched, once the agents had time to re-register; a second re-registration meanwhile
    postpones the question instead of asking twice."""
    from scheduler_fakes import RecordingDriver, job, offer, running

    from toil_mesos.scheduler import _callbacks

    class ReconcilingDriver(RecordingDriver):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.reconciled = threading.Event()

        def reconcileTasks(self, tasks: Any) -> None:
            super().reconcileTasks(tasks)
            self.reconciled.set()

    monkeypatch.setattr(_callbacks, "RECONCILE_AFTER_RESUBSCRIBE", 0.2)
    with running(driver=ReconcilingDriver) as system:
        driver = system._driver
        system.issueBatchJob("echo a", job("a", cores=0.5))
        system.issueBatchJob("echo b", job("b", cores=0.5))
        driver.scheduler.resourceOffers(driver, [offer("a7")])
        launched = driver.launched()
        assert len(launched) == 2
        driver.scheduler.reregistered(driver, {})
        driver.scheduler.reregistered(driver, {})
        assert not driver.reconciled.is_set()  # not at once: agents are still re-registering
        assert driver.reconciled.wait(5)
        time.sleep(0.4)
        reconciles = driver.reconciles()
        assert len(reconciles) == 1
        assert sorted(t["task_id"]["value"] for t in reconciles[0]) == sorted(
            t["task_id"]["value"] for t in launched
        )
        assert all(t["agent_id"] == {"value": "a7"} for t in reconciles[0])
