"""The change-detection checksum: unambiguous, and the same on DuckDB and Snowflake (fakesnow)."""

import hashlib

import duckdb
import fakesnow
import snowflake.connector
import sqlglot

from segment_profiles_pipeline.sync.plan import PlanSpec, checksum_sql
from segment_profiles_pipeline_tests.sync.helpers import people_spec

# Pairs that a plain join of the values would confuse: null vs empty, a separator inside a value.
ROWS = [(None, "x"), ("", "x"), ("a|b", "c"), ("a", "b|c"), ("1:a", None), ("1", ":a")]


def spec() -> PlanSpec:
    return PlanSpec(people_spec().mapping, "t", "a", ("a", "b"))


def encoded(plan: PlanSpec, row: tuple[str | None, ...]) -> str:
    """The documented encoding, written independently: fingerprint, then ``<length>:<text>`` or ``:``."""
    fields = [":" if v is None else f"{len(v)}:{v}" for v in row]
    return hashlib.md5("|".join([plan.fingerprint, *fields]).encode()).hexdigest()


def checksums(cursor, sql: str) -> list[str]:
    cursor.execute("CREATE TABLE t (n INT, a VARCHAR, b VARCHAR)")
    values = ", ".join(
        f"({i}, {'NULL' if a is None else repr(a)}, {'NULL' if b is None else repr(b)})"
        for i, (a, b) in enumerate(ROWS)
    )
    cursor.execute(f"INSERT INTO t VALUES {values}")
    cursor.execute(f"SELECT {sql} FROM t ORDER BY n")
    return [r[0] for r in cursor.fetchall()]


def test_checksum_follows_the_documented_encoding_and_never_collides() -> None:
    plan = spec()
    got = checksums(duckdb.connect(), checksum_sql(plan))
    assert got == [encoded(plan, row) for row in ROWS]
    assert len(set(got)) == len(ROWS)


def test_snowflake_checksums_equal_duckdb_ones() -> None:
    plan = spec()
    snowflake_sql = sqlglot.transpile(checksum_sql(plan), read="duckdb", write="snowflake")[0]
    with fakesnow.patch(), snowflake.connector.connect(database="db", schema="s") as con:
        con.cursor().execute("CREATE DATABASE IF NOT EXISTS db")
        con.cursor().execute("CREATE SCHEMA IF NOT EXISTS db.s")
        con.cursor().execute("USE SCHEMA db.s")
        got = checksums(con.cursor(), snowflake_sql)
    assert got == [encoded(plan, row) for row in ROWS]


TYPED_COLUMNS = (
    ("tz", "TIMESTAMP WITH TIME ZONE"),
    ("ntz", "TIMESTAMP"),
    ("d", "DATE"),
    ("b", "BLOB"),
)


def typed_spec(types: tuple[tuple[str, str], ...] = TYPED_COLUMNS) -> PlanSpec:
    return PlanSpec(people_spec().mapping, "t", "tz", tuple(c for c, _ in types), column_types=types)


def test_checksums_do_not_depend_on_the_session_time_zone() -> None:
    """The same instants under another TZ must not look changed (it would re-send, or clear, everything)."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT TIMESTAMPTZ '2024-01-01 12:00:00+05' AS tz, TIMESTAMP '2024-01-01 12:00:00' AS ntz, "
        "DATE '2024-01-02' AS d, '\\xAA\\xBB'::BLOB AS b"
    )
    sql = f"SELECT {checksum_sql(typed_spec())} FROM t"
    by_zone = {}
    for zone in ("UTC", "Asia/Tokyo", "America/Los_Angeles"):
        con.execute(f"SET TimeZone = '{zone}'")
        by_zone[zone] = con.sql(sql).fetchall()
    assert len(set(map(tuple, by_zone.values()))) == 1
    fields = ["2024-01-01 07:00:00.000000", "2024-01-01 12:00:00.000000", "2024-01-02", "AABB"]
    expected = hashlib.md5("|".join([typed_spec().fingerprint, *(f"{len(v)}:{v}" for v in fields)]).encode())
    assert by_zone["UTC"] == [(expected.hexdigest(),)]


def test_snowflake_checksum_sql_uses_explicit_formats_not_session_ones() -> None:
    """Snowflake casts timestamps, dates and binary by its *_OUTPUT_FORMAT and TIMEZONE session
    parameters. fakesnow can neither change them (ALTER SESSION SET TIMEZONE is not implemented)
    nor apply TO_CHAR's format (it falls back to a cast), so the Snowflake SQL itself is checked
    for explicit formats and UTC conversion, and run on fakesnow to show it executes."""
    snowflake_types = (
        ("tz", "TIMESTAMP_TZ(9)"),
        ("ntz", "TIMESTAMP_NTZ(9)"),
        ("d", "DATE"),
        ("b", "BINARY(8388608)"),
    )
    sql = sqlglot.transpile(checksum_sql(typed_spec(snowflake_types)), read="duckdb", write="snowflake")[0]
    assert "CONVERT_TIMEZONE('UTC', tz)" in sql and "CONVERT_TIMEZONE('UTC', ntz)" not in sql
    assert sql.count("'yyyy-mm-DD hh24:mi:ss.ff6'") == 4 and sql.count("TO_CHAR(d, 'yyyy-mm-DD')") == 2
    assert sql.count("HEX_ENCODE(b)") == 2  # each value twice: its length and its text
    assert (
        "CAST(tz AS" not in sql
        and "CAST(ntz AS" not in sql
        and "CAST(d AS" not in sql
        and "CAST(b AS" not in sql
    )
    with fakesnow.patch(), snowflake.connector.connect(database="db", schema="s") as con:
        cur = con.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS db")
        cur.execute("CREATE SCHEMA IF NOT EXISTS db.s")
        cur.execute("USE SCHEMA db.s")
        cur.execute(
            "CREATE TABLE t AS SELECT '2024-01-01 12:00:00 +05:00'::TIMESTAMP_TZ AS tz, "
            "'2024-01-01 12:00:00'::TIMESTAMP_NTZ AS ntz, '2024-01-02'::DATE AS d, TO_BINARY('AABB', 'HEX') AS b"
        )
        cur.execute(f"SELECT {sql} FROM t")
        assert [len(r[0]) for r in cur.fetchall()] == [32]
