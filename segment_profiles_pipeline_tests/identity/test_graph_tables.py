"""The identity graph built in the warehouse: rules on hand-built tables, incremental = full, both dialects."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.identity.compute import compute_identity
from segment_profiles_pipeline.identity.config import IdentityFile, IdentityProject, rules_from
from segment_profiles_pipeline.identity.resolver import profile_id, set_key
from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.traits.helpers import T0, ev, load_events
from segment_profiles_pipeline_tests.traits.test_recipes import snowflake_session

EVENTS = "flex.test_event"
NOW = T0 + dt.timedelta(days=1)
IDENTITY = IdentityProject(Path("identity.yml"), IdentityFile(), rules_from(IdentityFile()))
USERS_MAPPING = MappingSpec(
    SyncSource("users", ("users",), "models.users", "user_id", "users.yml"),
    MappingConfig.model_validate(
        {
            "name": "users_identify",
            "action": "identify",
            "user_id": "user_id",
            "traits": {"email": "email"},
            "timestamp": "updated_at",
        }
    ),
)


def at(minute: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minute, seconds=1)


def first_events() -> list[dict[str, Any]]:
    return [
        ev("m1", anon="a1", minute=1),  # anonymous session …
        ev("m2", user="u1", anon="a1", minute=2),  # … later identified
        ev("m3", user="u2", anon="a1", minute=3),  # shared device: stays with u1
        ev("m4", user="u3", anon="Anonymous", minute=4),  # blocked value (any case)
        ev("m5", anon="0000-0000", minute=5),  # blocked: no identifier, no profile
        ev("m2", user="u9", anon="a9", minute=6),  # a later copy of m2: deduplicated away
    ]


def later_events() -> list[dict[str, Any]]:
    return [
        ev("m7", anon="a7", minute=30),
        ev("m8", user="u3", anon="a7", minute=31),  # joins u3
        ev("m9", user="u1", anon="a1", minute=32),  # a repeat: nothing changes
    ]


def users(rows: list[tuple[str, str, int]]) -> pa.Table:
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "email": [r[1] for r in rows],
            "updated_at": pa.array([at(r[2]) for r in rows], pa.timestamp("us")),
        }
    )


def load_users(session: WarehouseSession, rows: list[tuple[str, str, int]]) -> None:
    session.execute("CREATE SCHEMA IF NOT EXISTS models")
    session.execute("DROP TABLE IF EXISTS models.users")
    session.load("models.users", users(rows), create=True)


FIRST_USERS = [("u1", "fam@example.com", 10), ("u2", "fam@example.com", 11)]  # a shared email


def run(session: WarehouseSession, full: bool = False) -> Any:
    return compute_identity(session, IDENTITY, [("flex", "test_event")], [USERS_MAPPING], NOW, full)


def graph(session: WarehouseSession) -> dict[str, Any]:
    """Every identity table as sorted tuples (ids included: they must be deterministic)."""
    return {
        "mapping": sorted(
            session.query(
                "SELECT external_id_type, external_id_value, canonical_segment_id, triggering_event_id, seq "
                "FROM identity.external_id_mapping"
            ).rows
        ),
        "id_graph": sorted(
            session.query("SELECT segment_id, canonical_segment_id, seq FROM identity.id_graph").rows
        ),
        "merges": sorted(
            session.query(
                "SELECT segment_id, merged_into, canonical_segment_id, triggering_event_id, seq FROM identity.profile_merges"
            ).rows
        ),
    }


@contextmanager
def duckdb_session(tmp_path: Path, name: str = "w.duckdb") -> Iterator[WarehouseSession]:
    with DuckDBWarehouse(database=str(tmp_path / name)).session() as session:
        yield session


def p(message: str, *ids: tuple[str, str]) -> str:
    return profile_id(message, set_key(ids))


P1 = p("m1", ("anonymous_id", "a1"))
P2 = p("m3", ("user_id", "u2"), ("anonymous_id", "a1"))
P3 = p("m4", ("user_id", "u3"))


def test_rules_on_hand_built_tables(tmp_path: Path) -> None:
    with duckdb_session(tmp_path) as session:
        load_events(session, EVENTS, first_events())
        load_users(session, FIRST_USERS)
        stats = run(session)
        got = graph(session)
    assert stats.mode == "full"
    # by hand: m1 creates P1(a1); m2 adds u1; m3 demotes a1 → P2(u2); m4 → P3(u3) (blocked anon dropped);
    # m5 has no identifier; the identify of u1 adds fam@ to P1; u2's would give P1 two user_ids → fam demoted, P2.
    assert [(t, v, c, m) for t, v, c, m, _ in got["mapping"]] == [
        ("anonymous_id", "a1", P1, "m1"),
        ("email", "fam@example.com", P1, got["mapping"][1][3]),
        ("user_id", "u1", P1, "m2"),
        ("user_id", "u2", P2, "m3"),
        ("user_id", "u3", P3, "m4"),
    ]
    assert got["mapping"][1][3].startswith("users_identify:u1:")
    assert [r[:2] for r in got["id_graph"]] == sorted([(P1, P1), (P2, P2), (P3, P3)])
    assert got["merges"] == []
    assert stats.demotions == 2


def test_merge_is_recorded_and_canonical_ids_follow(tmp_path: Path) -> None:
    with duckdb_session(tmp_path) as session:
        load_events(session, EVENTS, [ev("x1", anon="a1", minute=1), ev("x2", anon="a2", minute=2)])
        load_users(session, [])
        run(session)
        load_events(session, EVENTS, [ev("x3", user="u1", anon="a2", minute=3)], create=False)
        load_users(session, [("u1", "e1", 4)])
        assert run(session).mode == "incremental"
        load_events(session, EVENTS, [ev("x4", user="u1", anon="a1", minute=5)], create=False)
        stats = run(session)
        got = graph(session)
    q1, q2 = p("x1", ("anonymous_id", "a1")), p("x2", ("anonymous_id", "a2"))
    assert stats.mode == "incremental" and stats.merges == 1
    assert got["merges"] == [(q2, q1, q1, "x4", 5)]  # seq: x1, x2, x3, the identify of u1, x4
    assert {c for _, _, c, _, _ in got["mapping"]} == {q1}
    assert sorted(r[:2] for r in got["id_graph"]) == sorted([(q1, q1), (q2, q1)])


def incremental_and_full(session_factory, tmp_path: Path, late: bool) -> tuple[Any, Any, list[str]]:
    """Load in two steps (incremental) and all at once (full), return both graphs and the run modes."""
    extra = [ev("m0", user="u5", anon="a7", minute=0, received_at=at(0))] if late else []
    with session_factory(tmp_path, "inc.duckdb") as session:
        load_events(session, EVENTS, first_events())
        load_users(session, FIRST_USERS)
        modes = [run(session).mode]
        load_events(session, EVENTS, later_events() + extra, create=False)
        load_users(session, [*FIRST_USERS, ("u4", "fam@example.com", 40)])
        modes.append(run(session).mode)
        modes.append(run(session).mode)  # nothing new
        incremental = graph(session)
    with session_factory(tmp_path, "full.duckdb") as session:
        load_events(session, EVENTS, first_events() + later_events() + extra)
        load_users(session, FIRST_USERS)
        run(session)  # the identify log sees the first records first, as in the incremental history
        load_users(session, [*FIRST_USERS, ("u4", "fam@example.com", 40)])
        run(session, full=True)
        full = graph(session)
    return incremental, full, modes


@pytest.mark.parametrize("late", [False, True])
def test_incremental_equals_full_rebuild(tmp_path: Path, late: bool) -> None:
    incremental, full, modes = incremental_and_full(duckdb_session, tmp_path, late)
    assert incremental == full
    assert modes == ["full", "full" if late else "incremental", "incremental"]
    p7 = p("m7", ("anonymous_id", "a7"))
    owners = {(t, v): c for t, v, c, _, _ in full["mapping"]}
    if late:  # m0 came first: a7 belongs to u5's profile, u3's later event cannot take it
        assert owners[("anonymous_id", "a7")] == p("m0", ("user_id", "u5"), ("anonymous_id", "a7"))
    else:  # m8 links u3's profile (m4) and a7's (m7): the younger, a7's, merges into u3's
        assert owners[("anonymous_id", "a7")] == P3
        # seq: m1 m2 m3 m4, identify u1, identify u2, m7, m8 (m5 has no identifier, m9 repeats m2's set)
        assert full["merges"] == [(p7, P3, P3, "m8", 8)]


@contextmanager
def fake_snowflake_session(tmp_path: Path, name: str) -> Iterator[WarehouseSession]:
    with snowflake_session() as session:
        yield session


def two_loads(session: WarehouseSession, first: list[dict[str, Any]], later: list[dict[str, Any]]) -> list[str]:
    """Events in two loads, one identity run after each and one more with nothing new: the modes."""
    load_events(session, EVENTS, first)
    load_users(session, FIRST_USERS)
    modes = [run(session).mode]
    load_events(session, EVENTS, later, create=False)
    modes += [run(session).mode, run(session).mode]
    return modes


@pytest.mark.parametrize(
    ("null_in", "expected_modes"),
    [("first", ["full", "incremental", "incremental"]), ("later", ["full", "full", "incremental"])],
)
@pytest.mark.parametrize("session_factory", [duckdb_session, fake_snowflake_session], ids=["duckdb", "snowflake"])
def test_a_message_without_arrival_time_counts_as_arrived_first(
    session_factory: Any, tmp_path: Path, null_in: str, expected_modes: list[str]
) -> None:
    """A message whose ``received_at`` is null sorts before every other one (NULLS FIRST). Seen
    before, it does not make later runs rebuild from scratch; arriving new, it is a late message
    (it sorts before what was already resolved), so that run rebuilds. Either way the graph is
    the full rebuild's, and a later dated copy of it is deduplicated away."""
    undated = ev("m0", user="u5", anon="a7", minute=0, received_at=None)
    first = first_events() + ([undated] if null_in == "first" else [])
    # seen first, it still wins over a later, dated copy of itself (deduplication by message id)
    later = later_events() + ([undated] if null_in == "later" else [ev("m0", user="u6", minute=40)])
    with session_factory(tmp_path, "inc.duckdb") as session:
        modes = two_loads(session, first, later)
        incremental = graph(session)
    with session_factory(tmp_path, "full.duckdb") as session:
        load_events(session, EVENTS, first + later)
        load_users(session, FIRST_USERS)
        run(session, full=True)
        full = graph(session)
    assert modes == expected_modes
    assert incremental == full
    owners = {(t, v): c for t, v, c, _, _ in full["mapping"]}
    assert owners[("anonymous_id", "a7")] == p("m0", ("user_id", "u5"), ("anonymous_id", "a7"))
    assert ("user_id", "u6") not in owners


