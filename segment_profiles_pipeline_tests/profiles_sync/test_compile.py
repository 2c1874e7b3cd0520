"""``external_id_mapping_updates_sql`` on hand-built tables, both dialects: each identifier's
source mapping and event type come from the identify log (the first mapping name when a message
was logged by two), a track event with no source otherwise, and for a null triggering event."""

from __future__ import annotations

from pathlib import Path

import pytest

from segment_profiles_pipeline.identity.compute import IDENTIFY_LOG
from segment_profiles_pipeline.identity.config import EXTERNAL_ID_TABLE
from segment_profiles_pipeline.profiles_sync import compile as sql
from segment_profiles_pipeline.profiles_sync.config import EXTERNAL_ID_MAPPING_UPDATES_COLUMNS
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import dialect_session

TARGET = "profiles_sync.external_id_mapping_updates"


@pytest.mark.parametrize("dialect", ["duckdb", "snowflake"])
def test_identifiers_take_source_and_type_from_the_identify_log(tmp_path: Path, dialect: str) -> None:
    with dialect_session(dialect, tmp_path) as session:
        for schema in ("identity", "profiles_sync", IDENTIFY_LOG.split(".")[0]):
            session.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        session.execute(f"CREATE TABLE {IDENTIFY_LOG} (message_id VARCHAR, mapping VARCHAR)")
        session.execute(
            f"INSERT INTO {IDENTIFY_LOG} VALUES ('m1', 'zeta'), ('m1', 'alpha'), ('m2', 'beta'), (NULL, 'nulls')"
        )
        session.execute(
            f"CREATE TABLE {EXTERNAL_ID_TABLE} (segment_id VARCHAR, external_id_hash VARCHAR, "
            "external_id_type VARCHAR, external_id_value VARCHAR, timestamp TIMESTAMP, "
            "triggering_event_id VARCHAR, seq BIGINT)"
        )
        session.execute(
            f"INSERT INTO {EXTERNAL_ID_TABLE} VALUES "
            "('p1', 'h1', 'user_id', 'u1', TIMESTAMP '2026-01-01 00:00:00', 'm1', 1), "
            "('p1', 'h2', 'email', 'a@x', TIMESTAMP '2026-01-01 00:00:00', 'm1', 2), "
            "('p2', 'h3', 'user_id', 'u2', TIMESTAMP '2026-01-01 00:00:00', 'm2', 3), "
            "('p3', 'h4', 'anonymous_id', 'a3', TIMESTAMP '2026-01-01 00:00:00', 't9', 4), "
            "('p4', 'h5', 'anonymous_id', 'a4', TIMESTAMP '2026-01-01 00:00:00', NULL, 5)"
        )
        body = ", ".join(f"{name} {kind}" for name, kind in EXTERNAL_ID_MAPPING_UPDATES_COLUMNS)
        session.execute(f"CREATE TABLE {TARGET} ({body})")
        session.execute(
            sql.external_id_mapping_updates_sql(TARGET, 10, "TIMESTAMP '2026-02-01 00:00:00'", True)
        )
        rows = session.query(
            "SELECT external_id_hash, triggering_event_type, triggering_event_source_name, "
            f"triggering_event_source_slug, seq FROM {TARGET} ORDER BY seq"
        ).rows
        assert rows == [
            ("h1", "identify", "alpha", "alpha", 11),
            ("h2", "identify", "alpha", "alpha", 12),
            ("h3", "identify", "beta", "beta", 13),
            ("h4", "track", None, None, 14),
            ("h5", "track", None, None, 15),
        ]
        # landed identifiers are not appended again
        session.execute(
            sql.external_id_mapping_updates_sql(TARGET, 15, "TIMESTAMP '2026-02-02 00:00:00'", True)
        )
        assert session.query(f"SELECT count(*) FROM {TARGET}").scalar() == 5
