"""Every action over real HTTP to the Segment-compatible server, on DuckDB and (track) Snowflake."""

from collections.abc import Iterator

import pytest

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.segment.client import SegmentClient
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline_tests.sync.helpers import ledger
from segment_profiles_pipeline_tests.sync.test_track_sync import ROWS, events_table, track_spec
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import fake_snowflake

WRITE_KEY = "wk-actions-test-51c2"
CONSENT = '{"categoryPreferences": {"Advertising": false}}'


async def no_wait(_seconds: float) -> None:
    """Backoff without waiting: the tests check outcomes, not the clock."""


@pytest.fixture
def server() -> Iterator[FakeSegmentServer]:
    with FakeSegmentServer(write_key=WRITE_KEY) as srv:
        yield srv


def sync(session: WarehouseSession, server: FakeSegmentServer, spec: MappingSpec):
    with SegmentClient(server.url, WRITE_KEY, sleep=no_wait, max_retries=1) as sender:
        return run_sync(session, spec, sender)


def check_track_sends_once(session: WarehouseSession, server: FakeSegmentServer) -> None:
    events_table(session, ROWS)
    assert sync(session, server, track_spec()).counts["delivered"] == 2
    events_table(session, [("e1", "u1", "CHANGED", 1), ("e2", "u2", "pro", 2), ("e3", "u3", "new", 3)])
    assert sync(session, server, track_spec()).counts["delivered"] == 1
    received = sorted((m["userId"], m["event"], m["properties"]["plan"]) for m in server.messages)
    assert received == [
        ("u1", "Plan Changed", "free"),
        ("u2", "Plan Changed", "pro"),
        ("u3", "Plan Changed", "new"),
    ]
    assert all(m["type"] == "track" and m["integrations"] == {"All": False} for m in server.messages)
    assert set(ledger(session, "events_track")) == {"e1", "e2", "e3"}


def test_track_over_http_on_duckdb(warehouse, server) -> None:
    with warehouse.session() as session:
        check_track_sends_once(session, server)


def test_track_over_http_on_snowflake(server) -> None:
    with fake_snowflake() as snowflake, snowflake.session() as session:
        check_track_sends_once(session, server)
        # the incremental mark on the Snowflake path: only the new row is read and sent
        spec = track_spec(name="events_track", incremental_column="seq")
        events_table(session, [("e4", "u4", "inc", 4)])
        sync(session, server, spec)  # first incremental sync: no mark yet, the ledger skips e1..e3
        events_table(session, [("e4", "u4", "inc", 4), ("e5", "u5", "next", 5)])
        assert sync(session, server, spec).counts["added"] == 1
        assert [m["userId"] for m in server.messages][-2:] == ["u4", "u5"]


def people(session: WarehouseSession) -> None:
    session.execute("CREATE SCHEMA IF NOT EXISTS models")
    session.execute(
        "CREATE OR REPLACE TABLE models.subs AS SELECT * FROM (VALUES "
        f"('u1', 'a@x.io', 'subscribed', 'acc_1', '{CONSENT}'), ('u2', NULL, 'true', 'acc_2', NULL)) "
        "AS t(id, email, status, account, consent)"
    )


def spec(**fields) -> MappingSpec:
    mapping = MappingConfig(name="subs_m", user_id="id", consent="consent", **fields)
    return MappingSpec(SyncSource("subs", ("subs",), "models.subs", "id", "models/subs.yml"), mapping)


def test_subscription_over_http_rejects_per_record_and_sends_the_rest(warehouse, server) -> None:
    with warehouse.session() as session:
        people(session)
        report = sync(
            session, server, spec(action="subscription", email="email", email_subscription_status="status")
        )
        assert (report.counts["delivered"], report.counts["rejected"], report.status) == (
            1,
            1,
            "partial_success",
        )
        (message,) = server.messages
        assert message["context"]["messaging_subscriptions"] == [
            {"key": "a@x.io", "type": "EMAIL", "status": "SUBSCRIBED"}
        ]
        assert message["context"]["consent"] == {"categoryPreferences": {"Advertising": False}}
        code, reason, status = session.query(
            "SELECT reason_code, reason, status FROM _segment_profiles.failed_records WHERE mapping = 'subs_m'"
        ).rows[0]
        # u2 has a status but no email: with no other id mapped, the destination's first check fails
        assert (code, status) == ("missing_external_ids", "rejected")
        assert reason == "Either `Email` or `Phone` or `Android_Push_Token` or `Ios_Push_Token` must be defined."


def test_identify_with_group_id_and_consent_over_http(warehouse, server) -> None:
    with warehouse.session() as session:
        people(session)
        assert (
            sync(
                session, server, spec(action="identify", group_id="account", traits={"email": "email"})
            ).status
            == "success"
        )
        by_user = {m["userId"]: m for m in server.messages}
        assert by_user["u1"]["groupId"] == "acc_1" and by_user["u2"]["context"]["consent"] == {}
        assert by_user["u1"]["context"]["consent"] == {"categoryPreferences": {"Advertising": False}}
