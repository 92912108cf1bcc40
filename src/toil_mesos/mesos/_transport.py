"""HTTP transports for the drivers: the only module that touches httpx or sockets.

A :class:`Transport` does two things: one-shot POSTs (calls) and streaming POSTs (SUBSCRIBE).
Mesos wants calls on a connection separate from the subscription (scheduler-http-api.md,
"Calls"); :class:`HttpxTransport` gets that from httpx's pool, which never hands out a
connection that a streaming response still holds, and reuses idle connections between calls.

:class:`ScriptedTransport` replays scripted responses and byte chunks for tests, in the way
httpcore's ``MockBackend`` does, and records every request for assertions.

Errors from httpx or the OS never escape: they become :class:`~toil_mesos.errors.ConnectError`,
:class:`~toil_mesos.errors.ReadTimeout`, :class:`~toil_mesos.errors.StreamClosed` or
:class:`~toil_mesos.errors.TransportError`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from toil_mesos.errors import ConnectError, ReadTimeout, StreamClosed, TransportError
from toil_mesos.mesos._pipeline import PipelinedPoster

__all__ = [
    "BLOCK",
    "HttpResponse",
    "HttpxTransport",
    "RecordedRequest",
    "ScriptedStream",
    "ScriptedTransport",
    "StreamResponse",
    "TlsError",
    "Transport",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResponse:
    """A complete response to a call. Header names are lower-cased."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


class StreamResponse(Protocol):
    """An open streaming response (a subscription)."""

    @property
    def status(self) -> int:
        """HTTP status of the response."""

    @property
    def headers(self) -> Mapping[str, str]:
        """Response headers, names lower-cased."""

    def read(self) -> bytes:
        """Return the next bytes of the body; ``b""`` once it ended cleanly.

        :raises TransportError: (or a subclass) if the connection failed or was aborted.
        """

    def abort(self) -> None:
        """Make a pending or future :meth:`read` fail promptly; safe from any thread."""

    def close(self) -> None:
        """Release the connection; called by the thread that reads."""


class Transport(Protocol):
    """How the drivers reach a master or agent."""

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, timeout: float
    ) -> HttpResponse:
        """POST a call and read the whole (small) response.

        :raises TransportError: (or a subclass) if no response could be had.
        """

    def open_stream(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout: float,
        read_timeout: float | None,
    ) -> StreamResponse:
        """POST a SUBSCRIBE and return once the response head has arrived.

        :raises TransportError: (or a subclass) if the head could not be had.
        """

    def close(self) -> None:
        """Close idle connections; the transport is not used afterwards."""


# ---------------------------------------------------------------------------------------------
# httpx


class TlsError(TransportError):
    """The peer's TLS certificate could not be verified; retrying cannot help."""


