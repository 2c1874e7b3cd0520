"""Train and score one prediction in the warehouse; build the table the sync reads.

A run (``run_prediction``):

0. requires the identity graph: events are keyed on identity-resolved profiles
   (``features.py``), so without ``identity.external_id_mapping`` it fails naming the fix;
1. resolves ``as_of`` (argument, else the prediction's ``as_of``, else the latest event time of
   resolved profiles in its event table, so historic data works);
2. builds ``predictions.<key>__features`` in one pass per event table (``features.py``);
3. retrains when due (no model, changed definition, ``full_refresh``, or the stored model is
   ``retrain_every_days`` old): checks Segment's data requirements first, and when they fail
   it records why and stops, so the previous scores stay exactly as they were. Training reads a
   bounded, hash-ordered sample (``max_training_rows``) into memory, nothing more;
4. scores every eligible profile by streaming the feature rows in chunks (``chunk_rows``) from
   the warehouse, writing each chunk's scores back before reading the next one;
5. replaces ``predictions.<key>`` (profile_key, the profile's send target ``user_id`` /
   ``anonymous_id`` as ``profile_keys.targets_sql`` gives it, raw score, percentile cohort, as_of,
   model_id) in one statement from the staged scores.

Models and run history live in ``_segment_profiles`` next to the other state.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import itertools
import json
import operator
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.identity.config import EXTERNAL_ID_TABLE, load_identity
from segment_profiles_pipeline.identity.profile_keys import targets_sql
from segment_profiles_pipeline.predictions.config import (
    PREDICTIONS_SCHEMA,
    PROFILE_COLUMN,
    TRAITS_TABLE,
    PredictionConfig,
    PredictionsProject,
)
from segment_profiles_pipeline.predictions.features import (
    FEATURES_VERSION,
    CompiledFeatures,
    compile_features,
)
from segment_profiles_pipeline.state import STATE_SCHEMA
from segment_profiles_pipeline.traits.compiler import timestamp_literal
from segment_profiles_pipeline.traits.compute import transaction, utc_naive
from segment_profiles_pipeline.warehouse.base import WarehouseSession, literal

if TYPE_CHECKING:  # numpy and the model module (~0.2 s): only a run that trains or scores imports them
    import numpy as np

    from segment_profiles_pipeline.predictions import model as models

MODELS_TABLE = f"{STATE_SCHEMA}.prediction_models"
RUNS_TABLE = f"{STATE_SCHEMA}.prediction_runs"
SCORE_CHUNK_ROWS = 10_000
HISTORY_FACTOR = 3  # Segment: history of at least 3x the target window
MAX_GAP_DAYS = 7  # Segment: a gap of seven days in tracking can stop a prediction
HISTOGRAM_BINS = 10
COHORT_TYPE = "DECIMAL(3,2)"
STATE_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {MODELS_TABLE} (
    prediction VARCHAR NOT NULL, model_id VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL,
    trained_at TIMESTAMP NOT NULL, as_of TIMESTAMP NOT NULL, training_rows BIGINT NOT NULL,
    metrics VARCHAR NOT NULL, model VARCHAR NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (
    prediction VARCHAR NOT NULL, run_at TIMESTAMP NOT NULL, as_of TIMESTAMP, status VARCHAR NOT NULL,
    reason VARCHAR, model_id VARCHAR, scored_profiles BIGINT)""",
)


