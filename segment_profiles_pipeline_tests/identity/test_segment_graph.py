"""`graph.source: segment`: the identity tables come from Segment's landed Profiles Sync tables."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from dagster import AssetKey

from segment_profiles_pipeline.errors import ConfigError, WarehouseError
from segment_profiles_pipeline.identity.assets import identity_assets
from segment_profiles_pipeline.identity.compute import compute_identity
from segment_profiles_pipeline.identity.config import load_identity
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import dialect_session

T = dt.datetime(2026, 3, 1, 10)
SEGMENT_YML = "graph: {source: segment, landed_schema: ps_segment}\n"


def at(minutes: int) -> dt.datetime:
    return T + dt.timedelta(minutes=minutes)


# Segment's documented example, extended: p2 merges into p1; p4 into p3; then p3 into p1, and the
# recursive entry re-pointing p4 at p1 has not landed yet (rows land out of order).
ID_GRAPH_UPDATES = [
    ("p1", "p1", "page", "e1", 0, 1),
    ("p2", "p2", "page", "e3", 5, 2),
    ("p2", "p1", "identify", "e4", 6, 3),
    ("p3", "p3", "track", "e5", 7, 4),
    ("p4", "p4", "track", "e6", 8, 5),
    ("p4", "p3", "identify", "e7", 9, 6),
    ("p3", "p1", "identify", "e8", 10, 7),
    ("p5", "p5", "identify", "e9", 11, 8),
]
EXTERNAL_ID_MAPPING_UPDATES = [
    ("p1", "anonymous_id", "a1", "e1", 0, 1),
    ("p1", "email", "jane.kim@segment.com", "e2", 1, 2),
    ("p2", "anonymous_id", "a2", "e3", 5, 3),
    ("p2", "user_id", "u1", "e4", 6, 4),
    ("p4", "Email", "bo@example.com", "e6", 8, 5),  # types are lower-cased
    ("p5", "user_id", "u5", "e9", 11, 6),
    ("p5", "user_id", "u5", "e10", 12, 7),  # the same identifier again: the first association counts
]


def landed(session: WarehouseSession, graph=ID_GRAPH_UPDATES, mappings=EXTERNAL_ID_MAPPING_UPDATES) -> None:
    session.execute("CREATE SCHEMA IF NOT EXISTS ps_segment")
    for table in ("id_graph_updates", "external_id_mapping_updates"):
        session.execute(f"DROP TABLE IF EXISTS ps_segment.{table}")
    session.load(
        "ps_segment.id_graph_updates",
        pa.table(
            {
                "segment_id": [r[0] for r in graph],
                "canonical_segment_id": [r[1] for r in graph],
                "triggering_event_type": [r[2] for r in graph],
                "triggering_event_id": [r[3] for r in graph],
                "timestamp": pa.array([at(r[4]) for r in graph], pa.timestamp("us")),
                "seq": pa.array([r[5] for r in graph], pa.int64()),
                "uuid_ts": pa.array([at(r[4] + 60) for r in graph], pa.timestamp("us")),
            }
        ),
        create=True,
    )
    session.load(
        "ps_segment.external_id_mapping_updates",
        pa.table(
            {
                "id": [f"id{i}" for i in range(len(mappings))],
                "segment_id": [r[0] for r in mappings],
                "external_id_type": [r[1] for r in mappings],
                "external_id_value": [r[2] for r in mappings],
                "external_id_hash": [f"h:{r[1].lower()}:{r[2]}" for r in mappings],
                "triggering_event_id": [r[3] for r in mappings],
                "timestamp": pa.array([at(r[4]) for r in mappings], pa.timestamp("us")),
                "received_at": pa.array([at(r[4]) for r in mappings], pa.timestamp("us")),
                "seq": pa.array([r[5] for r in mappings], pa.int64()),
                "uuid_ts": pa.array([at(r[4] + 60) for r in mappings], pa.timestamp("us")),
            }
        ),
        create=True,
    )


def rows(session: WarehouseSession, sql: str) -> set[tuple]:
    return set(session.query(sql).rows)


@pytest.mark.parametrize("dialect", ["duckdb", "snowflake"])
def test_identity_tables_from_segments_landed_graph(tmp_path: Path, dialect: str) -> None:
    (tmp_path / "identity.yml").write_text(SEGMENT_YML)
    identity = load_identity(tmp_path)
    with dialect_session(dialect, tmp_path) as session:
        landed(session)
        stats = compute_identity(session, identity, [], [], at(100))
        assert (stats.mode, stats.profiles, stats.merges) == ("segment", 2, 3)
        assert rows(
            session,
            "SELECT segment_id, canonical_segment_id, timestamp, triggering_event_id, seq FROM identity.id_graph",
        ) == {
            ("p1", "p1", at(0), "e1", 1),
            ("p2", "p1", at(5), "e3", 2),
            ("p3", "p1", at(7), "e5", 4),
            ("p4", "p1", at(8), "e6", 5),  # followed p4 → p3 → p1 though the landed row says p3
            ("p5", "p5", at(11), "e9", 8),
        }
        assert rows(
            session,
            "SELECT canonical_segment_id, segment_id, external_id_type, external_id_value, external_id_hash, "
            "triggering_event_id, seq FROM identity.external_id_mapping",
        ) == {
            ("p1", "p1", "anonymous_id", "a1", "h:anonymous_id:a1", "e1", 1),
            ("p1", "p1", "email", "jane.kim@segment.com", "h:email:jane.kim@segment.com", "e2", 2),
            ("p1", "p2", "anonymous_id", "a2", "h:anonymous_id:a2", "e3", 3),
            ("p1", "p2", "user_id", "u1", "h:user_id:u1", "e4", 4),
            ("p1", "p4", "email", "bo@example.com", "h:email:bo@example.com", "e6", 5),
            ("p5", "p5", "user_id", "u5", "h:user_id:u5", "e9", 6),
        }
        assert rows(
            session,
            "SELECT segment_id, merged_into, canonical_segment_id, timestamp, triggering_event_id, seq "
            "FROM identity.profile_merges",
        ) == {
            ("p2", "p1", "p1", at(6), "e4", 3),
            ("p4", "p3", "p1", at(9), "e7", 6),
            ("p3", "p1", "p1", at(10), "e8", 7),
        }


def test_switching_back_to_local_rebuilds_from_the_events(tmp_path: Path) -> None:
    """Segment mode clears the resolver's state: a local run afterwards is a full rebuild."""
    with dialect_session("duckdb", tmp_path) as session:
        landed(session)
        assert (
            compute_identity(session, load_identity(tmp_path), [], [], at(99)).mode == "full"
        )  # local first
        (tmp_path / "identity.yml").write_text(SEGMENT_YML)
        compute_identity(session, load_identity(tmp_path), [], [], at(100))
        (tmp_path / "identity.yml").write_text("")
        stats = compute_identity(session, load_identity(tmp_path), [], [], at(101))
        assert (stats.mode, stats.reason) == ("full", "no identity state yet")
        assert rows(session, "SELECT * FROM identity.id_graph") == set()


