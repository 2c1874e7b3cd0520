"""Compile computed traits and audiences into warehouse SQL (DuckDB dialect). Pure: no I/O.

The compiler takes the validated definitions plus the warehouse's column types (looked up by
the caller at run time) and returns SQL strings. Keeping it pure makes every semantic rule
testable on its own and lets the fingerprint of the SQL stand for "the definitions changed".

Shape of the traits query, per event table ``i`` (one scan of the table for all its traits):

- ``e<i>``: the needed columns, one row per message ``id`` (first received copy wins);
- ``a<i>``: one row per profile with every trait of the table as a conditional aggregate
  (``count(*) FILTER``, ``arg_max`` over an order key, ``list(DISTINCT)``…);
- ``m<i>_<key>``: most_frequent traits (value counts per profile, best value per profile);

then one row per profile across tables. In incremental mode every ``e<i>`` only reads the
messages of the affected profiles (``_touched``) and the result holds only those profiles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from segment_profiles_pipeline.errors import ConfigError
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
COMPILER_VERSION = "1"
"""Bump when the generated SQL changes meaning, so stored results are rebuilt once."""

# Raw event rows → profile identity. A profile is its user_id when the event has one, else its
# anonymous_id; empty strings count as missing (some sources send "" instead of null).
RAW_UID = "nullif(user_id, '')"
RAW_AID = "CASE WHEN nullif(user_id, '') IS NULL THEN nullif(anonymous_id, '') END"
PROFILE_KEY_SQL = "CASE WHEN _uid IS NOT NULL THEN 'user:' || _uid ELSE 'anon:' || _aid END"
HAS_PROFILE = "(_uid IS NOT NULL OR _aid IS NOT NULL)"
IN_TOUCHED = "(_uid IN (SELECT user_id FROM _touched) OR (_uid IS NULL AND _aid IN (SELECT anonymous_id FROM _touched)))"
# On raw columns (no expression on the probe side) so the warehouse can prune with the join's keys.
RAW_IN_TOUCHED = (
    "(user_id IN (SELECT user_id FROM _touched) OR "
    f"({RAW_UID} IS NULL AND anonymous_id IN (SELECT anonymous_id FROM _touched)))"
)


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

    def boundary(self, moment: dt.datetime) -> str:
        """Literal of ``moment`` typed to compare with this table's ``timestamp`` column."""
        return timestamp_literal(moment, _tz_aware(self.columns["timestamp"]))


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

    @property
    def watermark_column(self) -> str:
        return self.project.config.sources.watermark_column

    @property
    def columns(self) -> list[str]:
        return [*KEY_COLUMNS, *(t.key for t in self.project.traits)]

    def fingerprint(self) -> str:
        """Changes whenever the computation would: definitions, column types, compiler version."""
        text = "\n".join([COMPILER_VERSION, self.watermark_column, self.select(FINGERPRINT_NOW)])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def stats_sql(self, table: EventTable, high_water: dt.datetime | None) -> str:
        """Row count, high-water mark and rows above the previous high water of one event table."""
        wm = ident(self.watermark_column)
        newer = f"count(*) FILTER (WHERE {wm} > {timestamp_literal(high_water)})" if high_water else "0"
        return (
            f"SELECT count(*) AS total_rows, max({wm}) AS high_water, {newer} AS newer_rows FROM {table.name}"
        )

    def select(self, now: dt.datetime, scope: IncrementalScope | None = None) -> str:
        """The query producing the traits table (all profiles, or only those ``scope`` touched)."""
        ctes: list[str] = []
        if scope is not None:
            ctes.append(f"_touched AS (\n{self._touched(now, scope)}\n)")
        for table in self.tables:
            ctes.append(f"e{table.index} AS (\n{self._events(table, scope is not None)}\n)")
            ctes.append(f"a{table.index} AS (\n{self._aggregate(table, now, scope is not None)}\n)")
            for trait in table.traits:
                if trait.type == "most_frequent":
                    ctes.append(
                        f"{_mf_name(table, trait)} AS (\n{self._most_frequent(table, trait, now, scope is not None)}\n)"
                    )
        if len(self.tables) == 1:
            base = "a1"
        else:
            ctes.append(
                "_profiles AS (\n"
                + "\nUNION\n".join(
                    f"SELECT profile_key, user_id, anonymous_id FROM a{t.index}" for t in self.tables
                )
                + "\n)"
            )
            base = "_profiles"
        joins = (
            []
            if base == "a1"
            else [f"LEFT JOIN a{t.index} ON a{t.index}.profile_key = p.profile_key" for t in self.tables]
        )
        selects = ["p.profile_key", "p.user_id", "p.anonymous_id"]
        for trait in self.project.traits:
            table = self._table_of(trait)
            if trait.type == "most_frequent":
                name = _mf_name(table, trait)
                joins.append(f"LEFT JOIN {name} ON {name}.profile_key = p.profile_key")
                selects.append(f"{name}._value AS {trait.key}")
            else:
                selects.append(f"{'p' if base == 'a1' else f'a{table.index}'}.{trait.key}")
        return (
            "WITH\n"
            + ",\n".join(ctes)
            + "\nSELECT "
            + ", ".join(selects)
            + f"\nFROM {base} AS p"
            + "".join(f"\n{j}" for j in joins)
        )

    def _table_of(self, trait: TraitConfig) -> EventTable:
        return next(t for t in self.tables if trait in t.traits)

    def _touched(self, now: dt.datetime, scope: IncrementalScope) -> str:
        """Profiles to recompute: every copy of a new message, and events the windows' lower edge passed."""
        wm = ident(self.watermark_column)
        parts = []
        for table in self.tables:
            high_water = scope.high_water[table.name]
            predicates = [f"id IN (SELECT id FROM {table.name} WHERE {wm} > {timestamp_literal(high_water)})"]
            for length in table.windows:
                predicates.append(
                    f"(timestamp >= {table.boundary(scope.previous_now - length)} "
                    f"AND timestamp < {table.boundary(now - length)})"
                )
            parts.append(
                f"SELECT {RAW_UID} AS user_id, {RAW_AID} AS anonymous_id FROM {table.name}\nWHERE "
                + " OR ".join(predicates)
            )
        return "\nUNION\n".join(parts)

    def _events(self, table: EventTable, scoped: bool) -> str:
        needed: dict[str, None] = {}
        for trait in table.traits:
            if trait.column():
                needed[trait.column()] = None
            for leaf in leaves(trait.conditions):
                needed[snake_case(leaf.property or "")] = None
        select = [f"{RAW_UID} AS _uid", f"{RAW_AID} AS _aid"]
        if table.windows or table.ordered:
            select.append("timestamp AS _ts")
        if table.ordered:
            select += ["received_at AS _received_at", "id AS _id"]
        select += [ident(c) for c in needed]
        where = f"\nWHERE id IN (SELECT id FROM {table.name} WHERE {RAW_IN_TOUCHED})" if scoped else ""
        return (
            "SELECT " + ", ".join(select) + f"\nFROM {table.name}{where}\n"
            "QUALIFY row_number() OVER (PARTITION BY id ORDER BY received_at NULLS LAST, timestamp NULLS LAST, "
            "user_id NULLS LAST, anonymous_id NULLS LAST) = 1"
        )

    def _filter(self, table: EventTable, trait: TraitConfig, now: dt.datetime) -> str | None:
        parts = []
        if trait.conditions is not None:
            parts.append(condition_sql(trait.conditions, lambda leaf: ident(snake_case(leaf.property or ""))))
        if trait.window is not None:
            parts.append(f"_ts >= {table.boundary(now - trait.window.length)}")
        return " AND ".join(parts) or None

    def _aggregate(self, table: EventTable, now: dt.datetime, scoped: bool) -> str:
        select = [f"{PROFILE_KEY_SQL} AS profile_key", "_uid AS user_id", "_aid AS anonymous_id"]
        for trait in table.traits:
            if trait.type != "most_frequent":
                select.append(f"{_trait_aggregate(trait, self._filter(table, trait, now))} AS {trait.key}")
        where = HAS_PROFILE + (f" AND {IN_TOUCHED}" if scoped else "")
        source = f"e{table.index}\nWHERE {where}"
        if table.ordered:
            # Each event's position in its profile's history (timestamp, then received_at, then id): a
            # small integer key for arg_max/arg_min, cheaper than a composite key and exact on ties.
            source = (
                f"(SELECT *, row_number() OVER (PARTITION BY _uid, _aid ORDER BY _ts NULLS FIRST, "
                f"_received_at NULLS FIRST, _id) AS _order FROM e{table.index} WHERE {where}) AS o"
            )
        return "SELECT " + ",\n  ".join(select) + f"\nFROM {source}\nGROUP BY _uid, _aid"

    def _most_frequent(self, table: EventTable, trait: TraitConfig, now: dt.datetime, scoped: bool) -> str:
        column = ident(trait.column() or "")
        where = [HAS_PROFILE, f"{column} IS NOT NULL"]
        condition = self._filter(table, trait, now)
        if condition:
            where.append(f"({condition})")
        if scoped:
            where.append(IN_TOUCHED)
        return (
            "SELECT profile_key, _value FROM (\n"
            f"  SELECT {PROFILE_KEY_SQL} AS profile_key, {column} AS _value, count(*) AS _n\n"
            f"  FROM e{table.index}\n  WHERE "
            + " AND ".join(where)
            + f"\n  GROUP BY _uid, _aid, {column}\n) AS c\n"
            f"WHERE _n >= {trait.frequency()}\n"
            "QUALIFY row_number() OVER (PARTITION BY profile_key ORDER BY _n DESC, _value) = 1"
        )


