"""Pack already-serialised messages into ``/v1/batch`` request bodies, without re-serialising them.

Pure functions. The sync engine serialises each message once (orjson); from then on a message is
an opaque ``bytes`` value and a request body is built by joining bytes. Batches are described as
index ranges into the caller's sequence so delivery results map back to records for free.

The size arithmetic is exact: a body is ``{"batch":[`` + messages joined by ``,`` +
``],"sentAt":"<24-char timestamp>"}``, i.e. ``sum(sizes) + (n - 1) + ENVELOPE_BYTES``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import accumulate

from segment_profiles_pipeline.segment.spec import MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, REQUEST_BYTES_BUDGET

BODY_PREFIX = b'{"batch":['
BODY_SENT_AT = b'],"sentAt":"'
BODY_SUFFIX = b'"}'
SENT_AT_CHARS = len("2024-01-01T00:00:00.000Z")
ENVELOPE_BYTES = len(BODY_PREFIX) + len(BODY_SENT_AT) + SENT_AT_CHARS + len(BODY_SUFFIX)


class MessageTooLargeError(ValueError):
    """A message over Segment's 32 KB limit reached the packer; the caller must reject it per record."""


def plan_batches(
    messages: Sequence[bytes],
    *,
    max_messages: int = MAX_BATCH_MESSAGES,
    max_bytes: int = REQUEST_BYTES_BUDGET,
) -> list[tuple[int, int]]:
    """Split ``messages`` into consecutive ``(start, stop)`` ranges whose bodies fit both limits.

    Order is preserved and every range is as long as the limits allow (greedy), which minimises
    the request count. Prefix sums and bisection keep the per-message work in C, because this runs
    over millions of messages per sync.
    """
    if max_messages < 1:
        raise ValueError(f"max_messages must be at least 1, got {max_messages}")
    sizes = list(map(len, messages))
    if not sizes:
        return []
    largest = max(sizes)
    if largest > MAX_MESSAGE_BYTES:
        index = sizes.index(largest)
        raise MessageTooLargeError(
            f"message #{index} is {largest} bytes, over Segment's {MAX_MESSAGE_BYTES}-byte limit per message; "
            "reject it before delivery (it would make Segment refuse the whole batch)."
        )
    if largest + ENVELOPE_BYTES > max_bytes:
        raise ValueError(f"max_bytes={max_bytes} cannot hold a {largest}-byte message plus the envelope")
    # cumulative[i] = bytes of messages[:i] counting one separator comma after each message.
    cumulative = [0, *accumulate(size + 1 for size in sizes)]
    # A range [start, stop) costs cumulative[stop] - cumulative[start] - 1 + ENVELOPE_BYTES.
    room = max_bytes - ENVELOPE_BYTES + 1
    ranges: list[tuple[int, int]] = []
    start, total = 0, len(sizes)
    while start < total:
        by_bytes = bisect_right(cumulative, cumulative[start] + room, lo=start + 1) - 1
        stop = min(by_bytes, start + max_messages, total)
        ranges.append((start, stop))
        start = stop
    return ranges


def request_body(messages: Sequence[bytes], sent_at: str) -> bytes:
    """The ``/v1/batch`` body for ``messages``: a byte join, never a JSON round trip."""
    if len(sent_at) != SENT_AT_CHARS:
        raise ValueError(f"sent_at must be a {SENT_AT_CHARS}-char UTC timestamp, got {sent_at!r}")
    return b"".join((BODY_PREFIX, b",".join(messages), BODY_SENT_AT, sent_at.encode("ascii"), BODY_SUFFIX))


def format_sent_at(moment: datetime | None = None) -> str:
    """``sentAt`` as Segment expects it (UTC, millisecond precision, ``Z``); Segment uses it to correct
    client clock skew, so it is stamped per attempt rather than when the batch was planned."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
