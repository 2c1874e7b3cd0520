"""Render identify, group and track messages in the warehouse, as JSON text, on DuckDB and Snowflake.

Why: building every message as Python dicts was most of a first sync's CPU (about 20 µs of
~30 µs per record at 200k; README, Performance). Here one SQL over the plan table writes each
message's JSON text except the ``messageId`` (a blake2b hash the warehouse cannot compute the
same way), so Python only hashes the id and joins three strings per record.

The Python builder (``payloads.PayloadBuilder``) stays the reference, and this renderer only
takes what it can write **byte for byte** the same way (the equivalence test in
``test_render_sql.py`` runs both on the same rows, on both warehouses, and compares bytes):

- per mapping: ``identify``, ``group`` or ``track`` (a fixed event name or a text column), no
  ``consent`` / ``message_id`` column, fewer traits than Unify's limit, ids and the timestamp
  column of supported types, every trait or property column of a supported type (text,
  boolean, integer, fixed-point decimal, date, timestamp with or without time zone). Anything
  else (floats, whose shortest text no warehouse writes like orjson; JSON / VARIANT columns,
  whose key order and number text Snowflake does not promise; subscriptions, whose context is
  built from many validated fields) renders in Python, as before;
- per row: a row whose text holds a control character the SQL does not escape like orjson, a
  timestamp outside years 1-9999, a decimal orjson would write as more than its own digits
  (over 15 significant digits, or under 1e-5: see ``_number``), a non-integral id, a missing
  id, a groupId Unify would drop, an event name without an ASCII letter or digit, or a message
  that may be over 32 KB gets ``__head = NULL`` and is built (and if need be rejected with its
  reason) by the Python builder, alone.

The SQL is written once in DuckDB's dialect and translated to Snowflake by sqlglot, like every
query here. Where the two warehouses' functions differ in what they write, ``_Dialect`` picks,
for Snowflake, functions whose documented results are exact and do not depend on session
settings: ``REPLACE``/``TRANSLATE`` instead of ``TO_JSON`` (whose escaping is not documented),
``YEAR``/``MONTH``/…/``DATEDIFF`` + ``LPAD`` instead of ``TO_CHAR`` formats, ``LENGTH`` as an
upper bound of the byte size (docs/decisions.md, "Rendering on Snowflake").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from segment_profiles_pipeline.config import EventName
from segment_profiles_pipeline.segment.spec import MAX_GROUP_ID_CHARS, MAX_MESSAGE_BYTES, MAX_TRAITS
from segment_profiles_pipeline.sync.actions import WIRE_TYPE
from segment_profiles_pipeline.sync.payloads import LIBRARY, MAX_SAFE_INTEGER, PayloadBuilder, _iso
from segment_profiles_pipeline.sync.plan import PlanSpec
from segment_profiles_pipeline.warehouse.base import ident, literal

if TYPE_CHECKING:
    import pyarrow as pa

MESSAGE_ID_CHARS = 44
"""``spp-`` + 40 hex digits: the length of every id ``payloads.message_id`` makes."""
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
_FAMILIES = {
    "VARCHAR": "text",
    "TEXT": "text",
    "STRING": "text",
    "BOOLEAN": "boolean",
    "NUMBER": "number",
    "DECIMAL": "number",
    "NUMERIC": "number",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP_NTZ": "timestamp",
    "DATETIME": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "TIMESTAMPTZ": "timestamptz",
    "TIMESTAMP_TZ": "timestamptz",
    "TIMESTAMP_LTZ": "timestamptz",
}
"""Column types (DuckDB's and Snowflake's ``information_schema`` names, without their
``(precision, scale)``) the SQL renders, by how their values are written."""
_ESCAPED_DIFFERENTLY = r"[\x00-\x08\x0b\x0e-\x1f]"
"""Control characters: DuckDB and orjson escape some with different letter case; the rest is
kept off the fast path too, conservatively (tabs, newlines and carriage returns stay on it)."""
_SHORT_ESCAPES = {8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}
"""Control characters orjson writes as a two-character escape; it writes every other one as
``\\u00xx``, which the Snowflake SQL leaves to the builder."""
_MIN_PLAIN_FRACTION = "0.00001"
"""orjson writes a float under 1e-5 in exponent form (``1.5e-6``), at or above it in plain digits."""
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
"""A name holding one of these is never empty once stripped, whatever Python counts as space."""
_FLOAT_DIGITS = 15
"""A decimal of at most 15 significant digits is the shortest text of its nearest float (DBL_DIG),
which is what orjson writes for ``float(Decimal)``; more digits may come back different."""


def _family(sql_type: str) -> str | None:
    kind = sql_type.upper()
    if kind in _INTEGERS:
        return "integer"
    return _FAMILIES.get(kind.split("(")[0].strip())


@dataclass(frozen=True)
class _Value:
    """One column as JSON text: ``text`` is NULL for a null value; ``ok`` is false when the
    Python builder must take the row."""

    text: str
    ok: str = "TRUE"


def _quoted(expr: str) -> str:
    return f"'\"' || {expr} || '\"'"


def _pad(expr: str, width: int) -> str:
    return f"lpad(CAST({expr} AS VARCHAR), {width}, '0')"


def _ymd(expr: str) -> str:
    """``YYYY-MM-DD`` from the date parts: no format string, so no session setting changes it."""
    return f"{_pad(f'year({expr})', 4)} || '-' || {_pad(f'month({expr})', 2)} || '-' || {_pad(f'day({expr})', 2)}"


@dataclass(frozen=True)
class _Dialect:
    """What the warehouses write differently: text escaping, dates and times, byte length."""

    name: str

    def text(self, c: str) -> _Value:
        """A string as orjson writes it, or ``ok`` false where the SQL would write it otherwise."""
        if self.name == "duckdb":  # DuckDB writes \u000B where orjson writes \u000b: those go to Python
            return _Value(
                f"CAST(to_json({c}) AS VARCHAR)",
                f"({c} IS NULL OR NOT regexp_matches({c}, '{_ESCAPED_DIFFERENTLY}'))",
            )
        escaped = f"replace(replace({c}, '\\', '\\\\'), '\"', '\\\"')"
        for code, escape in _SHORT_ESCAPES.items():
            escaped = f"replace({escaped}, chr({code}), {literal(escape)})"
        others = " || ".join(f"chr({code})" for code in range(32) if code not in _SHORT_ESCAPES)
        return _Value(_quoted(escaped), f"({c} IS NULL OR translate({c}, {others}, '') = {c})")

    def date(self, c: str) -> _Value:
        if self.name == "duckdb":
            return _Value(_quoted(f"strftime({c}, '%Y-%m-%d')"), self._in_years(c))
        return _Value(_quoted(_ymd(c)), self._in_years(c))

    def timestamp(self, utc: str) -> _Value:
        """An instant already in UTC as ``_iso`` writes it: milliseconds truncated, then ``Z``."""
        if self.name == "duckdb":
            return _Value(_quoted(f"strftime({utc}, '%Y-%m-%dT%H:%M:%S.%gZ')"), self._in_years(utc))
        millis = f"date_diff('millisecond', date_trunc('second', {utc}), {utc})"
        clock = f"{_pad(f'hour({utc})', 2)} || ':' || {_pad(f'minute({utc})', 2)} || ':' || {_pad(f'second({utc})', 2)}"
        return _Value(
            _quoted(f"{_ymd(utc)} || 'T' || {clock} || '.' || {_pad(millis, 3)} || 'Z'"), self._in_years(utc)
        )

    def _in_years(self, expr: str) -> str:
        """Python's datetime holds years 1-9999; DuckDB holds more (and infinities)."""
        finite = f"isfinite({expr}) AND " if self.name == "duckdb" else ""
        return f"({expr} IS NULL OR ({finite}year({expr}) BETWEEN 1 AND 9999))"

    def joined(self, fragments: list[str]) -> str:
        """``key:value`` fragments (NULL when skipped) joined by commas. DuckDB's ``concat_ws``
        skips NULLs; Snowflake's returns NULL, so there each fragment carries its own comma and
        the first is dropped; on DuckDB that form made the render query slower (0.63-0.69 s vs
        0.46-0.48 s per 100k identifies, side by side on the shared 2-core machine), hence two."""
        if not fragments:
            return "''"
        if self.name == "duckdb":
            return f"concat_ws(',', {', '.join(fragments)})"
        parts = " || ".join(f"coalesce(',' || {f}, '')" for f in fragments)
        return f"substr({parts}, 2)"

    def fits(self, text: str, budget: int) -> str:
        """True only when ``text`` is at most ``budget`` bytes of UTF-8.

        Snowflake's byte length (``OCTET_LENGTH``) cannot run on fakesnow, so there the test is
        four bytes per character, an upper bound: a longer text goes to the builder, which
        measures it exactly."""
        if self.name == "duckdb":
            return f"strlen({text}) <= {budget}"
        return f"length({text}) * 4 <= {budget}"


