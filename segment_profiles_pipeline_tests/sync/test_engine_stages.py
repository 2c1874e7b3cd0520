"""The engine's stages one at a time, on plain values (the whole sync is in test_engine.py)."""

from __future__ import annotations

import pytest

from segment_profiles_pipeline.errors import SyncError
from segment_profiles_pipeline.state.failed_records import Failure
from segment_profiles_pipeline.sync import engine
from segment_profiles_pipeline.sync.delivery import Chunk, ChunkResult, PlannedMessage, planned_table
from segment_profiles_pipeline.sync.engine import (
    SyncReport,
    invalid_key_failures,
    plan_counts,
    refuse_full_delete,
)
from segment_profiles_pipeline.sync.plan import PlanCounts
from segment_profiles_pipeline_tests.sync.helpers import people_spec

PLAN_OPS = {
    "add": 3,
    "update": 2,
    "delete": 1,
    "delete_shared": 4,
    "invalid_null_key": 5,
    "invalid_duplicate_key": 6,
}


def test_plan_counts_sum_the_plan_operations_and_start_with_nothing_sent() -> None:
    assert plan_counts(PlanCounts.of(17, PLAN_OPS)) == {
        "extracted": 17,
        "added": 3,
        "updated": 2,
        "deleted": 5,  # deletes with and without a profile still addressed
        "invalid": 11,  # null and duplicated keys
        "rejected": 0,
        "planned": 0,
        "sent": 0,
        "delivered": 0,
        "failed": 0,
    }
    assert plan_counts(PlanCounts.of(0, {}))["added"] == 0


def test_an_empty_model_is_refused_unless_the_mapping_allows_a_full_delete() -> None:
    emptied = plan_counts(PlanCounts.of(0, {"delete": 3}))
    with pytest.raises(
        SyncError, match=r"returned no rows but 3 records .* `allow_full_delete: true` on mapping"
    ):
        refuse_full_delete(people_spec(), emptied)
    refuse_full_delete(people_spec(allow_full_delete=True), emptied)
    # nothing synced before: nothing to protect
    refuse_full_delete(people_spec(), plan_counts(PlanCounts.of(0, {})))
    refuse_full_delete(people_spec(), plan_counts(PlanCounts.of(1, {"delete": 3})))


def test_null_and_duplicated_keys_become_one_coded_failure_each() -> None:
    rows = [("invalid_null_key", None, 2), ("invalid_duplicate_key", "u7", 3)]
    null, duplicate = invalid_key_failures("id", rows)
    assert null == Failure(
        None,
        None,
        "invalid",
        "2 row(s) have a null primary key 'id'; they cannot be tracked or sent. Filter them out in the "
        "model or fill the key.",
        reason_code="null_primary_key",
    )
    assert (duplicate.key, duplicate.reason_code, duplicate.counted) == ("u7", "duplicate_primary_key", True)
    assert duplicate.reason.startswith("primary key 'id' value 'u7' appears in 3 rows")


def _report() -> SyncReport:
    report = SyncReport("people_identify", "s1", 0, dry_run=False)
    report.counts = plan_counts(PlanCounts.of(3, {"add": 3}))
    return report


def test_record_adds_each_chunk_to_the_report_and_keeps_the_first_error() -> None:
    report = _report()
    chunk = Chunk(
        messages=[b"{}", b"{}"],
        planned=planned_table(
            [PlannedMessage("u1", "c1", None, "add"), PlannedMessage("u2", "c2", None, "add")]
        ),
        rejected=[Failure("u3", "c3", "invalid", "too big")],
    )
    engine._record(
        report, chunk, ChunkResult(sent=2, delivered=1, failed=1, first_error="record 'u3': too big")
    )
    engine._record(report, Chunk(), ChunkResult(sent=0, delivered=0, failed=0, first_error="later"))
    counts = report.counts
    assert (counts["rejected"], counts["planned"], counts["sent"], counts["delivered"], counts["failed"]) == (
        1,
        2,
        2,
        1,
        1,
    )
    assert report.first_error == "record 'u3': too big"


@pytest.mark.parametrize(
    ("sent", "delivered", "rejected", "invalid", "status"),
    [
        (3, 3, 0, 0, "success"),
        (3, 2, 0, 0, "partial_success"),
        (3, 3, 1, 0, "partial_success"),
        (3, 0, 0, 0, "failed"),
        (0, 0, 0, 0, "success"),
        (0, 0, 0, 2, "partial_success"),
    ],
)
def test_conclude_judges_what_this_sync_attempted(sent, delivered, rejected, invalid, status) -> None:
    report = _report()
    report.counts.update(sent=sent, delivered=delivered, rejected=rejected, invalid=invalid)
    engine._conclude(report, dry_run=False)
    assert report.status == status
    assert report.delivery_rate == (delivered / sent if sent else 1.0)
    if invalid:
        assert (
            report.first_error
            == "records with a null or duplicated primary key were rejected (see failed_records)"
        )


def test_a_dry_run_has_no_delivery_rate() -> None:
    report = _report()
    engine._conclude(report, dry_run=True)
    assert report.status == "success" and report.delivery_rate is None
