"""A prediction run: percentile cohorts, data requirements that keep previous scores, streamed
scoring in bounded chunks, the retraining cadence and full_refresh."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pyarrow as pa
import pytest

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.profile_keys import targets_sql
from segment_profiles_pipeline.models.sample_data import orders
from segment_profiles_pipeline.predictions.run import build_prediction_traits, cohort_sql, run_prediction
from segment_profiles_pipeline.warehouse.base import WarehouseSession
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.predictions.helpers import (
    CHURN_ONLY,
    load_orders,
    order,
    predictions_file,
    resolve,
    view,
)
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import fake_snowflake

NOW = dt.datetime(2026, 12, 1)


@pytest.fixture
def session(tmp_path: Path):
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as s:
        yield s


def cohorts(session: WarehouseSession, scores: list[float]) -> list[float]:
    session.load("s", pa.table({"i": list(range(len(scores))), "score": scores}), create=True)
    return [float(r[0]) for r in session.query(f"SELECT {cohort_sql('s')} FROM s ORDER BY i").rows]


def test_percentile_cohort_rule(session: WarehouseSession) -> None:
    # ranks 1, 2, 2, 5, 4 of 5: floor(100 * lower / 4) / 100; ties share; top = 1, bottom = 0
    assert cohorts(session, [0.1, 0.2, 0.2, 0.9, 0.5]) == [0.0, 0.25, 0.25, 1.0, 0.75]
    session.execute("DROP TABLE s")
    exact = cohorts(session, [i / 7 for i in range(101)])  # 101 profiles: every cohort exactly i/100
    assert exact == [i / 100 for i in range(101)]
    session.execute("DROP TABLE s")
    assert cohorts(session, [0.3]) == [0.0]


def sample(session: WarehouseSession, users: int = 1000) -> None:
    session.execute("CREATE SCHEMA shop")
    session.load("shop.order_completed", orders(users), create=True)


def test_trains_scores_in_bounded_chunks_and_cohorts_are_in_range(
    session: WarehouseSession, tmp_path: Path
) -> None:
    sample(session)
    project = predictions_file(tmp_path, CHURN_ONLY)
    resolve(session, project)
    batches: list[int] = []
    stream = session.stream

    def spy(sql: str, batch_rows: int):
        for batch in stream(sql, batch_rows):
            batches.append(len(batch))
            yield batch

    session.stream = spy  # type: ignore[method-assign]
    run = run_prediction(session, project, project.predictions[0], NOW, chunk_rows=100)
    as_of = session.query("SELECT max(timestamp) FROM shop.order_completed").scalar()
    # every resolved profile with an order (the graph is built over the orders alone): the 557
    # users, with the guest orders of their devices, and one guest device never identified
    eligible = session.query(f"SELECT count(*) FROM ({targets_sql()}) AS t").scalar()
    assert eligible == 558
    assert run.status == "trained" and run.as_of == as_of  # default as-of: the latest event
    assert run.scored_profiles == eligible and run.chunks == math.ceil(eligible / 100) == len(batches)
    assert max(batches) == 100
    low, high, rows, top = session.query(
        "SELECT min(cohort), max(cohort), count(*), count(*) FILTER (WHERE cohort >= 0.8) FROM predictions.likelihood_to_churn"
    ).rows[0]
    assert (float(low), float(high), rows) == (0.0, 1.0, eligible) and top <= 0.2 * rows + 1
    assert run.metrics["auc"] > 0.6  # the sample's churners are learnable (holdout of ~100)
    # churn means NOT ordering: long-lapsed customers rank above those who just ordered
    lapsed, recent = session.query(
        "SELECT avg(p.cohort) FILTER (WHERE l.last < TIMESTAMP '2026-08-01'), avg(p.cohort) FILTER (WHERE l.last > "
        "TIMESTAMP '2026-10-24') FROM predictions.likelihood_to_churn p JOIN (SELECT user_id, max(timestamp) AS last "
        "FROM shop.order_completed GROUP BY 1) l USING (user_id)"
    ).rows[0]
    assert lapsed > 0.6 > 0.4 > recent
    # monotone: a higher raw score never has a lower cohort
    assert (
        session.query(
            "SELECT count(*) FROM predictions.likelihood_to_churn a JOIN predictions.likelihood_to_churn b "
            "ON a.score > b.score AND a.cohort < b.cohort"
        ).scalar()
        == 0
    )


def test_cadence_and_full_refresh(session: WarehouseSession, tmp_path: Path) -> None:
    sample(session)
    project = predictions_file(tmp_path, CHURN_ONLY)
    resolve(session, project)
    churn = project.predictions[0]
    first = run_prediction(session, project, churn, NOW)
    again = run_prediction(session, project, churn, NOW + dt.timedelta(days=6))
    stale = run_prediction(session, project, churn, NOW + dt.timedelta(days=7))
    forced = run_prediction(session, project, churn, NOW + dt.timedelta(days=7), full_refresh=True)
    assert (again.status, again.model_id) == ("scored", first.model_id)  # scored with the stored model
    assert stale.status == "trained" and stale.model_id != first.model_id
    assert (forced.status, forced.reason) == ("trained", "full refresh requested")


def test_requirements_fail_with_reasons_and_keep_previous_scores(
    session: WarehouseSession, tmp_path: Path
) -> None:
    sample(session)
    project = predictions_file(tmp_path, CHURN_ONLY)
    resolve(session, project)
    churn = project.predictions[0]
    trained = run_prediction(session, project, churn, NOW)
    before = session.query("SELECT * FROM predictions.likelihood_to_churn ORDER BY user_id").rows
    early = dt.datetime(2025, 12, 20)  # ~47 days after the first order: history too short, few profiles
    failed = run_prediction(session, project, churn, NOW, full_refresh=True, as_of=early)
    assert failed.status == "not_trainable"
    assert "days of history" in failed.reason and "at least 90 (3x the window)" in failed.reason
    assert "at least 100 are needed on each side" in failed.reason and "Previous scores kept" in failed.reason
    assert session.query("SELECT * FROM predictions.likelihood_to_churn ORDER BY user_id").rows == before
    assert failed.metrics == trained.metrics  # the model in use is still the old one


def test_a_tracking_gap_is_named(session: WarehouseSession, tmp_path: Path) -> None:
    # 120 profiles who ordered daily for 100 days except days 60-70, then 120 who stopped at day 30
    rows = [
        order(f"a{u}-{d}", f"a{u}", d + 0.5)
        for u in range(120)
        for d in range(0, 100, 3)
        if not 60 <= d <= 70
    ]
    rows += [order(f"b{u}-{d}", f"b{u}", d + 0.5) for u in range(120) for d in range(0, 30, 3)]
    load_orders(session, rows)
    project = predictions_file(tmp_path, CHURN_ONLY)
    resolve(session, project)
    run = run_prediction(session, project, project.predictions[0], NOW)
    assert run.status == "not_trainable"
    assert "was not seen for 14 days in a row (after 2026-02-27, before 2026-03-14)" in run.reason
    assert "history" not in run.reason and "needed on each side" not in run.reason
    assert not session.table_exists("predictions", "likelihood_to_churn")  # nothing to keep, nothing made up


PURCHASE = """
feature_events: [Page Viewed]
predictions:
  - {key: likelihood_to_purchase, type: likelihood_to_purchase, window_days: 30}
