"""Every state write of one sync of one mapping shard, as one object the delivery modes hold.

A record's outcome often touches two tables (an acknowledgement enters the ledger *and* clears the
record's failure), so the writer loads the keys into one scratch table and hands it to each
table's module; the SQL stays in those modules. Bulk writes are a handful of set-based statements
per chunk, never one per record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from segment_profiles_pipeline.config import RetryConfig
from segment_profiles_pipeline.state import failed_records, ledger, outbox, sync_history
from segment_profiles_pipeline.state.failed_records import Failure
from segment_profiles_pipeline.state.outbox import OutboxRow
from segment_profiles_pipeline.state.schema import Scratch, SyncScope
from segment_profiles_pipeline.state.sync_history import SyncStatus
from segment_profiles_pipeline.warehouse.base import WarehouseSession

if TYPE_CHECKING:
    import pyarrow as pa

Fill = Callable[[Scratch], object]
"""Creates the named scratch table from data already in the warehouse (the plan's rows)."""


class StateWriter:
    """All state writes of one sync of one mapping shard."""

    def __init__(self, session: WarehouseSession, mapping: str, shard: int, sync_id: str, now: dt.datetime):
        self.scope = SyncScope(session, mapping, shard, sync_id, now)

    @property
    def session(self) -> WarehouseSession:
        return self.scope.session

    # ledger and failed_records ---------------------------------------------------------
    def acknowledge(self, acks: pa.Table) -> None:
        """Record acknowledged records (``ledger.acks_table``'s columns) in the ledger and clear
        their failures. The ledger's rows of the keys are replaced only when some key may have
        one (its ``replaces``): a first sync's records have none (``ledger.record``)."""
        if not acks.num_rows:
            return
        import pyarrow.compute as pc

        replaces = bool(pc.any(acks["replaces"].fill_null(True)).as_py())
        with self.scope.scratch("acks", acks) as scratch:
            ledger.record(self.scope, scratch, replaces=replaces)
            failed_records.clear(self.scope, scratch)

    def track_unsent(self, fill: Fill) -> None:
        """Ledger rows (``delivered = false``) for records an ``update``-only mapping saw but did
        not send; a tombstone of the same key is replaced. ``fill`` creates the scratch table in
        ``ledger.acks_table``'s columns (the plan does, from its own rows: ``Plan.copy_records``),
        so settling a million records never moves their keys through Python."""
        with self.scope.scratch_table("unsent") as scratch:
            fill(scratch)
            ledger.record(self.scope, scratch)

    def remember_quick_hashes(self, plan_table: str) -> None:
        """The plan's quick hashes of what this sync acknowledged or found stale, into the ledger
        (``ledger.remember_quick_hashes``), straight from the plan's table."""
        ledger.remember_quick_hashes(self.scope, plan_table)

    def forget_keys(self, keys: Sequence[str]) -> None:
        """Records gone from the model (acknowledged clears): tombstoned, failures cleared."""
        if not keys:
            return
        import pyarrow as pa  # ~0.2 s, paid by a sync, not by each definitions load

        with self.scope.scratch(
            "gone", pa.table({"record_key": pa.array(keys, type=pa.string())})
        ) as scratch:
            self._forget(scratch)

    def forget_planned(self, fill: Fill) -> None:
        """``forget_keys`` for the records ``fill`` puts in the scratch table (a ``record_key``
        column): the ignored deletes the plan holds, set-based."""
        with self.scope.scratch_table("gone") as scratch:
            fill(scratch)
            self._forget(scratch)

    def _forget(self, keys: Scratch) -> None:
        ledger.forget(self.scope, keys)
        failed_records.clear(self.scope, keys)

    def reset(self, shards: int) -> None:
        """Segment's *Reset sync*: forget what was acknowledged (and parked), so everything is sent again."""
        ledger.forget_shard(self.scope, shards)
        failed_records.clear_parked(self.scope)

    def prune_tombstones(self, days: int = ledger.TOMBSTONE_DAYS) -> None:
        ledger.prune_tombstones(self.scope, days)

    def fail(self, failures: Sequence[Failure], retry: RetryConfig) -> None:
        failed_records.record(self.scope, failures, retry)

    # outbox ----------------------------------------------------------------------------
    def outbox(self, rows: Sequence[OutboxRow]) -> None:
        """Dry run: keep the payloads that would have been sent."""
        outbox.write(self.scope, rows)

    def clear_outbox(self) -> None:
        outbox.clear(self.scope)

    # history ---------------------------------------------------------------------------
    def start_history(self, shards: int, dagster_run_id: str | None, dry_run: bool) -> None:
        sync_history.start(self.scope, shards, dagster_run_id, dry_run)

    def finish_history(
        self, status: SyncStatus, counts: Mapping[str, int], delivery_rate: float | None, error: str | None
    ) -> None:
        sync_history.finish(self.scope, status, counts, delivery_rate, error)
