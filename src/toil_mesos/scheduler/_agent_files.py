"""Read a failed executor's ``stderr`` from its agent, off the driver's thread, and say why.

The agent serves the executor's sandbox over ``GET /files/read`` (Mesos's files API): with
``offset=-1`` it answers the file's size, then ``offset`` and ``length`` read the tail. Each
request has a short timeout, and the reads run on one small worker thread of their own, so a
slow or unreachable agent never holds up the scheduler driver's callbacks (offers, updates).
Each agent is explained once: the first failure of an agent is read and logged, later ones
reuse that diagnosis.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx

from toil_mesos.scheduler._agent_diagnosis import (
    TAIL_BYTES,
    Diagnosis,
    classify,
    decode_wait_status,
    parse_files_read,
    sandbox_from_state,
    sandbox_virtual_path,
    tail_window,
    unreadable,
)

__all__ = [
    "ExecutorDiagnostics",
    "FailedExecutor",
    "FilesUnreadable",
    "read_sandbox_tail",
]

logger = logging.getLogger(__name__)

#: Seconds each request to an agent may take; three at most per failed executor.
REQUEST_TIMEOUT = 3.0


class FilesUnreadable(Exception):
    """``/files/read`` did not give the file; ``sandbox`` is where it is, when the agent said."""

    def __init__(self, reason: str, sandbox: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sandbox = sandbox


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedExecutor:
    """An executor that ended without running its task, and where to ask about it."""

    agent_id: str
    hostname: str
    #: The agent's ``HOST:PORT`` from its offers (None when no offer said).
    address: str | None
    framework_id: str
    executor_id: str

    @property
    def label(self) -> str:
        """How log lines name the agent: its host, address and id."""
        where = f"{self.address}, " if self.address and self.address != self.hostname else ""
        return f"{self.hostname} ({where}agent {self.agent_id})"


def read_sandbox_tail(
    address: str,
    *,
    agent_id: str,
    framework_id: str,
    executor_id: str,
    max_bytes: int = TAIL_BYTES,
    timeout: float = REQUEST_TIMEOUT,
    transport: httpx.BaseTransport | None = None,
) -> tuple[str, str]:
    """``(file name, text)``: the last ``max_bytes`` of the executor's latest ``stderr``, or of
    its ``stdout`` when stderr is empty (a wrapper script may say why there), a partial first
    line dropped.

    :raises FilesUnreadable: the agent could not be asked or did not give the file; the
        sandbox's path is looked up in the agent's ``/state`` when that answers.
    """
    with httpx.Client(base_url=f"http://{address}", timeout=timeout, transport=transport,
                      headers={"Accept": "application/json"}) as client:
        try:
            text = _tail(client, sandbox_virtual_path(framework_id, executor_id), max_bytes)
            if text.strip():
                return "stderr", text
            text = _tail(client, sandbox_virtual_path(framework_id, executor_id, "stdout"),
                         max_bytes)
            return ("stdout", text) if text.strip() else ("stderr", "")
        except FilesUnreadable as exc:
            raise FilesUnreadable(exc.reason, _sandbox(client, agent_id, framework_id,
                                                       executor_id)) from None


def _tail(client: httpx.Client, path: str, max_bytes: int) -> str:
    _, size = _read(client, path, offset=-1, length=None)
    offset, length = tail_window(size, max_bytes)
    if not length:
        return ""
    data, _ = _read(client, path, offset=offset, length=length)
    if offset > 0 and "\n" in data:
        data = data.split("\n", 1)[1]
    return data


def _read(client: httpx.Client, path: str, *, offset: int, length: int | None) -> tuple[str, int]:
    params: dict[str, str | int] = {"path": path, "offset": offset}
    if length is not None:
        params["length"] = length
    try:
        response = client.get("/files/read", params=params)
    except httpx.HTTPError as exc:
        raise FilesUnreadable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                              None) from None
    if response.status_code != 200:
        raise FilesUnreadable(f"GET /files/read answered {response.status_code}"
                              f"{' ' + response.text[:200] if response.text else ''}", None)
    try:
        return parse_files_read(response.content)
    except ValueError as exc:
        raise FilesUnreadable(f"GET /files/read answered something else: {exc}", None) from None


def _sandbox(client: httpx.Client, agent_id: str, framework_id: str,
             executor_id: str) -> str | None:
    try:
        response = client.get("/state")
        state = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    return sandbox_from_state(state, agent_id=agent_id, framework_id=framework_id,
                              executor_id=executor_id)


Reader = Callable[..., tuple[str, str]]


class ExecutorDiagnostics:
    """Explains failed executors, once per agent, on a worker thread of its own.

    The driver's thread only hands a :class:`FailedExecutor` over (:meth:`request`) and records
    exit statuses from FAILURE events (:meth:`exited`); the worker reads the agent's ``/files``,
    classifies, logs, and keeps the diagnosis for :meth:`summary` and :meth:`wait`.
    """

    def __init__(self, executor_command: str, *, reader: Reader = read_sandbox_tail) -> None:
        self._executor_command = executor_command
        self._reader = reader
        self._lock = threading.Condition()
        self._requested: set[str] = set()
        self._diagnoses: dict[str, Diagnosis] = {}
        self._wait_statuses: dict[str, int] = {}
        self._inbox: queue.Queue[FailedExecutor | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def exited(self, agent_id: str, wait_status: int | None) -> None:
        """An executor on the agent ended with this raw wait status (a FAILURE event)."""
        if wait_status is not None:
            with self._lock:
                self._wait_statuses[agent_id] = wait_status

    def request(self, failed: FailedExecutor) -> None:
        """Explain this failure if its agent has not been explained yet. Never blocks."""
        with self._lock:
            if self._closed or failed.agent_id in self._requested:
                return
            self._requested.add(failed.agent_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="toil-mesos-diagnosis",
                                                daemon=True)
                self._thread.start()
        self._inbox.put(failed)

    def pending(self, agent_id: str) -> bool:
        """Whether the agent's failure is being read: its next executor run would replace the
        ``runs/latest`` the read asks for, so no task goes there meanwhile."""
        with self._lock:
            return agent_id in self._requested and agent_id not in self._diagnoses

    def summary(self, agent_id: str) -> str | None:
        """A few words on why the agent's executor failed, once known."""
        with self._lock:
            diagnosis = self._diagnoses.get(agent_id)
        return diagnosis.summary if diagnosis else None

    def wait(self, agent_ids: Iterable[str], timeout: float) -> dict[str, Diagnosis]:
        """The diagnoses of these agents, waiting up to ``timeout`` s for pending ones."""
        wanted = set(agent_ids)
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                pending = {a for a in wanted if a in self._requested and a not in self._diagnoses}
                remaining = deadline - time.monotonic()
                if not pending or remaining <= 0:
                    return {a: self._diagnoses[a] for a in wanted if a in self._diagnoses}
                self._lock.wait(remaining)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (a read in progress ends at its own timeout)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._inbox.put(None)
            thread.join(timeout)

    def _work(self) -> None:
        while (failed := self._inbox.get()) is not None:
            try:
                diagnosis = self._diagnose(failed)
            except Exception as exc:  # a thread's top level: say so, never die silently
                logger.exception("could not explain the executor failure on %s", failed.label)
                diagnosis = unreadable(f"{type(exc).__name__}: {exc}", None, host=failed.hostname,
                                       executor_command=self._executor_command)
            logger.error("the executor of this workflow failed on agent %s: %s", failed.label,
                         diagnosis.describe())
            with self._lock:
                self._diagnoses[failed.agent_id] = diagnosis
                self._lock.notify_all()

    def _diagnose(self, failed: FailedExecutor) -> Diagnosis:
        def exit_status() -> tuple[int | None, int | None]:
            with self._lock:
                return decode_wait_status(self._wait_statuses.get(failed.agent_id))

        if failed.address is None:
            code, signal_number = exit_status()
            return unreadable("no offer gave the agent's address", None, host=failed.hostname,
                              executor_command=self._executor_command, exit_code=code,
                              signal_number=signal_number)
        try:
            source, tail = self._reader(failed.address, agent_id=failed.agent_id,
                                        framework_id=failed.framework_id,
                                        executor_id=failed.executor_id)
        except FilesUnreadable as exc:
            code, signal_number = exit_status()
            return unreadable(exc.reason, exc.sandbox, host=failed.hostname,
                              executor_command=self._executor_command, exit_code=code,
                              signal_number=signal_number)
        code, signal_number = exit_status()
        return classify(tail, executor_command=self._executor_command, exit_code=code,
                        signal_number=signal_number, source=source)

