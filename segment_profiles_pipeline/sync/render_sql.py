"""Render identify and group messages in the warehouse, as JSON text, for the common shapes.

Why: building every message as Python dicts was most of a first sync's CPU (about 20 µs of
~30 µs per record at 200k; README, Performance). Here one SQL over the plan table writes each
message's JSON text except the ``messageId`` (a blake2b hash the warehouse cannot compute the
same way), so Python only hashes the id and joins three strings per record.

The Python builder (``payloads.PayloadBuilder``) stays the reference, and this renderer only
takes what it can write **byte for byte** the same way (the equivalence test in
``test_render_sql.py`` compares bytes):

- per mapping: DuckDB, ``identify`` or ``group``, no ``consent`` / ``message_id`` column, fewer
  traits than Unify's limit, ids and the timestamp column of supported types, every trait
  column of a supported type (text, boolean, integer, date, timestamp, timestamp with time
  zone). Anything else (floats and decimals, whose shortest text differs between DuckDB and
  orjson; JSON columns; track and subscription) renders in Python, as before;
- per row: a row whose text holds a control character DuckDB escapes differently
  (``\\u000B`` where orjson writes ``\\u000b``), a timestamp outside years 1-9999, a missing
  id, a groupId Unify would drop, or a message over 32 KB gets ``__head = NULL`` and is built
  (and if need be rejected with its reason) by the Python builder, alone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import orjson

from segment_profiles_pipeline.segment.spec import MAX_GROUP_ID_CHARS, MAX_MESSAGE_BYTES, MAX_TRAITS
from segment_profiles_pipeline.sync.payloads import LIBRARY, PayloadBuilder, _iso
from segment_profiles_pipeline.sync.plan import PlanSpec
from segment_profiles_pipeline.warehouse.base import ident, literal

MESSAGE_ID_CHARS = 44
"""``spp-`` + 40 hex digits: the length of every id ``payloads.message_id`` makes."""
_ESCAPED_DIFFERENTLY = r"[\x00-\x08\x0b\x0e-\x1f]"
"""Control characters: DuckDB and orjson escape some with different letter case; the rest is
kept off the fast path too, conservatively (tabs, newlines and carriage returns stay on it)."""
_INTEGERS = frozenset(
    {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "UHUGEINT",
    }
)
_TIMESTAMPS = frozenset({"TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"})
_MAX_SAFE = 2**53 - 1


@dataclass(frozen=True)
class _Value:
    """One column as JSON text: ``text`` is NULL for a null value; ``ok`` is false when the
    Python builder must take the row."""

    text: str
    ok: str = "TRUE"


def _family(sql_type: str) -> str | None:
    kind = sql_type.upper()
    if kind == "VARCHAR" or kind.startswith("VARCHAR("):
        return "text"
    if kind == "BOOLEAN":
        return "boolean"
    if kind in _INTEGERS:
        return "integer"
    if kind == "DATE":
        return "date"
    if kind in _TIMESTAMPS:
        return "timestamptz" if kind != "TIMESTAMP" else "timestamp"
    return None


def _value(column: str, sql_type: str) -> _Value:
    """The JSON text ``payloads.json_value`` + orjson would write for this column's value."""
    c = ident(column)
    family = _family(sql_type)
    if family == "text":
        return _Value(
            f"CAST(to_json({c}) AS VARCHAR)",
            f"({c} IS NULL OR NOT regexp_matches({c}, '{_ESCAPED_DIFFERENTLY}'))",
        )
    if family == "boolean":
        return _Value(f"CASE WHEN {c} THEN 'true' WHEN NOT {c} THEN 'false' END")
    if family == "integer":  # beyond JavaScript's safe range integers go as strings (payloads._integer)
        return _Value(
            f"CASE WHEN {c} BETWEEN -{_MAX_SAFE} AND {_MAX_SAFE} THEN CAST({c} AS VARCHAR) "
            f"ELSE '\"' || CAST({c} AS VARCHAR) || '\"' END"
        )
    if family == "date":
        return _Value(f"'\"' || strftime({c}, '%Y-%m-%d') || '\"'", _in_years(c))
    if family in ("timestamp", "timestamptz"):
        utc = c if family == "timestamp" else f"({c} AT TIME ZONE 'UTC')"
        return _Value(f"'\"' || strftime({utc}, '%Y-%m-%dT%H:%M:%S.%gZ') || '\"'", _in_years(utc))
    raise ValueError(f"column {column}: type {sql_type} is not rendered in SQL")


def _in_years(expr: str) -> str:
    """Python's datetime holds years 1-9999; DuckDB holds more (and infinities)."""
    return f"({expr} IS NULL OR (isfinite({expr}) AND year({expr}) BETWEEN 1 AND 9999))"