def test_landed_tables_are_external_assets_and_the_only_inputs(tmp_path: Path) -> None:
    (tmp_path / "identity.yml").write_text(SEGMENT_YML)
    assets = identity_assets(tmp_path, [], "duckdb")
    landed_keys = {
        AssetKey(["ps_segment", "id_graph_updates"]),
        AssetKey(["ps_segment", "external_id_mapping_updates"]),
    }
    specs = [a for a in assets if not hasattr(a, "op")]
    assert {s.key for s in specs} == landed_keys
    graph = next(a for a in assets if hasattr(a, "op"))
    assert set(graph.asset_deps[AssetKey(["identity", "id_graph"])]) == landed_keys
    # both kinds of table spec carry the layer's fields (one helper builds them)
    [updates] = [s for s in specs if s.key.path[-1] == "id_graph_updates"]
    assert (updates.group_name, updates.kinds, updates.code_version) == ("sources", {"duckdb"}, None)
    assert updates.description == (
        "`ps_segment.id_graph_updates`, landed by Segment's Profiles Sync (read by `identity_graph`)."
    )
    assert updates.metadata == {
        "columns_read": "segment_id, canonical_segment_id, timestamp, triggering_event_id, seq, uuid_ts"
    }
    merges = graph.specs_by_key[AssetKey(["identity", "profile_merges"])]
    assert (merges.group_name, merges.kinds, merges.metadata) == ("identity", {"duckdb"}, {})
    assert merges.code_version is not None and merges.description is not None
    assert merges.description.startswith("`identity.profile_merges`: one row per merge")


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (
            "DROP TABLE ps_segment.external_id_mapping_updates",
            "ps_segment.external_id_mapping_updates does not exist",
        ),
        (
            "ALTER TABLE ps_segment.id_graph_updates DROP COLUMN seq",
            "ps_segment.id_graph_updates has no column(s) seq",
        ),
    ],
)
def test_missing_landed_tables_name_the_file_field_and_table(tmp_path: Path, drop: str, message: str) -> None:
    (tmp_path / "identity.yml").write_text(SEGMENT_YML)
    with dialect_session("duckdb", tmp_path) as session:
        landed(session)
        session.execute(drop)
        with pytest.raises(WarehouseError) as exc:
            compute_identity(session, load_identity(tmp_path), [], [], at(100))
    assert message in str(exc.value)
    assert "identity.yml (field 'graph.landed_schema')" in str(exc.value)


@pytest.mark.parametrize("length", [2, 3])
def test_a_cycle_in_the_landed_graph_is_an_error(tmp_path: Path, length: int) -> None:
    (tmp_path / "identity.yml").write_text(SEGMENT_YML)
    ids = [f"p{i}" for i in range(length)]
    cycle = [(a, ids[(i + 1) % length], "identify", f"e{i}", i, i) for i, a in enumerate(ids)]
    with dialect_session("duckdb", tmp_path) as session:
        landed(session, graph=cycle)
        with pytest.raises(WarehouseError, match="merge chains do not end"):
            compute_identity(session, load_identity(tmp_path), [], [], at(100))


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("graph: {source: segment}", "graph", "set `landed_schema`"),
        ("graph: {landed_schema: ps}", "graph", "only read with `source: segment`"),
        ("graph: {source: dbt}", "graph.source", "'local' or 'segment'"),
        (
            "graph: {source: segment, landed_schema: ps}\nprofiles_sync: {schema: PS}",
            "",
            "profiles_sync.schema 'PS' is Segment's landed schema (graph.landed_schema): writing there would "
            "overwrite Segment's tables",
        ),
        (
            "profiles_sync: {schema: 'profiles sync'}",
            "profiles_sync.schema",
            "'profiles sync' is not a column name",
        ),
    ],
)
def test_graph_and_profiles_sync_errors_name_the_field(
    tmp_path: Path, text: str, field: str, message: str
) -> None:
    (tmp_path / "identity.yml").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_identity(tmp_path)
    # a problem of the whole file names no field
    assert (f"field '{field}': " if field else "invalid configuration: ") in str(exc.value)
    assert message in str(exc.value)
