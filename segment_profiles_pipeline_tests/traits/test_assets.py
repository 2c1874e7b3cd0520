"""The Dagster assets: lineage, Segment-style preview metadata, full_refresh, clear failures."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster import AssetKey

from segment_profiles_pipeline.identity.assets import build_identity_defs
from segment_profiles_pipeline.identity.config import load_identity
from segment_profiles_pipeline.models.sample_data import seed_missing
from segment_profiles_pipeline.settings import PROJECT_ROOT
from segment_profiles_pipeline.traits.assets import build_traits_assets
from segment_profiles_pipeline.traits.config import load_traits
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.traits.helpers import ev, load_events, traits_file


def _specs(assets: list[dg.AssetsDefinition]) -> dict[AssetKey, dg.AssetSpec]:
    return {spec.key: spec for a in assets for spec in a.specs}


def test_asset_keys_groups_kinds_and_lineage(tmp_path: Path) -> None:
    project = traits_file(
        tmp_path,
        """
        traits:
          - {name: Events, type: event_counter, event: Test Event}
        audiences:
          - {name: Pros, conditions: {model: users, column: plan, operator: equals, value: pro}}
        joins:
          users: {column: user_id}
        """,
    )
    specs = _specs(build_traits_assets(project, "snowflake"))
    traits, audiences = specs[AssetKey("computed_traits")], specs[AssetKey("audiences")]
    assert (traits.group_name, audiences.group_name) == ("computed_traits", "computed_traits")
    assert traits.kinds == {"snowflake"} and audiences.kinds == {"snowflake"}
    assert {d.asset_key for d in traits.deps} == {
        AssetKey(["flex", "test_event"]),
        AssetKey(["identity", "id_graph"]),
        AssetKey(["identity", "external_id_mapping"]),
        AssetKey(["identity", "profile_merges"]),
    }
    assert {d.asset_key for d in audiences.deps} == {
        AssetKey("computed_traits"),
        AssetKey(["identity", "id_graph"]),
        AssetKey("users"),
    }
    without = traits_file(
        tmp_path / "plain", "traits:\n  - {name: Events, type: event_counter, event: Test Event}\n"
    )
    assert list(_specs(build_traits_assets(without, "duckdb"))) == [AssetKey("computed_traits")]


def test_materialize_reports_preview_metadata_and_runs_incrementally(tmp_path: Path) -> None:
    project = load_traits(PROJECT_ROOT / "models")
    assert project is not None
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    with warehouse.session() as session:
        seed_missing(session, 200)
    assets = build_traits_assets(project, "duckdb")
    graph = build_identity_defs(load_identity(PROJECT_ROOT / "models"), project.event_tables(), [], "duckdb")
    result = dg.materialize([*graph, *assets], resources={"warehouse": warehouse})
    traits = result.asset_materializations_for_node("computed_traits")[0].metadata
    audiences = result.asset_materializations_for_node("audiences")[0].metadata
    with warehouse.session() as session:
        profiles, with_channel, email, positive = session.query(
            "SELECT count(*), count(frequent_inbound_channel), count(*) FILTER (WHERE frequent_inbound_channel = 'email'),"
            " count(*) FILTER (WHERE sentiment_in_last_interaction = 'positive') FROM traits.computed_traits"
        ).rows[0]
    assert traits["mode"].value == "full" and traits["dagster/row_count"].value == profiles
    assert traits["unresolved_events"].value == 0 and traits["profiles_moved"].value == 0
    assert traits["profiles_with_value"].value["frequent_inbound_channel"] == with_channel < profiles
    assert f"| positive ({positive}), " in traits["traits"].value  # the most common last sentiment
    assert "| total_inbounds | event_counter | Flex - Engagement Initiated |" in traits["traits"].value
    assert traits["preview"].value.count("\n") == 11  # header, separator, 10 rows
    assert audiences["members"].value == {"email_inbound_customers": email}
    assert audiences["dagster/row_count"].value == email

    again = dg.materialize(assets[:1], resources={"warehouse": warehouse})
    assert again.asset_materializations_for_node("computed_traits")[0].metadata["mode"].value == "incremental"
    forced = dg.materialize(
        assets[:1],
        resources={"warehouse": warehouse},
        run_config={"ops": {"computed_traits": {"config": {"full_refresh": True}}}},
    )
    metadata = forced.asset_materializations_for_node("computed_traits")[0].metadata
    assert (metadata["mode"].value, metadata["reason"].value) == ("full", "full refresh requested")


def _failure(tmp_path: Path, yml: str, rows: list[dict]) -> tuple[str, list[str]]:
    project = traits_file(tmp_path / "models", yml)
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    with warehouse.session() as session:
        load_events(session, "flex.test_event", rows)
    result = dg.materialize(
        build_traits_assets(project, "duckdb"), resources={"warehouse": warehouse}, raise_on_error=False
    )
    assert not result.success
    events = [e.event_type_value for e in result.all_events]
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.step_failure_data.error.message, events


def test_missing_column_fails_the_run_once_with_file_trait_and_columns(tmp_path: Path) -> None:
    message, events = _failure(
        tmp_path,
        "traits:\n  - {name: Agent, type: last, event: Test Event, property: lastKnownAgentWorkerSid}\n",
        [ev("e1", user="u1", agent="WK1")],
    )
    assert "computed_traits.yml" in message and "trait 'Agent'" in message
    assert "column 'last_known_agent_worker_sid'" in message and "available columns: id, user_id" in message
    assert "STEP_UP_FOR_RETRY" not in events  # a definition problem is not retried


def test_missing_event_table_fails_the_run(tmp_path: Path) -> None:
    message, _ = _failure(
        tmp_path,
        "traits:\n  - {name: Calls, type: event_counter, event: Call Started}\n",
        [ev("e1", user="u1")],
    )
    assert "trait 'Calls'" in message and "flex.call_started, which does not exist" in message
