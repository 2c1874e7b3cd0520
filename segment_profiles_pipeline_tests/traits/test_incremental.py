"""Incremental runs give exactly the full rebuild's result, and touch only the affected profiles."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from segment_profiles_pipeline.models.sample_data import seed_missing
from segment_profiles_pipeline.settings import PROJECT_ROOT
from segment_profiles_pipeline.traits.compute import STATE_TABLE
from segment_profiles_pipeline.traits.config import TraitsProject, load_traits
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.traits.helpers import (
    T0,
    compute,
    ev,
    load_events,
    table_rows,
    traits_file,
)
from segment_profiles_pipeline_tests.traits.test_recipes import snowflake_session

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
        assert compute(session, project, now).mode == "full"
        return table_rows(session)


def test_incremental_equals_full_and_touches_only_affected_profiles(tmp_path: Path) -> None:
    project = traits_file(tmp_path / "models", TRAITS)
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_all(session, [initial_events()])
        first = compute(session, project, NOW1)
        assert first.mode == "full"
        before = table_rows(session)
        for table, rows in new_events().items():
            load_events(session, table, rows, create=False)
        stats = compute(session, project, NOW2)
        after = table_rows(session)
    assert stats.mode == "incremental" and stats.new_events == 5
    # Recomputed: u1, u7, a1 (new events), u4 (new Other Event), u5 (the window edge passed its event),
    # u2 (it holds the first copy of message "c"). u8's copy of "c" is deduplicated away by the identity
    # layer too, so u8 is in no profile: that row is the run's one unresolved event (it used to be
    # recomputed as a raw-user_id profile of its own, which then had no row).
    assert stats.profiles_recomputed == 6 and "user:u8" not in after
    assert stats.unresolved_events == 1
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {"user:u1", "user:u7", "anon:a1", "user:u4", "user:u5"}
    assert before["user:u5"]["recent"] == 1 and after["user:u5"]["recent"] == 0
    assert after == full_result(tmp_path, project, NOW2)


def test_windows_move_without_new_events(tmp_path: Path) -> None:
    project = traits_file(tmp_path / "models", TRAITS)
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_all(session, [initial_events()])
        compute(session, project, NOW1)
        stats = compute(session, project, NOW2)
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
        ("state_table_lost", "missing"),
    ],
)
def test_full_rebuild_when_incremental_would_be_wrong(tmp_path: Path, change: str, reason: str) -> None:
    project = traits_file(tmp_path / "models", TRAITS)
    now = NOW2
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_all(session, [initial_events()])
        compute(session, project, NOW1)
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
        elif change == "state_table_lost":  # Other Event has no windowed trait: its traits are kept as state
            session.execute("DROP TABLE _segment_profiles.trait_state__flex__other_event")
        stats = compute(session, project, now, full_refresh=change == "full_refresh")
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
        compute(session, project, NOW1)
        stats = compute(session, project, NOW2)
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
        assert compute(session, project, now).mode == "full"
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
        stats = compute(session, project, now + dt.timedelta(hours=1))
        after = table_rows(session)
        assert stats.mode == "incremental" and stats.profiles_recomputed == 10 and stats.new_events == 20
        assert compute(session, project, now + dt.timedelta(hours=1), full_refresh=True).mode == "full"
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


# Tables without windowed traits keep per-profile state that incremental runs merge new events into.
STATEFUL = """
traits:
  - {name: Events, type: event_counter, event: Test Event}
  - {name: Big, type: event_counter, event: Test Event, conditions: {property: n, operator: greater_than, value: 5}}
  - {name: Total n, type: aggregation, function: sum, event: Test Event, property: n}
  - {name: Avg n, type: aggregation, function: avg, event: Test Event, property: n}
  - {name: Min n, type: aggregation, function: min, event: Test Event, property: n}
  - {name: Max n, type: aggregation, function: max, event: Test Event, property: n}
  - {name: Top v, type: most_frequent, event: Test Event, property: v}
  - {name: Top v 3, type: most_frequent, event: Test Event, property: v, min_frequency: 3}
  - {name: First v, type: first, event: Test Event, property: v}
  - {name: Last v, type: last, event: Test Event, property: v}
  - {name: Last kept v, type: last, event: Test Event, property: v,
     conditions: {property: kind, operator: equals, value: keep}}
  - {name: All v, type: unique_list, event: Test Event, property: v}
  - {name: Count v, type: unique_list_count, event: Test Event, property: v}
  - {name: Others, type: event_counter, event: Other Event}
  - {name: Last w, type: last, event: Other Event, property: w}
