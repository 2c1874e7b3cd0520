"""Run compiled traits and audiences in the warehouse: full rebuilds, incremental merges, state.

Incremental runs rest on one invariant: a profile's traits depend only on its own events (and
on the run time, through windows). When the only change since the last run is new events
(rows above the stored high-water mark of the watermark column), an incremental run:

- for each table without windowed traits, merges the state of the new events into the stored
  per-profile state (counts and sums add up, min/max and first/last compare, value counts add
  up), so it costs about the new events, not the profiles' history. Deduplication by message id
  stays exact: a new message that also has an older copy may change which copy counts, so the
  profiles of all its copies are recomputed from their events instead (rare);
- for each table with a windowed trait, recomputes from their events the profiles that own a
  copy of a new message, plus those with an event the windows' lower edge passed;

then rewrites the traits rows of every affected profile, which gives exactly what a full rebuild
would. Anything else (changed definitions or column types, rows that appeared below the
watermark or disappeared, a run time earlier than the last one, no state yet) falls back to a
full rebuild, which is always correct. State lives in ``_segment_profiles``
(``trait_watermarks`` and the per-profile state tables), next to the sync state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.config import EXTERNAL_ID_TABLE, ID_GRAPH_TABLE, load_identity
from segment_profiles_pipeline.state import trait_state
from segment_profiles_pipeline.state.schema import STATE_SCHEMA
from segment_profiles_pipeline.state.trait_state import VALUE_COLUMNS, Relation, Scratch, WatermarkRow
from segment_profiles_pipeline.traits.compiler import (
    ID_MAP,
    TARGETS,
    CompiledTraits,
    IncrementalScope,
    compile_audiences,
    compile_traits,
    values_table,
)
from segment_profiles_pipeline.traits.config import (
    AUDIENCES_TABLE,
    TRAITS_SCHEMA,
    TRAITS_TABLE,
    TraitsProject,
)
from segment_profiles_pipeline.warehouse.base import WarehouseSession, transaction

STATE_TABLE = trait_state.WATERMARKS
NEXT_AUDIENCES = f"{AUDIENCES_TABLE}__next"
NO_PROFILES = "SELECT CAST(NULL AS VARCHAR) AS profile_key WHERE FALSE"


@dataclass(frozen=True)
class TraitsRunStats:
    """What one computation did; the asset reports it as metadata, the benchmark times it."""

    mode: str  # "full" or "incremental"
    reason: str  # why a full rebuild was needed, or what the incremental run picked up
    rows: int  # profiles in the traits table afterwards
    profiles_recomputed: int  # profiles whose row was rewritten or removed
    profiles_from_history: int  # of those, profiles whose events were read again (windows, id copies, moves)
    new_events: int  # rows above the previous high-water marks (all rows on a full rebuild)
    unresolved_events: int  # of those rows, how many the identity graph gives no profile (not counted)
    profiles_moved: int  # profiles that gained or lost events through the graph since the last run
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
def scratch_tables(session: WarehouseSession) -> Iterator[Scratch]:
    """Working tables for one run, dropped when it ends. On DuckDB they are TEMP tables (in memory,
    never written to the file); Snowflake cannot create unqualified temporary tables in a session
    without a current schema, so there they are ordinary tables in the state schema."""
    created: list[str] = []

    def create(name: str, select: str) -> str:
        table = name if session.dialect == "duckdb" else f"{STATE_SCHEMA}.{name}"
        kind = "TEMP TABLE" if session.dialect == "duckdb" else "TABLE"
        session.execute(f"CREATE OR REPLACE {kind} {table} AS {select}")
        created.append(table)
        return table

    try:
        yield create
    finally:
        for table in created:
            session.execute(f"DROP TABLE IF EXISTS {table}")


def _split(table: str) -> tuple[str, str]:
    schema, name = table.split(".")
    return schema, name


def compile_in(session: WarehouseSession, traits: TraitsProject) -> CompiledTraits:
    """Compile against the warehouse's current columns and the identity rules of the same models
    folder (which columns are identifiers). Raises ConfigError naming the problem."""
    rules = load_identity(traits.path.parent).rules
    return compile_traits(traits, {t: dict(session.columns(*t)) for t in traits.event_tables()}, rules)


def require_graph(session: WarehouseSession, traits: TraitsProject, table: str, step: str) -> None:
    """Traits are keyed on identity-resolved profiles: without the graph there are none."""
    if not session.table_exists(*_split(table)):
        raise ConfigError(
            f"{table} does not exist, so {step} cannot key events on identity-resolved profiles.",
            file=traits.file,
            field="traits",
            fix="materialize the identity graph first (asset group `identity`, upstream of computed_traits).",
        )


def compute_traits(
    session: WarehouseSession, traits: TraitsProject, now: dt.datetime, full_refresh: bool = False
) -> TraitsRunStats:
    """Bring ``traits.computed_traits`` up to date as of ``now``: incrementally when that is exact."""
    started = time.perf_counter()
    now = utc_naive(now)
    compiled = compile_in(session, traits)
    fingerprint = compiled.fingerprint()
    require_graph(session, traits, EXTERNAL_ID_TABLE, "computed_traits")
    trait_state.ensure(session)
    session.execute(f"CREATE SCHEMA IF NOT EXISTS {TRAITS_SCHEMA}")
    previous = trait_state.read_watermarks(session)
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
        elif before is not None and int(snapshot["total_rows"]) - int(snapshot["newer_rows"]) != int(
            before["rows_seen"]
        ):
            reason = (
                f"{table.name} changed below the high-water mark (late-loaded or deleted events): "
                f"{int(snapshot['total_rows']) - int(snapshot['newer_rows'])} rows at or below it, "
                f"{before['rows_seen']} at the last run"
            )
        else:
            high_water[table.name] = mark

    state = [
        WatermarkRow(
            name,
            compiled.watermark_column,
            snap["high_water"].isoformat() if snap["high_water"] is not None else None,
            int(snap["total_rows"]),
            fingerprint,
            now,
        )
        for name, snap in snapshots.items()
    ]
    with scratch_tables(session) as scratch:
        # This run's view of the graph, staged once: every statement keys events through it, and
        # the stored map is updated from it, so the two never disagree.
        compiled = dataclasses.replace(compiled, id_map=scratch(ID_MAP, compiled.graph_map_sql()))
        if reason is not None:
            compiled = dataclasses.replace(compiled, targets=scratch(TARGETS, compiled.targets_for(None)))
            unresolved = sum(
                _count(session, f"({compiled.unresolved_sql(t, t.name)})") for t in compiled.tables
            )
            _rebuild(session, compiled, now, state, scratch)
            rows = _count(session, TRAITS_TABLE)
            new_events = sum(int(s["total_rows"]) for s in snapshots.values())
            return TraitsRunStats(
                "full", reason, rows, rows, rows, new_events, unresolved, 0, time.perf_counter() - started
            )
        return _incremental(session, compiled, previous, snapshots, high_water, state, now, scratch, started)


def _incremental(
    session: WarehouseSession,
    compiled: CompiledTraits,
    previous: dict[str, dict],
    snapshots: dict[str, dict],
    high_water: dict[str, dt.datetime],
    state: list[WatermarkRow],
    now: dt.datetime,
    scratch: Scratch,
    started: float,
) -> TraitsRunStats:
    """Merge the new events, and recompute the profiles the graph changed since the last run:
    those that gained or lost events (merges, newly resolved identifiers) from their history, and
    those whose send target changed (a user_id added) from their state.

    Everything per profile or per identifier is limited to what changed: the map diff is one join,
    old events are read only for identifiers a counted event may hold (``trait_state.stage_moving``),
    targets are recomputed only for profiles whose user_id / anonymous_id rows changed or whose
    row is rewritten, and the new events are keyed through the part of the map they hold."""
    changed = trait_state.stage_changed(scratch, compiled.id_map)
    graph_changed = bool(_count(session, changed))
    moving = trait_state.stage_moving(scratch, changed) if graph_changed else None
    moved = scratch(
        "_traits_moved",
        "\nUNION\n".join(
            f"SELECT profile_key FROM (\n{compiled.moved_sql(t, moving, trait_state.PROFILE_MAP, high_water[t.name])}\n) AS m{t.index}"
            for t in compiled.tables
        )
        if moving and _count(session, moving)
        else NO_PROFILES,
    )
    retargeted = scratch("_traits_retargeted", NO_PROFILES)
    targets = None
    if graph_changed:
        candidates = trait_state.stage_retarget_candidates(scratch, changed)
        targets = scratch("_traits_candidate_targets", compiled.targets_for(candidates))
        retargeted = scratch(
            "_traits_retargeted",
            f"SELECT t.profile_key FROM {TRAITS_TABLE} AS t JOIN {candidates} AS k ON k.profile_key = t.profile_key "
            f"LEFT JOIN {targets} AS g ON g.profile_key = t.profile_key "
            "WHERE t.user_id IS DISTINCT FROM g.user_id OR t.anonymous_id IS DISTINCT FROM g.anonymous_id",
        )
    # The new rows of every table, and the part of the map their identifiers hold: keying them
    # joins a map of about their size instead of every identifier of the graph.
    new_rows = {
        t.name: scratch(f"_traits_new_{t.index}", compiled.new_rows_sql(t, high_water[t.name]))
        for t in compiled.tables
    }
    held = "\nUNION\n".join(f"({compiled.identifiers_sql(t, new_rows[t.name])})" for t in compiled.tables)
    on = " AND ".join(f"m.{c} = h.{c}" for c in trait_state.IDENTIFIER_COLUMNS)
    new_map = scratch(
        "_traits_new_map",
        f"SELECT m.* FROM {compiled.id_map} AS m JOIN (\n{held}\n) AS h ON {on}",
    )
    keyed_new = dataclasses.replace(compiled, id_map=new_map)
    still_pending = Relation(
        "("
        + "\nUNION\n".join(
            f"({keyed_new.unmapped_identifiers_sql(t, new_rows[t.name])})" for t in compiled.tables
        )
        + ")"
    )
    profiles_moved = _count(session, moved)
    new_events = sum(int(s["newer_rows"]) for s in snapshots.values())
    unresolved = sum(
        _count(session, f"({keyed_new.unresolved_sql(t, new_rows[t.name])})")
        for t in compiled.tables
        if int(snapshots[t.name]["newer_rows"])
    )
    graph_moves = profiles_moved + _count(session, retargeted)
    if new_events == 0 and graph_moves == 0 and all(t.stateful for t in compiled.tables):
        with transaction(session):
            trait_state.write_watermarks(session, state)
            trait_state.update_map(session, changed, still_pending)
        rows = _count(session, TRAITS_TABLE)
        return TraitsRunStats(
            "incremental",
            "no new events and no graph change since the last run",
            rows,
            0,
            0,
            0,
            0,
            0,
            time.perf_counter() - started,
        )

    scope = IncrementalScope(
        high_water=high_water, previous_now=min(r["computed_at"] for r in previous.values())
    )
    writes, touched, redone = _merge_new_events(
        compiled, keyed_new, new_rows, scope, now, scratch, session, moved, retargeted
    )
    compiled = dataclasses.replace(
        compiled, targets=_stage_targets(compiled, scratch, touched, retargeted, targets)
    )
    with transaction(session):
        for write in writes:
            write()
        session.execute(
            f"DELETE FROM {TRAITS_TABLE} WHERE profile_key IN (SELECT profile_key FROM {touched})"
        )
        columns = ", ".join(compiled.columns)
        session.execute(f"INSERT INTO {TRAITS_TABLE} ({columns}) {compiled.select(now, touched)}")
        trait_state.write_watermarks(session, state)
        trait_state.update_map(session, changed, still_pending)
    recomputed = _count(session, touched)
    from_history = redone if all(t.stateful for t in compiled.tables) else recomputed
    return TraitsRunStats(
        "incremental",
        f"{new_events} new event(s), {profiles_moved} profile(s) moved by the identity graph since the last run",
        _count(session, TRAITS_TABLE),
        recomputed,
        from_history,
        new_events,
        unresolved,
        profiles_moved,
        time.perf_counter() - started,
    )


def _stage_targets(
    compiled: CompiledTraits, scratch: Scratch, touched: str, retargeted: str, retargets: str | None
) -> str:
    """The send targets of the ``touched`` profiles. A target only changes with the profile's
    user_id / anonymous_id rows, so a profile with a traits row keeps the target its row holds,
    unless it was ``retargeted`` (then ``retargets`` has the new one; None when the graph did not
    change); only profiles without a row yet are looked up in the map."""
    new_profiles = scratch(
        "_traits_unaddressed",
        f"SELECT profile_key FROM {touched} AS k WHERE NOT EXISTS "
        f"(SELECT 1 FROM {TRAITS_TABLE} AS t WHERE t.profile_key = k.profile_key)",
    )
    return scratch(
        TARGETS,
        f"SELECT t.profile_key, t.user_id, t.anonymous_id FROM {TRAITS_TABLE} AS t "
        f"WHERE t.profile_key IN (SELECT profile_key FROM {touched}) "
        f"AND t.profile_key NOT IN (SELECT profile_key FROM {retargeted})\n"
        + (
            f"UNION ALL SELECT profile_key, user_id, anonymous_id FROM {retargets} "
            f"WHERE profile_key IN (SELECT profile_key FROM {retargeted})\n"
            if retargets
            else ""
        )
        + f"UNION ALL SELECT * FROM (\n{compiled.targets_for(new_profiles)}\n) AS n",
    )


def _merge_new_events(
    compiled: CompiledTraits,
    keyed_new: CompiledTraits,
    new_rows: dict[str, str],
    scope: IncrementalScope,
    now: dt.datetime,
    scratch: Scratch,
    session: WarehouseSession,
    moved: str,
    retargeted: str,
) -> tuple[list[Callable[[], None]], str, int]:
    """Stage the next state rows of the profiles the new events touch (in scratch tables, so the
    transaction only moves rows). Returns the writes that store them, the scratch table of every
    profile whose traits row must be rewritten, and how many profiles were recomputed from their
    events because a new message also had an older copy or the graph moved their events.

    ``keyed_new`` keys the new rows (through the part of the map they hold); ``compiled`` keys
    everything else (older copies, profiles' histories) through the whole map."""
    writes: list[Callable[[], None]] = []
    touched: list[str] = [f"SELECT profile_key FROM {t}" for t in (moved, retargeted)]
    redone = 0
    for table in compiled.tables:
        if not table.stateful:
            continue
        mark = scope.high_water[table.name]
        new = new_rows[table.name]
        old_copies = scratch(f"_traits_old_copies_{table.index}", compiled.old_copies_sql(table, new, mark))
        redo = scratch(
            f"_traits_redo_{table.index}",
            f"{compiled.redo_sql(table, old_copies)}\nUNION\nSELECT profile_key FROM {moved}"
            if _count(session, old_copies)
            else f"SELECT profile_key FROM {moved}",
        )
        fresh = keyed_new.fresh_sql(table, new, redo)
        # Value traits read the new events too: deduplicate them once.
        fresh = (
            scratch(f"_traits_fresh_{table.index}", fresh) if table.value_traits else f"(\n{fresh}\n) AS f"
        )
        state_select = compiled.merge_sql(table, fresh)
        history = None
        if redo_count := _count(session, redo):
            redone += redo_count
            history = scratch(f"_traits_history_{table.index}", compiled.history_sql(table, redo))
            state_select += f"\nUNION ALL\n{compiled.state_sql(table, history)}"
        next_state = scratch(f"_traits_next_{table.index}", state_select)
        writes.append(
            functools.partial(
                trait_state.replace_rows,
                session,
                table.state_table,
                ["profile_key"],
                table.state_columns,
                next_state,
                redo if history else None,
            )
        )
        for trait in table.value_traits:
            values_select = compiled.values_merge_sql(table, trait, fresh)
            if history:
                values_select += f"\nUNION ALL\n{compiled.values_sql(table, trait, history)}"
            next_values = scratch(f"_traits_next_{trait.key}", values_select)
            writes.append(
                functools.partial(
                    trait_state.replace_rows,
                    session,
                    values_table(trait),
                    VALUE_COLUMNS[:2],
                    VALUE_COLUMNS,
                    next_values,
                    redo if history else None,
                )
            )
        touched += [f"SELECT profile_key FROM {t}" for t in (next_state, redo)]
    windowed = compiled.touched_by_windows(now, scope)
    if windowed:
        touched.append(windowed)
    return writes, scratch("_traits_touched", "\nUNION\n".join(touched)), redone


def _rebuild(
    session: WarehouseSession,
    compiled: CompiledTraits,
    now: dt.datetime,
    state: list[WatermarkRow],
    scratch: Scratch,
) -> None:
    """Full rebuild: the state tables from every event, then the traits table from them, and the
    identifier map they were keyed with (with the identifiers their events hold that it lacks)."""
    # Forget the watermarks first: on warehouses where DDL commits (Snowflake), a crash halfway would
    # otherwise leave new state tables under old watermarks, and the next run would merge events twice.
    trait_state.forget_watermarks(session)
    sources: dict[int, str] = {}
    for table in compiled.tables:
        if table.stateful:
            events = compiled.events_sql(table, table.name)
            # Value traits read the same deduplicated events as the state table: deduplicate once.
            sources[table.index] = (
                scratch(f"_traits_events_{table.index}", events)
                if table.value_traits
                else f"(\n{events}\n) AS e"
            )
    pending = Relation(
        "("
        + "\nUNION\n".join(f"({compiled.unmapped_identifiers_sql(t, t.name)})" for t in compiled.tables)
        + ")"
    )
    with transaction(session):
        for table in compiled.tables:
            if not table.stateful:
                continue
            source = sources[table.index]
            trait_state.rebuild(
                session, table.state_table, Relation(f"({compiled.state_sql(table, source)})")
            )
            for trait in table.value_traits:
                trait_state.rebuild(
                    session, values_table(trait), Relation(f"({compiled.values_sql(table, trait, source)})")
                )
        session.execute(f"CREATE OR REPLACE TABLE {TRAITS_TABLE} AS {compiled.select(now)}")
        trait_state.store_map(session, compiled.id_map, pending)
        trait_state.drop_stale(session, compiled.state_tables)
        trait_state.write_watermarks(session, state)


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
    missing = trait_state.missing_tables(session, compiled.state_tables)
    if missing:
        return f"state table(s) {', '.join(missing)} missing"
    if any(r["computed_at"] > now for r in previous.values()):
        return "this run's time is earlier than the last run's, so windows cannot move forward"
    return None


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
    if previous:
        require_graph(session, traits, ID_GRAPH_TABLE, "audiences")
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
        rows=int(counts[0] or 0),
        members={k: int(counts[1 + 2 * i] or 0) for i, k in enumerate(keys)},
        exited={k: int(counts[2 + 2 * i] or 0) for i, k in enumerate(keys)},
        seconds=time.perf_counter() - started,
    )
