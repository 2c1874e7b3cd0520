"""``_segment_profiles.failed_records``: records that were rejected or not delivered.

One row per mapping and record key (one for all null keys), with a stable ``reason_code`` (one of
``REASON_CODES``) next to the human ``reason``, and the attempts that count against the retry
budget (only failures of the record itself). Retried on every later sync with the latest data
until delivered or expired; ``rejected`` and ``expired`` rows are *parked*: the plan leaves an
unchanged record alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast, get_args

from segment_profiles_pipeline.config import RetryConfig
from segment_profiles_pipeline.errors import WarehouseError
from segment_profiles_pipeline.state.schema import STATE_SCHEMA, Scratch, SyncScope
from segment_profiles_pipeline.warehouse.base import WarehouseSession, literal

FAILED = f"{STATE_SCHEMA}.failed_records"

ReasonCode = Literal[
    # rejected before sending (kind 'invalid'): the record's content; parked until it changes
    "invalid",
    "null_primary_key",
    "duplicate_primary_key",
    "missing_user_or_anonymous_id",
    "missing_event_name",
    "consent_not_an_object",
    "missing_external_ids",
    "missing_subscription_statuses",
    "missing_email_for_email_subscription",
    "missing_email_subscription_for_groups",
    "missing_phone_for_sms_or_whatsapp",
    "missing_android_push_token",
    "missing_ios_push_token",
    "invalid_subscription_status",
    # not delivered (kind 'delivery'): segment/outcomes.py
    "rejected",
    "auth_refused",
    "transport",
    "server_error",
    "rate_limited",
    "not_acknowledged",
    "not_sent",
]
"""Every value ``failed_records.reason_code`` takes, listed in docs/sync.md: alerts and SQL can
match on a code forever, while the text next to it may gain detail."""

REASON_CODES: Final = frozenset(get_args(ReasonCode))

FailureKind = Literal["invalid", "delivery"]
PARKED_STATUSES: Final = ("expired", "rejected")
"""Statuses that keep an unchanged record out of the plan."""

DDL = f"""CREATE TABLE IF NOT EXISTS {FAILED} (
    mapping VARCHAR NOT NULL,
    record_key VARCHAR,
    checksum VARCHAR,
    kind VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    attempts INTEGER NOT NULL,
    first_failed_at TIMESTAMP NOT NULL,
    last_failed_at TIMESTAMP NOT NULL,
    last_sync_id VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    sample_payload VARCHAR,
    reason_code VARCHAR,
    first_rejected_at TIMESTAMP
)"""

MIGRATIONS = (
    # 2026-12: failure codes and the record-level retry budget (see docs/decisions.md)
    f"ALTER TABLE {FAILED} ADD COLUMN IF NOT EXISTS reason_code VARCHAR",
    f"ALTER TABLE {FAILED} ADD COLUMN IF NOT EXISTS first_rejected_at TIMESTAMP",
)


def reason_code(value: str) -> ReasonCode:
    """``value`` as a catalogued code; an uncatalogued one is a bug of this project, not of the data."""
    if value in REASON_CODES:
        return cast(ReasonCode, value)
    raise ValueError(
        f"'{value}' is not a failure reason code: add it to ReasonCode in "
        "segment_profiles_pipeline/state/failed_records.py and to the table in docs/sync.md"
    )


@dataclass(frozen=True)
class Failure:
    """One record not delivered. ``kind`` is ``invalid`` (its content: parked as ``rejected``
    until the data changes) or ``delivery``; ``counted`` says whether the failure was the
    record's own (Segment rejected that message), the only kind that consumes the retry budget."""

    key: str | None
    checksum: str | None
    kind: FailureKind
    reason: str
    payload: str | None = None
    reason_code: ReasonCode = "invalid"
    counted: bool = True


def ensure(session: WarehouseSession) -> None:
    session.execute(DDL)
    _rename_code_column(session)
    for statement in MIGRATIONS:
        session.execute(statement)


def _rename_code_column(session: WarehouseSession) -> None:
    """Tables written before 2026-12-02 call ``reason_code`` ``code``: rename it, keeping its values.

    Two syncs starting at once may both try; the one that loses finds the column renamed."""
    schema, table = FAILED.split(".")

    def columns() -> set[str]:
        return {name for name, _ in session.columns(schema, table)}

    if "code" not in columns() or "reason_code" in columns():
        return
    try:
        session.execute(f"ALTER TABLE {FAILED} RENAME COLUMN code TO reason_code")
    except WarehouseError:
        if "reason_code" not in columns():
            raise


