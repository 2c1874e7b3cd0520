"""Writes to the sync state: acknowledgements, failures, history, outbox and the sync lock.

Bulk writes go through a scratch table loaded from Arrow and one set-based statement each,
so acknowledging 100k records is a handful of statements, not 100k.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import pyarrow as pa

from segment_profiles_pipeline.config import RetryConfig
from segment_profiles_pipeline.sync.state import FAILED, HISTORY, LEDGER, OUTBOX, STATE_SCHEMA
from segment_profiles_pipeline.warehouse.base import WarehouseSession, literal


class Ack(NamedTuple):
    """One acknowledged record (a NamedTuple: one per record on the hot path)."""

    key: str
    checksum: str
    identity: str | None
    delivered: bool = True


@dataclass(frozen=True)
class Failure:
    """One record not delivered. ``kind`` is ``invalid`` (its content: parked as ``rejected``
    until the data changes) or ``delivery``; ``counted`` says whether the failure was the
    record's own (Segment rejected that message), the only kind that consumes the retry budget."""

    key: str | None
    checksum: str | None
    kind: str  # invalid | delivery
    reason: str
    payload: str | None = None
    code: str = "invalid"
    counted: bool = True


class StateWriter:
    """All state writes of one sync of one mapping shard."""

    def __init__(self, session: WarehouseSession, mapping: str, shard: int, sync_id: str, now: dt.datetime):
        self.session = session
        self.mapping = mapping
        self.shard = shard
        self.sync_id = sync_id
        self.now = now
        self._m = literal(mapping)

    @contextmanager
    def _scratch(self, purpose: str, data: pa.Table) -> Iterator[str]:
        table = f"{STATE_SCHEMA}.scratch__{self.mapping}__{self.shard}__{purpose}"
        self.session.execute(f"DROP TABLE IF EXISTS {table}")
        self.session.load(table, data, create=True)
        try:
            yield table
        finally:
            self.session.execute(f"DROP TABLE IF EXISTS {table}")

    def acknowledge(self, acks: Sequence[Ack]) -> None:
        """Record acknowledged records in the ledger and clear their failures."""
        if not acks:
            return
        keys, checksums, identities, delivered = zip(*acks, strict=True)
        data = pa.table(
            {
                "record_key": pa.array(keys, type=pa.string()),
                "checksum": pa.array(checksums, type=pa.string()),
                "identity": pa.array(identities, type=pa.string()),
                "delivered": pa.array(delivered, type=pa.bool_()),
            }
        )
        with self._scratch("acks", data) as scratch:
            self.session.execute(
                f"DELETE FROM {LEDGER} WHERE mapping = {self._m} AND record_key IN (SELECT record_key FROM {scratch})"
            )
            self.session.execute(
                f"INSERT INTO {LEDGER} (mapping, record_key, checksum, identity, delivered, synced_at, sync_id, live) "
                f"SELECT {self._m}, record_key, checksum, identity, delivered, {literal(self.now)}, {literal(self.sync_id)}, "
                f"TRUE FROM {scratch}"
            )
            self.session.execute(
                f"DELETE FROM {FAILED} WHERE mapping = {self._m} AND record_key IN (SELECT record_key FROM {scratch})"
            )

    def forget_keys(self, keys: Sequence[str]) -> None:
        if keys:
            with self._scratch("gone", pa.table({"record_key": pa.array(keys, type=pa.string())})) as scratch:
                self.forget(f"SELECT record_key FROM {scratch}")

    def track_unsent(self, keys_sql: str) -> None:
        """Ledger rows (``delivered = false``) for records an ``update``-only mapping saw but did not send.

        ``keys_sql`` selects (key, checksum); a tombstone of the same key is replaced."""
        self.session.execute(
            f"DELETE FROM {LEDGER} WHERE mapping = {self._m} AND record_key IN (SELECT k.__key FROM ({keys_sql}) AS k)"
        )
        self.session.execute(
            f"INSERT INTO {LEDGER} (mapping, record_key, checksum, identity, delivered, synced_at, sync_id, live) "
            f"SELECT {self._m}, k.*, NULL, FALSE, {literal(self.now)}, {literal(self.sync_id)}, TRUE FROM ({keys_sql}) AS k"
        )

    def _tombstone(self, where: str) -> None:
        """Mark ledger rows gone. The row keeps a new generation (this sync's id), so the record's
        next message ids differ from every id it was sent under before."""
        self.session.execute(
            f"UPDATE {LEDGER} SET live = FALSE, sync_id = {literal(self.sync_id)}, synced_at = {literal(self.now)} "
            f"WHERE mapping = {self._m} AND live AND {where}"
        )

    def reset(self, shard_sql: str) -> None:
        """Segment's *Reset sync*: forget what was acknowledged (and parked), so everything is sent again."""
        self._tombstone(shard_sql)
        self.session.execute(
            f"DELETE FROM {FAILED} WHERE mapping = {self._m} AND status IN ('expired', 'rejected')"
        )

    def forget(self, keys_sql: str) -> None:
        """Records gone from the model (acknowledged clears, ignored deletes); ``keys_sql`` selects keys."""
        self._tombstone(f"record_key IN ({keys_sql})")
        self.session.execute(f"DELETE FROM {FAILED} WHERE mapping = {self._m} AND record_key IN ({keys_sql})")

    def prune_tombstones(self, days: int) -> None:
        """Tombstones older than ``days`` can go: ids they protect left Segment's dedup window long ago."""
        self.session.execute(
            f"DELETE FROM {LEDGER} WHERE mapping = {self._m} AND NOT live "
            f"AND synced_at < {literal(self.now - dt.timedelta(days=days))}"
        )

    def fail(self, failures: Sequence[Failure], retry: RetryConfig) -> None:
        """Upsert failed records.

        ``attempts`` counts the record's *own* failures of the *same* data (new data restarts the
        count); failures of the account or the transport (``counted = False``: 401, 5xx, 429,
        timeouts) leave it alone, so an outage never expires a record. ``invalid`` records are
        parked as ``rejected`` until their data changes; others stay ``retrying`` until the budget
        (``retry.max_syncs`` counted failures, or ``retry.max_days`` since the first) is spent."""
        if not failures:
            return
        data = pa.table(
            {
                "record_key": pa.array([f.key for f in failures], type=pa.string()),
                "checksum": pa.array([f.checksum for f in failures], type=pa.string()),
                "kind": [f.kind for f in failures],
                "reason": [f.reason for f in failures],
                "sample_payload": pa.array([f.payload for f in failures], type=pa.string()),
                "code": [f.code for f in failures],
                "counted": [f.counted for f in failures],
            }
        )
        now = literal(self.now)
        oldest = literal(self.now - dt.timedelta(days=retry.max_days))
        same = "o.mapping IS NOT NULL AND (o.checksum = n.checksum OR (o.checksum IS NULL AND n.checksum IS NULL))"
        with self._scratch("failed", data) as scratch:
            merged = f"{STATE_SCHEMA}.scratch__{self.mapping}__{self.shard}__merged"
            self.session.execute(f"DROP TABLE IF EXISTS {merged}")
            self.session.execute(
                f"""CREATE TABLE {merged} AS
                SELECT n.record_key, n.checksum, n.kind, n.reason, n.sample_payload, n.code,
                       CASE WHEN {same} THEN o.attempts ELSE 0 END + CASE WHEN n.counted THEN 1 ELSE 0 END
                           AS attempts,
                       CASE WHEN {same} THEN o.first_failed_at ELSE {now} END AS first_failed_at,
                       CASE WHEN {same} AND o.first_rejected_at IS NOT NULL THEN o.first_rejected_at
                            WHEN n.counted THEN {now} END AS first_rejected_at
                FROM {scratch} AS n
                LEFT JOIN {FAILED} AS o
                  ON o.mapping = {self._m} AND (o.record_key = n.record_key OR (o.record_key IS NULL AND n.record_key IS NULL))"""
            )
            try:
                self.session.execute(
                    f"DELETE FROM {FAILED} WHERE mapping = {self._m} AND "
                    f"(record_key IN (SELECT record_key FROM {scratch} WHERE record_key IS NOT NULL) "
                    f" OR (record_key IS NULL AND EXISTS (SELECT 1 FROM {scratch} WHERE record_key IS NULL)))"
                )
                self.session.execute(
                    f"""INSERT INTO {FAILED} (mapping, record_key, checksum, kind, reason, attempts, first_failed_at,
                        last_failed_at, last_sync_id, status, sample_payload, code, first_rejected_at)
                    SELECT {self._m}, record_key, checksum, kind, reason, attempts, first_failed_at, {now},
                           {literal(self.sync_id)},
                           CASE WHEN kind = 'invalid' THEN 'rejected'
                                WHEN attempts >= {retry.max_syncs} OR first_rejected_at < {oldest} THEN 'expired'
                                ELSE 'retrying' END,
                           sample_payload, code, first_rejected_at
                    FROM {merged}"""
                )
            finally:
                self.session.execute(f"DROP TABLE IF EXISTS {merged}")

    def outbox(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """Dry run: keep the payloads that would have been sent (key, operation, message JSON)."""
        if not rows:
            return
        data = pa.table(
            {
                "mapping": [self.mapping] * len(rows),
                "sync_id": [self.sync_id] * len(rows),
                "record_key": [r[0] for r in rows],
                "operation": [r[1] for r in rows],
                "message": [r[2] for r in rows],
                "created_at": pa.array([self.now.replace(tzinfo=None)] * len(rows), type=pa.timestamp("us")),
            }
        )
        self.session.load(OUTBOX, data)

    def clear_outbox(self) -> None:
        self.session.execute(f"DELETE FROM {OUTBOX} WHERE mapping = {self._m}")

    # history ---------------------------------------------------------------------------
    def start_history(self, shards: int, dagster_run_id: str | None, dry_run: bool) -> None:
        self.session.execute(
            f"UPDATE {HISTORY} SET status = 'failed', finished_at = {literal(self.now)}, "
            "error = 'interrupted: the process running this sync stopped before it finished' "
            f"WHERE mapping = {self._m} AND shard = {self.shard} AND status = 'running'"
        )
        self.session.execute(
            f"INSERT INTO {HISTORY} (sync_id, mapping, shard, shards, dagster_run_id, dry_run, started_at, status) "
            f"VALUES ({literal(self.sync_id)}, {self._m}, {self.shard}, {shards}, {literal(dagster_run_id)}, "
            f"{literal(dry_run)}, {literal(self.now)}, 'running')"
        )

    def finish_history(
        self, status: str, counts: dict[str, int], delivery_rate: float | None, error: str | None
    ) -> None:
        sets = "".join(f"{k} = {int(v)}, " for k, v in counts.items())
        finished = literal(dt.datetime.now(dt.UTC).replace(tzinfo=None))
        self.session.execute(
            f"UPDATE {HISTORY} SET status = {literal(status)}, finished_at = {finished}, {sets}"
            f"delivery_rate = {literal(delivery_rate)}, error = {literal(error)} "
            f"WHERE sync_id = {literal(self.sync_id)} AND mapping = {self._m} AND shard = {self.shard}"
        )
