"""Change detection as set-based SQL in the warehouse. Pure: builds SQL strings, runs nothing.

Per mapping (and shard) the plan compares the model against the ledger of acknowledged
checksums, like Segment's ``records_<id>`` table:

- ``add``: key not live in the ledger; ``update``: checksum differs; ``delete``: live in the
  ledger, gone from the model; ``delete_shared``: gone, but with ``clear_traits`` another live
  record of the mapping still addresses the same profile, so nothing may be cleared;
  ``invalid_null_key`` / ``invalid_duplicate_key``: never sent, reported.
- The checksum covers only the mapped columns (plus a fingerprint of the mapping itself, so
  changing a mapping re-sends its records). Each value is length-prefixed so ``('a|', '')`` and
  ``('a', '|')`` differ, and null differs from every string. Values are written as text in a
  form no session setting changes (time zone, Snowflake's output formats).
- ``__generation`` carries the ledger row's sync id (tombstones included) into the message id.
- A record whose delivery expired (failed ``retry.max_syncs`` times) or whose content was
  rejected is left alone until its data changes. That holds for deletes too: a clear Segment kept
  refusing for the record itself is parked under the ledger's checksum (the data it would clear),
  so ``expired`` in ``failed_records`` means what it says: not retried.
- ``track`` records are events, not states: no ``delete`` rows (a sent event is never taken back,
  and its key stays in the ledger so it is never sent twice), and with ``send: add`` (the default)
  no ``update`` rows either: only keys the ledger has not acknowledged are planned. With an
  ``incremental_column`` only rows above the stored mark (plus null values and keys with a failure
  to retry) are read and hashed; see ``sync/actions/watermark.py``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from segment_profiles_pipeline.config import SUBSCRIPTION_FIELDS, MappingConfig
from segment_profiles_pipeline.sync.state import FAILED, LEDGER, STATE_SCHEMA
from segment_profiles_pipeline.warehouse.base import ident, literal

OPS_SENT = {"upsert": ("add", "update"), "add": ("add",), "update": ("update",)}
PARKED_STATUSES = ("expired", "rejected")
"""Failed-record statuses that keep an unchanged record out of the plan."""
_TIMESTAMP_TEXT = "%Y-%m-%d %H:%M:%S.%f"
_INSTANT_TYPES = frozenset({"TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "TIMESTAMP_TZ", "TIMESTAMP_LTZ"})
"""Types that hold an instant (shown in the session's zone); naive TIMESTAMP(_NTZ) holds wall time."""


_LATER_FIELDS = {
    "consent",
    "event_name",
    "properties",
    "all_columns_as_properties",
    "incremental_column",
    "subscription_groups",
    *SUBSCRIPTION_FIELDS,
}


@dataclass(frozen=True)
class PlanSpec:
    """Everything the plan SQL depends on."""

    mapping: MappingConfig
    table: str
    primary_key: str
    mapped_columns: tuple[str, ...]  # every column the payload reads, in a fixed order
    shard: int = 0
    shards: int = 1
    column_types: tuple[tuple[str, str], ...] = ()  # (column, warehouse type) of the mapped columns
    watermark: str | None = None  # table holding the incremental_column's mark, when there is one

    @property
    def plan_table(self) -> str:
        return f"{STATE_SCHEMA}.plan__{self.mapping.name}__{self.shard}"

    @property
    def fingerprint(self) -> str:
        """Changes when the mapping's payload-shaping fields change."""
        shape = self.mapping.model_dump(
            include={
                "action",
                "user_id",
                "anonymous_id",
                "group_id",
                "traits",
                "all_columns_as_traits",
                "timestamp",
                "message_id",
                "nulls",
                "integrations",
            }
        )
        # Fields added with track/subscription count only when set, so mappings written before
        # them keep their fingerprint (and are not all re-sent once after an upgrade).
        shape.update(
            (k, v)
            for k, v in self.mapping.model_dump(include=_LATER_FIELDS).items()
            if v not in (None, {}, False)
        )
        return hashlib.sha256((repr(sorted(shape.items())) + repr(self.mapped_columns)).encode()).hexdigest()[
            :16
        ]


def shard_predicate(key_sql: str, spec: PlanSpec) -> str:
    """Rows of this shard. Applied to the model *and* the ledger with the same expression, so a
    record always lands in the same shard on both sides."""
    if spec.shards == 1:
        return "TRUE"
    return f"abs(hash({key_sql})) % {spec.shards} = {spec.shard}"


def canonical_text(column: str, column_type: str) -> str:
    """SQL for a value as text that no session setting changes.

    ``CAST(timestamptz AS VARCHAR)`` follows the session time zone, and Snowflake casts
    timestamps, dates and binary by its ``*_OUTPUT_FORMAT`` parameters: the same data in another
    session would look changed, re-send everything, and with ``clear_traits`` clear profiles.
    So instants are written in UTC with an explicit format, dates with an explicit format and
    binary as hex (sqlglot turns ``strftime`` into ``TO_CHAR`` and ``hex`` into ``HEX_ENCODE``)."""
    kind = column_type.upper().split("(")[0].strip()  # TIMESTAMP_NTZ(9) → TIMESTAMP_NTZ
    col = ident(column)
    if kind in _INSTANT_TYPES:
        return f"strftime({col} AT TIME ZONE 'UTC', '{_TIMESTAMP_TEXT}')"
    if kind.startswith(("TIMESTAMP", "DATETIME")):
        return f"strftime({col}, '{_TIMESTAMP_TEXT}')"
    if kind == "DATE":
        return f"strftime({col}, '%Y-%m-%d')"
    if kind in ("BLOB", "BYTEA", "BINARY", "VARBINARY"):
        return f"hex({col})"
    return f"CAST({col} AS VARCHAR)"


def checksum_sql(spec: PlanSpec) -> str:
    """MD5 over the mapping fingerprint and every mapped value as ``<length>:<text>`` (``:`` alone
    for null), joined by ``|``: the length prefix makes the encoding unambiguous, so two different
    rows never feed MD5 the same string. It is one flat ``concat`` call (which skips nulls, and
    which sqlglot turns into null-safe ``CONCAT`` on Snowflake) because building the string was
    half of the plan's time at 10M rows: a chain of ``||`` copied the growing string at each step."""
    parts = [literal(spec.fingerprint)]
    types = dict(spec.column_types)
    for column in spec.mapped_columns:
        text = canonical_text(column, types.get(column, ""))
        parts.append(f"CAST(length({text}) AS VARCHAR), ':', {text}")
    return "md5(concat(" + ", '|', ".join(parts) + "))"


def _addresses_same_profile(spec: PlanSpec) -> str:
    """SQL (over model row ``m`` and ledger row ``l``): the model row addresses the profile the
    ledger row's stored identity names. Group traits belong to the group, so a group mapping
    compares ``groupId``; an identify mapping compares ``userId`` and ``anonymousId``."""
    m = spec.mapping
    fields = (
        {"groupId": m.group_id}
        if m.action == "group"
        else {"userId": m.user_id, "anonymousId": m.anonymous_id}
    )
    tests = [
        f"CAST(m.{ident(column)} AS VARCHAR) = json_extract_string(l.identity, '$.{field}')"
        for field, column in fields.items()
        if column
    ]
    return " OR ".join(tests) or "FALSE"


def build_plan_sql(spec: PlanSpec) -> str:
    """CREATE the plan table: one row per record to add, update, delete or reject."""
    pk = ident(spec.primary_key)
    name = literal(spec.mapping.name)
    key = f"CAST({pk} AS VARCHAR)"
    cols = ", ".join(dict.fromkeys(ident(c) for c in spec.mapped_columns))
    col_list = f", {cols}" if cols else ""
    null_cols = "".join(f", s.{ident(c)}" for c in dict.fromkeys(spec.mapped_columns))
    delete_op = "'delete'"
    if spec.mapping.on_delete == "clear_traits":
        delete_op = (
            f"CASE WHEN EXISTS (SELECT 1 FROM {ident(spec.table)} AS m WHERE {_addresses_same_profile(spec)}) "
            "THEN 'delete_shared' ELSE 'delete' END"
        )
    events = spec.mapping.action == "track"
    changed = "" if events and spec.mapping.send == "add" else " OR l.checksum <> s.__checksum"
    rows = _incremental_predicate(spec, key)
    deletes = (
        ""
        if events
        else f"""UNION ALL
SELECT {delete_op}, l.record_key, l.checksum, 0, l.identity, l.sync_id{", NULL" * len(dict.fromkeys(spec.mapped_columns))}
FROM led AS l
WHERE l.live AND NOT EXISTS (SELECT 1 FROM {ident(spec.table)} AS m WHERE CAST(m.{pk} AS VARCHAR) = l.record_key)
  AND NOT EXISTS (SELECT 1 FROM parked AS p WHERE p.record_key = l.record_key AND p.checksum = l.checksum)
"""
    )
    # Duplicated keys are found by a GROUP BY joined back (not a window over every row and
    # column): the few duplicates make a tiny hash table, where the window sorted the whole model.
    return f"""
CREATE OR REPLACE TABLE {spec.plan_table} AS
WITH dups AS (
    SELECT {pk} AS __dup_key, count(*) AS __n FROM {ident(spec.table)}
    WHERE {pk} IS NOT NULL AND {rows} GROUP BY {pk} HAVING count(*) > 1
), src AS (
    SELECT {key} AS __key, {checksum_sql(spec)} AS __checksum,
           coalesce(d.__n, 1) AS __copies{col_list}
    FROM {ident(spec.table)} LEFT JOIN dups AS d ON d.__dup_key = {pk}
    WHERE ({shard_predicate(key, spec)} OR ({pk} IS NULL AND {spec.shard} = 0)) AND {rows}
), led AS (
    SELECT record_key, checksum, identity, live, sync_id FROM {LEDGER}
    WHERE mapping = {name} AND {shard_predicate("record_key", spec)}
), parked AS (
    SELECT record_key, checksum FROM {FAILED}
    WHERE mapping = {name} AND status IN ({", ".join(literal(s) for s in PARKED_STATUSES)})
      AND record_key IS NOT NULL
)
SELECT
    CASE WHEN s.__key IS NULL THEN 'invalid_null_key'
         WHEN s.__copies > 1 THEN 'invalid_duplicate_key'
         WHEN l.record_key IS NULL OR NOT l.live THEN 'add'
         ELSE 'update' END AS __op,
    s.__key, s.__checksum, s.__copies, CAST(NULL AS VARCHAR) AS __identity,
    coalesce(l.sync_id, '') AS __generation{null_cols}
FROM src AS s
LEFT JOIN led AS l ON l.record_key = s.__key
LEFT JOIN parked AS p ON p.record_key = s.__key AND p.checksum = s.__checksum
WHERE (s.__key IS NULL OR s.__copies > 1 OR l.checksum IS NULL OR NOT l.live{changed})
  AND p.record_key IS NULL
{deletes}"""


def _incremental_predicate(spec: PlanSpec, key_sql: str) -> str:
    """Model rows the plan reads: all of them, or with a mark, the rows above it, rows with no
    value, and rows whose key has a failure to retry (never lose a row that failed below the mark)."""
    column = spec.mapping.incremental_column
    if not spec.watermark or not column:
        return "TRUE"
    col = ident(column.lower())
    return (
        f"({col} > (SELECT mark FROM {spec.watermark}) OR {col} IS NULL OR {key_sql} IN "
        f"(SELECT record_key FROM {FAILED} WHERE mapping = {literal(spec.mapping.name)} AND record_key IS NOT NULL))"
    )


def counts_sql(spec: PlanSpec) -> str:
    return f"SELECT __op, count(*) AS n FROM {spec.plan_table} GROUP BY __op"


def extracted_sql(spec: PlanSpec) -> str:
    key = f"CAST({ident(spec.primary_key)} AS VARCHAR)"
    pk = ident(spec.primary_key)
    return f"SELECT count(*) FROM {ident(spec.table)} WHERE {shard_predicate(key, spec)} OR ({pk} IS NULL AND {spec.shard} = 0)"


def sendable_sql(spec: PlanSpec, ops: tuple[str, ...]) -> str:
    """The plan rows to turn into messages, in no particular order: acknowledgement is per
    record, so nothing depends on it, and sorting the whole plan first cost ~200 MB at 1M rows."""
    if not ops:
        ops = ("__none__",)
    return f"SELECT * FROM {spec.plan_table} WHERE __op IN ({', '.join(literal(o) for o in ops)})"
