"""Syncs on the Snowflake path (fakesnow) with real HTTP to the Segment-compatible server.

The dry run is covered in models/test_snowflake.py; these send for real: acknowledgements,
updates, clears, failures and retries, and the lock a Snowflake sync holds while it runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from segment_profiles_pipeline.errors import SyncError
from segment_profiles_pipeline.segment.client import SegmentClient
from segment_profiles_pipeline.state import ensure_state, sync_locks
from segment_profiles_pipeline.state.sync_locks import STALE_AFTER, LockLost
from segment_profiles_pipeline.sync import engine
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline.warehouse.base import WarehouseSession, literal
from segment_profiles_pipeline.warehouse.snowflake import SnowflakeWarehouse
from segment_profiles_pipeline_tests.sync.helpers import failed, ledger, people_spec, people_table
from segment_profiles_pipeline_tests.sync.test_lock import heartbeat_threads, holders, wait_for
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import fake_snowflake

WRITE_KEY = "wk-snowflake-test-7d1e"
ROWS = [("u1", "a@x.io", "free"), ("u2", "b@x.io", "pro"), ("u3", "c@x.io", "free")]


async def no_wait(_seconds: float) -> None:
    """Backoff without waiting: the tests check outcomes, not the clock."""


@pytest.fixture
def server() -> Iterator[FakeSegmentServer]:
    with FakeSegmentServer(write_key=WRITE_KEY) as srv:
        yield srv


@pytest.fixture
def snowflake() -> Iterator[SnowflakeWarehouse]:
    with fake_snowflake() as warehouse:
        yield warehouse


@pytest.fixture
def session(snowflake: SnowflakeWarehouse) -> Iterator[WarehouseSession]:
    with snowflake.session() as s:
        people_table(s, ROWS)
        yield s


def sync(session: WarehouseSession, server: FakeSegmentServer, **mapping: Any) -> engine.SyncReport:
    with SegmentClient(server.url, WRITE_KEY, sleep=no_wait, max_retries=1) as sender:
        return run_sync(session, people_spec(**mapping), sender)


def statuses(session: WarehouseSession) -> dict[str, str]:
    return dict(session.query("SELECT sync_id, status FROM _segment_profiles.sync_history").rows)


class Holding:
    """A sender that runs ``during`` before its first delivery: one long chunk, no chunk boundary."""

    def __init__(self, inner: SegmentClient, during: Callable[[], None]):
        self.inner = inner
        self.during = during
        self.calls = 0

    def deliver(self, messages: Sequence[bytes]) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.during()
        return self.inner.deliver(messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_acknowledgements_land_in_the_ledger_and_an_update_resends_only_that_record(session, server) -> None:
    report = sync(session, server)
    assert report.status == "success" and report.counts["delivered"] == 3
    assert sorted(m["userId"] for m in server.messages) == ["u1", "u2", "u3"]
    assert set(ledger(session)) == {"u1", "u2", "u3"}
    assert list(statuses(session).values()) == ["success"]

    assert sync(session, server).counts["sent"] == 0  # nothing changed: nothing sent
    assert server.message_count == 3

    before = ledger(session)
    people_table(
        session, [("u1", "a@x.io", "free"), ("u2", "b@x.io", "enterprise"), ("u3", "c@x.io", "free")]
    )
    report = sync(session, server)
    assert (report.counts["updated"], report.counts["delivered"]) == (1, 1)
    assert server.messages[-1]["userId"] == "u2" and server.messages[-1]["traits"]["plan"] == "enterprise"
    assert server.message_count == 4
    after = ledger(session)
    assert after["u2"] != before["u2"] and {k: after[k] for k in ("u1", "u3")} == {
        k: before[k] for k in ("u1", "u3")
    }


def test_a_delete_with_clear_traits_sends_the_clear_once(session, server) -> None:
    sync(session, server, on_delete="clear_traits")
    people_table(session, ROWS[:2])
    report = sync(session, server, on_delete="clear_traits")
    assert report.counts["deleted"] == 1 and report.status == "success"
    clear = server.messages[-1]
    assert clear["userId"] == "u3" and clear["traits"] == {"email": None, "plan": None}
    assert set(ledger(session)) == {"u1", "u2"}
    sync(session, server, on_delete="clear_traits")
    assert server.message_count == 4  # the acknowledged clear is not sent again


def test_records_of_a_batch_that_got_5xx_are_recorded_and_retried_next_sync(session, server) -> None:
    server.reject_when(lambda m: m.get("userId") == "u3", status=500, message="boom")
    report = sync(session, server)
    assert report.status == "failed" and report.counts["failed"] == 3  # one batch, it failed
    assert {key: row[0] for key, row in failed(session).items()} == dict.fromkeys(
        ["u1", "u2", "u3"], "delivery"
    )
    assert all("HTTP 500" in row[1] for row in failed(session).values())
    assert ledger(session) == {}

    server.reject_when(None)
    report = sync(session, server)
    assert report.status == "success" and report.counts["delivered"] == 3
    assert sorted(m["userId"] for m in server.messages) == ["u1", "u2", "u3"]  # refused ones are not kept
    assert failed(session) == {} and set(ledger(session)) == {"u1", "u2", "u3"}


def test_a_live_lock_refuses_the_sync_and_a_dead_one_is_taken_over(session, server) -> None:
    ensure_state(session)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    session.execute(
        "INSERT INTO _segment_profiles.sync_locks (mapping, shard, sync_id, acquired_at, heartbeat_at) "
        f"VALUES ('people_identify', 0, 'other', {literal(now)}, {literal(now)})"
    )
    session.execute(
        "INSERT INTO _segment_profiles.sync_history (sync_id, mapping, shard, shards, dry_run, started_at, status) "
        f"VALUES ('other', 'people_identify', 0, 1, FALSE, {literal(now)}, 'running')"
    )
    with pytest.raises(SyncError, match=r"another sync of mapping 'people_identify' \(shard 0\) is running"):
        sync(session, server)
    assert server.message_count == 0 and statuses(session) == {"other": "running"}

    old = now - STALE_AFTER - dt.timedelta(seconds=1)  # the other process stopped beating 5 min ago
    session.execute(f"UPDATE _segment_profiles.sync_locks SET heartbeat_at = {literal(old)}")
    report = sync(session, server)
    assert report.status == "success" and server.message_count == 3
    assert statuses(session) == {"other": "interrupted", report.sync_id: "success"}
    assert holders(session) == [] and heartbeat_threads() == []  # released, heartbeat stopped


def test_the_heartbeat_advances_while_one_chunk_is_being_sent(
    session, server, snowflake, monkeypatch
) -> None:
    monkeypatch.setattr(sync_locks, "HEARTBEAT_EVERY", dt.timedelta(milliseconds=10))

    def beats_while_sending() -> None:
        with snowflake.session() as observer:
            (_sync_id, acquired_at, first) = holders(observer)[0]
            wait_for(lambda: holders(observer)[0][2] > first, "a heartbeat during the send")
            assert holders(observer)[0][1] == acquired_at

    with SegmentClient(server.url, WRITE_KEY, sleep=no_wait) as client:
        report = run_sync(session, people_spec(), Holding(client, beats_while_sending))
    assert report.status == "success"


def test_a_sync_whose_lock_was_taken_over_stops_before_the_next_chunk(
    session, server, snowflake, monkeypatch
) -> None:
    monkeypatch.setattr(engine, "CHUNK_ROWS", 2)  # three chunks: u1,u2 | u3,u4 | u5
    people_table(session, [(f"u{i}", f"{i}@x.io", "free") for i in range(1, 6)])

    def taken_over() -> None:  # what a sync that found our heartbeat stale does
        with snowflake.session() as other:
            other.execute("DELETE FROM _segment_profiles.sync_locks")
            other.execute(
                "INSERT INTO _segment_profiles.sync_locks (mapping, shard, sync_id, acquired_at, heartbeat_at) "
                "VALUES ('people_identify', 0, 'usurper', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )

    with (
        SegmentClient(server.url, WRITE_KEY, sleep=no_wait) as client,
        pytest.raises(LockLost, match="lost its lock \\(now held by sync usurper"),
    ):
        run_sync(session, people_spec(), Holding(client, taken_over))
    assert server.message_count == 2  # the chunk in flight finished; no later chunk was sent
    assert set(ledger(session)) == {"u1", "u2"}  # its acknowledgements are true and kept
    assert [h[0] for h in holders(session)] == ["usurper"]  # our release left the new holder's row
    ((status, error),) = session.query("SELECT status, error FROM _segment_profiles.sync_history").rows
    assert status == "failed" and "lost its lock" in error