def _mf_name(table: EventTable, trait: TraitConfig) -> str:
    return f"m{table.index}_{trait.key}"


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
    order = f"CASE WHEN {column} IS NOT NULL{f' AND ({condition})' if condition else ''} THEN _order END"
    return f"{'arg_min' if trait.type == 'first' else 'arg_max'}({column}, {order})"


def compile_traits(project: TraitsProject, schemas: Mapping[tuple[str, str], Columns]) -> CompiledTraits:
    """Check every trait against the warehouse's columns and compile the project.

    ``schemas`` maps each ``project.event_tables()`` entry to its columns (empty when the
    table does not exist). Raises ConfigError naming the file, trait, problem and fix.
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
        event_table = EventTable(index, schema, table, columns, traits)
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

    def before(key: str) -> str:
        return f"p.{key}" if key in previous else "CAST(NULL AS BOOLEAN)"

    return (
        f"WITH c AS (\n{current}\n)\nSELECT coalesce(c.profile_key, p.profile_key) AS profile_key, "
        "coalesce(c.user_id, p.user_id) AS user_id, coalesce(c.anonymous_id, p.anonymous_id) AS anonymous_id, "
        + ", ".join(
            f"CASE WHEN c.{k} THEN TRUE WHEN {before(k)} IS NOT NULL THEN FALSE END AS {k}" for k in keys
        )
        + f"\nFROM c FULL JOIN {AUDIENCES_TABLE} AS p ON p.profile_key = c.profile_key\nWHERE "
        + " OR ".join(f"coalesce(c.{k}, FALSE) OR {before(k)} IS NOT NULL" for k in keys)
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
