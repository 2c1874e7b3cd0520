"""What ``deliver`` says about each message, over real loopback HTTP to the fake Segment server.

Each test names one guarantee of the Outcome contract (segment/outcomes.py): the code, whether it is
the record's fault, and that only Segment's documented success answer acknowledges.
"""

import base64
from urllib.parse import quote, quote_plus

import orjson
import pytest

from segment_profiles_pipeline.segment import outcomes
from segment_profiles_pipeline.segment.batching import MessageTooLargeError
from segment_profiles_pipeline.segment.client import SegmentClient
from segment_profiles_pipeline.segment.outcomes import DeliveryFailure
from segment_profiles_pipeline.segment.spec import MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, REQUEST_BYTES_BUDGET
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer

WRITE_KEY = "wk+Live/KEY=4 ok"
"""Has characters that base64, URL and form encoding, and case folding all change."""


async def no_sleep(seconds: float) -> None:
    """Retries happen at once: these tests are about outcomes, not timing."""


def identify(i: int) -> bytes:
    return orjson.dumps({"type": "identify", "userId": f"u{i}", "messageId": f"m{i}", "traits": {"n": i}})


def identify_of_size(i: int, size: int) -> bytes:
    """A valid identify of exactly ``size`` bytes, padded in one trait."""
    head = orjson.dumps({"type": "identify", "userId": f"u{i}", "messageId": f"m{i}", "traits": {"pad": ""}})
    message = head[:-3] + b"x" * (size - len(head)) + head[-3:]
    assert len(message) == size and orjson.loads(message)["userId"] == f"u{i}"
    return message


@pytest.fixture
def server():
    with FakeSegmentServer(write_keys=[WRITE_KEY]) as srv:
        yield srv


def client_for(server: FakeSegmentServer, **options) -> SegmentClient:
    return SegmentClient(server.url, WRITE_KEY, sleep=no_sleep, **options)


def deliver(server: FakeSegmentServer, messages: list[bytes], **options) -> list[outcomes.Outcome]:
    with client_for(server, **options) as client:
        return client.deliver(messages)


# -- only Segment's success answer acknowledges ------------------------------------------------------


def test_200_with_the_success_body_acknowledges(server):
    assert deliver(server, [identify(1), identify(2)]) == [None, None]
    assert [m["userId"] for m in server.applied_messages] == ["u1", "u2"]


@pytest.mark.parametrize("status", [201, 202, 204, 206, 301, 302, 303, 307, 308])
def test_a_non_200_status_below_400_never_acknowledges(server, status):
    # Redirects point at the real endpoint: following one would deliver and acknowledge.
    headers = {"Location": f"{server.url}/v1/batch"} if status >= 300 else None
    body = b"" if status == 204 else b'{"success": true}'
    server.answer_next(1, status, body, "application/json", headers=headers)
    with client_for(server) as client:
        failures = client.deliver([identify(1), identify(2)])
        stats = client.stats
    (failure,) = set(failures)
    assert failure.code == outcomes.NOT_ACKNOWLEDGED and not failure.record_level
    assert failure.reason.startswith(f"HTTP {status}")
    assert "SEGMENT_ENDPOINT" in failure.reason
    # Not retried, not split, not followed: one request, nothing reached the server's profiles.
    assert server.requests == 1 and server.messages == []
    assert stats.not_acknowledged == 2 and stats.messages_failed == 2


def test_a_redirect_names_its_target(server):
    server.answer_next(1, 308, b"", None, headers={"Location": "https://proxy.example.com/v1/batch"})
    (failure,) = deliver(server, [identify(1)])
    assert "redirect to https://proxy.example.com/v1/batch not followed" in failure.reason


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><head><title>Corporate proxy: sign in</title></head><body>...</body></html>", "text/html"),
        (b'{"success": false, "message": "queued for review"}', "application/json"),
        (b'{"success": "true"}', "application/json"),
        (b'{"ok": true}', "application/json"),
        (b"[true]", "application/json"),
        (b'{"success": tru', "application/json"),
        (b"OK", "text/plain"),
    ],
)
def test_a_200_without_the_success_body_never_acknowledges_and_shows_the_body(server, body, content_type):
    server.answer_next(1, 200, body, content_type)
    with client_for(server) as client:
        failures = client.deliver([identify(i) for i in range(5)])
        stats = client.stats
    (failure,) = set(failures)
    assert failure == DeliveryFailure(outcomes.NOT_ACKNOWLEDGED, failure.reason, record_level=False)
    assert failure.reason.startswith("HTTP 200 without Segment's success answer")
    assert body.decode()[:60] in failure.reason
    assert server.requests == 1
    assert stats.messages_acknowledged == 0


