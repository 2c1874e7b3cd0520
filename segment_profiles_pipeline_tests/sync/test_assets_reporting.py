"""What a sync shows in the UI: its failed records, a summary line, and the mapping's health."""

from dagster import AssetCheckSeverity, DagsterInstance, materialize

from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.sync.assets import FAILED_TABLE_ROWS, build_sync_asset
from segment_profiles_pipeline.sync.resources import SegmentDestination
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline_tests.sync.helpers import people_spec, people_table
from segment_profiles_pipeline_tests.sync.test_assets_dry_run import NODE, _checks, run_log

ROWS = [(f"u{i:03d}", f"{i}@x.io", "free") for i in range(60)]
BAD = {f"u{i:03d}" for i in range(25)}  # more than the table shows


def _asset():
    spec = people_spec()
    return build_sync_asset(
        MappingSpec(SyncSource("people", ("people",), "models.people", "id", "people.yml"), spec.mapping),
        "duckdb",
    )


def test_failed_records_table_summary_line_and_health(warehouse) -> None:
    with warehouse.session() as session:
        people_table(session, [*ROWS, (None, "nokey@x.io", "free")])
    instance = DagsterInstance.ephemeral()
    with FakeSegmentServer(write_key="wk") as server:
        segment = SegmentDestination(write_key="wk", endpoint=server.url, max_retries=0)
        resources = {"warehouse": warehouse, "segment": segment}

        server.reject_when(lambda m: True, status=503, message="maintenance")
        down = materialize([_asset()], resources=resources, instance=instance, raise_on_error=False)
        assert not down.success
        checks = _checks(down)  # reported although the step failed
        assert not checks["delivery_rate"].passed
        health = checks["sync_health"]
        assert not health.passed and health.severity == AssetCheckSeverity.ERROR
        assert health.description.startswith("failed: latest real sync failed, 0.0% delivered")
        assert "HTTP 503" in health.description

        server.reject_when(lambda m: m["userId"] in BAD, status=400, message="bad trait")
        partial = materialize([_asset()], resources=resources, instance=instance)
    meta = partial.asset_materializations_for_node(NODE)[0].metadata
    table = meta["segment_profiles/failed_records"].value
    assert meta["segment_profiles/failed_records_total"].value == len(BAD) + 1  # + the null key
    assert len(table.records) == FAILED_TABLE_ROWS
    first = table.records[0].data
    assert [c.name for c in table.schema.columns] == [
        "record_key",
        "kind",
        "reason_code",
        "reason",
        "attempts",
        "status",
    ]
    assert (
        first["kind"] == "delivery" and first["record_key"] == "u000" and first["reason_code"] == "rejected"
    )
    assert "bad trait" in first["reason"] and first["attempts"] >= 1
    health = _checks(partial)["sync_health"]
    assert not health.passed and health.severity == AssetCheckSeverity.WARN
    assert health.description.startswith("degraded: latest real sync partial_success, 58.3% delivered")
    assert (
        "sync of 'people_identify' shard 0 finished partial_success: sent 60, delivered 35, failed 25, rejected 0, "
        "invalid 1 in " in run_log(instance, partial.run_id)
    )

    # only this sync's failures: a later clean sync lists none and is healthy again
    with warehouse.session() as session:
        people_table(session, [(k, e + ".new", p) for k, e, p in ROWS])
    with FakeSegmentServer(write_key="wk") as server:
        segment = SegmentDestination(write_key="wk", endpoint=server.url)
        clean = materialize(
            [_asset()], resources={"warehouse": warehouse, "segment": segment}, instance=instance
        )
    meta = clean.asset_materializations_for_node(NODE)[0].metadata
    assert (
        meta["segment_profiles/failed_records_total"].value == 0
        and meta["segment_profiles/failed_records"].value.records == []
    )
    assert _checks(clean)["sync_health"].passed
    assert _checks(clean)["sync_health"].description.startswith("healthy: latest real sync success, 100.0%")


def test_a_dry_run_lists_its_rejected_rows_from_the_outbox(warehouse) -> None:
    with warehouse.session() as session:
        people_table(session, [("u1", "a@x.io", "free"), ("u2", "b@x.io", "x" * 40_000)])
    result = materialize(
        [_asset()],
        resources={"warehouse": warehouse, "segment": SegmentDestination()},
        instance=DagsterInstance.ephemeral(),
    )
    meta = result.asset_materializations_for_node(NODE)[0].metadata
    [row] = [r.data for r in meta["segment_profiles/failed_records"].value.records]
    assert (row["record_key"], row["kind"], row["reason_code"], row["status"]) == (
        "u2",
        "invalid",
        "invalid",
        "rejected (dry run)",
    )
    assert "32 KB" in row["reason"]
    assert meta["segment_profiles/failed_records_total"].value == 1


def test_a_refused_sync_still_reports_its_health(warehouse) -> None:
    instance = DagsterInstance.ephemeral()
    with FakeSegmentServer(write_key="wk") as server:
        resources = {
            "warehouse": warehouse,
            "segment": SegmentDestination(write_key="wk", endpoint=server.url),
        }
        with warehouse.session() as session:
            people_table(session, ROWS[:3])
        assert materialize([_asset()], resources=resources, instance=instance).success
        with warehouse.session() as session:
            people_table(session, [])  # the empty-model guard refuses to delete everything
        refused = materialize([_asset()], resources=resources, instance=instance, raise_on_error=False)
    assert not refused.success
    health = _checks(refused)["sync_health"]
    assert not health.passed and "allow_full_delete" in health.description