def _integer(c: str) -> str:
    """Integers beyond JavaScript's safe range go as strings (``payloads._integer``)."""
    digits = f"CAST({c} AS VARCHAR)"
    return f"CASE WHEN {c} BETWEEN -{MAX_SAFE_INTEGER} AND {MAX_SAFE_INTEGER} THEN {digits} ELSE {_quoted(digits)} END"


def _number(c: str) -> _Value:
    """A fixed-point decimal as ``json_value`` + orjson write it: integral values as integers,
    others as ``float(value)``, whose text equals the decimal's own digits (trailing zeros
    dropped) when it has at most 15 significant digits and is at least 1e-5 in size.

    Snowflake documents no exact text for a cast of a NUMBER without a format, so the text must
    also have the one shape orjson writes (``-0.05``, never ``.05`` or ``5E-2``); an anchored
    pattern means the same to DuckDB's ``regexp_matches`` and Snowflake's ``REGEXP_LIKE``."""
    whole = f"CAST({c} AS DECIMAL(38, 0))"
    fraction = f"rtrim(CAST({c} AS VARCHAR), '0')"
    digits = f"length(ltrim(replace(replace({fraction}, '-', ''), '.', ''), '0'))"
    shape = f"regexp_matches({fraction}, '^-?(0|[1-9][0-9]*)[.][0-9]*[1-9]$')"
    return _Value(
        f"CASE WHEN {c} = floor({c}) THEN {_integer(whole)} ELSE {fraction} END",
        f"({c} IS NULL OR {c} = floor({c}) OR "
        f"(abs({c}) >= {_MIN_PLAIN_FRACTION} AND {digits} <= {_FLOAT_DIGITS} AND {shape}))",
    )


