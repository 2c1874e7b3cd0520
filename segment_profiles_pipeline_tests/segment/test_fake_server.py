"""The fake Segment server answers like Segment where senders can tell the difference."""

import base64
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading

import httpx
import orjson
import pytest

from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer, key_fingerprint

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


# -- where Segment answers 200 but does not apply -------------------------------------------------


def basic(key: str) -> dict[str, str]:
    token = base64.b64encode(f"{key}:".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def post(http: httpx.Client, *messages: dict, key: str = KEY) -> None:
    response = http.post("/v1/batch", content=batch(*messages), headers=basic(key))
    assert response.status_code == 200 and response.json() == {"success": True}


def test_a_reused_message_id_is_answered_200_but_not_applied(server, http):
    post(http, msg(1, traits={"plan": "pro"}))
    post(http, msg(1, traits={"plan": "free"}), msg(2))
    assert [m["traits"]["plan"] for m in server.messages if m["userId"] == "u1"] == ["pro", "free"]
    assert [m["messageId"] for m in server.applied_messages] == ["m1", "m2"]
    (dropped,) = server.silently_dropped
    assert dropped.message["traits"] == {"plan": "free"} and "duplicate messageId" in dropped.dropped
    assert server.profiles()[("identify", "u1")] == {"plan": "pro"}


def test_a_message_id_repeated_within_one_batch_is_applied_once(server, http):
    post(http, msg(1, traits={"n": 1}), msg(1, traits={"n": 2}))
    assert [m["traits"] for m in server.applied_messages] == [{"n": 1}]


def test_deduplication_spans_every_write_key():
    # Segment's dedup is not scoped to a source or a workspace: staging and production collide.
    with (
        FakeSegmentServer(write_keys=["staging", "production"]) as srv,
        httpx.Client(base_url=srv.url) as http,
    ):
        post(http, msg(1, traits={"env": "staging"}), key="staging")
        post(http, msg(1, traits={"env": "production"}), msg(2), key="production")
        assert [(r.write_key, r.applied) for r in srv.received] == [
            (key_fingerprint("staging"), True),
            (key_fingerprint("production"), False),
            (key_fingerprint("production"), True),
        ]
        assert srv.profiles("staging") == {("identify", "u1"): {"env": "staging"}}
        assert srv.profiles("production") == {("identify", "u2"): {}}
        with pytest.raises(ValueError, match="several write keys"):
            srv.profiles()


def test_write_key_alone_still_works_and_combines_with_write_keys(http):
    with FakeSegmentServer(write_key="a", write_keys=["b"]) as srv, httpx.Client(base_url=srv.url) as client:
        assert srv.write_key == "a" and srv.write_keys == ("a", "b")
        for key in ("a", "b"):
            post(client, msg(ord(key)), key=key)
        unknown = client.post("/v1/batch", content=batch(msg(9)), headers=basic("c"))
        assert unknown.status_code == 401
        assert len(srv.applied_messages) == 2


def traits(n: int) -> dict[str, int]:
    return {f"t{i}": i for i in range(n)}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (msg(1, traits=traits(300)), "300 traits"),
        (msg(1, traits=traits(301)), "301 traits"),
        ({"type": "group", "userId": "u1", "groupId": "", "messageId": "m1"}, "empty groupId"),
        ({"type": "group", "userId": "u1", "groupId": "g" * 501, "messageId": "m1"}, "groupId of 501"),
        ({"type": "identify", "userId": "u1", "messageId": "m" * 100}, "messageId of 100"),
    ],
)
def test_unify_limits_are_answered_200_and_not_applied(server, http, message, reason):
    post(http, message)
    assert server.applied_messages == []
    (dropped,) = server.silently_dropped
    assert reason in dropped.dropped
    assert server.profiles() == {}
    assert server.stats()["silently_dropped"] == 1


@pytest.mark.parametrize(
    "message",
    [
        msg(1, traits=traits(299)),
        {"type": "group", "userId": "u1", "groupId": "g" * 500, "messageId": "m1"},
        {"type": "identify", "userId": "u1", "messageId": "m" * 99},
    ],
)
def test_just_inside_the_unify_limits_is_applied(server, http, message):
    post(http, message)
    assert server.applied_messages == [message]
    assert server.silently_dropped == []