"""


def planted_purchases(session: WarehouseSession) -> None:
    """Page-view frequency decides who buys in the label window (as-of day 198.5, the last order; from day 168.5).

    engaged (e, 300): a view every 2 days, one order on a day in (172, 192]; cold (c, 300): a view
    every 20 days, no order; regular (r, 100): an order every 3 days, all year (the history and
    regularity the requirements ask for); and, never buying, engaged-looking (n, 100) and cold
    (k, 100) browsers: scored although they never ordered."""
    views = [
        view(f"v{g}{u}-{d}", f"{g}{u}", d + 0.3)
        for g, every in (("e", 2), ("n", 2))
        for u in range(300 if g == "e" else 100)
        for d in range(0, 200, every)
    ]
    views += [
        view(f"v{g}{u}-{d}", f"{g}{u}", d + 0.3)
        for g in ("c", "k")
        for u in range(300 if g == "c" else 100)
        for d in range(u % 20, 200, 20)
    ]
    orders = [order(f"oe{u}", f"e{u}", 172.5 + u % 20) for u in range(300)]
    orders += [order(f"or{u}-{d}", f"r{u}", d + 0.5) for u in range(100) for d in range(0, 201, 3)]
    load_orders(session, orders)
    load_orders(session, views, "shop.page_viewed")


def test_purchase_goal_finds_the_planted_signal_and_scores_profiles_that_never_bought(
    session: WarehouseSession, tmp_path: Path
) -> None:
    planted_purchases(session)
    project = predictions_file(tmp_path, PURCHASE)
    resolve(session, project)
    run = run_prediction(session, project, project.predictions[0], NOW)
    assert run.status == "trained" and run.as_of == dt.datetime(2026, 7, 18, 12)  # day 198.5: r's last order
    assert run.scored_profiles == 900  # every group: each has an event by the as-of
    # engaged buyers and engaged never-buyers look alike before the label window: not separable
    assert 0.85 < run.metrics["auc"] < 0.99 and run.metrics["quality"] == "excellent"
    scores = dict(
        session.query(
            "SELECT left(user_id, 1), [min(score), max(score)] FROM predictions.likelihood_to_purchase "
            "WHERE left(user_id, 1) IN ('n', 'k') GROUP BY 1"
        ).rows
    )
    assert scores["n"][0] > 0.5 > scores["k"][1]  # frequent browsers are likelier buyers, every one


SNOWFLAKE_PAIR = """
predictions:
  - {key: likelihood_to_churn, type: likelihood_to_churn}
  - {key: likelihood_to_purchase, type: likelihood_to_purchase}