def _value(dialect: _Dialect, column: str, sql_type: str) -> _Value:
    """The JSON text ``payloads.json_value`` + orjson would write for this column's value."""
    c = ident(column)
    family = _family(sql_type)
    if family == "text":
        return dialect.text(c)
    if family == "boolean":
        return _Value(f"CASE WHEN {c} THEN 'true' WHEN NOT {c} THEN 'false' END")
    if family == "integer":
        return _Value(_integer(c))
    if family == "number":
        return _number(c)
    if family == "date":
        return dialect.date(c)
    if family in ("timestamp", "timestamptz"):
        return dialect.timestamp(c if family == "timestamp" else f"({c} AT TIME ZONE 'UTC')")
    raise ValueError(f"column {column}: type {sql_type} is not rendered in SQL")


def _id_value(dialect: _Dialect, column: str, sql_type: str) -> _Value:
    """Ids are sent as strings; an empty one counts as missing (``PayloadBuilder.build``). A
    number id is sent as ``str(json_value(value))``: its digits when integral (else Python)."""
    c = ident(column)
    if _family(sql_type) == "integer":
        return _Value(_quoted(f"CAST({c} AS VARCHAR)"))
    if _family(sql_type) == "number":
        return _Value(
            _quoted(f"CAST(CAST({c} AS DECIMAL(38, 0)) AS VARCHAR)"), f"({c} IS NULL OR {c} = floor({c}))"
        )
    return dialect.text(f"nullif({c}, '')")


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class SqlRenderer:
    """The render query for one mapping and the constant tail every message ends with."""

    sql: str
    tail: str

    def messages(self, heads: pa.Array, message_ids: pa.Array) -> list[bytes]:
        """Each rendered ``__head`` + its message id + ``tail``, as the bytes sent: joined by
        Arrow, so the only Python object made per record is the message itself (measured on a
        loaded 2-core machine with the ids: half of the per-record cost of joining Python strings)."""
        import pyarrow as pa  # ~0.2 s, paid by a sync, not by each definitions load
        import pyarrow.compute as pc

        # Snowflake's batches come from Python values: a column of nulls has no type
        heads = heads.cast(pa.string())
        joined = pc.binary_join_element_wise(heads, message_ids.cast(pa.string()), pa.scalar(self.tail), "")
        return joined.cast(pa.binary()).to_pylist()


