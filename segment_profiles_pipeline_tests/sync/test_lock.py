"""The sync lock on Snowflake (through fakesnow) and DuckDB: live locks hold, dead ones are taken over.

Time is injected: ``Clock`` is the lock's clock; calls from the heartbeat thread can be held, so a
test decides when a beat happens instead of sleeping. Waiting is polling with a deadline.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from segment_profiles_pipeline.errors import SyncError, WarehouseError
from segment_profiles_pipeline.state import ensure_state
from segment_profiles_pipeline.state.sync_locks import STALE_AFTER, LockLost, SyncLock, ensure_held
from segment_profiles_pipeline.warehouse.base import WarehouseSession, literal
from segment_profiles_pipeline.warehouse.snowflake import SnowflakeSession, SnowflakeWarehouse
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import fake_snowflake

T0 = dt.datetime(2026, 12, 1, 9, 0, 0)
FAST = dt.timedelta(milliseconds=10)


class Clock:
    """Test time: it only moves when told to; ``hold_beats`` makes heartbeat-thread reads wait."""

    def __init__(self, start: dt.datetime = T0):
        self.now = start
        self._beats = threading.Event()
        self._beats.set()

    def __call__(self) -> dt.datetime:
        if threading.current_thread() is not threading.main_thread():
            assert self._beats.wait(10), "beats were held for too long"
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta

    def hold_beats(self) -> None:
        self._beats.clear()

    def let_beats_run(self) -> None:
        self._beats.set()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


def holders(session: WarehouseSession) -> list[tuple[str, dt.datetime, dt.datetime]]:
    return session.query(
        "SELECT sync_id, acquired_at, heartbeat_at FROM _segment_profiles.sync_locks ORDER BY sync_id"
    ).rows


def leave_dead_sync(session: WarehouseSession, sync_id: str, heartbeat_at: dt.datetime) -> None:
    """What a killed process leaves behind: its lock row and a ``running`` history row."""
    session.execute(
        "INSERT INTO _segment_profiles.sync_locks (mapping, shard, sync_id, acquired_at, heartbeat_at) "
        f"VALUES ('m', 0, {literal(sync_id)}, {literal(heartbeat_at)}, {literal(heartbeat_at)})"
    )
    session.execute(
        "INSERT INTO _segment_profiles.sync_history (sync_id, mapping, shard, shards, dry_run, started_at, status) "
        f"VALUES ({literal(sync_id)}, 'm', 0, 1, FALSE, {literal(heartbeat_at)}, 'running')"
    )


def history(session: WarehouseSession) -> dict[str, tuple[str, str | None]]:
    rows = session.query("SELECT sync_id, status, error FROM _segment_profiles.sync_history").rows
    return {r[0]: (r[1], r[2]) for r in rows}


def heartbeat_threads(sync_id: str = "") -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"sync-lock-heartbeat-{sync_id}")]


@pytest.fixture
def snowflake() -> Iterator[SnowflakeWarehouse]:
    with fake_snowflake() as warehouse:
        with warehouse.session() as session:
            ensure_state(session)
        yield warehouse


def test_a_live_lock_is_not_taken_over_even_minutes_after_its_last_beat(snowflake) -> None:
    clock = Clock()
    with snowflake.session() as ours, snowflake.session() as theirs:
        with SyncLock(ours, "m", 0, "live", clock=clock):
            clock.advance(STALE_AFTER - dt.timedelta(seconds=1))  # old, but not stale yet
            with pytest.raises(
                SyncError, match=r"another sync of mapping 'm' \(shard 0\) is running \(sync live"
            ):
                SyncLock(theirs, "m", 0, "contender", clock=clock).acquire()
            assert [h[0] for h in holders(theirs)] == ["live"]  # the loser removed its own row
        assert holders(theirs) == []  # released on exit


def test_a_lock_whose_heartbeat_is_stale_is_taken_over_and_its_run_marked_interrupted(snowflake) -> None:
    clock = Clock(T0 + STALE_AFTER + dt.timedelta(seconds=1))
    logs: list[str] = []
    with snowflake.session() as session:
        leave_dead_sync(session, "dead", heartbeat_at=T0)
        session.execute(
            "INSERT INTO _segment_profiles.sync_history (sync_id, mapping, shard, shards, dry_run, started_at, status) "
            f"VALUES ('other-shard', 'm', 1, 2, FALSE, {literal(T0)}, 'running')"
        )
        with SyncLock(session, "m", 0, "next", clock=clock, log=logs.append):
            assert holders(session) == [("next", clock.now, clock.now)]
        status, error = history(session)["dead"]
        assert status == "interrupted"
        assert "the process running this sync stopped" in error and "sync next took its lock over" in error
        assert history(session)["other-shard"] == ("running", None)  # another shard's live sync is left alone
    assert any("from dead sync(s) dead" in line for line in logs)


def test_the_heartbeat_thread_keeps_a_busy_sync_alive_past_the_stale_threshold(snowflake) -> None:
    clock = Clock()
    # The sync's own session runs nothing below, as during one long statement or one slow chunk.
    with (
        snowflake.session() as ours,
        snowflake.session() as observer,
        SyncLock(ours, "m", 0, "busy", heartbeat_every=FAST, clock=clock),
    ):
        for _minute in range(2 * int(STALE_AFTER / dt.timedelta(minutes=1))):
            clock.advance(dt.timedelta(minutes=1))
            wait_for(lambda: holders(observer)[0][2] == clock.now, f"a beat at {clock.now}")
        assert holders(observer) == [("busy", T0, clock.now)]
        with pytest.raises(SyncError, match="another sync"):
            SyncLock(observer, "m", 0, "contender", clock=clock).acquire()
        ensure_held(ours, "m", 0, "busy")


@pytest.mark.parametrize("takeover", ["deleted", "another sync"])
def test_a_sync_that_lost_its_lock_is_told_and_its_heartbeat_stops(snowflake, takeover) -> None:
    clock = Clock()
    logs: list[str] = []
    with snowflake.session() as ours, snowflake.session() as theirs:
        lock = SyncLock(ours, "m", 0, "slow", heartbeat_every=FAST, clock=clock, log=logs.append).acquire()
        clock.hold_beats()  # its beats stop landing, as when its host is cut off
        if takeover == "deleted":
            theirs.execute("DELETE FROM _segment_profiles.sync_locks WHERE sync_id = 'slow'")
            expected = "not held by any sync"
        else:
            later = Clock(T0 + STALE_AFTER + dt.timedelta(seconds=1))
            usurper = SyncLock(theirs, "m", 0, "usurper", clock=later).acquire()
            expected = "held by sync usurper"
        with pytest.raises(
            LockLost, match=f"sync slow of mapping 'm' \\(shard 0\\) lost its lock \\(now {expected}"
        ):
            ensure_held(ours, "m", 0, "slow")
        clock.let_beats_run()
        wait_for(lambda: any("lost its lock" in line for line in logs), "the heartbeat noticed")
        wait_for(lambda: not heartbeat_threads("slow"), "the heartbeat thread stopped")
        lock.release()
        assert [h[0] for h in holders(theirs)] == ([] if takeover == "deleted" else ["usurper"])
        if takeover != "deleted":
            usurper.release()


def test_on_duckdb_any_other_lock_row_is_dead_and_no_heartbeat_thread_runs(warehouse) -> None:
    with warehouse.session() as session:
        ensure_state(session)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        leave_dead_sync(session, "killed", heartbeat_at=now)  # fresh, yet under the file lock it is dead
        with SyncLock(session, "m", 0, "next"):
            assert heartbeat_threads() == []
            assert [h[0] for h in holders(session)] == ["next"]
        assert history(session)["killed"][0] == "interrupted"


def test_a_heartbeat_session_that_cannot_be_opened_fails_the_acquire_cleanly(snowflake) -> None:
    with snowflake.session() as session:
        bare = SnowflakeSession(session.con)
        with pytest.raises(WarehouseError, match="cannot open a second one"):
            SyncLock(bare, "m", 0, "no-sibling").acquire()
        assert holders(session) == []  # no row left to block the next sync for minutes


def test_the_stale_threshold_must_span_several_heartbeats(snowflake) -> None:
    with snowflake.session() as session, pytest.raises(ValueError, match="at least 4 heartbeats"):
        SyncLock(
            session, "m", 0, "s", heartbeat_every=dt.timedelta(minutes=2), stale_after=dt.timedelta(minutes=5)
        )
