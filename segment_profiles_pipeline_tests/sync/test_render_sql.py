"""The SQL renderer writes exactly the bytes the Python builder writes, or leaves the row to it.

The Python builder (``payloads.PayloadBuilder`` + ``encode``) is the reference: every row of a
table holding every supported type, with edge values, is rendered both ways and compared byte
for byte; rows the renderer must not take (control characters DuckDB escapes differently,
years Python cannot hold, missing ids, over-long group ids, messages over 32 KB) are asserted to
be left to the builder, and mappings it cannot render (floats, JSON, track, Snowflake) get none.
"""

import datetime as dt

import pytest

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.sync import engine
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.sync.payloads import PayloadBuilder, encode, identity_of
from segment_profiles_pipeline.sync.plan import build_plan_sql, sendable_sql
from segment_profiles_pipeline.sync.render_sql import sql_renderer
from segment_profiles_pipeline.sync.state import ensure_state
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender

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
    "small": "TINYINT",
    "big": "HUGEINT",
    "ubig": "UBIGINT",
    "day": "DATE",
    "ts": "TIMESTAMP",
    "tstz": "TIMESTAMPTZ",
    "seen": "TIMESTAMP",
}
ROWS = [
    # id, uid, aid, gid, txt, flag, small, big, ubig, day, ts, tstz, seen
    "'r1', 'u1', 7, 'g1', 'plain', TRUE, -128, 9007199254740991, 18446744073709551615, DATE '2026-03-01', "
    "TIMESTAMP '2026-03-01 09:00:00.999999', TIMESTAMPTZ '2026-03-01 09:00:00+05', TIMESTAMP '2026-02-01 00:00:00'",
    "'r2', 'u2', NULL, 'g2', 'é日本 😀 \u2028 / \\ \" tab\tnl\ncr\r', FALSE, 0, -9007199254740992, 0, DATE '0999-12-31', "
    "TIMESTAMP '0999-01-01 00:00:00.1234', NULL, NULL",
    "'r3', '', 8, 'g3', NULL, NULL, NULL, 170141183460469231731687303715884105727, 9007199254740992, NULL, NULL, NULL, NULL",
    "'r4', NULL, NULL, 'g4', 'x', TRUE, 1, 1, 1, NULL, NULL, NULL, NULL",  # no id at all: the builder rejects it
    "'r5', 'u5', NULL, 'g5', 'vertical' || chr(11) || 'tab', TRUE, 1, 1, 1, NULL, NULL, NULL, NULL",
    "'r6', 'u6', NULL, 'g6', 'x', TRUE, 1, 1, 1, DATE '10000-01-01', TIMESTAMP 'infinity', NULL, NULL",
    "'r7', 'u7', NULL, repeat('g', 501), 'x', TRUE, 1, 1, 1, NULL, NULL, NULL, NULL",
    "'r8', 'u8', NULL, 'g8', repeat('x', 33000), TRUE, 1, 1, 1, NULL, NULL, NULL, NULL",
    "'r9', 'u' || chr(31), NULL, 'g9', 'x', TRUE, 1, 1, 1, NULL, NULL, NULL, NULL",
]
LEFT_TO_BUILDER = {"identify": {"r4", "r5", "r6", "r8", "r9"}, "group": {"r4", "r5", "r6", "r7", "r8", "r9"}}


def _table(session) -> None:
    session.execute("CREATE SCHEMA IF NOT EXISTS models")
    columns = ", ".join(f"{c} {t}" for c, t in TYPES.items())
    session.execute(f"CREATE OR REPLACE TABLE models.every_type ({columns})")
    session.execute("INSERT INTO models.every_type VALUES " + ", ".join(f"({r})" for r in ROWS))


