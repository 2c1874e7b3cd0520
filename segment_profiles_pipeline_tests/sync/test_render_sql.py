"""The SQL renderer writes exactly the bytes the Python builder writes, or leaves the row to it.

The Python builder (``payloads.PayloadBuilder`` + ``encode``) is the reference: every row of a
table holding every supported type, with edge values, is rendered both ways and compared byte
for byte, on DuckDB and on the Snowflake path (fakesnow); rows the renderer must not take
(control characters not escaped like orjson, years Python cannot hold, decimals whose float text
is not their own digits, non-integral ids, missing ids, over-long group ids, messages over
32 KB, track events without a name) are asserted to be left to the builder, and mappings it
cannot render (floats, JSON, a track named by a non-text column) get none.

fakesnow runs the Snowflake SQL on DuckDB after translating it, so on that path this proves the
SQL's logic and sqlglot's translation, not Snowflake's own formatting (docs/decisions.md,
"Rendering on Snowflake"); ``test_snowflake_sql_uses_no_session_dependent_formatting`` checks
the translated text for the functions that decision relies on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlglot

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.state import ensure_state
from segment_profiles_pipeline.sync import engine
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.sync.payloads import PayloadBuilder, encode, identity_of
from segment_profiles_pipeline.sync.plan import build_plan_sql, sendable_sql
from segment_profiles_pipeline.sync.render_sql import SqlRenderer, sql_renderer
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.dialect import to_dialect
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import dialect_session, fake_snowflake

NOW = dt.datetime(2026, 3, 1, 9, 0)
ID = "spp-" + "ab" * 20
OPS = ("add", "update")
TYPES = {
    "id": "VARCHAR",
    "uid": "VARCHAR",
    "aid": "BIGINT",
    "gid": "VARCHAR",
    "txt": "VARCHAR",
    "flag": "BOOLEAN",
    "small": "SMALLINT",
    "big": "BIGINT",
    "price": "DECIMAL(10, 2)",
    "wide": "DECIMAL(38, 10)",
    "day": "DATE",
    "ts": "TIMESTAMP",
    "tstz": "TIMESTAMPTZ",
    "seen": "TIMESTAMP",
}

DUCKDB_ONLY_TYPES = {"huge": "HUGEINT", "ubig": "UBIGINT"}
"""fakesnow stores NUMBER(38,0) as a 64-bit integer: values beyond it exist on DuckDB only."""
ROWS = {
    # id: uid, aid, gid, txt, flag, small, big, price, wide, day, ts, tstz, seen
    "r1": "'u1', 7, 'g1', 'plain', TRUE, -32768, 9007199254740991, 12.50, 123456789012.5, DATE '2026-03-01', "
    "TIMESTAMP '2026-03-01 09:00:00.999999', TIMESTAMPTZ '2026-03-01 09:00:00+05', TIMESTAMP '2026-02-01 00:00:00'",
    "r2": "'u2', NULL, 'g2', 'é日本 😀 \u2028 / \\ \" tab' || chr(9) || 'nl' || chr(10) || 'cr' || chr(13) || "
    "'ff' || chr(12), FALSE, 0, -9007199254740992, -0.05, -0.00001, DATE '0999-12-31', "
    "TIMESTAMP '0999-01-01 00:00:00.1234', NULL, NULL",
    "r3": "'', 8, 'g3', NULL, NULL, NULL, 9223372036854775807, 100.00, 5.0000000000, NULL, NULL, NULL, NULL",
    "r4": "NULL, NULL, 'g4', 'x', TRUE, 1, 1, 1, 1, NULL, NULL, NULL, NULL",  # no id at all: the builder rejects it
    "r5": "'u5', NULL, 'g5', 'vertical' || chr(11) || 'tab', TRUE, 1, 1, 1, 1, NULL, NULL, NULL, NULL",
    "r7": "'u7', NULL, repeat('g', 501), 'x', TRUE, 1, 1, 1, 1, NULL, NULL, NULL, NULL",
    "r8": "'u8', NULL, 'g8', repeat('x', 33000), TRUE, 1, 1, 1, 1, NULL, NULL, NULL, NULL",
    # 12,000 characters, 24,000 bytes, twice (txt, skipped_text): over 32 KB only counted in bytes
    "r14": "'u14', NULL, 'g14', repeat('é', 12000), TRUE, 1, 1, 1, 1, NULL, NULL, NULL, NULL",
    "r9": "'u' || chr(31), NULL, 'g9', 'x', TRUE, 1, 1, 1, 1, NULL, NULL, NULL, NULL",
    "r10": "'u10', NULL, 'g10', 'nul' || chr(0), TRUE, 1, 1, 1, 1, NULL, NULL, NULL, NULL",
    # 16 significant digits: float() of it does not print as its digits (the builder takes it)
    "r11": "'u11', NULL, 'g11', 'x', TRUE, 1, 1, 1, 123456.7890123456, NULL, NULL, NULL, NULL",
    # under 1e-5: orjson writes the float in exponent form (the builder takes it)
    "r12": "'u12', NULL, 'g12', 'x', TRUE, 1, 1, 1, 0.000001, NULL, NULL, NULL, NULL",
    # a backspace: orjson writes \b; the Snowflake SQL too, DuckDB's to_json is not trusted with it
    "r13": "'u13', NULL, 'g13', 'back' || chr(8) || 'space', TRUE, 1, 1, 1, 1, NULL, NULL, NULL, NULL",
    # a track's event name (gid) that str.strip() empties: the builder rejects it
    "r15": "'u15', NULL, ' ' || chr(9), 'x', TRUE, 1, 1, 1, 1, NULL, NULL, NULL, NULL",
}
DUCKDB_ONLY_ROWS = {
    "r6": "'u6', NULL, 'g6', 'x', TRUE, 1, 1, 1, 1, DATE '10000-01-01', TIMESTAMP 'infinity', NULL, NULL",
}
"""Years Python cannot hold: Snowflake's connector cannot return them either, so DuckDB only."""
HUGE = {"r1": "170141183460469231731687303715884105727, 18446744073709551615", "r3": "-1, 9007199254740992"}
LEFT_TO_BUILDER = {"r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12", "r14"}
LEFT_TO_BUILDER_ON_DUCKDB = {"r13"}


