"""Loading the definitions on DuckDB imports neither the Snowflake stack nor scikit-learn: each
costs a second or more of start-up for every load (dg, webserver, each run worker)."""

import os
import subprocess
import sys

HEAVY = ("dagster_snowflake", "snowflake.connector", "snowflake.snowpark", "sklearn")


def test_loading_the_definitions_on_duckdb_imports_neither_snowflake_nor_sklearn(tmp_path) -> None:
    code = (
        "import sys, segment_profiles_pipeline.definitions as d; d.defs() if callable(d.defs) else d.defs;"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    env = {**os.environ, "WAREHOUSE": "duckdb", "DUCKDB_DATABASE": str(tmp_path / "w.duckdb")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
