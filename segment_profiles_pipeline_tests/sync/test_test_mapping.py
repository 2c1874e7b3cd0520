"""Test Mapping: exact payloads of chosen records, never a sync; sent for real only when asked."""

import orjson
import pytest
from dagster import DagsterInstance

from segment_profiles_pipeline.errors import SyncError
from segment_profiles_pipeline.sync.delivery import OUTBOX
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.sync.resources import SegmentDestination
from segment_profiles_pipeline.sync.test_mapping import TEST_ID_PREFIX, build_test_mapping_job, preview
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline.vocabulary import sync_asset_key
from segment_profiles_pipeline_tests.sync.helpers import people_spec, people_table

ROWS = [
    ("u1", "a@x.io", "pro"),
    ("u2", "b@x.io", "x" * 40_000),
    ("u3", "c@x.io", "free"),
    ("u3", "d@x.io", "free"),
]
STATE = ("ledger", "failed_records", "sync_history", "outbox")


def state(session) -> dict[str, list]:
    return {
        t: session.query(f"SELECT * FROM _segment_profiles.{t} ORDER BY ALL").rows
        for t in STATE
        if session.table_exists("_segment_profiles", t)
    }


def run_job(warehouse, segment, keys, send_test=False, spec=None):
    job = build_test_mapping_job(spec or people_spec())
    return job.execute_in_process(
        run_config={
            "ops": {"test_mapping__people_identify": {"config": {"keys": keys, "send_test": send_test}}}
        },
        resources={"warehouse": warehouse, "segment": segment},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_payloads_are_the_syncs_own_and_nothing_is_touched(warehouse) -> None:
    with warehouse.session() as session:
        people_table(session, ROWS)
        run_sync(session, people_spec(), OUTBOX)  # a dry run first: there is state to leave alone
        before = state(session)
        result = preview(session, people_spec(), ["u1", "u2", "u3", "nobody"])
        assert state(session) == before
        outbox = dict(session.query("SELECT record_key, message FROM _segment_profiles.outbox").rows)
    by_key = {r.key: r for r in result.records}
    assert result.not_found == ["nobody"]
    # the same message the sync builds, but for its messageId (and the sync time)
    synced = orjson.loads(outbox["u1"])
    tested = dict(by_key["u1"].message)
    assert tested.pop("messageId").startswith(TEST_ID_PREFIX)
    synced.pop("messageId")
    assert tested.pop("timestamp") and synced.pop("timestamp")
    assert tested == synced
    assert "32 KB" in by_key["u2"].reason and by_key["u2"].message is None
    assert "appears in 2 rows" in by_key["u3"].reason


def test_the_job_shows_the_payloads_on_the_sync_asset(warehouse) -> None:
    with warehouse.session() as session:
        people_table(session, ROWS)
    result = run_job(warehouse, SegmentDestination(), ["u1", "nobody"])
    assert result.success
    [observation] = [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert observation.asset_key == sync_asset_key("people_identify")
    meta = observation.metadata
    [payload] = meta["payloads"].value
    assert payload["userId"] == "u1" and payload["traits"] == {"email": "a@x.io", "plan": "pro"}
    assert meta["sent"].value is False and meta["mode"].value.startswith("Test Mapping: not a sync")
    results = {r.data["record_key"]: r.data["result"] for r in meta["records"].value.records}
    assert results == {"u1": "payload built", "nobody": "not found in the model"}


def test_send_test_delivers_with_a_fresh_message_id_every_time(warehouse) -> None:
    spec = people_spec(message_id="email")  # even a message_id column must not be reused by a test
    with warehouse.session() as session:
        people_table(session, ROWS[:1])
    with FakeSegmentServer(write_key="wk") as server:
        segment = SegmentDestination(write_key="wk", endpoint=server.url)
        for _ in range(2):
            result = run_job(warehouse, segment, ["u1"], send_test=True, spec=spec)
            assert result.success
        ids = server.message_ids()
        assert len(ids) == 2 and len(set(ids)) == 2 and all(i.startswith(TEST_ID_PREFIX) for i in ids)
        assert [m["traits"]["plan"] for m in server.messages] == ["pro", "pro"]
        with warehouse.session() as session:
            assert not session.table_exists("_segment_profiles", "ledger")  # a test never writes state
            # a real sync afterwards is not deduplicated by Segment against the tests: it is applied
            with segment.delivery() as delivery:
                assert run_sync(session, spec, delivery).counts["delivered"] == 1
        assert [r.applied for r in server.received] == [True, True, True]
    meta = next(e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION")
    records = meta.event_specific_data.asset_observation.metadata["records"].value.records
    assert records[0].data["result"] == "acknowledged"


def test_send_test_without_a_write_key_fails_before_building(warehouse) -> None:
    with warehouse.session() as session:
        people_table(session, ROWS)
    result = run_job(warehouse, SegmentDestination(), ["u1"], send_test=True)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "send_test: true needs SEGMENT_WRITE_KEY" in failure.step_failure_data.error.message


@pytest.mark.parametrize("keys", [[], [str(i) for i in range(21)]])
def test_between_one_and_twenty_keys(warehouse, keys) -> None:
    result = run_job(warehouse, SegmentDestination(), keys)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "keys\n  List should have at" in failure.step_failure_data.error.to_string()


def test_a_missing_model_table_and_a_refused_test_send(warehouse) -> None:
    with warehouse.session() as session:
        session.execute("CREATE TABLE t AS SELECT 1 AS a")
        with pytest.raises(SyncError, match=r"models\.people does not exist; materialize the 'people' asset"):
            preview(session, people_spec(), ["u1"])
        people_table(session, ROWS[:1])
    with FakeSegmentServer(write_key="wk") as server:
        server.reject_when(lambda m: True, status=400, message="bad trait")
        result = run_job(
            warehouse, SegmentDestination(write_key="wk", endpoint=server.url, max_retries=0), ["u1"], True
        )
    observation = next(e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION")
    [record] = observation.event_specific_data.asset_observation.metadata["records"].value.records
    assert record.data["result"].startswith("not acknowledged: ") and "bad trait" in record.data["result"]
