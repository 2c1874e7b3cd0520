"""The Snowflake path: same project, SQL transpiled by sqlglot, run through fakesnow."""

import fakesnow
import pytest
import snowflake.connector
from dagster import AssetKey

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.settings import Settings
from segment_profiles_pipeline.warehouse.resources import warehouse_from_settings
from segment_profiles_pipeline.warehouse.snowflake import SnowflakeWarehouse
from segment_profiles_pipeline_tests.conftest import materialize_all

CREDENTIALS = {
    "SNOWFLAKE_ACCOUNT": "acme-test",
    "SNOWFLAKE_USER": "loader",
    "SNOWFLAKE_PASSWORD": "hunter2-not-a-real-secret",
    "SNOWFLAKE_DATABASE": "ANALYTICS",
    "SNOWFLAKE_WAREHOUSE": "TRANSFORMING",
}


def _settings(models, db_path) -> Settings:
    return Settings(
        warehouse="snowflake", duckdb_database=db_path, sample_data=True, sample_users=150, models_dir=models
    )


def test_missing_credentials_list_the_variables_without_values(monkeypatch, sample_models, db_path) -> None:
    monkeypatch.setenv("SNOWFLAKE_ACCOUNT", "acme-test")
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "hunter2-not-a-real-secret")
    for name in ("SNOWFLAKE_USER", "SNOWFLAKE_DATABASE", "SNOWFLAKE_WAREHOUSE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as err:
        warehouse_from_settings(_settings(sample_models, db_path))
    text = str(err.value)
    assert "SNOWFLAKE_USER, SNOWFLAKE_DATABASE, SNOWFLAKE_WAREHOUSE" in text
    assert "hunter2" not in text and "acme-test" not in text


def test_models_and_dry_run_sync_on_snowflake(monkeypatch, sample_models, db_path, build) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    defs = build(_settings(sample_models, db_path))
    assert isinstance(defs.resources["warehouse"], SnowflakeWarehouse)
    assert "snowflake" in defs.resolve_asset_graph().get(AssetKey("users")).kinds
    with fakesnow.patch():
        result = materialize_all(defs)
        assert result.success, [e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        users = result.asset_materializations_for_node("users")[0].metadata
        assert users["dagster/row_count"].value == 150
        sync = result.asset_materializations_for_node("profile_sync__users_identify")[0].metadata
        assert (
            sync["segment_profiles/planned"].value == 147
        )  # 150 rows: one null key and two rows sharing a key are rejected
        assert sync["segment_profiles/invalid"].value == 3
        con = snowflake.connector.connect(database="ANALYTICS", schema="_SEGMENT_PROFILES")
        cur = con.cursor()
        cur.execute("SELECT count(*) FROM _segment_profiles.outbox WHERE mapping = 'users_identify'")
        assert cur.fetchone()[0] == 147
    # the secret never reaches the event log
    assert all("hunter2" not in str(e) for e in result.all_events)
