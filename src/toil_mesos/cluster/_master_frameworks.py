"""The frameworks the master knows, and their subscriptions.

:class:`Frameworks` owns every :class:`FrameworkRecord`: it answers SUBSCRIBE (new framework,
failover onto a new stream, refusal), notices a subscription stream closing, recovers
frameworks that agents report after a master restart, and keeps the ids of removed frameworks
so that they can never come back (``Master::removeFramework``). What a subscription change
means for offers, tasks and agents is the façade's business (``_master_state``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from toil_mesos.cluster._master_model import (
    FRAMEWORK_TRANSITIONS,
    MASTER_CAPABILITIES,
    MESOS_VERSION,
    Close,
    FrameworkLifecycle,
    FrameworkRecord,
    MasterConfig,
    Output,
    Registry,
    Subscription,
    event,
    id_of,
    next_state,
    value_of,
)

__all__ = ["Frameworks", "master_info"]

logger = logging.getLogger(__name__)

#: ``--max_completed_frameworks``.
_MAX_COMPLETED_FRAMEWORKS: Final = 50


def master_info(config: MasterConfig) -> dict[str, Any]:
    """``MasterInfo`` as SUBSCRIBED carries it (recorded shape)."""
    return {
        "id": config.master_id,
        "ip": _ipv4_uint32(config.ip),
        "port": config.port,
        "pid": f"master@{config.ip}:{config.port}",
        "hostname": config.hostname,
        "version": MESOS_VERSION,
        "address": {"hostname": config.hostname, "ip": config.ip, "port": config.port},
        "capabilities": [{"type": c} for c in MASTER_CAPABILITIES],
    }


def _ipv4_uint32(ip: str) -> int:
    # ``MasterInfo.ip`` is the address in network byte order read as a little-endian uint32
    # (recorded: 127.0.0.1 -> 16777343).
    try:
        parts = [int(p) for p in ip.split(".")]
    except ValueError:
        return 0
    if len(parts) != 4 or not all(0 <= p <= 255 for p in parts):
        return 0
    return parts[0] | parts[1] << 8 | parts[2] << 16 | parts[3] << 24


class Frameworks(Registry[FrameworkRecord]):
    """Every framework by id, the removed ids, and the last completed frameworks.

    :param wall_clock: seconds since the epoch, for registration timestamps.
    :param new_uuid: stream ids (``Mesos-Stream-Id``).
    """

    def __init__(self, config: MasterConfig, **clocks: Callable[[], Any]) -> None:
        super().__init__(config, **clocks)
        self._removed_ids: set[str] = set()
        self._completed: list[FrameworkRecord] = []

    @property
    def completed(self) -> Sequence[FrameworkRecord]:
        return tuple(self._completed)

    def is_removed(self, framework_id: str) -> bool:
        return framework_id in self._removed_ids

    # -- subscription -------------------------------------------------------------------------

    def subscribe(
        self, call: Mapping[str, Any], *, now: float
    ) -> tuple[Subscription, FrameworkRecord | None]:
        """A validated SUBSCRIBE call: open a stream for it.

        A new framework gets ``<master-id>-NNNN``; a framework id the master knows fails over
        (the old stream gets ERROR "Framework failed over" and is closed); an unknown id is a
        framework re-subscribing after a master restart and is accepted; a removed id gets
        ERROR "Framework has been removed" on the new stream, which then closes. Returns the
        answer and the subscribed framework (``None`` when refused).
        """
        stream_id = self._new_uuid()
        info = dict(call["subscribe"]["framework_info"])
        caps = {c.get("type") for c in info.get("capabilities") or [] if isinstance(c, dict)}
        if "roles" in info and "MULTI_ROLE" not in caps:
            return self._refuse(
                stream_id,
                "'FrameworkInfo.roles' must not be set when the framework is not MULTI_ROLE"
                " capable",
            )
        requested = value_of(info.get("id"))
        if requested is not None and requested in self._removed_ids:
            return self._refuse(stream_id, "Framework has been removed")

        outputs: list[Output] = []
        framework = self._by_id.get(requested) if requested else None
        if framework is None:
            framework_id = requested or self._new_framework_id()
            info["id"] = id_of(framework_id)
            framework = FrameworkRecord(
                framework_id=framework_id,
                info=info,
                state=FrameworkLifecycle.CONNECTED,
                registered_time=self._wall(),
                order=next(self._order),
            )
            self._by_id[framework_id] = framework
            logger.info("Framework %s (%s) subscribed", framework_id, info.get("name"))
        else:
            framework_id = framework.framework_id
            old_stream = framework.stream_id
            framework.state = next_state(
                FRAMEWORK_TRANSITIONS, framework.state, "subscribe", f"framework {framework_id}"
            )
            if old_stream is not None:
                outputs.append(event(old_stream, "ERROR", message="Framework failed over"))
                outputs.append(Close(stream_id=old_stream))
            info["id"] = id_of(framework_id)
            framework.info = info
            if not framework.registered_time:
                framework.registered_time = self._wall()
            framework.disconnected_at = None
            logger.info("Framework %s failed over to stream %s", framework_id, stream_id)
        framework.suppressed = bool(
            set(call["subscribe"].get("suppressed_roles") or []) & {framework.role}
        )
        ids = {"framework_id": id_of(framework_id)}
        extra = {"master_info": master_info(self._config)}
        outputs.append(self._opened(framework, stream_id, now, "SUBSCRIBED", ids, extra))
        outputs.append(event(stream_id, "HEARTBEAT"))
        subscription = Subscription(
            stream_id=stream_id, framework_id=framework_id, outputs=tuple(outputs)
        )
        return subscription, framework

    def _refuse(self, stream_id: str, message: str) -> tuple[Subscription, None]:
        logger.warning("Refusing subscription: %s", message)
        outputs = (event(stream_id, "ERROR", message=message), Close(stream_id=stream_id))
        return Subscription(stream_id=stream_id, framework_id=None, outputs=outputs), None

    def _new_framework_id(self) -> str:
        while True:
            candidate = f"{self._config.master_id}-{next(self._ids):04d}"
            if candidate not in self._by_id and candidate not in self._removed_ids:
                return candidate

    def stream_closed(self, stream_id: str, *, now: float) -> FrameworkRecord | None:
        """A SUBSCRIBE connection ended: its framework (if any) starts its failover timeout."""
        framework = self.by_stream(stream_id)
        if framework is None:
            return None
        framework.state = next_state(
            FRAMEWORK_TRANSITIONS, framework.state, "stream_closed", framework.framework_id
        )
        framework.stream_id = None
        framework.disconnected_at = now
        framework.unregistered_time = self._wall()
        framework.next_heartbeat = None
        logger.info(
            "Framework %s disconnected; failover timeout %ss",
            framework.framework_id,
            framework.failover_timeout,
        )
        return framework

    def recover(self, framework_id: str, info: Mapping[str, Any], *, now: float) -> FrameworkRecord:
        """A framework an agent runs tasks of, unknown since a master restart."""
        recovered = dict(info)
        recovered["id"] = id_of(framework_id)
        framework = FrameworkRecord(
            framework_id=framework_id,
            info=recovered,
            state=FrameworkLifecycle.RECOVERED,
            disconnected_at=now,
            order=next(self._order),
        )
        self._by_id[framework_id] = framework
        return framework

    # -- removal ------------------------------------------------------------------------------

    def teardown(self, framework: FrameworkRecord) -> None:
        """The framework asked to be removed (TEARDOWN)."""
        framework.state = next_state(
            FRAMEWORK_TRANSITIONS, framework.state, "teardown", framework.framework_id
        )
        logger.info("Framework %s tore itself down", framework.framework_id)

    def expired(self, now: float) -> list[FrameworkRecord]:
        """Frameworks whose failover timeout ran out at *now*, moved to REMOVED.

        A framework recovered from agents after a master restart gets the same grace, counted
        from when the master learned of it.
        """
        out = []
        for framework in list(self._by_id.values()):
            if (
                framework.state in (FrameworkLifecycle.DISCONNECTED, FrameworkLifecycle.RECOVERED)
                and framework.disconnected_at is not None
                and now >= framework.disconnected_at + framework.failover_timeout
            ):
                framework.state = next_state(
                    FRAMEWORK_TRANSITIONS,
                    framework.state,
                    "failover_timeout",
                    framework.framework_id,
                )
                logger.info("Framework %s failover timeout expired", framework.framework_id)
                out.append(framework)
        return out

    def forget(self, framework: FrameworkRecord) -> list[Output]:
        """Close the framework's stream and keep it only as a completed framework."""
        outputs: list[Output] = []
        if framework.stream_id is not None:
            outputs.append(Close(stream_id=framework.stream_id))
            framework.stream_id = None
        framework.state = FrameworkLifecycle.REMOVED
        framework.unregistered_time = self._wall()
        del self._by_id[framework.framework_id]
        self._removed_ids.add(framework.framework_id)
        self._completed.append(framework)
        del self._completed[:-_MAX_COMPLETED_FRAMEWORKS]
        return outputs

    # -- time ---------------------------------------------------------------------------------

    def deadlines(self) -> list[float]:
        """When a heartbeat or a failover timeout is next due, per framework."""
        out: list[float] = []
        for framework in self._by_id.values():
            if framework.next_heartbeat is not None:
                out.append(framework.next_heartbeat)
            if framework.disconnected_at is not None:
                out.append(framework.disconnected_at + framework.failover_timeout)
        return out
