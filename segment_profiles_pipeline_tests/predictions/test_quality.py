"""Quality figures on known datasets, the quality label, and a planted signal the model must find."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from segment_profiles_pipeline.predictions.model import ltv_quality, probability_quality, quality_label, train


def test_churn_figures_by_hand() -> None:
    got = probability_quality(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1]))
    assert got["auc"] == 0.75  # 3 of the 4 (churned, stayed) pairs are ordered right
    assert got["lift_top_decile"] == 2.0  # top 10% = 1 profile, churned; base rate 0.5
    assert got["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.4)) / 2)
    assert got["base_rate_log_loss"] == pytest.approx(math.log(2))
    assert got["quality"] == "good"


def test_ltv_figures_by_hand() -> None:
    got = ltv_quality(np.array([0.0, 10, 20, 30]), np.array([1.0, 2, 3, 4]))
    assert got["spearman"] == pytest.approx(1.0)
    assert got["mae"] == 13.0  # (1 + 8 + 17 + 26) / 4
    assert got["lift_top_decile"] == 2.0  # 30 against a mean of 15
    assert got["auc"] == 1.0 and got["quality"] == "excellent"


@pytest.mark.parametrize(
    ("value", "step_down", "label"),
    [
        (0.59, False, "poor"),
        (0.6, False, "fair"),
        (0.75, False, "good"),
        (0.8, False, "excellent"),
        (0.8, True, "good"),
        (0.55, True, "poor"),
    ],
)
def test_quality_label_bands(value: float, step_down: bool, label: str) -> None:
    assert quality_label(value, (0.6, 0.7, 0.8), step_down) == label


def test_planted_signal_beats_a_recency_only_heuristic() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    recency = rng.uniform(0, 60, n)
    frequency = rng.gamma(2.0, 1.0, n)
    churned = (rng.random(n) < 1 / (1 + np.exp(3 * (frequency - 2)))).astype(float)  # frequency drives churn
    trained = train("likelihood_to_churn", np.column_stack([recency, frequency]), churned)
    holdout = np.arange(n) % 5 == 0
    heuristic = roc_auc_score(churned[holdout], recency[holdout])
    assert trained.holdout_rows == 400 and trained.fit_rows == 1600
    assert trained.metrics["auc"] > 0.75 and trained.metrics["auc"] > heuristic + 0.2