def _id_value(column: str, sql_type: str) -> _Value:
    """Ids are sent as strings; an empty one counts as missing (``PayloadBuilder.build``)."""
    c = ident(column)
    if _family(sql_type) == "integer":
        return _Value(f"'\"' || CAST({c} AS VARCHAR) || '\"'")
    return _Value(
        f"CAST(to_json(nullif({c}, '')) AS VARCHAR)",
        f"({c} IS NULL OR NOT regexp_matches({c}, '{_ESCAPED_DIFFERENTLY}'))",
    )


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class SqlRenderer:
    """The render query for one mapping and the constant tail every message ends with."""

    sql: str
    tail: str

    def message(self, head: str, message_id: str) -> bytes:
        return (head + message_id + self.tail).encode()


def sql_renderer(
    plan: PlanSpec, builder: PayloadBuilder, dialect: str, now: dt.datetime, ops: tuple[str, ...]
) -> SqlRenderer | None:
    """The renderer for this mapping, or None when the Python builder must render it."""
    m = builder.mapping
    types = dict(plan.column_types)
    id_columns = [(field, column.lower()) for field, column in m.id_columns().items()]
    columns = [c for _, c in id_columns] + [column for column, _ in builder.traits.values()]
    if m.timestamp:
        columns.append(m.timestamp.lower())
    if (
        dialect != "duckdb"
        or m.action not in ("identify", "group")
        or m.consent
        or m.message_id
        or m.event_name is not None
        or len(builder.traits) >= MAX_TRAITS
        or any(_family(types.get(c, "")) is None for c in columns)
        or (m.timestamp and _family(types[m.timestamp.lower()]) not in ("timestamp", "timestamptz"))
        or any(_family(types[c]) not in ("text", "integer") for _, c in id_columns)
    ):
        return None
    ids = {field: _id_value(column, types[column]) for field, column in id_columns}
    traits = []
    oks = [v.ok for v in ids.values()]
    for key, (column, skip_nulls) in builder.traits.items():
        value = _value(column, types[column])
        oks.append(value.ok)
        pair = f"{literal(_json(key) + ':')} || {value.text}"
        traits.append(
            f"CASE WHEN {value.text} IS NOT NULL THEN {pair} END"
            if skip_nulls
            else f"{literal(_json(key) + ':')} || coalesce({value.text}, 'null')"
        )
    present = [f"{v.text} IS NOT NULL" for f, v in ids.items() if f in ("userId", "anonymousId")]
    oks.append(f"({' OR '.join(present) or 'FALSE'})")
    if m.action == "group":
        gid = ident(dict(id_columns)["groupId"])
        oks.append(
            f"(nullif(CAST({gid} AS VARCHAR), '') IS NOT NULL AND length(CAST({gid} AS VARCHAR)) <= {MAX_GROUP_ID_CHARS})"
        )
    stamp = literal(_json(_iso(now)))
    if m.timestamp:
        value = _value(m.timestamp.lower(), types[m.timestamp.lower()])
        oks.append(value.ok)
        stamp = f"coalesce({value.text}, {stamp})"
    head = " || ".join(
        [
            literal('{"type":' + _json(m.action)),
            *(f"coalesce({literal(',' + _json(f) + ':')} || {v.text}, '')" for f, v in ids.items()),
            literal(',"traits":{'),
            f"concat_ws(',', {', '.join(traits)})" if traits else "''",
            literal('},"timestamp":'),
            stamp,
            literal(',"messageId":"'),
        ]
    )
    identity = " || ".join(
        [
            "'{'",
            "concat_ws(',', "
            + ", ".join(
                f"{literal(_json(f) + ':')} || {ids[f].text}"
                for f in ("userId", "anonymousId", "groupId")
                if f in ids
            )
            + ")"
            if ids
            else "''",
            "'}'",
        ]
    )
    tail = (
        '","integrations":'
        + _json(m.integrations)
        + ',"context":'
        + _json({"library": LIBRARY, "consent": {}})
        + "}"
    )
    budget = MAX_MESSAGE_BYTES - MESSAGE_ID_CHARS - len(tail.encode())
    mapped = ", ".join(
        f"CASE WHEN __head IS NULL THEN {ident(c)} END AS {ident(c)}"
        for c in dict.fromkeys(plan.mapped_columns)
    )
    # Innermost: the text; then over-size texts dropped (the builder rejects them with the exact
    # reason); outermost: the mapped columns only for rows the builder takes (fewer values to fetch).
    sql = f"""
SELECT __op, __key, __checksum, __identity, __generation, __head, __ident{", " + mapped if mapped else ""}
FROM (
    SELECT *, CASE WHEN strlen(__text) <= {budget} THEN __text END AS __head
    FROM (
        SELECT *, CASE WHEN __op <> 'delete' AND {" AND ".join(oks)} THEN {head} END AS __text,
               {identity} AS __ident
        FROM {plan.plan_table}
        WHERE __op IN ({", ".join(literal(o) for o in ops)})
    )
)"""
    return SqlRenderer(sql, tail)
