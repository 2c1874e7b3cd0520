"""SQL for the Profiles Sync tables. Pure: strings in, strings out (DuckDB dialect, transpiled by
the session like the rest of the project); ``compute`` runs them.

The ``_updates`` tables are append-only: every statement here that writes one appends only the
difference between the identity layer's current state and the latest row already landed, with
``seq`` continuing from the table's maximum and one ``uuid_ts`` per run, so a run with nothing
new appends nothing and incremental consumers (``uuid_ts > max``) see every row once.
"""

from __future__ import annotations

from collections.abc import Sequence

from segment_profiles_pipeline.identity.compute import IDENTIFY_LOG
from segment_profiles_pipeline.identity.config import EXTERNAL_ID_TABLE, ID_GRAPH_TABLE, MERGES_TABLE
from segment_profiles_pipeline.profiles_sync.sources import TRAIT_LOG
from segment_profiles_pipeline.state.ledger import LEDGER
from segment_profiles_pipeline.state.outbox import OUTBOX
from segment_profiles_pipeline.state.sync_history import HISTORY
from segment_profiles_pipeline.sync.plan import PlanSpec, canonical_text, checksum_sql
from segment_profiles_pipeline.warehouse.base import ident, literal

JSON_TYPES = ("JSON", "VARIANT", "OBJECT", "ARRAY")
NUMBER_TYPES = (
    *("TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT"),
    *("UINTEGER", "UBIGINT", "DOUBLE", "FLOAT", "REAL", "DECIMAL", "NUMERIC", "NUMBER"),
)
_INSTANT = ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "TIMESTAMP_TZ", "TIMESTAMP_LTZ")


def latest(table: str, key: str = "segment_id") -> str:
    """The latest row (highest ``seq``) per ``key`` of an ``_updates`` table."""
    return f"(SELECT * FROM {table} QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY seq DESC) = 1)"


def _event_type(event_id: str, has_log: bool) -> str:
    """Identify when the message is one of the identify log's records, else a track event."""
    if not has_log:
        return "'track'"
    return f"CASE WHEN {event_id} IN (SELECT message_id FROM {IDENTIFY_LOG}) THEN 'identify' ELSE 'track' END"


def id_graph_updates_sql(target: str, base_seq: int, uuid_ts: str, has_log: bool) -> list[str]:
    """Creation rows for profiles not landed yet, then one row per profile whose canonical profile
    moved since its latest row (a merge of the profile itself, or of the profile it had merged
    into: Segment's recursive entries), stamped with that merge."""
    created = (
        f"INSERT INTO {target} SELECT g.segment_id, g.segment_id, g.timestamp, g.triggering_event_id, "
        f"{_event_type('g.triggering_event_id', has_log)}, "
        f"{base_seq} + row_number() OVER (ORDER BY g.seq NULLS FIRST, g.segment_id), {uuid_ts} "
        f"FROM {ID_GRAPH_TABLE} AS g WHERE g.segment_id NOT IN (SELECT segment_id FROM {target})"
    )
    moved = (
        f"INSERT INTO {target} SELECT g.segment_id, g.canonical_segment_id, m.timestamp, m.triggering_event_id, "
        f"{_event_type('m.triggering_event_id', has_log)}, "
        f"(SELECT max(seq) FROM {target}) + row_number() OVER (ORDER BY m.seq NULLS FIRST, g.segment_id), {uuid_ts} "
        f"FROM {ID_GRAPH_TABLE} AS g JOIN {latest(target)} AS l ON l.segment_id = g.segment_id "
        f"LEFT JOIN {MERGES_TABLE} AS m ON m.segment_id = l.canonical_segment_id "
        "WHERE l.canonical_segment_id <> g.canonical_segment_id"
    )
    return [created, moved]


