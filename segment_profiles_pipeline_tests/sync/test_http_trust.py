"""Delivery you can trust, over real HTTP to the Segment-compatible server on 127.0.0.1.

The server behaves like Segment where Segment is silent: it answers 200 and drops a messageId
it has seen, and Unify's over-limit calls. So "what the profile holds" is the judge here, not
the sync's own counters.
"""

import pytest

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.segment.client import SegmentClient
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.sync.helpers import failed, ledger, people_spec, people_table

STAGING_KEY = "wk-staging-0b1c2d"
PRODUCTION_KEY = "wk-production-9f8e7d"
ROWS = [("u1", "a@x.io", "pro"), ("u2", "b@x.io", "free")]


async def no_wait(_seconds: float) -> None:
    """Backoff without waiting: the tests check outcomes, not the clock."""


@pytest.fixture
def server():
    with FakeSegmentServer(write_keys=[STAGING_KEY, PRODUCTION_KEY]) as srv:
        yield srv


@pytest.fixture
def session(warehouse):
    with warehouse.session() as s:
        people_table(s, ROWS)
        yield s


def sync(session, server, spec=None, key=STAGING_KEY, **kwargs):
    with SegmentClient(server.url, key, sleep=no_wait, max_retries=1) as sender:
        return run_sync(session, spec or people_spec(), sender, **kwargs)


def plan_of(server, user: str, key: str = STAGING_KEY) -> str | None:
    return server.profiles(key)[("identify", user)].get("plan")


def test_a_change_and_revert_reaches_the_profile(session, server) -> None:
    sync(session, server)
    people_table(session, [("u1", "a@x.io", "free"), ROWS[1]])
    sync(session, server)
    people_table(session, ROWS)
    report = sync(session, server)
    assert report.counts["delivered"] == 1
    assert plan_of(server, "u1") == "pro"  # not dropped as a duplicate of the first "pro"
    assert server.silently_dropped == []


def test_a_reset_sync_reaches_the_profile_again(session, server) -> None:
    sync(session, server)
    sync(session, server, reset=True)
    assert len(server.applied_messages) == 4 and server.silently_dropped == []


def test_two_deployments_sending_the_same_data_both_reach_their_profiles(session, server, tmp_path) -> None:
    """Staging and production: two warehouses, same model and mapping, two write keys."""
    sync(session, server, key=STAGING_KEY)
    with DuckDBWarehouse(database=str(tmp_path / "production.duckdb")).session() as production:
        people_table(production, ROWS)
        sync(production, server, key=PRODUCTION_KEY)
    assert plan_of(server, "u1", STAGING_KEY) == plan_of(server, "u1", PRODUCTION_KEY) == "pro"
    assert server.silently_dropped == []


def test_calls_unify_would_silently_drop_are_rejected_never_counted_as_delivered(session, server) -> None:
    session.execute(
        "CREATE OR REPLACE TABLE models.accounts AS SELECT * FROM (VALUES "
        "('ok', 'u1', 'acme'), ('long', 'u2', repeat('g', 501)), ('empty', 'u3', '')) AS t(k, user_id, account_id)"
    )
    spec = MappingSpec(
        SyncSource("accounts", ("accounts",), "models.accounts", "k", "models/accounts.yml"),
        MappingConfig(name="accounts_group", action="group", user_id="user_id", group_id="account_id"),
    )
    report = sync(session, server, spec)
    assert report.counts["delivered"] == 1 and report.counts["rejected"] == 2
    assert report.status == "partial_success"
    reasons = {k: v[1] for k, v in failed(session, "accounts_group").items()}
    assert "501 characters" in reasons["long"] and "Group ID is required" in reasons["empty"]
    assert server.silently_dropped == [] and [m["groupId"] for m in server.messages] == ["acme"]


@pytest.mark.parametrize(
    "body",
    [b"<html><body>Proxy login</body></html>", b'{"success": false}', b""],
    ids=["proxy-html", "success-false", "empty"],
)
def test_a_200_that_is_not_segments_success_answer_acknowledges_nothing(session, server, body) -> None:
    server.answer_next(1, status=200, body=body, content_type="text/html")
    report = sync(session, server, people_spec(retry={"max_syncs": 1, "max_days": 1}))
    assert report.status == "failed" and ledger(session) == {}
    assert {v[3] for v in failed(session).values()} == {"retrying"}  # not the records' fault: no expiry
    report = sync(session, server, people_spec(retry={"max_syncs": 1, "max_days": 1}))
    assert report.status == "success" and set(ledger(session)) == {"u1", "u2"}


@pytest.mark.parametrize("outage", ["wrong-key", "refused", "5xx-storm"])
def test_five_syncs_through_an_outage_expire_nothing(session, server, outage) -> None:
    spec = people_spec(retry={"max_syncs": 2, "max_days": 1})
    for _ in range(5):
        if outage == "wrong-key":
            with SegmentClient(server.url, "wk-wrong", sleep=no_wait) as sender:
                report = run_sync(session, spec, sender)
        elif outage == "refused":
            with SegmentClient("http://127.0.0.1:9", STAGING_KEY, sleep=no_wait, max_retries=0) as sender:
                report = run_sync(session, spec, sender)
        else:
            server.fail_next(2, status=503)
            report = sync(session, server, spec)
        assert report.status == "failed"
    assert {k: v[2:] for k, v in failed(session).items()} == {"u1": (0, "retrying"), "u2": (0, "retrying")}
    report = sync(session, server, spec)
    assert report.status == "success" and plan_of(server, "u1") == "pro" and failed(session) == {}


def test_a_record_segment_rejects_uses_its_budget_and_the_others_get_through(session, server) -> None:
    server.reject_when(lambda m: m.get("userId") == "u2")
    spec = people_spec(retry={"max_syncs": 2, "max_days": 14})
    sync(session, server, spec)
    sync(session, server, spec)
    assert failed(session)["u2"][2:] == (2, "expired") and set(ledger(session)) == {"u1"}
