"""sync_history: a sync's row from start to finish, and the reads the alert sensor makes."""

from __future__ import annotations

import datetime as dt

import pytest

from segment_profiles_pipeline.state import ensure_state, sync_history
from segment_profiles_pipeline.state.schema import SyncScope

NOW = dt.datetime(2026, 1, 5, 9, 0)  # in the past: `finish` stamps the wall clock
COLUMNS = ("sync_id", "mapping", "shard", "status", "delivered", "error")


@pytest.fixture
def session(warehouse):
    with warehouse.session() as s:
        ensure_state(s)
        yield s


def _rows(session) -> list[tuple]:
    return [
        tuple(r)
        for r in session.query(
            "SELECT sync_id, status, delivered, error FROM _segment_profiles.sync_history ORDER BY sync_id"
        ).rows
    ]


def test_a_sync_row_runs_then_finishes_with_its_counts_and_a_dead_one_is_failed(session) -> None:
    dead = SyncScope(session, "people", 0, "s1", NOW)
    sync_history.start(dead, 1, None, dry_run=False)  # its process died: never finished
    live = SyncScope(session, "people", 0, "s2", NOW + dt.timedelta(minutes=5))
    sync_history.start(live, 1, "run-2", dry_run=False)
    assert _rows(session) == [
        ("s1", "failed", None, "interrupted: the process running this sync stopped before it finished"),
        ("s2", "running", None, None),
    ]
    sync_history.finish(live, "partial_success", {"sent": 3, "delivered": 2}, 2 / 3, "record 'u3': bad")
    assert _rows(session)[1] == ("s2", "partial_success", 2, "record 'u3': bad")
    [latest] = sync_history.latest_finished(session, ["people"], COLUMNS)
    assert (latest["sync_id"], latest["delivered"]) == ("s2", 2)
    since = sync_history.finished_since(session, ["people"], NOW, COLUMNS)
    assert sorted(r["sync_id"] for r in since) == ["s1", "s2"]


def test_a_count_the_table_has_no_column_for_is_refused_naming_the_columns(session) -> None:
    scope = SyncScope(session, "people", 0, "s1", NOW)
    sync_history.start(scope, 1, None, dry_run=True)
    with pytest.raises(ValueError, match=r"no count column\(s\) \['bounced'\]; it has \('extracted'"):
        sync_history.finish(scope, "success", {"sent": 1, "bounced": 1}, None, None)
    assert _rows(session) == [("s1", "running", None, None)]
