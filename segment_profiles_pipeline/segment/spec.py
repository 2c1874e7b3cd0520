"""Segment Tracking API facts this project relies on: regions, endpoint rules and size limits.

Pure constants and helpers, no I/O, so the rest of the code (payload building, batching, the HTTP
client, the fake server used by tests) agrees on one set of numbers. Sources are cited in
``/work/shared/SEGMENT_REFERENCE.md`` sections 1.2 and 2.
"""

from __future__ import annotations

import hashlib
import ipaddress
from urllib.parse import SplitResult, urlsplit

from segment_profiles_pipeline.errors import ConfigError

REGIONS: dict[str, str] = {
    "north_america": "https://api.segment.io",
    "europe": "https://events.eu1.segmentapis.com",
}
"""Tracking API base URL per Segment region. An EU workspace sending to the US endpoint gets 200s
and silently loses every event, which is why the region is an explicit setting."""

DEFAULT_REGION = "north_america"
BATCH_PATH = "/v1/batch"

MAX_MESSAGE_BYTES = 32 * 1024
"""Segment rejects a call (the whole batch) if one message is over 32 KB."""

MAX_REQUEST_BYTES = 500 * 1024
"""Segment's documented ceiling for one ``/v1/batch`` request body."""

REQUEST_BYTES_BUDGET = 475_000
"""What the client actually packs into one request body (envelope included). Like analytics-python's
``BATCH_SIZE_LIMIT`` it stays under 500 KB whether Segment means 500,000 or 512,000 bytes."""

MAX_BATCH_MESSAGES = 2500
"""Above this, Segment answers 200 and drops the whole batch, so the limit must never be crossed."""

MAX_MESSAGE_ID_CHARS = 100
"""Segment deduplicates on ``messageId`` only when it is shorter than this."""

MAX_TRAITS = 300
"""Unify answers 200 but drops a profile update carrying this many traits or more."""

MAX_GROUP_ID_CHARS = 500
"""Unify answers 200 but drops a group call whose ``groupId`` is longer than this."""


DRY_RUN_SALT = "dry-run"


def destination_salt(write_key: str | None) -> str:
    """A per-destination salt for message ids: a hash of the write key, never the key itself.

    Segment deduplicates on ``messageId`` across sources and workspaces, so staging and
    production sending the same data must not share ids."""
    if not write_key:
        return DRY_RUN_SALT
    return hashlib.blake2b(write_key.encode(), digest_size=8, person=b"spp-dest").hexdigest()


def resolve_endpoint(region: str | None, endpoint: str | None) -> str:
    """Tracking API base URL (no trailing slash) from ``SEGMENT_REGION`` / ``SEGMENT_ENDPOINT``.

    An explicit endpoint wins over the region, so tests and proxies can point anywhere. A trailing
    ``/v1`` is accepted and removed because Segment's own docs print base URLs with it; requests then
    go to ``<base>/v1/batch``. Plain ``http://`` is refused except for loopback hosts: the write key
    travels in the Authorization header and must never cross a network in clear text.
    """
    if endpoint is not None and endpoint.strip():
        return _validate_endpoint(endpoint.strip())
    key = (region or DEFAULT_REGION).strip().lower() or DEFAULT_REGION
    if key not in REGIONS:
        raise ConfigError(
            f"SEGMENT_REGION: unknown Segment region '{region}'.",
            field="SEGMENT_REGION",
            fix=f"set SEGMENT_REGION to one of {', '.join(sorted(REGIONS))} (the region of your Segment workspace).",
        )
    return REGIONS[key]


def batch_url(base_url: str) -> str:
    """Full ``/v1/batch`` URL for a base URL returned by :func:`resolve_endpoint`."""
    return base_url + BATCH_PATH


def _validate_endpoint(endpoint: str) -> str:
    """Normalise a valid endpoint or refuse it; a refused value is described, never repeated.

    A value that is not a URL may well be a secret pasted into the wrong variable (the write key in
    ``SEGMENT_ENDPOINT``), and the error ends up in logs and the Dagster UI.
    """
    parts = urlsplit(endpoint)
    fix_url = "set SEGMENT_ENDPOINT to a base URL such as https://api.segment.io, or unset it to use SEGMENT_REGION."
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(
            "SEGMENT_ENDPOINT must not contain a query string, fragment or credentials.",
            field="SEGMENT_ENDPOINT",
            fix=fix_url + " The write key belongs in SEGMENT_WRITE_KEY.",
        )
    problem = _url_problem(endpoint, parts)
    if problem is not None:
        raise ConfigError(
            f"SEGMENT_ENDPOINT is not an http(s) URL: {problem} (the value is not repeated here in case it is a secret).",
            field="SEGMENT_ENDPOINT",
            fix=fix_url,
        )
    assert parts.hostname is not None
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError(
            f"SEGMENT_ENDPOINT: plain http is only allowed for loopback hosts, not '{parts.hostname}': "
            "the write key would be sent unencrypted.",
            field="SEGMENT_ENDPOINT",
            fix="use an https:// URL (or http://127.0.0.1:<port> for a local test server).",
        )
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1")
    netloc = parts.netloc.lower()
    return f"{parts.scheme}://{netloc}{path}"


def _url_problem(endpoint: str, parts: SplitResult) -> str | None:
    """What makes ``endpoint`` not an http(s) URL, in words that do not quote any part of it."""
    if "://" not in endpoint:
        return (
            f"a {len(endpoint)}-character value without '://' "
            "(if it is the write key, move it to SEGMENT_WRITE_KEY and rotate it if it was shared)"
        )
    if parts.scheme not in {"http", "https"}:
        return "the scheme must be http or https"
    if not parts.hostname:
        return "it has no host name"
    try:
        valid_port = parts.port is None or parts.port > 0
    except ValueError:
        valid_port = False
    return None if valid_port else "its port is not a number between 1 and 65535"


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1: the only places clear-text HTTP cannot leak to."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
