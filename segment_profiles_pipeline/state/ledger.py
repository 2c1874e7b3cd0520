"""``_segment_profiles.ledger``: what Segment acknowledged, per mapping and record.

Record key → checksum of the mapped fields last *acknowledged*, with the profile's ids (for a
later ``clear_traits``) and the sync that wrote the row (the generation of the record's message
ids). ``quick_hash`` caches a cheaper hash of the same values next to the checksum, so the plan
skips the checksum of unchanged records (null until a sync writes it; never the source of truth:
see ``remember_quick_hashes``). ``delivered = false`` marks records an ``update``-only mapping saw
but deliberately did not send (Segment tracks those too). ``live = false`` rows are tombstones
of deleted or reset records, kept for ``TOMBSTONE_DAYS`` so a record that comes back gets message
ids Segment has not seen.
The plan (``sync/plan.py``) reads this table; only this module writes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from segment_profiles_pipeline.state.schema import STATE_SCHEMA, Scratch, SyncScope
from segment_profiles_pipeline.warehouse.base import WarehouseSession, ident, literal

if TYPE_CHECKING:
    import pyarrow as pa

LEDGER = f"{STATE_SCHEMA}.ledger"

DDL = f"""CREATE TABLE IF NOT EXISTS {LEDGER} (
    mapping VARCHAR NOT NULL,
    record_key VARCHAR NOT NULL,
    checksum VARCHAR NOT NULL,
    identity VARCHAR,
    delivered BOOLEAN NOT NULL,
    synced_at TIMESTAMP NOT NULL,
    sync_id VARCHAR NOT NULL,
    live BOOLEAN NOT NULL DEFAULT TRUE
)"""

MIGRATIONS = (
    # 2026-12: tombstones (see docs/decisions.md)
    f"ALTER TABLE {LEDGER} ADD COLUMN IF NOT EXISTS live BOOLEAN DEFAULT TRUE",
    # 2026-12: the quick hash, a cache in front of the checksum (see docs/decisions.md)
    f"ALTER TABLE {LEDGER} ADD COLUMN IF NOT EXISTS quick_hash {{quick_hash_type}}",
)
"""Columns added after the first release, so a ledger written by an older version keeps working
(``{quick_hash_type}`` is filled in per warehouse: ``QUICK_HASH_TYPES``)."""

QUICK_HASH_TYPES = {"duckdb": "UBIGINT", "snowflake": "DECIMAL(20, 0)"}
"""``quick_hash`` holds the warehouse's ``hash()``: unsigned 64-bit on DuckDB, signed on Snowflake.
Snowflake has no UBIGINT (sqlglot would pass the name through), and NUMBER(20, 0) holds either
sign, so the same column also works on fakesnow, whose ``hash()`` is DuckDB's."""

TOMBSTONE_DAYS = 30
"""How long a deleted or reset record's tombstone is kept: far beyond Segment's ~24 h dedup window."""


class Ack(NamedTuple):
    """One acknowledged record (a NamedTuple: one per record on the hot path)."""

    key: str
    checksum: str
    identity: str | None
    delivered: bool = True
    replaces: bool = True
    """False only when the key is known to have no ledger row (see ``record``)."""


def ensure(session: WarehouseSession) -> None:
    session.execute(DDL)
    for statement in MIGRATIONS:
        session.execute(statement.format(quick_hash_type=QUICK_HASH_TYPES[session.dialect]))


def shard_predicate(key_sql: str, shard: int, shards: int) -> str:
    """SQL: the record whose key ``key_sql`` evaluates to belongs to ``shard`` of ``shards``.

    The one definition of a record's shard: the plan applies it to the model's keys and to this
    table's, so a record always lands in the same shard on both sides."""
    if shards == 1:
        return "TRUE"
    return f"abs(hash({key_sql})) % {shards} = {shard}"


