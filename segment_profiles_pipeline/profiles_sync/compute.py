"""Run the Profiles Sync compilation: append to the ``_updates`` tables, rebuild the rest.

Every step appends only a difference (profiles, identifiers, acknowledged values, states not
landed yet), so a run interrupted half-way is completed by the next one, and a run with nothing
new appends nothing. The order matters: graph first (traits are placed on canonical profiles),
then the trait log and the sidecar, then the complete-state rows, then the derived tables.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

from segment_profiles_pipeline.identity.compute import IDENTIFY_LOG
from segment_profiles_pipeline.identity.config import IdentityProject
from segment_profiles_pipeline.profiles_sync import compile as sql
from segment_profiles_pipeline.profiles_sync.config import (
    EXTERNAL_ID_MAPPING_UPDATES_COLUMNS,
    ID_GRAPH_UPDATES_COLUMNS,
    PROFILE_TRAITS_UPDATES_SYSTEM,
    schema_of,
    trait_columns,
)
from segment_profiles_pipeline.profiles_sync.sources import DDL, TRAIT_LOG, TRAIT_SOURCES
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.state import ensure_state
from segment_profiles_pipeline.sync.engine import mapped_columns
from segment_profiles_pipeline.sync.plan import PlanSpec
from segment_profiles_pipeline.traits.compute import scratch_tables, transaction, utc_naive
from segment_profiles_pipeline.warehouse.base import WarehouseSession, ident, literal

RAW_COLUMNS = {
    "id_graph_updates": ID_GRAPH_UPDATES_COLUMNS,
    "external_id_mapping_updates": EXTERNAL_ID_MAPPING_UPDATES_COLUMNS,
    "profile_traits_updates": PROFILE_TRAITS_UPDATES_SYSTEM,
}


@dataclass(frozen=True)
class ProfilesSyncStats:
    """What one run did (the assets' metadata)."""

    appended: dict[str, int]  # raw table → rows appended this run
    trait_columns: dict[str, str]  # trait key → column
    values_logged: int  # acknowledged trait values captured this run
    planned_values: int  # trait values taken from dry runs' outboxes
    unresolved_records: int  # records whose ids no profile holds (their traits are on no profile)
    unrecoverable_records: int  # acknowledged states the model left before a run could read them
    unread_mappings: list[str] = field(default_factory=list)  # mapping (table missing): nothing read
    seconds: float = 0.0


def trait_mappings(mappings: list[MappingSpec]) -> list[MappingSpec]:
    """Every identify mapping sets profile traits: models', computed traits', audiences', predictions'."""
    return [s for s in mappings if s.mapping.action == "identify"]


def _ensure(session: WarehouseSession, schema: str) -> None:
    for statement in DDL:
        session.execute(statement)
    ensure_state(session)  # the ledger, outbox and history read below exist even before any sync
    session.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
    for table, columns in RAW_COLUMNS.items():
        body = ", ".join(f"{name} {kind}" for name, kind in columns)
        session.execute(f"CREATE TABLE IF NOT EXISTS {schema}.{table} ({body})")


def _count(session: WarehouseSession, table: str) -> int:
    return int(session.query(f"SELECT count(*) FROM {table}").scalar() or 0)


def _max_seq(session: WarehouseSession, table: str) -> int:
    return int(session.query(f"SELECT coalesce(max(seq), 0) FROM {table}").scalar() or 0)


def _uuid_ts(session: WarehouseSession, schema: str, now: dt.datetime) -> dt.datetime:
    """This run's ``uuid_ts``: now, or just after the latest landed one if the clock is behind it,
    so ``uuid_ts`` never goes backwards and ``uuid_ts > max(uuid_ts)`` always finds the new rows."""
    last = session.query(
        " UNION ALL ".join(f"SELECT max(uuid_ts) AS t FROM {schema}.{table}" for table in RAW_COLUMNS)
    ).rows
    stamps = [r[0] for r in last if r[0] is not None]
    return max([now, *(s + dt.timedelta(microseconds=1) for s in stamps)])


def _trait_columns(session: WarehouseSession, schema: str) -> list[str]:
    """The trait columns of ``profile_traits_updates``, in the order they appeared."""
    return [c for c, _ in session.columns(schema, "profile_traits_updates")][
        len(PROFILE_TRAITS_UPDATES_SYSTEM) :
    ]


def _log_acknowledged(session: WarehouseSession, spec: MappingSpec, create) -> int | None:
    """Copy the acknowledged values of one mapping into the log; None when its table is missing."""
    schema, table = spec.source.table.split(".")
    column_types = dict(session.columns(schema, table))
    if not column_types:
        return None
    mapped = mapped_columns(spec, list(column_types))
    plan = PlanSpec(
        spec.mapping,
        spec.source.table,
        spec.source.primary_key,
        mapped,
        column_types=tuple((c, column_types[c]) for c in mapped),
    )
    traits = [
        (key, f.column.lower(), column_types[f.column.lower()], (f.nulls or spec.mapping.nulls) == "skip")
        for key, f in spec.mapping.trait_columns(list(column_types)).items()
    ]
    if not traits:
        return 0
    scratch = create(f"_ps_acked_{spec.mapping.name}", sql.acknowledged_sql(plan))
    before = _count(session, TRAIT_LOG)
    session.execute(sql.log_sql(spec.mapping.name, scratch, traits))
    return _count(session, TRAIT_LOG) - before


def _planned(session: WarehouseSession, spec: MappingSpec) -> str | None:
    """The dry-run values of one mapping (its latest sync's outbox, when that sync was a dry run)."""
    schema, table = spec.source.table.split(".")
    columns = [c for c, _ in session.columns(schema, table)]
    keys = list(spec.mapping.trait_columns(columns)) if columns else list(spec.mapping.traits)
    return sql.planned_sql(spec.mapping.name, keys) if keys else None


def compute_profiles_sync(
    session: WarehouseSession, identity: IdentityProject, mappings: list[MappingSpec], now: dt.datetime
) -> ProfilesSyncStats:
    """Bring the ``profiles_sync`` schema up to date with the identity tables and the sync state."""
    started = time.perf_counter()
    schema = schema_of(identity)
    _ensure(session, schema)
    stamp = literal(_uuid_ts(session, schema, utc_naive(now)))
    has_log = session.table_exists(*IDENTIFY_LOG.split("."))
    raw = {table: f"{schema}.{table}" for table in RAW_COLUMNS}
    before = {table: _count(session, name) for table, name in raw.items()}

    graph = raw["id_graph_updates"]
    created, moved = sql.id_graph_updates_sql(graph, _max_seq(session, graph), stamp, has_log)
    session.execute(created)
    session.execute(moved)
    ids = raw["external_id_mapping_updates"]
    session.execute(sql.external_id_mapping_updates_sql(ids, _max_seq(session, ids), stamp, has_log))

    specs = trait_mappings(mappings)
    with scratch_tables(session) as create:
        logged = {spec.mapping.name: _log_acknowledged(session, spec, create) for spec in specs}
        planned = [p for p in (_planned(session, spec) for spec in specs) if p]
        candidates = create("_ps_candidates", sql.candidates_sql(planned))
        with transaction(session):
            session.execute(f"DELETE FROM {TRAIT_SOURCES}")
            session.execute(f"INSERT INTO {TRAIT_SOURCES} {sql.per_source_sql(candidates)}")
        sources: dict[str, list[str]] = {}
        for trait, source in session.query(
            f"SELECT DISTINCT trait, source FROM {candidates} WHERE segment_id IS NOT NULL"
        ).rows:
            sources.setdefault(trait, []).append(source)
        columns = trait_columns(sources)
        counts = session.query(
            "SELECT count(*) FILTER (WHERE dry_run), "
            f"count(DISTINCT CASE WHEN segment_id IS NULL THEN source || ':' || record_key END) FROM {candidates}"
        ).rows[0]
        traits_table = raw["profile_traits_updates"]
        landed = _trait_columns(session, schema)
        for column in columns.values():  # a trait seen for the first time becomes a column
            if column not in landed:
                session.execute(f"ALTER TABLE {traits_table} ADD COLUMN {ident(column)} VARCHAR")
        gone = [c for c in landed if c not in columns.values()]
        state = create("_ps_state", sql.state_sql(candidates, columns, gone))
        session.execute(
            sql.profile_traits_updates_sql(
                traits_table, state, _trait_columns(session, schema), _max_seq(session, traits_table), stamp
            )
        )
    for statement in sql.current_sql(schema, _trait_columns(session, schema)).values():
        session.execute(statement)
    return ProfilesSyncStats(
        appended={table: _count(session, name) - before[table] for table, name in raw.items()},
        trait_columns=columns,
        values_logged=sum(v for v in logged.values() if v),
        planned_values=int(counts[0] or 0),
        unresolved_records=int(counts[1] or 0),
        unrecoverable_records=int(
            session.query(
                sql.unrecoverable_sql([name for name, n in logged.items() if n is not None])
            ).scalar()
            or 0
        ),
        unread_mappings=sorted(name for name, v in logged.items() if v is None),
        seconds=time.perf_counter() - started,
    )