def _ssl_failure(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(8):  # httpx wraps httpcore's error, which wraps the ssl module's
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _map_httpx_error(exc: Exception, what: str) -> TransportError:
    tls = _ssl_failure(exc)
    if isinstance(tls, ssl.SSLCertVerificationError) or (
        tls is not None and "CERTIFICATE" in str(tls).upper()
    ):
        return TlsError(f"{what}: TLS certificate not trusted: {tls}")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ConnectError(f"{what}: cannot connect: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return ReadTimeout(f"{what}: timed out: {exc}")
    if isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError | httpx.StreamError):
        return StreamClosed(f"{what}: connection closed: {exc}")
    return TransportError(f"{what}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except TransportError:
        raise
    except (httpx.HTTPError, httpx.StreamError, OSError) as exc:
        raise _map_httpx_error(exc, what) from exc


class _HttpxStream:
    """A streaming httpx response; ``abort()`` shuts the socket down to wake the reader."""

    def __init__(self, response: httpx.Response, what: str) -> None:
        self._response = response
        self._what = what
        # No chunk_size: httpx would then hold data back until that many bytes arrived, and a
        # subscription must see each event as soon as it comes.
        self._chunks = response.iter_raw()
        self._aborted = threading.Event()
        self._headers = {k.lower(): v for k, v in response.headers.items()}

    def __repr__(self) -> str:
        return f"<HttpxStream {self._what} status={self.status} aborted={self._aborted.is_set()}>"

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    def read(self) -> bytes:
        if self._aborted.is_set():
            raise StreamClosed(f"{self._what}: stream aborted")
        try:
            with _mapped(self._what):
                return next(self._chunks, b"")
        except TransportError:
            if self._aborted.is_set():
                raise StreamClosed(f"{self._what}: stream aborted") from None
            raise

    def abort(self) -> None:
        self._aborted.set()
        # Closing a socket does not wake a thread blocked in recv() on Linux; shutdown does.
        stream = self._response.extensions.get("network_stream")
        sock = None if stream is None else stream.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(httpx.HTTPError, OSError):
            self._response.close()


class HttpxTransport:
    """:class:`Transport` on httpx: pooled keep-alive connections, streamed bodies.

    ``trust_env=False``: proxies and netrc from the environment are ignored, so requests go only
    to the master or agent we were given (or the master's redirect). Redirects are not followed
    here; the scheduler protocol follows them itself, bounded and loop-checked.
    """

    def __init__(self, *, verify: bool | str = True, ca_cert: str | None = None) -> None:
        # ca_cert: a PEM file of the CAs to trust for https:// masters instead of the system's.
        trust: bool | str | ssl.SSLContext = verify
        if ca_cert is not None:
            trust = ssl.create_default_context(cafile=ca_cert)
        self._client = httpx.Client(follow_redirects=False, trust_env=False, verify=trust)
        self._pipeline = PipelinedPoster()

    def __repr__(self) -> str:
        return f"<HttpxTransport closed={self._client.is_closed}>"

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, timeout: float
    ) -> HttpResponse:
        with _mapped(f"POST {url}"):
            response = self._client.post(
                url, content=body, headers=dict(headers), timeout=httpx.Timeout(timeout)
            )
        return HttpResponse(
            status=response.status_code,
            headers={k.lower(): v for k, v in response.headers.items()},
            body=response.content,
        )

    def post_many(
        self, url: str, bodies: Sequence[bytes], headers: Mapping[str, str], *, timeout: float
    ) -> list[int]:
        """POST each of *bodies*; their statuses in order (pipelined over plain HTTP)."""
        if url.startswith("http://"):
            return self._pipeline.post_many(url, bodies, headers, timeout=timeout)
        return [self.post(url, body, headers, timeout=timeout).status for body in bodies]

    def open_stream(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout: float,
        read_timeout: float | None,
    ) -> StreamResponse:
        # The response head must come within connect_timeout: until it has come there is no
        # socket to abort, so a peer that accepts and stays silent would block us for good.
        request = self._client.build_request(
            "POST", url, content=body, headers=dict(headers), timeout=httpx.Timeout(connect_timeout)
        )
        with _mapped(f"SUBSCRIBE {url}"):
            response = self._client.send(request, stream=True)
        # httpcore looks the read timeout up in this dict before every read of the body, so the
        # stream itself gets the (usually longer, or no) read timeout from here on.
        timeouts = request.extensions.get("timeout")
        if isinstance(timeouts, dict):
            timeouts["read"] = read_timeout
        return _HttpxStream(response, f"SUBSCRIBE {url}")

    def close(self) -> None:
        self._pipeline.close()
        self._client.close()


# ---------------------------------------------------------------------------------------------
# Scripted


class _Block(enum.Enum):
    BLOCK = "BLOCK"


#: A :class:`ScriptedStream` step: wait until the stream is aborted (then StreamClosed).
BLOCK = _Block.BLOCK

ScriptStep = bytes | BaseException | Callable[[], bytes | None] | _Block


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedRequest:
    """One request a :class:`ScriptedTransport` received."""

    kind: str  # "post" or "stream"
    url: str
    body: bytes
    headers: Mapping[str, str]


class ScriptedStream:
    """A streaming response that replays *steps*.

    Each step is bytes (returned by one :meth:`read`), an exception (raised), a callable (run,
    e.g. to advance a fake clock or to wait for a request; bytes it returns are read), or
    :data:`BLOCK` (wait for :meth:`abort`, at most ``block_timeout`` real seconds, then raise).
    After the last step reads return ``b""``.
    """

    def __init__(
        self,
        steps: Sequence[ScriptStep] = (),
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        block_timeout: float = 10.0,
    ) -> None:
        self._status = status
        self._headers = {k.lower(): v for k, v in (headers or {}).items()}
        self._steps = list(steps)
        self._aborted = threading.Event()
        self._block_timeout = block_timeout
        self.closed = False

    def __repr__(self) -> str:
        return f"<ScriptedStream status={self._status} steps_left={len(self._steps)}>"

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def aborted(self) -> bool:
        """Whether :meth:`abort` was called."""
        return self._aborted.is_set()

    def read(self) -> bytes:
        while True:
            if self._aborted.is_set():
                raise StreamClosed("scripted stream aborted")
            if not self._steps:
                return b""
            step = self._steps.pop(0)
            if isinstance(step, bytes):
                return step
            if isinstance(step, BaseException):
                raise step
            if step is BLOCK:
                if not self._aborted.wait(self._block_timeout):
                    raise ReadTimeout("scripted stream blocked and was never aborted")
                continue
            produced = step()
            if produced is not None:
                return produced

    def abort(self) -> None:
        self._aborted.set()

    def close(self) -> None:
        self.closed = True


PostResponder = Callable[[RecordedRequest], "HttpResponse | BaseException"]


class ScriptedTransport:
    """A :class:`Transport` that replays scripted streams and answers posts, for tests.

    *streams* are handed out in order to successive ``open_stream`` calls; an exception in
    their place is raised instead (e.g. :class:`~toil_mesos.errors.ConnectError`). Once they
    run out, ``open_stream`` raises ConnectError. *post* decides each call's answer (default:
    202 with an empty body, as Mesos answers accepted calls).
    """

    def __init__(
        self,
        streams: Sequence[ScriptedStream | BaseException] = (),
        *,
        post: PostResponder | None = None,
    ) -> None:
        self._streams = list(streams)
        self._post = post
        self._lock = threading.Condition()
        self.requests: list[RecordedRequest] = []
        self.opened: list[ScriptedStream] = []
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"<ScriptedTransport requests={len(self.requests)} streams_left={len(self._streams)}>"
        )

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float) -> bool:
        """Block until *predicate* holds for the recorded requests, at most *timeout* seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: predicate(self.requests), timeout)

    def posts(self) -> list[RecordedRequest]:
        """The recorded one-shot calls, in order."""
        with self._lock:
            return [r for r in self.requests if r.kind == "post"]

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, timeout: float
    ) -> HttpResponse:
        request = RecordedRequest(kind="post", url=url, body=body, headers=dict(headers))
        self._record(request)
        answer: HttpResponse | BaseException = (
            HttpResponse(status=202, headers={"content-length": "0"})
            if self._post is None
            else self._post(request)
        )
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def post_many(
        self, url: str, bodies: Sequence[bytes], headers: Mapping[str, str], *, timeout: float
    ) -> list[int]:
        return [self.post(url, body, headers, timeout=timeout).status for body in bodies]

    def open_stream(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout: float,
        read_timeout: float | None,
    ) -> StreamResponse:
        self._record(RecordedRequest(kind="stream", url=url, body=body, headers=dict(headers)))
        with self._lock:
            nxt = self._streams.pop(0) if self._streams else None
        if nxt is None:
            raise ConnectError(f"no scripted stream left for {url}")
        if isinstance(nxt, BaseException):
            raise nxt
        with self._lock:
            self.opened.append(nxt)
        return nxt

    def close(self) -> None:
        self.closed = True