def test_an_id_dropped_by_a_unify_limit_is_still_seen(server, http):
    # Dedup happens before profiles are built: fixing the record but keeping its id is not enough.
    post(http, msg(1, traits=traits(300)))
    post(http, msg(1, traits={"plan": "pro"}))
    assert server.applied_messages == []
    assert [r.dropped.split(" ")[0] for r in server.silently_dropped] == ["identify", "duplicate"]


def test_the_profile_view_merges_traits_in_arrival_order_and_keeps_nulls(server, http):
    post(http, msg(1, traits={"plan": "pro", "email": "a@x"}), msg(2, traits={"plan": "free"}))
    post(http, msg(3, userId="u1", traits={"plan": "team", "email": None}))
    post(http, {"type": "identify", "anonymousId": "anon-7", "messageId": "m4", "traits": {"seen": True}})
    post(http, {"type": "group", "userId": "u1", "groupId": "g1", "messageId": "m5", "traits": {"seats": 3}})
    post(http, {"type": "track", "userId": "u1", "event": "x", "messageId": "m6"})
    assert server.profiles() == {
        ("identify", "u1"): {"plan": "team", "email": None},
        ("identify", "u2"): {"plan": "free"},
        ("identify", "anon-7"): {"seen": True},
        ("group", "g1"): {"seats": 3},
    }


def test_a_group_without_group_id_is_still_400(server, http):
    response = http.post("/v1/batch", content=batch({"type": "group", "userId": "u1"}), headers=BASIC)
    assert response.status_code == 400
    assert server.received == []


def test_count_mode_still_deduplicates():
    with FakeSegmentServer(write_key=KEY, record="count") as srv, httpx.Client(base_url=srv.url) as http:
        post(http, msg(1), msg(1), msg(2, traits=traits(300)))
        assert srv.stats()["messages"] == 3
        assert srv.stats()["applied"] == 1 and srv.stats()["silently_dropped"] == 2
        assert srv.received == []


# -- scripted answers and GET /messages -------------------------------------------------------------


def test_answer_next_sends_exactly_the_scripted_answer_and_records_nothing(server, http):
    server.answer_next(2, 200, b"<html>Sign in</html>", "text/html", headers={"X-Proxy": "corp"})
    for _ in range(2):
        response = http.post("/v1/batch", content=batch(msg(1)), headers=BASIC)
        assert (response.status_code, response.content) == (200, b"<html>Sign in</html>")
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["x-proxy"] == "corp"
    assert server.received == []
    post(http, msg(1))
    assert len(server.applied_messages) == 1


def test_request_log_has_body_sizes(server, http):
    content = batch(msg(1), msg(2))
    http.post("/v1/batch", content=content, headers=BASIC)
    assert server.request_log[0].body_bytes == len(content)


def test_get_messages_lists_what_was_received_and_applied(server, http):
    post(http, msg(1), msg(1), msg(2))
    listing = http.get("/messages").json()
    assert listing["record"] == "all"
    assert (listing["received"], listing["applied"], listing["silently_dropped"]) == (3, 2, 1)
    assert [(m["message"]["messageId"], m["applied"]) for m in listing["messages"]] == [
        ("m1", True),
        ("m1", False),
        ("m2", True),
    ]
    assert {m["writeKey"] for m in listing["messages"]} == {key_fingerprint(KEY)}
    assert "duplicate" in listing["messages"][1]["dropped"]
    assert [m["message"]["messageId"] for m in http.get("/messages?limit=1").json()["messages"]] == ["m2"]
    assert http.get("/messages?limit=0").json()["messages"] == []
    assert http.get("/messages?limit=x").status_code == 400


def test_the_write_key_is_never_listed():
    secret = "S3cret-write-key"
    with FakeSegmentServer(write_key=secret) as srv, httpx.Client(base_url=srv.url) as http:
        post(http, msg(1), key=secret)
        text = http.get("/messages").text + http.get("/stats").text
    assert secret not in text and key_fingerprint(secret) in text


def test_the_cli_prints_each_message_and_accepts_several_keys():
    command = [
        sys.executable,
        "-m",
        "segment_profiles_pipeline.testing.segment_server",
        "--write-key",
        "one",
        "--write-key",
        "two",
        "--print-messages",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in process.stdout], daemon=True).start()
    try:
        url = lines.get(timeout=30).removeprefix("READY ")
        with httpx.Client(base_url=url) as http:
            post(http, msg(1), key="one")
            post(http, msg(1), key="two")
            printed = [orjson.loads(lines.get(timeout=30)) for _ in range(2)]
            assert http.get("/messages").json()["applied"] == 1
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert [(line["writeKey"], line["applied"]) for line in printed] == [
        (key_fingerprint("one"), True),
        (key_fingerprint("two"), False),
    ]