def rows_table(rows: Sequence[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """Tuples (``Ack``, ``delivery.PlannedMessage``: one field per column, in order) as an Arrow
    table of ``schema``, built column by column."""
    import pyarrow as pa  # ~0.2 s, paid by a sync, not by each definitions load

    columns = zip(*rows, strict=True) if rows else ((),) * len(schema)
    arrays = [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def acks_table(acks: Sequence[Ack]) -> pa.Table:
    """Acknowledgements as the Arrow table ``record`` reads (columns record_key, checksum,
    identity, delivered, replaces)."""
    import pyarrow as pa

    types = (pa.string(), pa.string(), pa.string(), pa.bool_(), pa.bool_())
    names = ("record_key", "checksum", "identity", "delivered", "replaces")
    return rows_table(acks, pa.schema(list(zip(names, types, strict=True))))


def acknowledged(rows: pa.Table) -> pa.Table:
    """Delivered records as ``acks_table``'s columns, from a table with their ``record_key``,
    ``checksum``, ``identity`` and ``replaces`` (a chunk's accepted plan rows): no Python
    object per record."""
    import pyarrow as pa

    columns = rows.select(["record_key", "checksum", "identity"])
    return columns.append_column("delivered", pa.repeat(True, rows.num_rows)).append_column(
        "replaces", rows["replaces"]
    )


def record(scope: SyncScope, acks: Scratch, *, replaces: bool = True) -> None:
    """Write the rows of ``acks`` (see ``acks_table``) as this sync's, replacing the keys' rows
    (tombstones included: a record that came back is live again).

    ``replaces=False`` says no key of ``acks`` has a ledger row (the plan saw none: every row's
    ``replaces`` is false), so there is nothing to delete first. The DELETE scans the mapping's
    whole ledger however few keys it names, and a sync acknowledges chunk by chunk, so on a
    first sync of N records it read O(N^2) rows (237 s for 10M against 11.9 s for 1M)."""
    m = scope.mapping_sql
    if replaces:
        scope.session.execute(
            f"DELETE FROM {LEDGER} WHERE mapping = {m} AND record_key IN (SELECT record_key FROM {acks})"
        )
    scope.session.execute(
        f"INSERT INTO {LEDGER} (mapping, record_key, checksum, identity, delivered, synced_at, sync_id, live) "
        f"SELECT {m}, record_key, checksum, identity, delivered, {literal(scope.now)}, {literal(scope.sync_id)}, "
        f"TRUE FROM {acks}"
    )


def remember_quick_hashes(scope: SyncScope, plan_table: str) -> None:
    """Store the plan's quick hashes (``sync/plan.py``: a cache in front of the checksum) in one
    set-based UPDATE: for the records this sync acknowledged and for the plan's ``refresh`` rows.

    ``plan_table`` names the plan's table (a table name, never a query), read through its
    ``__key``, ``__checksum`` and ``__quick_hash`` columns. A quick hash is written only next to
    the checksum it was computed with, which is what keeps the cache true: an acknowledged
    record's row now holds the plan row's checksum, and so does a ``refresh`` row's, while a
    record whose delivery failed keeps its old checksum, and with it its old quick hash or none,
    so the next plan still compares its checksum."""
    scope.session.execute(
        f"UPDATE {LEDGER} SET quick_hash = p.__quick_hash FROM {ident(plan_table)} AS p "
        f"WHERE {LEDGER}.mapping = {scope.mapping_sql} AND {LEDGER}.record_key = p.__key "
        f"AND {LEDGER}.checksum = p.__checksum AND p.__quick_hash IS NOT NULL"
    )


def _tombstone(scope: SyncScope, where: str) -> None:
    """Mark live rows matching ``where`` gone. The row keeps a new generation (this sync's id), so
    the record's next message ids differ from every id it was sent under before."""
    scope.session.execute(
        f"UPDATE {LEDGER} SET live = FALSE, sync_id = {literal(scope.sync_id)}, synced_at = {literal(scope.now)} "
        f"WHERE mapping = {scope.mapping_sql} AND live AND {where}"
    )


def forget(scope: SyncScope, keys: Scratch) -> None:
    """Tombstone the records whose ``record_key`` is in ``keys``."""
    _tombstone(scope, f"record_key IN (SELECT record_key FROM {keys})")


def forget_shard(scope: SyncScope, shards: int) -> None:
    """Tombstone every live record of this sync's shard (Segment's *Reset sync*)."""
    _tombstone(scope, shard_predicate("record_key", scope.shard, shards))


def prune_tombstones(scope: SyncScope, days: int = TOMBSTONE_DAYS) -> None:
    """Tombstones older than ``days`` can go: ids they protect left Segment's dedup window long ago."""
    scope.session.execute(
        f"DELETE FROM {LEDGER} WHERE mapping = {scope.mapping_sql} AND NOT live "
        f"AND synced_at < {literal(scope.now - dt.timedelta(days=days))}"
    )
