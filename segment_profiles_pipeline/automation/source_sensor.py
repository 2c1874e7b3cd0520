"""Source-change sensor: refresh models, traits and syncs when a warehouse source table changes.

It watches the source tables the models and traits read, and the tables of ``upstream.yml``
(a dbt model's, another pipeline's): those a mapping syncs directly. Each tick fingerprints
every watched table cheaply, through a read-only session that never takes the write lock:

- DuckDB: row count plus the maximum of a timestamp column (``updated_at``, ``received_at`` or
  ``timestamp``, the first one present): one aggregate query over all tables, answered from
  DuckDB's column statistics and a single column scan;
- Snowflake: ``information_schema.tables`` (``row_count`` and ``last_altered``): metadata only,
  no table is scanned.

The fingerprints live in the sensor's cursor (JSON). The first tick only records them; later
ticks request one run for the assets downstream of the source tables whose fingerprint changed,
and for the syncs (and what follows them) of the changed ``upstream.yml`` tables: never the
producing project's own assets, such as dbt models built on the table (dbt rebuilds those). An
edit that keeps the row count and leaves every timestamp column alone is invisible on DuckDB;
the mappings' schedules still pick it up. The tables a dbt project reads itself (its
``sources:``) are not watched: this project never sees the dbt manifest (docs/decisions.md).

Held back from those runs: syncs of disabled or ``manual`` mappings (a person starts those), of
sharded mappings (their partitions run on their schedule, see ``schedules.py``) and of mappings
with ``on_upstream_change`` (their automation condition follows the refreshed model, see
``conditions.py``).
"""

import hashlib
import json
import operator
from collections.abc import Mapping, Sequence
from functools import reduce

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultSensorStatus,
    ResourceParam,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.vocabulary import DEFAULT_KEYS, AssetKeys
from segment_profiles_pipeline.warehouse.base import (
    Warehouse,
    WarehouseBusy,
    WarehouseSession,
    ident,
    in_list,
)

TIMESTAMP_COLUMNS = ("updated_at", "received_at", "timestamp")
MISSING = "missing"
CURSOR_VERSION = 1
CHANGED_TAG = "segment_profiles/changed_sources"


def table_name(schema: str | None, table: str) -> str:
    return f"{schema or 'main'}.{table}".lower()


def timestamp_column(columns: Sequence[str]) -> str | None:
    """The column whose maximum moves when rows are added or updated, if the table has one."""
    present = {c.lower() for c in columns}
    return next((c for c in TIMESTAMP_COLUMNS if c in present), None)


def duckdb_fingerprint_sql(tables: Mapping[str, str | None]) -> str:
    """One query: (name, row count, max timestamp) per table; ``tables`` maps name → timestamp column."""
    parts = []
    for name, column in sorted(tables.items()):
        latest = f'CAST(max("{column}") AS VARCHAR)' if column else "CAST(NULL AS VARCHAR)"
        parts.append(
            f"SELECT '{ident(name)}' AS name, count(*) AS row_count, {latest} AS latest FROM {ident(name)}"
        )
    return "\nUNION ALL\n".join(parts)


def snowflake_fingerprint_sql(names: Sequence[str]) -> str:
    return (
        "SELECT lower(table_schema) || '.' || lower(table_name) AS name, row_count, "
        "CAST(last_altered AS VARCHAR) AS latest FROM information_schema.tables "
        f"WHERE lower(table_schema) || '.' || lower(table_name) IN {in_list(sorted(names))}"
    )


def fingerprints(session: WarehouseSession, names: Sequence[str]) -> dict[str, str]:
    """Fingerprint of every table in ``names`` (``schema.table``, lower-case); absent tables are ``missing``."""
    found: dict[str, str] = dict.fromkeys(names, MISSING)
    if session.dialect == "snowflake":
        rows = session.query(snowflake_fingerprint_sql(names)).rows
        found.update({name: f"rows={count};altered={latest}" for name, count, latest in rows})
        return found
    columns: dict[str, list[str]] = {}
    for name, column in session.query(
        "SELECT lower(table_schema) || '.' || lower(table_name), lower(column_name) FROM information_schema.columns "
        f"WHERE lower(table_schema) || '.' || lower(table_name) IN {in_list(sorted(names))}"
    ).rows:
        columns.setdefault(name, []).append(column)
    if columns:
        sql = duckdb_fingerprint_sql({name: timestamp_column(cols) for name, cols in columns.items()})
        for name, count, latest in session.query(sql).rows:
            found[name] = f"rows={count};max={latest}"
    return found


def changed_tables(previous: Mapping[str, str] | None, current: Mapping[str, str]) -> list[str]:
    """Tables whose fingerprint differs from the last one seen; nothing on the first tick.

    A table the cursor has never seen (a newly declared source) is recorded, not a change.
    """
    if previous is None:
        return []
    return sorted(name for name, fp in current.items() if name in previous and previous[name] != fp)


