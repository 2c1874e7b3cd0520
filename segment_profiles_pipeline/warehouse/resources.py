"""Pick the warehouse implementation from the environment (one helper, one place).

The Snowflake module is imported only for a Snowflake deployment: ``dagster_snowflake`` and
Snowpark take seconds to import, which every DuckDB load (``dg``, each run worker) would pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segment_profiles_pipeline.settings import Settings
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

if TYPE_CHECKING:
    from segment_profiles_pipeline.warehouse.snowflake import SnowflakeWarehouse


def warehouse_from_settings(settings: Settings) -> DuckDBWarehouse | SnowflakeWarehouse:
    if settings.warehouse == "snowflake":
        from segment_profiles_pipeline.warehouse.snowflake import snowflake_from_env

        return snowflake_from_env()
    return DuckDBWarehouse(database=str(settings.duckdb_database))
