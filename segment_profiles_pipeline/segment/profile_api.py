"""A small client for Segment's Profile API ``/traits`` route: read back what a profile holds.

Facts from Segment's Profile API docs (``/work/shared/SEGMENT_REFERENCE.md`` section 6):

- base URL per region: ``https://profiles.segment.com`` (US) and ``https://profiles.euw1.segment.com``
  (EU); route ``/v1/spaces/<space_id>/collections/users/profiles/<type>:<value>/traits``;
- HTTP Basic auth with the space's access token as user name and an empty password;
- ``include=a,b`` limits the answer to those traits; ``limit`` (up to 200) and the ``next`` cursor
  page through the rest (the default page is only 10 traits, so it is always set);
- 100 requests per second per space; 429 asks to back off (``Retry-After`` when given, otherwise
  exponential); 404 ``not_found`` is a profile Segment does not have.

The token is a secret: it never appears in ``repr``, and every answer text quoted in an error
passes through the write key's masking (raw, Basic-auth base64, URL-encoded, any case).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote, urlsplit

import orjson

from segment_profiles_pipeline.errors import ConfigError, PipelineError
from segment_profiles_pipeline.segment.client import (
    MASK,
    _parse_rate_limit_reset,
    _parse_retry_after,
    _secret_pattern,
    user_agent,
)
from segment_profiles_pipeline.segment.spec import DEFAULT_REGION, is_loopback_host

if TYPE_CHECKING:  # httpx (~0.1 s) is imported when a client is made, not at each definitions load
    import httpx

PROFILE_API_REGIONS: dict[str, str] = {
    "north_america": "https://profiles.segment.com",
    "europe": "https://profiles.euw1.segment.com",
}
"""Profile API base URL per Segment region (the same ``SEGMENT_REGION`` as the Tracking API)."""
TRAITS_PAGE = 200
"""The most traits one ``/traits`` answer may hold (``limit``); the default is only 10."""
MAX_REQUESTS_PER_SECOND = 100.0
"""Segment's Profile API limit, per space."""
_BODY_CHARS = 200

AUTH_REFUSED = "auth_refused"
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
TRANSPORT = "transport"
BAD_ANSWER = "bad_answer"


