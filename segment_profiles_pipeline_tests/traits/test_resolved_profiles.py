"""Traits per identity-resolved profile: anonymous history joins its user, merges move history
between profiles, targets follow the graph, and every incremental run equals a full rebuild
(DuckDB and fakesnow). Hand-built events, hand-counted answers."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.compute import compute_identity
from segment_profiles_pipeline.identity.config import load_identity
from segment_profiles_pipeline.traits.compute import compute_audiences, compute_traits
from segment_profiles_pipeline.traits.config import TraitsProject
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.traits.helpers import T0, ev, load_events, table_rows, traits_file
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import dialect_session

DAY = 24 * 60
TRAITS = """
traits:
  - {name: Events, type: event_counter, event: Test Event}
  - {name: Recent, type: event_counter, event: Test Event, window: {days: 3}}
  - {name: Last v, type: last, event: Test Event, property: v}
  - {name: Top v, type: most_frequent, event: Test Event, property: v}
  - {name: Others, type: event_counter, event: Other Event}
audiences:
  - {name: Many, conditions: {trait: events, operator: greater_than_or_equal, value: 3}}
"""
TABLES = [("flex", "test_event"), ("flex", "other_event"), ("flex", "links")]
"""The identity sources: the two traits tables plus one only the graph reads (an identify-like feed)."""
NOW = T0 + dt.timedelta(days=2)
LATER = T0 + dt.timedelta(hours=1)


def at(minute: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minute, seconds=1)


BATCHES: list[dict[str, list[dict[str, Any]]]] = [
    {  # 1: an anonymous visitor a1, user u1 on device a2, user u2, visitor a3, visitor a4
        "flex.test_event": [
            ev("t1", anon="a1", minute=0, v="x"),
            ev("t2", anon="a1", minute=1, v="x"),
            ev("t3", user="u1", anon="a2", minute=2, v="y"),
            ev("t4", user="u2", minute=3, v="z"),
            ev("t5", anon="a3", minute=4, v="q"),
            ev("t6", anon="a4", minute=5, v="w"),
            ev("t10", anon="a5", minute=5, v="v"),
        ],
        "flex.other_event": [ev("o1", anon="a1", minute=6), ev("o2", user="u1", minute=7)],
        "flex.links": [ev("l0", user="u9", minute=8)],
    },
    {  # 2: a1 identifies as u1 (a1's profile is older: u1's merges into it); a3 identifies as u3
        "flex.test_event": [
            ev("t7", user="u1", anon="a1", minute=20, v="y"),
            ev("t8", user="u3", anon="a3", minute=21, v="q"),
        ],
    },
    {  # 3: only the graph changes (an identity-only feed), no new traits event: u2 is seen on a4
        # (a4's profile merges into u2's) and a5 identifies as u5 (same profile, new send target)
        "flex.links": [ev("l1", user="u2", anon="a4", minute=30), ev("l2", user="u5", anon="a5", minute=31)],
    },
]


def load(
    session: WarehouseSession, batches: list[dict[str, list[dict[str, Any]]]], created: set[str]
) -> None:
    for batch in batches:
        for table, rows in batch.items():
            load_events(session, table, rows, create=table not in created)
            created.add(table)


def resolve(session: WarehouseSession, project: TraitsProject) -> None:
    compute_identity(session, load_identity(project.path.parent), TABLES, [], NOW)


def by_key(session: WarehouseSession, table: str = "traits.computed_traits") -> dict[str, dict[str, Any]]:
    return {r["profile_key"]: r for r in session.query(f"SELECT * FROM {table}").dicts()}


def canonical(session: WarehouseSession, kind: str, value: str) -> str:
    return session.query(
        "SELECT canonical_segment_id FROM identity.external_id_mapping "
        f"WHERE external_id_type = '{kind}' AND external_id_value = '{value}'"
    ).scalar()


def rebuilt(tmp_path: Path, project: TraitsProject, count: int) -> dict[str, dict[str, Any]]:
    """The full rebuild over the first ``count`` batches, in a warehouse of its own."""
    folder = tmp_path / f"reference_{count}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    with DuckDBWarehouse(database=str(folder / "w.duckdb")).session() as session:
        load(session, BATCHES[:count], set())
        resolve(session, project)
        assert compute_traits(session, project, NOW).mode == "full"
        return by_key(session)


@pytest.fixture(params=["duckdb", "snowflake"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WarehouseSession]:
    with dialect_session(request.param, tmp_path) as opened:
        yield opened


def _plain(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Numbers as int (Snowflake returns NUMBER as Decimal), so both warehouses compare equal."""
    return {k: {c: int(v) if isinstance(v, Decimal) else v for c, v in r.items()} for k, r in rows.items()}


