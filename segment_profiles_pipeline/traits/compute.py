"""Run compiled traits and audiences in the warehouse: full rebuilds, incremental merges, state.

Incremental runs rest on one invariant: a profile's traits depend only on its own events (and
on the run time, through windows). So when the only change since the last run is new events
(rows above the stored high-water mark of the watermark column), recomputing the profiles
that own a copy of a new message, plus those with an event the windows' lower edge passed,
and replacing their rows gives exactly what a full rebuild would. Anything else (changed
definitions or column types, rows that appeared below the watermark or disappeared, a run
time earlier than the last one, no state yet) falls back to a full rebuild, which is always
correct. State lives in ``_segment_profiles.trait_watermarks``, next to the sync state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from segment_profiles_pipeline.errors import ConfigError, WarehouseError
from segment_profiles_pipeline.sync.state import STATE_SCHEMA
from segment_profiles_pipeline.traits.compiler import (
    CompiledTraits,
    IncrementalScope,
    compile_audiences,
    compile_traits,
)
from segment_profiles_pipeline.traits.config import (
    AUDIENCES_TABLE,
    TRAITS_SCHEMA,
    TRAITS_TABLE,
    TraitsProject,
)
from segment_profiles_pipeline.warehouse.base import WarehouseSession, literal

STATE_TABLE = f"{STATE_SCHEMA}.trait_watermarks"
DELTA_TABLE = f"{TRAITS_TABLE}__delta"
NEXT_AUDIENCES = f"{AUDIENCES_TABLE}__next"
STATE_DDL = f"""CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
    event_table VARCHAR NOT NULL,
    watermark_column VARCHAR NOT NULL,
    high_water VARCHAR,
    rows_seen BIGINT NOT NULL,
    definition_fingerprint VARCHAR NOT NULL,
    computed_at TIMESTAMP NOT NULL
)"""


@dataclass(frozen=True)
class TraitsRunStats:
    """What one computation did; the asset reports it as metadata, the benchmark times it."""

    mode: str  # "full" or "incremental"
    reason: str  # why a full rebuild was needed, or what the incremental run picked up
    rows: int  # profiles in the traits table afterwards
    profiles_recomputed: int
    new_events: int  # rows above the previous high-water marks (all rows on a full rebuild)
    seconds: float


@dataclass(frozen=True)
class AudiencesRunStats:
    rows: int
    members: dict[str, int] = field(default_factory=dict)
    exited: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def utc_naive(moment: dt.datetime) -> dt.datetime:
    """Run times are stored and compared as naive UTC."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


@contextlib.contextmanager
def transaction(session: WarehouseSession) -> Iterator[None]:
    """Make the table change and its state row one unit: a crash leaves neither."""
    session.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        with contextlib.suppress(WarehouseError):
            session.execute("ROLLBACK")
        raise
    session.execute("COMMIT")


def _split(table: str) -> tuple[str, str]:
    schema, name = table.split(".")
    return schema, name


def compile_in(session: WarehouseSession, traits: TraitsProject) -> CompiledTraits:
    """Compile against the warehouse's current columns (raises ConfigError naming the problem)."""
    return compile_traits(traits, {t: dict(session.columns(*t)) for t in traits.event_tables()})


def compute_traits(
    session: WarehouseSession, traits: TraitsProject, now: dt.datetime, full_refresh: bool = False
) -> TraitsRunStats:
    """Bring ``traits.computed_traits`` up to date as of ``now``: incrementally when that is exact."""
    started = time.perf_counter()
    now = utc_naive(now)
    compiled = compile_in(session, traits)
    fingerprint = compiled.fingerprint()
    for statement in (
        f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}",
        STATE_DDL,
        f"CREATE SCHEMA IF NOT EXISTS {TRAITS_SCHEMA}",
    ):
        session.execute(statement)
    previous = {r["event_table"]: r for r in session.query(f"SELECT * FROM {STATE_TABLE}").dicts()}
    reason = _full_rebuild_reason(session, compiled, previous, fingerprint, now, full_refresh)

    snapshots: dict[str, dict] = {}
    high_water: dict[str, dt.datetime] = {}
    for table in compiled.tables:
        before = previous.get(table.name)
        mark = dt.datetime.fromisoformat(before["high_water"]) if before and before["high_water"] else None
        snapshot = session.query(compiled.stats_sql(table, mark if reason is None else None)).dicts()[0]
        snapshots[table.name] = snapshot
        if reason is not None:
            continue
        if mark is None:
            reason = f"{table.name} was empty at the last run"
        elif int(snapshot["total_rows"]) - int(snapshot["newer_rows"]) != int(before["rows_seen"]):
            reason = (
                f"{table.name} changed below the high-water mark (late-loaded or deleted events): "
                f"{int(snapshot['total_rows']) - int(snapshot['newer_rows'])} rows at or below it, "
                f"{before['rows_seen']} at the last run"
            )
        else:
            high_water[table.name] = mark

    state = [
        (
            name,
            compiled.watermark_column,
            snap["high_water"].isoformat() if snap["high_water"] is not None else None,
            int(snap["total_rows"]),
            fingerprint,
            now,
        )
        for name, snap in snapshots.items()
    ]
    if reason is not None:
        with transaction(session):
            session.execute(f"CREATE OR REPLACE TABLE {TRAITS_TABLE} AS {compiled.select(now)}")
            _write_state(session, state)
        rows = _count(session, TRAITS_TABLE)
        new_events = sum(int(s["total_rows"]) for s in snapshots.values())
        return TraitsRunStats("full", reason, rows, rows, new_events, time.perf_counter() - started)

    new_events = sum(int(s["newer_rows"]) for s in snapshots.values())
    if new_events == 0 and not any(t.windows for t in compiled.tables):
        with transaction(session):
            _write_state(session, state)
        rows = _count(session, TRAITS_TABLE)
        return TraitsRunStats(
            "incremental", "no new events since the last run", rows, 0, 0, time.perf_counter() - started
        )

    previous_now = min(r["computed_at"] for r in previous.values())
    scope = IncrementalScope(high_water=high_water, previous_now=previous_now)
    columns = ", ".join(compiled.columns)
    session.execute(f"CREATE OR REPLACE TABLE {DELTA_TABLE} AS {compiled.select(now, scope)}")
    try:
        recomputed = _count(session, DELTA_TABLE)
        with transaction(session):
            session.execute(
                f"DELETE FROM {TRAITS_TABLE} WHERE profile_key IN (SELECT profile_key FROM {DELTA_TABLE})"
            )
            session.execute(f"INSERT INTO {TRAITS_TABLE} ({columns}) SELECT {columns} FROM {DELTA_TABLE}")
            _write_state(session, state)
    finally:
        session.execute(f"DROP TABLE IF EXISTS {DELTA_TABLE}")
    return TraitsRunStats(
        "incremental",
        f"{new_events} new event(s) since the last run",
        _count(session, TRAITS_TABLE),
        recomputed,
        new_events,
        time.perf_counter() - started,
    )