# -- the Profile API /traits route -----------------------------------------------------------------

SPACE, TOKEN = "spa_test", "pat-test-token"
TRAITS = "/v1/spaces/spa_test/collections/users/profiles/{}/traits"


def token_auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{token}:".encode()).decode()}


@pytest.fixture
def unify():
    with (
        FakeSegmentServer(write_keys=["wk", "wk2"], profile_spaces={SPACE: TOKEN}) as srv,
        httpx.Client(base_url=srv.url) as client,
    ):
        client.post(
            "/v1/batch",
            content=batch(
                msg(1, anonymousId="a1", traits={"plan": "free", "email": "ana@example.com"}),
                msg(2, traits={**{f"t{i:03d}": i for i in range(250)}}),
            ),
            headers=BASIC,
        )
        wk2 = {
            "Authorization": "Basic " + base64.b64encode(b"wk2:").decode(),
            "Content-Type": "application/json",
        }
        client.post(
            "/v1/batch",
            content=batch(msg(3, userId="u1", traits={"plan": "pro", "age": None})),
            headers=wk2,
        )
        yield srv, client


def test_profile_api_answers_merged_identify_traits_of_every_write_key(unify):
    srv, http = unify
    answer = http.get(TRAITS.format("user_id:u1"), headers=token_auth()).json()
    # the default page is 10 traits; u1 holds 3, merged in arrival order across both write keys
    assert answer == {
        "traits": {"age": None, "email": "ana@example.com", "plan": "pro"},
        "cursor": {"url": TRAITS.format("user_id:u1"), "has_more": False, "next": "", "limit": 10},
    }
    assert http.get(TRAITS.format("anonymous_id:a1"), headers=token_auth()).json()["traits"] == {
        "email": "ana@example.com",
        "plan": "free",  # the anonymous id was only on the first call
    }
    assert srv.profile_api_log == [
        (TRAITS.format("user_id:u1"), 200),
        (TRAITS.format("anonymous_id:a1"), 200),
    ]


def test_profile_api_pages_include_and_limit(unify):
    _, http = unify
    first = http.get(TRAITS.format("user_id:u2"), params={"limit": "200"}, headers=token_auth()).json()
    assert (
        len(first["traits"]) == 200
        and first["cursor"]["has_more"] is True
        and first["cursor"]["next"] == "200"
    )
    rest = http.get(
        TRAITS.format("user_id:u2"), params={"limit": "200", "next": "200"}, headers=token_auth()
    ).json()
    assert (
        sorted(rest["traits"]) == [f"t{i:03d}" for i in range(200, 250)]
        and rest["cursor"]["has_more"] is False
    )
    only = http.get(TRAITS.format("user_id:u1"), params={"include": "plan,nope"}, headers=token_auth()).json()
    assert only["traits"] == {"plan": "pro"}
    assert (
        http.get(TRAITS.format("user_id:u1"), params={"limit": "201"}, headers=token_auth()).status_code
        == 400
    )


def test_profile_api_auth_404_and_injected_429(unify):
    srv, http = unify
    assert http.get(TRAITS.format("user_id:u1"), headers=token_auth("wrong")).json() == {
        "error": {"code": "authentication_error", "message": "invalid access token for this space"}
    }
    other_space = http.get(
        "/v1/spaces/spa_other/collections/users/profiles/user_id:u1/traits", headers=token_auth()
    )
    assert other_space.status_code == 401
    assert (
        http.get(
            TRAITS.format("user_id:u1"),
            headers={"Authorization": "Basic " + base64.b64encode(f"{TOKEN}:x".encode()).decode()},
        ).status_code
        == 401
    )
    missing = http.get(TRAITS.format("user_id:nobody"), headers=token_auth())
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    srv.profile_api_rate_limit_next(1, retry_after=3)
    limited = http.get(TRAITS.format("user_id:u1"), headers=token_auth())
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
    assert http.get(TRAITS.format("user_id:u1"), headers=token_auth()).status_code == 200


def test_tamper_profile_loses_and_changes_traits(unify):
    srv, http = unify
    srv.tamper_profile("user_id:u1", drop=["email"], set_traits={"plan": "free"})
    assert http.get(TRAITS.format("user_id:u1"), headers=token_auth()).json()["traits"] == {
        "age": None,
        "plan": "free",
    }