def test_merges_and_identifications_move_history_and_incremental_equals_full(
    session: WarehouseSession, tmp_path: Path
) -> None:
    project = traits_file(tmp_path / "models", TRAITS)
    created: set[str] = set()
    load(session, BATCHES[:1], created)
    resolve(session, project)
    first = compute_traits(session, project, NOW)
    compute_audiences(session, project)
    assert first.mode == "full" and first.unresolved_events == 0
    rows = table_rows(session)
    assert {k: (r["events"], r["others"]) for k, r in rows.items()} == {
        "anon:a1": (2, 1),
        "user:u1": (1, 1),
        "user:u2": (1, None),
        "anon:a3": (1, None),
        "anon:a4": (1, None),
        "anon:a5": (1, None),
    }
    assert _plain(by_key(session)) == _plain(rebuilt(tmp_path, project, 1))
    a1_profile, u1_profile = canonical(session, "anonymous_id", "a1"), canonical(session, "user_id", "u1")

    # 2: u1's profile merges into a1's (older): one profile, sent to user u1, with all five events
    load(session, BATCHES[1:2], created)
    resolve(session, project)
    second = compute_traits(session, project, NOW)
    assert canonical(session, "user_id", "u1") == a1_profile != u1_profile
    rows = table_rows(session)
    assert {k: (r["events"], r["others"], r["last_v"], r["top_v"]) for k, r in rows.items()} == {
        "user:u1": (4, 2, "y", "x"),  # t1 t2 (a1), t3 (u1 on a2), t7; o1 (a1), o2 (u1); x twice
        "user:u2": (1, None, "z", None),
        "user:u3": (2, None, "q", "q"),  # a3's profile, identified: same key, new target
        "anon:a4": (1, None, "w", None),
        "anon:a5": (1, None, "v", None),
    }
    assert rows["user:u1"]["profile_key"] == a1_profile and u1_profile not in by_key(session)
    assert rows["user:u1"]["anonymous_id"] is None and rows["user:u3"]["anonymous_id"] is None
    assert second.mode == "incremental" and second.profiles_moved == 2  # a1's and u1's profiles
    assert _plain(by_key(session)) == _plain(rebuilt(tmp_path, project, 2))

    # the audience follows: u1's old profile was never a member, the merged one is
    compute_audiences(session, project)
    assert {k: r["many"] for k, r in table_rows(session, "traits.audiences").items()} == {"user:u1": True}

    # 3: no new traits event, but the graph merged a4's profile into u2's: recomputed anyway
    load(session, BATCHES[2:3], created)
    resolve(session, project)
    third = compute_traits(session, project, NOW + dt.timedelta(hours=1))
    assert (third.mode, third.new_events, third.profiles_moved) == ("incremental", 0, 2)
    rows = table_rows(session)
    assert (rows["user:u2"]["events"], rows["user:u2"]["last_v"]) == (2, "w")
    assert "anon:a4" not in rows and "anon:a5" not in rows and len(rows) == 4
    assert (rows["user:u5"]["events"], rows["user:u5"]["last_v"]) == (1, "v")  # retargeted, not moved
    assert _plain(by_key(session)) == _plain(rebuilt(tmp_path, project, 3))


