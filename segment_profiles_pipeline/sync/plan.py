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
  to retry) are read and hashed; see ``state/watermarks.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, NamedTuple

from segment_profiles_pipeline.config import SUBSCRIPTION_FIELDS, MappingConfig
from segment_profiles_pipeline.state.failed_records import FAILED, PARKED_STATUSES
from segment_profiles_pipeline.state.ledger import LEDGER
from segment_profiles_pipeline.state.ledger import shard_predicate as ledger_shard
from segment_profiles_pipeline.state.schema import STATE_SCHEMA
from segment_profiles_pipeline.warehouse.base import WarehouseSession, ident, literal

OPS_SENT = {"upsert": ("add", "update"), "add": ("add",), "update": ("update",)}
OP: Final = "__op"
"""The plan table's columns: the row's operation (add, update, delete, delete_shared,
invalid_null_key, invalid_duplicate_key, refresh), the record key, the checksum to acknowledge
(the ledger's for a delete), the stored ids (deletes only), the ledger row's sync id (the
generation of the record's message ids) and the quick hash. The mapped columns follow under
their own names."""
KEY: Final = "__key"
CHECKSUM: Final = "__checksum"
IDENTITY: Final = "__identity"
GENERATION: Final = "__generation"
QUICK_HASH: Final = "__quick_hash"
"""The model row's quick hash (``quick_hash_sql``; null for deletes), which settling stores
(``state.ledger.remember_quick_hashes`` reads it, ``__key`` and ``__checksum`` in place)."""
REFRESH: Final = "refresh"
"""The op of an unchanged record whose stored quick hash is stale (null, or computed by another
DuckDB version): never sent, never counted, only its quick hash is written when the sync settles.
Its mapped columns are null (except the ``incremental_column``): nothing renders it."""
_INSTANT_TYPES = frozenset({"TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ", "TIMESTAMP_TZ", "TIMESTAMP_LTZ"})
"""Types that hold an instant (shown in the session's zone); naive TIMESTAMP(_NTZ) holds wall time."""
_TIMESTAMP_TEXT = "%Y-%m-%d %H:%M:%S.%f"
_HASHED_NATIVE = frozenset(
    {
        *("TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT"),
        *("UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"),
        *("DECIMAL", "NUMERIC", "NUMBER", "BOOLEAN", "BOOL", "UUID", "DATE"),
        *("VARCHAR", "TEXT", "STRING", "CHAR"),
        *("BLOB", "BYTEA", "BINARY", "VARBINARY"),
        *("TIMESTAMP", "DATETIME", "TIMESTAMP_NTZ", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"),
        *_INSTANT_TYPES,
    }
)
"""Types whose ``hash()`` tells apart every two values their canonical text tells apart, for a
fixed column type (the types are part of the quick fingerprint). Every other type (FLOAT and
DOUBLE: ``hash()`` takes 0.0 and -0.0, and all NaNs, as one value; INTERVAL: '1 month' and
'30 days'; nested and semi-structured types, which may hold either) is hashed as its canonical text."""


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
        return plan_table(self.mapping.name, self.shard)

    @property
    def quick_fingerprint(self) -> str:
        """The mapping fingerprint and the column types: ``hash()`` of the same bits under another
        type (DECIMAL(4, 1) 1.1 and DECIMAL(4, 2) 0.11 are both 11) may mean another text, so a
        type change must fall back to the checksum."""
        return hashlib.sha256((self.fingerprint + repr(self.column_types)).encode()).hexdigest()[:16]

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
    """Rows of this shard. Applied to the model *and* the ledger with the same expression
    (``state.ledger.shard_predicate``), so a record always lands in the same shard on both sides."""
    return ledger_shard(key_sql, spec.shard, spec.shards)


def _kind(column_type: str) -> str:
    """The type's name without its parameters: ``TIMESTAMP_NTZ(9)`` → ``TIMESTAMP_NTZ``."""
    return column_type.upper().split("(")[0].strip()


def canonical_text(column: str, column_type: str) -> str:
    """SQL for a value as text that no session setting changes.

    ``CAST(timestamptz AS VARCHAR)`` follows the session time zone, and Snowflake casts
    timestamps, dates and binary by its ``*_OUTPUT_FORMAT`` parameters: the same data in another
    session would look changed, re-send everything, and with ``clear_traits`` clear profiles.
    So instants are written in UTC with an explicit format, dates with an explicit format and
    binary as hex (sqlglot turns ``strftime`` into ``TO_CHAR`` and ``hex`` into ``HEX_ENCODE``)."""
    kind = _kind(column_type)
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


def quick_hash_sql(spec: PlanSpec, dialect: str = "duckdb") -> str:
    """The warehouse's 64-bit ``hash()`` over the quick fingerprint and every mapped value: what
    the ledger caches next to the checksum, so an unchanged record is known without formatting
    its values as text and running MD5 over them.

    Values are hashed as they are (no text), except types whose ``hash()`` is coarser than their
    text (``_HASHED_NATIVE``), which are hashed as their canonical text. On DuckDB a string is
    hashed under the binary collation: ``hash()`` of a ``COLLATE NOCASE`` column hashes
    ``lower(value)``, so 'a' → 'A' would look unchanged. ``hash()`` takes its arguments as values,
    not as one string, so no separator is needed. A false match needs a 64-bit collision between
    the old and the new values of a changed record (docs/decisions.md)."""
    types = dict(spec.column_types)
    parts = [literal(spec.quick_fingerprint)]
    for column in spec.mapped_columns:
        kind = _kind(types.get(column, ""))
        if kind not in _HASHED_NATIVE:
            parts.append(canonical_text(column, types.get(column, "")))
        elif dialect == "duckdb" and kind in ("VARCHAR", "TEXT", "STRING", "CHAR"):
            parts.append(f'{ident(column)} COLLATE "binary"')
        else:
            parts.append(ident(column))
    return f"hash({', '.join(parts)})"


def _addresses_same_profile(spec: PlanSpec, identity: str) -> str:
    """SQL (over model row ``m``): the model row addresses the profile the stored identity
    ``identity`` (a ledger row's JSON ids) names. Group traits belong to the group, so a group
    mapping compares ``groupId``; an identify mapping compares ``userId`` and ``anonymousId``."""
    m = spec.mapping
    fields = (
        {"groupId": m.group_id}
        if m.action == "group"
        else {"userId": m.user_id, "anonymousId": m.anonymous_id}
    )
    tests = [
        f"CAST(m.{ident(column)} AS VARCHAR) = json_extract_string({identity}, '$.{field}')"
        for field, column in fields.items()
        if column
    ]
    return " OR ".join(tests) or "FALSE"


def build_plan_sql(spec: PlanSpec, dialect: str = "duckdb") -> str:
    """CREATE the plan table: one row per record to add, update, delete, reject or refresh.

    One pass over the model and one over the ledger, matched by a single FULL JOIN on the key:
    a model row with no live ledger row is an add, one whose checksum differs an update, a live
    ledger row no model row matches a delete. (The plan used to find deletes with a second scan
    of the model and a second hash table, an anti-join; at 10M records that was a fifth of its
    time.) Unchanged records match and are filtered out before anything is written, so the
    table holds only the rows to act on. The FULL JOIN finds deletes only because the model side
    is every row of the shard: a watermark (track only, which has no deletes) narrows it.

    The checksum (MD5 over the values as text) is computed only for model rows whose quick hash
    (``quick_hash_sql``) differs from the one the ledger caches: a row whose quick hash matches
    is unchanged and takes the ledger's checksum. A row that needed its checksum and turned out
    unchanged is a ``refresh`` row: its cached quick hash was null (an older ledger) or stale (a
    DuckDB upgrade changed ``hash()``), and settling writes the new one. A refresh row is never
    rendered or sent, so it carries no mapped values (nulls), only what settling reads (key,
    checksum, quick hash) and the ``incremental_column``, whose largest planned value is the next
    watermark: after a ledger upgrade every record is a refresh row, and writing their values made
    the plan table a copy of the model. Event mappings that only add never compare values: a live
    key is known without its checksum, and never refreshed."""
    pk = ident(spec.primary_key)
    name = literal(spec.mapping.name)
    key = f"CAST({pk} AS VARCHAR)"
    mapped = list(dict.fromkeys(ident(c) for c in spec.mapped_columns))
    col_list = "".join(f", {c}" for c in mapped)
    events = spec.mapping.action == "track"
    rows = _incremental_predicate(spec, key)
    if rows != "TRUE" and not events:  # config allows incremental_column on track only
        raise ValueError(
            f"mapping '{spec.mapping.name}': a watermark narrows the model, so deletes cannot be planned"
        )
    compares = not (events and spec.mapping.send == "add")
    watermarked = ident(spec.mapping.incremental_column.lower()) if spec.mapping.incremental_column else None
    carried = "".join(
        f", c.{col}"
        if col == watermarked
        else f", CASE WHEN c.__op <> {literal(REFRESH)} THEN c.{col} END AS {col}"
        for col in mapped
    )
    changed = (
        " OR c.__l_checksum <> c.__checksum OR c.__l_quick IS DISTINCT FROM c.__quick_hash"
        if compares
        else ""
    )
    known = "__l_live AND __l_quick = __quick_hash" if compares else "__l_live"  # needs no checksum
    gone = "FALSE" if events else "c.__l_live"
    shared = ""
    if spec.mapping.on_delete == "clear_traits":
        # Only the few delete rows ask the question (one correlated lookup per distinct identity).
        shared = (
            f"CASE WHEN p.__op = 'delete' AND EXISTS (SELECT 1 FROM {ident(spec.table)} AS m "
            f"WHERE {_addresses_same_profile(spec, 'p.__identity')}) THEN 'delete_shared' ELSE p.__op END AS __op, "
        )
    # Duplicated keys are found by a GROUP BY joined back (not a window over every row and
    # column): the few duplicates make a tiny hash table, where the window sorted the whole model.
    # The ledger's columns are renamed (``__l_*``) so the checksum, computed over the joined rows,
    # reads the model's columns by their own names whatever the model calls them.
    planned = f"""
WITH dups AS (
    SELECT {pk} AS __dup_key, count(*) AS __n FROM {ident(spec.table)}
    WHERE {pk} IS NOT NULL AND {rows} GROUP BY {pk} HAVING count(*) > 1
), src AS (
    SELECT {key} AS __key, {quick_hash_sql(spec, dialect)} AS __quick_hash,
           coalesce(d.__n, 1) AS __copies{col_list}
    FROM {ident(spec.table)} LEFT JOIN dups AS d ON d.__dup_key = {pk}
    WHERE ({shard_predicate(key, spec)} OR ({pk} IS NULL AND {spec.shard} = 0)) AND {rows}
), led AS (
    SELECT record_key AS __l_key, checksum AS __l_checksum, quick_hash AS __l_quick,
           identity AS __l_identity, live AS __l_live, sync_id AS __l_sync FROM {LEDGER}
    WHERE mapping = {name} AND {shard_predicate("record_key", spec)}
), joined AS (
    SELECT * FROM src AS s FULL JOIN led AS l ON l.__l_key = s.__key
), checked AS (
    SELECT *, CASE WHEN __copies IS NULL OR {known} THEN __l_checksum
                   ELSE {checksum_sql(spec)} END AS __checksum
    FROM joined
), decided AS (
    SELECT CASE WHEN __copies IS NULL THEN 'delete'
                WHEN __key IS NULL THEN 'invalid_null_key'
                WHEN __copies > 1 THEN 'invalid_duplicate_key'
                WHEN __l_key IS NULL OR NOT __l_live THEN 'add'
                WHEN __l_checksum <> __checksum THEN 'update'
                ELSE {literal(REFRESH)} END AS __op, *
    FROM checked
), parked AS (
    SELECT record_key, checksum FROM {FAILED}
    WHERE mapping = {name} AND status IN ({", ".join(literal(s) for s in PARKED_STATUSES)})
      AND record_key IS NOT NULL
)
SELECT
    c.__op,
    coalesce(c.__key, c.__l_key) AS __key,
    c.__checksum,
    coalesce(c.__copies, 0) AS __copies,
    CASE WHEN c.__copies IS NULL THEN c.__l_identity END AS __identity,
    coalesce(c.__l_sync, '') AS __generation,
    c.__quick_hash{carried}
FROM decided AS c
LEFT JOIN parked AS k ON k.record_key = coalesce(c.__key, c.__l_key) AND k.checksum = c.__checksum
WHERE k.record_key IS NULL AND CASE WHEN c.__copies IS NULL THEN {gone}
    ELSE c.__key IS NULL OR c.__copies > 1 OR c.__l_checksum IS NULL OR NOT c.__l_live{changed} END"""
    if shared:
        planned = f"SELECT {shared}p.* EXCLUDE (__op) FROM ({planned}\n) AS p"
    return f"CREATE OR REPLACE TABLE {spec.plan_table} AS {planned}"


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


def extracted_sql(spec: PlanSpec) -> str:
    """The number of model rows of this shard (the report's ``extracted``)."""
    key = f"CAST({ident(spec.primary_key)} AS VARCHAR)"
    pk = ident(spec.primary_key)
    return f"SELECT count(*) FROM {ident(spec.table)} WHERE {shard_predicate(key, spec)} OR ({pk} IS NULL AND {spec.shard} = 0)"


def sendable_sql(spec: PlanSpec, ops: Sequence[str]) -> str:
    """The plan rows of ``ops``, in no particular order: acknowledgement is per record, so
    nothing depends on it, and sorting the whole plan first cost ~200 MB at 1M rows."""
    return f"SELECT * FROM {spec.plan_table} WHERE {_of_ops(ops)}"


def _of_ops(ops: Sequence[str]) -> str:
    """SQL: the plan row's operation is one of ``ops`` (none: no row)."""
    return f"{OP} IN ({', '.join(literal(o) for o in ops)})" if ops else "FALSE"


@dataclass(frozen=True)
class PlanCounts:
    """What a plan found, per kind of row (``extracted``: model rows of the shard)."""

    extracted: int
    added: int
    updated: int
    deleted: int  # delete and delete_shared
    invalid: int  # null and duplicated keys

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def of(cls, extracted: int, ops: Mapping[str, int]) -> PlanCounts:
        """From the number of plan rows per operation."""
        return cls(
            extracted,
            ops.get("add", 0),
            ops.get("update", 0),
            ops.get("delete", 0) + ops.get("delete_shared", 0),
            ops.get("invalid_null_key", 0) + ops.get("invalid_duplicate_key", 0),
        )


class InvalidKey(NamedTuple):
    """Model rows that cannot be sent for their key: ``op`` is ``invalid_null_key`` (``key`` is
    None, ``rows`` counts every null-key row) or ``invalid_duplicate_key`` (``rows`` copies)."""

    op: str
    key: str | None
    rows: int


class Plan:
    """The plan table of one mapping shard and every query on it.

    ``build`` creates it (see ``build_plan_sql``) and counts it; the other methods read it in the
    shapes the sync needs (invalid keys, rows to render, keys to settle) and ``drop`` removes it.
    The table's columns (``OP``, ``KEY``, ``CHECKSUM``, ``IDENTITY``, ``GENERATION``, ``QUICK_HASH``
    and the mapped columns under their own names) are named here only (and in
    ``state.ledger.remember_quick_hashes``, which reads the table in place); rows are read through
    those constants. ``refresh`` rows are never counted, read for sending or copied."""

    def __init__(self, spec: PlanSpec, session: WarehouseSession) -> None:
        self.spec = spec
        self.session = session

    @property
    def table(self) -> str:
        return self.spec.plan_table

    def build(self) -> PlanCounts:
        """Create (or replace) the plan table; what it holds, counted."""
        self.session.execute(build_plan_sql(self.spec, self.session.dialect))
        ops = self.session.query(f"SELECT {OP}, count(*) AS n FROM {self.table} GROUP BY {OP}").rows
        extracted = self.session.query(extracted_sql(self.spec)).scalar()
        return PlanCounts.of(int(extracted or 0), {str(op): int(n) for op, n in ops})

    def invalid_keys(self) -> list[InvalidKey]:
        """One entry per duplicated key and one for all null keys, with the rows concerned."""
        rows = self.session.query(
            f"SELECT {OP}, {KEY}, count(*) AS n FROM {self.table} "
            f"WHERE {OP} IN ('invalid_null_key', 'invalid_duplicate_key') GROUP BY {OP}, {KEY} ORDER BY {OP}, {KEY}"
        ).rows
        return [InvalidKey(str(op), None if key is None else str(key), int(n)) for op, key, n in rows]

    def rows(self, ops: Sequence[str], batch_rows: int) -> Iterator[list[dict[str, Any]]]:
        """The rows of ``ops`` (every column) in batches of dicts keyed by column name."""
        return self.session.stream(sendable_sql(self.spec, ops), batch_rows)

    def copy_records(self, ops: Sequence[str], into: str) -> None:
        """Create table ``into`` with the key and checksum of the rows of ``ops``, in the columns
        the ledger records (``state.ledger.acks_table``: record_key, checksum, identity null,
        delivered false): what settling writes, without a round trip of the keys through Python."""
        self.session.execute(
            f"CREATE TABLE {into} AS SELECT {KEY} AS record_key, {CHECKSUM} AS checksum, "
            f"CAST(NULL AS VARCHAR) AS identity, FALSE AS delivered FROM {self.table} WHERE {_of_ops(ops)}"
        )

    def drop(self) -> None:
        drop_plan(self.session, self.spec.mapping.name, self.spec.shard)


def plan_table(mapping: str, shard: int) -> str:
    """The plan table of a mapping shard (one at a time: a sync holds the shard's lock)."""
    return f"{STATE_SCHEMA}.plan__{mapping}__{shard}"


def drop_plan(session: WarehouseSession, mapping: str, shard: int) -> None:
    """Drop a shard's plan table if it exists: also when the sync failed before its ``Plan`` existed."""
    session.execute(f"DROP TABLE IF EXISTS {plan_table(mapping, shard)}")
