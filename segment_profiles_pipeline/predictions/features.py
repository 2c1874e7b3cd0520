"""Compile a prediction's per-profile features and labels into warehouse SQL (DuckDB dialect). Pure.

One query per prediction builds its feature table in **one pass per event table**: each table is
deduplicated by message ``id`` (first received copy wins, as the traits do) and grouped by
profile once, with every statistic for both cut-off times as conditional aggregates:

- ``train__<f>``: features as of ``as_of - N`` (only events at or before it) and, from the
  target table, the label window ``(as_of - N, as_of]``: the training rows;
- ``score__<f>``: the same features as of ``as_of``: the rows scored for the profiles today.

Windows are half-open on the left: features use events with ``timestamp <= cutoff``, labels
those with ``cutoff < timestamp <= as_of``, so no label-window event reaches a training feature.
All boundaries are timestamp literals computed here, so the SQL is the same on every warehouse.

A prediction's ``conditions`` narrow its target table to the matching events (after
deduplication, as computed traits apply theirs): its features, labels, eligibility, as-of and
data requirements all read "the event where it matches". The rows are the profiles with a
target event (churn, LTV: eligibility needs one) or, for purchase and custom goals, with an
event in any of the prediction's tables: a profile that never did the goal may still do it.

**Profile key**: every relation is keyed on ``profile_key``, the identity-resolved profile
(canonical ``segment_id``) of each deduplicated event, through ``identity/profile_keys.py`` as
the computed traits key theirs: the event's most trusted identifier that the graph holds decides
(``resolved_events_sql`` over the identifier map ``id_map``). A profile's anonymous history
therefore counts once it is identified. Events the graph does not hold (every identifier empty
or blocked, or not resolved yet) belong to no profile and count nowhere: not in the features,
the labels, the as-of or the data requirements. Where a profile's scores are sent (its
``user_id``, else its anonymous id) is decided when they are published (``run.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.config import EXTERNAL_ID_TABLE, IdentityRules
from segment_profiles_pipeline.identity.profile_keys import (
    IdentifierColumn,
    identifier_columns,
    identifier_map_sql,
    resolved_events_sql,
)
from segment_profiles_pipeline.predictions.config import PredictionConfig, PredictionsProject
from segment_profiles_pipeline.traits.compiler import (
    check_comparison,
    condition_sql,
    timestamp_literal,
    type_family,
)
from segment_profiles_pipeline.traits.config import leaves, snake_case
from segment_profiles_pipeline.warehouse.base import ident, literal

Columns = Mapping[str, str]
HAS_PROFILE = "profile_key IS NOT NULL"
"""An event the identifier map gives a profile (see the module doc)."""
REQUIRED_COLUMNS = ("id", "user_id", "timestamp", "received_at")
COUNT_WINDOWS_DAYS = (7, 30, 90, 365)
FEATURES_VERSION = "3"
"""Bump when the features change meaning: stored models are retrained once."""
DAY_SECONDS = 86400.0
NO_VALUE_WITHOUT_EVENTS = ("__recency_days", "__tenure_days", "__revenue_avg")
"""Statistics that are undefined (null) for a profile without events up to a cut-off; all others
(counts, rates, revenue sums) are 0 then. The same whether or not the profile has *later* events
in the table: a row that exists only because of label-window events must not differ from no row,
or the model would read the future off it."""
NAN = "CAST('NaN' AS DOUBLE)"
"""A missing feature (no event in a table) as the trees take it, so rows arrive as plain floats."""


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    alias: str  # t0 (the target table), t1, ...
    tag: str  # the feature-name prefix: the table name (schema-qualified if two share it)
    revenue: str | None = None  # predicted_ltv's target table: the revenue column
    currency: str | None = None  # ... and the currency column when the table has one
    goal: str | None = None  # the target table: SQL of the prediction's conditions, when it has some
    identifiers: tuple[IdentifierColumn, ...] = ()  # its identifier columns, most trusted first

    @property
    def qualified(self) -> str:
        return f"{ident(self.schema)}.{ident(self.name)}"


@dataclass(frozen=True)
class CompiledFeatures:
    """The SQL of one prediction's features, for one ``as_of``."""

    prediction: PredictionConfig
    tables: tuple[Table, ...]
    as_of: dt.datetime
    id_map: str = ""  # the identifier map (``profile_keys.MAP_COLUMNS``): a table or parenthesized query

    @property
    def train_cutoff(self) -> dt.datetime:
        return self.as_of - self.prediction.window

    def feature_names(self) -> list[str]:
        """The model's input columns, in order (the same for training and scoring rows)."""
        names = []
        for table in self.tables:
            stats = [f"n_{w}d" for w in COUNT_WINDOWS_DAYS] + [
                "n_all",
                "recency_days",
                "tenure_days",
                "per_30d",
            ]
            if table.revenue:
                stats += ["revenue_all", "revenue_90d", "revenue_avg"]
            names += [f"{table.tag}__{s}" for s in stats]
        return names

    def _stats(self, table: Table, cutoff: dt.datetime) -> list[tuple[str, str]]:
        """(feature suffix, aggregate) of one table as of ``cutoff``."""
        c = timestamp_literal(cutoff)
        upto = f"_ts <= {c}"

        def since(days: int) -> str:
            return f"_ts > {timestamp_literal(cutoff - dt.timedelta(days=days))} AND {upto}"

        first = f"date_diff('second', min(_ts) FILTER (WHERE {upto}), {c}) / {DAY_SECONDS}"
        out = [(f"n_{w}d", f"count(*) FILTER (WHERE {since(w)})") for w in COUNT_WINDOWS_DAYS]
        out += [
            ("n_all", f"count(*) FILTER (WHERE {upto})"),
            ("recency_days", f"date_diff('second', max(_ts) FILTER (WHERE {upto}), {c}) / {DAY_SECONDS}"),
            ("tenure_days", first),
            ("per_30d", f"count(*) FILTER (WHERE {upto}) * 30.0 / greatest(coalesce({first}, 0), 1.0)"),
        ]
        if table.revenue:
            paid = self._in_currency(table)
            out += [
                ("revenue_all", f"coalesce(sum(_rev) FILTER (WHERE {upto} AND {paid}), 0)"),
                ("revenue_90d", f"coalesce(sum(_rev) FILTER (WHERE {since(90)} AND {paid}), 0)"),
                ("revenue_avg", f"avg(_rev) FILTER (WHERE {upto} AND {paid})"),
            ]
        return out

    def _in_currency(self, table: Table) -> str:
        """Revenue in the prediction's currency counts; a missing currency is that currency (no FX)."""
        if not table.currency:
            return "TRUE"
        return f"coalesce(upper(_cur), {literal(self.prediction.currency)}) = {literal(self.prediction.currency)}"

    def _events(self, table: Table) -> str:
        """The table's events up to ``as_of`` with the resolved profile of each, one row per message
        id (matching the conditions, for the target table of a prediction that has some); events
        the identity graph gives no profile are left out."""
        cols = [ident(i.column) for i in table.identifiers] + ["timestamp AS _ts"]
        if table.revenue:
            cols.append(f"CAST({ident(table.revenue)} AS DOUBLE) AS _rev")
        if table.currency:
            cols.append(f"{ident(table.currency)} AS _cur")
        if table.goal:
            cols.append(f"{table.goal} AS _goal")
        dedup = (
            f"(SELECT {', '.join(cols)} FROM {table.qualified}\n"
            "QUALIFY row_number() OVER (PARTITION BY id ORDER BY received_at NULLS LAST, timestamp NULLS LAST) = 1)"
        )
        resolved = resolved_events_sql(dedup, table.identifiers, self.id_map)
        goal = " AND _goal" if table.goal else ""
        return f"(\n{resolved}\n) AS e WHERE {HAS_PROFILE} AND _ts <= {timestamp_literal(self.as_of)}{goal}"

    def _pass(self, table: Table) -> str:
        """One scan of one table: every statistic for both cut-offs (and the labels for the target)."""
        select = ["profile_key"]
        for side, cutoff in (("train", self.train_cutoff), ("score", self.as_of)):
            select += [f"{agg} AS {side}__{table.tag}__{name}" for name, agg in self._stats(table, cutoff)]
        if table.alias == "t0":
            window = f"_ts > {timestamp_literal(self.train_cutoff)}"
            select.append(f"count(*) FILTER (WHERE {window}) AS label_events")
            if table.revenue:
                select.append(
                    f"coalesce(sum(_rev) FILTER (WHERE {window} AND {self._in_currency(table)}), 0) AS label_revenue"
                )
        return "SELECT " + ",\n  ".join(select) + f"\nFROM {self._events(table)}\nGROUP BY profile_key"

    @property
    def any_profile(self) -> bool:
        """Whether profiles without a target event are rows (purchase and custom goals)."""
        return self.prediction.min_events == 0 and len(self.tables) > 1

    def build_sql(self) -> str:
        """The feature table: one row per profile with a target event up to ``as_of`` (for
        purchase and custom goals: with an event in any of the tables)."""
        target = self.tables[0]
        passes = "WITH " + ",\n".join(f"{t.alias} AS (\n{self._pass(t)}\n)" for t in self.tables)
        if self.any_profile:
            union = " UNION ".join(f"SELECT profile_key FROM {t.alias}" for t in self.tables)
            source, key, joined = f"({union}) AS u", "u", self.tables
        else:
            source, key, joined = "t0", "t0", self.tables[1:]
        columns = [f"{key}.profile_key"]
        for side in ("train", "score"):
            for t in self.tables:
                for name in self._names(t):
                    value = f"{t.alias}.{side}__{name}"
                    if not name.endswith(NO_VALUE_WITHOUT_EVENTS):
                        value = f"coalesce({value}, 0)"
                    columns.append(f"{value} AS {side}__{name}")
        columns.append("coalesce(t0.label_events, 0) AS label_events")
        if target.revenue:
            columns.append("coalesce(t0.label_revenue, 0) AS label_revenue")
        joins = "".join(f"\nLEFT JOIN {t.alias} ON {t.alias}.profile_key = {key}.profile_key" for t in joined)
        return f"{passes}\nSELECT " + ",\n  ".join(columns) + f"\nFROM {source}" + joins

    def _names(self, table: Table) -> list[str]:
        return [f"{table.tag}__{name}" for name, _ in self._stats(table, self.as_of)]

    def label_sql(self) -> str:
        """The training target: churn = 1 when the profile did NOT do the event in the label window;
        purchase and custom goals = 1 when it did; LTV = the revenue it spent in the window."""
        if self.prediction.type == "predicted_ltv":
            return "label_revenue"
        done = "=" if self.prediction.type == "likelihood_to_churn" else ">"
        return f"CASE WHEN label_events {done} 0 THEN 1 ELSE 0 END"

    def did_target_sql(self) -> str:
        """Whether a training profile did the target in the label window (the data requirement)."""
        return "label_revenue > 0" if self.prediction.type == "predicted_ltv" else "label_events > 0"

    def eligible_sql(self, side: str) -> str:
        """Eligible profiles at a cut-off: churn, at least one past target event; LTV, at least
        two; purchase and custom goals, at least one past event in any of the tables."""
        minimum = self.prediction.min_events
        if minimum:
            return f"{side}__{self.tables[0].tag}__n_all >= {minimum}"
        return " + ".join(f"coalesce({side}__{t.tag}__n_all, 0)" for t in self.tables) + " >= 1"

    def rows_sql(self, features_table: str, side: str, limit: int | None = None) -> str:
        """Training (``train``, with the label, a deterministic hash sample of ``limit`` profiles)
        or scoring (``score``) rows, the feature columns named as ``feature_names``."""
        cols = ", ".join(f"coalesce(CAST({side}__{n} AS DOUBLE), {NAN}) AS {n}" for n in self.feature_names())
        label = f", {self.label_sql()} AS label" if side == "train" else ""
        sql = f"SELECT profile_key, {cols}{label}\nFROM {features_table}\nWHERE {self.eligible_sql(side)}"
        if limit is not None:
            sql += f"\nORDER BY md5(profile_key) LIMIT {int(limit)}"
        return sql

    def class_counts_sql(self, features_table: str) -> str:
        """Eligible training profiles that did / did not do the target."""
        did = self.did_target_sql()
        return (
            f"SELECT count(*) FILTER (WHERE {did}) AS did, count(*) FILTER (WHERE NOT ({did})) AS did_not "
            f"FROM {features_table} WHERE {self.eligible_sql('train')}"
        )

    def _target_rows(self) -> str:
        """Target events of resolved profiles (matching the conditions), duplicates included:
        they change neither a first/last time nor the set of days."""
        target = self.tables[0]
        goal = f" AND {target.goal}" if target.goal else ""
        resolved = resolved_events_sql(target.qualified, target.identifiers, self.id_map)
        return f"FROM (\n{resolved}\n) AS r WHERE {HAS_PROFILE}{goal}"

    def active_days_sql(self, since: dt.datetime) -> str:
        """Distinct days with a target event in ``(since, as_of]`` (the regularity requirement)."""
        return (
            f"SELECT DISTINCT CAST(timestamp AS DATE) AS d {self._target_rows()} "
            f"AND timestamp > {timestamp_literal(since)} AND timestamp <= {timestamp_literal(self.as_of)}"
        )

    def span_sql(self) -> str:
        """First and last target event time (the default as-of, and the history length)."""
        return f"SELECT min(timestamp) AS first_ts, max(timestamp) AS last_ts {self._target_rows()}"


