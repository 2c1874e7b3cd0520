"""Feature SQL on hand-built tables (DuckDB and Snowflake through fakesnow), label windows, leakage."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.config import load_identity
from segment_profiles_pipeline.predictions.features import compile_features
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.predictions.helpers import (
    BOTH,
    DAY0,
    load_orders,
    order,
    predictions_file,
    resolve,
    target_names,
    view,
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


def compiled_for(session: WarehouseSession, tmp_path: Path, text: str, key: str, as_of: dt.datetime):
    """The prediction ``key`` of ``text`` compiled against the tables, after resolving identities."""
    project = predictions_file(tmp_path / "models", text)
    resolve(session, project)
    prediction = next(p for p in project.predictions if p.key == key)
    schemas = {t: dict(session.columns(*t)) for t in project.feature_tables(prediction)}
    rules = load_identity(project.path.parent).rules
    return compile_features(project, prediction, schemas, as_of, rules)


def named(session: WarehouseSession, rows: list[dict]) -> dict[str, dict]:
    """Feature rows by profile name (``target_names``): the user_id, or ``anon:<id>``."""
    names = target_names(session)
    return {names[r["profile_key"]]: r for r in rows}


def features(session: WarehouseSession, tmp_path: Path, key: str, as_of: dt.datetime) -> dict[str, dict]:
    compiled = compiled_for(session, tmp_path, BOTH, key, as_of)
    return named(session, session.query(compiled.build_sql()).dicts())


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


def test_a_profile_seen_only_in_the_label_window_looks_like_no_profile_at_the_cut_off(tmp_path: Path) -> None:
    """Its rows exist in the per-table passes only because of label-window events; its training
    features must still be those of a profile with no events (0 counts, no recency)."""
    with warehouse("duckdb", tmp_path) as session:
        load_orders(session, GOAL_ROWS)
        load_orders(session, [*VIEWS, view("v3", "z", 40), view("v4", "c", 41)], "shop.page_viewed")
        got = goal_features(session, tmp_path, "big_order", DAY0 + dt.timedelta(days=60))  # cut-off day 30
    empty = {f"train__{t}__{s}": 0 for t in ("order_completed", "page_viewed") for s in COUNTS}
    empty |= {f"train__{t}__{s}": None for t in ("order_completed", "page_viewed") for s in UNDEFINED}
    for profile in ("z", "c"):  # z: a view in the window; c: its big order and a view, both in the window
        assert {k: v for k, v in got[profile].items() if k.startswith("train__")} == empty


COUNTS = ("n_7d", "n_30d", "n_90d", "n_365d", "n_all", "per_30d")
UNDEFINED = ("recency_days", "tenure_days")
GOALS = """
feature_events: [Page Viewed]
predictions:
  - key: big_order
    type: likelihood_to_purchase
    window_days: 30
    conditions: [{property: revenue, operator: greater_than, value: 50}]
  - {key: signup, type: custom_goal, event: Page Viewed, window_days: 15}
