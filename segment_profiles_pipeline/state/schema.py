"""The state schema, ``_segment_profiles``, and what every state table module shares.

Each table has one module in this package that owns its DDL, its migrations and every statement
on it (``ledger``, ``failed_records``, ``sync_history``, ``sync_locks``, ``outbox``,
``watermarks``); ``ensure_state`` creates or upgrades them all. Callers hand those modules typed
values (keys, shard numbers, counts), never SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, NewType

from segment_profiles_pipeline.warehouse.base import WarehouseSession, literal

if TYPE_CHECKING:  # annotations only: pyarrow costs ~0.2 s at every definitions load
    import pyarrow as pa

STATE_SCHEMA = "_segment_profiles"

Scratch = NewType("Scratch", str)
"""A scratch table in the state schema, loaded from Arrow by ``SyncScope.scratch``: the only table
name the state modules pass each other, so one load serves several tables' statements."""


@dataclass(frozen=True)
class SyncScope:
    """One sync of one mapping shard: what every state write is keyed and stamped with."""

    session: WarehouseSession
    mapping: str
    shard: int
    sync_id: str
    now: dt.datetime

    @property
    def mapping_sql(self) -> str:
        """The mapping name as an escaped SQL literal."""
        return literal(self.mapping)

    @contextmanager
    def scratch_table(self, purpose: str) -> Iterator[Scratch]:
        """The name of a scratch table for set-based statements, not yet created (whoever fills it
        creates it), dropped afterwards (also on errors).

        Named by mapping, shard and purpose, so concurrent syncs of other shards never collide."""
        table = Scratch(f"{STATE_SCHEMA}.scratch__{self.mapping}__{self.shard}__{purpose}")
        self.session.execute(f"DROP TABLE IF EXISTS {table}")
        try:
            yield table
        finally:
            self.session.execute(f"DROP TABLE IF EXISTS {table}")

    @contextmanager
    def scratch(self, purpose: str, data: pa.Table) -> Iterator[Scratch]:
        """``data`` as a scratch table (see ``scratch_table``)."""
        with self.scratch_table(purpose) as table:
            self.session.load(table, data, create=True)
            yield table


def ensure_state(session: WarehouseSession) -> None:
    """Create the state schema and tables, and upgrade tables an older version wrote."""
    # Imported here: every table module imports STATE_SCHEMA from this one.
    from segment_profiles_pipeline.state import failed_records, ledger, outbox, sync_history, sync_locks

    session.execute(f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}")
    for table in (ledger, failed_records, sync_history, outbox, sync_locks):
        table.ensure(session)
