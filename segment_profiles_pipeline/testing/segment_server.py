"""A Segment-compatible Tracking API server on loopback, for the test suite, benchmarks and users.

It answers like Segment does where it matters to a sender (Basic auth or ``writeKey`` in the body,
400 for invalid JSON or oversized payloads, 200-but-dropped for batches over 2,500 messages) and is a
little stricter where that helps tests (every message needs ``type`` and ``userId``/``anonymousId``).

It also *applies* messages the way Segment silently does not, so a test can tell "answered 200"
from "reached the profile":

* deduplication: a message whose ``messageId`` was already seen, under any write key the server
  knows (Segment's check is not scoped to a source or workspace), is answered 200 and not applied;
* Unify limits: an identify with 300+ traits, a group whose ``groupId`` is empty or over 500
  characters, a ``messageId`` of 100+ characters: answered 200, not applied.

An id counts as seen as soon as the message is accepted, even if a Unify limit then drops it,
because Segment deduplicates in its pipeline before profiles are built [inferred]. What was applied
feeds a profile view (latest traits per identity, nulls kept as Segment stores them).

Faults are scripted per request, in the order they were scheduled: ``fail_next``, ``rate_limit_next``,
``drop_next`` (connection closed with no response at all), ``delay_next`` and ``answer_next`` (any
status, body and content type, e.g. a proxy's HTML page with 200).

In tests: ``with FakeSegmentServer(write_keys=["wk"]) as srv: ... srv.url``. For benchmarks, run it
as a separate process so the sender is measured, not the server sharing its interpreter::

    python -m segment_profiles_pipeline.testing.segment_server --port 0 --write-key wk --record count

It prints ``READY http://127.0.0.1:PORT`` once it accepts requests and serves until killed.
``GET /stats`` returns the counters as JSON, ``GET /messages`` what was received and applied.

With ``profile_spaces={"spa_1": "token"}`` it also answers Segment's Profile API ``/traits`` route
(``GET /v1/spaces/<space>/collections/users/profiles/<user_id|anonymous_id>:<value>/traits``) from
the identify calls it applied: Basic auth with the space's token, 404 for an unknown profile,
``limit`` / ``next`` / ``include`` as Segment has them, and scripted 429s
(``profile_api_rate_limit_next``) or a profile that lost or changed a trait (``tamper_profile``).
User documentation: ``docs/test-server.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from segment_profiles_pipeline.segment.spec import (
    MAX_BATCH_MESSAGES,
    MAX_GROUP_ID_CHARS,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_ID_CHARS,
    MAX_REQUEST_BYTES,
    MAX_TRAITS,
)

RecordMode = Literal["all", "count", "none"]
Predicate = Callable[[dict[str, Any]], bool]
ProfileKey = tuple[str, str]
"""``("identify", userId or anonymousId)`` or ``("group", groupId)``."""


def key_fingerprint(write_key: str) -> str:
    """A short stable hash of a write key: tells destinations apart without exposing the key."""
    return hashlib.sha256(write_key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ReceivedMessage:
    """One message of an accepted request, and what the server did with it."""

    message: dict[str, Any]
    write_key: str
    """:func:`key_fingerprint` of the write key it was sent with (never the key itself)."""
    dropped: str | None
    """Why it was answered 200 but not applied (duplicate, Unify limit); None when applied."""

    @property
    def applied(self) -> bool:
        return self.dropped is None

    def to_json(self) -> dict[str, Any]:
        return {
            "writeKey": self.write_key,
            "applied": self.applied,
            "dropped": self.dropped,
            "message": self.message,
        }


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
    body_bytes: int = 0
    """Size of the request body as received (0 when a fault answered before reading it)."""


@dataclass(frozen=True)
class _Fault:
    kind: Literal["fail", "rate_limit", "drop", "delay", "answer"]
    status: int = 500
    retry_after: str | None = None
    reset_after: str | None = None
    seconds: float = 0.0
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Answer:
    """What ``_respond`` decided: the response, messages accepted, auth method, body size read."""

    response: Response
    messages: int = 0
    auth: Literal["basic", "body"] | None = None
    body_bytes: int = 0


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, message: str) -> Response:
    return _json(status, {"success": False, "message": message})


PROFILE_TRAITS_ROUTE = "/v1/spaces/{space}/collections/users/profiles/{external_id}/traits"
PROFILE_DEFAULT_TRAITS = 10
PROFILE_MAX_TRAITS = 200


def _profile_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """The Profile API's error shape: ``{"error": {"code": ..., "message": ...}}``."""
    return _json(status, {"error": {"code": code, "message": message}}, headers)


