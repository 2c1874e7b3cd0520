"""SegmentClient against the fake Segment server over real loopback HTTP: retries, concurrency, limits."""

import base64
import time
from email.utils import formatdate

import orjson
import pytest

from segment_profiles_pipeline import __version__
from segment_profiles_pipeline.segment import outcomes
from segment_profiles_pipeline.segment.batching import MessageTooLargeError
from segment_profiles_pipeline.segment.client import SegmentClient
from segment_profiles_pipeline.segment.outcomes import DeliveryFailure
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer

WRITE_KEY = "wk-test-1234"


class RecordingSleep:
    """Stands in for asyncio.sleep: remembers the requested delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def identify(i: int) -> bytes:
    return orjson.dumps(
        {
            "type": "identify",
            "userId": f"u{i}",
            "messageId": f"m{i}",
            "traits": {"email": f"u{i}@example.com"},
        }
    )


def ids(start: int, stop: int) -> list[str]:
    return [f"m{i}" for i in range(start, stop)]


@pytest.fixture
def server():
    with FakeSegmentServer(write_key=WRITE_KEY) as srv:
        yield srv


@pytest.fixture
def sleep():
    return RecordingSleep()


def client_for(server: FakeSegmentServer, sleep: RecordingSleep, **options) -> SegmentClient:
    return SegmentClient(server.url, WRITE_KEY, sleep=sleep, **options)


def test_6000_messages_arrive_exactly_once_with_basic_auth(server, sleep):
    messages = [identify(i) for i in range(6000)]
    with client_for(server, sleep) as client:
        assert client.deliver(messages) == [None] * 6000
        stats = client.stats
    assert sorted(server.message_ids()) == sorted(ids(0, 6000))
    assert len(server.messages) == 6000
    # ~80-byte messages: the 2,500-message limit decides, not bytes.
    assert server.requests == 3
    assert stats.requests == 3 and stats.retries == 0
    assert stats.messages_acknowledged == 6000
    assert sleep.delays == []
    for request in server.request_log:
        assert request.auth == "basic"
        assert request.content_type == "application/json"
        assert request.user_agent.startswith(f"segment-profiles-pipeline/{__version__}")
    assert sorted(r.messages for r in server.request_log) == [1000, 2500, 2500]


def test_connections_are_reused_across_deliver_calls(server, sleep):
    with client_for(server, sleep, max_in_flight=1) as client:
        for round_ in range(3):
            assert client.deliver([identify(round_)]) == [None]
    assert server.connections_opened == 1


def test_429_waits_for_retry_after_then_delivers(server, sleep):
    server.rate_limit_next(2, retry_after=7)
    with client_for(server, sleep) as client:
        assert client.deliver([identify(i) for i in range(10)]) == [None] * 10
        assert client.stats.rate_limited == 2
    assert sleep.delays == [7.0, 7.0]
    assert server.message_ids() == ids(0, 10)


def test_retry_after_as_http_date(server, sleep):
    server.rate_limit_next(1, retry_after=formatdate(time.time() + 120, usegmt=True))
    with client_for(server, sleep) as client:
        assert client.deliver([identify(1)]) == [None]
    (delay,) = sleep.delays
    assert 100 < delay <= 120


def test_x_ratelimit_reset_is_used_without_retry_after(server, sleep):
    server.rate_limit_next(1, retry_after=None, reset_after=9)
    with client_for(server, sleep) as client:
        assert client.deliver([identify(1)]) == [None]
    assert sleep.delays == [9.0]


def test_retry_after_is_capped(server, sleep):
    server.rate_limit_next(1, retry_after=86_400)
    with client_for(server, sleep, max_retry_after_s=60) as client:
        assert client.deliver([identify(1)]) == [None]
    assert sleep.delays == [60.0]


def test_server_errors_are_retried_with_bounded_jittered_backoff(server, sleep):
    server.fail_next(3, status=500)
    with client_for(server, sleep, backoff_base_s=0.5, backoff_max_s=30) as client:
        assert client.deliver([identify(i) for i in range(1000)]) == [None] * 1000
        stats = client.stats
    assert server.message_ids() == ids(0, 1000)
    assert stats.server_errors == 3 and stats.retries == 3 and stats.requests == 4
    ceilings = [0.5, 1.0, 2.0]
    assert len(sleep.delays) == 3
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(sleep.delays, ceilings, strict=True))


def test_dropped_connection_is_survived(server, sleep):
    server.drop_next(1)
    with client_for(server, sleep) as client:
        assert client.deliver([identify(i) for i in range(50)]) == [None] * 50
        assert client.stats.connection_errors == 1
    assert server.message_ids() == ids(0, 50)
    assert [r.status for r in server.request_log] == [499, 200]


def test_timeout_is_retried_and_nothing_is_recorded_twice(server, sleep):
    server.delay_next(1, seconds=30)
    with client_for(server, sleep, timeout_s=0.3) as client:
        assert client.deliver([identify(i) for i in range(20)]) == [None] * 20
        assert client.stats.connection_errors == 1
    assert server.message_ids() == ids(0, 20)


def test_exhausted_retries_fail_exactly_the_messages_of_that_batch(server, sleep):
    # Messages 2500..2999 form the second batch; the server answers 503 to it every time.
    server.reject_when(lambda message: message["userId"] == "u2600", status=503, message="upstream down")
    with client_for(server, sleep, max_retries=6) as client:
        reasons = client.deliver([identify(i) for i in range(3000)])
        stats = client.stats
    assert reasons[:2500] == [None] * 2500
    reason = 'HTTP 503 after 7 attempts: {"success":false,"message":"upstream down"}'
    assert set(reasons[2500:]) == {DeliveryFailure(outcomes.SERVER_ERROR, reason)}
    assert sorted(server.message_ids()) == sorted(ids(0, 2500))
    assert stats.requests == 1 + 7
    assert stats.messages_failed == 500 and stats.messages_acknowledged == 2500


def test_exhausted_connection_retries_name_the_error(server, sleep):
    server.drop_next(3)
    with client_for(server, sleep, max_retries=2) as client:
        reasons = client.deliver([identify(1), identify(2)])
    reason = "connection error after 3 attempts: RemoteProtocolError"
    assert reasons == [DeliveryFailure(outcomes.TRANSPORT, reason)] * 2
    assert server.messages == []


def test_a_bad_message_is_isolated_and_the_other_99_are_delivered(server, sleep):
    server.reject_when(lambda message: message["userId"] == "u37", message="bad trait value")
    with client_for(server, sleep) as client:
        reasons = client.deliver([identify(i) for i in range(100)])
    body = '{"success":false,"message":"bad trait value"}'
    assert reasons[37] == DeliveryFailure(
        outcomes.REJECTED, f"HTTP 400: Segment rejected this message: {body}", record_level=True
    )
    assert reasons[:37] == [None] * 37 and reasons[38:] == [None] * 62
    assert sorted(server.message_ids()) == sorted(ids(0, 37) + ids(38, 100))
    # Halving [0,100) to reach #37: [0,100) [0,50) [50,100) [0,25) [25,50) [25,37) [37,50)
    # [37,43) [43,50) [37,40) [40,43) [37,38) [38,40)
    assert server.requests == 13
    assert sleep.delays == []


def test_4xx_reason_is_truncated_to_300_chars(server, sleep):
    server.reject_when(lambda message: True, message="x" * 1000)
    with client_for(server, sleep) as client:
        (reason,) = client.deliver([identify(1)])
    body = '{"success":false,"message":"' + "x" * 1000 + '"}'
    assert reason.reason == "HTTP 400: Segment rejected this message: " + body[:299] + "…"


def test_wrong_write_key_fails_everything_without_leaking_it(server, sleep):
    secret = "wrong-key-S3CRET"
    messages = [identify(i) for i in range(6000)]
    with SegmentClient(server.url, secret, sleep=sleep, max_in_flight=1) as client:
        reasons = client.deliver(messages)
        assert secret not in repr(client) and secret not in str(client)
    assert len(reasons) == 6000
    refused = reasons[0]
    assert refused.code == outcomes.AUTH and not refused.record_level
    assert set(reasons[:2500]) == {refused}
    assert refused.reason.startswith("HTTP 401") and "SEGMENT_WRITE_KEY" in refused.reason
    # The first batch proved the key wrong; the two others were not sent, and say why.
    not_sent = reasons[2500]
    assert set(reasons[2500:]) == {not_sent}
    assert not_sent.code == outcomes.NOT_SENT and not not_sent.record_level
    assert not_sent.reason.startswith("not sent") and refused.reason in not_sent.reason
    for failure in (refused, not_sent):
        assert secret not in failure.reason
        assert base64.b64encode(f"{secret}:".encode()).decode() not in failure.reason
    assert server.requests == 1
    assert server.messages == []
    assert sleep.delays == []


def test_requests_are_concurrent_and_bounded(server, sleep):
    # Six 2,500-message batches; the server holds requests until three are in flight at once,
    # which a sequential client could never reach.
    server.hold_until_in_flight(3, timeout_s=10)
    with client_for(server, sleep, max_in_flight=3) as client:
        assert client.deliver([identify(i) for i in range(15_000)]) == [None] * 15_000
    assert server.max_in_flight == 3
    assert server.message_count == 15_000


def test_oversized_message_is_refused_before_any_request(server, sleep):
    huge = orjson.dumps({"type": "identify", "userId": "u", "traits": {"blob": "x" * 40_000}})
    with client_for(server, sleep) as client, pytest.raises(MessageTooLargeError, match="#1"):
        client.deliver([identify(0), huge])
    assert server.requests == 0


def test_deliver_requires_an_open_client(server, sleep):
    client = client_for(server, sleep)
    with pytest.raises(RuntimeError, match="with SegmentClient"):
        client.deliver([identify(1)])


def test_nothing_to_deliver_sends_nothing(server, sleep):
    with client_for(server, sleep) as client:
        assert client.deliver([]) == []
    assert server.requests == 0


def test_submit_answers_later_and_two_deliveries_share_the_connections(server, sleep):
    # Two 2,500-message deliveries submitted back to back; the server holds requests until two are
    # in flight at once, which only happens if the second delivery starts before the first ends.
    server.hold_until_in_flight(2, timeout_s=10)
    with client_for(server, sleep, max_in_flight=2) as client:
        first = client.submit([identify(i) for i in range(2_500)])
        second = client.submit([identify(i) for i in range(2_500, 5_000)])
        assert second.result(timeout=30) == [None] * 2_500
        assert first.result(timeout=30) == [None] * 2_500
    assert server.max_in_flight == 2
    assert sorted(server.message_ids()) == sorted(ids(0, 5_000))


def test_submit_of_nothing_is_answered_at_once_and_needs_an_open_client(server, sleep):
    client = client_for(server, sleep)
    with pytest.raises(RuntimeError, match="with SegmentClient"):
        client.submit([identify(1)])
    with client:
        assert client.submit([]).result(timeout=0) == []
    assert server.requests == 0
