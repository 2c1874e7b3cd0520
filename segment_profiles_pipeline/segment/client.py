"""Deliver serialised messages to Segment's ``/v1/batch`` with bounded concurrency and honest retries.

The sync engine runs in ordinary (synchronous) Dagster steps but needs several requests in flight
over kept-alive connections to reach tens of thousands of messages per second. So
:class:`SegmentClient` owns one asyncio loop in a background thread plus one ``httpx.AsyncClient``
for its whole lifetime, and ``deliver`` is a blocking call that runs one delivery on that loop.

``deliver`` returns one :data:`~segment_profiles_pipeline.segment.outcomes.Outcome` per message.
A message is acknowledged (``None``) only when its request got HTTP 200 *and* the Tracking API's
documented success body, ``{"success": true}``. Everything else is a ``DeliveryFailure``:

* 429: wait ``Retry-After`` / ``X-RateLimit-Reset`` (capped), then retry; ``rate_limited`` once
  the retries are spent.
* 5xx, 408: exponential backoff with full jitter, bounded retries, then ``server_error``.
* timeouts, refused or dropped connections: the same backoff, then ``transport``.
* 401/403: the key is wrong for every message, so the batch fails as ``auth_refused`` and the rest
  of the delivery is not even sent (``not_sent``), with a reason pointing at ``SEGMENT_WRITE_KEY``.
* other 4xx (400, 413, ...): Segment rejects a whole request for one bad message, so the batch is
  split in halves recursively until the bad message is alone; that message is ``rejected``, the
  only record-level outcome (it alone consumes the record's retry budget).
* any other 2xx or a 3xx (redirects are not followed: a redirect would replay the write key to
  wherever it points), or a 200 whose body is not ``{"success": true}`` (a proxy's HTML page,
  ``{"success": false}``, an empty or non-JSON body): ``not_acknowledged``, with the status and the
  body's first bytes in the reason.

``not_acknowledged`` is *not* retried within the call. Such an answer comes from something
deterministic (a wrong ``SEGMENT_ENDPOINT``, a proxy or captive portal, a redirect), so retrying at
once would only delay the sync by the whole backoff budget for the same answer. Nothing is lost:
the records stay unacknowledged, the next sync plans them again, and since the failure is not
record-level it never expires them. Nor does it split the batch: it says nothing about a message.

Every reason passes through :meth:`SegmentClient._short`, which masks the write key in each form a
server may echo (raw, Basic-auth base64, URL-encoded, any letter case).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar
from urllib.parse import quote, quote_plus

import orjson

from segment_profiles_pipeline import __version__
from segment_profiles_pipeline.segment import outcomes
from segment_profiles_pipeline.segment.batching import format_sent_at, plan_batches, request_body
from segment_profiles_pipeline.segment.outcomes import DeliveryFailure, Outcome
from segment_profiles_pipeline.segment.spec import batch_url, destination_salt

if TYPE_CHECKING:  # httpx (~0.1 s) is imported when a client opens, not at each definitions load
    import httpx

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")

REASON_BODY_CHARS = 300
_RETRY_BODY_CHARS = 120
MASK = "***"
_CHECK_ENDPOINT = "Check that SEGMENT_ENDPOINT points at a Segment Tracking API (or unset it)."
_EPOCH_THRESHOLD_S = 1_000_000_000
"""An ``X-RateLimit-Reset`` above this is a Unix timestamp, not a number of seconds to wait."""


@functools.cache
def user_agent() -> str:
    """``segment-profiles-pipeline/<version> (httpx/<version>)``. A function, not a constant: reading
    httpx's version imports httpx (~0.1 s), which only a client should pay, not each definitions load."""
    import httpx

    return f"segment-profiles-pipeline/{__version__} (httpx/{httpx.__version__})"


