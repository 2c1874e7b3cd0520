"""Warehouse models to live Segment customer profiles, as a Dagster project."""

__version__ = "0.1.0"
