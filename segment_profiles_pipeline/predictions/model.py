"""The models and how good they are: scikit-learn gradient-boosted trees, Segment's quality figures.

Segment's Predictions are decision-tree models; here they are scikit-learn's histogram
gradient boosting (LightGBM's algorithm, NaN-aware, so a missing recency needs no imputation):
a classifier for churn, purchase and custom goals, a Poisson regressor for future revenue
(non-negative, mostly zero).

Quality is measured on a holdout (every fifth profile of the hash-ordered training sample),
never on the rows the model was fitted on:

- churn, purchase, custom goals: AUC, log loss, lift at the top decile (rate of the target in
  the top 10% of scores over the base rate), as Segment's "Understand your prediction" shows;
- LTV: Spearman rank correlation, mean absolute error, lift at the top decile (revenue per
  profile in the top 10% over the mean), and the AUC of the predicted amount at telling future
  buyers from non-buyers, so one ``min_auc`` check works for both.

Quality label (Segment's Poor / Fair / Good / Excellent): from AUC (probabilities) or Spearman (LTV)
bands in ``BANDS``, lowered one step when the top decile does not concentrate the target
(lift < ``MIN_LIFT``) or, for probabilities, when the probabilities are worse than always predicting
the base rate (log loss above the base rate's).
"""

from __future__ import annotations

import base64
import io
import math
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:  # scikit-learn takes >1 s to import: only a run that trains or scores pays it
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

LABELS = ("poor", "fair", "good", "excellent")
BANDS = {"auc": (0.6, 0.7, 0.8), "spearman": (0.2, 0.4, 0.6)}
"""Lower edges of fair, good, excellent: AUC for the probabilities, Spearman rank correlation for LTV."""
MIN_LIFT = 1.5
THREADS = 1
"""OpenMP threads for fitting and scoring. One: the sample is bounded, and Dagster steps and test
workers run side by side, where oversubscribed OpenMP threads spin and slow everything tenfold."""
HOLDOUT_EVERY = 5
Model: TypeAlias = "HistGradientBoostingClassifier | HistGradientBoostingRegressor"


def new_model(kind: str, rows: int) -> Model:
    """A small, regularised model; early stopping on a validation split once there are enough rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    common: dict[str, Any] = {
        "max_iter": 200,
        "learning_rate": 0.08,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 20,
        "l2_regularization": 1.0,
        "early_stopping": rows >= 1000,
        "random_state": 0,
    }
    if kind == "predicted_ltv":
        return HistGradientBoostingRegressor(loss="poisson", **common)
    return HistGradientBoostingClassifier(**common)


def predict(model: Model, features: np.ndarray) -> np.ndarray:
    """The raw score: the target's probability, or expected revenue over the window."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    with threadpool_limits(limits=THREADS):
        if isinstance(model, HistGradientBoostingClassifier):
            return model.predict_proba(features)[:, 1]
        return np.maximum(model.predict(features), 0.0)


def split(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit and holdout positions of a hash-ordered sample (every ``HOLDOUT_EVERY``-th is held out)."""
    index = np.arange(rows)
    holdout = index % HOLDOUT_EVERY == 0
    return index[~holdout], index[holdout]


def top_decile(scores: np.ndarray) -> np.ndarray:
    """Positions of the highest-scored 10% (at least one), ties broken by position."""
    k = max(1, math.ceil(len(scores) / 10))
    return np.argsort(-scores, kind="stable")[:k]


def probability_quality(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | str]:
    """AUC, log loss and top-decile lift of probabilities against 0/1 labels (1: the target happened)."""
    from sklearn.metrics import log_loss, roc_auc_score

    base = float(labels.mean())
    auc = float(roc_auc_score(labels, scores))
    loss = float(log_loss(labels, np.clip(scores, 1e-6, 1 - 1e-6), labels=[0, 1]))
    base_loss = float(log_loss(labels, np.full(len(labels), np.clip(base, 1e-6, 1 - 1e-6)), labels=[0, 1]))
    lift = float(labels[top_decile(scores)].mean() / base) if base > 0 else 0.0
    step_down = lift < MIN_LIFT or loss > base_loss
    return {
        "auc": auc,
        "log_loss": loss,
        "base_rate_log_loss": base_loss,
        "lift_top_decile": lift,
        "base_rate": base,
        "quality": quality_label(auc, BANDS["auc"], step_down),
    }


def ltv_quality(amounts: np.ndarray, predicted: np.ndarray) -> dict[str, float | str]:
    """Spearman correlation, MAE, top-decile lift and buyer AUC of predicted against actual revenue."""
    from scipy.stats import spearmanr
    from sklearn.metrics import mean_absolute_error, roc_auc_score

    rho = float(spearmanr(amounts, predicted).statistic) if np.ptp(amounts) and np.ptp(predicted) else 0.0
    mean = float(amounts.mean())
    lift = float(amounts[top_decile(predicted)].mean() / mean) if mean > 0 else 0.0
    buyers = amounts > 0
    auc = float(roc_auc_score(buyers, predicted)) if 0 < buyers.sum() < len(buyers) else 0.5
    return {
        "spearman": rho,
        "mae": float(mean_absolute_error(amounts, predicted)),
        "lift_top_decile": lift,
        "auc": auc,
        "mean_revenue": mean,
        "quality": quality_label(rho, BANDS["spearman"], lift < MIN_LIFT),
    }


def quality_label(value: float, bands: tuple[float, float, float], step_down: bool) -> str:
    """Poor / fair / good / excellent from the value's band, one step lower when ``step_down``."""
    level = sum(value >= edge for edge in bands)
    return LABELS[max(0, level - 1) if step_down else level]


@dataclass(frozen=True)
class Trained:
    model: Model
    metrics: dict[str, float | str]
    fit_rows: int
    holdout_rows: int


def train(kind: str, features: np.ndarray, labels: np.ndarray) -> Trained:
    """Fit on four fifths of the sample, measure on the fifth left out."""
    fit, holdout = split(len(labels))
    model = new_model(kind, len(fit))
    with threadpool_limits(limits=THREADS):
        model.fit(features[fit], labels[fit])
    scores = predict(model, features[holdout])
    truth = labels[holdout]
    metrics = (
        ltv_quality(truth, scores)
        if kind == "predicted_ltv"
        else probability_quality(truth.astype(int), scores)
    )
    return Trained(model, metrics, len(fit), len(holdout))


def dumps(model: Model) -> str:
    """A model as text for the warehouse state table (pickle, base64: the table is this project's own)."""
    buffer = io.BytesIO()
    pickle.dump(model, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    return base64.b64encode(buffer.getvalue()).decode()


def loads(text: str) -> Model:
    return pickle.loads(base64.b64decode(text))  # our own state table, written by ``dumps``