"""
TYPES = {"n": pa.int64()}


def batch(
    day: int, rows: list[tuple[str, str | None, str | None, int | None, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Events received on ``day`` (one second apart, in list order): (id, user, anon, minute, props)."""
    received = T0 + dt.timedelta(days=day)
    return [
        ev(
            msg,
            user=user,
            anon=anon,
            minute=minute or 0,
            received_at=received + dt.timedelta(seconds=n),
            **props,
        )
        | ({"timestamp": None} if minute is None else {})
        for n, (msg, user, anon, minute, props) in enumerate(rows)
    ]


def stateful_batches() -> list[dict[str, list[dict[str, Any]]]]:
    """Four loads; the comments say what each one changes for the merge to get right."""
    return [
        {
            "flex.test_event": batch(
                0,
                [
                    ("a1", "u1", None, 0, {"v": "x", "n": 1, "kind": "keep"}),
                    ("a2", "u1", None, 10, {"v": "y", "n": 7, "kind": "drop"}),
                    ("a3", "u1", None, 20, {"v": None, "n": None}),
                    ("b1", "u2", None, 5, {"v": "B", "n": 3}),
                    ("b2", "u2", None, 5, {"v": "b", "n": 3}),  # same timestamp: received later, so last
                    ("c1", "u3", None, None, {"v": "p", "n": 2}),  # no timestamp: before everything
                    ("c2", "u3", None, 0, {"v": "q", "n": None}),
                    ("d1", None, "a9", 1, {"v": "z"}),
                    ("a2", "u5", None, 10, {"v": "y", "n": 7}),  # a later copy: deduplicated away
                ],
            ),
            "flex.other_event": batch(
                0, [("o1", "u1", None, 0, {"w": "k"}), ("o2", "u4", None, 0, {"w": None})]
            ),
        },
        {
            "flex.test_event": batch(
                1,
                [
                    ("a4", "u1", None, 15, {"v": "x", "n": 4, "kind": "keep"}),  # after a2: the new last v
                    ("b3", "u2", None, 5, {"v": "b", "n": 9}),  # same timestamp again, received last
                    ("c3", "u3", None, -10, {"v": "r", "n": None}),  # after c1 (null timestamps come first)
                    ("e1", "u6", None, 3, {"v": "m", "n": 10}),  # a new profile
                    ("e1", "u7", None, 3, {"v": "m", "n": 10}),  # its later copy, in the same load
                    ("d2", None, "a9", 2, {"v": "z"}),
                ],
            ),
            "flex.other_event": batch(1, [("o3", "u2", None, 0, {"w": "h"})]),  # u2 appears in Other Event
        },
        {
            "flex.test_event": batch(
                2,
                [
                    ("a5", "u1", None, -5, {"v": "y", "n": 0}),  # before a1: the new first v; x and y tie
                    ("b4", "u2", None, 5, {"v": "B", "n": 3}),  # B and b tie at 2: B wins (byte order)
                    ("c4", "u3", None, None, {"v": "s", "n": 1}),  # no timestamp, received after c1
                    ("e2", "u6", None, 4, {"v": None, "n": None}),  # nothing to aggregate
                    ("f2", "u8", None, 7, {"v": "a"}),
                    ("f3", "u8", None, 7, {"v": "c"}),
                ],
            ),
            "flex.other_event": batch(2, [("o4", "u4", None, -1, {"w": "g"})]),
        },
        {
            "flex.test_event": batch(
                3, [("a6", "u1", None, 15, {"v": "x", "n": 2}), ("d3", None, "a9", 0, {"v": "z"})]
            ),  # x leads again; a9 reaches min_frequency 3
        },
    ]


