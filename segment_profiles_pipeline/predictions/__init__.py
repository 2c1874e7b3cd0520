"""Predictions: Segment-style likelihood to churn and predicted LTV, trained and scored in the pipeline.

Public entry points: ``load_predictions`` (parse + validate ``models/predictions.yml``),
``build_defs`` (Dagster assets, schedules and the sync mapping), ``run_prediction`` (the work
itself, for benchmarks). See docs/predictions.md.
"""

from segment_profiles_pipeline.predictions.assets import build_defs
from segment_profiles_pipeline.predictions.config import PredictionsProject, load_predictions
from segment_profiles_pipeline.predictions.run import PredictionRun, run_prediction

__all__ = [
    "PredictionRun",
    "PredictionsProject",
    "build_defs",
    "load_predictions",
    "run_prediction",
]
