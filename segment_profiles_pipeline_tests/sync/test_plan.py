"""The ``Plan`` object: every query on the plan table, on DuckDB and on Snowflake (fakesnow).

Each test writes a ledger as a previous sync would have left it (checksums of the model as it
was), changes the model, and checks what the plan finds through the ``Plan`` methods only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from segment_profiles_pipeline.state import ensure_state
from segment_profiles_pipeline.sync.plan import (
    CHECKSUM,
    GENERATION,
    IDENTITY,
    KEY,
    OP,
    QUICK_HASH,
    REFRESH,
    InvalidKey,
    Plan,
    PlanCounts,
    PlanSpec,
    checksum_sql,
    drop_plan,
)
from segment_profiles_pipeline.warehouse.base import WarehouseSession, literal
from segment_profiles_pipeline_tests.sync.helpers import people_spec, people_table
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import dialect_session

SYNCED = [
    ("u1", "a@x.io", "free"),
    ("u2", "b@x.io", "pro"),
    ("u3", "c@x.io", "free"),
    ("u4", "d@x.io", "pro"),
]
"""The model as the previous sync acknowledged it."""
NOW = [
    ("u1", "a@x.io", "free"),  # unchanged
    ("u2", "b@x.io", "enterprise"),  # updated
    ("u4", "d@x.io", "pro"),  # unchanged (u3 is gone: deleted)
    ("u5", "e@x.io", "free"),  # added
    (None, "n1@x.io", "free"),  # null keys: two rows, one invalid entry
    (None, "n2@x.io", "free"),
    ("u6", "f@x.io", "free"),  # duplicated key
    ("u6", "g@x.io", "pro"),
]


@pytest.fixture(params=["duckdb", "snowflake"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WarehouseSession]:
    with dialect_session(request.param, tmp_path) as s:
        yield s


def spec_of(session: WarehouseSession, **mapping: object) -> PlanSpec:
    """The spec the engine would build for ``people_spec`` on ``models.people``."""
    source = people_spec(**mapping)
    columns = ("id", "email", "plan")
    types = dict(session.columns("models", "people"))
    return PlanSpec(
        source.mapping, "models.people", "id", columns, column_types=tuple((c, types[c]) for c in columns)
    )


def synced(
    session: WarehouseSession, spec: PlanSpec, rows: list[tuple[str | None, str | None, str | None]]
) -> None:
    """The model holds ``rows`` and the ledger every one of them, acknowledged by sync ``s1``."""
    ensure_state(session)
    people_table(session, rows)
    session.execute(
        "INSERT INTO _segment_profiles.ledger (mapping, record_key, checksum, identity, delivered, synced_at, sync_id, live) "
        f"SELECT {literal(spec.mapping.name)}, id, {checksum_sql(spec)}, '{{\"userId\":\"' || id || '\"}}', TRUE, "
        "TIMESTAMP '2026-11-01 00:00:00', 's1', TRUE FROM models.people"
    )


def rows_by_key(plan: Plan, ops: tuple[str, ...]) -> dict[str | None, dict[str, object]]:
    return {row[KEY]: row for batch in plan.rows(ops, 2) for row in batch}


@pytest.fixture
def plan(session: WarehouseSession) -> Plan:
    people_table(session, SYNCED)
    spec = spec_of(session)
    synced(session, spec, SYNCED)
    people_table(session, NOW)
    return Plan(spec, session)


def test_build_counts_every_kind_of_row(plan: Plan) -> None:
    assert plan.build() == PlanCounts(extracted=8, added=1, updated=1, deleted=1, invalid=4)


def test_rows_carry_what_messages_and_the_ledger_need(plan: Plan) -> None:
    plan.build()
    rows = rows_by_key(plan, ("add", "update", "delete"))
    assert {k: r[OP] for k, r in rows.items()} == {"u2": "update", "u3": "delete", "u5": "add"}
    # an update is sent under its ledger row's generation, with the new values and a new checksum
    assert rows["u2"]["plan"] == "enterprise" and rows["u2"][GENERATION] == "s1"
    assert rows["u2"][CHECKSUM] != synced_checksum(plan, "u2")
    # a delete: the ids stored for the clear, the acknowledged checksum, no model values
    assert rows["u3"][IDENTITY] == '{"userId":"u3"}' and rows["u3"]["email"] is None
    assert rows["u3"][CHECKSUM] == synced_checksum(plan, "u3")
    # an add has no generation yet and no stored ids
    assert rows["u5"][GENERATION] == "" and rows["u5"][IDENTITY] is None and rows["u5"]["email"] == "e@x.io"


def test_a_refresh_row_holds_what_settling_reads_and_no_mapped_values(plan: Plan) -> None:
    """u1 and u4 are unchanged, and the ledger has no quick hash yet (as after the ledger upgrade):
    refresh rows, never rendered, so their values would only make the plan a copy of the model."""
    plan.build()
    refreshed = plan.session.query(
        f"SELECT {KEY}, {CHECKSUM}, {QUICK_HASH}, id, email, plan FROM {plan.table} "
        f"WHERE {OP} = {literal(REFRESH)} ORDER BY {KEY}"
    ).rows
    assert [row[0] for row in refreshed] == ["u1", "u4"]
    for key, checksum, quick_hash, *values in refreshed:
        assert checksum == synced_checksum(plan, key) and quick_hash is not None
        assert values == [None, None, None]
    assert rows_by_key(plan, ("update",))["u2"]["email"] == "b@x.io"  # a row to send keeps them


def synced_checksum(plan: Plan, key: str) -> str:
    return str(
        plan.session.query(
            f"SELECT checksum FROM _segment_profiles.ledger WHERE record_key = {literal(key)}"
        ).scalar()
    )


def test_invalid_keys_one_per_duplicate_and_one_for_all_nulls(plan: Plan) -> None:
    plan.build()
    assert plan.invalid_keys() == [
        InvalidKey("invalid_duplicate_key", "u6", 2),
        InvalidKey("invalid_null_key", None, 2),
    ]


def test_copied_records_are_key_and_checksum_of_the_ops_asked_in_the_ledger_columns(plan: Plan) -> None:
    plan.build()
    plan.copy_records(("delete",), "main.settle")
    copied = plan.session.query("SELECT record_key, checksum, identity, delivered FROM main.settle")
    assert copied.rows == [("u3", synced_checksum(plan, "u3"), None, False)]
    plan.copy_records((), "main.nothing")
    assert plan.session.query("SELECT count(*) FROM main.nothing").scalar() == 0
    assert rows_by_key(plan, ()) == {}


def test_a_tombstone_is_not_deleted_again_and_its_comeback_is_an_add(session: WarehouseSession) -> None:
    people_table(session, SYNCED)
    spec = spec_of(session)
    synced(session, spec, SYNCED)
    session.execute(
        "UPDATE _segment_profiles.ledger SET live = FALSE, sync_id = 's2' WHERE record_key IN ('u3', 'u4')"
    )
    people_table(session, [r for r in SYNCED if r[0] != "u3"])  # u3 stays gone, u4 comes back unchanged
    plan = Plan(spec, session)
    assert plan.build() == PlanCounts(extracted=3, added=1, updated=0, deleted=0, invalid=0)
    assert {k: (r[OP], r[GENERATION]) for k, r in rows_by_key(plan, ("add", "delete")).items()} == {
        "u4": ("add", "s2")
    }


def test_parked_records_wait_for_new_data(session: WarehouseSession) -> None:
    people_table(session, SYNCED)
    spec = spec_of(session)
    synced(session, spec, SYNCED)
    people_table(session, [("u1", "new@x.io", "free"), ("u2", "new@x.io", "pro"), *SYNCED[2:]])
    checksums = dict(session.query(f"SELECT id, {checksum_sql(spec)} FROM models.people").rows)
    session.execute(
        "INSERT INTO _segment_profiles.failed_records (mapping, record_key, checksum, kind, reason, attempts, "
        "first_failed_at, last_failed_at, last_sync_id, status) VALUES "
        f"('people_identify', 'u1', {literal(checksums['u1'])}, 'invalid', 'too big', 1, "
        "TIMESTAMP '2026-11-01 00:00:00', TIMESTAMP '2026-11-01 00:00:00', 's1', 'rejected'), "
        "('people_identify', 'u2', 'an older checksum', 'invalid', 'too big', 1, "
        "TIMESTAMP '2026-11-01 00:00:00', TIMESTAMP '2026-11-01 00:00:00', 's1', 'rejected')"
    )
    plan = Plan(spec, session)
    assert plan.build().updated == 1
    assert set(rows_by_key(plan, ("update",))) == {"u2"}  # u1 is parked under exactly this data


def test_clear_traits_keeps_a_profile_another_live_record_addresses(session: WarehouseSession) -> None:
    rows = [("u1", "a@x.io", "free"), ("u2", "b@x.io", "pro")]
    people_table(session, rows)
    spec = spec_of(session, on_delete="clear_traits")
    synced(session, spec, rows)
    # u2 is gone, but its stored userId is one a live model row still sends (u1 now says "u2")
    session.execute(
        "UPDATE _segment_profiles.ledger SET identity = '{\"userId\":\"u1\"}' WHERE record_key = 'u2'"
    )
    people_table(session, [("u1", "a@x.io", "free")])
    plan = Plan(spec, session)
    assert plan.build().deleted == 1
    assert {k: r[OP] for k, r in rows_by_key(plan, ("delete", "delete_shared")).items()} == {
        "u2": "delete_shared"
    }


def test_track_plans_only_keys_never_acknowledged(session: WarehouseSession) -> None:
    people_table(session, SYNCED)
    spec = spec_of(
        session, action="track", event_name={"value": "Signed Up"}, traits={}, properties={"plan": "plan"}
    )
    synced(session, spec, SYNCED)
    people_table(session, NOW)  # u2 changed, u3 gone: events are never updated nor taken back
    assert Plan(spec, session).build() == PlanCounts(extracted=8, added=1, updated=0, deleted=0, invalid=4)


def test_a_watermark_on_a_mapping_with_deletes_is_refused(session: WarehouseSession) -> None:
    """The configuration allows ``incremental_column`` on track only; were it on an identify
    mapping, the rows below the mark would look deleted, so the plan refuses rather than clears."""
    people_table(session, SYNCED)
    spec = spec_of(session)
    narrowed = dataclasses.replace(
        spec,
        mapping=spec.mapping.model_copy(update={"incremental_column": "email"}),
        watermark="_segment_profiles.watermark__people_identify__0",
    )
    with pytest.raises(ValueError, match="mapping 'people_identify': a watermark narrows the model"):
        Plan(narrowed, session).build()


def test_drop_removes_the_table_and_tolerates_none(plan: Plan) -> None:
    plan.build()
    assert plan.session.table_exists("_segment_profiles", "plan__people_identify__0")
    plan.drop()
    assert not plan.session.table_exists("_segment_profiles", "plan__people_identify__0")
    drop_plan(plan.session, "people_identify", 0)  # a sync that failed before planning drops nothing
