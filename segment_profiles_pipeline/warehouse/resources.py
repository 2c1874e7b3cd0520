"""Pick the warehouse implementation from the environment (one helper, one place)."""

from __future__ import annotations

from segment_profiles_pipeline.settings import Settings
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline.warehouse.snowflake import SnowflakeWarehouse, snowflake_from_env


def warehouse_from_settings(settings: Settings) -> DuckDBWarehouse | SnowflakeWarehouse:
    if settings.warehouse == "snowflake":
        return snowflake_from_env()
    return DuckDBWarehouse(database=str(settings.duckdb_database))
