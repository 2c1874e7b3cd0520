"""The dbt example's Dagster code location (``definitions.py``)."""
