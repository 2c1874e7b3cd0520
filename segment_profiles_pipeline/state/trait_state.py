"""The computed traits' state in ``_segment_profiles``: every table, its DDL, reads and writes.

Callers (``traits/compute.py``) hand this module typed values and the names of relations they
staged (a scratch table, or a query the traits compiler produced for the rows to store), never
statements or conditions. The tables:

- ``trait_watermarks``: one row per event table: its high-water mark, the rows seen, the
  fingerprint of the compiled SQL and the run time (``WatermarkRow``);
- ``trait_profile_map``: the identifier map the stored traits were computed with (``MAP_COLUMNS``:
  identifier → canonical profile, and the identifier's ``seq``, which decides the send target);
  the next run diffs the graph against it (``stage_changed``) instead of re-reading every event;
- ``trait_pending_identifiers``: identifiers held by counted events that the stored map lacked
  (the event arrived before the graph saw it, or the identifier is blocked or was demoted). When
  one of them enters the graph, the events holding it may move to another profile; an identifier
  new to the graph and not pending is on no counted event, so no old event needs to be read;
- ``trait_state__<schema>__<table>``: per-profile state of a windowless event table (counts,
  sums, min/max, first/last values with their order keys), one row per profile;
- ``trait_values__<trait key>``: (profile, value) → matching events, for value traits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass
from typing import Any, NewType

from segment_profiles_pipeline.state.schema import STATE_SCHEMA
from segment_profiles_pipeline.warehouse.base import WarehouseSession, ident, literal

WATERMARKS = f"{STATE_SCHEMA}.trait_watermarks"
PROFILE_MAP = f"{STATE_SCHEMA}.trait_profile_map"
PENDING = f"{STATE_SCHEMA}.trait_pending_identifiers"
STATE_PREFIX = "trait_state__"
VALUES_PREFIX = "trait_values__"
MAP_COLUMNS = ("external_id_type", "external_id_value", "profile_key", "seq", "_hash")
"""Columns of the stored identifier map, and of the run's staged map it is compared with
(``_hash``: the warehouse's 64-bit hash of the other four)."""
IDENTIFIER_COLUMNS = MAP_COLUMNS[:2]
VALUE_COLUMNS = ("profile_key", "_value", "_n")
TARGET_TYPES = ("user_id", "anonymous_id")
"""Identifier types a send target is made of (``profile_keys.targets_sql``)."""

Relation = NewType("Relation", str)
"""A table name, or a parenthesized query from the traits compiler, holding rows to store."""
Scratch = Callable[[str, str], str]
"""Creates a working table of the run from a SELECT and returns its name (``compute.scratch_tables``)."""

_WATERMARKS_DDL = f"""CREATE TABLE IF NOT EXISTS {WATERMARKS} (
    event_table VARCHAR NOT NULL,
    watermark_column VARCHAR NOT NULL,
    high_water VARCHAR,
    rows_seen BIGINT NOT NULL,
    definition_fingerprint VARCHAR NOT NULL,
    computed_at TIMESTAMP NOT NULL
)"""


@dataclass(frozen=True)
class WatermarkRow:
    """What one run saw of one event table."""

    event_table: str
    watermark_column: str
    high_water: str | None  # ISO text of max(watermark column); None for an empty table
    rows_seen: int
    definition_fingerprint: str
    computed_at: dt.datetime


def state_table(schema: str, table: str) -> str:
    """Per-profile state of the windowless event table ``schema.table``."""
    return f"{STATE_SCHEMA}.{STATE_PREFIX}{schema}__{table}"


def values_table(trait_key: str) -> str:
    """(profile, value) → number of matching events, for a most_frequent / unique_list(_count) trait."""
    return f"{STATE_SCHEMA}.{VALUES_PREFIX}{trait_key}"


def ensure(session: WarehouseSession) -> None:
    """The schema and the watermarks table (the other tables are written by full rebuilds)."""
    session.execute(f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}")
    session.execute(_WATERMARKS_DDL)


def read_watermarks(session: WarehouseSession) -> dict[str, dict[str, Any]]:
    """The last run's row per event table (empty: no state yet, or a rebuild was interrupted)."""
    return {r["event_table"]: r for r in session.query(f"SELECT * FROM {WATERMARKS}").dicts()}


def forget_watermarks(session: WarehouseSession) -> None:
    """Forget every mark: until new ones are written, the next run rebuilds everything."""
    session.execute(f"DELETE FROM {WATERMARKS}")


def write_watermarks(session: WarehouseSession, rows: Sequence[WatermarkRow]) -> None:
    forget_watermarks(session)
    values = ", ".join("(" + ", ".join(literal(v) for v in astuple(row)) + ")" for row in rows)
    session.execute(f"INSERT INTO {WATERMARKS} VALUES {values}")


def missing_tables(session: WarehouseSession, tables: Iterable[str]) -> list[str]:
    """Which of ``tables`` (the run's state tables) and the map and pending tables do not exist,
    or (the map) lack a column this version stores: an incremental run needs them all."""
    missing = [t for t in (*tables, PROFILE_MAP, PENDING) if not session.table_exists(*t.split("."))]
    if PROFILE_MAP not in missing:
        stored = {c for c, _ in session.columns(*PROFILE_MAP.split("."))}
        if not set(MAP_COLUMNS) <= stored:
            missing.append(f"{PROFILE_MAP} (columns {', '.join(MAP_COLUMNS)})")
    return missing


def rebuild(session: WarehouseSession, table: str, rows: Relation) -> None:
    """Replace a per-profile state table by ``rows`` (a full rebuild)."""
    session.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM {rows}")


def replace_rows(
    session: WarehouseSession,
    table: str,
    keys: Sequence[str],
    columns: Sequence[str],
    rows: str,
    redo: str | None,
) -> None:
    """Replace the rows of a state table that the scratch table ``rows`` has (matched on ``keys``)
    with ``rows``, after removing every row of the profiles in the scratch table ``redo``:
    recomputed from their events, they may have lost values, or all their events to another copy."""
    if redo:
        session.execute(f"DELETE FROM {table} WHERE profile_key IN (SELECT profile_key FROM {redo})")
    match = " AND ".join(f"t.{key} = r.{key}" for key in keys)
    session.execute(f"DELETE FROM {table} AS t USING {rows} AS r WHERE {match}")
    names = ", ".join(columns)
    session.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {rows}")


def drop_stale(session: WarehouseSession, keep: Iterable[str]) -> None:
    """Drop the per-profile state tables not in ``keep`` (traits or tables the definitions lost)."""
    current = {t.split(".")[1].lower() for t in keep}
    stored = session.query(
        "SELECT lower(table_name) FROM information_schema.tables "
        f"WHERE lower(table_schema) = {literal(STATE_SCHEMA)} AND (starts_with(lower(table_name), "
        f"{literal(STATE_PREFIX)}) OR starts_with(lower(table_name), {literal(VALUES_PREFIX)}))"
    )
    for (name,) in stored.rows:
        if name not in current:
            session.execute(f"DROP TABLE IF EXISTS {STATE_SCHEMA}.{ident(name)}")


def store_map(session: WarehouseSession, id_map: str, pending: Relation) -> None:
    """A full rebuild's map (the run's staged ``id_map``) and the identifiers its events hold that
    the map lacks (``pending``: rows of ``IDENTIFIER_COLUMNS``)."""
    columns = ", ".join(MAP_COLUMNS)
    session.execute(f"CREATE OR REPLACE TABLE {PROFILE_MAP} AS SELECT {columns} FROM {id_map}")
    identifiers = ", ".join(IDENTIFIER_COLUMNS)
    session.execute(f"CREATE OR REPLACE TABLE {PENDING} AS SELECT DISTINCT {identifiers} FROM {pending}")


def stage_changed(scratch: Scratch, id_map: str) -> str:
    """Identifiers whose row differs between this run's map and the stored one: new to the graph,
    moved by a merge, gone, or with another ``seq``; one row per identifier, with ``profile_key``
    and ``seq`` (now; null when gone), ``stored_profile_key`` (before; null when new), ``in_graph``
    and ``stored``.

    The rows are compared by ``_hash``: two anti-joins on one integer instead of joining every
    identifier's strings (less than half the time at a million identifiers); only the differing rows
    are then matched by identifier. A change hidden by a 64-bit hash collision with another row
    (about 1 in 10^9 per run at a million identifiers) would go unseen until a full refresh."""
    on = " AND ".join(f"o.{c} = n.{c}" for c in IDENTIFIER_COLUMNS)
    return scratch(
        "_traits_changed",
        f"WITH n AS (SELECT * FROM {id_map} AS c WHERE NOT EXISTS "
        f"(SELECT 1 FROM {PROFILE_MAP} AS s WHERE s._hash = c._hash)),\n"
        f"o AS (SELECT * FROM {PROFILE_MAP} AS s WHERE NOT EXISTS "
        f"(SELECT 1 FROM {id_map} AS c WHERE c._hash = s._hash))\n"
        f"SELECT {', '.join(f'coalesce(n.{c}, o.{c}) AS {c}' for c in IDENTIFIER_COLUMNS)}, "
        "n.profile_key, n.seq, n._hash, o.profile_key AS stored_profile_key, "
        "n.external_id_type IS NOT NULL AS in_graph, o.external_id_type IS NOT NULL AS stored\n"
        f"FROM n FULL JOIN o ON {on}",
    )


def stage_moving(scratch: Scratch, changed: str) -> str:
    """The changed identifiers a counted event may hold: those the stored map had (merged, gone)
    and pending ones that entered the graph. An identifier new to the graph that no counted event
    held (a new user's) moves nothing, so the run reads no old event for it."""
    on = " AND ".join(f"p.{c} = c.{c}" for c in IDENTIFIER_COLUMNS)
    return scratch(
        "_traits_moving",
        f"SELECT c.external_id_type, c.external_id_value FROM {changed} AS c "
        f"WHERE c.stored OR EXISTS (SELECT 1 FROM {PENDING} AS p WHERE {on})",
    )


def stage_retarget_candidates(scratch: Scratch, changed: str) -> str:
    """Profiles (before and after) of the changed user_id / anonymous_id rows: the only profiles
    whose send target can differ from the stored one."""
    types = ", ".join(literal(t) for t in TARGET_TYPES)
    return scratch(
        "_traits_retarget_candidates",
        f"SELECT profile_key FROM {changed} WHERE external_id_type IN ({types}) AND profile_key IS NOT NULL\n"
        f"UNION SELECT stored_profile_key FROM {changed} "
        f"WHERE external_id_type IN ({types}) AND stored_profile_key IS NOT NULL",
    )


def update_map(session: WarehouseSession, changed: str, still_pending: Relation) -> None:
    """Store this run's map for the changed identifiers only (the rest is equal already), and the
    pending identifiers: those that stay outside the graph, plus ``still_pending`` (the new events'
    identifiers this run's map lacks)."""
    on = " AND ".join(f"t.{c} = c.{c}" for c in IDENTIFIER_COLUMNS)
    session.execute(f"DELETE FROM {PROFILE_MAP} AS t USING {changed} AS c WHERE {on}")
    columns = ", ".join(MAP_COLUMNS)
    session.execute(f"INSERT INTO {PROFILE_MAP} ({columns}) SELECT {columns} FROM {changed} WHERE in_graph")
    session.execute(f"DELETE FROM {PENDING} AS t USING {changed} AS c WHERE c.in_graph AND {on}")
    identifiers = ", ".join(IDENTIFIER_COLUMNS)
    session.execute(
        f"INSERT INTO {PENDING} ({identifiers}) SELECT DISTINCT {identifiers} FROM {still_pending} AS n "
        f"WHERE NOT EXISTS (SELECT 1 FROM {PENDING} AS t WHERE "
        + " AND ".join(f"t.{c} = n.{c}" for c in IDENTIFIER_COLUMNS)
        + ")"
    )