def goal_sql(
    project: PredictionsProject, prediction: PredictionConfig, name: str, columns: Columns
) -> str | None:
    """The prediction's conditions as SQL over its target table, after checking each property
    exists there with a type its comparison can answer (the traits' own checks)."""
    if prediction.conditions is None:
        return None

    def problem(message: str, fix: str) -> ConfigError:
        return ConfigError(
            f"prediction '{prediction.key}': {message}.",
            file=project.file,
            field=f"predictions.{prediction.key}.conditions",
            fix=fix,
        )

    for leaf in leaves(prediction.conditions):
        column = snake_case(leaf.property or "")
        if column not in columns:
            raise problem(
                f"condition property '{leaf.property}' (column '{column}') does not exist in {name}; "
                f"available columns: {', '.join(columns)}",
                "use one of the available columns (Segment property names are snake_cased, e.g. orderType → order_type)",
            )
        check_comparison(leaf, type_family(columns[column]), problem)
    return condition_sql(prediction.conditions, lambda leaf: ident(snake_case(leaf.property or "")))


def compile_features(
    project: PredictionsProject,
    prediction: PredictionConfig,
    schemas: Mapping[tuple[str, str], Columns],
    as_of: dt.datetime,
    rules: IdentityRules,
    mapping_table: str | None = None,
) -> CompiledFeatures:
    """Check the tables' columns (ConfigError naming file and field) and compile the features,
    keyed through the identifier columns ``rules`` name (the identity rules of the project) and
    the identity graph's ``mapping_table`` (default: ``identity.external_id_mapping``)."""
    tables = []
    names = [name for _, name in project.feature_tables(prediction)]
    for index, (schema, name) in enumerate(project.feature_tables(prediction)):
        columns = schemas.get((schema, name)) or {}
        field = f"predictions.{prediction.key}.event" if index == 0 else "feature_events"
        if not columns:
            raise ConfigError(
                f"prediction '{prediction.key}': event table {schema}.{name} does not exist.",
                file=project.file,
                field=field,
                fix="load the event into the warehouse, or map it with `sources.events`.",
            )
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ConfigError(
                f"prediction '{prediction.key}': {schema}.{name} lacks Segment's column(s) {', '.join(missing)}.",
                file=project.file,
                field=field,
            )
        revenue = currency = None
        if index == 0 and prediction.revenue_column:
            revenue = prediction.revenue_column
            if type_family(columns.get(revenue, "")) != "number":
                raise ConfigError(
                    f"prediction '{prediction.key}': revenue column '{revenue}' of {schema}.{name} is "
                    f"{columns.get(revenue, 'missing')}, not a number; available: {', '.join(columns)}.",
                    file=project.file,
                    field=f"predictions.{prediction.key}.revenue_property",
                )
            currency = prediction.currency_column if prediction.currency_column in columns else None
        identifiers = identifier_columns(rules, columns)
        if not identifiers:
            raise ConfigError(
                f"prediction '{prediction.key}': {schema}.{name} has none of the identity rules' identifier "
                f"columns ({', '.join(t.column for t in rules.types if t.column)}), so its events belong to no profile.",
                file=project.file,
                field=field,
            )
        tag = name if names.count(name) == 1 else f"{schema}_{name}"
        goal = goal_sql(project, prediction, f"{schema}.{name}", columns) if index == 0 else None
        tables.append(Table(schema, name, f"t{index}", tag, revenue, currency, goal, identifiers))
    types = {i.type for t in tables for i in t.identifiers}
    id_map = identifier_map_sql(types, mapping_table or EXTERNAL_ID_TABLE)
    return CompiledFeatures(prediction, tuple(tables), as_of, f"({id_map})")
