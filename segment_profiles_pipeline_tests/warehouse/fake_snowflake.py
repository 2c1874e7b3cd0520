"""Snowflake for tests: a real ``SnowflakeWarehouse`` whose connections go to fakesnow.

Every connection opened inside one ``fakesnow.patch()`` is a cursor of the same in-process
DuckDB database (one per patch, databases by name), so two sessions see each other's writes,
as two Snowflake connections do, and each may be used from its own thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fakesnow
from dagster_snowflake import SnowflakeResource

from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline.warehouse.snowflake import SnowflakeWarehouse

DATABASE = "ANALYTICS"


@contextmanager
def fake_snowflake() -> Iterator[SnowflakeWarehouse]:
    with fakesnow.patch():
        yield SnowflakeWarehouse(
            snowflake=SnowflakeResource(
                account="acme-test",
                user="loader",
                password="not-a-real-secret",
                database=DATABASE,
                warehouse="TRANSFORMING",
            )
        )


@contextmanager
def dialect_session(dialect: str, tmp_path: Path) -> Iterator[WarehouseSession]:
    """A session on a fresh DuckDB file (``duckdb``) or on fakesnow (``snowflake``): what a test
    parametrised over both warehouses runs against."""
    if dialect == "duckdb":
        with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
            yield session
    else:
        with fake_snowflake() as warehouse, warehouse.session() as session:
            yield session