def _message(renderer: SqlRenderer, head: str) -> bytes:
    """The message ``renderer`` makes of one rendered head, under the test's id."""
    (message,) = renderer.messages(pa.array([head]), pa.array([ID]))
    return message


def _keys(session: WarehouseSession) -> set[str]:
    return set(ROWS) | (set(DUCKDB_ONLY_ROWS) if session.dialect == "duckdb" else set())


def _left_to_builder(session: WarehouseSession, spec: MappingSpec) -> set[str]:
    left = LEFT_TO_BUILDER | (LEFT_TO_BUILDER_ON_DUCKDB if session.dialect == "duckdb" else set())
    if spec.mapping.action == "group":
        left |= {"r7"}  # groupId over 500 characters
    if spec.mapping.event_name is not None and spec.mapping.event_name.column:
        left |= {"r15"}
    return left & _keys(session)


def _table(session: WarehouseSession) -> None:
    """The table of every type, on either warehouse."""
    duckdb = session.dialect == "duckdb"
    types = TYPES | (DUCKDB_ONLY_TYPES if duckdb else {})
    rows = ROWS | (DUCKDB_ONLY_ROWS if duckdb else {})
    session.execute("CREATE SCHEMA IF NOT EXISTS models")
    session.execute(
        f"CREATE OR REPLACE TABLE models.every_type ({', '.join(f'{c} {t}' for c, t in types.items())})"
    )
    values = [
        f"('{key}', {row}{', ' + HUGE.get(key, 'NULL, NULL') if duckdb else ''})" for key, row in rows.items()
    ]
    session.execute("INSERT INTO models.every_type VALUES " + ", ".join(values))


def _spec(action: str, **overrides: Any) -> MappingSpec:
    fields: dict[str, Any] = {
        "name": f"every_type_{action}",
        "action": action,
        "user_id": "uid",
        "anonymous_id": "aid",
        "traits": {c: c for c in ("txt", "flag", "small", "big", "price", "wide", "day", "ts", "tstz")}
        | {"skipped_text": {"column": "txt", "nulls": "skip"}, 'we "quote" \\': "small"},
        "timestamp": "seen",
    }
    if action == "group":
        fields["group_id"] = "gid"
    if action == "track":
        fields["properties"] = fields.pop("traits")
        fields["event_name"] = {"column": "gid"}
    mapping = MappingConfig(**{**fields, **overrides})
    return MappingSpec(SyncSource("every_type", ("every_type",), "models.every_type", "id", "x.yml"), mapping)


