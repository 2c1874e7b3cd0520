import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from segment_profiles_pipeline.segment.batching import (
    ENVELOPE_BYTES,
    MessageTooLargeError,
    format_sent_at,
    plan_batches,
    request_body,
)

SENT_AT = "2024-05-06T07:08:09.123Z"


def message_of(size: int, tag: int = 0) -> bytes:
    """A valid JSON object of exactly ``size`` bytes."""
    head = b'{"t":%d,"p":"' % tag
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_envelope_is_48_bytes():
    # {"batch":[  = 10, ],"sentAt":"  = 12, timestamp = 24, "}  = 2
    assert ENVELOPE_BYTES == 48


def test_body_is_a_byte_join_of_the_messages():
    body = request_body([b'{"a":1}', b'{"b":2}'], SENT_AT)
    assert body == b'{"batch":[{"a":1},{"b":2}],"sentAt":"2024-05-06T07:08:09.123Z"}'
    assert len(body) == 7 + 7 + 1 + 48
    assert json.loads(body) == {"batch": [{"a": 1}, {"b": 2}], "sentAt": SENT_AT}


def test_body_refuses_a_malformed_timestamp():
    with pytest.raises(ValueError, match="sent_at"):
        request_body([b"{}"], "2024-05-06")


def test_sent_at_is_utc_with_milliseconds():
    assert format_sent_at(datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)) == SENT_AT
    plus_two = timezone(timedelta(hours=2))
    assert format_sent_at(datetime(2024, 1, 1, 1, 0, 0, 5000, tzinfo=plus_two)) == "2023-12-31T23:00:00.005Z"
    assert len(format_sent_at()) == 24


def test_no_messages_no_batches():
    assert plan_batches([]) == []


def test_message_count_limit_2500():
    messages = [b"{}"] * 6000
    assert plan_batches(messages) == [(0, 2500), (2500, 5000), (5000, 6000)]


def test_byte_budget_is_exact():
    # 99-byte messages cost 100 bytes each with their comma; the last comma is not sent.
    messages = [message_of(99, i) for i in range(25)]
    ten_fit = 48 + 10 * 99 + 9  # = 1047
    assert plan_batches(messages, max_bytes=ten_fit) == [(0, 10), (10, 20), (20, 25)]
    assert plan_batches(messages, max_bytes=ten_fit - 1) == [(0, 9), (9, 18), (18, 25)]
    assert len(request_body(messages[0:10], SENT_AT)) == ten_fit


def test_default_budget_with_10kb_messages():
    # 48 + 10_000 * n + (n - 1) <= 475_000  ->  n <= 47.49
    messages = [message_of(10_000, i) for i in range(100)]
    assert plan_batches(messages) == [(0, 47), (47, 94), (94, 100)]
    assert len(request_body(messages[0:47], SENT_AT)) == 48 + 470_000 + 46


def test_both_limits_apply_together():
    messages = [message_of(99, i) for i in range(30)]
    assert plan_batches(messages, max_messages=4, max_bytes=1047) == [
        (0, 4),
        (4, 8),
        (8, 12),
        (12, 16),
        (16, 20),
        (20, 24),
        (24, 28),
        (28, 30),
    ]


def test_mixed_sizes_keep_order_and_fill_greedily():
    sizes = [300, 500, 200, 900, 100, 100]
    messages = [message_of(size, i) for i, size in enumerate(sizes)]
    # budget 1100: 48 + 300 + 500 + 200 + 2 commas = 1050 fits; + 900 does not.
    # then 900 alone = 948, + 100 + comma = 1049 fits, + another 100 = 1150 does not.
    assert plan_batches(messages, max_bytes=1100) == [(0, 3), (3, 5), (5, 6)]


def test_a_message_of_exactly_32kb_is_packed():
    assert plan_batches([message_of(32_768)]) == [(0, 1)]


def test_a_message_over_32kb_is_never_packed():
    messages = [message_of(100), message_of(32_769), message_of(100)]
    with pytest.raises(MessageTooLargeError, match=r"#1 is 32769 bytes"):
        plan_batches(messages)


def test_impossible_limits_are_refused():
    with pytest.raises(ValueError, match="max_messages"):
        plan_batches([b"{}"], max_messages=0)
    with pytest.raises(ValueError, match="max_bytes"):
        plan_batches([message_of(100)], max_bytes=100)
