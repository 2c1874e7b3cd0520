"""What a delivery attempt says about one message: the contract between the HTTP client and the sync.

A failure carries a stable ``code`` (searchable, for alerts and SQL), a human ``reason`` and
whether it is the *record's* fault. Only record-level failures (Segment rejected that very
message) consume the record's retry budget; account- and transport-level failures (wrong key,
connection refused, timeouts, 5xx, 429, an answer that is not Segment's success body) say
nothing about the record, so an outage never expires data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

AUTH: Final = "auth_refused"
"""401/403: the write key is wrong for every message."""
TRANSPORT: Final = "transport"
"""Connection refused or dropped, timeouts: nothing was answered."""
SERVER_ERROR: Final = "server_error"
"""5xx or 408 after the client's retries."""
RATE_LIMITED: Final = "rate_limited"
"""429 after the client's retries."""
NOT_ACKNOWLEDGED: Final = "not_acknowledged"
"""A 2xx/3xx whose body is not the Tracking API's success answer (a proxy page, ``{"success": false}``)."""
REJECTED: Final = "rejected"
"""A 4xx Segment gave for one message on its own: the message itself is the problem."""
NOT_SENT: Final = "not_sent"
"""Skipped because an earlier request of the same delivery already proved the key wrong."""


@dataclass(frozen=True)
class DeliveryFailure:
    """Why one message was not acknowledged."""

    code: str
    reason: str
    record_level: bool = False
    """True only when Segment rejected this message itself; then it counts against ``retry.max_syncs``."""


Outcome = DeliveryFailure | None
"""``None`` means acknowledged by Segment's documented success answer."""
