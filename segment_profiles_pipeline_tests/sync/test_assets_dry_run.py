"""Dry runs are unmistakable, honoured with a key set, and production refuses to run without a key."""

import pytest
from dagster import DagsterInstance, materialize

from segment_profiles_pipeline.definitions import build_definitions
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.settings import Settings
from segment_profiles_pipeline.sync.assets import DRY_RUN_TAG, build_sync_asset
from segment_profiles_pipeline.sync.resources import SegmentDestination
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline_tests.sync.helpers import ledger, people_spec, people_table

ROWS = [(f"u{i:03d}", f"{i}@x.io", "free") for i in range(5)]
NODE = "profile_sync__people_identify"


def _asset():
    spec = people_spec()
    return build_sync_asset(
        MappingSpec(SyncSource("people", ("people",), "models.people", "id", "people.yml"), spec.mapping),
        "duckdb",
    )


def run_log(instance: DagsterInstance, run_id: str) -> str:
    """Every message the run logged, one per line (what the run page shows)."""
    return "\n".join(r.user_message for r in instance.all_logs(run_id))


def _checks(result) -> dict:
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_run_config_dry_run_sends_nothing_even_with_a_key(warehouse) -> None:
    with warehouse.session() as session:
        people_table(session, ROWS)
    instance = DagsterInstance.ephemeral()
    with FakeSegmentServer(write_key="wk") as server:
        segment = SegmentDestination(write_key="wk", endpoint=server.url)
        result = materialize(
            [_asset()],
            resources={"warehouse": warehouse, "segment": segment},
            instance=instance,
            run_config={"ops": {NODE: {"config": {"dry_run": True}}}},
        )
        assert server.requests == 0 and server.messages == []
    assert result.success
    meta = result.asset_materializations_for_node(NODE)[0].metadata
    assert meta["segment_profiles/mode"].value == "DRY RUN: nothing sent"
    assert meta["segment_profiles/dry_run"].value is True
    assert "delivery_rate" not in meta  # no rate to show for what was never sent
    assert meta["segment_profiles/destination"].value.startswith("none: dry run")
    checks = _checks(result)
    assert checks["delivery_rate"].passed
    assert checks["delivery_rate"].description.startswith("dry run: nothing sent, no delivery verdict")
    assert checks["sync_health"].description == "dry run, not judged (dry runs never are); no real sync yet"
    assert instance.get_run_by_id(result.run_id).tags[DRY_RUN_TAG] == "true"
    logs = run_log(instance, result.run_id)
    assert "DRY RUN of mapping 'people_identify' (run config dry_run: true): nothing is sent" in logs
    assert "DRY RUN of 'people_identify' shard 0 finished success: planned 5, sent 0" in logs
    with warehouse.session() as session:
        assert ledger(session) == {}

    # the same asset without the flag sends, and is labelled live, without the tag
    with FakeSegmentServer(write_key="wk") as server:
        segment = SegmentDestination(write_key="wk", endpoint=server.url)
        live = materialize(
            [_asset()], resources={"warehouse": warehouse, "segment": segment}, instance=instance
        )
        assert sorted(m["userId"] for m in server.messages) == [r[0] for r in ROWS]
    assert live.asset_materializations_for_node(NODE)[0].metadata["segment_profiles/mode"].value == "live"
    assert DRY_RUN_TAG not in instance.get_run_by_id(live.run_id).tags
    assert _checks(live)["delivery_rate"].description.startswith("100.00% delivered")


def test_production_deployment_without_a_write_key_fails_the_load(
    sample_models, db_path, monkeypatch
) -> None:
    monkeypatch.setenv("SEGMENT_PROFILES_DEPLOYMENT", "production")
    settings = Settings.from_env()
    assert settings.production
    local = Settings(settings.warehouse, db_path, False, 10, sample_models, production=True)
    with pytest.raises(ConfigError) as err:
        build_definitions(local)
    assert str(err.value).startswith("SEGMENT_WRITE_KEY: not set, and SEGMENT_PROFILES_DEPLOYMENT=production")
    monkeypatch.setenv("SEGMENT_WRITE_KEY", "wk")
    assert build_definitions(local).resolve_asset_graph() is not None
    monkeypatch.delenv("SEGMENT_WRITE_KEY")
    # development (the default) keeps the Quickstart's dry runs
    assert build_definitions(Settings(settings.warehouse, db_path, False, 10, sample_models)) is not None


def test_unknown_deployment_is_a_load_error(monkeypatch) -> None:
    monkeypatch.setenv("SEGMENT_PROFILES_DEPLOYMENT", "prod")
    with pytest.raises(ConfigError, match="SEGMENT_PROFILES_DEPLOYMENT: unknown deployment 'prod'"):
        Settings.from_env()