def test_a_200_with_an_empty_body_never_acknowledges(server):
    server.answer_next(1, 200, b"", None)
    (failure,) = deliver(server, [identify(1)])
    assert failure.code == outcomes.NOT_ACKNOWLEDGED
    assert "HTTP 200" in failure.reason and "empty body" in failure.reason


def test_a_proxy_page_fails_only_its_own_batch(server):
    server.answer_next(1, 200, b"<html>maintenance</html>")
    results = deliver(server, [identify(i) for i in range(3000)], max_in_flight=1)
    assert {r.code for r in results[:MAX_BATCH_MESSAGES]} == {outcomes.NOT_ACKNOWLEDGED}
    assert results[MAX_BATCH_MESSAGES:] == [None] * 500


# -- classification of every other failure ---------------------------------------------------------


def test_401_is_auth_and_the_rest_of_the_delivery_is_not_sent():
    with FakeSegmentServer(write_keys=["the-right-key"]) as srv:
        results = deliver(srv, [identify(i) for i in range(6000)], max_in_flight=1)
        assert srv.requests == 1
    assert {(r.code, r.record_level) for r in results[:2500]} == {(outcomes.AUTH, False)}
    assert {(r.code, r.record_level) for r in results[2500:]} == {(outcomes.NOT_SENT, False)}


def test_403_is_auth(server):
    server.fail_next(1, status=403)
    (failure,) = set(deliver(server, [identify(1), identify(2)]))
    assert failure.code == outcomes.AUTH and not failure.record_level
    assert failure.reason.startswith("HTTP 403") and "SEGMENT_WRITE_KEY" in failure.reason
    assert server.requests == 1


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_5xx_and_408_after_retries_are_server_errors(server, status):
    server.fail_next(3, status=status)
    (failure,) = set(deliver(server, [identify(1), identify(2)], max_retries=2))
    assert failure.code == outcomes.SERVER_ERROR and not failure.record_level
    assert failure.reason.startswith(f"HTTP {status} after 3 attempts")
    assert server.requests == 3


def test_429_after_retries_is_rate_limited(server):
    server.rate_limit_next(3, retry_after=0)
    (failure,) = set(deliver(server, [identify(1)], max_retries=2))
    assert failure.code == outcomes.RATE_LIMITED and not failure.record_level
    assert failure.reason.startswith("HTTP 429 after 3 attempts")


def test_dropped_connections_after_retries_are_transport(server):
    server.drop_next(3)
    (failure,) = set(deliver(server, [identify(1)], max_retries=2))
    assert failure.code == outcomes.TRANSPORT and not failure.record_level


def test_a_refused_connection_is_transport():
    with FakeSegmentServer() as srv:
        url = srv.url
    # The server is stopped: nothing listens on its port any more.
    with SegmentClient(url, WRITE_KEY, sleep=no_sleep, max_retries=1) as client:
        (failure,) = client.deliver([identify(1)])
    assert failure.code == outcomes.TRANSPORT
    assert failure.reason.startswith("connection error after 2 attempts: ConnectError")


def test_a_timeout_after_retries_is_transport(server):
    server.delay_next(2, seconds=30)
    (failure,) = deliver(server, [identify(1)], timeout_s=0.2, max_retries=1)
    assert failure.code == outcomes.TRANSPORT and "Timeout" in failure.reason
    assert server.messages == []


def test_a_4xx_for_one_message_is_rejected_at_record_level_and_the_rest_delivered(server):
    server.reject_when(lambda message: message["userId"] in {"u3", "u11"}, status=422, message="bad trait")
    results = deliver(server, [identify(i) for i in range(16)])
    for i in (3, 11):
        assert results[i].code == outcomes.REJECTED and results[i].record_level
        assert (
            results[i].reason.startswith("HTTP 422: Segment rejected this message")
            and "bad trait" in results[i].reason
        )
    assert [i for i, r in enumerate(results) if r is None] == [i for i in range(16) if i not in {3, 11}]


def test_a_multi_message_4xx_is_never_a_record_level_verdict_on_all_of_them(server):
    # One bad message among 8: the other 7 must not be marked rejected, whatever the split order.
    server.reject_when(lambda message: message["userId"] == "u5", status=400)
    results = deliver(server, [identify(i) for i in range(8)])
    assert [r is not None and r.record_level for r in results] == [i == 5 for i in range(8)]


# -- limits: request byte budget, message cap, 32 KB per message -----------------------------------


