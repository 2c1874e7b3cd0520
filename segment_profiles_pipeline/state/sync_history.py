"""``_segment_profiles.sync_history``: one row per mapping, shard and run.

A row is ``running`` from the start of a sync until it finishes as ``success``,
``partial_success`` or ``failed``; a sync whose process died is marked ``failed`` by the next sync
of its shard, or ``interrupted`` when that sync took its lock over (``sync_locks``). The alert
sensor and ``profiles_sync`` read it through the functions below.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from segment_profiles_pipeline.state.schema import STATE_SCHEMA, SyncScope
from segment_profiles_pipeline.warehouse.base import WarehouseSession, ident, in_list, literal

HISTORY = f"{STATE_SCHEMA}.sync_history"

SyncStatus = Literal["running", "success", "partial_success", "failed", "interrupted"]
COUNT_COLUMNS: Final = (
    "extracted",
    "added",
    "updated",
    "deleted",
    "invalid",
    "planned",
    "rejected",
    "sent",
    "delivered",
    "failed",
)
"""The count columns a finished sync fills in (its report's counts)."""

DDL = f"""CREATE TABLE IF NOT EXISTS {HISTORY} (
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
)"""

MIGRATIONS = (f"ALTER TABLE {HISTORY} ADD COLUMN IF NOT EXISTS rejected BIGINT",)

_INTERRUPTED = "interrupted: the process running this sync stopped before it finished"
_REAL_FINISHED = "status <> 'running' AND finished_at IS NOT NULL AND NOT dry_run"
"""Rows that say something about delivery: finished, and not a dry run (which sends nothing)."""


def ensure(session: WarehouseSession) -> None:
    session.execute(DDL)
    for statement in MIGRATIONS:
        session.execute(statement)


def exists(session: WarehouseSession) -> bool:
    """False before the first sync created the table (readers that must not create it ask first)."""
    return session.table_exists(*HISTORY.split("."))


def _shard(mapping: str, shard: int) -> str:
    return f"mapping = {literal(mapping)} AND shard = {int(shard)}"


def start(scope: SyncScope, shards: int, dagster_run_id: str | None, dry_run: bool) -> None:
    """This sync's ``running`` row; a row of the shard still ``running`` belonged to a process
    that stopped (the lock is held, so no other sync of the shard runs): it becomes ``failed``."""
    scope.session.execute(
        f"UPDATE {HISTORY} SET status = 'failed', finished_at = {literal(scope.now)}, "
        f"error = {literal(_INTERRUPTED)} WHERE {_shard(scope.mapping, scope.shard)} AND status = 'running'"
    )
    scope.session.execute(
        f"INSERT INTO {HISTORY} (sync_id, mapping, shard, shards, dagster_run_id, dry_run, started_at, status) "
        f"VALUES ({literal(scope.sync_id)}, {scope.mapping_sql}, {scope.shard}, {int(shards)}, "
        f"{literal(dagster_run_id)}, {literal(dry_run)}, {literal(scope.now)}, 'running')"
    )


def finish(
    scope: SyncScope,
    status: SyncStatus,
    counts: Mapping[str, int],
    delivery_rate: float | None,
    error: str | None,
) -> None:
    """Close this sync's row with its status, counts (any of ``COUNT_COLUMNS``) and first error."""
    unknown = set(counts) - set(COUNT_COLUMNS)
    if unknown:
        raise ValueError(f"sync_history has no count column(s) {sorted(unknown)}; it has {COUNT_COLUMNS}")
    sets = "".join(f"{k} = {int(v)}, " for k, v in counts.items())
    finished = literal(dt.datetime.now(dt.UTC).replace(tzinfo=None))
    scope.session.execute(
        f"UPDATE {HISTORY} SET status = {literal(status)}, finished_at = {finished}, {sets}"
        f"delivery_rate = {literal(delivery_rate)}, error = {literal(error)} "
        f"WHERE sync_id = {literal(scope.sync_id)} AND {_shard(scope.mapping, scope.shard)}"
    )


def mark_interrupted(
    session: WarehouseSession, mapping: str, shard: int, sync_ids: Sequence[str], now: dt.datetime, error: str
) -> None:
    """The ``running`` rows of syncs whose lock was taken over say what happened."""
    session.execute(
        f"UPDATE {HISTORY} SET status = 'interrupted', finished_at = {literal(now)}, error = {literal(error)} "
        f"WHERE {_shard(mapping, shard)} AND sync_id IN {in_list(sync_ids)} AND status = 'running'"
    )


def latest_finished(
    session: WarehouseSession, mappings: Sequence[str], columns: Sequence[str]
) -> list[dict[str, Any]]:
    """``columns`` of the latest finished real row of every shard of every mapping in ``mappings``."""
    listed = _columns(columns)
    return session.query(
        f"SELECT {listed} FROM (SELECT {listed}, row_number() OVER "
        "(PARTITION BY mapping, shard ORDER BY finished_at DESC, started_at DESC) AS rn "
        f"FROM {HISTORY} WHERE {_REAL_FINISHED} AND mapping IN {in_list(sorted(mappings))}"
        ") AS latest WHERE rn = 1"
    ).dicts()


def finished_since(
    session: WarehouseSession, mappings: Sequence[str], since: dt.datetime, columns: Sequence[str]
) -> list[dict[str, Any]]:
    """``columns`` of every finished real row of ``mappings`` that finished at or after ``since``."""
    return session.query(
        f"SELECT {_columns(columns)} FROM {HISTORY} WHERE {_REAL_FINISHED} AND finished_at >= {literal(since)} "
        f"AND mapping IN {in_list(sorted(mappings))}"
    ).dicts()


def _columns(columns: Sequence[str]) -> str:
    return ", ".join(ident(c) for c in columns)
