"""A DuckDB deployment never imports the Snowflake stack (seconds of start-up for every load)."""

import os
import subprocess
import sys

HEAVY = ("dagster_snowflake", "snowflake.connector", "snowflake.snowpark")


def test_loading_the_definitions_on_duckdb_imports_nothing_of_snowflake(tmp_path) -> None:
    code = (
        "import sys, segment_profiles_pipeline.definitions as d; d.defs;"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    env = {**os.environ, "WAREHOUSE": "duckdb", "DUCKDB_DATABASE": str(tmp_path / "w.duckdb")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