def test_an_event_the_graph_has_not_resolved_yet_counts_once_it_has(
    session: WarehouseSession, tmp_path: Path
) -> None:
    # no windowed trait: a run without new events may skip everything, unless the graph moved events
    stateful = TRAITS.replace(
        "  - {name: Recent, type: event_counter, event: Test Event, window: {days: 3}}\n", ""
    )
    project = traits_file(tmp_path / "models", stateful)
    assert "window" not in stateful
    created: set[str] = set()
    load(session, BATCHES[:1], created)
    resolve(session, project)
    compute_traits(session, project, NOW)
    # a new visitor's event lands after the identity run: not counted, reported
    load(session, [{"flex.test_event": [ev("t9", anon="a9", minute=40, v="n")]}], created)
    early = compute_traits(session, project, NOW)
    assert (early.mode, early.new_events, early.unresolved_events) == ("incremental", 1, 1)
    assert "anon:a9" not in table_rows(session)
    # the graph catches up: the (now old) event moves from no profile to a9's
    resolve(session, project)
    caught_up = compute_traits(session, project, NOW)
    assert (caught_up.new_events, caught_up.profiles_moved) == (0, 1)
    assert table_rows(session)["anon:a9"]["events"] == 1


def test_blocked_identifiers_never_form_a_profile(tmp_path: Path) -> None:
    project = traits_file(tmp_path / "models", TRAITS)
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load_events(
            session,
            "flex.test_event",
            [
                ev("b1", user="anonymous", anon="a1", minute=0, v="x"),  # blocked user_id: a1 decides
                ev("b2", user="0", anon="null", minute=1, v="x"),  # both blocked: no profile
                ev("b3", user="-1", minute=2, v="x"),
            ],
        )
        load_events(session, "flex.other_event", [ev("o1", user="u1", minute=0)])
        resolve(session, project)
        stats = compute_traits(session, project, NOW)
        rows = table_rows(session)
    assert {k: r["events"] for k, r in rows.items()} == {"anon:a1": 1, "user:u1": None}
    assert stats.unresolved_events == 2


def test_traits_need_the_identity_graph(tmp_path: Path) -> None:
    project = traits_file(tmp_path / "models", TRAITS)
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load(session, BATCHES[:1], set())
        with pytest.raises(ConfigError) as err:
            compute_traits(session, project, LATER)
    message = str(err.value)
    assert "computed_traits.yml" in message and "identity.external_id_mapping does not exist" in message
    assert "materialize the identity graph first" in message


def test_a_past_membership_follows_its_profile_into_a_merge(tmp_path: Path) -> None:
    """u1's profile was a member, a1's (older) was not; after the merge the survivor is no member:
    Segment's merged profile still holds u1's ``true``, so the survivor must carry ``false``."""
    project = traits_file(
        tmp_path / "models",
        """
        traits:
          - {name: Events, type: event_counter, event: Test Event}
        audiences:
          - {name: Quiet, conditions: {trait: events, operator: less_than_or_equal, value: 2}}
        """,
    )
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        created: set[str] = set()
        first = [ev("t1", anon="a1", minute=0), ev("t2", anon="a1", minute=1), ev("t3", anon="a1", minute=2)]
        load(session, [{"flex.test_event": [*first, ev("t4", user="u1", minute=3)]}], created)
        resolve(session, project)
        compute_traits(session, project, NOW)
        compute_audiences(session, project)
        assert {k: r["quiet"] for k, r in table_rows(session, "traits.audiences").items()} == {
            "user:u1": True
        }
        load(session, [{"flex.test_event": [ev("t5", user="u1", anon="a1", minute=4)]}], created)
        resolve(session, project)
        compute_traits(session, project, NOW)
        stats = compute_audiences(session, project)
        audiences = table_rows(session, "traits.audiences")
    assert {k: r["quiet"] for k, r in audiences.items()} == {"user:u1": False}  # one row: the survivor's
    assert (stats.members, stats.exited) == ({"quiet": 0}, {"quiet": 1})


def test_audiences_with_past_rows_need_the_graph_to_follow_merges(tmp_path: Path) -> None:
    project = traits_file(tmp_path / "models", TRAITS)
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        load(session, BATCHES[:1], set())
        resolve(session, project)
        compute_traits(session, project, NOW)
        compute_audiences(session, project)
        session.execute("DROP TABLE identity.id_graph")
        with pytest.raises(ConfigError) as err:
            compute_audiences(session, project)
    message = str(err.value)
    assert "identity.id_graph does not exist, so audiences cannot key events" in message
    assert "computed_traits.yml" in message and "materialize the identity graph first" in message
