"""The batch system's command-line options, with Toil's names kept for the ones Toil had.

Toil adds every registered batch system's options to one parser, keyed by batch system name;
this project registers under ``mesos`` (replacing Toil's built-in, which cannot load on Python
3.11+), so these are the only ``--mesos*`` options and existing command lines keep working.
Every option reads an environment variable too, named in its help.

One more variable is no option: ``TOIL_MESOS_APPLIANCE``, the appliance image the agents must
run. The appliance image sets it in every container; a leader that has it puts it in each
task, and an executor whose own ``TOIL_MESOS_APPLIANCE`` names another image fails the task
before running anything, naming both (see :mod:`toil_mesos.images`). Unset or empty on
either side, nothing is checked.
"""

from __future__ import annotations

import getpass
import os
from argparse import ArgumentParser, BooleanOptionalAction, _ArgumentGroup
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toil_mesos.deploy.options import DEFAULT_MAX_BYTES, DeployOptions, NativePolicy
from toil_mesos.errors import MesosError
from toil_mesos.mesos import Credentials, MasterSpec, parse_master_spec
from toil_mesos.mesos._master_spec import ZooKeeperMasters
from toil_mesos.scheduler._carving import check_role

__all__ = ["MesosOptions", "add_options", "read_credentials", "set_options"]

DEFAULT_ENDPOINT = "localhost:5050"
DEFAULT_EXECUTOR = "toil-mesos executor"

#: (flags, dest, environment variable, kwargs): one table for the parser, setOptions and docs.
_OPTIONS: list[tuple[tuple[str, ...], str, str, dict[str, Any]]] = [
    (("--mesosEndpoint", "--mesosMaster"), "mesos_endpoint", "TOIL_MESOS_ENDPOINT",
     {"default": DEFAULT_ENDPOINT,
      "help": "the Mesos masters: HOST:PORT, http(s)://HOST:PORT, a comma-separated list of "
              "those, or zk://[USER:PASS@]HOST:PORT[,HOST:PORT...]/PATH"}),
    (("--mesosPrincipal",), "mesos_principal", "TOIL_MESOS_PRINCIPAL",
     {"default": None,
      "help": "the principal the framework authenticates as (HTTP Basic), for masters that "
              "authenticate frameworks; also sets FrameworkInfo.principal"}),
    (("--mesosSecretFile",), "mesos_secret_file", "TOIL_MESOS_SECRET_FILE",
     {"default": None,
      "help": "a file holding the principal's secret (the secret itself is never an option)"}),
    (("--mesosCACert",), "mesos_ca_cert", "TOIL_MESOS_CA_CERT",
     {"default": None,
      "help": "a PEM file of the CAs to trust for https:// masters (default: the system's)"}),
    (("--mesosFrameworkId",), "mesos_framework_id", "TOIL_MESOS_FRAMEWORK_ID",
     {"default": None, "help": "re-use this Mesos framework id"}),
    (("--mesosRole",), "mesos_role", "TOIL_MESOS_ROLE",
     {"default": None, "help": "the Mesos role to register with: jobs then also run on "
      "resources reserved for it (taken first), besides unreserved ones"}),
    (("--mesosName",), "mesos_name", "TOIL_MESOS_NAME",
     {"default": "toil", "help": "the Mesos framework name"}),
    (("--mesosUser",), "mesos_user", "TOIL_MESOS_USER",
     {"default": None, "help": "the user tasks run as (default: the leader's user)"}),
    (("--mesosBundleAddress",), "mesos_bundle_address", "TOIL_MESOS_BUNDLE_ADDRESS",
     {"default": None,
      "help": "HOST, HOST:PORT or :PORT the agents use to fetch the workflow's code from the "
              "leader (default: the leader's address on its route to the master, and a free "
              "port). With a fixed PORT, the same code has the same URL in every workflow, so "
              "the agents' fetcher cache serves it without a download"}),
    (("--mesosBundleExclude",), "mesos_bundle_excludes", "TOIL_MESOS_BUNDLE_EXCLUDES",
     {"action": "append", "default": None,
      "help": "gitignore-style pattern of paths not to ship (repeatable; the environment "
              "variable takes a colon-separated list)"}),
    (("--mesosBundleMaxBytes",), "mesos_bundle_max_bytes", "TOIL_MESOS_BUNDLE_MAX_BYTES",
     {"type": int, "default": DEFAULT_MAX_BYTES, "help": "size limit of the code to ship"}),
    (("--mesosNativeCode",), "mesos_native_code", "TOIL_MESOS_NATIVE_CODE",
     {"choices": [p.value for p in NativePolicy], "default": NativePolicy.WARN.value,
      "help": "ship native code with a warning, or refuse it"}),
    (("--mesosSharedPath",), "mesos_shared_paths", "TOIL_MESOS_SHARED_PATHS",
     {"action": "append", "default": None,
      "help": "a path every node mounts: code below it is not shipped but kept on PYTHONPATH "
              "(repeatable; the environment variable takes a colon-separated list)"}),
    (("--mesosExecutor",), "mesos_executor", "TOIL_MESOS_EXECUTOR",
     {"default": DEFAULT_EXECUTOR,
      "help": "the command agents run to start the toil-mesos executor"}),
    (("--mesosCheckpoint",), "mesos_checkpoint", "TOIL_MESOS_CHECKPOINT",
     {"action": BooleanOptionalAction, "default": True,
      "help": "register with FrameworkInfo.checkpoint, so that agents checkpoint this "
              "workflow's executors and tasks: jobs keep running while an agent restarts "
              "(an upgrade) and finish once, instead of being lost and run again. "
              "--no-mesosCheckpoint turns it off (the variable takes 1/0, true/false)"}),
]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _env_flag(env_var: str, raw: str) -> bool:
    """A boolean option's environment variable, refused (naming it) unless clearly one."""
    value = raw.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise MesosError(f"{env_var}={raw!r}: expected 1 or 0 (true or false)")


