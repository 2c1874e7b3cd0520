"""Small, UI-friendly Dagster metadata for warehouse tables (row count, schema, preview).

Metadata lives in the event log forever, so previews are capped (Segment's model Preview
shows 10 records; so do we) and long values are cut.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from dagster import MetadataValue, TableColumn, TableSchema

from segment_profiles_pipeline.warehouse.base import WarehouseSession, ident

PREVIEW_ROWS = 10
MAX_CELL = 60


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