def external_id_mapping_updates_sql(target: str, base_seq: int, uuid_ts: str, has_log: bool) -> str:
    """One row per identifier not landed yet, on the profile it was first added to (moves by merges
    are in ``id_graph_updates``, as on Segment)."""
    source, event_type, joined = "CAST(NULL AS VARCHAR)", "'track'", ""
    if has_log:
        # One join to the log's mapping per message, not a correlated lookup per column and an
        # IN for the type: the same values (no message: null source, a track event) in ~25% less
        # time over 200k identifiers (issue 13).
        source = "s.mapping"
        event_type = "CASE WHEN s.message_id IS NOT NULL THEN 'identify' ELSE 'track' END"
        joined = (
            f"LEFT JOIN (SELECT message_id, min(mapping) AS mapping FROM {IDENTIFY_LOG} GROUP BY message_id) "
            "AS s ON s.message_id = e.triggering_event_id "
        )
    return (
        f"INSERT INTO {target} SELECT md5(e.segment_id || ':' || e.external_id_hash), e.segment_id, "
        "e.external_id_hash, e.external_id_type, e.external_id_value, e.timestamp, e.timestamp, "
        f"e.triggering_event_id, CAST(NULL AS VARCHAR), {event_type}, "
        f"CAST(NULL AS VARCHAR), {source}, {source}, "
        f"{base_seq} + row_number() OVER (ORDER BY e.seq NULLS FIRST, e.external_id_hash), {uuid_ts} "
        f"FROM {EXTERNAL_ID_TABLE} AS e {joined}"
        f"WHERE e.external_id_hash NOT IN (SELECT external_id_hash FROM {target})"
    )


def value_sql(column: str, column_type: str) -> tuple[str, str]:
    """(JSON text, plain text) of a model value, written as the payload writes it: numbers and
    booleans bare, JSON columns as they are, timestamps ISO-8601 in UTC with milliseconds and
    ``Z``, dates ``YYYY-MM-DD``, everything else a JSON string. Null is JSON ``null``."""
    kind = column_type.upper().split("(")[0].strip()
    col = ident(column)
    if kind in JSON_TYPES:
        text = f"CAST({col} AS VARCHAR)"
        return f"coalesce({text}, 'null')", text
    if kind == "BOOLEAN":
        text = f"CASE WHEN {col} THEN 'true' WHEN NOT {col} THEN 'false' END"
        return f"coalesce({text}, 'null')", text
    if kind in NUMBER_TYPES:
        text = f"CAST({col} AS VARCHAR)"
        return f"coalesce({text}, 'null')", text
    if kind.startswith(("TIMESTAMP", "DATETIME")):
        zoned = f"{col} AT TIME ZONE 'UTC'" if kind in _INSTANT else col
        text = f"substr(strftime({zoned}, '%Y-%m-%dT%H:%M:%S.%f'), 1, 23) || 'Z'"
    else:
        text = canonical_text(column, column_type)
    return f"coalesce(to_json({text}), 'null')", text


def acknowledged_sql(spec: PlanSpec) -> str:
    """The model rows whose checksum is the one Segment acknowledged (live,
    delivered ledger rows), with the ids they were sent to, not logged yet."""
    pk = ident(spec.primary_key)
    name = literal(spec.mapping.name)
    columns = "".join(f", m.{ident(c)}" for c in dict.fromkeys(spec.mapped_columns))
    return (
        f"SELECT m.__key, m.__checksum, l.identity AS __identity, "
        f"l.synced_at AS __at{columns} FROM ("
        f"SELECT CAST({pk} AS VARCHAR) AS __key, {checksum_sql(spec)} AS __checksum, * FROM {ident(spec.table)} "
        f"WHERE {pk} IS NOT NULL) AS m "
        f"JOIN {LEDGER} AS l ON l.mapping = {name} AND l.record_key = m.__key AND l.checksum = m.__checksum "
        "AND l.live AND l.delivered "
        f"WHERE NOT EXISTS (SELECT 1 FROM {TRAIT_LOG} AS g WHERE g.mapping = {name} "
        "AND g.record_key = m.__key AND g.checksum = m.__checksum)"
    )


def unrecoverable_sql(mappings: Sequence[str]) -> str:
    """Live acknowledged ledger rows whose values the log never got: the model row changed again
    before any run read it (the ledger holds only the checksum), so those values are unknown."""
    if not mappings:
        return "SELECT 0"
    names = ", ".join(literal(m) for m in mappings)
    return (
        f"SELECT count(*) FROM {LEDGER} AS l WHERE l.mapping IN ({names}) AND l.live AND l.delivered "
        f"AND NOT EXISTS (SELECT 1 FROM {TRAIT_LOG} AS g WHERE g.mapping = l.mapping "
        "AND g.record_key = l.record_key AND g.checksum = l.checksum)"
    )


