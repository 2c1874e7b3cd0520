"""failed_records: the ``code`` → ``reason_code`` migration of tables an older version wrote (DuckDB
and Snowflake through fakesnow), and the one catalogue every stored code comes from."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from segment_profiles_pipeline.config import RetryConfig
from segment_profiles_pipeline.errors import WarehouseError
from segment_profiles_pipeline.segment import outcomes
from segment_profiles_pipeline.state import ensure_state, failed_records
from segment_profiles_pipeline.state.failed_records import FAILED, REASON_CODES, Failure, reason_code
from segment_profiles_pipeline.state.schema import STATE_SCHEMA, SyncScope
from segment_profiles_pipeline.sync.actions import errors
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import dialect_session

NOW = dt.datetime(2026, 12, 2, 9, 0)
EARLIER = dt.datetime(2026, 12, 1, 9, 0)
DOCS = Path(__file__).parents[2] / "docs" / "sync.md"

_COLUMNS = """mapping VARCHAR NOT NULL, record_key VARCHAR, checksum VARCHAR, kind VARCHAR NOT NULL,
    reason VARCHAR NOT NULL, attempts INTEGER NOT NULL, first_failed_at TIMESTAMP NOT NULL,
    last_failed_at TIMESTAMP NOT NULL, last_sync_id VARCHAR NOT NULL, status VARCHAR NOT NULL,
    sample_payload VARCHAR"""
OLD_TABLES = {
    # as 43f1bcb (the last version with `code`) created it
    "with_code": f"CREATE TABLE {FAILED} ({_COLUMNS}, code VARCHAR, first_rejected_at TIMESTAMP)",
    # as the first release created it, before failure codes and the retry budget
    "first_release": f"CREATE TABLE {FAILED} ({_COLUMNS})",
}


@pytest.fixture(params=["duckdb", "snowflake"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WarehouseSession]:
    with dialect_session(request.param, tmp_path) as s:
        yield s


def _old_state(session: WarehouseSession, version: str) -> None:
    session.execute(f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}")
    session.execute(OLD_TABLES[version])
    values = "'people', 'u1', 'c1', 'delivery', 'HTTP 400: bad', 1, {t}, {t}, 's0', 'retrying', NULL"
    code = ", 'rejected', {t}" if version == "with_code" else ""
    at = "CAST('2026-12-01 09:00:00' AS TIMESTAMP)"
    session.execute(f"INSERT INTO {FAILED} VALUES ({(values + code).format(t=at)})")


def _columns(session: WarehouseSession) -> list[str]:
    return [name for name, _ in session.columns(STATE_SCHEMA, "failed_records")]


@pytest.mark.parametrize("version", list(OLD_TABLES))
def test_state_an_older_version_wrote_keeps_its_codes_under_reason_code(session, version) -> None:
    _old_state(session, version)
    ensure_state(session)
    ensure_state(session)  # every sync runs it: the second time changes nothing
    columns = _columns(session)
    assert "code" not in columns and columns.count("reason_code") == 1
    stored = session.query(f"SELECT record_key, reason_code, attempts FROM {FAILED}").rows
    assert [tuple(r) for r in stored] == [("u1", "rejected" if version == "with_code" else None, 1)]
    # the migrated row is read and merged like any other: same data, so the attempt counts on
    scope = SyncScope(session, "people", 0, "s1", NOW)
    again = Failure("u1", "c1", "delivery", "HTTP 400: still bad", reason_code="rejected")
    failed_records.record(scope, [again], RetryConfig(max_syncs=5, max_days=7))
    row = session.query(f"SELECT reason_code, attempts, status, last_sync_id FROM {FAILED}").rows
    assert [tuple(r) for r in row] == [("rejected", 2, "retrying", "s1")]


class _LosesTheRace:
    """A session on which another process renames the column just before this one tries."""

    def __init__(self, inner: WarehouseSession, other_wins: bool):
        self.inner = inner
        self.other_wins = other_wins

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def execute(self, sql: str) -> None:
        if "RENAME COLUMN" in sql:
            if self.other_wins:
                self.inner.execute(sql)
            raise WarehouseError("Binder Error: column code does not exist")
        self.inner.execute(sql)


def test_a_rename_lost_to_a_concurrent_sync_is_fine_and_any_other_failure_is_raised(tmp_path) -> None:
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        _old_state(session, "with_code")
        with pytest.raises(WarehouseError, match="column code"):
            ensure_state(_LosesTheRace(session, other_wins=False))  # type: ignore[arg-type]
        assert "code" in _columns(session)
        ensure_state(_LosesTheRace(session, other_wins=True))  # type: ignore[arg-type]
        assert "reason_code" in _columns(session) and "code" not in _columns(session)


def test_every_code_the_project_can_store_is_catalogued_and_documented() -> None:
    """The catalogue is exactly the codes the sync produces: the named record errors, the delivery
    outcomes, and the engine's own (a generic rejection, null and duplicated keys)."""
    record_errors = {e.code for e in vars(errors).values() if isinstance(e, errors.RecordError)}
    delivery = {v for k, v in vars(outcomes).items() if k.isupper() and isinstance(v, str)}
    engine = {"invalid", "null_primary_key", "duplicate_primary_key"}
    assert record_errors and delivery
    assert record_errors | delivery | engine == REASON_CODES
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", DOCS.read_text(), flags=re.MULTILINE))
    assert documented >= REASON_CODES, (
        f"missing from the reason code table in docs/sync.md: {REASON_CODES - documented}"
    )


def test_an_uncatalogued_code_is_refused_before_it_is_stored(tmp_path) -> None:
    with pytest.raises(ValueError, match="'http_418' is not a failure reason code: add it to ReasonCode"):
        reason_code("http_418")
    assert reason_code(outcomes.SERVER_ERROR) == "server_error"
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        ensure_state(session)
        bad = dataclasses.replace(Failure("u1", "c1", "delivery", "?"), reason_code="http_418")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"\['http_418'\] are not in ReasonCode"):
            failed_records.record(SyncScope(session, "people", 0, "s1", NOW), [bad], RetryConfig())
        assert session.query(f"SELECT count(*) FROM {FAILED}").scalar() == 0
