"""predictions.yml validation: errors name the file and field; defaults follow Segment."""

from __future__ import annotations

from pathlib import Path

import pytest

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.predictions.config import load_predictions
from segment_profiles_pipeline.settings import PROJECT_ROOT
from segment_profiles_pipeline_tests.predictions.helpers import predictions_file


def test_shipped_file_and_segment_defaults(tmp_path: Path) -> None:
    project = load_predictions(PROJECT_ROOT / "models")
    assert project is not None
    assert [p.key for p in project.predictions] == [
        "likelihood_to_churn",
        "likelihood_to_purchase",
        "predicted_ltv",
    ]
    minimal = predictions_file(
        tmp_path, "predictions:\n  - {type: likelihood_to_churn}\n  - {type: predicted_ltv}\n"
    )
    churn, ltv = minimal.predictions
    assert (churn.key, churn.event, churn.window_days, churn.retrain_every_days) == (
        "likelihood_to_churn",
        "Order Completed",
        30,
        7,
    )
    assert (ltv.window_days, ltv.currency, ltv.min_events, churn.min_events) == (120, "USD", 2, 1)
    assert minimal.target_table(churn) == ("shop", "order_completed")
    goals = predictions_file(
        tmp_path,
        "predictions:\n  - {type: likelihood_to_purchase}\n  - {type: custom_goal, event: Signed Up, window_days: 15,"
        " conditions: [{property: plan, operator: equals, value: pro}, {property: trial, operator: exists}]}\n",
    )
    purchase, custom = goals.predictions
    assert (purchase.key, purchase.event, purchase.window_days, purchase.min_events) == (
        "likelihood_to_purchase",
        "Order Completed",
        30,
        0,
    )
    assert (custom.key, goals.target_table(custom), custom.goal) == (
        "custom_goal",
        ("shop", "signed_up"),
        "'Signed Up' (matching its conditions)",
    )
    assert [leaf.property for leaf in custom.conditions.and_] == ["plan", "trial"]  # a list means and


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("predictions:\n  - {type: likelihood_to_churn, window_days: 45}\n", "predictions[0].window_days"),
        ("predictions:\n  - {type: predicted_ltv, window_days: 30}\n", "always predicts the next 120 days"),
        (
            "predictions:\n  - {type: likelihood_to_churn, windows: 30}\n",
            "predictions[0].windows': unknown key; did you mean 'window_days'?",
        ),
        ("predictions:\n  - {type: likelihood_to_churn}\n  - {type: likelihood_to_churn}\n", "used twice"),
        (
            "predictions:\n  - {type: predicted_ltv}\nmappings:\n  - {name: m, action: identify, user_id: user_id, traits: {x: score}}\n",
            "uses column 'score'",
        ),
        ("predictions:\n  - {type: custom_goal}\n", "a custom_goal names its target `event`"),
        (
            "predictions:\n  - {type: likelihood_to_purchase, conditions: [{trait: x, operator: exists}]}\n",
            "use `property:` in every condition",
        ),
        (
            "predictions:\n  - {type: custom_goal, event: X, conditions: {property: a, operator: like, value: 1}}\n",
            "unknown operator 'like'",
        ),
        (
            "predictions:\n  - {type: likelihood_to_purchase, conditions: [{property: 1st, operator: exists}]}\n",
            "condition property '1st' does not map to a warehouse column name",
        ),
        (
            "predictions:\n  - {type: likelihood_to_buy}\n",
            "'predictions[0].type': Input should be 'likelihood_to_churn', 'likelihood_to_purchase', "
            "'custom_goal' or 'predicted_ltv'; got 'likelihood_to_buy'",
        ),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        predictions_file(tmp_path, text)
    assert str(tmp_path / "predictions.yml") in str(err.value) and expected in str(err.value)


def test_the_mapping_sends_to_the_profiles_send_target() -> None:
    """prediction_traits is keyed on profile_key; a profile is addressed by its user_id, else its
    anonymous id, and the shipped mapping (user_id only) gets the anonymous id column added."""
    project = load_predictions(PROJECT_ROOT / "models")
    assert project is not None
    (spec,) = project.sync_mappings()
    assert spec.source.primary_key == "profile_key"
    assert (spec.mapping.user_id, spec.mapping.anonymous_id) == ("user_id", "anonymous_id")
    assert "profile_key" not in spec.mapping.traits
