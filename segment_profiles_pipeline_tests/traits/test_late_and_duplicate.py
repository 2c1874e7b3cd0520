"""Incremental runs equal a full rebuild for late events (an event time before the watermark,
received after it), copies of a message arriving in later loads, and new users next to merges,
on DuckDB and fakesnow. Hand-built events, hand-counted answers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from segment_profiles_pipeline.identity.compute import compute_identity
from segment_profiles_pipeline.identity.config import load_identity
from segment_profiles_pipeline.state import trait_state
from segment_profiles_pipeline.traits.compute import TraitsRunStats, compute_traits
from segment_profiles_pipeline.traits.config import TraitsProject
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.traits.helpers import T0, ev, load_events, table_rows, traits_file
from segment_profiles_pipeline_tests.traits.test_resolved_profiles import _plain
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import dialect_session

# No unique_list: fakesnow cannot run ARRAY_SORT(ARRAY_AGG(…)) (see test_incremental.py).
TRAITS = """
traits:
  - {name: Events, type: event_counter, event: Test Event}
  - {name: Total n, type: aggregation, function: sum, event: Test Event, property: n}
  - {name: Min n, type: aggregation, function: min, event: Test Event, property: n}
  - {name: First v, type: first, event: Test Event, property: v}
  - {name: Last v, type: last, event: Test Event, property: v}
  - {name: Top v, type: most_frequent, event: Test Event, property: v, min_frequency: 1}
  - {name: Count v, type: unique_list_count, event: Test Event, property: v}
