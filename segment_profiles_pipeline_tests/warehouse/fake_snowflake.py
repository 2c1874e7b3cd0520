"""Snowflake for tests: a real ``SnowflakeWarehouse`` whose connections go to fakesnow.

Every connection opened inside one ``fakesnow.patch()`` is a cursor of the same in-process
DuckDB database (one per patch, databases by name), so two sessions see each other's writes,
as two Snowflake connections do, and each may be used from its own thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import fakesnow
from dagster_snowflake import SnowflakeResource

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