"""


def test_trains_scores_and_publishes_on_snowflake(tmp_path: Path) -> None:
    """The whole run on a Snowflake-dialect warehouse (fakesnow): state tables, features, training,
    chunked scoring loaded back with write_pandas, cohorts, the traits table; then a rerun scores
    with the stored (unpickled) model."""
    project = predictions_file(tmp_path, SNOWFLAKE_PAIR)
    with fake_snowflake() as wh, wh.session() as session:
        session.execute("CREATE SCHEMA shop")
        session.load("shop.order_completed", orders(1000), create=True)
        resolve(session, project)
        runs = [run_prediction(session, project, p, NOW, chunk_rows=200) for p in project.predictions]
        again = run_prediction(session, project, project.predictions[0], NOW + dt.timedelta(days=1))
        rows = build_prediction_traits(session, project)
        shoppers = session.query(f"SELECT count(*) FROM ({targets_sql()}) AS t").scalar()  # resolved profiles
        low, high, both = session.query(
            "SELECT min(likelihood_to_churn), max(likelihood_to_churn), count(likelihood_to_purchase) "
            "FROM models.prediction_traits"
        ).rows[0]
    assert [r.status for r in runs] == ["trained", "trained"], [r.reason for r in runs]
    assert runs[0].metrics["auc"] > 0.6 and runs[1].metrics["auc"] > 0.6
    assert runs[0].chunks == math.ceil(shoppers / 200) > 1
    assert (again.status, again.model_id) == ("scored", runs[0].model_id)
    # every profile that ever ordered is eligible for both, and each gets both cohorts
    assert rows == both == runs[0].scored_profiles == runs[1].scored_profiles == shoppers
    assert (float(low), float(high)) == (0.0, 1.0)


def test_without_the_identity_graph_a_run_says_to_materialize_it_first(
    session: WarehouseSession, tmp_path: Path
) -> None:
    sample(session, 50)
    project = predictions_file(tmp_path, CHURN_ONLY)
    for step in (
        lambda: run_prediction(session, project, project.predictions[0], NOW),
        lambda: build_prediction_traits(session, project),
    ):
        with pytest.raises(ConfigError) as err:
            step()
        assert "identity.external_id_mapping does not exist" in str(err.value)
        assert "materialize the identity graph first" in str(err.value)
