"""Scenario: predictions. Feature extraction + training + scoring of ``likelihood_to_churn``.

P profiles, E ``Order Completed`` events over a year (1M / 20M with ``--large``; 100k / 2M by
default), in DuckDB. Profiles have skewed purchase rates and stop buying at a day of their own
(a quarter of them before the last 30 days: the churners). Each side runs in its own process:

- **ours**: ``run_prediction`` (features in one SQL pass keyed on the resolved profile through
  the identity graph, built untimed in ``setup``, a 100k-profile training sample, scoring
  streamed from the warehouse in chunks, cohorts and the predictions table written back);
- **baseline**: the same features in pandas (load the events, deduplicate by message id,
  ``groupby`` per cut-off), the same sample and the same model (``predictions.model.train``),
  then every eligible profile scored in memory and ranked.

Both report the holdout AUC and the profiles scored, so the timings compare equal work.
``python -m bench.predictions --profiles P --events E`` runs it alone and prints the core count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.harness import QUIET, Row, ScenarioResult, Sizes, in_child

TABLE = "shop.order_completed"
NOW = dt.datetime(2027, 1, 15)
WINDOW_DAYS = 30
COUNT_WINDOWS_DAYS = (7, 30, 90, 365)
TRAINING_ROWS = 100_000
CHUNK_ROWS = 50_000
TARGET_SECONDS = 60.0
TARGET_RSS_MB = 2048.0
TARGET_EVENTS = 20_000_000
MEMORY_LIMIT = "1GB"
"""DuckDB's own memory cap for our side (a warehouse setting, like a Snowflake warehouse size).
DuckDB's default, 80% of RAM, lets the feature query's hash tables grow to GBs before spilling."""
PREDICTIONS_YML = f"""
predictions:
  - {{key: likelihood_to_churn, type: likelihood_to_churn, window_days: {WINDOW_DAYS}, max_training_rows: {TRAINING_ROWS}}}
"""


def events_sql(events: int, profiles: int) -> str:
    """Skewed rates (profile = P * u^2), each profile buying from day 0 until its stop day."""
    return f"""
SELECT 'oc-' || i AS id, 'u' || p AS user_id, 'a' || p AS anonymous_id,
       TIMESTAMP '2026-01-01' + to_seconds(CAST(hash(i, 2) % (stop * 86400) AS BIGINT)) AS timestamp,
       TIMESTAMP '2026-01-01' + to_seconds(CAST(hash(i, 2) % (stop * 86400) + 5 AS BIGINT)) AS received_at,
       CAST(10 + hash(i, 4) % 100 AS DOUBLE) AS revenue, 'USD' AS currency
FROM (SELECT i, p, CASE WHEN hash(p, 3) % 4 = 0 THEN 60 + hash(p, 5) % 270 ELSE 365 END AS stop
      FROM (SELECT i, CASE WHEN i < {profiles} THEN i  -- every profile buys at least once
                           ELSE CAST(floor({profiles} * pow((hash(i, 1) % 1000003) / 1000003.0, 2)) AS BIGINT) END AS p
            FROM range({events}) AS t(i)))"""


def graph_sql(profiles: int) -> str:
    """The identity graph the identity layer would build for these events (each profile one user_id
    and one device), in ``identity.external_id_mapping``'s layout: predictions key events through it.
    Profiles are named after their user ids, so the training sample (ordered by ``md5(profile_key)``)
    is the baseline's (ordered by ``md5(user_id)``)."""
    return f"""
SELECT 'u' || p AS canonical_segment_id, 'u' || p AS segment_id, t AS external_id_type,
       CASE t WHEN 'user_id' THEN 'u' ELSE 'a' END || p AS external_id_value, CAST(NULL AS VARCHAR) AS external_id_hash,
       TIMESTAMP '2026-01-01' AS timestamp, CAST(NULL AS VARCHAR) AS triggering_event_id,
       CAST(2 * p + (t = 'anonymous_id')::INT AS BIGINT) AS seq
FROM range({profiles}) AS r(p), (VALUES ('user_id'), ('anonymous_id')) AS k(t)"""