def _full_rebuild_reason(
    session: WarehouseSession,
    compiled: CompiledTraits,
    previous: dict[str, dict],
    fingerprint: str,
    now: dt.datetime,
    full_refresh: bool,
) -> str | None:
    """Why this run must rebuild everything, or None when an incremental run is exact."""
    if full_refresh:
        return "full refresh requested"
    existing = [c for c, _ in session.columns(*_split(TRAITS_TABLE))]
    if not existing:
        return f"{TRAITS_TABLE} does not exist yet"
    if existing != compiled.columns:
        return f"{TRAITS_TABLE} has other columns than the definitions"
    if not previous:
        return "no watermark state yet"
    if {r["definition_fingerprint"] for r in previous.values()} != {fingerprint} or set(previous) != {
        t.name for t in compiled.tables
    }:
        return "trait definitions (or event column types) changed since the last run"
    if any(r["computed_at"] > now for r in previous.values()):
        return "this run's time is earlier than the last run's, so windows cannot move forward"
    return None


def _write_state(session: WarehouseSession, rows: list[tuple]) -> None:
    session.execute(f"DELETE FROM {STATE_TABLE}")
    values = ", ".join("(" + ", ".join(literal(v) for v in row) + ")" for row in rows)
    session.execute(f"INSERT INTO {STATE_TABLE} VALUES {values}")


def _count(session: WarehouseSession, table: str) -> int:
    return int(session.query(f"SELECT count(*) FROM {table}").scalar() or 0)


def compute_audiences(session: WarehouseSession, traits: TraitsProject) -> AudiencesRunStats:
    """Rebuild ``traits.audiences`` from the traits table (and joined models), keeping past members."""
    started = time.perf_counter()
    traits_columns = dict(session.columns(*_split(TRAITS_TABLE)))
    if not traits_columns:
        raise ConfigError(
            f"{TRAITS_TABLE} does not exist, so audiences have nothing to evaluate.",
            file=traits.file,
            field="audiences",
            fix="materialize computed_traits first.",
        )
    models = {name: dict(session.columns("models", name)) for name in traits.joined_models()}
    previous = dict(session.columns(*_split(AUDIENCES_TABLE))) or None
    sql = compile_audiences(traits, traits_columns, models, previous)
    session.execute(f"CREATE OR REPLACE TABLE {NEXT_AUDIENCES} AS {sql}")
    try:
        with transaction(session):
            session.execute(f"CREATE OR REPLACE TABLE {AUDIENCES_TABLE} AS SELECT * FROM {NEXT_AUDIENCES}")
    finally:
        session.execute(f"DROP TABLE IF EXISTS {NEXT_AUDIENCES}")
    keys = [a.key for a in traits.audiences]
    counts = session.query(
        "SELECT count(*), "
        + ", ".join(f"count(*) FILTER (WHERE {k}), count(*) FILTER (WHERE NOT {k})" for k in keys)
        + f" FROM {AUDIENCES_TABLE}"
    ).rows[0]
    return AudiencesRunStats(
        rows=int(counts[0]),
        members={k: int(counts[1 + 2 * i]) for i, k in enumerate(keys)},
        exited={k: int(counts[2 + 2 * i]) for i, k in enumerate(keys)},
        seconds=time.perf_counter() - started,
    )