@dataclass(frozen=True)
class PredictionRun:
    """What one run did; the asset reports it as metadata and the quality check reads it."""

    key: str
    status: str  # "trained" (and scored), "scored" (with the stored model), "not_trainable"
    reason: str  # why it trained or not
    as_of: dt.datetime | None
    model_id: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # of the model in use
    training_rows: int = 0
    scored_profiles: int = 0
    chunks: int = 0
    histogram: list[tuple[float, float, int]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def table_of(prediction: PredictionConfig) -> str:
    return f"{PREDICTIONS_SCHEMA}.{prediction.key}"


def model_fingerprint(project: PredictionsProject, compiled: CompiledFeatures) -> str:
    extra = f"{FEATURES_VERSION}|sklearn {importlib.metadata.version('scikit-learn')}|{','.join(compiled.feature_names())}"
    return project.fingerprint(compiled.prediction, extra)


def requirement_problems(
    session: WarehouseSession, compiled: CompiledFeatures, first_event: dt.datetime, features: str
) -> list[str]:
    """Segment's data requirements, adapted; each failure is one sentence saying what is missing."""
    p = compiled.prediction
    problems = []
    needed = HISTORY_FACTOR * p.window_days
    history = (compiled.as_of - first_event).total_seconds() / 86400
    if history < needed:
        problems.append(
            f"{p.goal} has {history:.0f} days of history before {compiled.as_of:%Y-%m-%d}; a {p.window_days}-day "
            f"prediction needs at least {needed} ({HISTORY_FACTOR}x the window)"
        )
    did, did_not = session.query(compiled.class_counts_sql(features)).rows[0]
    target = "spent in the window" if p.type == "predicted_ltv" else f"did {p.goal} in the window"
    for count, what in ((did, target), (did_not, f"did not ({target.removeprefix('did ')})")):
        if int(count or 0) < p.min_profiles_per_class:
            problems.append(
                f"{int(count or 0)} eligible profile(s) {what} in the last training window; at least "
                f"{p.min_profiles_per_class} are needed on each side"
            )
    since = compiled.as_of - dt.timedelta(days=needed)
    days = sorted(r[0] for r in session.query(compiled.active_days_sql(since)).rows)
    edges = [since.date(), *days, compiled.as_of.date() + dt.timedelta(days=1)]
    gaps = [(a, b) for a, b in itertools.pairwise(edges) if (b - a).days - 1 >= MAX_GAP_DAYS]
    if gaps:
        a, b = max(gaps, key=lambda g: (g[1] - g[0]).days)
        problems.append(
            f"{p.goal} was not seen for {(b - a).days - 1} days in a row (after {a}, before {b}); it must be "
            f"tracked regularly (no gap of {MAX_GAP_DAYS} days or more in the last {needed} days)"
        )
    return problems


def _stored_model(session: WarehouseSession, key: str) -> dict[str, Any] | None:
    rows = session.query(f"SELECT * FROM {MODELS_TABLE} WHERE prediction = {literal(key)}").dicts()
    return rows[0] if rows else None


def _retrain_reason(
    stored: dict[str, Any] | None, fingerprint: str, now: dt.datetime, p: PredictionConfig, full_refresh: bool
) -> str | None:
    if full_refresh:
        return "full refresh requested"
    if stored is None:
        return "no model trained yet"
    if stored["fingerprint"] != fingerprint:
        return "the prediction's definition (or its features or library) changed"
    age = now - stored["trained_at"]
    if age >= dt.timedelta(days=p.retrain_every_days):
        return f"the model is {age.days} day(s) old (retrain every {p.retrain_every_days})"
    return None


def _matrix(rows: list[dict[str, Any]], names: list[str]) -> np.ndarray:
    """Rows of floats (``rows_sql`` casts them, NaN for missing) as a matrix, converted in C:
    ``itemgetter`` picks the columns, ``fromiter`` fills the array without a list per row."""
    import numpy as np  # ~0.1 s: scoring pays it, not each definitions load

    values = itertools.chain.from_iterable(map(operator.itemgetter(*names), rows))
    return np.fromiter(values, float, count=len(rows) * len(names)).reshape(len(rows), len(names))


def _record(session: WarehouseSession, run: PredictionRun, now: dt.datetime) -> PredictionRun:
    values = [run.key, now, run.as_of, run.status, run.reason, run.model_id, run.scored_profiles]
    session.execute(f"INSERT INTO {RUNS_TABLE} VALUES ({', '.join(map(literal, values))})")
    return run


def require_graph(session: WarehouseSession, project: PredictionsProject, step: str) -> None:
    """Predictions are keyed on identity-resolved profiles: without the graph there are none."""
    schema, name = EXTERNAL_ID_TABLE.split(".")
    if not session.table_exists(schema, name):
        raise ConfigError(
            f"{EXTERNAL_ID_TABLE} does not exist, so {step} cannot key events on identity-resolved profiles.",
            file=project.file,
            field="predictions",
            fix="materialize the identity graph first (asset group `identity`, upstream of the predictions).",
        )


def run_prediction(
    session: WarehouseSession,
    project: PredictionsProject,
    prediction: PredictionConfig,
    now: dt.datetime,
    *,
    full_refresh: bool = False,
    as_of: dt.datetime | None = None,
    chunk_rows: int = SCORE_CHUNK_ROWS,
) -> PredictionRun:
    """Train when due (and possible), then score every eligible profile. See the module doc."""
    import numpy as np  # with the model module (~0.3 s): a run pays them, not each definitions load

    from segment_profiles_pipeline.predictions import model as models

    now = utc_naive(now)
    seconds: dict[str, float] = {}
    require_graph(session, project, table_of(prediction))
    for statement in (
        f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}",
        f"CREATE SCHEMA IF NOT EXISTS {PREDICTIONS_SCHEMA}",
        *STATE_DDL,
    ):
        session.execute(statement)
    key = prediction.key
    schemas = {t: dict(session.columns(*t)) for t in project.feature_tables(prediction)}
    # a missing table or column is a ConfigError; the as-of is set once the span is known
    compiled = compile_features(project, prediction, schemas, now, load_identity(project.path.parent).rules)
    span = session.query(compiled.span_sql()).dicts()[0]
    chosen = as_of or prediction.as_of or span["last_ts"]
    if chosen is None or span["first_ts"] is None:
        return _record(
            session,
            PredictionRun(
                key,
                "not_trainable",
                f"{prediction.goal} has no events of identity-resolved profiles yet; previous scores kept",
                None,
            ),
            now,
        )
    as_of = utc_naive(chosen)
    compiled = dataclasses.replace(compiled, as_of=as_of)
    features = f"{table_of(prediction)}__features"
    started = time.perf_counter()
    session.execute(f"CREATE OR REPLACE TABLE {features} AS {compiled.build_sql()}")
    seconds["features"] = time.perf_counter() - started

    fingerprint = model_fingerprint(project, compiled)
    stored = _stored_model(session, key)
    reason = _retrain_reason(stored, fingerprint, now, prediction, full_refresh)
    names = compiled.feature_names()
    training_rows = 0
    if reason is not None:
        problems = requirement_problems(session, compiled, utc_naive(span["first_ts"]), features)
        if problems:
            why = f"cannot train ({reason}): " + "; ".join(problems) + ". Previous scores kept."
            metrics = json.loads(stored["metrics"]) if stored else {}
            return _record(
                session,
                PredictionRun(key, "not_trainable", why, as_of, metrics=metrics, seconds=seconds),
                now,
            )
        started = time.perf_counter()
        rows = session.query(compiled.rows_sql(features, "train", prediction.max_training_rows)).dicts()
        labels = np.fromiter(map(operator.itemgetter("label"), rows), float, count=len(rows))
        trained = models.train(prediction.type, _matrix(rows, names), labels)
        del rows
        model, model_id, metrics = trained.model, uuid.uuid4().hex[:12], trained.metrics
        training_rows = trained.fit_rows + trained.holdout_rows
        values = [
            key,
            model_id,
            fingerprint,
            now,
            as_of,
            training_rows,
            json.dumps(metrics),
            models.dumps(model),
        ]
        with transaction(session):
            session.execute(f"DELETE FROM {MODELS_TABLE} WHERE prediction = {literal(key)}")
            session.execute(f"INSERT INTO {MODELS_TABLE} VALUES ({', '.join(map(literal, values))})")
        seconds["train"] = time.perf_counter() - started
    else:
        assert stored is not None
        model, model_id, metrics = (
            models.loads(stored["model"]),
            stored["model_id"],
            json.loads(stored["metrics"]),
        )
        training_rows = int(stored["training_rows"])

    started = time.perf_counter()
    scored, chunks = score_in_chunks(
        session, compiled, model, features, f"{table_of(prediction)}__next", chunk_rows
    )
    publish_scores(session, prediction, as_of, model_id, now)
    seconds["score"] = time.perf_counter() - started
    run = PredictionRun(
        key,
        "trained" if reason else "scored",
        reason or "model is recent; scored with it",
        as_of,
        model_id,
        metrics,
        training_rows,
        scored,
        chunks,
        score_histogram(session, prediction),
        seconds,
    )
    return _record(session, run, now)