def _event(dialect: _Dialect, name: EventName, types: dict[str, str]) -> _Value | None:
    """A track's ``event`` as ``track.event`` makes it: the fixed name, or a text column's value.

    The builder rejects a null name or one that ``str.strip()`` leaves empty; Python strips
    Unicode spaces that SQL's ``trim`` keeps, so only a name holding an ASCII letter or digit
    (found with ``TRANSLATE``) is rendered here, every other one goes to the builder."""
    if name.value is not None:
        return _Value(literal(_json(name.value)))
    column = (name.column or "").lower()
    if _family(types.get(column, "")) != "text":
        return None
    c = ident(column)
    text = dialect.text(c)
    return _Value(
        text.text, f"({text.ok} AND {c} IS NOT NULL AND translate({c}, {literal(_ALNUM)}, '') <> {c})"
    )


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
    sql_dialect = _Dialect(dialect)
    event = _event(sql_dialect, m.event_name, types) if m.event_name is not None else None
    if (
        dialect not in ("duckdb", "snowflake")
        or m.action not in ("identify", "group", "track")
        or m.consent
        or m.message_id
        or (m.action == "track" and event is None)
        or (len(builder.traits) >= MAX_TRAITS and m.action != "track")
        or any(_family(types.get(c, "")) is None for c in columns)
        or (m.timestamp and _family(types[m.timestamp.lower()]) not in ("timestamp", "timestamptz"))
        or any(_family(types[c]) not in ("text", "integer", "number") for _, c in id_columns)
    ):
        return None
    ids = {field: _id_value(sql_dialect, column, types[column]) for field, column in id_columns}
    traits = []
    oks = [v.ok for v in ids.values()] + ([event.ok] if event else [])
    for key, (column, skip_nulls) in builder.traits.items():
        value = _value(sql_dialect, column, types[column])
        oks.append(value.ok)
        prefix = literal(_json(key) + ":")
        traits.append(
            f"{prefix} || {value.text}" if skip_nulls else f"{prefix} || coalesce({value.text}, 'null')"
        )
    present = [f"{v.text} IS NOT NULL" for f, v in ids.items() if f in ("userId", "anonymousId")]
    oks.append(f"({' OR '.join(present) or 'FALSE'})")
    if m.action == "group":
        gid = f"CAST({ident(dict(id_columns)['groupId'])} AS VARCHAR)"
        oks.append(f"(nullif({gid}, '') IS NOT NULL AND length({gid}) <= {MAX_GROUP_ID_CHARS})")
    stamp = literal(_json(_iso(now)))
    if m.timestamp:
        value = _value(sql_dialect, m.timestamp.lower(), types[m.timestamp.lower()])
        oks.append(value.ok)
        stamp = f"coalesce({value.text}, {stamp})"
    head = " || ".join(
        [
            literal('{"type":' + _json(WIRE_TYPE[m.action])),
            *(f"coalesce({literal(',' + _json(f) + ':')} || {v.text}, '')" for f, v in ids.items()),
            *([literal(',"event":'), event.text] if event else []),
            literal("," + _json(builder.values_key) + ":{"),
            sql_dialect.joined(traits),
            literal('},"timestamp":'),
            stamp,
            literal(',"messageId":"'),
        ]
    )
    identity = " || ".join(
        [
            "'{'",
            sql_dialect.joined(
                [
                    f"{literal(_json(f) + ':')} || {ids[f].text}"
                    for f in ("userId", "anonymousId", "groupId")
                    if f in ids
                ]
            ),
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
    SELECT *, CASE WHEN {sql_dialect.fits("__text", budget)} THEN __text END AS __head
    FROM (
        SELECT *, CASE WHEN __op <> 'delete' AND {" AND ".join(oks)} THEN {head} END AS __text,
               {identity} AS __ident
        FROM {plan.plan_table}
        WHERE __op IN ({", ".join(literal(o) for o in ops)})
    )
)"""
    return SqlRenderer(sql, tail)
