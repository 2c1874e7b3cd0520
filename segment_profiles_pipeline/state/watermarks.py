"""The high-water mark of a track mapping's ``incremental_column``, kept in ``_segment_profiles``.

One small table per mapping shard, ``watermark__<mapping>__<shard>``, with a typed ``mark`` column
(so a timestamp compares as a timestamp and a sequence as a number, whatever the session settings)
and the column it belongs to. This module owns that table: its DDL, reads and writes.

The rule that keeps every row: the mark only moves at the very end of a sync that finished (never
in a dry run, never after a crash: then the next sync re-reads the same rows and the ledger skips
what was acknowledged), to the largest value among the rows *this sync planned*. Each of those rows
is by then either acknowledged (in the ledger) or in ``failed_records``; the plan re-reads rows at or
below the mark whose key is in ``failed_records``, so a failed row is retried until it is delivered
or expires, exactly like a record without a mark. Rows with a null value are always read (the
ledger keeps them from being sent twice). A row that arrives later with a value at or below the mark
is never read: the column must grow with every new row (a load sequence or ``received_at``).
"""

from __future__ import annotations

from segment_profiles_pipeline.state.schema import STATE_SCHEMA
from segment_profiles_pipeline.warehouse.base import WarehouseSession, ident, literal


def table(mapping: str, shard: int) -> str:
    """The mark's table of one mapping shard (it may not exist: then every row is read)."""
    return f"{STATE_SCHEMA}.watermark__{mapping}__{shard}"


def current(session: WarehouseSession, mapping: str, shard: int, column: str) -> str | None:
    """The mark's table when it holds a mark for ``column`` (None: read every row)."""
    name = table(mapping, shard)
    if not session.table_exists(*name.split(".")):
        return None
    found = session.query(f"SELECT column_name FROM {name} WHERE mark IS NOT NULL").rows
    return name if found and str(found[0][0]).lower() == column.lower() else None


def advance(
    session: WarehouseSession, mapping: str, shard: int, column: str, plan_table: str, previous: str | None
) -> None:
    """Move the mark to the largest value of ``column`` among the rows this sync planned (never back).

    Rows with a null or duplicated key count too: they cannot be sent until the model fixes them,
    and a fix in an append-only model is a new row above the mark. ``plan_table`` names the plan's
    table and ``previous`` the mark's table as ``current`` returned it: table names, never queries."""
    col = ident(column.lower())
    old = f"UNION ALL SELECT mark FROM {ident(previous)}" if previous else ""
    staged = f"{table(mapping, shard)}__next"
    session.execute(
        f"CREATE OR REPLACE TABLE {staged} AS SELECT max(v) AS mark, {literal(column.lower())} AS column_name FROM ("
        f"SELECT {col} AS v FROM {ident(plan_table)} {old}) AS marks"
    )
    session.execute(f"CREATE OR REPLACE TABLE {table(mapping, shard)} AS SELECT * FROM {staged}")
    session.execute(f"DROP TABLE IF EXISTS {staged}")


def forget(session: WarehouseSession, mapping: str, shard: int) -> None:
    """Reset sync: the next plan reads every row again."""
    session.execute(f"DROP TABLE IF EXISTS {table(mapping, shard)}")
