"""Incremental runs give exactly the full rebuild's result, and touch only the affected profiles."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from segment_profiles_pipeline.models.sample_data import seed_missing
from segment_profiles_pipeline.settings import PROJECT_ROOT
from segment_profiles_pipeline.traits.compute import STATE_TABLE, compute_traits
from segment_profiles_pipeline.traits.config import TraitsProject, load_traits
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.traits.helpers import T0, ev, load_events, table_rows, traits_file

DAY = 24 * 60
TRAITS = """
traits:
  - {name: Events, type: event_counter, event: Test Event}
  - {name: Recent, type: event_counter, event: Test Event, window: {days: 3}}
  - {name: Last v, type: last, event: Test Event, property: v}
  - {name: Recent last v, type: last, event: Test Event, property: v, window: {hours: 60}}
  - {name: Top v, type: most_frequent, event: Test Event, property: v}
  - {name: All v, type: unique_list, event: Test Event, property: v}
  - {name: Others, type: event_counter, event: Other Event}
"""
NOW1 = T0 + dt.timedelta(days=5)
NOW2 = T0 + dt.timedelta(days=6)
LATE = T0 + dt.timedelta(days=5, hours=12)  # received after the first run


def initial_events() -> dict[str, list[dict[str, Any]]]:
    return {
        "flex.test_event": [
            ev("a", user="u1", minute=0, v="x"),
            ev("b", user="u1", minute=10, v="y"),
            ev("c", user="u2", minute=20, v="x"),
            ev("d", user="u3", minute=30, v="z"),
            # a later copy of u3's message under u1: deduplicated away; u1's incremental recompute must not revive it
            ev("d", user="u1", minute=30, v="z", received_at=T0 + dt.timedelta(hours=1)),
            ev("e", anon="a1", minute=40, v="y"),
            ev("f", user="u5", minute=int(2.5 * DAY), v="w"),  # leaves the 3-day window between the runs
            ev("g", user="u6", minute=4 * DAY, v="q"),  # stays inside every window
        ],
        "flex.other_event": [ev("o1", user="u4", minute=0), ev("o2", user="u2", minute=5)],
    }


def new_events() -> dict[str, list[dict[str, Any]]]:
    return {
        "flex.test_event": [
            ev("h", user="u1", minute=5 * DAY, v="x", received_at=LATE),
            ev("i", user="u7", minute=5 * DAY, v="v", received_at=LATE),
            ev("j", anon="a1", minute=5 * DAY, v="y", received_at=LATE),
            # a late copy of u2's message under u8: deduplicated away, so u8 gets no row
            ev("c", user="u8", minute=20, v="x", received_at=LATE),
        ],
        "flex.other_event": [ev("o3", user="u4", minute=5 * DAY, received_at=LATE)],
    }


def load_all(session, batches: list[dict[str, list[dict[str, Any]]]]) -> None:
    created: set[str] = set()
    for batch in batches:
        for table, rows in batch.items():
            load_events(session, table, rows, create=table not in created)
            created.add(table)


def full_result(tmp_path: Path, project: TraitsProject, now: dt.datetime) -> dict[str, dict[str, Any]]:
    with DuckDBWarehouse(database=str(tmp_path / "reference.duckdb")).session() as session:
        load_all(session, [initial_events(), new_events()])
        assert compute_traits(session, project, now).mode == "full"
        return table_rows(session)


def test_incremental_equals_full_and_touches_only_affected_profiles(tmp_path: Path) -> None:
    project = traits_file(tmp_path / "models", TRAITS)
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_all(session, [initial_events()])
        first = compute_traits(session, project, NOW1)
        assert first.mode == "full"
        before = table_rows(session)
        for table, rows in new_events().items():
            load_events(session, table, rows, create=False)
        stats = compute_traits(session, project, NOW2)
        after = table_rows(session)
    assert stats.mode == "incremental" and stats.new_events == 5
    # Recomputed: u1, u7, a1 (new events), u4 (new Other Event), u5 (the window edge passed its event),
    # u2 and u8 (they hold copies of message "c"; u8's copy is deduplicated away, so u8 gets no row).
    assert stats.profiles_recomputed == 6
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {"user:u1", "user:u7", "anon:a1", "user:u4", "user:u5"}
    assert before["user:u5"]["recent"] == 1 and after["user:u5"]["recent"] == 0
    assert after == full_result(tmp_path, project, NOW2)


def test_windows_move_without_new_events(tmp_path: Path) -> None:
    project = traits_file(tmp_path / "models", TRAITS)
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_all(session, [initial_events()])
        compute_traits(session, project, NOW1)
        stats = compute_traits(session, project, NOW2)
        rows = table_rows(session)
    assert (stats.mode, stats.new_events, stats.profiles_recomputed) == ("incremental", 0, 1)  # u5 only
    assert (rows["user:u5"]["recent"], rows["user:u5"]["recent_last_v"]) == (0, None)
    assert (rows["user:u6"]["recent"], rows["user:u6"]["recent_last_v"]) == (1, "q")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("full_refresh", "full refresh requested"),
        ("definitions", "trait definitions (or event column types) changed"),
        ("late_row", "changed below the high-water mark"),
        ("deleted_row", "changed below the high-water mark"),
        ("earlier_run", "earlier than the last run"),
        ("state_lost", "no watermark state yet"),
    ],
)
def test_full_rebuild_when_incremental_would_be_wrong(tmp_path: Path, change: str, reason: str) -> None:
    project = traits_file(tmp_path / "models", TRAITS)
    now = NOW2
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_all(session, [initial_events()])
        compute_traits(session, project, NOW1)
        if change == "definitions":
            # same columns, other meaning: only the fingerprint of the compiled SQL can tell
            project = traits_file(tmp_path / "models", TRAITS.replace("days: 3", "days: 2"))
        elif change == "late_row":  # loaded now, but received before the high-water mark
            load_events(session, "flex.test_event", [ev("late", user="u9", minute=1, v="x")], create=False)
        elif change == "deleted_row":
            session.execute("DELETE FROM flex.test_event WHERE id = 'd'")
        elif change == "earlier_run":
            now = NOW1 - dt.timedelta(hours=1)
        elif change == "state_lost":
            session.execute(f"DELETE FROM {STATE_TABLE}")
        stats = compute_traits(session, project, now, full_refresh=change == "full_refresh")
        rows = table_rows(session)
    assert stats.mode == "full" and reason in stats.reason
    if change == "late_row":
        assert rows["user:u9"]["events"] == 1
    if change == "deleted_row":
        assert "user:u3" not in rows
    if change == "definitions":
        assert rows["user:u6"]["recent"] == 1 and rows["user:u5"]["recent"] == 0


def test_no_new_events_and_no_windows_recomputes_nothing(tmp_path: Path) -> None:
    project = traits_file(
        tmp_path / "models", "traits:\n  - {name: Events, type: event_counter, event: Test Event}\n"
    )
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_all(session, [initial_events()])
        compute_traits(session, project, NOW1)
        stats = compute_traits(session, project, NOW2)
        assert (stats.mode, stats.profiles_recomputed, stats.rows) == (
            "incremental",
            0,
            6,
        )  # u1-u3, a1, u5, u6
        assert session.query(f"SELECT DISTINCT computed_at FROM {STATE_TABLE}").rows == [(NOW2,)]


def test_sample_data_new_events_for_ten_profiles_change_only_their_rows(tmp_path: Path) -> None:
    project = load_traits(PROJECT_ROOT / "models")
    assert project is not None
    now = dt.datetime(2026, 11, 2)
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        seed_missing(session, 200)
        assert compute_traits(session, project, now).mode == "full"
        before = table_rows(session)
        ten = [f"u_{n:07d}" for n in range(1, 11)]
        users = ", ".join(f"'{u}'" for u in ten)
        # one new Outbound engagement and one negative completion per user, received after everything else
        session.execute(
            "INSERT INTO flex.flex_engagement_initiated SELECT * REPLACE ('new-' || user_id AS id, "
            "TIMESTAMP '2026-11-01 12:00:00' AS timestamp, TIMESTAMP '2026-11-01 12:00:05' AS received_at, "
            "'Outbound' AS direction, 'WK-new' AS last_known_agent_worker_sid) "
            f"FROM flex.flex_engagement_initiated WHERE user_id IN ({users}) "
            "QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY id) = 1"
        )
        session.execute(
            "INSERT INTO flex.flex_engagement_completed SELECT * REPLACE ('new-' || user_id AS id, "
            "TIMESTAMP '2026-11-01 12:05:00' AS timestamp, TIMESTAMP '2026-11-01 12:05:05' AS received_at, "
            "'negative' AS sentiment) "
            f"FROM flex.flex_engagement_completed WHERE user_id IN ({users}) "
            "QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY id) = 1"
        )
        stats = compute_traits(session, project, now + dt.timedelta(hours=1))
        after = table_rows(session)
        assert stats.mode == "incremental" and stats.profiles_recomputed == 10 and stats.new_events == 20
        assert compute_traits(session, project, now + dt.timedelta(hours=1), full_refresh=True).mode == "full"
        rebuilt = table_rows(session)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {f"user:{u}" for u in ten}
    for user in ten:
        row, old = after[f"user:{user}"], before[f"user:{user}"]
        assert row["total_outbounds"] == old["total_outbounds"] + 1
        assert (row["last_known_service_agent"], row["sentiment_in_last_interaction"]) == (
            "WK-new",
            "negative",
        )
    assert after == rebuilt