class FakeSegmentServer:
    """Segment Tracking API stand-in listening on ``127.0.0.1`` (port 0 picks a free port).

    ``write_keys`` are the keys it accepts (``write_key`` alone still works; default ``"wk"``): one
    server can stand for several sources or workspaces, which share one deduplication space.
    ``record`` is ``"all"`` (keep every message and the profile view), ``"count"`` (counters only,
    deduplication and Unify limits still applied, for benchmarks) or ``"none"`` (answer only).
    ``on_message`` is called with each received message, outside the server's lock.

    All accessors are thread-safe: the server runs on its own loop thread while tests read counters.
    """

    def __init__(
        self,
        write_key: str | None = None,
        *,
        write_keys: Iterable[str] = (),
        port: int = 0,
        record: RecordMode = "all",
        on_message: Callable[[ReceivedMessage], None] | None = None,
        profile_spaces: Mapping[str, str] | None = None,
    ):
        keys = list(dict.fromkeys([*([write_key] if write_key is not None else []), *write_keys]))
        if not keys:
            keys = ["wk"]
        if not all(keys):
            raise ValueError("write keys must be non-empty strings")
        self.write_keys: tuple[str, ...] = tuple(keys)
        self.write_key = keys[0]
        """The first accepted key, for callers that use one."""
        self._fingerprints = {key: key_fingerprint(key) for key in keys}
        self.record = record
        self._on_message = on_message
        self._lock = threading.Lock()
        self._received: list[ReceivedMessage] = []
        self._seen_ids: set[str] = set()
        self._profiles: dict[str, dict[ProfileKey, dict[str, Any]]] = {}
        self._profile_spaces = dict(profile_spaces or {})
        """Profile API: space id → its access token. Every write key feeds every space."""
        self._unify: dict[tuple[str, str], dict[str, Any]] = {}
        """Profile API view: (``user_id`` | ``anonymous_id``, value) → merged identify traits."""
        self._profile_faults: deque[str | None] = deque()
        self._profile_log: list[tuple[str, int]] = []
        self._message_count = 0
        self._applied_count = 0
        self._dropped_count = 0
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
                Route("/messages", self._messages_endpoint, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
                Route(PROFILE_TRAITS_ROUTE, self._profile_traits, methods=["GET"]),
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

    def answer_next(
        self,
        n: int,
        status: int = 200,
        body: bytes = b"",
        content_type: str | None = "text/html; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``n`` requests with exactly this status, body, content type (None: no
        header) and extra headers, recording nothing: a proxy, captive portal or redirect in front of
        Segment, e.g. ``answer_next(1, 200, b"<html>Sign in</html>")`` or ``answer_next(1, 301,
        headers={"Location": "https://elsewhere"})``."""
        self._schedule(
            n,
            _Fault(
                "answer", status=status, body=body, content_type=content_type, headers=dict(headers or {})
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

    def profile_api_rate_limit_next(self, n: int, retry_after: float | None = 0) -> None:
        """Answer the next ``n`` Profile API requests with 429 (``Retry-After`` omitted when None)."""
        with self._lock:
            self._profile_faults.extend([None if retry_after is None else str(retry_after)] * n)

    def tamper_profile(
        self, external_id: str, *, drop: Iterable[str] = (), set_traits: Mapping[str, Any] | None = None
    ) -> None:
        """Make the Profile API view of ``external_id`` (``user_id:u1``) lose ``drop`` and hold ``set_traits``:
        what a profile looks like when Segment did not apply what it acknowledged."""
        kind, _, value = external_id.partition(":")
        with self._lock:
            traits = self._unify.setdefault((kind, value), {})
            for trait in drop:
                traits.pop(trait, None)
            traits.update(set_traits or {})

    def _schedule(self, n: int, fault: _Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * n)

    # -- accessors -------------------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message of an accepted request, in arrival order, applied or silently dropped
        (only with ``record="all"``): what a sender got a 200 for."""
        with self._lock:
            return [received.message for received in self._received]

    def message_ids(self) -> list[Any]:
        """``messageId`` of every received message (see :attr:`messages`), in arrival order."""
        return [message.get("messageId") for message in self.messages]

    @property
    def received(self) -> list[ReceivedMessage]:
        """Every received message with its write-key fingerprint and whether it was applied."""
        with self._lock:
            return list(self._received)

    @property
    def applied_messages(self) -> list[dict[str, Any]]:
        """Messages that Segment would have applied to profiles, in arrival order."""
        with self._lock:
            return [received.message for received in self._received if received.applied]

    @property
    def silently_dropped(self) -> list[ReceivedMessage]:
        """Messages answered 200 but not applied, each with its reason."""
        with self._lock:
            return [received for received in self._received if not received.applied]

    def profiles(self, write_key: str | None = None) -> dict[ProfileKey, dict[str, Any]]:
        """Latest traits per identity from the applied identify/group calls sent with ``write_key``.

        Traits are merged in arrival order; a trait sent as null is kept as null, as Segment stores
        it. Identity resolution (merging an anonymousId into a userId) is not emulated. With several
        accepted keys, ``write_key`` is required: each key stands for its own destination.
        """
        if write_key is None:
            if len(self.write_keys) > 1:
                raise ValueError("this server accepts several write keys: say whose profiles you want")
            write_key = self.write_key
        fingerprint = self._fingerprints[write_key]
        with self._lock:
            profiles = self._profiles.get(fingerprint, {})
            return {key: dict(traits) for key, traits in profiles.items()}

    @property
    def profile_api_log(self) -> list[tuple[str, int]]:
        """(path with query, status) of every Profile API request, in arrival order."""
        with self._lock:
            return list(self._profile_log)

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
        """Counters; ``messages`` counts received messages, ``applied`` + ``silently_dropped`` split them."""
        with self._lock:
            return {
                "requests": self._requests,
                "messages": self._message_count,
                "applied": self._applied_count,
                "silently_dropped": self._dropped_count,
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

    async def _messages_endpoint(self, request: Request) -> Response:
        """What was received and applied; ``?limit=N`` keeps the last N messages."""
        limit = request.query_params.get("limit")
        if limit is not None and not limit.isdigit():
            return _error(400, "limit must be a non-negative integer")
        received = self.received
        if limit is not None:
            received = received[len(received) - int(limit) :] if int(limit) else []
        stats = self.stats()
        payload = {
            "record": self.record,
            "received": stats["messages"],
            "applied": stats["applied"],
            "silently_dropped": stats["silently_dropped"],
            "messages": [message.to_json() for message in received],
        }
        return _json(200, payload)

    async def _health(self, request: Request) -> Response:
        return Response(b"ok", media_type="text/plain")

    async def _profile_traits(self, request: Request) -> Response:
        """Segment's Profile API ``/traits`` over the applied identify calls (see the module docstring)."""
        response = self._traits_answer(request)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        with self._lock:
            self._profile_log.append((target, response.status_code))
        return response

    def _traits_answer(self, request: Request) -> Response:
        with self._lock:
            injected = bool(self._profile_faults)
            retry_after = self._profile_faults.popleft() if injected else None
        if injected:
            headers = {"Retry-After": retry_after} if retry_after is not None else None
            return _profile_error(429, "rate_limit_error", "Too Many Requests (injected)", headers)
        space = request.path_params["space"]
        token = self._profile_spaces.get(space)
        if token is None or self._check_token(request.headers.get("authorization")) != token:
            return _profile_error(401, "authentication_error", "invalid access token for this space")
        kind, _, value = request.path_params["external_id"].partition(":")
        params = request.query_params
        limit_text, offset_text = params.get("limit", str(PROFILE_DEFAULT_TRAITS)), params.get("next", "0")
        if not (
            limit_text.isdigit() and 1 <= int(limit_text) <= PROFILE_MAX_TRAITS and offset_text.isdigit()
        ):
            return _profile_error(
                400, "validation_error", f"limit must be 1..{PROFILE_MAX_TRAITS}, next a cursor"
            )
        with self._lock:
            found = self._unify.get((kind, value))
            traits = dict(found) if found is not None else None
        if traits is None:
            return _profile_error(404, "not_found", "Profile was not found.")
        wanted = [t for t in params.get("include", "").split(",") if t]
        names = sorted(t for t in traits if not wanted or t in wanted)
        limit, offset = int(limit_text), int(offset_text)
        page = names[offset : offset + limit]
        more = offset + limit < len(names)
        cursor = {
            "url": request.url.path,
            "has_more": more,
            "next": str(offset + limit) if more else "",
            "limit": limit,
        }
        return _json(200, {"traits": {name: traits[name] for name in page}, "cursor": cursor})

    @staticmethod
    def _check_token(header: str | None) -> str | None:
        """The user name of a Basic header with an empty password (the Profile API's form), else None."""
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            username, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return username if colon and not password else None

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
            answer = await self._respond(request, single_type, fault)
        finally:
            with self._lock:
                self._in_flight -= 1
        with self._lock:
            self._log.append(
                RequestRecord(
                    path=request.url.path,
                    status=answer.response.status_code,
                    messages=answer.messages,
                    auth=answer.auth,
                    user_agent=request.headers.get("user-agent"),
                    content_type=request.headers.get("content-type"),
                    body_bytes=answer.body_bytes,
                )
            )
        return answer.response

    async def _respond(self, request: Request, single_type: str | None, fault: _Fault | None) -> _Answer:
        """Validate like Segment, then record what was received and applied."""
        body_bytes = 0
        if fault is not None:
            if fault.kind == "drop":
                await self._drop_connection(request)
                return _Answer(Response(status_code=499))
            if fault.kind == "delay":
                body_bytes = len(await request.body())
                if await self._client_left_within(request, fault.seconds):
                    return _Answer(Response(status_code=499), body_bytes=body_bytes)
            elif fault.kind == "rate_limit":
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = fault.retry_after
                if fault.reset_after is not None:
                    headers["X-RateLimit-Reset"] = fault.reset_after
                payload = {"success": False, "message": "Too Many Requests (injected)"}
                return _Answer(_json(429, payload, headers))
            elif fault.kind == "answer":
                response = Response(
                    fault.body, status_code=fault.status, media_type=fault.content_type, headers=fault.headers
                )
                return _Answer(response)
            else:
                return _Answer(_error(fault.status, f"injected failure {fault.status}"))

        header_key = self._check_basic_auth(request.headers.get("authorization"))
        if header_key is False:
            return _Answer(_error(401, "invalid write key"))
        if not (request.headers.get("content-type") or "").startswith("application/json"):
            return _Answer(self._refuse("Content-Type must be application/json"))
        body = await request.body()
        body_bytes = len(body)
        limit = MAX_MESSAGE_BYTES if single_type else MAX_REQUEST_BYTES
        if len(body) > limit:
            refusal = self._refuse(f"request body of {len(body)} bytes is over the {limit}-byte limit")
            return _Answer(refusal, body_bytes=body_bytes)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _Answer(self._refuse("invalid JSON"), body_bytes=body_bytes)
        if not isinstance(payload, dict):
            return _Answer(self._refuse("the body must be a JSON object"), body_bytes=body_bytes)
        auth: Literal["basic", "body"] = "basic"
        body_key = payload.pop("writeKey", None)
        if header_key is None:
            if body_key not in self._fingerprints:
                return _Answer(_error(401, "missing or invalid write key"), body_bytes=body_bytes)
            header_key, auth = str(body_key), "body"

        if single_type:
            messages = [payload]
            payload.setdefault("type", single_type)
        else:
            batch = payload.get("batch")
            if not isinstance(batch, list):
                return _Answer(self._refuse("'batch' must be a list of messages"), 0, auth, body_bytes)
            messages = batch
        problem = self._invalid(messages, check_sizes=len(body) > MAX_MESSAGE_BYTES and not single_type)
        if problem:
            return _Answer(self._refuse(problem), 0, auth, body_bytes)
        with self._lock:
            rule = self._reject
        if rule is not None and any(rule[0](message) for message in messages):
            return _Answer(self._refuse(rule[2], status=rule[1]), 0, auth, body_bytes)
        if len(messages) > MAX_BATCH_MESSAGES:
            with self._lock:
                self._dropped_oversized_batches += 1
            return _Answer(_json(200, {"success": True}), 0, auth, body_bytes)
        self._accept(messages, header_key)
        return _Answer(_json(200, {"success": True}), len(messages), auth, body_bytes)

    def _accept(self, messages: list[dict[str, Any]], write_key: str) -> None:
        """Count, deduplicate, apply Unify's limits and merge profiles, in arrival order."""
        if self.record == "none":
            return
        fingerprint = self._fingerprints[write_key]
        with self._lock:
            self._message_count += len(messages)
            received = []
            for message in messages:
                dropped = self._drop_reason(message)
                if dropped is None:
                    self._applied_count += 1
                    if self.record == "all":
                        self._merge_profile(fingerprint, message)
                else:
                    self._dropped_count += 1
                received.append(ReceivedMessage(message, fingerprint, dropped))
            if self.record == "all":
                self._received.extend(received)
        if self._on_message is not None:
            for item in received:
                self._on_message(item)

    def _drop_reason(self, message: dict[str, Any]) -> str | None:
        """Why Segment would answer 200 and not apply ``message``; marks its id as seen. Holds the lock."""
        message_id = message.get("messageId")
        if message_id is not None:
            message_id = str(message_id)
            if len(message_id) >= MAX_MESSAGE_ID_CHARS:
                return (
                    f"messageId of {len(message_id)} characters (Unify drops {MAX_MESSAGE_ID_CHARS} or more)"
                )
            if message_id in self._seen_ids:
                return "duplicate messageId: already accepted (Segment deduplicates across sources and workspaces)"
            self._seen_ids.add(message_id)
        return _unify_limit(message)

    def _merge_profile(self, fingerprint: str, message: dict[str, Any]) -> None:
        """Merge an applied identify/group's traits into its profile (nulls kept). Holds the lock."""
        key = _profile_key(message)
        if key is None:
            return
        traits = message.get("traits")
        profile = self._profiles.setdefault(fingerprint, {}).setdefault(key, {})
        if isinstance(traits, dict):
            profile.update(traits)
            if key[0] == "identify":
                for field, kind in (("userId", "user_id"), ("anonymousId", "anonymous_id")):
                    if message.get(field):
                        self._unify.setdefault((kind, str(message[field])), {}).update(traits)

    def _check_basic_auth(self, header: str | None) -> str | Literal[False] | None:
        """The accepted key of a Basic header, False for a wrong one, None when there is none."""
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
        return username if colon and username in self._fingerprints else False

    @staticmethod
    def _invalid(messages: list[Any], *, check_sizes: bool) -> str | None:
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                return f"message #{index} is not an object"
            if not message.get("type"):
                return f"message #{index} has no 'type'"
            if not (message.get("userId") or message.get("anonymousId")):
                return f"message #{index} needs a userId or an anonymousId (no_user_anon_id)"
            if message["type"] == "group" and message.get("groupId") is None:
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
            if getattr(connection, "client", None) == client:  # every uvicorn HTTP protocol has one
                connection.transport.close()
        while (await request.receive())["type"] != "http.disconnect":
            pass


def _unify_limit(message: dict[str, Any]) -> str | None:
    """The Unify product limit ``message`` breaks, if any (Segment accepts it, then discards it)."""
    traits = message.get("traits")
    if message.get("type") == "identify" and isinstance(traits, dict) and len(traits) >= MAX_TRAITS:
        return f"identify with {len(traits)} traits (Unify drops {MAX_TRAITS} or more)"
    if message.get("type") == "group":
        group_id = str(message.get("groupId"))
        if not group_id:
            return "group call with an empty groupId (Unify drops it)"
        if len(group_id) > MAX_GROUP_ID_CHARS:
            return f"groupId of {len(group_id)} characters (Unify drops over {MAX_GROUP_ID_CHARS})"
    return None


def _profile_key(message: dict[str, Any]) -> ProfileKey | None:
    """The profile an identify or group call updates; None for other calls."""
    kind = message.get("type")
    if kind == "identify":
        return ("identify", str(message.get("userId") or message.get("anonymousId")))
    if kind == "group":
        return ("group", str(message["groupId"]))
    return None


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
        description="Segment-compatible Tracking API on 127.0.0.1, for tests, benchmarks and seeing what a sync "
        "sends (GET /messages, GET /stats). See docs/test-server.md."
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0 = any free port)")
    parser.add_argument(
        "--write-key",
        action="append",
        dest="write_keys",
        metavar="KEY",
        help="a write key clients may use; repeat for several sources (default: wk)",
    )
    parser.add_argument(
        "--record",
        choices=["none", "count", "all"],
        default="all",
        help="all: keep messages for GET /messages (default); count: counters only (benchmarks); none",
    )
    parser.add_argument(
        "--print-messages",
        action="store_true",
        help="print each received message as one JSON line on stdout (writeKey fingerprint, applied, dropped)",
    )
    parser.add_argument(
        "--profile-space",
        action="append",
        dest="profile_spaces",
        metavar="SPACE=TOKEN",
        help="answer the Profile API /traits route for this space id with this access token; repeatable",
    )
    args = parser.parse_args(argv)
    spaces = dict(item.partition("=")[::2] for item in args.profile_spaces or [])
    if not all(spaces) or not all(spaces.values()):
        parser.error("--profile-space takes SPACE=TOKEN, both non-empty")
    on_message = _print_message if args.print_messages else None
    server = FakeSegmentServer(
        write_keys=args.write_keys or ["wk"],
        port=args.port,
        record=args.record,
        on_message=on_message,
        profile_spaces=spaces,
    )
    server.serve_forever(announce=lambda url: print(f"READY {url}", flush=True))


def _print_message(received: ReceivedMessage) -> None:
    print(orjson.dumps(received.to_json()).decode(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
