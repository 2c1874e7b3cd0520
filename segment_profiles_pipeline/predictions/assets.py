"""Dagster wiring of the predictions: one asset per prediction, the traits table, a sync mapping.

- ``predictions/<key>`` (group ``predictions``): trains when due and scores on every run
  (``run.py``); metadata shows the quality figures and a score histogram; its ``quality``
  check fails when the prediction could not be trained (saying why) or its holdout AUC is
  below ``min_auc``.
Events are keyed on identity-resolved profiles and the traits table is addressed to each
profile's send target, so both read the identity graph and each prediction depends on its three
assets. The graph never reads ``predictions_identify`` (``definitions.py`` gives it the model and
upstream mappings only), so the edge makes no cycle; it does read the predictions' event tables.

- ``prediction_traits``: ``models.prediction_traits``, the cohorts side by side, read by the
  mapping ``predictions_identify`` (through the ordinary sync) and joinable by audiences.
- ``<key>_schedule`` for a prediction with a ``schedule:``; the mapping's schedule already
  refreshes every prediction upstream of its sync.

``build_defs`` is the one entry point ``definitions.py`` calls.
"""

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    Config,
    DefaultScheduleStatus,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    ScheduleDefinition,
    asset,
)
from pydantic import Field

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.metadata import table_metadata
from segment_profiles_pipeline.predictions.config import (
    PREDICTIONS_FILE,
    TRAITS_ASSET,
    TRAITS_TABLE,
    PredictionConfig,
    PredictionsProject,
    check_key_clashes,
    load_predictions,
)
from segment_profiles_pipeline.predictions.run import (
    PredictionRun,
    build_prediction_traits,
    run_prediction,
    table_of,
)
from segment_profiles_pipeline.project import MappingSpec, ModelProblem, check_unique_names
from segment_profiles_pipeline.vocabulary import (
    DEFAULT_KEYS,
    POOL,
    WAREHOUSE_RETRY,
    AssetKeys,
    DomainDefs,
    build_broken_asset,
)
from segment_profiles_pipeline.warehouse.base import Warehouse

GROUP = "predictions"
TRAITS_KEY = AssetKey(TRAITS_ASSET)
BAR_WIDTH = 40


def prediction_key(prediction: PredictionConfig, keys: AssetKeys = DEFAULT_KEYS) -> AssetKey:
    return keys(AssetKey([GROUP, prediction.key]))


class PredictionRunConfig(Config):
    full_refresh: bool = Field(default=False, description="Retrain now, whatever the model's age.")
    as_of: str | None = Field(
        default=None, description="ISO time to score as of (default: the config's, else the latest event)."
    )


def histogram_markdown(run: PredictionRun) -> str:
    """The score distribution as a text bar chart (renders in the asset's metadata)."""
    top = max((count for *_, count in run.histogram), default=0) or 1
    lines = [
        f"{lo:>9.2f} to {hi:<9.2f} {'█' * round(BAR_WIDTH * count / top):<{BAR_WIDTH}} {count}"
        for lo, hi, count in run.histogram
    ]
    return "```\n" + "\n".join(lines) + "\n```"


def run_metadata(run: PredictionRun) -> dict[str, Any]:
    figures = {
        k: MetadataValue.float(round(float(v), 4))
        for k, v in run.metrics.items()
        if isinstance(v, int | float)
    }
    return {
        "status": run.status,
        "reason": run.reason,
        "as_of": run.as_of.isoformat() if run.as_of else "none",
        "model_id": run.model_id or "none",
        "quality": str(run.metrics.get("quality", "none")),
        **figures,
        "training_rows": MetadataValue.int(run.training_rows),
        "scored_profiles": MetadataValue.int(run.scored_profiles),
        "score_chunks": MetadataValue.int(run.chunks),
        **{f"seconds_{k}": MetadataValue.float(round(v, 3)) for k, v in run.seconds.items()},
        **({"score_distribution": MetadataValue.md(histogram_markdown(run))} if run.histogram else {}),
    }


def quality_result(run: PredictionRun, prediction: PredictionConfig) -> AssetCheckResult:
    """Fails when the prediction cannot be trained, or its holdout AUC is below ``min_auc``."""
    auc = run.metrics.get("auc")
    if run.status == "not_trainable":
        passed, text = False, run.reason
    elif not isinstance(auc, float):
        passed, text = False, "no quality figures for the model in use"
    else:
        passed = auc >= prediction.min_auc
        text = f"holdout AUC {auc:.3f} {'≥' if passed else '<'} min_auc {prediction.min_auc} ({run.metrics.get('quality')})"
    return AssetCheckResult(
        check_name="quality",
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=text,
        metadata={"auc": MetadataValue.float(float(auc)) if isinstance(auc, float) else "none"},
    )


