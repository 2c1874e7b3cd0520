"""The Dagster surface of profile_sync: partitions for shards, failure and partial-success reporting."""

from dagster import AssetKey, DagsterInstance, materialize

from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.sync.assets import build_sync_asset
from segment_profiles_pipeline.sync.resources import SegmentDestination
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline_tests.sync.helpers import failed, people_spec, people_table

ROWS = [(f"u{i:03d}", f"{i}@x.io", "free") for i in range(60)]


def _asset(**overrides):
    spec = people_spec(**overrides)
    return build_sync_asset(
        MappingSpec(SyncSource("people", ("people",), "models.people", "id", "people.yml"), spec.mapping),
        "duckdb",
    )


def _run(asset, warehouse, segment, **kwargs):
    return materialize(
        [asset],
        resources={"warehouse": warehouse, "segment": segment},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
        **kwargs,
    )


def test_sharded_mapping_is_partitioned_and_each_partition_syncs_its_slice(warehouse) -> None:
    with warehouse.session() as session:
        people_table(session, ROWS)
    asset = _asset(shards=3)
    assert asset.key == AssetKey(["profile_sync", "people_identify"])
    assert asset.partitions_def.get_partition_keys() == ["shard_0", "shard_1", "shard_2"]
    planned = []
    for key in ("shard_0", "shard_1", "shard_2"):
        result = _run(asset, warehouse, SegmentDestination(), partition_key=key)
        assert result.success
        planned.append(
            result.asset_materializations_for_node("profile_sync__people_identify")[0]
            .metadata["segment_profiles/planned"]
            .value
        )
    assert sum(planned) == 60 and all(planned)


def test_nothing_delivered_fails_the_step_and_partial_success_fails_the_check(warehouse) -> None:
    with warehouse.session() as session:
        people_table(session, ROWS)
    with FakeSegmentServer(write_key="wk") as server:
        segment = SegmentDestination(write_key="wk", endpoint=server.url, max_retries=0)
        server.reject_when(lambda m: True, status=503, message="maintenance")
        result = _run(_asset(), warehouse, segment)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert (
            "sync of mapping 'people_identify' delivered nothing" in failure.step_failure_data.error.message
        )
        assert "HTTP 503" in failure.step_failure_data.error.message
        with warehouse.session() as session:
            assert len(failed(session)) == 60
            assert session.query("SELECT status FROM _segment_profiles.sync_history").rows == [("failed",)]

        server.reject_when(lambda m: m["userId"] in {"u001", "u002"}, status=400, message="bad trait")
        result = _run(_asset(), warehouse, segment)
        assert result.success
        check = next(
            e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ).asset_check_evaluation_data
        assert check.check_name == "delivery_rate" and not check.passed
        assert check.metadata["failed"].value == 2
        meta = result.asset_materializations_for_node("profile_sync__people_identify")[0].metadata
        assert (
            meta["segment_profiles/status"].value == "partial_success"
            and meta["segment_profiles/delivered"].value == 58
        )
