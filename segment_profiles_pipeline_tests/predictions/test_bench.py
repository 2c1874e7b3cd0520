"""The predictions benchmark cannot rot: it runs once at the tiny size through ``python -m bench``."""

from __future__ import annotations

from pathlib import Path

from bench.__main__ import run
from bench.harness import SIZES


def test_predictions_scenario_measures_equal_work(tmp_path: Path) -> None:
    (result,) = run(SIZES["tiny"], ["predictions"], tmp_path, tmp_path / "latest.json")
    details = result.details
    assert details["setup"]["rows"] == 40_000
    assert details["ours"]["status"] == "trained"
    # both sides scored every profile that bought (all 2,000 profiles buy at least once here) and,
    # from the same features, sample and model, reached the same holdout AUC
    assert details["ours"]["scored"] == details["baseline"]["scored"] == details["setup"]["profiles"]
    assert abs(details["ours"]["auc"] - details["baseline"]["auc"]) < 1e-9 and details["ours"]["auc"] > 0.6
    assert [row.metric for row in result.rows] == ["features + training + scoring, end to end", "peak RSS"]
    assert all(row.ours > 0 and row.baseline > 0 for row in result.rows)