def load_cursor(cursor: str | None) -> dict[str, str] | None:
    """The fingerprints of the last tick, or None when there is none (or it cannot be read)."""
    if not cursor:
        return None
    try:
        data = json.loads(cursor)
    except ValueError:
        return None
    if (
        not isinstance(data, dict)
        or data.get("version") != CURSOR_VERSION
        or not isinstance(data.get("tables"), dict)
    ):
        return None
    return {str(k): str(v) for k, v in data["tables"].items()}


def dump_cursor(current: Mapping[str, str]) -> str:
    return json.dumps({"version": CURSOR_VERSION, "tables": dict(sorted(current.items()))})


def held_back_syncs(mappings: Sequence[MappingSpec], keys: AssetKeys = DEFAULT_KEYS) -> list[AssetKey]:
    """Sync assets a source change must not start: disabled, manual or sharded mappings, and those
    following their upstream (their automation condition syncs them once the sensor's run has
    refreshed what they read)."""
    return [
        keys.sync(s)
        for s in mappings
        if not s.mapping.enabled or not s.mapping.schedule.scheduled or s.mapping.shards > 1
    ]


def watched_tables(
    source_tables: Sequence[tuple[str | None, str]],
    mappings: Sequence[MappingSpec],
    keys: AssetKeys = DEFAULT_KEYS,
) -> dict[str, AssetSelection]:
    """Each table to fingerprint (``schema.table``, lower-case) → what a change of it refreshes.

    A source table: everything downstream of its asset. A table of ``upstream.yml``: the syncs
    of its mappings and what follows them. Its producing asset (a dbt model) belongs to another
    project, whose other assets built on it are that project's to refresh, so the selection
    starts at the syncs rather than at that asset. A table that is both joins the two."""
    watched: dict[str, AssetSelection] = {}
    selections = [
        (
            table_name(schema, table),
            AssetSelection.assets(keys.source(schema, table)).downstream(include_self=False),
        )
        for schema, table in source_tables
    ] + [
        (s.source.table, AssetSelection.assets(keys.sync(s)).downstream())
        for s in mappings
        if s.source.external
    ]
    for name, selection in selections:
        watched[name] = watched[name] | selection if name in watched else selection
    return watched


def build_source_sensor(
    source_tables: Sequence[tuple[str | None, str]],
    mappings: Sequence[MappingSpec],
    keys: AssetKeys = DEFAULT_KEYS,
    *,
    name: str = "source_change_sensor",
    minimum_interval_seconds: int = 30,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
) -> SensorDefinition:
    """The sensor over ``source_tables`` ((schema, table) pairs, as the models read them) and the
    ``upstream.yml`` tables of ``mappings``."""
    watched = watched_tables(source_tables, mappings, keys)
    target = reduce(operator.or_, watched.values(), AssetSelection.assets()) - AssetSelection.assets(
        *held_back_syncs(mappings, keys)
    )

    @sensor(
        name=name,
        target=target,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Requests a run of the models, traits and syncs downstream of a source table whose row "
        "count or latest timestamp changed, and of the syncs of a changed upstream.yml table (a dbt model's; "
        "the tables dbt itself reads are not watched: a change there reaches the sync once dbt rebuilds the "
        "model). Reads the warehouse read-only; skips while a writer holds it.",
    )
    def source_change(
        context: SensorEvaluationContext, warehouse: ResourceParam[Warehouse]
    ) -> SensorResult | SkipReason:
        previous = load_cursor(context.cursor)
        try:
            with warehouse.read_only_session() as session:
                current = fingerprints(session, sorted(watched))
        except WarehouseBusy as exc:
            context.log.info(f"skipped: {exc}")
            return SkipReason(f"cannot read the warehouse now, will look again next tick: {exc}")
        cursor = dump_cursor(current)
        if previous is None:
            return SensorResult(
                cursor=cursor,
                skip_reason=SkipReason(f"first tick: recorded fingerprints of {len(current)} source tables"),
            )
        changed = changed_tables(previous, current)
        if not changed:
            return SensorResult(cursor=cursor, skip_reason=SkipReason("no source table changed"))
        assert context.repository_def is not None  # the daemon always evaluates sensors in their repository
        selection = reduce(operator.or_, (watched[t] for t in changed)) & target
        assets = sorted(
            selection.resolve(context.repository_def.asset_graph), key=lambda k: k.to_user_string()
        )
        if not assets:
            return SensorResult(
                cursor=cursor, skip_reason=SkipReason(f"{', '.join(changed)} changed; nothing reads them")
            )
        context.log.info(
            f"changed: {', '.join(changed)}; refreshing {', '.join(k.to_user_string() for k in assets)}"
        )
        # The same change never launches twice, even if the daemon re-evaluates a tick.
        run_key = hashlib.sha256(
            json.dumps([[t, previous[t], current[t]] for t in changed]).encode()
        ).hexdigest()[:32]
        return SensorResult(
            cursor=cursor,
            run_requests=[
                RunRequest(
                    run_key=run_key, asset_selection=assets, tags={CHANGED_TAG: ",".join(changed)[:200]}
                )
            ],
        )

    return source_change