def _spec(action: str, **overrides) -> MappingSpec:
    fields = {
        "name": f"every_type_{action}",
        "action": action,
        "user_id": "uid",
        "anonymous_id": "aid",
        "traits": {c: c for c in ("txt", "flag", "small", "big", "ubig", "day", "ts", "tstz")}
        | {"skipped_text": {"column": "txt", "nulls": "skip"}, 'we "quote"': "small"},
        "timestamp": "seen",
    }
    if action == "group":
        fields["group_id"] = "gid"
    mapping = MappingConfig(**{**fields, **overrides})
    return MappingSpec(SyncSource("every_type", ("every_type",), "models.every_type", "id", "x.yml"), mapping)


@pytest.fixture
def session(warehouse):
    with warehouse.session() as s:
        s.execute("SET TimeZone = 'America/New_York'")
        ensure_state(s)
        _table(s)
        yield s


def _both(session, spec: MappingSpec):
    plan = engine._plan_spec(session, spec, 0)
    session.execute(build_plan_sql(plan))
    builder = PayloadBuilder.for_mapping(spec.mapping, dict(plan.column_types))
    renderer = sql_renderer(plan, builder, session.dialect, NOW, OPS)
    full = {r["__key"]: r for rows in session.stream(sendable_sql(plan, OPS), 100) for r in rows}
    rendered = {r["__key"]: r for rows in session.stream(renderer.sql, 100) for r in rows} if renderer else {}
    return builder, renderer, full, rendered


@pytest.mark.parametrize("action", ["identify", "group"])
def test_sql_rendered_messages_are_byte_identical_to_the_python_builder(session, action) -> None:
    builder, renderer, full, rendered = _both(session, _spec(action))
    assert renderer is not None and set(rendered) == set(full)
    fast = {key for key, row in rendered.items() if row["__head"] is not None}
    assert fast == {f"r{i}" for i in range(1, 10)} - LEFT_TO_BUILDER[action]
    for key in fast:
        expected = builder.build(full[key], ID, NOW)
        assert renderer.message(rendered[key]["__head"], ID) == encode(expected), key
        assert rendered[key]["__ident"] == identity_of(expected), key


def test_rows_left_to_the_builder_carry_their_values(session) -> None:
    _, _, full, rendered = _both(session, _spec("identify"))
    mapped = [c for c in TYPES if c in rendered["r4"]]
    assert {"uid", "aid", "txt", "tstz", "seen"} <= set(mapped)
    for key in LEFT_TO_BUILDER["identify"]:
        assert {c: rendered[key][c] for c in mapped} == {c: full[key][c] for c in mapped}
    assert all(rendered["r1"][c] is None for c in mapped)  # rendered rows fetch no values


@pytest.mark.parametrize(
    "overrides",
    [
        {"traits": {"score": "small"}, "consent": "txt"},
        {"traits": {"score": "small"}, "message_id": "txt"},
        {"traits": {"score": "ratio"}},
        {"traits": {"score": "doc"}},
    ],
    ids=["consent", "message_id", "double", "json"],
)
def test_mappings_the_renderer_cannot_match_byte_for_byte_stay_in_python(session, overrides) -> None:
    session.execute("ALTER TABLE models.every_type ADD COLUMN ratio DOUBLE")
    session.execute("ALTER TABLE models.every_type ADD COLUMN doc JSON")
    _, renderer, _, _ = _both(session, _spec("identify", **overrides))
    assert renderer is None


def test_a_sync_sends_the_same_messages_with_and_without_the_renderer(
    session, warehouse, monkeypatch
) -> None:
    spec = _spec("identify")
    fast = ScriptedSender()
    report = run_sync(session, spec, fast, now=NOW)
    session.execute("DROP SCHEMA _segment_profiles CASCADE")
    monkeypatch.setattr(engine, "sql_renderer", lambda *_a: None)
    slow = ScriptedSender()
    reference = run_sync(session, spec, slow, now=NOW)

    def by_user(sent: list[dict]) -> list[dict]:
        return sorted(sent, key=lambda m: m["messageId"])

    assert by_user(fast.sent) == by_user(slow.sent) and len(fast.sent) == 7
    assert report.counts == reference.counts and report.counts["rejected"] == 2  # r4: no id, r8: over 32 KB
