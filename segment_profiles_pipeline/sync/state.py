"""The sync state schema in the warehouse, like Segment's ``__segment_reverse_etl``.

State lives next to the data, not in Dagster: it survives a lost Dagster instance and anyone
can inspect it with SQL. One table of each kind, keyed by mapping name:

- ``ledger``: record key → checksum of the mapped fields last *acknowledged* by Segment,
  with the profile's ids (for a later ``clear_traits``) and the sync that wrote the row (the
  generation of the record's message ids). ``delivered = false`` marks records an
  ``update``-only mapping saw but deliberately did not send (Segment tracks those too).
  ``live = false`` rows are tombstones of deleted or reset records, kept for
  ``TOMBSTONE_DAYS`` so a record that comes back gets message ids Segment has not seen.
- ``failed_records``: records that were rejected or not delivered, with a stable ``code``, the
  reason and the attempts that count against the retry budget (only failures of the record
  itself); retried on every later sync with the latest data until delivered or expired.
- ``sync_history``: one row per mapping, shard and run (``running`` until it finishes).
- ``outbox``: the payloads a dry run would have sent (the latest dry run per mapping).
- ``sync_locks``: at most one sync per mapping and shard at a time, on any warehouse.
"""

from __future__ import annotations

from segment_profiles_pipeline.warehouse.base import WarehouseSession

STATE_SCHEMA = "_segment_profiles"
LEDGER = f"{STATE_SCHEMA}.ledger"
FAILED = f"{STATE_SCHEMA}.failed_records"
HISTORY = f"{STATE_SCHEMA}.sync_history"
OUTBOX = f"{STATE_SCHEMA}.outbox"
LOCKS = f"{STATE_SCHEMA}.sync_locks"

DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {LEDGER} (
        mapping VARCHAR NOT NULL,
        record_key VARCHAR NOT NULL,
        checksum VARCHAR NOT NULL,
        identity VARCHAR,
        delivered BOOLEAN NOT NULL,
        synced_at TIMESTAMP NOT NULL,
        sync_id VARCHAR NOT NULL,
        live BOOLEAN NOT NULL DEFAULT TRUE
    )""",
    f"""CREATE TABLE IF NOT EXISTS {FAILED} (
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
        code VARCHAR,
        first_rejected_at TIMESTAMP
    )""",
    f"""CREATE TABLE IF NOT EXISTS {HISTORY} (
        sync_id VARCHAR NOT NULL,
        mapping VARCHAR NOT NULL,
        shard INTEGER NOT NULL,
        shards INTEGER NOT NULL,
        dagster_run_id VARCHAR,
        dry_run BOOLEAN NOT NULL,
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP,
        status VARCHAR NOT NULL,
        extracted BIGINT,
        added BIGINT,
        updated BIGINT,
        deleted BIGINT,
        invalid BIGINT,
        planned BIGINT,
        rejected BIGINT,
        sent BIGINT,
        delivered BIGINT,
        failed BIGINT,
        delivery_rate DOUBLE,
        error VARCHAR
    )""",
    f"""CREATE TABLE IF NOT EXISTS {OUTBOX} (
        mapping VARCHAR NOT NULL,
        sync_id VARCHAR NOT NULL,
        record_key VARCHAR NOT NULL,
        operation VARCHAR NOT NULL,
        message VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL
    )""",
    f"""CREATE TABLE IF NOT EXISTS {LOCKS} (
        mapping VARCHAR NOT NULL,
        shard INTEGER NOT NULL,
        sync_id VARCHAR NOT NULL,
        acquired_at TIMESTAMP NOT NULL,
        heartbeat_at TIMESTAMP NOT NULL
    )""",
)


MIGRATIONS = (
    # 2026-12: tombstones, failure codes and the record-level retry budget (see docs/decisions.md)
    f"ALTER TABLE {LEDGER} ADD COLUMN IF NOT EXISTS live BOOLEAN DEFAULT TRUE",
    f"ALTER TABLE {FAILED} ADD COLUMN IF NOT EXISTS code VARCHAR",
    f"ALTER TABLE {FAILED} ADD COLUMN IF NOT EXISTS first_rejected_at TIMESTAMP",
    f"ALTER TABLE {HISTORY} ADD COLUMN IF NOT EXISTS rejected BIGINT",
)
"""Columns added after the first release, so state written by an older version keeps working."""

TOMBSTONE_DAYS = 30
"""How long a deleted or reset record's tombstone is kept: far beyond Segment's ~24 h dedup window."""


def ensure_state(session: WarehouseSession) -> None:
    for statement in DDL + MIGRATIONS:
        session.execute(statement)
