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
invalid_null_key, invalid_duplicate_key), the record key, the checksum to acknowledge (the
ledger's for a delete), the stored ids (deletes only) and the ledger row's sync id (the
generation of the record's message ids). The mapped columns follow under their own names."""
KEY: Final = "__key"
CHECKSUM: Final = "__checksum"
IDENTITY: Final = "__identity"
GENERATION: Final = "__generation"
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
        return plan_table(self.mapping.name, self.shard)

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


def build_plan_sql(spec: PlanSpec) -> str:
    """CREATE the plan table: one row per record to add, update, delete or reject.

    One pass over the model and one over the ledger, matched by a single FULL JOIN on the key:
    a model row with no live ledger row is an add, one whose checksum differs an update, a live
    ledger row no model row matches a delete. (The plan used to find deletes with a second scan
    of the model and a second hash table, an anti-join; at 10M records that was a fifth of its
    time.) Unchanged records match and are filtered out before anything is written, so the
    table holds only the rows to act on. The FULL JOIN finds deletes only because the model side
    is every row of the shard: a watermark (track only, which has no deletes) narrows it."""
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
    changed = "" if events and spec.mapping.send == "add" else " OR l.checksum <> s.__checksum"
    gone = "FALSE" if events else "l.live"
    shared = ""
    if spec.mapping.on_delete == "clear_traits":
        # Only the few delete rows ask the question (one correlated lookup per distinct identity).
        shared = (
            f"CASE WHEN p.__op = 'delete' AND EXISTS (SELECT 1 FROM {ident(spec.table)} AS m "
            f"WHERE {_addresses_same_profile(spec, 'p.__identity')}) THEN 'delete_shared' ELSE p.__op END AS __op, "
        )
    # Duplicated keys are found by a GROUP BY joined back (not a window over every row and
    # column): the few duplicates make a tiny hash table, where the window sorted the whole model.
    planned = f"""
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
    CASE WHEN s.__copies IS NULL THEN 'delete'
         WHEN s.__key IS NULL THEN 'invalid_null_key'
         WHEN s.__copies > 1 THEN 'invalid_duplicate_key'
         WHEN l.record_key IS NULL OR NOT l.live THEN 'add'
         ELSE 'update' END AS __op,
    coalesce(s.__key, l.record_key) AS __key,
    coalesce(s.__checksum, l.checksum) AS __checksum,
    coalesce(s.__copies, 0) AS __copies,
    CASE WHEN s.__copies IS NULL THEN l.identity END AS __identity,
    coalesce(l.sync_id, '') AS __generation{"".join(f", s.{c}" for c in mapped)}
FROM src AS s
FULL JOIN led AS l ON l.record_key = s.__key
LEFT JOIN parked AS k ON k.record_key = coalesce(s.__key, l.record_key)
    AND k.checksum = coalesce(s.__checksum, l.checksum)
WHERE k.record_key IS NULL AND CASE WHEN s.__copies IS NULL THEN {gone}
    ELSE s.__key IS NULL OR s.__copies > 1 OR l.checksum IS NULL OR NOT l.live{changed} END"""
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
    The table's columns (``OP``, ``KEY``, ``CHECKSUM``, ``IDENTITY``, ``GENERATION`` and the mapped
    columns under their own names) are named here only; rows are read through those constants."""

    def __init__(self, spec: PlanSpec, session: WarehouseSession) -> None:
        self.spec = spec
        self.session = session

    @property
    def table(self) -> str:
        return self.spec.plan_table

    def build(self) -> PlanCounts:
        """Create (or replace) the plan table; what it holds, counted."""
        self.session.execute(build_plan_sql(self.spec))
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