"""
TABLE = "flex.test_event"
TYPES = {"n": pa.int64()}
NOW = T0 + dt.timedelta(days=30)


def received(day: int, second: int) -> dt.datetime:
    return T0 + dt.timedelta(days=day, seconds=second)


LOADS: list[list[dict[str, Any]]] = [
    [  # day 1: the history
        ev("m1", user="u1", minute=60, v="x", n=5, received_at=received(1, 1)),
        ev("m2", user="u1", minute=120, v="y", n=7, received_at=received(1, 2)),
        ev("m3", user="u2", minute=60, v="z", n=1, received_at=received(1, 3)),
        ev("m4", anon="a1", minute=90, v="w", n=2, received_at=received(1, 4)),
    ],
    [  # day 2: late events and copies, all received after the day-1 watermark
        # happened before everything u1 had: its new first value, not its last
        ev("late1", user="u1", minute=0, v="early", n=-3, received_at=received(2, 1)),
        # a copy of u1's m2 under u2 (a later copy: deduplicated away, nothing moves, nothing doubles)
        ev("m2", user="u2", minute=120, v="y", n=7, received_at=received(2, 2)),
        # a copy of m3 in the same load, and a late event for a1 between its stored event and now
        ev("m3", user="u2", minute=60, v="z", n=1, received_at=received(2, 3)),
        ev("late2", anon="a1", minute=30, v="w", n=4, received_at=received(2, 4)),
        # a new user: new identifiers in the graph, on no counted event
        ev("n1", user="u3", minute=10, v="q", n=9, received_at=received(2, 5)),
    ],
    [  # day 3: the third copy of m2, and a fresh copy pair of a new message
        ev("m2", user="u3", minute=120, v="y", n=7, received_at=received(3, 1)),
        ev("n2", user="u3", minute=20, v="q", n=1, received_at=received(3, 2)),
        ev("n2", user="u1", minute=20, v="q", n=1, received_at=received(3, 3)),
    ],
]

PENDING_EVENT = ev("p1", anon="d9", minute=200, v="p", n=1, received_at=received(1, 9))
NEW_USER_EVENT = ev("n9", user="u3", minute=10, v="q", n=9, received_at=received(2, 1))


@pytest.fixture(params=["duckdb", "snowflake"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WarehouseSession]:
    with dialect_session(request.param, tmp_path) as opened:
        yield opened


def run(
    session: WarehouseSession, project: TraitsProject, loads: list[list[dict[str, Any]]], first: bool
) -> TraitsRunStats:
    """Load ``loads``, resolve identities over them and compute the traits, as the asset graph does."""
    for number, rows in enumerate(loads):
        load_events(session, TABLE, rows, TYPES, create=first and number == 0)
    compute_identity(session, load_identity(project.path.parent), [tuple(TABLE.split("."))], [], NOW)
    return compute_traits(session, project, NOW)


def pending(session: WarehouseSession) -> list[tuple[str, str]]:
    return [tuple(r) for r in session.query(f"SELECT * FROM {trait_state.PENDING}").rows]


def rebuilt(tmp_path: Path, project: TraitsProject, count: int) -> dict[str, dict[str, Any]]:
    """A full rebuild over the first ``count`` loads, in a warehouse of its own."""
    with DuckDBWarehouse(database=str(tmp_path / f"reference{count}.duckdb")).session() as reference:
        assert run(reference, project, LOADS[:count], first=True).mode == "full"
        return _plain(table_rows(reference))


def test_late_events_and_copies_across_loads_merge_like_a_full_rebuild(
    session: WarehouseSession, tmp_path: Path
) -> None:
    project = traits_file(tmp_path / "models", TRAITS)
    assert run(session, project, LOADS[:1], first=True).mode == "full"

    second = run(session, project, LOADS[1:2], first=False)
    rows = _plain(table_rows(session))
    assert rows == rebuilt(tmp_path, project, 2)
    # Recomputed from their events: the profiles holding a copy of m2 or m3 (u1, u2), nobody else.
    assert (second.mode, second.profiles_from_history, second.profiles_moved) == ("incremental", 2, 0)
    u1, u2, a1, u3 = (rows[k] for k in ("user:u1", "user:u2", "anon:a1", "user:u3"))
    assert (u1["events"], u1["total_n"], u1["min_n"], u1["first_v"], u1["last_v"]) == (3, 9, -3, "early", "y")
    assert (u2["events"], u2["total_n"], u2["last_v"]) == (1, 1, "z")  # its copies of m2 and m3 lose
    assert (a1["events"], a1["first_v"], a1["last_v"], a1["top_v"], a1["count_v"]) == (2, "w", "w", "w", 1)
    assert (u3["events"], u3["first_v"]) == (1, "q")

    third = run(session, project, LOADS[2:3], first=False)
    rows = _plain(table_rows(session))
    assert rows == rebuilt(tmp_path, project, 3)
    assert third.mode == "incremental"
    # m2 still counts once, for u1; n2's first copy (u3's) wins over its copy in the same load
    assert (rows["user:u1"]["events"], rows["user:u3"]["events"], rows["user:u3"]["top_v"]) == (3, 2, "q")


def test_a_new_user_reads_no_old_event_and_a_pending_identifier_does(
    session: WarehouseSession, tmp_path: Path
) -> None:
    """New identifiers on new events only move nothing; an identifier a counted event held before
    the graph knew it (pending) moves that event once the graph has it."""
    project = traits_file(tmp_path / "models", TRAITS)
    run(session, project, LOADS[:1], first=True)
    # An event of u1 that also carries a device the graph has not seen, loaded after the identity run.
    load_events(session, TABLE, [PENDING_EVENT], TYPES, create=False)
    early = compute_traits(session, project, NOW)
    assert (early.unresolved_events, "anon:d9" in table_rows(session)) == (1, False)
    assert pending(session) == [("anonymous_id", "d9")]
    # The graph catches up: d9's event (now below the watermark) moves into d9's new profile; u3's
    # new identifiers are on new events only.
    stats = run(session, project, [[NEW_USER_EVENT]], first=False)
    rows = _plain(table_rows(session))
    assert (stats.new_events, stats.profiles_moved) == (1, 1)
    assert (rows["anon:d9"]["events"], rows["user:u3"]["events"]) == (1, 1)
    assert pending(session) == []  # in the graph now: stored in the map instead
    with DuckDBWarehouse(database=str(tmp_path / "reference.duckdb")).session() as reference:
        run(reference, project, [[*LOADS[0], PENDING_EVENT, NEW_USER_EVENT]], first=True)
        assert rows == _plain(table_rows(reference))


def test_the_send_target_follows_the_graphs_order_of_identifiers(
    session: WarehouseSession, tmp_path: Path
) -> None:
    """A profile without a user_id is sent to its first anonymous_id (lowest ``seq``): when only
    the order changes (a graph rebuilt from another history), the row is re-addressed."""
    project = traits_file(tmp_path / "models", TRAITS)
    two_devices = [
        ev("d1", anon="a1", minute=0, v="x", n=1, received_at=received(1, 1)),
        ev("d2", anon="a2", minute=1, v="y", n=1, received_at=received(1, 2)),
    ]
    run(session, project, [two_devices], first=True)
    mapping = "identity.external_id_mapping"
    first = f"(SELECT canonical_segment_id FROM {mapping} WHERE external_id_value = 'a1')"
    # Graph surgery, as a rebuilt graph would have it: a2 joins a1's profile, added after a1 ...
    session.execute(f"UPDATE {mapping} SET canonical_segment_id = {first} WHERE external_id_value = 'a2'")
    merged = compute_traits(session, project, NOW)
    assert (merged.profiles_moved, {k: r["events"] for k, r in table_rows(session).items()}) == (
        2,
        {"anon:a1": 2},
    )
    # ... then the same profile with a2 added first: only seq changed
    session.execute(f"UPDATE {mapping} SET seq = -1 WHERE external_id_value = 'a2'")
    reordered = compute_traits(session, project, NOW)
    assert (reordered.mode, reordered.new_events, reordered.profiles_moved) == ("incremental", 0, 0)
    assert {k: r["events"] for k, r in table_rows(session).items()} == {"anon:a2": 2}
