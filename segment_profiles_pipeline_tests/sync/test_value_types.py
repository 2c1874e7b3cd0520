"""Every DuckDB type a model may hold is sent by a documented rule or rejects only its record."""

import datetime as dt

import pytest

from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender, failed, people_spec
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import fake_snowflake

ALL_TYPES = """
CREATE OR REPLACE TABLE models.people AS SELECT
    'u1' AS id,
    170141183460469231731687303715884105727::HUGEINT AS huge,
    340282366920938463463374607431768211455::UHUGEINT AS uhuge,
    18446744073709551615::UBIGINT AS ubig,
    9007199254740991::BIGINT AS safe,
    12345678901234567890123456789012345678::DECIMAL(38,0) AS dec0,
    12.5::DECIMAL(38,10) AS dec10,
    '\\xAA\\xBB'::BLOB AS blob,
    '7c9e6679-7425-40de-944b-e07fc1f90ae7'::UUID AS uuid,
    INTERVAL 90 MINUTE AS iv,
    TIME '12:34:56' AS tm,
    'happy'::mood AS mood,
    {'a': 1, 'b': [1, 2]} AS st,
    [1, 2, 3] AS li,
    MAP {'k': 1} AS mp,
    '{"x": [1, {"y": null}]}'::JSON AS js,
    TIMESTAMPTZ '2024-01-01 12:00:00+05' AS tstz,
    TIMESTAMP '2024-01-01 12:00:00' AS ts,
    DATE '2024-01-02' AS d,
    'NaN'::DOUBLE AS nan,
    [170141183460469231731687303715884105727::HUGEINT] AS huge_list
"""

EXPECTED = {
    "huge": "170141183460469231731687303715884105727",
    "uhuge": "340282366920938463463374607431768211455",
    "ubig": "18446744073709551615",
    "safe": 9007199254740991,
    "dec0": "12345678901234567890123456789012345678",
    "dec10": 12.5,
    "blob": "qrs=",
    "uuid": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "iv": 5400.0,
    "tm": "12:34:56",
    "mood": "happy",
    "st": {"a": 1, "b": [1, 2]},
    "li": [1, 2, 3],
    "mp": {"k": 1},
    "js": {"x": [1, {"y": None}]},
    "tstz": "2024-01-01T07:00:00.000Z",
    "ts": "2024-01-01T12:00:00.000Z",
    "d": "2024-01-02",
    "nan": None,
    "huge_list": ["170141183460469231731687303715884105727"],
}


@pytest.fixture
def session(warehouse):
    with warehouse.session() as s:
        s.execute("SET TimeZone = 'America/New_York'")  # instants must still be sent in UTC
        s.execute("CREATE SCHEMA IF NOT EXISTS models")
        s.execute("CREATE TYPE mood AS ENUM ('happy', 'sad')")
        s.execute(ALL_TYPES)
        yield s


def test_every_duckdb_type_is_sent_by_its_documented_rule(session) -> None:
    sender = ScriptedSender()
    report = run_sync(session, people_spec(traits={}, all_columns_as_traits=True), sender)
    assert report.status == "success" and failed(session) == {}
    assert sender.sent[0]["traits"] == EXPECTED


def test_the_same_data_in_another_session_time_zone_is_not_resent(session) -> None:
    spec = people_spec(traits={}, all_columns_as_traits=True)
    run_sync(session, spec, ScriptedSender())
    session.execute("SET TimeZone = 'Asia/Tokyo'")
    again = ScriptedSender()
    report = run_sync(session, spec, again, now=dt.datetime(2030, 1, 1))
    assert again.sent == [] and report.counts["updated"] == 0


SNOWFLAKE_TYPES = """
CREATE OR REPLACE TABLE models.people AS SELECT
    'u1' AS id,
    9007199254740993 AS beyond_safe,
    12.5::NUMBER(38,10) AS dec10,
    TO_BINARY('AABB', 'HEX') AS bin,
    '12:34:56'::TIME AS tm,
    PARSE_JSON('{"x": [1, {"y": null}]}') AS var,
    OBJECT_CONSTRUCT('a', 1) AS obj,
    PARSE_JSON('[1, 2]')::ARRAY AS arr,
    '2024-01-01 12:00:00 +05:00'::TIMESTAMP_TZ AS tstz,
    '2024-01-01 12:00:00'::TIMESTAMP_NTZ AS ts,
    '2024-01-02'::DATE AS d,
    'NaN'::FLOAT AS nan
"""


def test_every_snowflake_type_is_sent_by_its_documented_rule() -> None:
    """The Snowflake path through fakesnow. fakesnow stores NUMBER(38,0) as a 64-bit integer, so
    values beyond 64 bits cannot be created there; 2**53 + 1 shows the safe-integer rule."""
    with fake_snowflake() as snowflake, snowflake.session() as session:
        session.execute("CREATE SCHEMA IF NOT EXISTS models")
        session.execute(SNOWFLAKE_TYPES)
        sender = ScriptedSender()
        report = run_sync(session, people_spec(traits={}, all_columns_as_traits=True), sender)
        assert report.status == "success" and failed(session) == {}
        again = ScriptedSender()
        run_sync(session, people_spec(traits={}, all_columns_as_traits=True), again)
    assert again.sent == []
    assert sender.sent[0]["traits"] == {
        "beyond_safe": "9007199254740993",
        "dec10": 12.5,
        "bin": "qrs=",
        "tm": "12:34:56",
        "var": {"x": [1, {"y": None}]},
        "obj": {"a": 1},
        "arr": [1, 2],
        "tstz": "2024-01-01T07:00:00.000Z",
        "ts": "2024-01-01T12:00:00.000Z",
        "d": "2024-01-02",
        "nan": None,
    }
