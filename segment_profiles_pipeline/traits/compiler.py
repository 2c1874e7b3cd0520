"""Compile computed traits and audiences into warehouse SQL (DuckDB dialect). Pure: no I/O.

The compiler takes the validated definitions plus the warehouse's column types (looked up by
the caller at run time) and returns SQL strings. Keeping it pure makes every semantic rule
testable on its own and lets the fingerprint of the SQL stand for "the definitions changed".

An event table without windowed traits is *stateful*: its traits are kept per profile in state
tables (``_segment_profiles.trait_state__<schema>__<table>``: counts, sums, min/max, first/last
values with their event's order key; ``trait_values__<key>``: (profile, value) counts of
most_frequent / unique_list traits). A full run builds them from the events (``state_sql``,
``values_sql``); an incremental run merges the new events' state into them (``merge_sql``,
``values_merge_sql``); the traits query reads them (``a<i>``, the same SQL after either run).

Tables with a windowed trait are computed from their events by the traits query itself:

- ``e<i>``: the needed columns, one row per message ``id`` (first received copy wins);
- ``a<i>``: one row per profile with every trait of the table as a conditional aggregate
  (``count(*) FILTER``, ``arg_max`` over an order key, ``list(DISTINCT)``…);
- ``m<i>_<key>``: most_frequent traits (value counts per profile, best value per profile);

then one row per profile across tables. In incremental mode the query reads only the profiles
listed in a ``touched`` relation, and ``e<i>`` only the messages of those profiles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.config import EXTERNAL_ID_TABLE, ID_GRAPH_TABLE, IdentityRules
from segment_profiles_pipeline.identity.profile_keys import (
    IdentifierColumn,
    identifier_columns,
    resolved_events_sql,
    targets_sql,
)
from segment_profiles_pipeline.state import trait_state
from segment_profiles_pipeline.traits.config import (
    AUDIENCES_TABLE,
    KEY_COLUMNS,
    TEXT_OPERATORS,
    TRAITS_TABLE,
    AndGroup,
    AudienceConfig,
    Condition,
    ConditionNode,
    TraitConfig,
    TraitsProject,
    leaves,
    snake_case,
)
from segment_profiles_pipeline.warehouse.base import ident, literal

Columns = Mapping[str, str]
"""Column name (lower-case) → warehouse type, as ``WarehouseSession.columns`` reports them."""

REQUIRED_EVENT_COLUMNS = ("id", "user_id", "anonymous_id", "timestamp", "received_at")
FINGERPRINT_NOW = dt.datetime(2000, 1, 1)
COMPILER_VERSION = "4"
"""Bump when the generated SQL changes meaning, so stored results are rebuilt once."""

# Events belong to identity-resolved profiles (``identity/profile_keys.py``): ``profile_key`` is
# the canonical segment_id of the event's most trusted identifier in the identifier map; an event
# the map does not hold (all identifiers blocked or empty, or not resolved yet) has none.
HAS_PROFILE = "profile_key IS NOT NULL"
ID_MAP = "_traits_id_map"
"""The run's identifier map (``trait_state.MAP_COLUMNS``), staged by ``compute`` under this name."""
TARGETS = "_traits_targets"
"""The run's send targets (``profile_keys.targets_sql``), staged by ``compute`` under this name."""

VALUE_TYPES = ("most_frequent", "unique_list", "unique_list_count")
"""Traits whose state is a set of (profile, value) counts, in a table of their own."""
ORDER_KEY = (("ts", "_ts", True), ("received_at", "_received_at", True), ("id", "_id", False))
"""Event order (rule 3) as first/last state keeps it: (column suffix, event column, nulls first)."""
NULL_KEY_PARTS = " + ".join(
    f"CASE WHEN {source} IS NULL THEN {2**bit} ELSE 0 END" for bit, (_, source, _) in enumerate(ORDER_KEY)
)
"""Which parts of an event's order key are null, as bits (1: timestamp, 2: received_at, 4: id)."""


def type_family(sql_type: str) -> str:
    """Coarse type of a warehouse column type name: number, text, boolean, timestamp, list or other."""
    t = sql_type.upper()
    if t.endswith("[]") or t.startswith(("ARRAY", "LIST", "STRUCT", "MAP", "OBJECT", "VARIANT")):
        return "list" if t.endswith("[]") or t.startswith(("ARRAY", "LIST")) else "other"
    if "INTERVAL" in t:
        return "other"
    if any(word in t for word in ("INT", "DECIMAL", "NUMERIC", "NUMBER", "DOUBLE", "FLOAT", "REAL")):
        return "number"
    if any(word in t for word in ("CHAR", "TEXT", "STRING")):
        return "text"
    if "BOOL" in t:
        return "boolean"
    if any(word in t for word in ("TIMESTAMP", "DATE", "TIME")):
        return "timestamp"
    return "other"


def _tz_aware(sql_type: str) -> bool:
    t = sql_type.upper()
    return ("TIME ZONE" in t or "TZ" in t) and "NTZ" not in t


