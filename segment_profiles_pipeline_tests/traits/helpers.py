"""Hand-built event tables and trait files for the traits tests."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa

from segment_profiles_pipeline.traits.config import TraitsProject, load_traits
from segment_profiles_pipeline.warehouse.base import WarehouseSession

T0 = dt.datetime(2026, 1, 1)
BASE_TYPES: dict[str, pa.DataType] = {
    "id": pa.string(),
    "user_id": pa.string(),
    "anonymous_id": pa.string(),
    "timestamp": pa.timestamp("us"),
    "received_at": pa.timestamp("us"),
}


def ev(
    msg_id: str, user: str | None = None, anon: str | None = None, minute: int = 0, **props: Any
) -> dict[str, Any]:
    """One event row: ``minute`` after T0 (timestamp); received one second later unless given."""
    row = {
        "id": msg_id,
        "user_id": user,
        "anonymous_id": anon,
        "timestamp": T0 + dt.timedelta(minutes=minute),
        "received_at": props.pop("received_at", T0 + dt.timedelta(minutes=minute, seconds=1)),
    }
    row.update(props)
    return row


def load_events(
    session: WarehouseSession,
    table: str,
    rows: list[dict[str, Any]],
    types: dict[str, pa.DataType] | None = None,
    *,
    create: bool = True,
) -> None:
    """Create (or append to) ``schema.table``; property columns are text unless typed in ``types``."""
    types = {**BASE_TYPES, **(types or {})}
    columns = list(dict.fromkeys(c for r in rows for c in r))
    data = pa.table({c: pa.array([r.get(c) for r in rows], type=types.get(c, pa.string())) for c in columns})
    session.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
    session.load(table, data, create=create)


def traits_file(folder: Path, text: str) -> TraitsProject:
    """Write ``computed_traits.yml`` into ``folder`` and load it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "computed_traits.yml").write_text(textwrap.dedent(text).lstrip())
    project = load_traits(folder)
    assert project is not None
    return project


def table_rows(session: WarehouseSession, table: str = "traits.computed_traits") -> dict[str, dict[str, Any]]:
    """A traits-shaped table as {profile_key: {column: value}}."""
    return {r["profile_key"]: r for r in session.query(f"SELECT * FROM {table}").dicts()}
