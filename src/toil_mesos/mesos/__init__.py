"""A client for the Mesos v1 HTTP scheduler and executor APIs, replacing pymesos.

No Toil imports, no import-time side effects (no threads, sockets, signal handlers or
environment reads happen until a driver is built and started).

Layers, bottom up:

* ``_recordio``: sans-I/O RecordIO framing (bytes in, records out, a documented length cap).
* ``_events``: typed frozen events and calls, ``parse_*_event`` and ``encode_*_call``; Mesos
  payloads (Offer, TaskInfo, TaskStatus) stay in their v1 JSON shape as ``addict.Dict``.
* ``_scheduler_state`` / ``_executor_state``: sans-I/O state machines (subscription lifecycle,
  ``Mesos-Stream-Id``, heartbeat deadline, redirects, backoff; the executor's unacknowledged
  tasks and updates). Transitions are tables; ERROR is sticky.
* ``_transport``: the only module importing httpx or socket (``HttpxTransport``,
  ``ScriptedTransport``).
* ``driver``: :class:`SchedulerDriver` and :class:`ExecutorDriver`, threads and queues around
  the state machines, with pymesos' method and callback names (``interface``).

Differences from pymesos, in short (details in ``docs/mesos-client.md``): missed heartbeats
count as a disconnection and re-subscription uses bounded exponential backoff; 307 redirects
are followed with a bound and loop detection; ``MESOS_CHECKPOINT="0"`` really means no
checkpointing; the executor records unacknowledged tasks and updates and re-sends them on
SUBSCRIBE; every update gets a fresh uuid; calls are queued, never block the caller and are
sent in order by the driver thread; a driver failure is re-raised to the caller; no SIGINT
handler, no ``os.killpg`` after SHUTDOWN; masters are found from a list or through ZooKeeper
(``_master_spec``, ``_master_detection``) and followed through a failover; JSON only.
"""

from __future__ import annotations

from toil_mesos.mesos._credentials import Credentials
from toil_mesos.mesos._events import (
    AcceptCall,
    AcknowledgeCall,
    Acknowledged,
    AgentId,
    DeclineCall,
    Error,
    EventStream,
    ExecutorId,
    ExecutorMessage,
    ExecutorMessageCall,
    ExecutorSubscribeCall,
    ExecutorSubscribed,
    Failure,
    FrameworkId,
    Heartbeat,
    InverseOffers,
    Kill,
    KillCall,
    Launch,
    LaunchGroup,
    Message,
    MessageCall,
    OfferId,
    Offers,
    ReconcileCall,
    Rescind,
    RescindInverseOffer,
    ReviveCall,
    Shutdown,
    ShutdownCall,
    SubscribeCall,
    Subscribed,
    SuppressCall,
    TaskId,
    TeardownCall,
    UnknownEvent,
    Update,
    UpdateCall,
    UpdateOperationStatus,
    encode_executor_call,
    encode_scheduler_call,
    parse_executor_event,
    parse_scheduler_event,
)
from toil_mesos.mesos._executor_env import ExecutorEnvironment, parse_checkpoint, parse_duration
from toil_mesos.mesos._executor_state import ExecutorProtocol, ExecutorState
from toil_mesos.mesos._master_spec import BadMasterSpec, MasterSpec, parse_master_spec
from toil_mesos.mesos._recordio import (
    END_OF_STREAM,
    NEED_DATA,
    RecordIODecoder,
    encode_record,
)
from toil_mesos.mesos._scheduler_state import SchedulerProtocol, SubscriptionState
from toil_mesos.mesos._transport import (
    HttpResponse,
    HttpxTransport,
    ScriptedStream,
    ScriptedTransport,
    Transport,
)
from toil_mesos.mesos.driver import DriverStatus, ExecutorDriver, SchedulerDriver
from toil_mesos.mesos.interface import Executor, Scheduler

__all__ = [
    "END_OF_STREAM",
    "NEED_DATA",
    "AcceptCall",
    "AcknowledgeCall",
    "Acknowledged",
    "AgentId",
    "BadMasterSpec",
    "Credentials",
    "DeclineCall",
    "DriverStatus",
    "Error",
    "EventStream",
    "Executor",
    "ExecutorDriver",
    "ExecutorEnvironment",
    "ExecutorId",
    "ExecutorMessage",
    "ExecutorMessageCall",
    "ExecutorProtocol",
    "ExecutorState",
    "ExecutorSubscribeCall",
    "ExecutorSubscribed",
    "Failure",
    "FrameworkId",
    "Heartbeat",
    "HttpResponse",
    "HttpxTransport",
    "InverseOffers",
    "Kill",
    "KillCall",
    "Launch",
    "LaunchGroup",
    "MasterSpec",
    "Message",
    "MessageCall",
    "OfferId",
    "Offers",
    "ReconcileCall",
    "RecordIODecoder",
    "Rescind",
    "RescindInverseOffer",
    "ReviveCall",
    "Scheduler",
    "SchedulerDriver",
    "SchedulerProtocol",
    "ScriptedStream",
    "ScriptedTransport",
    "Shutdown",
    "ShutdownCall",
    "SubscribeCall",
    "Subscribed",
    "SubscriptionState",
    "SuppressCall",
    "TaskId",
    "TeardownCall",
    "Transport",
    "UnknownEvent",
    "Update",
    "UpdateCall",
    "UpdateOperationStatus",
    "encode_executor_call",
    "encode_record",
    "encode_scheduler_call",
    "parse_checkpoint",
    "parse_duration",
    "parse_executor_event",
    "parse_master_spec",
    "parse_scheduler_event",
]


def __dir__() -> list[str]:
    return __all__
