"""Loading the definitions on DuckDB imports only what defining the assets needs.

Every load (``dg``, the webserver, each run worker) pays the imports of the modules it reaches.
The Snowflake stack and scikit-learn cost a second or more each; pyarrow with numpy ~0.3 s, httpx
~0.1 s, sqlglot's lineage and optimizer ~20 ms on top of the parser (which the load needs: it
reads each model's upstream tables from its SQL). Those are imported where they are used: when a
session loads data, a model's lineage is traced, a sync or a read-back opens its HTTP client, a
prediction trains. A new top-level import of one of them anywhere on the load path fails here.
"""

import os
import subprocess
import sys

HEAVY = (
    "dagster_snowflake",
    "snowflake.connector",
    "snowflake.snowpark",
    "fakesnow",
    "sklearn",
    "pyarrow",
    "numpy",
    "pandas",
    "httpx",
    "sqlglot.lineage",
    "sqlglot.optimizer.qualify",
)
"""Module names, not prefixes: the bare ``snowflake`` namespace exists in every interpreter of the
venv (Snowpark's ``-nspkg.pth``), and the sqlglot parser is needed."""


def test_loading_the_definitions_on_duckdb_imports_none_of_the_heavy_modules(tmp_path) -> None:
    code = (
        "import sys, segment_profiles_pipeline.definitions as d; d.defs().get_repository_def();"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    env = {**os.environ, "WAREHOUSE": "duckdb", "DUCKDB_DATABASE": str(tmp_path / "w.duckdb")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    imported = [m for m in out.stdout.strip().split(",") if m]
    assert imported == [], (
        f"loading the definitions imported {imported}; find the importer with "
        "`python -X importtime -c 'import segment_profiles_pipeline.definitions as d; d.defs()'`"
    )
    assert not (tmp_path / "w.duckdb").exists()  # and loading opened no warehouse