def record(scope: SyncScope, failures: Sequence[Failure], retry: RetryConfig) -> None:
    """Upsert failed records.

    ``attempts`` counts the record's *own* failures of the *same* data (new data restarts the
    count); failures of the account or the transport (``counted = False``: 401, 5xx, 429,
    timeouts) leave it alone, so an outage never expires a record. ``invalid`` records are
    parked as ``rejected`` until their data changes; others stay ``retrying`` until the budget
    (``retry.max_syncs`` counted failures, or ``retry.max_days`` since the first) is spent."""
    if not failures:
        return
    unknown = {f.reason_code for f in failures} - REASON_CODES
    if unknown:
        raise ValueError(
            f"failure reason codes {sorted(unknown)} are not in ReasonCode (state/failed_records.py)"
        )
    import pyarrow as pa  # ~0.2 s, paid by a sync, not by each definitions load

    data = pa.table(
        {
            "record_key": pa.array([f.key for f in failures], type=pa.string()),
            "checksum": pa.array([f.checksum for f in failures], type=pa.string()),
            "kind": [f.kind for f in failures],
            "reason": [f.reason for f in failures],
            "sample_payload": pa.array([f.payload for f in failures], type=pa.string()),
            "reason_code": [f.reason_code for f in failures],
            "counted": [f.counted for f in failures],
        }
    )
    m, session = scope.mapping_sql, scope.session
    now = literal(scope.now)
    oldest = literal(scope.now - dt.timedelta(days=retry.max_days))
    same = (
        "o.mapping IS NOT NULL AND (o.checksum = n.checksum OR (o.checksum IS NULL AND n.checksum IS NULL))"
    )
    with scope.scratch("failed", data) as scratch:
        merged = f"{STATE_SCHEMA}.scratch__{scope.mapping}__{scope.shard}__merged"
        session.execute(f"DROP TABLE IF EXISTS {merged}")
        session.execute(
            f"""CREATE TABLE {merged} AS
            SELECT n.record_key, n.checksum, n.kind, n.reason, n.sample_payload, n.reason_code,
                   CASE WHEN {same} THEN o.attempts ELSE 0 END + CASE WHEN n.counted THEN 1 ELSE 0 END
                       AS attempts,
                   CASE WHEN {same} THEN o.first_failed_at ELSE {now} END AS first_failed_at,
                   CASE WHEN {same} AND o.first_rejected_at IS NOT NULL THEN o.first_rejected_at
                        WHEN n.counted THEN {now} END AS first_rejected_at
            FROM {scratch} AS n
            LEFT JOIN {FAILED} AS o
              ON o.mapping = {m} AND (o.record_key = n.record_key OR (o.record_key IS NULL AND n.record_key IS NULL))"""
        )
        try:
            session.execute(
                f"DELETE FROM {FAILED} WHERE mapping = {m} AND "
                f"(record_key IN (SELECT record_key FROM {scratch} WHERE record_key IS NOT NULL) "
                f" OR (record_key IS NULL AND EXISTS (SELECT 1 FROM {scratch} WHERE record_key IS NULL)))"
            )
            session.execute(
                f"""INSERT INTO {FAILED} (mapping, record_key, checksum, kind, reason, attempts, first_failed_at,
                    last_failed_at, last_sync_id, status, sample_payload, reason_code, first_rejected_at)
                SELECT {m}, record_key, checksum, kind, reason, attempts, first_failed_at, {now},
                       {literal(scope.sync_id)},
                       CASE WHEN kind = 'invalid' THEN 'rejected'
                            WHEN attempts >= {retry.max_syncs} OR first_rejected_at < {oldest} THEN 'expired'
                            ELSE 'retrying' END,
                       sample_payload, reason_code, first_rejected_at
                FROM {merged}"""
            )
        finally:
            session.execute(f"DROP TABLE IF EXISTS {merged}")


def clear(scope: SyncScope, keys: Scratch) -> None:
    """Delivered or gone: the records whose ``record_key`` is in ``keys`` have nothing left to retry."""
    scope.session.execute(
        f"DELETE FROM {FAILED} WHERE mapping = {scope.mapping_sql} AND record_key IN (SELECT record_key FROM {keys})"
    )


def clear_parked(scope: SyncScope) -> None:
    """Reset sync: parked records of the mapping are planned again."""
    scope.session.execute(
        f"DELETE FROM {FAILED} WHERE mapping = {scope.mapping_sql} "
        f"AND status IN ({', '.join(literal(s) for s in PARKED_STATUSES)})"
    )


def count_of_sync(session: WarehouseSession, mapping: str, sync_id: str) -> int:
    """How many records the sync ``sync_id`` of ``mapping`` failed or rejected."""
    return int(session.query(f"SELECT count(*) {_of_sync(mapping, sync_id)}").scalar() or 0)


def of_sync(session: WarehouseSession, mapping: str, sync_id: str, limit: int) -> list[tuple[Any, ...]]:
    """(record_key, kind, reason_code, reason, attempts, status) of the first ``limit`` records
    the sync ``sync_id`` failed or rejected, by kind and key."""
    return session.query(
        f"SELECT record_key, kind, reason_code, reason, attempts, status {_of_sync(mapping, sync_id)} "
        f"ORDER BY kind, record_key LIMIT {int(limit)}"
    ).rows


def _of_sync(mapping: str, sync_id: str) -> str:
    return f"FROM {FAILED} WHERE mapping = {literal(mapping)} AND last_sync_id = {literal(sync_id)}"