def log_sql(mapping: str, scratch: str, traits: Sequence[tuple[str, str, str, bool]]) -> str:
    """INSERT the acknowledged values into the log, one row per trait (``traits``: key, column,
    column type, skip nulls). A null under ``nulls: skip`` was not sent, so it is not logged."""
    parts = []
    for key, column, column_type, skip in traits:
        json_value, text = value_sql(column, column_type)
        where = f" WHERE {ident(column)} IS NOT NULL" if skip else ""
        parts.append(
            f"SELECT {literal(mapping)}, __key, __checksum, json_extract_string(__identity, '$.userId'), "
            f"json_extract_string(__identity, '$.anonymousId'), {literal(key)}, {json_value}, {text}, __at "
            f"FROM {scratch}{where}"
        )
    return f"INSERT INTO {TRAIT_LOG} " + " UNION ALL ".join(parts)


def _path(key: str) -> str:
    return f"$.traits.{key}" if ident_like(key) else f'$.traits."{key}"'


def ident_like(key: str) -> bool:
    return key.replace("_", "a").isalnum() and not key[0].isdigit()


def planned_sql(mapping: str, traits: Sequence[str]) -> str:
    """What the mapping's latest sync would have sent, when that sync was a dry run: the outbox
    rows (adds and updates) of the latest sync of each shard (a live sync writes none, so a dry
    run followed by a live one contributes nothing), one row per trait present in the message (a
    skipped null is absent)."""
    runs = (
        f"SELECT sync_id FROM {HISTORY} WHERE mapping = {literal(mapping)} "
        "QUALIFY row_number() OVER (PARTITION BY shard ORDER BY started_at DESC, sync_id DESC) = 1"
    )
    parts = [
        f"SELECT o.mapping AS source, o.record_key, json_extract_string(o.message, '$.userId') AS user_id, "
        f"json_extract_string(o.message, '$.anonymousId') AS anonymous_id, {literal(key)} AS trait, "
        f"to_json(json_extract(o.message, {literal(_path(key))})) AS value_json, "
        f"json_extract_string(o.message, {literal(_path(key))}) AS value_text, o.created_at AS updated_at, "
        f"TRUE AS dry_run FROM {OUTBOX} AS o WHERE o.mapping = {literal(mapping)} "
        f"AND o.operation IN ('add', 'update') AND o.sync_id IN ({runs}) "
        f"AND json_extract(o.message, {literal(_path(key))}) IS NOT NULL"
        for key in traits
    ]
    return " UNION ALL ".join(parts)


def candidates_sql(planned: Sequence[str]) -> str:
    """Every known trait value on its canonical profile, the latest per
    (profile, trait, source). A record addresses the profile holding its userId, else its
    anonymousId; a record whose ids no profile holds keeps ``segment_id`` null (counted, reported)."""
    logged = (
        "SELECT mapping AS source, record_key, user_id, anonymous_id, trait, value_json, value_text, "
        f"acknowledged_at AS updated_at, FALSE AS dry_run FROM {TRAIT_LOG}"
    )
    values = " UNION ALL ".join([logged, *planned])
    return f"""SELECT coalesce(u.canonical_segment_id, a.canonical_segment_id) AS segment_id, r.*
FROM ({values}) AS r
LEFT JOIN {EXTERNAL_ID_TABLE} AS u ON u.external_id_type = 'user_id' AND u.external_id_value = r.user_id
LEFT JOIN {EXTERNAL_ID_TABLE} AS a ON a.external_id_type = 'anonymous_id' AND a.external_id_value = r.anonymous_id
QUALIFY row_number() OVER (
    PARTITION BY coalesce(u.canonical_segment_id, a.canonical_segment_id), r.user_id, r.anonymous_id, r.trait, r.source
    ORDER BY r.updated_at DESC, r.dry_run DESC, r.record_key DESC
) = 1"""


def per_source_sql(candidates: str) -> str:
    """The sidecar's rows: per (profile, trait, source) the latest value."""
    return (
        "SELECT segment_id, trait, value_json, source, updated_at, dry_run FROM ("
        f"SELECT * FROM {candidates} WHERE segment_id IS NOT NULL) AS c "
        "QUALIFY row_number() OVER (PARTITION BY segment_id, trait, source "
        "ORDER BY updated_at DESC, dry_run DESC, record_key DESC) = 1"
    )