def load_batches(session, batches: list[dict[str, list[dict[str, Any]]]], *, first: bool) -> None:
    for number, tables in enumerate(batches):
        for table, rows in tables.items():
            load_events(session, table, rows, TYPES, create=first and number == 0)


def test_merged_state_equals_a_full_rebuild_after_every_increment(tmp_path: Path) -> None:
    project = traits_file(tmp_path / "models", STATEFUL)
    batches = stateful_batches()
    now = T0 + dt.timedelta(days=10)
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    with warehouse.session() as session:
        load_batches(session, batches[:1], first=True)
        assert compute(session, project, now).mode == "full"
    for number in range(1, len(batches)):
        with warehouse.session() as session:  # sessions of one thread share a connection: one at a time
            load_batches(session, batches[number : number + 1], first=False)
            stats = compute(session, project, now + dt.timedelta(hours=number))
            merged = table_rows(session)
        assert (stats.mode, stats.profiles_from_history) == ("incremental", 0)
        with DuckDBWarehouse(database=str(tmp_path / f"reference{number}.duckdb")).session() as reference:
            load_batches(reference, batches[: number + 1], first=True)
            compute(reference, project, now)
            assert merged == table_rows(reference), f"after load {number}"
    u1, u2, u3, u6, u8, a9 = (
        merged[k] for k in ("user:u1", "user:u2", "user:u3", "user:u6", "user:u8", "anon:a9")
    )
    assert (u1["first_v"], u1["last_v"], u1["last_kept_v"], u1["top_v"], u1["top_v_3"]) == (
        "y",
        "x",
        "x",
        "x",
        "x",
    )
    assert (u1["events"], u1["big"], u1["total_n"], u1["min_n"], u1["max_n"]) == (6, 1, 14, 0, 7)
    assert u1["avg_n"] == pytest.approx(14 / 5) and u1["all_v"] == ["x", "y"] and u1["count_v"] == 2
    assert (u2["top_v"], u2["last_v"], u2["others"], u2["last_w"]) == ("B", "B", 1, "h")
    assert (u3["first_v"], u3["last_v"]) == ("p", "q")
    assert (u6["events"], u6["avg_n"], u6["top_v"]) == (2, 10, None)
    assert (u8["last_v"], u8["first_v"]) == ("c", "a")
    assert (a9["top_v_3"], merged["user:u4"]["last_w"]) == ("z", "g")
    assert "user:u5" not in merged and "user:u7" not in merged


def test_merged_state_on_snowflake(tmp_path: Path) -> None:
    # fakesnow cannot run ARRAY_SORT(ARRAY_AGG(…)) (it wraps the array in TO_JSON), so no unique_list here.
    unique_list = "  - {name: All v, type: unique_list, event: Test Event, property: v}\n"
    assert unique_list in STATEFUL
    project = traits_file(tmp_path / "models", STATEFUL.replace(unique_list, ""))
    with snowflake_session() as session:
        batches = stateful_batches()
        now = T0 + dt.timedelta(days=10)
        load_batches(session, batches[:2], first=True)
        assert compute(session, project, now).mode == "full"
        load_batches(session, batches[2:], first=False)
        stats = compute(session, project, now + dt.timedelta(hours=1))
        merged = table_rows(session)
        assert compute(session, project, now + dt.timedelta(hours=1), full_refresh=True).mode == "full"
        assert (stats.mode, stats.profiles_from_history) == ("incremental", 0)
        assert merged == table_rows(session)


LOADED = """
sources: {watermark_column: loaded_at}
traits:
  - {name: Events, type: event_counter, event: Test Event}
  - {name: Last v, type: last, event: Test Event, property: v}
  - {name: Top v, type: most_frequent, event: Test Event, property: v, min_frequency: 1}
  - {name: All v, type: unique_list, event: Test Event, property: v}
"""