def timestamp_literal(value: dt.datetime, tz_aware: bool = False) -> str:
    """A timestamp literal: naive values are UTC; aware ones (or ``tz_aware`` columns) keep the offset."""
    if value.tzinfo is None and not tz_aware:
        return f"CAST('{value.isoformat(sep=' ')}' AS TIMESTAMP)"
    utc = (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    return f"CAST('{utc.isoformat(sep=' ')}' AS TIMESTAMPTZ)"


def _available(columns: Columns) -> str:
    names = list(columns)
    shown = ", ".join(names[:40]) + (f", … ({len(names)} in all)" if len(names) > 40 else "")
    return shown or "(none)"


def condition_sql(node: ConditionNode, subject: Callable[[Condition], str]) -> str:
    """SQL for a condition tree; ``subject`` gives the SQL expression a comparison reads.

    A comparison with a null subject is never true (SQL semantics) except ``not_exists``.
    """
    if isinstance(node, Condition):
        return _comparison(node, subject(node))
    children = node.and_ if isinstance(node, AndGroup) else node.or_
    joiner = " AND " if isinstance(node, AndGroup) else " OR "
    return "(" + joiner.join(condition_sql(child, subject) for child in children) + ")"


def _comparison(leaf: Condition, expr: str) -> str:
    values = leaf.values()
    if not leaf.case_sensitive:
        expr = f"lower({expr})"
        values = [str(v).lower() for v in values]
    op = leaf.operator
    if op == "exists":
        return f"{expr} IS NOT NULL"
    if op == "not_exists":
        return f"{expr} IS NULL"
    if op == "equals_one_of":
        return f"{expr} IN (" + ", ".join(literal(v) for v in values) + ")"
    value = literal(values[0])
    simple = {
        "equals": "=",
        "not_equals": "<>",
        "less_than": "<",
        "greater_than": ">",
        "less_than_or_equal": "<=",
        "greater_than_or_equal": ">=",
    }
    if op in simple:
        return f"{expr} {simple[op]} {value}"
    function = {
        "contains": "contains",
        "not_contains": "contains",
        "starts_with": "starts_with",
        "ends_with": "ends_with",
    }
    call = f"{function[op]}({expr}, {value})"
    return f"NOT {call}" if op == "not_contains" else call


def check_comparison(leaf: Condition, family: str, problem: Callable[[str, str], ConfigError]) -> None:
    """Refuse comparisons the column's type cannot answer the way the user means them."""
    if (leaf.operator in TEXT_OPERATORS or not leaf.case_sensitive) and family != "text":
        raise problem(
            f"operator '{leaf.operator}'{'' if leaf.case_sensitive else ' with case_sensitive: false'} needs a text "
            f"column, but it is {family}",
            "compare with equals / less_than / … instead, or pick a text property",
        )
    for value in leaf.values():
        if isinstance(value, bool) and family != "boolean":
            raise problem(
                f"the value {value!r} is a boolean but the column is {family}", "quote the value in YAML"
            )
        if isinstance(value, int | float) and not isinstance(value, bool) and family != "number":
            raise problem(
                f"the value {value!r} is a number but the column is {family}",
                "quote the value in YAML to compare as text",
            )


@dataclass(frozen=True)
class EventTable:
    """One event table and the traits computed over it, with its columns as the warehouse has them."""

    index: int
    schema: str
    table: str
    columns: Columns
    traits: tuple[TraitConfig, ...]
    identifiers: tuple[IdentifierColumn, ...]  # most trusted first

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def ordered(self) -> bool:
        """True when a first/last trait needs the events' order."""
        return any(t.type in ("first", "last") for t in self.traits)

    @property
    def windows(self) -> list[dt.timedelta]:
        return sorted({t.window.length for t in self.traits if t.window})

    @property
    def stateful(self) -> bool:
        """True when no trait has a window. No event ever leaves such traits, so they are kept as
        per-profile state that incremental runs merge new events into; windowed traits change
        with the run time and are recomputed from the profiles' events instead."""
        return not self.windows

    @property
    def state_table(self) -> str:
        """One row per profile: counts, sums, min/max, first/last values with their order keys."""
        return trait_state.state_table(self.schema, self.table)

    @property
    def value_traits(self) -> tuple[TraitConfig, ...]:
        return tuple(t for t in self.traits if t.type in VALUE_TYPES)

    @property
    def state_columns(self) -> list[str]:
        return ["profile_key", *(column for t in self.traits for column, _ in _state_aggregates(t, None))]

    @property
    def identifier_names(self) -> list[str]:
        """The identifier columns (what key resolution reads)."""
        return [ident(i.column) for i in self.identifiers]

    @property
    def properties(self) -> list[str]:
        """The property columns the traits read (values and conditions), in order of first use."""
        needed: dict[str, None] = {}
        for trait in self.traits:
            if trait.column():
                needed[ident(trait.column() or "")] = None
            for leaf in leaves(trait.conditions):
                needed[ident(snake_case(leaf.property or ""))] = None
        return list(needed)

    def boundary(self, moment: dt.datetime) -> str:
        """Literal of ``moment`` typed to compare with this table's ``timestamp`` column."""
        return timestamp_literal(moment, _tz_aware(self.columns["timestamp"]))


def values_table(trait: TraitConfig) -> str:
    """(profile, value) → number of matching events, for a most_frequent / unique_list(_count) trait."""
    return trait_state.values_table(trait.key)


@dataclass(frozen=True)
class IncrementalScope:
    """What changed since the last run: new messages above each table's watermark, and moved windows."""

    high_water: Mapping[str, dt.datetime]  # event table → max(watermark column) seen by the last run
    previous_now: dt.datetime  # the last run's time (windows were evaluated then)


@dataclass(frozen=True)
class CompiledTraits:
    """The traits of a project compiled against the warehouse's tables."""

    project: TraitsProject
    tables: tuple[EventTable, ...]
    id_map: str = ID_MAP  # the relations compute staged for this run (names differ per warehouse)
    targets: str = TARGETS

    @property
    def identifier_types(self) -> list[str]:
        """Every identifier type an event table holds: the part of the identity graph traits read."""
        return sorted({i.type for t in self.tables for i in t.identifiers})

    @property
    def watermark_column(self) -> str:
        return self.project.config.sources.watermark_column

    @property
    def columns(self) -> list[str]:
        return [*KEY_COLUMNS, *(t.key for t in self.project.traits)]

    @property
    def state_tables(self) -> list[str]:
        """Every state table the traits need (empty when every table has a windowed trait)."""
        return [
            name
            for t in self.tables
            if t.stateful
            for name in (t.state_table, *(values_table(v) for v in t.value_traits))
        ]

    def fingerprint(self) -> str:
        """Changes whenever the computation would: definitions, column types, compiler version."""
        parts = [COMPILER_VERSION, self.watermark_column, self.select(FINGERPRINT_NOW)]
        for table in self.tables:
            if table.stateful:
                parts.append(self.state_sql(table, "e"))
                parts += [self.values_sql(table, trait, "e") for trait in table.value_traits]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

    def stats_sql(self, table: EventTable, high_water: dt.datetime | None) -> str:
        """Row count, high-water mark and rows above the previous high water of one event table."""
        wm = ident(self.watermark_column)
        newer = f"count(*) FILTER (WHERE {wm} > {timestamp_literal(high_water)})" if high_water else "0"
        return (
            f"SELECT count(*) AS total_rows, max({wm}) AS high_water, {newer} AS newer_rows FROM {table.name}"
        )

    def select(self, now: dt.datetime, touched: str | None = None) -> str:
        """The query producing the traits table: all profiles, or only those listed in ``touched``
        (a relation with a ``profile_key`` column). Windowless tables read their state tables."""
        ctes: list[str] = []
        for table in self.tables:
            if table.stateful:
                ctes.append(f"a{table.index} AS (\n{self._finalize(table, touched)}\n)")
                continue
            ctes.append(f"e{table.index} AS (\n{self._events(table, touched)}\n)")
            ctes.append(f"a{table.index} AS (\n{self._aggregate(table, now, touched)}\n)")
            for trait in table.traits:
                if trait.type == "most_frequent":
                    ctes.append(
                        f"{_mf_name(table, trait)} AS (\n{self._most_frequent(table, trait, now, touched)}\n)"
                    )

        # One row per profile across tables: a chain of full joins (cheaper than a union of the keys
        # followed by a left join per table).
        def coalesced(column: str, tables: tuple[EventTable, ...]) -> str:
            names = [f"a{t.index}.{column}" for t in tables]
            return names[0] if len(names) == 1 else f"coalesce({', '.join(names)})"

        first, *others = self.tables
        joins = [
            f"FULL JOIN a{t.index} ON a{t.index}.profile_key = {coalesced('profile_key', self.tables[:n])}"
            for n, t in enumerate(others, start=1)
        ]
        key = coalesced("profile_key", self.tables)
        selects = [f"{key} AS profile_key", "g.user_id", "g.anonymous_id"]
        for trait in self.project.traits:
            table = self._table_of(trait)
            if trait.type == "most_frequent" and not table.stateful:
                name = _mf_name(table, trait)
                joins.append(f"LEFT JOIN {name} ON {name}.profile_key = a{table.index}.profile_key")
                selects.append(f"{name}._value AS {trait.key}")
            else:
                selects.append(f"a{table.index}.{trait.key}")
        # The send target last: it follows the graph (a profile gaining a user_id), not the events.
        joins.append(f"LEFT JOIN {self.targets} AS g ON g.profile_key = {key}")
        return (
            "WITH\n"
            + ",\n".join(ctes)
            + "\nSELECT "
            + ", ".join(selects)
            + f"\nFROM a{first.index}"
            + "".join(f"\n{j}" for j in joins)
        )

    def _table_of(self, trait: TraitConfig) -> EventTable:
        return next(t for t in self.tables if trait in t.traits)

    def touched_by_windows(self, now: dt.datetime, scope: IncrementalScope) -> str | None:
        """Profiles of the windowed tables to recompute from their events: every copy of a new
        message, and events the windows' lower edge passed. None when no table has a window."""
        wm = ident(self.watermark_column)
        parts = []
        for table in self.tables:
            if table.stateful:
                continue
            high_water = scope.high_water[table.name]
            predicates = [f"id IN (SELECT id FROM {table.name} WHERE {wm} > {timestamp_literal(high_water)})"]
            for length in table.windows:
                predicates.append(
                    f"(timestamp >= {table.boundary(scope.previous_now - length)} "
                    f"AND timestamp < {table.boundary(now - length)})"
                )
            rows = (
                f"(SELECT {', '.join(table.identifier_names)} FROM {table.name} WHERE "
                + " OR ".join(predicates)
                + ")"
            )
            parts.append(
                f"SELECT profile_key FROM (\n{resolved_events_sql(rows, table.identifiers, self.id_map)}\n) AS r\n"
                f"WHERE {HAS_PROFILE}"
            )
        return "\nUNION\n".join(parts) or None

    def new_rows_sql(self, table: EventTable, high_water: dt.datetime) -> str:
        """The rows loaded since the last run (the columns ``events_sql`` reads): one filter on the
        watermark column, which grows with loading, so the warehouse skips older blocks by min/max."""
        columns = ", ".join(
            dict.fromkeys([*REQUIRED_EVENT_COLUMNS, *table.identifier_names, *table.properties])
        )
        wm = ident(self.watermark_column)
        return f"SELECT {columns} FROM {table.name} WHERE {wm} > {timestamp_literal(high_water)}"

    def old_copies_sql(self, table: EventTable, new_rows: str, high_water: dt.datetime) -> str:
        """Ids of new messages that also have a copy at or below the mark: one semi-join of the new
        ids against the table's ``id`` column (usually empty)."""
        newer = f"coalesce({ident(self.watermark_column)} > {timestamp_literal(high_water)}, FALSE)"
        return f"SELECT DISTINCT id FROM {table.name} WHERE id IN (SELECT id FROM {new_rows}) AND NOT {newer}"

    def redo_sql(self, table: EventTable, old_copies: str) -> str:
        """Profiles of every copy of the messages in ``old_copies``: the new copy may win
        deduplication over the stored one, so these profiles are recomputed from their events."""
        copies = (
            f"(SELECT {', '.join(table.identifier_names)} FROM {table.name} "
            f"WHERE id IN (SELECT id FROM {old_copies}))"
        )
        return (
            f"SELECT DISTINCT profile_key FROM (\n{resolved_events_sql(copies, table.identifiers, self.id_map)}\n) AS c\n"
            f"WHERE {HAS_PROFILE}"
        )

    def graph_map_sql(self) -> str:
        """This run's identifier map (``trait_state.MAP_COLUMNS``) from the identity graph: the types
        the event tables hold (keys) and those of send targets, with each identifier's ``seq`` and
        a hash of the row, which the next run's diff compares (``trait_state.stage_changed``)."""
        types = ", ".join(literal(t) for t in sorted({*self.identifier_types, *trait_state.TARGET_TYPES}))
        return (
            "SELECT external_id_type, external_id_value, canonical_segment_id AS profile_key, seq, "
            "hash(external_id_type, external_id_value, canonical_segment_id, seq) AS _hash "
            f"FROM {EXTERNAL_ID_TABLE} WHERE external_id_type IN ({types})"
        )

    def targets_for(self, profiles: str | None) -> str:
        """Send targets (``profile_keys.targets_sql``) from this run's map, of every profile or of
        those listed in ``profiles`` (a relation with a ``profile_key`` column)."""
        where = f" WHERE profile_key IN (SELECT profile_key FROM {profiles})" if profiles else ""
        return targets_sql(
            "(SELECT external_id_type, external_id_value, profile_key AS canonical_segment_id, seq "
            f"FROM {self.id_map}{where}) AS m"
        )

    def identifiers_sql(self, table: EventTable, source: str) -> str:
        """(type, value) of every identifier the rows of ``source`` hold (its identifier columns)."""
        return (
            "\nUNION\n".join(
                f"SELECT {literal(i.type)} AS external_id_type, CAST({ident(i.column)} AS VARCHAR) AS external_id_value "
                f"FROM {source} WHERE {ident(i.column)} IS NOT NULL"
                for i in table.identifiers
            )
            or "SELECT CAST(NULL AS VARCHAR) AS external_id_type, CAST(NULL AS VARCHAR) AS external_id_value WHERE FALSE"
        )

    def unmapped_identifiers_sql(self, table: EventTable, source: str) -> str:
        """The identifiers of ``source``'s rows this run's map lacks: per identifier column, the
        rows the map does not match (an anti-join probing the map), then deduplicated; so a full
        run deduplicates the few unmapped values, not every identifier of every event."""
        parts = [
            f"SELECT {literal(i.type)} AS external_id_type, CAST({ident(i.column)} AS VARCHAR) AS external_id_value "
            f"FROM {source} AS r WHERE {ident(i.column)} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {self.id_map} AS m "
            f"WHERE m.external_id_type = {literal(i.type)} AND m.external_id_value = CAST(r.{ident(i.column)} AS VARCHAR))"
            for i in table.identifiers
        ]
        return "\nUNION\n".join(parts) or self.identifiers_sql(table, source)

    def fresh_sql(self, table: EventTable, new_rows: str, redo: str) -> str:
        """The new messages, deduplicated (all their copies are new), of profiles not in ``redo``."""
        return (
            f"SELECT * FROM (\n{self.events_sql(table, new_rows)}\n) AS e\n"
            f"WHERE {HAS_PROFILE} AND profile_key NOT IN (SELECT profile_key FROM {redo})"
        )

    def history_sql(self, table: EventTable, redo: str) -> str:
        """Every event of the profiles in ``redo``, deduplicated against all copies of their messages."""
        events = self.events_sql(
            table, table.name, f"id IN (SELECT id FROM {table.name} WHERE {self._raw_in(table, redo)})"
        )
        return f"SELECT * FROM (\n{events}\n) AS e\nWHERE {_in(redo)}"

    def moved_sql(self, table: EventTable, changed: str, previous_map: str, high_water: dt.datetime) -> str:
        """Profiles that gained or lost events of ``table`` because the graph changed since the last
        run: the events already counted (at or below the high-water mark) holding an identifier in
        ``changed`` (type, value), keyed under ``previous_map`` (the last run's) and under this
        run's map; both profiles of an event whose key differs. A merge moves every event of the
        merged-away profile; a first identifier for an unresolved event gives it a profile."""
        wm = ident(self.watermark_column)
        holds = " OR ".join(
            f"CAST({ident(i.column)} AS VARCHAR) IN (SELECT external_id_value FROM {changed} "
            f"WHERE external_id_type = {literal(i.type)})"
            for i in table.identifiers
        )
        names = ", ".join(table.identifier_names)
        rows = (
            f"(SELECT {names} FROM {table.name} WHERE NOT coalesce({wm} > {timestamp_literal(high_water)}, FALSE) "
            f"AND ({holds}))"
        )
        before = (
            f"(SELECT {names}, profile_key AS _before FROM (\n"
            f"{resolved_events_sql(rows, table.identifiers, previous_map)}\n) AS b)"
        )
        return (
            f"WITH m AS (\n{resolved_events_sql(before, table.identifiers, self.id_map)}\n)\n"
            "SELECT _before AS profile_key FROM m WHERE _before IS NOT NULL AND _before IS DISTINCT FROM profile_key\n"
            "UNION\n"
            "SELECT profile_key FROM m WHERE profile_key IS NOT NULL AND profile_key IS DISTINCT FROM _before"
        )

    def unresolved_sql(self, table: EventTable, source: str) -> str:
        """Rows of ``source`` (copies included) the identifier map gives no profile: all identifiers
        empty or blocked, or not resolved by the graph yet. Reported, never silently dropped."""
        rows = f"(SELECT {', '.join(table.identifier_names)} FROM {source})"
        return (
            f"SELECT profile_key FROM (\n{resolved_events_sql(rows, table.identifiers, self.id_map)}\n) AS r "
            "WHERE profile_key IS NULL"
        )

    def _raw_in(self, table: EventTable, profiles: str) -> str:
        """Raw rows holding an identifier that the map gives to a profile in ``profiles``: a superset
        of those profiles' rows (an event belongs to its most trusted identifier's profile), narrowed
        after deduplication. Each test reads a raw column, so the warehouse can prune."""
        tests = [
            f"CAST({ident(i.column)} AS VARCHAR) IN (SELECT external_id_value FROM {self.id_map} "
            f"WHERE external_id_type = {literal(i.type)} AND profile_key IN (SELECT profile_key FROM {profiles}))"
            for i in table.identifiers
        ]
        return "(" + " OR ".join(tests) + ")"

    def events_sql(self, table: EventTable, source: str, where: str | None = None) -> str:
        """The columns the traits need, one row per message ``id`` of ``source`` (first received copy
        wins), with the ``profile_key`` of the winning copy (null when the identifier map has none)."""
        select = list(table.identifier_names)
        if table.windows or table.ordered:
            select.append("timestamp AS _ts")
        if table.ordered:
            select += ["received_at AS _received_at", "id AS _id"]
        select += [p for p in table.properties if p not in select]
        deduplicated = (
            "(SELECT " + ", ".join(select) + f"\nFROM {source}" + (f"\nWHERE {where}" if where else "") + "\n"
            "QUALIFY row_number() OVER (PARTITION BY id ORDER BY received_at NULLS LAST, timestamp NULLS LAST, "
            "user_id NULLS LAST, anonymous_id NULLS LAST) = 1)"
        )
        return resolved_events_sql(deduplicated, table.identifiers, self.id_map)

    def state_sql(self, table: EventTable, events: str) -> str:
        """A windowless table's per-profile state from deduplicated ``events`` (a relation)."""
        select = ["profile_key"]
        for trait in table.traits:
            select += [f"{agg} AS {column}" for column, agg in _state_aggregates(trait, _condition(trait))]
        return (
            "SELECT "
            + ",\n  ".join(select)
            + f"\nFROM {_profile_rows(table, events, None)}\nGROUP BY profile_key"
        )

    def values_sql(
        self,
        table: EventTable,
        trait: TraitConfig,
        events: str,
        keep: str | None = None,
        now: dt.datetime | None = None,
    ) -> str:
        """Matching events per (profile, non-null value) of ``events`` (windows apply when ``now`` is given)."""
        column = ident(trait.column() or "")
        where = [HAS_PROFILE, f"{column} IS NOT NULL"]
        condition = self._filter(table, trait, now) if now else _condition(trait)
        if condition:
            where.append(f"({condition})")
        if keep:
            where.append(keep)
        return (
            f"SELECT profile_key, {column} AS _value, count(*) AS _n\n"
            f"FROM {events}\nWHERE " + " AND ".join(where) + f"\nGROUP BY profile_key, {column}"
        )

    def merge_sql(self, table: EventTable, fresh: str) -> str:
        """The next state rows of the profiles in ``fresh`` (new deduplicated events): stored state
        combined with the new events' state, so the cost follows the new events, not the history."""
        merged = [f"{expr} AS {column}" for t in table.traits for column, expr in _state_merges(t)]
        return (
            "SELECT d.profile_key"
            + "".join(f",\n  {m}" for m in merged)
            + f"\nFROM (\n{self.state_sql(table, fresh)}\n) AS d\n"
            f"LEFT JOIN {table.state_table} AS s ON s.profile_key = d.profile_key"
        )

    def values_merge_sql(self, table: EventTable, trait: TraitConfig, fresh: str) -> str:
        """The next count of each (profile, value) pair the new events match: stored plus new."""
        return (
            f"SELECT n.profile_key, n._value, n._n + coalesce(v._n, 0) AS _n\nFROM (\n"
            f"{self.values_sql(table, trait, fresh)}\n) AS n\nLEFT JOIN {values_table(trait)} AS v "
            "ON v.profile_key = n.profile_key AND v._value = n._value"
        )

    def _events(self, table: EventTable, touched: str | None) -> str:
        where = (
            f"id IN (SELECT id FROM {table.name} WHERE {self._raw_in(table, touched)})" if touched else None
        )
        return self.events_sql(table, table.name, where)

    def _filter(self, table: EventTable, trait: TraitConfig, now: dt.datetime) -> str | None:
        parts = [c] if (c := _condition(trait)) else []
        if trait.window is not None:
            parts.append(f"_ts >= {table.boundary(now - trait.window.length)}")
        return " AND ".join(parts) or None

    def _aggregate(self, table: EventTable, now: dt.datetime, touched: str | None) -> str:
        select = ["profile_key"]
        for trait in table.traits:
            if trait.type != "most_frequent":
                select.append(f"{_trait_aggregate(trait, self._filter(table, trait, now))} AS {trait.key}")
        keep = _in(touched) if touched else None
        return (
            "SELECT "
            + ",\n  ".join(select)
            + f"\nFROM {_profile_rows(table, f'e{table.index}', keep)}\nGROUP BY profile_key"
        )

    def _most_frequent(
        self, table: EventTable, trait: TraitConfig, now: dt.datetime, touched: str | None
    ) -> str:
        counts = self.values_sql(table, trait, f"e{table.index}", _in(touched) if touched else None, now)
        return f"SELECT profile_key, _value FROM (\n{counts}\n) AS c\n{_best_value(trait)}"

    def _finalize(self, table: EventTable, touched: str | None) -> str:
        """Trait values of a windowless table from its state tables (the same SQL after full and
        incremental runs, so both give identical values)."""
        only = f"profile_key IN (SELECT profile_key FROM {touched})" if touched else None
        selects = ["s.profile_key"]
        joins = []
        for trait in table.traits:
            selects.append(f"{_finalized(trait)} AS {trait.key}")
            if trait.type not in VALUE_TYPES:
                continue
            if trait.type == "most_frequent":
                value = f"SELECT profile_key, _value FROM {values_table(trait)}\n{_best_value(trait, only)}"
            else:
                aggregate = "list_sort(list(_value))" if trait.type == "unique_list" else "count(*)"
                where = f"\nWHERE {only}" if only else ""
                value = (
                    f"SELECT profile_key, {aggregate} AS _value FROM {values_table(trait)}{where}\n"
                    "GROUP BY profile_key"
                )
            joins.append(
                f"LEFT JOIN (\n{value}\n) AS v_{trait.key} ON v_{trait.key}.profile_key = s.profile_key"
            )
        return (
            "SELECT "
            + ", ".join(selects)
            + f"\nFROM {table.state_table} AS s"
            + "".join(f"\n{j}" for j in joins)
            + (f"\nWHERE s.{only}" if only else "")
        )


def _in(profiles: str) -> str:
    """Deduplicated event rows of the profiles in ``profiles``."""
    return f"profile_key IN (SELECT profile_key FROM {profiles})"


def _profile_rows(table: EventTable, events: str, keep: str | None) -> str:
    """The FROM clause over the events that belong to a (kept) profile, with each event's position
    in its profile's history (timestamp, then received_at, then id) when first/last traits need it:
    a small integer key for arg_max/arg_min, cheaper than a composite key and exact on ties."""
    where = HAS_PROFILE + (f" AND {keep}" if keep else "")
    if not table.ordered:
        return f"{events}\nWHERE {where}"
    return (
        f"(SELECT *, row_number() OVER (PARTITION BY profile_key ORDER BY _ts NULLS FIRST, "
        f"_received_at NULLS FIRST, _id) AS _order, {NULL_KEY_PARTS} AS _nulls FROM {events} WHERE {where}) AS o"
    )


def _best_value(trait: TraitConfig, only: str | None = None) -> str:
    """most_frequent over (profile_key, _value, _n) rows: frequent enough, most counted, then smallest."""
    return (
        f"WHERE _n >= {trait.frequency()}{f' AND {only}' if only else ''}\n"
        "QUALIFY row_number() OVER (PARTITION BY profile_key ORDER BY _n DESC, _value) = 1"
    )


def _mf_name(table: EventTable, trait: TraitConfig) -> str:
    return f"m{table.index}_{trait.key}"


def _condition(trait: TraitConfig) -> str | None:
    if trait.conditions is None:
        return None
    return condition_sql(trait.conditions, lambda leaf: ident(snake_case(leaf.property or "")))


def _trait_aggregate(trait: TraitConfig, condition: str | None) -> str:
    """One conditional aggregate per trait type (most_frequent has its own CTE)."""
    where = f" FILTER (WHERE {condition})" if condition else ""
    if trait.type == "event_counter":
        return f"count(*){where}"
    column = ident(trait.column() or "")
    if trait.type == "aggregation":
        return f"{trait.function}({column}){where}"
    if trait.type == "unique_list_count":
        return f"count(DISTINCT {column}){where}"
    if trait.type == "unique_list":
        # Null (not an empty list) when no value matched, on DuckDB and Snowflake alike.
        keep = f"{column} IS NOT NULL" + (f" AND ({condition})" if condition else "")
        return f"CASE WHEN count({column}){where} = 0 THEN NULL ELSE list_sort(list(DISTINCT {column}) FILTER (WHERE {keep})) END"
    # first / last: the value of the earliest / latest matching event that has one. The filter sits in
    # the ordering argument, which both arg_max (DuckDB) and MAX_BY (Snowflake) skip when null.
    return (
        f"{'arg_min' if trait.type == 'first' else 'arg_max'}({column}, {_candidate_order(trait, condition)})"
    )


def _candidate_order(trait: TraitConfig, condition: str | None) -> str:
    """An event's ``_order`` when it can be the trait's first/last event (matching, with a value), else null."""
    column = ident(trait.column() or "")
    return f"CASE WHEN {column} IS NOT NULL{f' AND ({condition})' if condition else ''} THEN _order END"


def _state_aggregates(trait: TraitConfig, condition: str | None) -> list[tuple[str, str]]:
    """(state column, aggregate over a profile's events) of a windowless trait. Each column can be
    merged with the same column over new events (``_state_merges``); value traits keep their state
    in their own table instead."""
    where = f" FILTER (WHERE {condition})" if condition else ""
    if trait.type == "event_counter":
        return [(trait.key, f"count(*){where}")]
    column = ident(trait.column() or "")
    if trait.type == "aggregation":
        return [(f"{trait.key}__{part}", f"{part}({column}){where}") for part in _aggregation_parts(trait)]
    if trait.type not in ("first", "last"):
        return []
    # The value and its event's order key, to compare with new events. arg_max/arg_min skip null
    # arguments, so the winning event's key parts that are null (bits of _nulls) are set explicitly.
    pick = "arg_min" if trait.type == "first" else "arg_max"
    order = _candidate_order(trait, condition)
    out = [(trait.key, f"{pick}({column}, {order})")]
    for bit, (suffix, source, _) in enumerate(ORDER_KEY):
        null = f"{pick}(_nulls, {order}) % {2 ** (bit + 1)} >= {2**bit}"
        out.append(
            (f"{trait.key}__{suffix}", f"CASE WHEN {null} THEN NULL ELSE {pick}({source}, {order}) END")
        )
    return out


def _aggregation_parts(trait: TraitConfig) -> tuple[str, ...]:
    """The mergeable aggregates an aggregation keeps: avg is sum / count."""
    return ("sum", "count") if trait.function == "avg" else (trait.function or "",)


def _state_merges(trait: TraitConfig) -> list[tuple[str, str]]:
    """(state column, merged value) combining a profile's stored state ``s`` (null columns for a new
    profile) with the state ``d`` of its new events, column for column with ``_state_aggregates``."""
    key = trait.key
    if trait.type == "event_counter":
        return [(key, f"coalesce(s.{key}, 0) + d.{key}")]
    if trait.type == "aggregation":
        merged = {
            "sum": "CASE WHEN s.{c} IS NULL THEN d.{c} WHEN d.{c} IS NULL THEN s.{c} ELSE s.{c} + d.{c} END",
            "count": "coalesce(s.{c}, 0) + d.{c}",
            "min": "CASE WHEN s.{c} IS NULL OR d.{c} < s.{c} THEN d.{c} ELSE s.{c} END",
            "max": "CASE WHEN s.{c} IS NULL OR d.{c} > s.{c} THEN d.{c} ELSE s.{c} END",
        }
        return [
            (f"{key}__{part}", merged[part].format(c=f"{key}__{part}")) for part in _aggregation_parts(trait)
        ]
    if trait.type not in ("first", "last"):
        return []
    later, earlier = ("d", "s") if trait.type == "last" else ("s", "d")
    wins = f"d.{key} IS NOT NULL AND (s.{key} IS NULL OR {_after(key, later, earlier)})"
    columns = [key, *(f"{key}__{suffix}" for suffix, _, _ in ORDER_KEY)]
    return [(c, f"CASE WHEN {wins} THEN d.{c} ELSE s.{c} END") for c in columns]


def _after(key: str, a: str, b: str) -> str:
    """True when the event stored in ``a``'s order key of trait ``key`` comes after ``b``'s (rule 3:
    timestamp, then received_at, then id; nulls as the full run's ``_order`` sorts them)."""
    expr = ""
    for suffix, _, nulls_first in reversed(ORDER_KEY):
        x, y = f"{a}.{key}__{suffix}", f"{b}.{key}__{suffix}"
        if nulls_first:
            greater = f"({x} IS NOT NULL AND ({y} IS NULL OR {x} > {y}))"
        else:
            greater = f"({y} IS NOT NULL AND ({x} IS NULL OR {x} > {y}))"
        expr = f"({greater} OR ({x} IS NOT DISTINCT FROM {y} AND {expr}))" if expr else greater
    return expr


def _finalized(trait: TraitConfig) -> str:
    """A trait's value from its state (``s``, and ``v_<key>`` for value traits)."""
    if trait.type == "aggregation":
        if trait.function == "avg":
            return f"s.{trait.key}__sum / s.{trait.key}__count"
        return f"s.{trait.key}__{trait.function}"
    if trait.type == "unique_list_count":
        # 0 once the profile has an event in the table (it has a state row), like count(DISTINCT).
        return f"coalesce(v_{trait.key}._value, 0)"
    if trait.type in VALUE_TYPES:
        return f"v_{trait.key}._value"
    return f"s.{trait.key}"


def compile_traits(
    project: TraitsProject, schemas: Mapping[tuple[str, str], Columns], rules: IdentityRules
) -> CompiledTraits:
    """Check every trait against the warehouse's columns and compile the project.

    ``schemas`` maps each ``project.event_tables()`` entry to its columns (empty when the
    table does not exist); ``rules`` say which columns hold identifiers, most trusted first.
    Raises ConfigError naming the file, trait, problem and fix.
    """
    config = project.config
    tables = []
    for index, (schema, table) in enumerate(project.event_tables(), start=1):
        columns = {name.lower(): sql_type for name, sql_type in schemas.get((schema, table), {}).items()}
        traits = tuple(t for t in project.traits if config.table_for(t.event) == (schema, table))
        first = traits[0]
        if not columns:
            raise ConfigError(
                f"trait '{first.name}': event '{first.event}' is read from table {schema}.{table}, which does not "
                "exist in the warehouse.",
                file=project.file,
                field=f"traits.{first.key}.event",
                fix=f"load the event's table, or map the event to its table under `sources.events` "
                f'(e.g. "{first.event}": {schema}.my_table).',
            )
        missing = [c for c in (*REQUIRED_EVENT_COLUMNS, config.sources.watermark_column) if c not in columns]
        if missing:
            raise ConfigError(
                f"event table {schema}.{table} (read by trait '{first.name}') lacks the column(s) "
                f"{', '.join(missing)} of Segment's warehouse schema; it has: {_available(columns)}.",
                file=project.file,
                field="sources",
                fix="point the event at a Segment track-event table, or set `sources.watermark_column`.",
            )
        for column in ("timestamp", config.sources.watermark_column):
            if type_family(columns[column]) != "timestamp":
                raise ConfigError(
                    f"column '{column}' of event table {schema}.{table} is {columns[column]}, not a timestamp; "
                    "event order, windows and incremental runs need timestamps.",
                    file=project.file,
                    field="sources.watermark_column"
                    if column != "timestamp"
                    else f"traits.{first.key}.event",
                    fix="point the event at a Segment track-event table, or pick a timestamp `sources.watermark_column`.",
                )
        event_table = EventTable(index, schema, table, columns, traits, identifier_columns(rules, columns))
        for trait in traits:
            _check_trait(project, event_table, trait)
        tables.append(event_table)
    return CompiledTraits(project, tuple(tables))


def _check_trait(project: TraitsProject, table: EventTable, trait: TraitConfig) -> None:
    def problem(field: str) -> Callable[[str, str], ConfigError]:
        return lambda message, fix: ConfigError(
            f"trait '{trait.name}': {message}.",
            file=project.file,
            field=f"traits.{trait.key}.{field}",
            fix=fix,
        )

    def family_of(prop: str, field: str) -> str:
        column = snake_case(prop)
        if column not in table.columns:
            raise problem(field)(
                f"property '{prop}' (column '{column}') does not exist in {table.name}; available columns: "
                f"{_available(table.columns)}",
                "use one of the available columns (Segment property names are snake_cased, e.g. channelType → channel_type)",
            )
        return type_family(table.columns[column])

    for leaf in leaves(trait.conditions):
        check_comparison(leaf, family_of(leaf.property or "", "conditions"), problem("conditions"))
    if trait.property is None:
        return
    family = family_of(trait.property, "property")
    if trait.type == "aggregation" and family != "number":
        raise problem("property")(
            f"{trait.function} needs a numeric property, but '{trait.property}' is {table.columns[trait.column() or '']} "
            f"in {table.name}",
            "aggregate a numeric property, or use most_frequent / first / last for text",
        )
    if trait.value_type is not None and family != trait.value_type:
        raise problem("value_type")(
            f"value_type is {trait.value_type}, but column '{trait.column()}' of {table.name} is "
            f"{table.columns[trait.column() or '']}",
            f"set value_type: {family}, or pick a {trait.value_type} property",
        )
    if family in ("list", "other") and trait.type != "event_counter":
        raise problem("property")(
            f"column '{trait.column()}' of {table.name} has type {table.columns[trait.column() or '']}, which "
            "traits cannot compare or order",
            "pick a text, number, boolean or timestamp property",
        )


def compile_audiences(
    project: TraitsProject,
    traits_columns: Columns,
    models: Mapping[str, Columns],
    previous: Columns | None,
) -> str:
    """The query for the next audiences table.

    ``traits_columns``: columns of the traits table; ``models``: columns of each joined
    ``models.<name>`` table (empty when missing); ``previous``: columns of the current audiences
    table, or None on the first run. Rows: every profile that is a member of an audience now or
    was one before. Columns: TRUE = member, FALSE = was a member and left, NULL = never a member.

    Past memberships follow merges: the previous rows are re-keyed to their profile's canonical
    id through ``identity.id_graph``, so a profile is a past member when it or any profile merged
    into it was one (Segment's merged profile still holds that ``true``, and must get ``false``
    when the merged profile is no member). A merged-away profile's own row disappears (the sync
    sends nothing for it), and rows of profiles the graph does not know are dropped the same way.
    """
    config = project.config
    for audience in project.audiences:
        _check_audience(project, audience, traits_columns, models)
    joins = []
    for model, join in config.joins.items():
        joins.append(
            f"LEFT JOIN models.{ident(model)} AS j_{model} ON j_{model}.{ident(join.column)} = t.{join.profile_column}"
        )

    def subject(leaf: Condition) -> str:
        return f"t.{ident(leaf.trait)}" if leaf.trait else f"j_{leaf.model}.{ident(leaf.column or '')}"

    members = [condition_sql(a.conditions, subject) for a in project.audiences]
    if joins:
        # A profile may match several model rows: it is a member when any of them satisfies the conditions.
        current = (
            "SELECT t.profile_key, t.user_id, t.anonymous_id, "
            + ", ".join(
                f"coalesce(bool_or({m}), FALSE) AS {a.key}"
                for m, a in zip(members, project.audiences, strict=True)
            )
            + f"\nFROM {TRAITS_TABLE} AS t\n"
            + "\n".join(joins)
            + "\nGROUP BY t.profile_key, t.user_id, t.anonymous_id"
        )
    else:
        current = (
            "SELECT t.profile_key, t.user_id, t.anonymous_id, "
            + ", ".join(
                f"coalesce({m}, FALSE) AS {a.key}" for m, a in zip(members, project.audiences, strict=True)
            )
            + f"\nFROM {TRAITS_TABLE} AS t"
        )
    keys = [a.key for a in project.audiences]
    if previous is None:
        return (
            f"WITH c AS (\n{current}\n)\nSELECT c.profile_key, c.user_id, c.anonymous_id, "
            + ", ".join(f"CASE WHEN c.{k} THEN TRUE END AS {k}" for k in keys)
            + "\nFROM c\nWHERE "
            + " OR ".join(f"c.{k}" for k in keys)
        )

    def ever(key: str) -> str:
        return f"bool_or(a.{key} IS NOT NULL)" if key in previous else "FALSE"

    past = (
        "SELECT g.canonical_segment_id AS profile_key, max(a.user_id) AS user_id, "
        "CASE WHEN max(a.user_id) IS NULL THEN max(a.anonymous_id) END AS anonymous_id, "
        + ", ".join(f"{ever(k)} AS {k}" for k in keys)
        + f"\nFROM {AUDIENCES_TABLE} AS a JOIN {ID_GRAPH_TABLE} AS g ON g.segment_id = a.profile_key\n"
        "GROUP BY g.canonical_segment_id"
    )
    return (
        f"WITH c AS (\n{current}\n), p AS (\n{past}\n)\nSELECT coalesce(c.profile_key, p.profile_key) AS profile_key, "
        "coalesce(c.user_id, p.user_id) AS user_id, coalesce(c.anonymous_id, p.anonymous_id) AS anonymous_id, "
        + ", ".join(f"CASE WHEN c.{k} THEN TRUE WHEN p.{k} THEN FALSE END AS {k}" for k in keys)
        + "\nFROM c FULL JOIN p ON p.profile_key = c.profile_key\nWHERE "
        + " OR ".join(f"coalesce(c.{k}, FALSE) OR coalesce(p.{k}, FALSE)" for k in keys)
    )


def _check_audience(
    project: TraitsProject, audience: AudienceConfig, traits_columns: Columns, models: Mapping[str, Columns]
) -> None:
    config = project.config

    def problem(message: str, fix: str) -> ConfigError:
        return ConfigError(
            f"audience '{audience.name}': {message}.",
            file=project.file,
            field=f"audiences.{audience.key}",
            fix=fix,
        )

    for leaf in leaves(audience.conditions):
        if leaf.trait is not None:
            if leaf.trait not in traits_columns:
                raise problem(
                    f"trait '{leaf.trait}' is not a column of {TRAITS_TABLE} yet",
                    "materialize computed_traits first (it adds new traits), then audiences",
                )
            check_comparison(leaf, type_family(traits_columns[leaf.trait]), problem)
            continue
        model = leaf.model or ""
        columns = models.get(model) or {}
        join = config.joins[model]
        if not columns:
            raise problem(
                f"model table models.{model} does not exist",
                f"materialize the model '{model}' first, or fix `joins` / the condition's `model:`",
            )
        for column in (join.column, leaf.column or ""):
            if column not in columns:
                raise problem(
                    f"column '{column}' does not exist in models.{model}; available columns: {_available(columns)}",
                    "use one of the available columns",
                )
        check_comparison(leaf, type_family(columns[leaf.column or ""]), problem)
