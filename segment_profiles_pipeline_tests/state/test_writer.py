"""StateWriter: the writes that touch the ledger and failed_records together, with typed values."""

from __future__ import annotations

import datetime as dt

import pytest

from segment_profiles_pipeline.config import RetryConfig
from segment_profiles_pipeline.state import ensure_state, ledger
from segment_profiles_pipeline.state.failed_records import Failure
from segment_profiles_pipeline.state.ledger import Ack, acks_table
from segment_profiles_pipeline.state.writer import StateWriter
from segment_profiles_pipeline.sync.plan import PlanSpec, shard_predicate
from segment_profiles_pipeline_tests.sync.helpers import people_spec

NOW = dt.datetime(2026, 12, 2, 9, 0)
LATER = NOW + dt.timedelta(hours=1)


@pytest.fixture
def session(warehouse):
    with warehouse.session() as s:
        ensure_state(s)
        yield s


def _ledger(session) -> dict[str, tuple]:
    rows = session.query(
        "SELECT record_key, checksum, delivered, live, sync_id FROM _segment_profiles.ledger ORDER BY 1"
    ).rows
    return {r[0]: tuple(r[1:]) for r in rows}


def _failed(session) -> list[str]:
    return [
        r[0] for r in session.query("SELECT record_key FROM _segment_profiles.failed_records ORDER BY 1").rows
    ]


def test_acknowledging_enters_the_ledger_and_clears_the_failure(session) -> None:
    first = StateWriter(session, "people", 0, "s1", NOW)
    first.fail(
        [Failure("u1", "c1", "delivery", "HTTP 500", reason_code="server_error", counted=False)],
        RetryConfig(),
    )
    first.fail(
        [Failure("u2", "c2", "delivery", "HTTP 500", reason_code="server_error", counted=False)],
        RetryConfig(),
    )
    StateWriter(session, "people", 0, "s2", LATER).acknowledge(
        ledger.acks_table([Ack("u1", "c1", '{"userId":"u1"}')])
    )
    assert _ledger(session) == {"u1": ("c1", True, True, "s2")}
    assert _failed(session) == ["u2"]


def test_forgotten_keys_become_tombstones_of_this_sync_and_lose_their_failures(session) -> None:
    StateWriter(session, "people", 0, "s1", NOW).acknowledge(
        ledger.acks_table([Ack("u1", "c1", None), Ack("u2", "c2", None)])
    )
    writer = StateWriter(session, "people", 0, "s2", LATER)
    writer.fail([Failure("u1", "c1", "delivery", "HTTP 400", reason_code="rejected")], RetryConfig())
    writer.forget_keys(["u1"])
    assert _ledger(session) == {"u1": ("c1", True, False, "s2"), "u2": ("c2", True, True, "s1")}
    assert _failed(session) == []


def test_planned_forgets_tombstone_the_keys_the_fill_puts_in_the_scratch_table(session) -> None:
    StateWriter(session, "people", 0, "s1", NOW).acknowledge(
        ledger.acks_table([Ack("u1", "c1", None), Ack("u2", "c2", None)])
    )
    writer = StateWriter(session, "people", 0, "s2", LATER)
    writer.fail([Failure("u1", "c1", "delivery", "HTTP 400", reason_code="rejected")], RetryConfig())
    writer.forget_planned(lambda into: session.execute(f"CREATE TABLE {into} AS SELECT 'u1' AS record_key"))
    assert _ledger(session) == {"u1": ("c1", True, False, "s2"), "u2": ("c2", True, True, "s1")}
    assert _failed(session) == []
    assert not session.table_exists("_segment_profiles", "scratch__people__0__gone")


def test_unsent_records_are_tracked_undelivered_replacing_a_tombstone(session) -> None:
    StateWriter(session, "people", 0, "s1", NOW).acknowledge(ledger.acks_table([Ack("u1", "c1", None)]))
    StateWriter(session, "people", 0, "s2", NOW).forget_keys(["u1"])
    unsent = ledger.acks_table([Ack("u1", "c9", None, False), Ack("u2", "c2", None, False)])
    StateWriter(session, "people", 0, "s3", LATER).track_unsent(
        lambda into: session.load(into, unsent, create=True)
    )
    assert _ledger(session) == {"u1": ("c9", False, True, "s3"), "u2": ("c2", False, True, "s3")}


def test_reset_forgets_only_its_own_shard_as_the_plan_assigns_keys(session) -> None:
    keys = [f"u{i}" for i in range(40)]
    StateWriter(session, "people", 0, "s1", NOW).acknowledge(
        acks_table([Ack(k, "c", None) for k in keys])
    )
    plan = PlanSpec(people_spec().mapping, "models.people", "id", (), shard=1, shards=3)
    mine = {
        r[0]
        for r in session.query(
            f"SELECT record_key FROM _segment_profiles.ledger WHERE {shard_predicate('record_key', plan)}"
        ).rows
    }
    assert 0 < len(mine) < len(keys)
    writer = StateWriter(session, "people", 1, "s2", LATER)
    writer.fail([Failure("u1", "c", "invalid", "too big")], RetryConfig())  # parked: forgotten on reset
    writer.reset(3)
    ledger = _ledger(session)
    assert {k for k, (_, _, live, _) in ledger.items() if not live} == mine
    assert _failed(session) == []
