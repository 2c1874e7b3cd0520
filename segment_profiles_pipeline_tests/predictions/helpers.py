"""Prediction files and order tables for the predictions tests."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa

from segment_profiles_pipeline.identity.compute import compute_identity
from segment_profiles_pipeline.identity.config import load_identity
from segment_profiles_pipeline.identity.profile_keys import targets_sql
from segment_profiles_pipeline.predictions.config import PredictionsProject, load_predictions
from segment_profiles_pipeline.warehouse.base import WarehouseSession

DAY0 = dt.datetime(2026, 1, 1)
GRAPH_NOW = dt.datetime(2027, 6, 1)
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
    msg_id: str,
    user: str | None,
    day: float,
    revenue: float = 10.0,
    currency: str | None = "USD",
    anon: str | None = None,
) -> dict[str, Any]:
    """One ``Order Completed`` row ``day`` days after DAY0, received a second later; its anonymous
    id is ``anon``, else the user's own device (``anon-<user>``; none for a guest without one)."""
    at = DAY0 + dt.timedelta(days=day)
    return {
        "id": msg_id,
        "user_id": user,
        "anonymous_id": anon or (f"anon-{user}" if user else None),
        "timestamp": at,
        "received_at": at + dt.timedelta(seconds=1),
        "revenue": revenue,
        "currency": currency,
    }


def view(msg_id: str, user: str | None, day: float, anon: str | None = None) -> dict[str, Any]:
    """One ``Page Viewed`` row (Segment's track columns, no properties) ``day`` days after DAY0."""
    return {k: v for k, v in order(msg_id, user, day, anon=anon).items() if k not in ("revenue", "currency")}


def load_orders(
    session: WarehouseSession, rows: list[dict[str, Any]], table: str = "shop.order_completed"
) -> None:
    """Append rows to ``table`` (created at first), with the columns the first row has."""
    data = pa.table({c: pa.array([r[c] for r in rows], type=TYPES[c]) for c in rows[0]})
    session.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
    session.load(table, data, create=not session.table_exists(*table.split(".")))


def resolve(session: WarehouseSession, project: PredictionsProject, now: dt.datetime = GRAPH_NOW) -> None:
    """Build the identity graph over the prediction tables (the real identity layer, with the rules
    of the project's folder: Segment's defaults), as a run of the asset graph does first."""
    compute_identity(session, load_identity(project.path.parent), project.event_tables(), [], now)


def target_names(session: WarehouseSession) -> dict[str, str]:
    """profile_key → a readable name of the profile: its send target, ``<user_id>`` or ``anon:<id>``."""
    rows = session.query(targets_sql()).dicts()
    return {r["profile_key"]: r["user_id"] or f"anon:{r['anonymous_id']}" for r in rows}


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
