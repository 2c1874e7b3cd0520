"""The warehouse: one small session protocol, implemented for DuckDB and Snowflake.

All SQL in this project is written once in DuckDB's dialect; the Snowflake session transpiles
it with sqlglot (``dialect.py``). Callers never branch on the warehouse for plain SQL.
"""

from segment_profiles_pipeline.warehouse.base import (
    QueryResult,
    Warehouse,
    WarehouseBusy,
    WarehouseSession,
    ident,
    literal,
)

__all__ = ["QueryResult", "Warehouse", "WarehouseBusy", "WarehouseSession", "ident", "literal"]
