"""Feature SQL on hand-built tables (DuckDB and Snowflake through fakesnow), label windows, leakage."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from segment_profiles_pipeline.predictions.features import compile_features
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.predictions.helpers import (
    BOTH,
    DAY0,
    load_orders,
    order,
    predictions_file,
)
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import fake_snowflake

# a: days 0, 10, 50; b: day 5 (EUR 100), day 45 (USD 40); c: day 2 only; a guest order; a duplicate copy.
ROWS = [
    order("m1", "a", 0, 10),
    order("m2", "a", 10, 20),
    order("m3", "a", 50, 30),
    order("m4", "b", 5, 100, "EUR"),
    order("m5", "b", 45, 40),
    order("m6", "c", 2, 5),
    order("m7", None, 20, 99),
    order("m2", "a", 10, 20) | {"received_at": DAY0 + dt.timedelta(days=11)},  # later copy: dropped
]


@contextmanager
def warehouse(kind: str, tmp_path: Path) -> Iterator[WarehouseSession]:
    if kind == "duckdb":
        with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
            yield session
    else:
        with fake_snowflake() as wh, wh.session() as session:
            yield session


def features(session: WarehouseSession, tmp_path: Path, key: str, as_of: dt.datetime) -> dict[str, dict]:
    project = predictions_file(tmp_path / "models", BOTH)
    prediction = next(p for p in project.predictions if p.key == key)
    schemas = {t: dict(session.columns(*t)) for t in project.feature_tables(prediction)}
    compiled = compile_features(project, prediction, schemas, as_of)
    rows = session.query(compiled.build_sql()).dicts()
    return {r["profile_id"]: r for r in rows}


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_churn_features_and_labels_by_hand(kind: str, tmp_path: Path) -> None:
    with warehouse(kind, tmp_path) as session:
        load_orders(session, ROWS)
        got = features(session, tmp_path, "likelihood_to_churn", DAY0 + dt.timedelta(days=60))
    assert set(got) == {"a", "b", "c"}  # the guest order has no profile
    a, b, c = got["a"], got["b"], got["c"]
    t = "order_completed__"
    # training cut-off = day 30: a has days 0 and 10 (the later copy of m2 is not a third order)
    assert a[f"train__{t}n_all"] == 2 and a[f"train__{t}n_30d"] == 1  # (day 0, day 30]: day 0 excluded
    assert float(a[f"train__{t}recency_days"]) == 20 and float(a[f"train__{t}tenure_days"]) == 30
    assert float(a[f"train__{t}per_30d"]) == 2.0
    assert (a["label_events"], b["label_events"], c["label_events"]) == (1, 1, 0)  # days 50, 45; none
    assert a[f"score__{t}n_all"] == 3 and float(a[f"score__{t}recency_days"]) == 10
    assert a[f"score__{t}n_7d"] == 0 and b[f"score__{t}n_30d"] == 1  # day 45 in (30, 60]
    assert float(c[f"score__{t}recency_days"]) == 58


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_ltv_revenue_counts_only_the_currency(kind: str, tmp_path: Path) -> None:
    with warehouse(kind, tmp_path) as session:
        load_orders(session, ROWS)
        got = features(session, tmp_path, "predicted_ltv", DAY0 + dt.timedelta(days=130))  # cut-off day 10
    t = "order_completed__"
    assert float(got["a"][f"train__{t}revenue_all"]) == 30  # days 0 and 10
    assert float(got["a"]["label_revenue"]) == 30  # day 50
    assert float(got["b"][f"train__{t}revenue_all"]) == 0  # the EUR order does not count
    assert got["b"][f"train__{t}n_all"] == 1  # ... but it is an order
    assert float(got["b"]["label_revenue"]) == 40
    assert float(got["a"][f"score__{t}revenue_avg"]) == 20


def test_a_label_window_event_never_reaches_the_training_features(tmp_path: Path) -> None:
    as_of = DAY0 + dt.timedelta(days=60)
    with warehouse("duckdb", tmp_path) as session:
        load_orders(session, ROWS)
        before = features(session, tmp_path, "likelihood_to_churn", as_of)
        load_orders(
            session, [order("m9", "c", 30.5, 7), order("m10", "a", 60.5, 7)]
        )  # label window; after as_of
        after = features(session, tmp_path, "likelihood_to_churn", as_of)
    train = [k for k in before["c"] if k.startswith("train__")]
    assert {k: after["c"][k] for k in train} == {k: before["c"][k] for k in train}
    assert (before["c"]["label_events"], after["c"]["label_events"]) == (0, 1)
    assert after["a"] == before["a"]  # an event after as_of counts nowhere
