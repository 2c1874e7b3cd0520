"""A Segment-compatible Tracking API server on loopback, for the test suite and the benchmarks.

It answers like Segment does where it matters to a sender (Basic auth or ``writeKey`` in the body,
400 for invalid JSON or oversized payloads, 200-but-dropped for batches over 2,500 messages) and is a
little stricter where that helps tests (every message needs ``type`` and ``userId``/``anonymousId``).
Faults are scripted per request, in the order they were scheduled: ``fail_next``, ``rate_limit_next``,
``drop_next`` (connection closed with no response at all) and ``delay_next``.

In tests: ``with FakeSegmentServer(write_key="wk") as srv: ... srv.url``. For benchmarks, run it as a
separate process so the sender is measured, not the server sharing its interpreter::

    python -m segment_profiles_pipeline.testing.segment_server --port 0 --write-key wk --record count

It prints ``READY http://127.0.0.1:PORT`` once it accepts requests and serves until killed.
``GET /stats`` returns the counters as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from segment_profiles_pipeline.segment.spec import MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES

RecordMode = Literal["all", "count", "none"]
Predicate = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class RequestRecord:
    """What the server saw of one request to a message endpoint (for assertions on headers and paths)."""

    path: str
    status: int
    """HTTP status sent; 499 when the connection was dropped on purpose (nothing was sent)."""
    messages: int
    auth: Literal["basic", "body"] | None
    user_agent: str | None
    content_type: str | None


@dataclass(frozen=True)
class _Fault:
    kind: Literal["fail", "rate_limit", "drop", "delay"]
    status: int = 500
    retry_after: str | None = None
    reset_after: str | None = None
    seconds: float = 0.0


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str) -> Response:
    return _json(status, {"success": False, "message": message})


class FakeSegmentServer:
    """Segment Tracking API stand-in listening on ``127.0.0.1`` (port 0 picks a free port).

    All accessors are thread-safe: the server runs on its own loop thread while tests read counters.
    """

    def __init__(self, write_key: str = "wk", *, port: int = 0, record: RecordMode = "all"):
        self.write_key = write_key
        self.record = record
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._message_count = 0
        self._requests = 0
        self._dropped_oversized_batches = 0
        self._rejected_requests = 0
        self._in_flight = 0
        self._clients: set[tuple[str, int]] = set()
        self._max_in_flight = 0
        self._log: list[RequestRecord] = []
        self._faults: deque[_Fault] = deque()
        self._reject: tuple[Predicate, int, str] | None = None
        self._hold_target: int | None = None
        self._hold_timeout_s = 0.0
        self._hold_released = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._announce: Callable[[str], None] | None = None
        self._thread: threading.Thread | None = None

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self._socket.listen(1024)
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

        app = Starlette(
            routes=[
                Route("/v1/batch", self._batch, methods=["POST"]),
                Route("/v1/identify", self._identify, methods=["POST"]),
                Route("/v1/group", self._group, methods=["POST"]),
                Route("/stats", self._stats, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        self._server = _Server(config, on_ready=self._on_ready)

    def __repr__(self) -> str:
        return f"FakeSegmentServer(url={self.url!r}, record={self.record!r})"

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout_s: float = 10.0) -> None:
        """Serve from a background thread; returns once requests are being accepted."""
        self._thread = threading.Thread(target=self._serve_in_thread, name="fake-segment-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or not self._server.started:
            raise RuntimeError(f"fake Segment server on {self.url} did not start within {timeout_s}s")

    def serve_forever(self, announce: Callable[[str], None] | None = None) -> None:
        """Serve from the calling (main) thread until SIGINT/SIGTERM, for the benchmark process.

        ``announce`` is called with the URL once requests are accepted.
        """
        self._announce = announce
        self._server.run(sockets=[self._socket])

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, wake delayed or held requests, and wait for the thread to end."""
        if self._thread is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._release_waiters)
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"fake Segment server on {self.url} did not stop within {timeout_s}s")
        self._thread = None

    def _serve_in_thread(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._ready.set()

    def _on_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready.set()
        if self._announce is not None:
            self._announce(self.url)

    def _release_waiters(self) -> None:
        self._stopping.set()
        self._hold_released.set()

    # -- scripted faults (consumed one per request, in the order scheduled) ----------------------

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status`` and record nothing."""
        self._schedule(n, _Fault("fail", status=status))

    def rate_limit_next(
        self, n: int, retry_after: float | str | None = 1, *, reset_after: float | None = None
    ) -> None:
        """Answer the next ``n`` requests with 429, ``Retry-After: retry_after`` (seconds or an HTTP
        date; omitted when None) and, if given, ``X-RateLimit-Reset: reset_after``."""
        self._schedule(
            n,
            _Fault(
                "rate_limit",
                status=429,
                retry_after=None if retry_after is None else str(retry_after),
                reset_after=None if reset_after is None else str(reset_after),
            ),
        )

    def drop_next(self, n: int) -> None:
        """Close the connection of the next ``n`` requests without sending a single byte back."""
        self._schedule(n, _Fault("drop"))

    def delay_next(self, n: int, seconds: float) -> None:
        """Wait ``seconds`` before answering the next ``n`` requests, to provoke client timeouts.

        A request whose client hung up meanwhile is not processed (nothing recorded), so a test can
        assert exactly-once arrival after the client's retry; otherwise it is processed normally.
        """
        self._schedule(n, _Fault("delay", seconds=seconds))

    def reject_when(
        self, predicate: Predicate | None, *, status: int = 400, message: str = "a message was rejected"
    ) -> None:
        """Answer ``status`` to any request containing a message for which ``predicate`` is true, every
        time it is sent (None: stop). Status 400 isolates bad records, 5xx exhausts retries of one batch."""
        with self._lock:
            self._reject = None if predicate is None else (predicate, status, message)

    def hold_until_in_flight(self, n: int, timeout_s: float = 10.0) -> None:
        """Make requests wait until ``n`` are in flight at once (then release all and stop holding).

        Lets a test prove a client sends concurrently without relying on timing: a sequential client
        only gets past the hold after ``timeout_s``, and ``max_in_flight`` stays 1.
        """
        with self._lock:
            self._hold_target = n
            self._hold_timeout_s = timeout_s
            self._hold_released = asyncio.Event()

    def _schedule(self, n: int, fault: _Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * n)

    # -- accessors -------------------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Accepted messages in arrival order (only with ``record="all"``)."""
        with self._lock:
            return list(self._messages)

    def message_ids(self) -> list[Any]:
        """``messageId`` of every accepted message, in arrival order."""
        return [message.get("messageId") for message in self.messages]

    @property
    def requests(self) -> int:
        """Requests received on the message endpoints, faulted ones included."""
        with self._lock:
            return self._requests

    @property
    def message_count(self) -> int:
        """Accepted messages (counted with ``record="all"`` or ``"count"``)."""
        with self._lock:
            return self._message_count

    @property
    def dropped_oversized_batches(self) -> int:
        """Batches over 2,500 messages: answered 200 and silently discarded, as Segment does."""
        with self._lock:
            return self._dropped_oversized_batches

    @property
    def connections_opened(self) -> int:
        """Distinct client connections (address and port) that sent message requests: keep-alive proof."""
        with self._lock:
            return len(self._clients)

    @property
    def max_in_flight(self) -> int:
        """Most requests the server was handling at the same moment."""
        with self._lock:
            return self._max_in_flight

    @property
    def request_log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "requests": self._requests,
                "messages": self._message_count,
                "dropped_oversized_batches": self._dropped_oversized_batches,
                "rejected_requests": self._rejected_requests,
                "max_in_flight": self._max_in_flight,
            }

    # -- ASGI endpoints --------------------------------------------------------------------------

    async def _batch(self, request: Request) -> Response:
        return await self._handle(request, None)

    async def _identify(self, request: Request) -> Response:
        return await self._handle(request, "identify")

    async def _group(self, request: Request) -> Response:
        return await self._handle(request, "group")

    async def _stats(self, request: Request) -> Response:
        return _json(200, self.stats())

    async def _health(self, request: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    async def _handle(self, request: Request, single_type: str | None) -> Response:
        with self._lock:
            self._requests += 1
            self._clients.add(tuple(request.scope["client"]))
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            hold_target, hold_timeout, released = self._hold_target, self._hold_timeout_s, self._hold_released
            if hold_target is not None and self._in_flight >= hold_target:
                self._hold_target = None
                self._hold_released.set()
            fault = self._faults.popleft() if self._faults else None
        try:
            if hold_target is not None:
                try:
                    await asyncio.wait_for(released.wait(), hold_timeout)
                except TimeoutError:
                    with self._lock:
                        self._hold_target = None
            response, count, auth = await self._respond(request, single_type, fault)
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            self._log.append(
                RequestRecord(
                    path=request.url.path,
                    status=response.status_code,
                    messages=count,
                    auth=auth,
                    user_agent=request.headers.get("user-agent"),
                    content_type=request.headers.get("content-type"),
                )
            )
        return response

    async def _respond(
        self, request: Request, single_type: str | None, fault: _Fault | None
    ) -> tuple[Response, int, Literal["basic", "body"] | None]:
        """Validate like Segment, then record; returns the response, messages accepted, auth method."""
        if fault is not None:
            if fault.kind == "drop":
                await self._drop_connection(request)
                return Response(status_code=499), 0, None
            if fault.kind == "delay":
                await request.body()
                if await self._client_left_within(request, fault.seconds):
                    return Response(status_code=499), 0, None
            elif fault.kind == "rate_limit":
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = fault.retry_after
                if fault.reset_after is not None:
                    headers["X-RateLimit-Reset"] = fault.reset_after
                return (
                    _json(429, {"success": False, "message": "Too Many Requests (injected)"}, headers),
                    0,
                    None,
                )
            else:
                return _error(fault.status, f"injected failure {fault.status}"), 0, None

        header_auth = self._check_basic_auth(request.headers.get("authorization"))
        if header_auth is False:
            return _error(401, "invalid write key"), 0, None
        if not (request.headers.get("content-type") or "").startswith("application/json"):
            return self._refuse("Content-Type must be application/json"), 0, None
        body = await request.body()
        limit = MAX_MESSAGE_BYTES if single_type else MAX_REQUEST_BYTES
        if len(body) > limit:
            return self._refuse(f"request body of {len(body)} bytes is over the {limit}-byte limit"), 0, None
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._refuse("invalid JSON"), 0, None
        if not isinstance(payload, dict):
            return self._refuse("the body must be a JSON object"), 0, None
        auth: Literal["basic", "body"] = "basic"
        body_key = payload.pop("writeKey", None)
        if header_auth is None:
            if body_key != self.write_key:
                return _error(401, "missing or invalid write key"), 0, None
            auth = "body"

        if single_type:
            messages = [payload]
            payload.setdefault("type", single_type)
        else:
            batch = payload.get("batch")
            if not isinstance(batch, list):
                return self._refuse("'batch' must be a list of messages"), 0, auth
            messages = batch
        problem = self._invalid(messages, check_sizes=len(body) > MAX_MESSAGE_BYTES and not single_type)
        if problem:
            return self._refuse(problem), 0, auth
        with self._lock:
            rule = self._reject
        if rule is not None and any(rule[0](message) for message in messages):
            return self._refuse(rule[2], status=rule[1]), 0, auth
        if len(messages) > MAX_BATCH_MESSAGES:
            with self._lock:
                self._dropped_oversized_batches += 1
            return _json(200, {"success": True}), 0, auth
        with self._lock:
            if self.record != "none":
                self._message_count += len(messages)
            if self.record == "all":
                self._messages.extend(messages)
        return _json(200, {"success": True}), len(messages), auth

    def _check_basic_auth(self, header: str | None) -> bool | None:
        """True/False for a Basic header with the right/wrong key; None when there is none."""
        if header is None:
            return None
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, colon, _password = decoded.partition(":")
        return bool(colon) and username == self.write_key

    @staticmethod
    def _invalid(messages: list[Any], *, check_sizes: bool) -> str | None:
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                return f"message #{index} is not an object"
            if not message.get("type"):
                return f"message #{index} has no 'type'"
            if not (message.get("userId") or message.get("anonymousId")):
                return f"message #{index} needs a userId or an anonymousId (no_user_anon_id)"
            if message["type"] == "group" and not message.get("groupId"):
                return f"message #{index} is a group call without groupId"
            if check_sizes and len(orjson.dumps(message)) > MAX_MESSAGE_BYTES:
                return f"message #{index} is over {MAX_MESSAGE_BYTES} bytes"
        return None

    def _refuse(self, message: str, status: int = 400) -> Response:
        with self._lock:
            self._rejected_requests += 1
        return _error(status, message)

    async def _client_left_within(self, request: Request, seconds: float) -> bool:
        """Wait up to ``seconds`` (less if the server stops); True if the client disconnected meanwhile.

        Only called once the body is read, so the next ASGI message can only be ``http.disconnect``.
        """
        left = asyncio.ensure_future(request.receive())
        stopping = asyncio.ensure_future(self._stopping.wait())
        done, pending = await asyncio.wait(
            {left, stopping}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        return left in done

    async def _drop_connection(self, request: Request) -> None:
        """Close the TCP connection before any response byte, like a crashed or restarted upstream.

        ASGI offers no way to do that (an exception makes uvicorn answer 500), so find uvicorn's
        protocol object for this client address and close its transport, then wait until uvicorn
        has noticed, so it does not try to send anything afterwards.
        """
        client = request.scope.get("client")
        for connection in list(self._server.server_state.connections):
            if connection.client == client:
                connection.transport.close()
        while (await request.receive())["type"] != "http.disconnect":
            pass


class _Server(uvicorn.Server):
    """uvicorn server that reports when it listens, so callers wait on an event instead of polling."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[asyncio.AbstractEventLoop], None]):
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._on_ready(asyncio.get_running_loop())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Segment-compatible Tracking API on 127.0.0.1 for benchmarks."
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0 = any free port)")
    parser.add_argument("--write-key", default="wk", help="write key clients must use")
    parser.add_argument("--record", choices=["none", "count", "all"], default="count")
    args = parser.parse_args(argv)
    server = FakeSegmentServer(write_key=args.write_key, port=args.port, record=args.record)
    server.serve_forever(announce=lambda url: print(f"READY {url}", flush=True))


if __name__ == "__main__":
    main(sys.argv[1:])