@dataclass
class DeliveryStats:
    """Counters over the client's lifetime, for run metadata and benchmarks."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    connection_errors: int = 0
    client_errors: int = 0
    splits: int = 0
    not_acknowledged: int = 0
    bytes_sent: int = 0
    messages_acknowledged: int = 0
    messages_failed: int = 0


class _Retry(Exception):
    """One attempt failed in a retryable way: its outcome code, what failed (``HTTP 503``), details,
    and a wait hint."""

    def __init__(self, code: str, label: str, detail: str, wait_s: float | None):
        super().__init__(label)
        self.code = code
        self.label = label
        self.detail = detail
        self.wait_s = wait_s


class _TokenBucket:
    """Caps the request rate. It sleeps with the real ``asyncio.sleep``: it paces, it is not backoff."""

    def __init__(self, rate: float, burst: float):
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._updated = time.monotonic()

    async def acquire(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self._tokens) / self._rate)


class _Delivery:
    """State of one ``deliver`` call: the per-message outcomes and an auth failure that stops the rest."""

    def __init__(self, messages: list[bytes]):
        self.messages = messages
        self.outcomes: list[Outcome] = [None] * len(messages)
        self.auth_failure: DeliveryFailure | None = None

    def fail(self, start: int, stop: int, failure: DeliveryFailure) -> None:
        self.outcomes[start:stop] = [failure] * (stop - start)


class SegmentClient:
    """Blocking facade over an async batch sender; use it as a context manager.

    ``sleep`` replaces the wait used for backoff and ``Retry-After`` so tests can run retries
    instantly and check the delays asked for. The write key is kept out of ``repr`` and every message.
    """

    def __init__(
        self,
        endpoint: str,
        write_key: str,
        *,
        max_in_flight: int = 4,
        max_requests_per_second: float = 500.0,
        timeout_s: float = 30.0,
        max_retries: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 300.0,
        sleep: Sleep | None = None,
    ):
        if not write_key:
            raise ValueError(
                "SegmentClient needs a write key; without SEGMENT_WRITE_KEY the sync is a dry run"
            )
        if max_in_flight < 1 or max_requests_per_second <= 0 or max_retries < 0:
            raise ValueError(
                "max_in_flight >= 1, max_requests_per_second > 0 and max_retries >= 0 are required"
            )
        self.endpoint = endpoint.rstrip("/")
        self._write_key = write_key
        self._secrets = _secret_pattern(write_key)
        self._url = batch_url(self.endpoint)
        self._headers = {
            "Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": user_agent(),
        }
        self.max_in_flight = max_in_flight
        self.max_requests_per_second = max_requests_per_second
        self._timeout_s = timeout_s
        self.max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._max_retry_after_s = max_retry_after_s
        self._sleep: Sleep = sleep or asyncio.sleep
        self._random = random.Random()
        self._stats = DeliveryStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._bucket: _TokenBucket | None = None

    def __repr__(self) -> str:
        return (
            f"SegmentClient(endpoint={self.endpoint!r}, write_key='***', max_in_flight={self.max_in_flight})"
        )

    __str__ = __repr__

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        """Start the loop thread and the HTTP client; connections are then reused across ``deliver`` calls."""
        if self._loop is not None:
            raise RuntimeError("SegmentClient is already open")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="segment-client-loop", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        self._run(self._open_async())

    async def _open_async(self) -> None:
        import httpx  # ~0.1 s: a client that opens pays it, not each definitions load

        self._http = httpx.AsyncClient(
            headers=self._headers,
            follow_redirects=False,
            timeout=httpx.Timeout(self._timeout_s),
            limits=httpx.Limits(
                max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight
            ),
        )
        self._semaphore = asyncio.Semaphore(self.max_in_flight)
        self._bucket = _TokenBucket(self.max_requests_per_second, burst=float(self.max_in_flight))

    def close(self) -> None:
        """Close connections and stop the loop thread; safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if self._http is not None:
                self._run(self._http.aclose())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._loop = self._thread = self._http = None

    def _run(self, coroutine: Awaitable[T]) -> T:
        """Run ``coroutine`` on the loop thread and wait; an interrupt of the caller cancels it."""
        assert self._loop is not None
        return _wait(asyncio.run_coroutine_threadsafe(coroutine, self._loop))  # type: ignore[arg-type]

    # -- public API ------------------------------------------------------------------------------

    @property
    def destination_salt(self) -> str:
        """Salt for message ids: a hash of the write key (the key itself never leaves this object)."""
        return destination_salt(self._write_key)

    @property
    def stats(self) -> DeliveryStats:
        """A snapshot of the counters (a copy, so callers can diff two snapshots)."""
        return replace(self._stats)

    def deliver(self, messages: Sequence[bytes]) -> list[Outcome]:
        """Send ``messages`` (serialised JSON objects) and wait for the outcome of every one.

        Returns one entry per message, in order: ``None`` when its batch got Segment's success
        answer, otherwise a ``DeliveryFailure`` (see the module docstring for the codes). Raises
        ``MessageTooLargeError`` if a message is over 32 KB (the caller rejects those per record
        before delivering).
        """
        return _wait(self.submit(messages))

    def submit(self, messages: Sequence[bytes]) -> Future[list[Outcome]]:
        """Start delivering ``messages`` and return at once; the future answers what ``deliver``
        would. The sync renders its next chunk while this one is on the wire, so it is not idle
        while the server (in production, the network round trip) works.

        Deliveries submitted together share the ``max_in_flight`` connections, in submission
        order. Cancelling the future abandons the delivery: nothing it sent is acknowledged.
        """
        if self._loop is None:
            raise RuntimeError("SegmentClient is not open; use `with SegmentClient(...) as client:`")
        batch = messages if isinstance(messages, list) else list(messages)
        if not batch:
            done: Future[list[Outcome]] = Future()
            done.set_result([])
            return done
        return asyncio.run_coroutine_threadsafe(self._deliver(batch), self._loop)

    # -- async implementation --------------------------------------------------------------------

    async def _deliver(self, messages: list[bytes]) -> list[Outcome]:
        delivery = _Delivery(messages)
        ranges = plan_batches(messages)
        await asyncio.gather(*(self._send_range(delivery, start, stop) for start, stop in ranges))
        failed = sum(outcome is not None for outcome in delivery.outcomes)
        self._stats.messages_failed += failed
        self._stats.messages_acknowledged += len(messages) - failed
        return delivery.outcomes

    async def _send_range(self, delivery: _Delivery, start: int, stop: int) -> None:
        """Deliver ``messages[start:stop]`` with retries; split it on a per-message 4xx."""
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                response = await self._post(delivery, start, stop)
            except _Retry as retry:
                if attempt == attempts:
                    reason = f"{retry.label} after {attempts} attempts: {retry.detail}"
                    delivery.fail(start, stop, DeliveryFailure(retry.code, reason))
                    return
                self._stats.retries += 1
                await self._sleep(self._backoff(attempt) if retry.wait_s is None else retry.wait_s)
                continue
            if response is None:
                assert delivery.auth_failure is not None
                refused = delivery.auth_failure.reason
                reason = f"not sent: an earlier request of this delivery was refused. {refused}"
                delivery.fail(start, stop, DeliveryFailure(outcomes.NOT_SENT, reason))
                return
            await self._settle(delivery, start, stop, response)
            return

    async def _settle(self, delivery: _Delivery, start: int, stop: int, response: httpx.Response) -> None:
        """Turn a final (non-retryable) answer into outcomes; a per-message 4xx splits the range."""
        status = response.status_code
        if status < 400:
            failure = self._not_acknowledged(response)
            if failure is not None:
                self._stats.not_acknowledged += stop - start
                delivery.fail(start, stop, failure)
            return
        self._stats.client_errors += 1
        body = self._short(response.text, REASON_BODY_CHARS)
        if status in (401, 403):
            delivery.auth_failure = DeliveryFailure(
                outcomes.AUTH,
                f"HTTP {status}: Segment refused the write key ({body}). Check SEGMENT_WRITE_KEY "
                "(Segment app > Connections > Sources > your source > Settings > API Keys) and that "
                "SEGMENT_REGION/SEGMENT_ENDPOINT match the workspace's region.",
            )
            delivery.fail(start, stop, delivery.auth_failure)
            return
        if stop - start == 1:
            reason = f"HTTP {status}: Segment rejected this message: {body}"
            delivery.fail(start, stop, DeliveryFailure(outcomes.REJECTED, reason, record_level=True))
            return
        self._stats.splits += 1
        middle = (start + stop) // 2
        await asyncio.gather(
            self._send_range(delivery, start, middle), self._send_range(delivery, middle, stop)
        )

    def _not_acknowledged(self, response: httpx.Response) -> DeliveryFailure | None:
        """None for Segment's success answer (200 + ``{"success": true}``), else why it is not one."""
        status = response.status_code
        if status == 200 and _is_success_body(response.content):
            return None
        body = self._short(response.text, REASON_BODY_CHARS) if response.content else "empty body"
        if status == 200:
            what = 'HTTP 200 without Segment\'s success answer {"success": true}'
        elif status < 300:
            what = f'HTTP {status}: only 200 with {{"success": true}} acknowledges a batch'
        else:
            location = self._short(response.headers.get("location", "nowhere"), REASON_BODY_CHARS)
            what = f"HTTP {status}: redirect to {location} not followed"
        reason = f"{what}; nothing is acknowledged (body: {body}). {_CHECK_ENDPOINT}"
        return DeliveryFailure(outcomes.NOT_ACKNOWLEDGED, reason)

    async def _post(self, delivery: _Delivery, start: int, stop: int) -> httpx.Response | None:
        """One HTTP attempt. Returns final responses (2xx/3xx/4xx), or None when not sent because
        the write key was already refused in this delivery; raises ``_Retry`` for retryable answers."""
        import httpx  # already imported by _open_async: a dictionary lookup

        assert self._http is not None and self._semaphore is not None and self._bucket is not None
        async with self._semaphore:
            if delivery.auth_failure is not None:
                return None
            await self._bucket.acquire()
            body = request_body(delivery.messages[start:stop], format_sent_at())
            self._stats.requests += 1
            self._stats.bytes_sent += len(body)
            try:
                response = await self._http.post(self._url, content=body)
            except httpx.TransportError as error:
                self._stats.connection_errors += 1
                raise _Retry(outcomes.TRANSPORT, "connection error", type(error).__name__, None) from None
        status = response.status_code
        if status == 429:
            self._stats.rate_limited += 1
            detail = self._short(response.text, _RETRY_BODY_CHARS)
            raise _Retry(outcomes.RATE_LIMITED, "HTTP 429", detail, self._retry_after(response))
        if status >= 500 or status == 408:
            self._stats.server_errors += 1
            detail = self._short(response.text, _RETRY_BODY_CHARS)
            raise _Retry(outcomes.SERVER_ERROR, f"HTTP {status}", detail, None)
        return response

    def _short(self, text: str, limit: int) -> str:
        """``text`` on one line, truncated, with the write key masked in every form a server may echo.

        Masking happens before truncating, so a key cut at the limit cannot leak its first half.
        """
        flat = " ".join(self._secrets.sub(MASK, text).split())
        return flat if len(flat) <= limit else flat[: limit - 1] + "…"

    def _backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff: spreads retries of concurrent batches apart."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2 ** (attempt - 1))
        return self._random.uniform(0.0, ceiling)

    def _retry_after(self, response: httpx.Response) -> float | None:
        """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or ``X-RateLimit-Reset``."""
        wait = _parse_retry_after(response.headers.get("retry-after"))
        if wait is None:
            wait = _parse_rate_limit_reset(response.headers.get("x-ratelimit-reset"))
        if wait is None:
            return None
        return min(max(wait, 0.0), self._max_retry_after_s)


def _wait(future: Future[T]) -> T:
    """The future's result; an interrupt of the waiting caller cancels the work on the loop."""
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def _secret_pattern(write_key: str) -> re.Pattern[str]:
    """A case-insensitive pattern for the write key as it may come back from a server.

    Covers the raw key, its URL encodings and the base64 of ``key:`` (the Basic-auth credential) and
    of ``key`` alone, with and without ``=`` padding (longest forms first, so padding is masked too).
    Case-insensitive matching catches servers that lower- or upper-case what they echo.
    """
    forms = {write_key, quote(write_key, safe=""), quote_plus(write_key)}
    for raw in (f"{write_key}:", write_key):
        encoded = base64.b64encode(raw.encode()).decode("ascii")
        forms.update((encoded, encoded.rstrip("=")))
    ordered = sorted(forms - {""}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE)


def _is_success_body(body: bytes) -> bool:
    """True only for the Tracking API's documented success answer, a JSON object with ``success: true``."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(answer, dict) and answer.get("success") is True


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def _parse_rate_limit_reset(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds - time.time() if seconds > _EPOCH_THRESHOLD_S else seconds
