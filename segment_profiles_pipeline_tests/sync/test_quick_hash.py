"""The quick hash: a cache of ``hash()`` over the mapped values next to each acknowledged checksum,
so a plan knows an unchanged record without formatting its values and running MD5 over them.

Whole syncs (scripted sender) on DuckDB and on Snowflake (fakesnow): the checksum stays the
source of truth (a stale or missing quick hash falls back to it), settling writes the quick
hashes of what was acknowledged and of ``refresh`` rows, a dry run writes none, an old ledger
gains the column, and value changes ``hash()`` would not see (0.0 → -0.0, an interval's
spelling, case under a NOCASE collation, a DECIMAL scale) are still updates.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from segment_profiles_pipeline.state import ensure_state
from segment_profiles_pipeline.state.ledger import LEDGER, MIGRATIONS, QUICK_HASH_TYPES
from segment_profiles_pipeline.sync.delivery import OUTBOX
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.warehouse.base import WarehouseSession, literal
from segment_profiles_pipeline.warehouse.dialect import to_dialect
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender, people_spec, people_table
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import dialect_session

ROWS = [("u1", "a@x.io", "free"), ("u2", "b@x.io", "pro"), ("u3", "c@x.io", "free")]


@pytest.fixture(params=["duckdb", "snowflake"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WarehouseSession]:
    with dialect_session(request.param, tmp_path) as s:
        people_table(s, ROWS)
        yield s


@pytest.fixture
def duckdb_session(tmp_path: Path) -> Iterator[WarehouseSession]:
    with dialect_session("duckdb", tmp_path) as s:
        yield s


def stored(session: WarehouseSession) -> dict[str, tuple[str, int | None]]:
    """Live ledger rows: key → (checksum, quick hash)."""
    rows = session.query(f"SELECT record_key, checksum, quick_hash FROM {LEDGER} WHERE live").rows
    return {str(k): (str(c), None if q is None else int(q)) for k, c, q in rows}


def set_ledger(session: WarehouseSession, key: str, assignment: str) -> None:
    session.execute(f"UPDATE {LEDGER} SET {assignment} WHERE record_key = {literal(key)}")


def test_a_sync_stores_the_quick_hash_of_every_acknowledged_record_and_no_other(session) -> None:
    run_sync(session, people_spec(), ScriptedSender(lambda m: "no" if m["userId"] == "u2" else None))
    hashes = {k: q for k, (_, q) in stored(session).items()}
    assert set(hashes) == {"u1", "u3"} and None not in hashes.values()
    assert hashes["u1"] != hashes["u3"]


def test_an_unchanged_record_is_known_by_its_quick_hash_without_its_checksum(session) -> None:
    spec = people_spec()
    run_sync(session, spec, ScriptedSender())
    # A checksum no model row can have: consulting it would plan an update of u1.
    set_ledger(session, "u1", "checksum = 'not-the-md5-of-anything'")
    sender = ScriptedSender()
    report = run_sync(session, spec, sender)
    assert sender.sent == [] and report.counts["updated"] == 0
    assert stored(session)["u1"][0] == "not-the-md5-of-anything"  # and nothing rewrote it


def test_a_missing_or_stale_quick_hash_of_an_unchanged_record_is_refreshed_not_sent(session) -> None:
    spec = people_spec()
    run_sync(session, spec, ScriptedSender())
    first = stored(session)
    set_ledger(session, "u1", "quick_hash = NULL")  # a ledger from before the quick hash
    set_ledger(session, "u2", "quick_hash = 42")  # computed by a DuckDB whose hash() differed
    sender = ScriptedSender()
    report = run_sync(session, spec, sender)
    assert sender.sent == [] and report.counts["updated"] == report.counts["added"] == 0
    assert stored(session) == first
    # Refreshed: the next plan finds nothing to do, not even a refresh (poisoned checksums prove
    # the quick hash alone decided).
    set_ledger(session, "u1", "checksum = 'x'")
    set_ledger(session, "u2", "checksum = 'y'")
    again = ScriptedSender()
    assert run_sync(session, spec, again).counts["updated"] == 0 and again.sent == []


def test_a_changed_record_with_a_stale_quick_hash_is_an_update(session) -> None:
    spec = people_spec()
    run_sync(session, spec, ScriptedSender())
    before = stored(session)["u1"]
    set_ledger(session, "u1", "quick_hash = NULL")
    people_table(session, [("u1", "a@x.io", "enterprise"), *ROWS[1:]])
    sender = ScriptedSender()
    assert run_sync(session, spec, sender).counts["updated"] == 1
    assert [m["traits"]["plan"] for m in sender.sent] == ["enterprise"]
    after = stored(session)["u1"]
    assert after[0] != before[0] and after[1] is not None and after[1] != before[1]


def test_an_update_whose_delivery_failed_keeps_no_quick_hash_of_the_new_values(session) -> None:
    spec = people_spec()
    run_sync(session, spec, ScriptedSender())
    people_table(session, [("u1", "a@x.io", "enterprise"), *ROWS[1:]])
    run_sync(session, spec, ScriptedSender(lambda _m: "down", record_level=False))
    # Segment never took the new values, so the next sync must still see them as a change.
    retried = ScriptedSender()
    run_sync(session, spec, retried)
    assert [m["traits"]["plan"] for m in retried.sent] == ["enterprise"]


def test_a_dry_run_writes_no_quick_hash(session) -> None:
    spec = people_spec()
    run_sync(session, spec, ScriptedSender())
    set_ledger(session, "u1", "quick_hash = NULL")
    run_sync(session, spec, OUTBOX)
    assert stored(session)["u1"][1] is None


def test_a_mapping_change_re_sends_records_whose_quick_hash_matched_before(session) -> None:
    run_sync(session, people_spec(), ScriptedSender())
    sender = ScriptedSender()
    # the same columns and values under another trait name: only the mapping fingerprint changed
    run_sync(session, people_spec(traits={"email": "email", "tier": "plan"}), sender)
    assert sender.user_ids() == ["u1", "u2", "u3"]


def old_ledger(session: WarehouseSession) -> None:
    """The ledger as the first release created it: no tombstones, no quick hash."""
    session.execute("CREATE SCHEMA IF NOT EXISTS _segment_profiles")
    session.execute(
        f"CREATE TABLE {LEDGER} (mapping VARCHAR NOT NULL, record_key VARCHAR NOT NULL, "
        "checksum VARCHAR NOT NULL, identity VARCHAR, delivered BOOLEAN NOT NULL, "
        "synced_at TIMESTAMP NOT NULL, sync_id VARCHAR NOT NULL)"
    )


def test_a_ledger_from_before_the_quick_hash_migrates_and_its_records_are_refreshed(session) -> None:
    spec = people_spec()
    run_sync(session, spec, ScriptedSender())
    acknowledged = session.query(
        f"SELECT mapping, record_key, checksum, identity, delivered, synced_at, sync_id FROM {LEDGER}"
    ).rows
    session.execute(f"DROP TABLE {LEDGER}")
    old_ledger(session)
    values = ", ".join(
        f"({', '.join(literal(v) for v in row[:5])}, TIMESTAMP {literal(str(row[5]))}, {literal(row[6])})"
        for row in acknowledged
    )
    session.execute(f"INSERT INTO {LEDGER} VALUES {values}")
    ensure_state(session)
    assert {q for _, q in stored(session).values()} == {None}
    sender = ScriptedSender()
    run_sync(session, spec, sender)
    assert sender.sent == [] and None not in {q for _, q in stored(session).values()}


def test_snowflake_stores_the_quick_hash_in_a_type_it_has() -> None:
    """Snowflake has no UBIGINT, and sqlglot would pass the name through (fakesnow, being DuckDB,
    would then accept it): the migration must name a Snowflake type wide enough for either sign."""
    migration = to_dialect(MIGRATIONS[-1].format(quick_hash_type=QUICK_HASH_TYPES["snowflake"]), "snowflake")
    assert "UBIGINT" not in migration.upper() and "DECIMAL(20, 0)" in migration.upper()


# Value changes hash() is blind to, on DuckDB: each is a changed payload, so each must be an update.
BLIND_SPOTS = {
    "zero_sign": ("DOUBLE", "CAST('0.0' AS DOUBLE)", "CAST('-0.0' AS DOUBLE)"),
    "interval_spelling": ("INTERVAL", "INTERVAL '1 month'", "INTERVAL '30 days'"),
    "case_under_nocase": ("VARCHAR COLLATE NOCASE", "'ana'", "'Ana'"),
    "decimal_scale": ("DECIMAL(4, 1)", "CAST(1.1 AS DECIMAL(4, 1))", "CAST(0.11 AS DECIMAL(4, 2))"),
}


@pytest.mark.parametrize("case", sorted(BLIND_SPOTS))
def test_a_change_hash_cannot_see_is_still_an_update(duckdb_session: WarehouseSession, case: str) -> None:
    column_type, before, after = BLIND_SPOTS[case]
    session = duckdb_session
    spec = people_spec(traits={"value": "value"})
    model(session, column_type, before)
    run_sync(session, spec, ScriptedSender())
    hashed = session.query("SELECT hash(value) FROM models.people").scalar()
    # decimal_scale: the model's column changes type, the stored integer stays 11
    model(session, "DECIMAL(4, 2)" if case == "decimal_scale" else column_type, after)
    assert session.query("SELECT hash(value) FROM models.people").scalar() == hashed  # blind indeed
    sender = ScriptedSender()
    assert run_sync(session, spec, sender).counts["updated"] == 1
    assert len(sender.sent) == 1


def model(session: WarehouseSession, column_type: str, value: str) -> None:
    """models.people with one record whose ``value`` column has ``column_type``."""
    session.execute("CREATE SCHEMA IF NOT EXISTS models")
    session.execute(
        f"CREATE OR REPLACE TABLE models.people (id VARCHAR, email VARCHAR, plan VARCHAR, value {column_type})"
    )
    session.execute(f"INSERT INTO models.people VALUES ('u1', 'a@x.io', 'free', {value})")