def build_prediction_asset(
    project: PredictionsProject, prediction: PredictionConfig, kind: str, version: str, keys: AssetKeys
) -> AssetsDefinition:
    key = prediction_key(prediction, keys)

    @asset(
        key=key,
        group_name=GROUP,
        kinds={kind, "scikit-learn"},
        deps=[
            *(keys.source(schema, table) for schema, table in project.feature_tables(prediction)),
            *keys.graph,
        ],
        check_specs=[
            AssetCheckSpec(
                "quality", asset=key, description=f"Trainable, holdout AUC ≥ {prediction.min_auc}."
            )
        ],
        code_version=version,
        pool=POOL,
        retry_policy=WAREHOUSE_RETRY,
        metadata={"predictions_file": MetadataValue.path(project.file), "type": prediction.type},
        description=f"`{table_of(prediction)}`: {prediction.description or prediction.type} Raw score and "
        "percentile cohort per eligible profile; retrained every "
        f"{prediction.retrain_every_days} day(s), scored on every run.",
    )
    def predict(
        context: AssetExecutionContext, config: PredictionRunConfig, warehouse: ResourceParam[Warehouse]
    ) -> MaterializeResult:
        as_of = dt.datetime.fromisoformat(config.as_of) if config.as_of else None
        with warehouse.session() as session:
            try:
                run = run_prediction(
                    session,
                    project,
                    prediction,
                    dt.datetime.now(dt.UTC),
                    full_refresh=config.full_refresh,
                    as_of=as_of,
                )
            except ConfigError as exc:
                raise Failure(description=str(exc), allow_retries=False) from None
            scored = session.table_exists(*table_of(prediction).split("."))
            metadata = table_metadata(session, table_of(prediction)) if scored else {}
        log = context.log.warning if run.status == "not_trainable" else context.log.info
        log(f"{prediction.key}: {run.status} ({run.reason}); {run.scored_profiles} profile(s) scored")
        return MaterializeResult(
            metadata={**metadata, **run_metadata(run)}, check_results=[quality_result(run, prediction)]
        )

    return predict


def build_traits_asset(
    project: PredictionsProject, kind: str, version: str, keys: AssetKeys
) -> AssetsDefinition:
    @asset(
        key=keys(TRAITS_KEY),
        group_name=GROUP,
        kinds={kind},
        deps=[prediction_key(p, keys) for p in project.predictions],
        code_version=version,
        pool=POOL,
        retry_policy=WAREHOUSE_RETRY,
        description=f"`{TRAITS_TABLE}`: one row per scored profile, one percentile-cohort column per "
        f"prediction ({', '.join(p.key for p in project.predictions)}); what the predictions mapping sends.",
    )
    def prediction_traits(warehouse: ResourceParam[Warehouse]) -> MaterializeResult:
        with warehouse.session() as session:
            try:
                build_prediction_traits(session, project)
            except ConfigError as exc:
                raise Failure(description=str(exc), allow_retries=False) from None
            return MaterializeResult(metadata=table_metadata(session, TRAITS_TABLE))

    return prediction_traits


def build_prediction_schedules(project: PredictionsProject, keys: AssetKeys) -> list[ScheduleDefinition]:
    schedules = []
    for p in project.predictions:
        cron = p.schedule.cron_schedule
        if cron is not None:
            schedules.append(
                ScheduleDefinition(
                    name=f"{p.key}_schedule",
                    cron_schedule=cron,
                    execution_timezone=p.schedule.timezone,
                    default_status=DefaultScheduleStatus.RUNNING,
                    target=AssetSelection.assets(prediction_key(p, keys), keys(TRAITS_KEY)),
                    description=f"Scores `{p.key}` (retraining when due) and refreshes {TRAITS_TABLE}.",
                )
            )
    return schedules


def build_defs(
    models_dir: Path, kind: str, others: list[MappingSpec], *, strict: bool, keys: AssetKeys = DEFAULT_KEYS
) -> DomainDefs:
    """Load ``predictions.yml`` (none: nothing to add): its assets and schedules, its sync mapping
    and the event tables it reads. A broken file raises when ``strict``, else becomes one stub
    asset showing the error, like a broken model."""
    try:
        project = load_predictions(models_dir)
        if project is None:
            return DomainDefs()
        check_key_clashes(project, others)
        mappings = project.sync_mappings()
        check_unique_names(mappings, {spec.mapping.name: spec.source.file for spec in others})
    except ConfigError as exc:
        if strict:
            raise
        problem = ModelProblem(TRAITS_ASSET, models_dir / PREDICTIONS_FILE, exc)
        return DomainDefs(defs=Definitions(assets=[build_broken_asset(keys(TRAITS_KEY), problem, GROUP)]))
    version = hashlib.sha256(project.path.read_bytes()).hexdigest()[:16]
    return DomainDefs(
        defs=Definitions(
            assets=[
                *(build_prediction_asset(project, p, kind, version, keys) for p in project.predictions),
                build_traits_asset(project, kind, version, keys),
            ],
            schedules=build_prediction_schedules(project, keys),
        ),
        mappings=mappings,
        tables=project.event_tables(),
    )