def add_options(parser: ArgumentParser | _ArgumentGroup) -> None:
    """Add the ``--mesos*`` options; defaults come from the environment when it sets them."""
    for flags, dest, env_var, kwargs in _OPTIONS:
        options = dict(kwargs)
        raw = os.environ.get(env_var)
        if raw is not None and options.get("action") is BooleanOptionalAction:
            options["default"] = _env_flag(env_var, raw)
        elif raw is not None:
            options["default"] = raw.split(":") if options.get("action") == "append" else (
                options.get("type", str)(raw)
            )
        default_text = " (default: %(default)s)"
        options["help"] = f"{options['help']}. Environment: {env_var}.{default_text}"
        parser.add_argument(*flags, dest=dest, **options)


def set_options(set_option: Callable[..., None]) -> None:
    """Copy the parsed options into Toil's Config (Toil's ``setOptions`` hook)."""
    for _flags, dest, _env, _kwargs in _OPTIONS:
        if dest == "mesos_endpoint":
            set_option(dest, old_names=["mesosMasterAddress"])
        else:
            set_option(dest)


@dataclass(frozen=True, slots=True, kw_only=True)
class MesosOptions:
    """The options as the batch system uses them, read once from Toil's Config."""

    endpoint: str
    framework_id: str | None
    role: str | None
    name: str
    user: str
    bundle_address: str | None
    executor: str
    deploy: DeployOptions
    masters: MasterSpec
    #: FrameworkInfo.checkpoint: agents recover this workflow's executors after a restart.
    checkpoint: bool = True
    credentials: Credentials | None = field(default=None, repr=False)
    ca_cert: str | None = None

    @property
    def route_target(self) -> str:
        """A ``HOST:PORT`` on the way to the masters, to find this leader's own address."""
        if isinstance(self.masters, ZooKeeperMasters):
            return self.masters.hosts.split(",")[0]
        return self.masters.urls[0].split("://", 1)[1]

    @classmethod
    def from_config(cls, config: Any) -> MesosOptions:
        def get(name: str, default: Any = None) -> Any:
            value = getattr(config, name, None)
            return default if value is None else value

        endpoint = str(get("mesos_endpoint", DEFAULT_ENDPOINT))
        ca_cert = get("mesos_ca_cert")
        if ca_cert is not None and not Path(ca_cert).is_file():
            raise MesosError(f"--mesosCACert {ca_cert!r}: no such file (a PEM file of CAs)")
        return cls(
            endpoint=endpoint,
            masters=parse_master_spec(endpoint),
            credentials=read_credentials(get("mesos_principal"), get("mesos_secret_file")),
            ca_cert=ca_cert,
            framework_id=get("mesos_framework_id"),
            role=_checked_role(get("mesos_role")),
            name=str(get("mesos_name", "toil")),
            user=str(get("mesos_user") or getpass.getuser()),
            bundle_address=get("mesos_bundle_address"),
            executor=str(get("mesos_executor", DEFAULT_EXECUTOR)),
            checkpoint=bool(get("mesos_checkpoint", True)),
            deploy=DeployOptions(
                excludes=tuple(get("mesos_bundle_excludes", ())),
                max_bytes=int(get("mesos_bundle_max_bytes", DEFAULT_MAX_BYTES)),
                native=NativePolicy(get("mesos_native_code", NativePolicy.WARN.value)),
                shared_paths=tuple(Path(p) for p in get("mesos_shared_paths", ())),
                option_names={
                    "excludes": "--mesosBundleExclude",
                    "exclude_distributions": "--mesosBundleExclude",
                    "max_bytes": "--mesosBundleMaxBytes",
                    "native": "--mesosNativeCode",
                    "shared_paths": "--mesosSharedPath",
                },
            ),
        )


def read_credentials(principal: str | None, secret_file: str | None) -> Credentials | None:
    """The framework's credentials from ``--mesosPrincipal`` and ``--mesosSecretFile``.

    The secret is the file's content less one trailing newline; it is never echoed, not even
    in an error about the file.

    :raises MesosError: if only one of the two is given, or the file cannot be used.
    """
    if principal is None and secret_file is None:
        return None
    if principal is None or secret_file is None:
        raise MesosError(
            "--mesosPrincipal and --mesosSecretFile (TOIL_MESOS_PRINCIPAL, "
            "TOIL_MESOS_SECRET_FILE) go together: give both or neither"
        )
    try:
        secret = Path(secret_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise MesosError(f"--mesosSecretFile {secret_file!r}: cannot read it ({reason})") from None
    secret = secret[:-1] if secret.endswith("\n") else secret
    secret = secret[:-1] if secret.endswith("\r") else secret
    if not secret:
        raise MesosError(f"--mesosSecretFile {secret_file!r} is empty")
    try:
        return Credentials(principal, secret)
    except ValueError as exc:
        raise MesosError(f"--mesosPrincipal: {exc}") from None


def _checked_role(role: str | None) -> str | None:
    """``--mesosRole`` as given, or a MesosError naming the option and Mesos' rule broken."""
    if role is None:
        return None
    try:
        return check_role(str(role))
    except ValueError as exc:
        raise MesosError(f"--mesosRole {role!r} is not a valid Mesos role: {exc}") from None