def state_sql(candidates: str, columns: dict[str, str], gone: Sequence[str] = ()) -> str:
    """The complete state of every profile ever created: a canonical profile's
    traits (per trait the latest value of any source; ties: the source name that sorts first),
    a merged-away profile's ``merged_to``. ``gone``: trait columns landed before that no source
    holds any more (a dry run's trait, say), null in the new state."""
    traits = "".join(
        f", max(CASE WHEN w.trait = {literal(key)} THEN w.value_text END) AS {ident(column)}"
        for key, column in columns.items()
    )
    picked = "".join(f", t.{ident(c)}" for c in columns.values())
    picked += "".join(f", CAST(NULL AS VARCHAR) AS {ident(c)}" for c in gone)
    return f"""WITH w AS (
    SELECT * FROM {candidates} WHERE segment_id IS NOT NULL
    QUALIFY row_number() OVER (
        PARTITION BY segment_id, trait ORDER BY updated_at DESC, source, dry_run, record_key DESC, value_json
    ) = 1
), t AS (
    SELECT w.segment_id, max(w.updated_at) AS received_at,
           max(CASE WHEN w.dry_run THEN 1 ELSE 0 END) = 1 AS context_dry_run{traits}
    FROM w GROUP BY w.segment_id
), ids AS (
    SELECT canonical_segment_id,
           min(CASE WHEN external_id_type = 'user_id' THEN external_id_value END) AS user_id,
           min(CASE WHEN external_id_type = 'anonymous_id' THEN external_id_value END) AS anonymous_id
    FROM {EXTERNAL_ID_TABLE} GROUP BY canonical_segment_id
)
SELECT g.segment_id, g.canonical_segment_id,
       CASE WHEN g.segment_id <> g.canonical_segment_id THEN g.canonical_segment_id END AS merged_to,
       i.user_id, i.anonymous_id, t.received_at, coalesce(t.context_dry_run, FALSE) AS context_dry_run{picked}
FROM {ID_GRAPH_TABLE} AS g
LEFT JOIN t ON t.segment_id = g.segment_id AND g.segment_id = g.canonical_segment_id
LEFT JOIN ids AS i ON i.canonical_segment_id = g.canonical_segment_id"""


def profile_traits_updates_sql(
    target: str, state: str, columns: Sequence[str], base_seq: int, uuid_ts: str
) -> str:
    """Append a complete-state row for every profile whose state differs from its latest row
    (a profile never landed counts as empty: it gets a row once it has a trait or a merge)."""
    compared = ["merged_to", "context_dry_run", *columns]
    changed = " OR ".join(f"l.{ident(c)} IS DISTINCT FROM s.{ident(c)}" for c in compared)
    empty = " AND ".join(f"s.{ident(c)} IS NULL" for c in ["merged_to", *columns])
    values = "".join(f", s.{ident(c)}" for c in columns)
    names = "".join(f", {ident(c)}" for c in columns)
    stamp = f"coalesce(s.received_at, {uuid_ts})"
    return (
        f"INSERT INTO {target} (segment_id, seq, uuid_ts, user_id, anonymous_id, id, canonical_segment_id, "
        f"merged_to, sent_at, received_at, timestamp, context_dry_run{names}) "
        f"SELECT s.segment_id, {base_seq} + row_number() OVER (ORDER BY s.segment_id), {uuid_ts}, "
        f"s.user_id, s.anonymous_id, md5(s.segment_id || ':' || CAST({uuid_ts} AS VARCHAR)), "
        f"s.canonical_segment_id, s.merged_to, {stamp}, {stamp}, {stamp}, s.context_dry_run{values} "
        f"FROM {state} AS s LEFT JOIN {latest(target)} AS l ON l.segment_id = s.segment_id "
        f"WHERE CASE WHEN l.segment_id IS NULL THEN NOT ({empty}) ELSE ({changed}) END"
    )


def _trait_value(columns: Sequence[str]) -> str:
    """The value of the trait column named ``n.name`` of row ``p``: ``user_traits`` unpivots the
    latest rows with one scan (one latest-row window) instead of one per trait column: the
    same rows, ~0.85 -> 0.3 s at 100k profiles and six traits (issue 13)."""
    return "CASE n.name " + " ".join(f"WHEN {literal(c)} THEN p.{ident(c)}" for c in columns) + " END"


