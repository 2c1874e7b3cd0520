"""``dialect_session`` serves every test parametrised over both warehouses: each parameter must
really open its own warehouse, or the Snowflake half of those tests runs on DuckDB unseen."""

from pathlib import Path

import pytest

from segment_profiles_pipeline.warehouse.snowflake import SnowflakeSession
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import dialect_session


@pytest.mark.parametrize("dialect", ["duckdb", "snowflake"])
def test_each_dialect_opens_its_own_warehouse(dialect: str, tmp_path: Path) -> None:
    with dialect_session(dialect, tmp_path) as session:
        assert session.dialect == dialect
        assert isinstance(session, SnowflakeSession) == (dialect == "snowflake")
        session.execute("CREATE SCHEMA s")
        session.execute("CREATE TABLE s.t AS SELECT 1 AS a")
        assert session.query("SELECT a FROM s.t").scalar() == 1
    assert (tmp_path / "w.duckdb").exists() == (dialect == "duckdb")  # fakesnow leaves no file