"""
# orders: a 60 (day 10), 20 (day 40); b 10 (days 5, 45); c 80 (day 45). views: a day 20, d day 25.
GOAL_ROWS = [
    order("o1", "a", 10, 60),
    order("o2", "a", 40, 20),
    order("o3", "b", 5, 10),
    order("o4", "b", 45, 10),
    order("o5", "c", 45, 80),
]
VIEWS = [view("v1", "a", 20), view("v2", "d", 25)]


def goal_features(session: WarehouseSession, tmp_path: Path, key: str, as_of: dt.datetime) -> dict[str, dict]:
    compiled = compiled_for(session, tmp_path, GOALS, key, as_of)
    eligible = f"{compiled.eligible_sql('train')} AS eligible, {compiled.label_sql()} AS label"
    return named(session, session.query(f"SELECT *, {eligible} FROM ({compiled.build_sql()}) AS f").dicts())


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_purchase_goal_counts_only_matching_events_and_scores_profiles_without_one(
    kind: str, tmp_path: Path
) -> None:
    with warehouse(kind, tmp_path) as session:
        load_orders(session, GOAL_ROWS)
        load_orders(session, VIEWS, "shop.page_viewed")
        got = goal_features(session, tmp_path, "big_order", DAY0 + dt.timedelta(days=60))  # cut-off day 30
    # b's orders never match (10 <= 50): b has no target event and no view, so it is no row at all;
    # d never ordered but viewed a page: a row, eligible, with empty order features
    assert set(got) == {"a", "c", "d"}
    t = "order_completed__"
    assert got["a"][f"train__{t}n_all"] == 1 and got["a"][f"score__{t}n_all"] == 1  # the 20 order is not one
    assert (got["a"]["label_events"], got["c"]["label_events"], got["d"]["label_events"]) == (0, 1, 0)
    assert (got["a"]["label"], got["c"]["label"], got["d"]["label"]) == (0, 1, 0)  # did it = 1
    assert got["d"][f"train__{t}n_all"] == 0 and got["d"][f"train__{t}recency_days"] is None
    assert got["d"]["train__page_viewed__n_all"] == 1
    assert (bool(got["a"]["eligible"]), bool(got["c"]["eligible"]), bool(got["d"]["eligible"])) == (
        True,
        False,  # c's first (matching) event is in the label window: nothing known at the cut-off
        True,
    )


def test_custom_goal_on_any_event(tmp_path: Path) -> None:
    with warehouse("duckdb", tmp_path) as session:
        load_orders(session, GOAL_ROWS)
        load_orders(session, [*VIEWS, view("v3", "b", 50)], "shop.page_viewed")
        got = goal_features(session, tmp_path, "signup", DAY0 + dt.timedelta(days=50))  # cut-off day 35
    assert set(got) == {"a", "d", "b"}  # the goal is Page Viewed; the target table is shop.page_viewed
    assert (got["a"]["label"], got["b"]["label"], got["d"]["label"]) == (0, 1, 0)
    assert not got["b"]["eligible"]  # only the label-window view: no past event in the goal's table


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (
            "{property: orderType, operator: equals, value: web}",
            "condition property 'orderType' (column 'order_type') does not exist in shop.order_completed; "
            "available columns: id, user_id",
        ),
        ("{property: revenue, operator: contains, value: '5'}", "operator 'contains' needs a text column"),
        (
            "{property: currency, operator: equals, value: 3}",
            "the value 3 is a number but the column is text",
        ),
    ],
)
def test_condition_errors_name_the_prediction_and_the_column(
    tmp_path: Path, condition: str, expected: str
) -> None:
    text = f"predictions:\n  - {{key: p, type: likelihood_to_purchase, conditions: [{condition}]}}\n"
    with warehouse("duckdb", tmp_path) as session:
        load_orders(session, GOAL_ROWS)
        project = predictions_file(tmp_path / "models", text)
        prediction = project.predictions[0]
        schemas = {t: dict(session.columns(*t)) for t in project.feature_tables(prediction)}
        with pytest.raises(ConfigError) as err:
            compile_features(project, prediction, schemas, DAY0, load_identity(project.path.parent).rules)
    assert expected in str(err.value) and "predictions.p.conditions" in str(err.value)
    assert project.file in str(err.value)


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_the_default_as_of_and_the_history_read_only_matching_events(kind: str, tmp_path: Path) -> None:
    with warehouse(kind, tmp_path) as session:
        load_orders(session, [*GOAL_ROWS, order("o6", "b", 70, 10)])
        load_orders(session, VIEWS, "shop.page_viewed")
        compiled = compiled_for(session, tmp_path, GOALS, "big_order", DAY0)
        span = session.query(compiled.span_sql()).rows[0]
        later = dataclasses.replace(compiled, as_of=DAY0 + dt.timedelta(days=60))
        days = sorted(d for (d,) in session.query(later.active_days_sql(DAY0)).rows)
    # orders over 50: a's on day 10 and c's on day 45 (not the small ones on days 5, 40, 45 and 70)
    assert span == (DAY0 + dt.timedelta(days=10), DAY0 + dt.timedelta(days=45))
    assert days == [dt.date(2026, 1, 11), dt.date(2026, 2, 15)]


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_an_anonymous_event_of_a_profile_identified_later_counts_in_its_features(
    kind: str, tmp_path: Path
) -> None:
    """Keyed on the resolved profile: x's order as a guest (its device only) is x's history once a
    later order carries both x's user_id and that device; a device never identified is a profile
    of its own; an order with no identifier at all belongs to no profile."""
    rows = [
        order("g1", None, 1, 25, anon="dev-x"),  # x before signing in
        order("g2", "x", 20, 35, anon="dev-x"),  # x signs in on the same device
        order("g3", None, 3, 10, anon="dev-g"),  # a guest never identified
        order("g4", None, 4, 99),  # no identifier: no profile
    ]
    with warehouse(kind, tmp_path) as session:
        load_orders(session, rows)
        got = features(session, tmp_path, "likelihood_to_churn", DAY0 + dt.timedelta(days=60))
    assert set(got) == {"x", "anon:dev-g"}
    t = "order_completed__"
    assert got["x"][f"train__{t}n_all"] == 2  # the guest order counts (1 if keyed on user_id)
    assert float(got["x"][f"train__{t}tenure_days"]) == 29  # since day 1, the anonymous order
    assert got["anon:dev-g"][f"train__{t}n_all"] == 1