def score_in_chunks(
    session: WarehouseSession,
    compiled: CompiledFeatures,
    model: models.Model,
    features: str,
    staging: str,
    chunk_rows: int,
) -> tuple[int, int]:
    """Score the eligible profiles chunk by chunk into ``staging``; returns (profiles, chunks).

    Only one chunk of feature rows (and its scores) is in Python memory at a time."""
    import pyarrow as pa  # with the model module (~0.3 s): scoring pays them, not each definitions load

    from segment_profiles_pipeline.predictions import model as models

    names = compiled.feature_names()
    session.execute(f"CREATE OR REPLACE TABLE {staging} (profile_key VARCHAR, score DOUBLE)")
    profiles = chunks = 0
    for batch in session.stream(compiled.rows_sql(features, "score"), chunk_rows):
        scores = models.predict(model, _matrix(batch, names))
        data = pa.table(
            {
                "profile_key": pa.array(map(operator.itemgetter("profile_key"), batch), pa.string()),
                "score": pa.array(scores, pa.float64()),
            }
        )
        session.load(staging, data)
        profiles += len(batch)
        chunks += 1
    return profiles, chunks


def cohort_sql(source: str) -> str:
    """Percentile cohort of each score in ``source``: floor(100 x the share of the other profiles
    scoring strictly lower) / 100, in [0, 1]. 0.8 = at least 80% score lower (the top 20%);
    equal scores share a cohort; a lone profile is 0."""
    share = "(rank() OVER (ORDER BY score) - 1) * 100.0 / (count(*) OVER () - 1)"
    return f"CAST(CASE WHEN count(*) OVER () = 1 THEN 0 ELSE floor({share}) / 100 END AS {COHORT_TYPE})"