def test_every_request_stays_within_the_byte_budget_and_fills_it(server):
    # 23 x 20,000 + 14,929 (+ 23 commas + 48 envelope bytes) = exactly the budget; the second group
    # ends with one byte more, so a budget off by +1 sends a 475,001-byte body and one off by -1
    # never sends a body of exactly the budget.
    exact = [20_000] * 23 + [14_929]
    over_by_one = [20_000] * 23 + [14_930]
    sizes = exact + over_by_one
    messages = [identify_of_size(i, size) for i, size in enumerate(sizes)]
    assert sum(exact) + 23 + 48 == REQUEST_BYTES_BUDGET
    assert deliver(server, messages, max_in_flight=1) == [None] * len(messages)
    bodies = [request.body_bytes for request in server.request_log]
    assert max(bodies) <= REQUEST_BYTES_BUDGET
    assert bodies[0] == REQUEST_BYTES_BUDGET
    assert [request.messages for request in server.request_log] == [24, 23, 1]
    assert len(server.applied_messages) == len(messages)


def test_no_request_carries_more_than_2500_messages(server):
    messages = [identify(i) for i in range(2 * MAX_BATCH_MESSAGES + 1)]
    assert deliver(server, messages, max_in_flight=1) == [None] * len(messages)
    assert [request.messages for request in server.request_log] == [2500, 2500, 1]
    assert server.dropped_oversized_batches == 0
    assert len(server.applied_messages) == len(messages)


def test_a_message_of_exactly_32_kb_is_delivered(server):
    message = identify_of_size(1, MAX_MESSAGE_BYTES)
    assert deliver(server, [identify(0), message]) == [None, None]
    assert [m["userId"] for m in server.applied_messages] == ["u0", "u1"]


def test_a_message_one_byte_over_32_kb_is_refused_before_any_request(server):
    message = identify_of_size(1, MAX_MESSAGE_BYTES + 1)
    with pytest.raises(MessageTooLargeError, match=r"#1 is 32769 bytes"):
        deliver(server, [identify(0), message])
    assert server.requests == 0


# -- the write key never leaves in a reason ---------------------------------------------------------


def key_forms(key: str) -> dict[str, str]:
    """Every form in which a server might echo the write key back."""
    basic = base64.b64encode(f"{key}:".encode()).decode()
    bare = base64.b64encode(key.encode()).decode()
    return {
        "raw": key,
        "lower": key.lower(),
        "upper": key.upper(),
        "basic_base64": basic,
        "basic_base64_unpadded": basic.rstrip("="),
        "basic_base64_lower": basic.lower(),
        "key_base64": bare,
        "key_base64_unpadded": bare.rstrip("="),
        "url_encoded": quote(key, safe=""),
        "url_encoded_lower": quote(key, safe="").lower(),
        "form_encoded": quote_plus(key),
    }


FORMS = key_forms(WRITE_KEY)


def assert_no_key(text: str) -> None:
    for name, form in FORMS.items():
        assert form.lower() not in text.lower(), f"{name} leaked: {text}"


def test_the_key_forms_differ_from_each_other():
    # Otherwise the parametrised tests below would check the same string several times.
    assert len(set(FORMS.values())) == len(FORMS)


@pytest.mark.parametrize(
    ("status", "code", "options"),
    [
        (400, outcomes.REJECTED, {}),
        (401, outcomes.AUTH, {}),
        (503, outcomes.SERVER_ERROR, {"max_retries": 0}),
        (429, outcomes.RATE_LIMITED, {"max_retries": 0}),
        (200, outcomes.NOT_ACKNOWLEDGED, {}),
        (202, outcomes.NOT_ACKNOWLEDGED, {}),
    ],
)
def test_an_echoed_key_is_masked_in_every_reason(server, status, code, options):
    with client_for(server, **options) as client:
        for name, form in FORMS.items():
            echo = f'{{"success":false,"message":"bad credentials {form} (Authorization: Basic {form})"}}'
            server.answer_next(1, status, echo.encode(), "application/json")
            (failure,) = client.deliver([identify(1)])
            assert failure.code == code
            assert failure.reason.count("***") == 2, f"{name}: {failure.reason}"
            assert_no_key(failure.reason)


def test_an_echoed_key_is_masked_in_a_redirect_target(server):
    with client_for(server) as client:
        for name, form in FORMS.items():
            location = f"https://proxy.example.com/?key={form}"
            server.answer_next(1, 307, b"", None, headers={"Location": location})
            (failure,) = client.deliver([identify(1)])
            assert "https://proxy.example.com/?key=*** not followed" in failure.reason, name
            assert_no_key(failure.reason)


def test_a_key_at_the_truncation_limit_is_masked_not_cut(server):
    # The body is cut at 300 characters with 4 characters of the key before the cut: masking must
    # happen first, or those 4 characters are what the reason ends with.
    padding = '{"message":"' + "x" * (300 - len('{"message":"') - 5)
    server.answer_next(1, 400, f"{padding}{WRITE_KEY} rest".encode(), "application/json")
    (failure,) = deliver(server, [identify(1)])
    assert failure.reason.endswith("x*** …")
    assert WRITE_KEY[:4].lower() not in failure.reason.lower()
