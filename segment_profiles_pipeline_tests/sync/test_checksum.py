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