def publish_scores(
    session: WarehouseSession,
    prediction: PredictionConfig,
    as_of: dt.datetime,
    model_id: str,
    now: dt.datetime,
) -> None:
    """Replace ``predictions.<key>`` with the staged scores, their cohorts and each profile's send
    target (``user_id`` when it has one, else its first anonymous id), in one statement."""
    staging = f"{table_of(prediction)}__next"
    session.execute(
        f"CREATE OR REPLACE TABLE {table_of(prediction)} AS SELECT s.profile_key AS {PROFILE_COLUMN}, "
        f"g.user_id, g.anonymous_id, s.score, {cohort_sql(staging)} AS cohort, {timestamp_literal(as_of)} AS as_of, "
        f"{literal(model_id)} AS model_id, {timestamp_literal(now)} AS scored_at FROM {staging} AS s "
        f"LEFT JOIN ({targets_sql()}) AS g ON g.profile_key = s.profile_key"
    )
    session.execute(f"DROP TABLE IF EXISTS {staging}")


def score_histogram(
    session: WarehouseSession, prediction: PredictionConfig
) -> list[tuple[float, float, int]]:
    """Raw scores in ``HISTOGRAM_BINS`` equal bins: [0, 1] for probabilities, [0, max] for amounts."""
    table = table_of(prediction)
    top = 1.0 if prediction.binary else float(session.query(f"SELECT max(score) FROM {table}").scalar() or 0)
    width = (top / HISTOGRAM_BINS) or 1.0
    counts = dict(
        session.query(
            f"SELECT least(CAST(floor(score / {width!r}) AS INTEGER), {HISTOGRAM_BINS - 1}) AS b, count(*) FROM {table} GROUP BY 1"
        ).rows
    )
    return [(i * width, (i + 1) * width, int(counts.get(i, 0))) for i in range(HISTOGRAM_BINS)]


def build_prediction_traits(session: WarehouseSession, project: PredictionsProject) -> int:
    """``models.prediction_traits``: one row per scored profile (``profile_key``), its send target
    as the graph has it now (``user_id``, else ``anonymous_id``: ``profile_keys.targets_sql``), one
    cohort column per prediction (null where the profile is not eligible, or the prediction never
    scored). Returns the rows. Scores a run before the identity keying stored (keyed on
    ``user_id``, without ``profile_key``) count as never scored."""
    require_graph(session, project, TRAITS_TABLE)
    session.execute("CREATE SCHEMA IF NOT EXISTS models")
    scored = [
        p for p in project.predictions if PROFILE_COLUMN in dict(session.columns(PREDICTIONS_SCHEMA, p.key))
    ]
    if not scored:
        cols = ", ".join(f"{p.key} {COHORT_TYPE}" for p in project.predictions)
        session.execute(
            f"CREATE OR REPLACE TABLE {TRAITS_TABLE} ({PROFILE_COLUMN} VARCHAR, user_id VARCHAR, "
            f"anonymous_id VARCHAR, {cols})"
        )
        return 0
    ids = " UNION ".join(f"SELECT {PROFILE_COLUMN} FROM {table_of(p)}" for p in scored)
    select = [f"u.{PROFILE_COLUMN}", "g.user_id", "g.anonymous_id"]
    joins = []
    for i, p in enumerate(project.predictions):
        if p in scored:
            select.append(f"p{i}.cohort AS {p.key}")
            joins.append(f"LEFT JOIN {table_of(p)} AS p{i} ON p{i}.{PROFILE_COLUMN} = u.{PROFILE_COLUMN}")
        else:
            select.append(f"CAST(NULL AS {COHORT_TYPE}) AS {p.key}")
    joins.append(f"LEFT JOIN ({targets_sql()}) AS g ON g.profile_key = u.{PROFILE_COLUMN}")
    session.execute(
        f"CREATE OR REPLACE TABLE {TRAITS_TABLE} AS SELECT {', '.join(select)} FROM ({ids}) AS u "
        + " ".join(joins)
    )
    return int(session.query(f"SELECT count(*) FROM {TRAITS_TABLE}").scalar() or 0)