class ProfileApiError(PipelineError):
    """The Profile API could not answer a lookup; ``code`` is one of the constants above."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


def resolve_profile_api_base(region: str | None, endpoint: str | None) -> str:
    """The Profile API base URL: ``SEGMENT_PROFILE_API_ENDPOINT`` if set, else the region's.

    Like the Tracking API endpoint, plain ``http`` is refused except on loopback: the access token
    travels in the Authorization header. A refused value is described, never repeated."""
    if endpoint:
        parts = urlsplit(endpoint.strip())
        fix = "set it to an https:// URL (or http://127.0.0.1:<port> for the local test server), or unset it."
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.username:
            raise ConfigError(
                "not an http(s) base URL without query or credentials (the value is not repeated here).",
                field="SEGMENT_PROFILE_API_ENDPOINT",
                fix=fix,
            )
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ConfigError(
                f"plain http is only allowed for loopback hosts, not '{parts.hostname}': the access token "
                "would be sent unencrypted.",
                field="SEGMENT_PROFILE_API_ENDPOINT",
                fix=fix,
            )
        return f"{parts.scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"
    key = (region or DEFAULT_REGION).strip().lower()
    if key not in PROFILE_API_REGIONS:
        raise ConfigError(
            f"unknown Segment region '{region}'.",
            field="SEGMENT_REGION",
            fix=f"set it to one of {', '.join(sorted(PROFILE_API_REGIONS))}.",
        )
    return PROFILE_API_REGIONS[key]


def traits_path(space_id: str, external_id: str) -> str:
    """The ``/traits`` path of a user profile; the value is URL-encoded (``+`` → ``%2B``, ``/``…)."""
    kind, _, value = external_id.partition(":")
    return (
        f"/v1/spaces/{quote(space_id, safe='')}/collections/users/profiles/"
        f"{kind}:{quote(value, safe='')}/traits"
    )


@dataclass
class ProfileApiStats:
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0


class ProfileApiClient:
    """Blocking ``/traits`` reader: paced under the rate limit, retries 429 / 5xx / transport errors.

    ``sleep`` replaces the wait used for backoff and ``Retry-After`` so tests can check the delays
    asked for without waiting; pacing under the rate limit always uses the real clock."""

    def __init__(
        self,
        base_url: str,
        space_id: str,
        token: str,
        *,
        max_requests_per_second: float = MAX_REQUESTS_PER_SECOND,
        max_retries: int = 5,
        timeout_s: float = 10.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not (space_id and token):
            raise ValueError("ProfileApiClient needs a space id and an access token")
        if not 0 < max_requests_per_second <= MAX_REQUESTS_PER_SECOND:
            raise ValueError(f"max_requests_per_second must be in (0, {MAX_REQUESTS_PER_SECOND:g}]")
        self.base_url = base_url.rstrip("/")
        self.space_id = space_id
        self._secrets = _secret_pattern(token)
        self._interval = 1.0 / max_requests_per_second
        self._next_slot = 0.0
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        self._random = random.Random()
        self.stats = ProfileApiStats()
        import httpx  # ~0.1 s: a read-back pays it, not each definitions load

        self._http = httpx.Client(
            auth=httpx.BasicAuth(token, ""),
            headers={"User-Agent": user_agent(), "Accept": "application/json"},
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"ProfileApiClient(base_url={self.base_url!r}, space_id={self.space_id!r}, token='{MASK}')"

    __str__ = __repr__

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.close()

    def traits(self, external_id: str, include: Sequence[str] = ()) -> dict[str, Any] | None:
        """Every trait of the profile (``include``: only those), over all pages; None when Segment has no such profile."""
        params: dict[str, str] = {"limit": str(TRAITS_PAGE)}
        if include:
            params["include"] = ",".join(include)
        url = self.base_url + traits_path(self.space_id, external_id)
        traits: dict[str, Any] = {}
        while True:
            answer = self._get(url, params, external_id)
            if answer is None:
                return None
            page, cursor = answer.get("traits"), answer.get("cursor") or {}
            if not isinstance(page, dict):
                raise ProfileApiError(BAD_ANSWER, f"{external_id}: the answer has no 'traits' object.")
            traits.update(page)
            if not cursor.get("has_more") or not cursor.get("next"):
                return traits
            params = {**params, "next": str(cursor["next"])}

    def _get(self, url: str, params: dict[str, str], external_id: str) -> dict[str, Any] | None:
        """One page, with retries; None for 404."""
        import httpx  # already imported by __init__: a dictionary lookup

        attempts = self._max_retries + 1
        for attempt in range(1, attempts + 1):
            self._pace()
            self.stats.requests += 1
            wait: float | None = None
            try:
                response = self._http.get(url, params=params)
            except httpx.TransportError as error:
                problem, code = f"connection error ({type(error).__name__})", TRANSPORT
            else:
                status = response.status_code
                if status == 200:
                    return self._json(response, external_id)
                if status == 404:
                    return None
                if status in (401, 403):
                    raise ProfileApiError(
                        AUTH_REFUSED,
                        f"HTTP {status}: the Profile API refused the access token for space '{self.space_id}' "
                        f"({self._short(response.text)}).",
                    )
                if status == 429:
                    self.stats.rate_limited += 1
                    wait = self._retry_after(response)
                    problem, code = "HTTP 429 (rate limited)", RATE_LIMITED
                elif status >= 500:
                    problem, code = f"HTTP {status}", SERVER_ERROR
                else:
                    raise ProfileApiError(
                        BAD_ANSWER,
                        f"{external_id}: HTTP {status} from the Profile API: {self._short(response.text)}",
                    )
            if attempt == attempts:
                raise ProfileApiError(code, f"{external_id}: {problem} after {attempts} attempts.")
            self.stats.retries += 1
            self._sleep(self._backoff(attempt) if wait is None else wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _pace(self) -> None:
        """At most ``max_requests_per_second``: each request takes the next free slot on the clock."""
        now = time.monotonic()
        if self._next_slot > now:
            time.sleep(self._next_slot - now)
            now = self._next_slot
        self._next_slot = now + self._interval

    def _json(self, response: httpx.Response, external_id: str) -> dict[str, Any]:
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise ProfileApiError(
                BAD_ANSWER,
                f"{external_id}: HTTP 200 without a JSON object ({self._short(response.text)}): is the "
                "Profile API endpoint right?",
            )
        return answer

    def _short(self, text: str) -> str:
        flat = " ".join(self._secrets.sub(MASK, text).split())
        return flat if len(flat) <= _BODY_CHARS else flat[: _BODY_CHARS - 1] + "…"

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, as Segment's Profile API docs recommend."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2 ** (attempt - 1))
        return self._random.uniform(ceiling / 2, ceiling)

    def _retry_after(self, response: httpx.Response) -> float | None:
        wait = _parse_retry_after(response.headers.get("retry-after"))
        if wait is None:
            wait = _parse_rate_limit_reset(response.headers.get("x-ratelimit-reset"))
        return None if wait is None else min(max(wait, 0.0), self._max_retry_after_s)