def setup(database: str, events: int, profiles: int) -> dict[str, Any]:
    """Untimed: the event table and the identity graph over it (the identity layer's work, not ours)."""
    import duckdb

    from segment_profiles_pipeline.identity.config import EXTERNAL_ID_TABLE

    with duckdb.connect(database) as con:
        con.execute(QUIET)
        con.execute("CREATE SCHEMA IF NOT EXISTS shop")
        con.execute(f"CREATE TABLE {TABLE} AS {events_sql(events, profiles)}")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {EXTERNAL_ID_TABLE.split('.')[0]}")
        con.execute(f"CREATE TABLE {EXTERNAL_ID_TABLE} AS {graph_sql(profiles)}")
        rows, users = con.execute(f"SELECT count(*), count(DISTINCT user_id) FROM {TABLE}").fetchone()
    return {"rows": rows, "profiles": users}


def ours(database: str, models_dir: str, memory_limit: str | None = MEMORY_LIMIT) -> dict[str, Any]:
    from segment_profiles_pipeline.predictions import load_predictions, run_prediction
    from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

    project = load_predictions(Path(models_dir))
    assert project is not None
    with DuckDBWarehouse(database=database).session() as session:
        session.execute(QUIET)
        if memory_limit:
            session.execute(f"SET memory_limit = '{memory_limit}'")
        started = time.perf_counter()
        run = run_prediction(session, project, project.predictions[0], NOW, chunk_rows=CHUNK_ROWS)
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "status": run.status,
        "reason": run.reason,
        "phases": run.seconds,
        "auc": run.metrics.get("auc"),
        "scored": run.scored_profiles,
        "training_rows": run.training_rows,
    }


def _features(frame: Any, cutoff: Any) -> Any:
    """The per-profile statistics of ``features.py`` as of ``cutoff``, in pandas."""
    import pandas as pd

    upto = frame[frame["timestamp"] <= cutoff]
    age = (cutoff - upto["timestamp"]).dt.total_seconds() / 86400
    columns = {f"n_{w}d": (age < w).astype("int32") for w in COUNT_WINDOWS_DAYS}
    stats = pd.DataFrame({"user_id": upto["user_id"], "age": age, **columns}).groupby("user_id")
    out = stats[[f"n_{w}d" for w in COUNT_WINDOWS_DAYS]].sum()
    out["n_all"] = stats.size()
    out["recency_days"] = stats["age"].min()
    out["tenure_days"] = stats["age"].max()
    out["per_30d"] = out["n_all"] * 30.0 / out["tenure_days"].clip(lower=1.0)
    return out


def baseline(database: str) -> dict[str, Any]:
    import hashlib

    import duckdb
    import numpy as np
    import pandas as pd

    from segment_profiles_pipeline.predictions import model as models

    started = time.perf_counter()
    with duckdb.connect(database, read_only=True) as con:
        frame = con.sql(
            f"SELECT id, user_id, timestamp, received_at FROM {TABLE} WHERE user_id IS NOT NULL"
        ).df()
    loaded = time.perf_counter() - started
    frame = frame.sort_values(["received_at", "timestamp"]).drop_duplicates("id")
    as_of = frame["timestamp"].max()
    cutoff = as_of - pd.Timedelta(days=WINDOW_DAYS)
    train, score = _features(frame, cutoff), _features(frame, as_of)
    window = frame[(frame["timestamp"] > cutoff) & (frame["timestamp"] <= as_of)]
    train["label"] = (window.groupby("user_id").size().reindex(train.index).fillna(0) == 0).astype(float)
    order = sorted(train.index, key=lambda u: hashlib.md5(u.encode()).hexdigest())[:TRAINING_ROWS]
    sample = train.loc[order]
    names = [c for c in train.columns if c != "label"]
    trained = models.train("likelihood_to_churn", sample[names].to_numpy(float), sample["label"].to_numpy())
    scores = models.predict(trained.model, score[names].to_numpy(float))
    ranks = pd.Series(scores).rank(method="min").to_numpy() - 1
    cohorts = np.floor(ranks * 100 / max(len(scores) - 1, 1)) / 100
    return {
        "seconds": time.perf_counter() - started,
        "load_seconds": loaded,
        "auc": trained.metrics["auc"],
        "scored": len(cohorts),
    }


