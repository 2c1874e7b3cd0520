"""Hand-built event tables and trait files for the traits tests."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa

from segment_profiles_pipeline.identity.compute import compute_identity
from segment_profiles_pipeline.identity.config import load_identity
from segment_profiles_pipeline.traits.compute import TraitsRunStats, compute_traits
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


def resolve(session: WarehouseSession, project: TraitsProject, now: dt.datetime) -> None:
    """Resolve identities over the project's event tables (the real identity layer, with the rules
    of the project's folder: Segment's defaults unless the test writes an identity.yml)."""
    compute_identity(session, load_identity(project.path.parent), project.event_tables(), [], now)


def compute(
    session: WarehouseSession, project: TraitsProject, now: dt.datetime, full_refresh: bool = False
) -> TraitsRunStats:
    """What a run of the asset graph does: the identity graph, then the traits on its profiles."""
    resolve(session, project, now)
    return compute_traits(session, project, now, full_refresh)


def profile_name(row: dict[str, Any]) -> str:
    """A readable, hand-writable name for a profile row: ``user:<user_id>`` or ``anon:<anonymous_id>``
    (its send target); ``profile_key`` itself is a hash (the canonical segment_id)."""
    return f"user:{row['user_id']}" if row["user_id"] is not None else f"anon:{row['anonymous_id']}"


def table_rows(session: WarehouseSession, table: str = "traits.computed_traits") -> dict[str, dict[str, Any]]:
    """A traits-shaped table as {profile name: {column: value}} (names from ``profile_name``)."""
    rows = session.query(f"SELECT * FROM {table}").dicts()
    named = {profile_name(r): r for r in rows}
    assert len(named) == len(rows), "two profiles share a send target"
    return named
