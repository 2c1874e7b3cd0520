"""End to end on small sample data: the predictions group materializes, reports quality, the
sync sends the cohorts (dry run outbox), and an audience can use a prediction."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from dagster import AssetKey, DagsterInstance, Definitions

from segment_profiles_pipeline.models.sample_data import seed_missing
from segment_profiles_pipeline.settings import Settings
from segment_profiles_pipeline.vocabulary import GRAPH_TABLE_KEYS as IDENTITY_KEYS
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

AUDIENCE = """
  - name: Likely churners
    key: likely_churners
    conditions: {model: prediction_traits, column: likelihood_to_churn, operator: greater_than_or_equal, value: 0.8}
joins:
  prediction_traits: {column: user_id}
"""


def test_materialize_predictions_sync_and_audience(
    sample_models: Path,
    settings_for: Callable[..., Settings],
    build: Callable[[Settings], Definitions],
    db_path: Path,
) -> None:
    traits_yml = sample_models / "computed_traits.yml"
    text = traits_yml.read_text()
    traits_yml.write_text(text.replace("\nmappings:", AUDIENCE + "\nmappings:", 1))
    warehouse = DuckDBWarehouse(database=str(db_path))
    with warehouse.session() as session:
        seed_missing(session, 1000)
    defs = build(settings_for(sample_models, sample_data=False))
    keys = [
        AssetKey(["predictions", "likelihood_to_churn"]),
        AssetKey(["predictions", "predicted_ltv"]),
        AssetKey(["predictions", "likelihood_to_purchase"]),
        AssetKey("prediction_traits"),
        AssetKey(["profile_sync", "predictions_identify"]),
        AssetKey("computed_traits"),
        AssetKey("audiences"),
    ]
    job = defs.resolve_implicit_global_asset_job_def()
    # predictions and computed traits key on the identity-resolved profile: the graph goes first
    # (a run of its own: the prediction assets do not declare the graph as a dep, see assets.py)
    graph = job.execute_in_process(
        instance=DagsterInstance.ephemeral(),
        asset_selection=list(IDENTITY_KEYS.values()),
        raise_on_error=False,
    )
    assert graph.success
    result = job.execute_in_process(
        instance=DagsterInstance.ephemeral(), asset_selection=keys, raise_on_error=False
    )
    assert result.success
    churn = result.asset_materializations_for_node("predictions__likelihood_to_churn")[0].metadata
    assert churn["status"].value == "trained" and churn["auc"].value > 0.6
    # keyed on resolved profiles: the graph reads the order events too, so every order counts
    assert churn["quality"].value in ("fair", "good", "excellent")
    assert "█" in churn["score_distribution"].value and churn["score_chunks"].value == 1
    checks = {(c.asset_key.path[-1], c.passed) for c in result.get_asset_check_evaluations()}
    assert ("likelihood_to_churn", True) in checks
    with warehouse.session() as session:
        profiles, churners = session.query(
            "SELECT count(*), count(*) FILTER (WHERE likelihood_to_churn >= 0.8) FROM models.prediction_traits"
        ).rows[0]
        messages = [
            json.loads(m)
            for (m,) in session.query(
                "SELECT message FROM _segment_profiles.outbox WHERE mapping = 'predictions_identify'"
            ).rows
        ]
        members = session.query("SELECT count(*) FROM traits.audiences WHERE likely_churners").scalar()
        expected = session.query(
            "SELECT count(*) FROM traits.computed_traits t JOIN models.prediction_traits p ON p.user_id = t.user_id "
            "WHERE p.likelihood_to_churn >= 0.8"
        ).scalar()
    assert len(messages) == profiles and churners > 0
    # each message goes to the profile's send target: its user_id, else its anonymous id
    assert all((m.get("userId") is None) != (m.get("anonymousId") is None) for m in messages)
    assert set(messages[0]["traits"]) == {"likelihood_to_churn", "likelihood_to_purchase", "predicted_ltv"}
    assert all(0 <= v <= 1 for m in messages for v in m["traits"].values() if v is not None)
    assert members == expected > 0