def current_sql(schema: str, columns: Sequence[str]) -> dict[str, str]:
    """The current-state and Segment-materialized tables, rebuilt from the ``_updates`` tables (as
    profiles-sync-dbt and Segment derive them), one statement each."""
    t = {name: f"{schema}.{name}" for name in ("id_graph_updates", "external_id_mapping_updates")}
    updates = f"{schema}.profile_traits_updates"
    graph = f"{schema}.id_graph"
    picked = "".join(f", p.{ident(c)}" for c in sorted(columns))
    return {
        "id_graph": f"CREATE OR REPLACE TABLE {graph} AS SELECT segment_id, canonical_segment_id, timestamp, seq, "
        f"uuid_ts FROM {latest(t['id_graph_updates'])} AS g",
        "external_id_mapping": f"CREATE OR REPLACE TABLE {schema}.external_id_mapping AS SELECT "
        "coalesce(g.canonical_segment_id, e.segment_id) AS canonical_segment_id, e.external_id_type, "
        "e.external_id_value, e.external_id_hash, e.timestamp, e.uuid_ts "
        f"FROM {latest(t['external_id_mapping_updates'], 'external_id_hash')} AS e "
        f"LEFT JOIN {graph} AS g ON g.segment_id = e.segment_id",
        "profile_traits": f"CREATE OR REPLACE TABLE {schema}.profile_traits AS SELECT "
        f"g.segment_id AS canonical_segment_id{picked}, p.seq, p.uuid_ts, "
        "CASE WHEN g.segment_id <> g.canonical_segment_id THEN g.canonical_segment_id END AS merged_to "
        f"FROM {graph} AS g LEFT JOIN {latest(updates)} AS p ON p.segment_id = g.segment_id",
        "user_traits": f"CREATE OR REPLACE TABLE {schema}.user_traits AS "
        "SELECT canonical_segment_id, name, value, seq, received_at, uuid_ts, timestamp FROM ("
        f"SELECT p.segment_id AS canonical_segment_id, n.name, {_trait_value(columns)} AS value, p.seq, "
        f"p.received_at, p.uuid_ts, p.timestamp FROM {latest(updates)} AS p "
        f"CROSS JOIN ({' UNION ALL '.join(f'SELECT {literal(c)} AS name' for c in sorted(columns))}) AS n "
        "WHERE p.merged_to IS NULL) AS u WHERE value IS NOT NULL"
        if columns
        else f"CREATE OR REPLACE TABLE {schema}.user_traits (canonical_segment_id VARCHAR, name VARCHAR, "
        "value VARCHAR, seq BIGINT, received_at TIMESTAMP, uuid_ts TIMESTAMP, timestamp TIMESTAMP)",
        "user_identifiers": f"CREATE OR REPLACE TABLE {schema}.user_identifiers AS SELECT "
        "coalesce(g.canonical_segment_id, e.segment_id) AS canonical_segment_id, e.external_id_type AS type, "
        "e.external_id_value AS value, e.seq, e.received_at, e.uuid_ts, e.timestamp "
        f"FROM {latest(t['external_id_mapping_updates'], 'external_id_hash')} AS e "
        f"LEFT JOIN {graph} AS g ON g.segment_id = e.segment_id",
        "profile_merges": f"CREATE OR REPLACE TABLE {schema}.profile_merges AS SELECT canonical_segment_id, "
        "segment_id, seq, timestamp AS received_at, uuid_ts, timestamp "
        f"FROM {graph} WHERE segment_id <> canonical_segment_id",
    }


def drift_sql(schema: str, columns: Sequence[str]) -> str:
    """Profiles whose latest ``profile_traits_updates`` row differs from ``profile_traits``:
    consumers keeping the latest row per ``segment_id`` must get the current state (always 0)."""
    differs = " OR ".join(f"l.{ident(c)} IS DISTINCT FROM p.{ident(c)}" for c in ["merged_to", *columns])
    return (
        f"SELECT count(*) FROM {latest(f'{schema}.profile_traits_updates')} AS l "
        f"JOIN {schema}.profile_traits AS p ON p.canonical_segment_id = l.segment_id WHERE {differs}"
    )
