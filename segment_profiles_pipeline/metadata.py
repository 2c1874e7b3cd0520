"""Small, UI-friendly Dagster metadata for warehouse tables (row count, schema, preview).

Metadata lives in the event log forever, so previews are capped (Segment's model Preview
shows 10 records; so do we) and long values are cut.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import MetadataValue, TableColumn, TableSchema

from segment_profiles_pipeline.warehouse.base import WarehouseSession, ident

PREVIEW_ROWS = 10
MAX_CELL = 60
NAMESPACE = "segment_profiles"
"""Prefix of the sync's own metadata keys, as ``segment_profiles/dry_run`` is of its run tag."""


def namespaced(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The project's keys as ``segment_profiles/<key>``; Dagster's own ``dagster/…`` keys unchanged.

    A sync's metadata sits next to what Dagster and other integrations write on the same asset
    (and what a translator adds): a namespace keeps ``status`` or ``mode`` from meaning two things.
    """
    return {key if "/" in key else f"{NAMESPACE}/{key}": value for key, value in metadata.items()}


def _cell(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, dt.datetime):
        value = value.isoformat()
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> MetadataValue:
    if not rows:
        return MetadataValue.md("*no rows*")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return MetadataValue.md("\n".join(lines))


def table_metadata(session: WarehouseSession, table: str) -> dict[str, Any]:
    """Row count, column schema and a 10-row preview of ``schema.table``."""
    schema, name = ident(table).split(".")
    columns = session.columns(schema, name)
    rows = session.query(f"SELECT count(*) FROM {table}").scalar()
    preview = session.query(f"SELECT * FROM {table} LIMIT {PREVIEW_ROWS}")
    return {
        "dagster/table_name": table,
        "dagster/row_count": MetadataValue.int(int(rows)),
        "dagster/column_schema": MetadataValue.table_schema(
            TableSchema(columns=[TableColumn(name=c, type=t) for c, t in columns])
        ),
        "preview": markdown_table(preview.columns, preview.rows),
    }