@pytest.fixture(params=["duckdb", "snowflake"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WarehouseSession]:
    """A session on each warehouse, holding the table of every type."""
    with dialect_session(request.param, tmp_path) as s:
        if request.param == "duckdb":
            s.execute("SET TimeZone = 'America/New_York'")  # timestamps must not follow the session's zone
        yield _ready(s)


def _ready(session: WarehouseSession) -> WarehouseSession:
    ensure_state(session)
    _table(session)
    return session


def _both(
    session: WarehouseSession, spec: MappingSpec
) -> tuple[PayloadBuilder, SqlRenderer | None, dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The builder, the renderer, and the plan's rows as the builder and the renderer read them."""
    plan = engine._plan_spec(session, spec, 0)
    session.execute(build_plan_sql(plan))
    builder = PayloadBuilder.for_mapping(spec.mapping, dict(plan.column_types))
    renderer = sql_renderer(plan, builder, session.dialect, NOW, OPS)
    full = {r["__key"]: r for rows in session.stream(sendable_sql(plan, OPS), 100) for r in rows}
    rendered = {r["__key"]: r for rows in session.stream(renderer.sql, 100) for r in rows} if renderer else {}
    return builder, renderer, full, rendered


@pytest.mark.parametrize(
    ("action", "overrides"),
    [
        ("identify", {}),
        ("group", {}),
        ("track", {}),
        ("track", {"event_name": {"value": 'Plan "changed" \\ é'}}),
    ],
    ids=["identify", "group", "track", "track with a fixed name"],
)
def test_sql_rendered_messages_are_byte_identical_to_the_python_builder(session, action, overrides) -> None:
    spec = _spec(action, **overrides)
    builder, renderer, full, rendered = _both(session, spec)
    assert renderer is not None and set(rendered) == set(full) == _keys(session)
    fast = {key for key, row in rendered.items() if row["__head"] is not None}
    assert fast == _keys(session) - _left_to_builder(session, spec)
    for key in fast:
        expected = builder.build(full[key], ID, NOW)
        assert _message(renderer, rendered[key]["__head"]) == encode(expected), key
        assert rendered[key]["__ident"] == identity_of(expected), key


def test_the_reference_rows_hold_the_edge_values(session) -> None:
    """The byte comparison above is only as good as its rows: show the builder's side of them."""
    builder, _, full, _ = _both(session, _spec("identify"))
    traits = {key: builder.build(full[key], ID, NOW)["traits"] for key in ("r1", "r2", "r3")}
    assert (
        traits["r1"]["tstz"] == "2026-03-01T04:00:00.000Z"
        and traits["r1"]["ts"] == "2026-03-01T09:00:00.999Z"
    )
    assert traits["r1"]["big"] == 9007199254740991 and traits["r3"]["big"] == "9223372036854775807"
    assert (traits["r1"]["price"], traits["r2"]["price"], traits["r3"]["price"]) == (12.5, -0.05, 100)
    assert (traits["r1"]["wide"], traits["r2"]["wide"], traits["r3"]["wide"]) == (123456789012.5, -0.00001, 5)
    assert traits["r2"]["day"] == "0999-12-31" and traits["r2"]["ts"] == "0999-01-01T00:00:00.123Z"
    assert "skipped_text" not in traits["r3"] and traits["r3"]["txt"] is None
    assert isinstance(full["r1"]["price"], Decimal)


def test_a_builder_row_gets_the_same_bytes_as_its_full_row(session) -> None:
    """Rows left to the builder carry their mapped values; rendered rows fetch none."""
    _, _, full, rendered = _both(session, _spec("identify"))
    mapped = [c for c in TYPES if c in rendered["r4"]]
    assert {"uid", "aid", "txt", "price", "tstz", "seen"} <= set(mapped)
    for key in _left_to_builder(session, _spec("identify")):
        assert {c: rendered[key][c] for c in mapped} == {c: full[key][c] for c in mapped}
    assert all(rendered["r1"][c] is None for c in mapped)


def test_rows_left_to_the_builder_reach_it_as_stream_gives_them(session) -> None:
    """The engine reads the render query as Arrow batches; the rows the builder takes come back
    through ``arrow_rows`` as the very values ``stream`` gives (r6's year-10000 date is text
    there, which Arrow's own conversion to Python cannot even hold)."""
    spec = _spec("identify")
    _, renderer, _, rendered = _both(session, spec)
    assert renderer is not None
    batches = list(session.stream_arrow(renderer.sql, 100))
    rows = [r for b in batches for r in session.arrow_rows(b.filter(pc.is_null(b["__head"])))]
    assert sorted(r["__key"] for r in rows) == sorted(_left_to_builder(session, spec))
    for row in rows:
        expected = rendered[row["__key"]]
        assert [(k, type(v), v) for k, v in row.items()] == [(k, type(v), v) for k, v in expected.items()]


def test_huge_integers_go_as_strings_on_duckdb(warehouse) -> None:
    with warehouse.session() as session:
        _ready(session)
        builder, renderer, full, rendered = _both(
            session, _spec("identify", traits={"h": "huge", "u": "ubig"})
        )
        assert renderer is not None
        for key in ("r1", "r3"):
            assert _message(renderer, rendered[key]["__head"]) == encode(builder.build(full[key], ID, NOW))
        assert orjson.loads(_message(renderer, rendered["r1"]["__head"]))["traits"] == {
            "h": str(2**127 - 1),
            "u": str(2**64 - 1),
        }


@pytest.mark.parametrize(
    ("id_column", "builder_keys"),
    [("price", {"r1", "r2"}), ("big", set())],
    ids=["decimal: a fraction goes to the builder", "integer"],
)
def test_number_ids_are_sent_as_their_digits(session, id_column, builder_keys) -> None:
    builder, renderer, full, rendered = _both(
        session, _spec("identify", user_id=id_column, traits={"t": "txt"})
    )
    assert renderer is not None
    for key in {"r1", "r2", "r3"} - builder_keys:
        assert _message(renderer, rendered[key]["__head"]) == encode(builder.build(full[key], ID, NOW)), key
    assert {k for k in ("r1", "r2", "r3") if rendered[k]["__head"] is None} == builder_keys


@pytest.mark.parametrize(
    "overrides",
    [
        {"traits": {"score": "small"}, "consent": "txt"},
        {"traits": {"score": "small"}, "message_id": "txt"},
        {"traits": {"score": "ratio"}},
        {"traits": {"score": "doc"}},
        {"action": "track", "event_name": {"column": "small"}, "traits": {}, "properties": {"s": "txt"}},
    ],
    ids=["consent", "message_id", "double", "json", "track named by a number column"],
)
def test_mappings_the_renderer_cannot_match_byte_for_byte_stay_in_python(session, overrides) -> None:
    session.execute("ALTER TABLE models.every_type ADD COLUMN ratio DOUBLE")
    session.execute("ALTER TABLE models.every_type ADD COLUMN doc JSON")
    fields = {k: v for k, v in overrides.items() if k != "action"}
    _, renderer, _, _ = _both(session, _spec(overrides.get("action", "identify"), **fields))
    assert renderer is None


def test_snowflake_sql_uses_no_session_dependent_formatting(warehouse) -> None:
    """fakesnow ignores TO_CHAR formats and cannot change TIMEZONE or *_OUTPUT_FORMAT, so what
    only real Snowflake could show is checked in the SQL it is sent: no format strings, no
    TO_JSON (its escaping and key order are not documented), UTC by CONVERT_TIMEZONE, and the
    date parts padded explicitly."""
    with fake_snowflake() as snowflake, snowflake.session() as session:
        _ready(session)
        plan = engine._plan_spec(session, _spec("identify"), 0)
        builder = PayloadBuilder.for_mapping(_spec("identify").mapping, dict(plan.column_types))
        renderer = sql_renderer(plan, builder, "snowflake", NOW, OPS)
    assert renderer is not None
    sql = to_dialect(renderer.sql, "snowflake").upper()
    assert sqlglot.parse_one(sql, read="snowflake") is not None
    for absent in ("TO_JSON", "TO_CHAR", "TO_VARCHAR", "STRFTIME", "CONCAT_WS", "OBJECT_CONSTRUCT", "STRLEN"):
        assert absent not in sql, absent
    assert "CONVERT_TIMEZONE('UTC', TSTZ)" in sql and "CONVERT_TIMEZONE('UTC', TS)" not in sql
    assert "LPAD(CAST(YEAR(TS) AS VARCHAR), 4, '0')" in sql
    assert "DATEDIFF(MILLISECOND, DATE_TRUNC('SECOND', TS), TS)" in sql


@pytest.mark.parametrize(("action", "rejected"), [("identify", 3), ("track", 4)])
def test_a_sync_sends_the_same_messages_with_and_without_the_renderer(
    session, monkeypatch, action, rejected
) -> None:
    """r4: no id; r8 and r14: over 32 KB; track's r15: an empty event name."""
    spec = _spec(action)
    fast = ScriptedSender()
    report = run_sync(session, spec, fast, now=NOW)
    session.execute("DROP SCHEMA _segment_profiles CASCADE")
    monkeypatch.setattr(engine, "sql_renderer", lambda *_a: None)
    slow = ScriptedSender()
    reference = run_sync(session, spec, slow, now=NOW)

    def by_id(sent: list[dict]) -> list[dict]:
        return sorted(sent, key=lambda m: m["messageId"])

    assert by_id(fast.sent) == by_id(slow.sent) and len(fast.sent) == len(_keys(session)) - rejected
    assert report.counts == reference.counts and report.counts["rejected"] == rejected