def measure(profiles: int, events: int, workdir: Path) -> dict[str, dict[str, Any]]:
    database = str(workdir / "churn.duckdb")  # "predictions.duckdb" would shadow the schema
    models_dir = workdir / "prediction_models"
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "predictions.yml").write_text(textwrap.dedent(PREDICTIONS_YML).lstrip())
    data = in_child(setup, database=database, events=events, profiles=profiles)
    mine = in_child(ours, database=database, models_dir=str(models_dir))
    theirs = in_child(baseline, database=database)
    return {"setup": data, "ours": mine, "baseline": theirs}


def run(sizes: Sizes, workdir: Path) -> ScenarioResult:
    events, profiles = sizes.prediction_events, sizes.prediction_profiles
    got = measure(profiles, events, workdir)
    mine, theirs = got["ours"], got["baseline"]
    title = f"predictions ({profiles:,} profiles, {events:,} events, {os.cpu_count()} cores)"
    at_target = events >= TARGET_EVENTS
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in mine["phases"].items())
    notes = (
        f"ours: {phases}; {mine['scored']:,} profiles scored, holdout AUC {mine['auc']:.3f}. pandas: "
        f"{theirs['load_seconds']:.1f} s loading, {theirs['scored']:,} scored, AUC {theirs['auc']:.3f}."
    )
    rows = [
        Row(
            title,
            "features + training + scoring, end to end",
            "s",
            mine["seconds"],
            theirs["seconds"],
            "pandas features, same model",
            higher_is_better=False,
            target=f"< {TARGET_SECONDS:.0f} s at {TARGET_EVENTS:,} events",
            met=mine["seconds"] < TARGET_SECONDS if at_target else None,
            notes=notes,
        ),
        Row(
            title,
            "peak RSS",
            "MB",
            mine["peak_rss_mb"],
            theirs["peak_rss_mb"],
            "pandas features, same model",
            higher_is_better=False,
            target=f"< {TARGET_RSS_MB:,.0f} MB at {TARGET_EVENTS:,} events",
            met=mine["peak_rss_mb"] < TARGET_RSS_MB if at_target else None,
        ),
    ]
    return ScenarioResult("predictions", title, rows, got)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.predictions", description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--large", action="store_true", help="1M profiles, 20M events")
    args = parser.parse_args(argv)
    profiles, events = (1_000_000, 20_000_000) if args.large else (args.profiles, args.events)
    with tempfile.TemporaryDirectory(prefix="bench-predictions-") as workdir:
        got = measure(profiles, events, Path(workdir))
    mine, theirs = got["ours"], got["baseline"]
    print(f"{os.cpu_count()} cores; {got['setup']['rows']:,} events, {got['setup']['profiles']:,} profiles\n")
    print("| side | wall time | peak RSS | profiles scored | holdout AUC |")
    print("|---|---:|---:|---:|---:|")
    for label, side in (
        ("ours (SQL features, streamed scoring)", mine),
        ("pandas features, same model", theirs),
    ):
        print(
            f"| {label} | {side['seconds']:.1f} s | {side['peak_rss_mb']:,.0f} MB | {side['scored']:,} | {side['auc']:.3f} |"
        )
    print(f"\nours by phase: {mine['phases']}")


if __name__ == "__main__":
    main()