def test_new_copy_of_an_old_message_recomputes_the_profiles_of_its_copies(tmp_path: Path) -> None:
    """With a load-time watermark a late copy can have an earlier received_at and win deduplication."""
    project = traits_file(tmp_path / "models", LOADED)

    def loaded(rows: list[dict[str, Any]], day: int) -> list[dict[str, Any]]:
        return [r | {"loaded_at": T0 + dt.timedelta(days=day, seconds=n)} for n, r in enumerate(rows)]

    first = loaded(
        [
            ev("m0", user="u1", minute=0, v="x"),
            ev("m1", user="u1", minute=10, v="y", received_at=T0 + dt.timedelta(hours=2)),
            ev("n1", user="u3", minute=0, v="z", received_at=T0 + dt.timedelta(hours=2)),
        ],
        1,
    )
    second = loaded(
        [
            ev(
                "m1", user="u2", minute=10, v="y", received_at=T0 + dt.timedelta(hours=1)
            ),  # wins: u1 loses m1
            ev(
                "n1", user="u4", minute=0, v="z", received_at=T0 + dt.timedelta(hours=1)
            ),  # u3 loses its only event
            ev("p1", user="u5", minute=5, v="w"),  # merged as usual
        ],
        2,
    )
    types = {"loaded_at": pa.timestamp("us")}
    now = T0 + dt.timedelta(days=3)
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_events(session, "flex.test_event", first, types)
        compute(session, project, now)
        load_events(session, "flex.test_event", second, types, create=False)
        stats = compute(session, project, now)
        rows = table_rows(session)
    with DuckDBWarehouse(database=str(tmp_path / "reference.duckdb")).session() as reference:
        load_events(reference, "flex.test_event", first + second, types)
        compute(reference, project, now)
        assert rows == table_rows(reference)
    assert (stats.mode, stats.profiles_from_history, stats.profiles_recomputed) == ("incremental", 4, 5)
    assert (rows["user:u1"]["events"], rows["user:u1"]["last_v"], rows["user:u1"]["all_v"]) == (1, "x", ["x"])
    assert rows["user:u2"]["last_v"] == "y" and rows["user:u4"]["events"] == 1 and "user:u3" not in rows


def test_incremental_runs_read_new_events_only(tmp_path: Path) -> None:
    """The merge never reads a profile's old events again: a silent in-place edit of an old row (which
    no run can detect) stays invisible until the next full rebuild, while the new event counts."""
    project = traits_file(tmp_path / "models", STATEFUL)
    now = T0 + dt.timedelta(days=10)
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_batches(session, stateful_batches()[:1], first=True)
        compute(session, project, now)
        session.execute("UPDATE flex.test_event SET v = 'edited' WHERE id = 'a1'")
        load_events(
            session, "flex.test_event", batch(1, [("a9", "u1", None, 30, {"v": "w"})]), TYPES, create=False
        )
        assert compute(session, project, now).mode == "incremental"
        merged = table_rows(session)["user:u1"]
        compute(session, project, now, full_refresh=True)
        rebuilt = table_rows(session)["user:u1"]
    assert (merged["all_v"], merged["last_v"], merged["events"]) == (["w", "x", "y"], "w", 4)
    assert rebuilt["all_v"] == ["edited", "w", "y"]


def test_full_rebuild_drops_the_state_of_removed_traits(tmp_path: Path) -> None:
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_batches(session, stateful_batches()[:1], first=True)
        compute(session, traits_file(tmp_path / "models", STATEFUL), T0)
        assert session.table_exists("_segment_profiles", "trait_values__top_v_3")
        fewer = STATEFUL.replace(
            "  - {name: Top v 3, type: most_frequent, event: Test Event, property: v, min_frequency: 3}\n", ""
        )
        stats = compute(session, traits_file(tmp_path / "models", fewer), T0)
        assert stats.mode == "full" and "definitions" in stats.reason
        assert not session.table_exists("_segment_profiles", "trait_values__top_v_3")
        assert session.table_exists("_segment_profiles", "trait_values__top_v")
