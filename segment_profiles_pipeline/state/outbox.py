"""``_segment_profiles.outbox``: the payloads a dry run would have sent (the latest dry run per mapping).

Rejected records are kept too, as ``operation = 'rejected'`` with ``{"reason": ..., "reason_code":
...}`` as the message, so a dry run shows what a real sync would refuse without touching the retry state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import orjson

from segment_profiles_pipeline.state.failed_records import ReasonCode
from segment_profiles_pipeline.state.schema import STATE_SCHEMA, SyncScope
from segment_profiles_pipeline.warehouse.base import WarehouseSession, literal

OUTBOX = f"{STATE_SCHEMA}.outbox"
REJECTED = "rejected"
"""The ``operation`` of a row that holds a rejected record's reason instead of a message."""

DDL = f"""CREATE TABLE IF NOT EXISTS {OUTBOX} (
    mapping VARCHAR NOT NULL,
    sync_id VARCHAR NOT NULL,
    record_key VARCHAR NOT NULL,
    operation VARCHAR NOT NULL,
    message VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
)"""


class OutboxRow(NamedTuple):
    """One message a dry run would have sent: the record, its plan operation and the JSON text."""

    key: str
    operation: str
    message: str


def ensure(session: WarehouseSession) -> None:
    session.execute(DDL)


def rejected_row(key: str | None, reason_code: ReasonCode, reason: str) -> OutboxRow:
    """The outbox row of a record a dry run rejected (a null key is stored as the empty string)."""
    return OutboxRow(
        key or "", REJECTED, orjson.dumps({"reason": reason, "reason_code": reason_code}).decode()
    )


def write(scope: SyncScope, rows: Sequence[OutboxRow]) -> None:
    """Append this dry run's rows."""
    if not rows:
        return
    import pyarrow as pa  # ~0.2 s, paid by a dry run, not by each definitions load

    n = len(rows)
    data = pa.table(
        {
            "mapping": [scope.mapping] * n,
            "sync_id": [scope.sync_id] * n,
            "record_key": [r.key for r in rows],
            "operation": [r.operation for r in rows],
            "message": [r.message for r in rows],
            "created_at": pa.array([scope.now.replace(tzinfo=None)] * n, type=pa.timestamp("us")),
        }
    )
    scope.session.load(OUTBOX, data)


def clear(scope: SyncScope) -> None:
    """The outbox holds the latest dry run of a mapping only."""
    scope.session.execute(f"DELETE FROM {OUTBOX} WHERE mapping = {scope.mapping_sql}")


def rejected_of_sync(
    session: WarehouseSession, mapping: str, sync_id: str, limit: int
) -> list[tuple[str, str | None, str]]:
    """(record_key, reason_code, reason) of the first ``limit`` records the dry run ``sync_id``
    rejected, by key (``reason_code`` is None in rows written before outbox rows had one)."""
    rows = session.query(
        f"SELECT record_key, message {_rejected(mapping, sync_id)} ORDER BY record_key LIMIT {int(limit)}"
    ).rows
    messages = [(str(key), orjson.loads(message)) for key, message in rows]
    return [(key, m.get("reason_code"), str(m.get("reason", ""))) for key, m in messages]


def rejected_count(session: WarehouseSession, mapping: str, sync_id: str) -> int:
    return int(session.query(f"SELECT count(*) {_rejected(mapping, sync_id)}").scalar() or 0)


def _rejected(mapping: str, sync_id: str) -> str:
    return (
        f"FROM {OUTBOX} WHERE mapping = {literal(mapping)} AND sync_id = {literal(sync_id)} "
        f"AND operation = {literal(REJECTED)}"
    )