def test_snowflake_gives_the_same_graph(tmp_path: Path) -> None:
    snowflake, _, modes = incremental_and_full(fake_snowflake_session, tmp_path, late=False)
    duck, _, _ = incremental_and_full(duckdb_session, tmp_path / "d", late=False)
    assert modes == ["full", "incremental", "incremental"]
    assert snowflake == duck


def test_custom_identifier_type_from_a_column(tmp_path: Path) -> None:
    config = IdentityFile.model_validate({"identifiers": [{"type": "crm_id", "limit": 1, "column": "crm"}]})
    custom = IdentityProject(Path("identity.yml"), config, rules_from(config))
    with duckdb_session(tmp_path) as session:
        load_events(
            session,
            EVENTS,
            [
                ev("c1", anon="a1", minute=1, crm="c-1"),
                ev("c2", anon="a2", minute=2, crm="c-2"),
                ev("c3", anon="a1", minute=3, crm="c-2"),
            ],  # a1's profile would hold two crm ids: a1 is demoted
        )
        compute_identity(session, custom, [("flex", "test_event")], [], NOW)
        got = graph(session)
    q1, q2 = (
        p("c1", ("anonymous_id", "a1"), ("crm_id", "c-1")),
        p("c2", ("anonymous_id", "a2"), ("crm_id", "c-2")),
    )
    assert [(t, v, c) for t, v, c, _, _ in got["mapping"]] == [
        ("anonymous_id", "a1", q1),
        ("anonymous_id", "a2", q2),
        ("crm_id", "c-1", q1),
        ("crm_id", "c-2", q2),
    ]
    assert got["merges"] == []
