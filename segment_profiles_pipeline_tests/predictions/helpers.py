"""Prediction files and order tables for the predictions tests."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa

from segment_profiles_pipeline.predictions.config import PredictionsProject, load_predictions
from segment_profiles_pipeline.warehouse.base import WarehouseSession

DAY0 = dt.datetime(2026, 1, 1)
TYPES = {
    "id": pa.string(),
    "user_id": pa.string(),
    "anonymous_id": pa.string(),
    "timestamp": pa.timestamp("us"),
    "received_at": pa.timestamp("us"),
    "revenue": pa.float64(),
    "currency": pa.string(),
}


def order(
    msg_id: str, user: str | None, day: float, revenue: float = 10.0, currency: str | None = "USD"
) -> dict[str, Any]:
    """One ``Order Completed`` row ``day`` days after DAY0, received a second later."""
    at = DAY0 + dt.timedelta(days=day)
    return {
        "id": msg_id,
        "user_id": user,
        "anonymous_id": "anon-1",
        "timestamp": at,
        "received_at": at + dt.timedelta(seconds=1),
        "revenue": revenue,
        "currency": currency,
    }


def view(msg_id: str, user: str, day: float) -> dict[str, Any]:
    """One ``Page Viewed`` row (Segment's track columns, no properties) ``day`` days after DAY0."""
    return {k: v for k, v in order(msg_id, user, day).items() if k not in ("revenue", "currency")}


def load_orders(
    session: WarehouseSession, rows: list[dict[str, Any]], table: str = "shop.order_completed"
) -> None:
    """Append rows to ``table`` (created at first), with the columns the first row has."""
    data = pa.table({c: pa.array([r[c] for r in rows], type=TYPES[c]) for c in rows[0]})
    session.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
    session.load(table, data, create=not session.table_exists(*table.split(".")))


def predictions_file(folder: Path, text: str) -> PredictionsProject:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.yml").write_text(textwrap.dedent(text).lstrip())
    project = load_predictions(folder)
    assert project is not None
    return project


CHURN_ONLY = """
predictions:
  - {key: likelihood_to_churn, type: likelihood_to_churn, window_days: 30}
"""
BOTH = """
predictions:
  - {key: likelihood_to_churn, type: likelihood_to_churn, window_days: 30}
  - {key: predicted_ltv, type: predicted_ltv}
mappings:
  - {name: predictions_identify, action: identify, user_id: user_id, all_columns_as_traits: true}
"""
