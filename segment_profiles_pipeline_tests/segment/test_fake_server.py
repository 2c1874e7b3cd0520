"""The fake Segment server answers like Segment where senders can tell the difference."""

import os
import selectors
import signal
import subprocess
import sys

import httpx
import orjson
import pytest

from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer

KEY = "wk"
BASIC = {"Authorization": "Basic d2s6", "Content-Type": "application/json"}  # base64("wk:")


def msg(i: int, **extra) -> dict:
    return {"type": "identify", "userId": f"u{i}", "messageId": f"m{i}", **extra}


def batch(*messages: dict) -> bytes:
    return orjson.dumps({"batch": list(messages)})


@pytest.fixture
def server():
    with FakeSegmentServer(write_key=KEY) as srv:
        yield srv


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url) as client:
        yield client


def test_accepts_a_batch_with_basic_auth(server, http):
    response = http.post("/v1/batch", content=batch(msg(1), msg(2)), headers=BASIC)
    assert response.status_code == 200
    assert server.message_ids() == ["m1", "m2"]
    assert server.request_log[0].auth == "basic"


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"Authorization": "Basic b3RoZXI6", "Content-Type": "application/json"},  # other:
        {"Authorization": "Basic d2s=", "Content-Type": "application/json"},  # "wk" without the colon
        {"Authorization": "Bearer wk", "Content-Type": "application/json"},
    ],
)
def test_missing_or_wrong_key_is_401(server, http, headers):
    assert http.post("/v1/batch", content=batch(msg(1)), headers=headers).status_code == 401
    assert server.messages == []


def test_write_key_in_the_body_is_accepted_like_analytics_python_sends_it(server, http):
    body = orjson.dumps({"batch": [msg(1)], "writeKey": KEY})
    response = http.post("/v1/batch", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert server.request_log[0].auth == "body"


def test_analytics_python_can_send_to_it(server):
    from segment.analytics import Client

    client = Client(write_key=KEY, host=server.url, sync_mode=True)
    client.identify("u42", {"plan": "pro"})
    (message,) = server.messages
    assert message["userId"] == "u42" and message["traits"] == {"plan": "pro"}


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (batch(msg(1)), "text/plain"),
        (orjson.dumps({"batch": {"type": "identify"}}), "application/json"),
        (batch({"type": "identify", "traits": {}}), "application/json"),  # no userId / anonymousId
        (batch({"userId": "u1"}), "application/json"),  # no type
        (batch({"type": "group", "userId": "u1"}), "application/json"),  # group without groupId
    ],
)
def test_invalid_requests_are_400_and_record_nothing(server, http, content, content_type):
    headers = {**BASIC, "Content-Type": content_type}
    assert http.post("/v1/batch", content=content, headers=headers).status_code == 400
    assert server.messages == []


def test_one_message_over_32kb_rejects_the_whole_batch(server, http):
    big = msg(2, traits={"blob": "x" * 33_000})
    assert http.post("/v1/batch", content=batch(msg(1), big), headers=BASIC).status_code == 400
    assert server.messages == []


def test_request_over_500kb_is_400(server, http):
    messages = [msg(i, traits={"blob": "x" * 20_000}) for i in range(26)]  # 26 * ~20 KB > 512,000 bytes
    content = batch(*messages)
    assert len(content) > 512_000
    assert http.post("/v1/batch", content=content, headers=BASIC).status_code == 400


def test_over_2500_messages_is_200_but_dropped(server, http):
    response = http.post("/v1/batch", content=batch(*[msg(i) for i in range(2501)]), headers=BASIC)
    assert response.status_code == 200
    assert server.messages == []
    assert server.dropped_oversized_batches == 1


def test_single_message_endpoints(server, http):
    identify = orjson.dumps({"userId": "u1", "traits": {"a": 1}})
    group = orjson.dumps({"userId": "u1", "groupId": "g1"})
    assert http.post("/v1/identify", content=identify, headers=BASIC).status_code == 200
    assert http.post("/v1/group", content=group, headers=BASIC).status_code == 200
    assert [m["type"] for m in server.messages] == ["identify", "group"]


def test_stats_endpoint(server, http):
    http.post("/v1/batch", content=batch(msg(1), msg(2)), headers=BASIC)
    assert http.get("/stats").json() == {
        "requests": 1,
        "messages": 2,
        "applied": 2,
        "silently_dropped": 0,
        "dropped_oversized_batches": 0,
        "rejected_requests": 0,
        "max_in_flight": 1,
    }


def test_count_mode_counts_without_keeping_messages():
    with FakeSegmentServer(write_key=KEY, record="count") as srv, httpx.Client() as http:
        http.post(f"{srv.url}/v1/batch", content=batch(msg(1), msg(2)), headers=BASIC)
        assert srv.message_count == 2
        assert srv.messages == []


def test_runs_as_a_separate_process_for_benchmarks():
    command = [sys.executable, "-m", "segment_profiles_pipeline.testing.segment_server", "--port", "0"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=30), "the server printed nothing within 30 s"
        line = process.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.removeprefix("READY ")
        with httpx.Client(base_url=url) as http:
            assert http.post("/v1/batch", content=batch(msg(1)), headers=BASIC).status_code == 200
            assert http.get("/stats").json()["messages"] == 1
    finally:
        process.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status stays conventional.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
