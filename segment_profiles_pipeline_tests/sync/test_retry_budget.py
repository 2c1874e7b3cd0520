"""Failures that must neither cost data nor page for nothing.

Only a record's own failures (Segment rejected that message) consume its retry budget; an
outage never expires anything. A record rejected for its content is parked until its data
changes, so it does not fail every later sync. Dry runs never write retry state.
"""

import datetime as dt

import orjson
import pytest

from segment_profiles_pipeline.segment.spec import MAX_MESSAGE_BYTES
from segment_profiles_pipeline.sync.delivery import OUTBOX
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline_tests.sync.helpers import (
    ScriptedSender,
    failed,
    ledger,
    people_spec,
    people_table,
)

ROWS = [("u1", "a@x.io", "free"), ("u2", "b@x.io", "pro"), ("u3", "c@x.io", "free")]
START = dt.datetime(2026, 3, 1, 9, 0)


@pytest.fixture
def session(warehouse):
    with warehouse.session() as s:
        people_table(s, ROWS)
        yield s


def test_an_outage_never_expires_records(session) -> None:
    spec = people_spec(retry={"max_syncs": 2, "max_days": 1})
    outage = ScriptedSender(lambda _m: "HTTP 503 after 7 attempts", record_level=False)
    for day in range(6):
        report = run_sync(session, spec, outage, now=START + dt.timedelta(days=day))
        assert report.status == "failed" and report.counts["sent"] == 3
    assert {k: v[2:] for k, v in failed(session).items()} == {u: (0, "retrying") for u in ("u1", "u2", "u3")}
    recovered = ScriptedSender()
    run_sync(session, spec, recovered, now=START + dt.timedelta(days=7))
    assert recovered.user_ids() == ["u1", "u2", "u3"] and set(ledger(session)) == {"u1", "u2", "u3"}
    assert failed(session) == {}


def test_record_level_failures_expire_after_max_syncs(session) -> None:
    spec = people_spec(retry={"max_syncs": 2, "max_days": 14})
    refused = ScriptedSender(lambda m: "HTTP 400: bad trait" if m["userId"] == "u3" else None)
    run_sync(session, spec, refused, now=START)
    assert failed(session)["u3"][2:] == (1, "retrying")
    run_sync(session, spec, refused, now=START + dt.timedelta(hours=1))
    assert failed(session)["u3"][2:] == (2, "expired")
    idle = ScriptedSender()
    run_sync(session, spec, idle, now=START + dt.timedelta(hours=2))
    assert idle.sent == []


def test_record_level_failures_expire_after_max_days(session) -> None:
    spec = people_spec(retry={"max_syncs": 100, "max_days": 3})
    refused = ScriptedSender(lambda m: "HTTP 400: bad trait" if m["userId"] == "u3" else None)
    run_sync(session, spec, refused, now=START)
    run_sync(session, spec, refused, now=START + dt.timedelta(days=2))
    assert failed(session)["u3"][2:] == (2, "retrying")
    run_sync(session, spec, refused, now=START + dt.timedelta(days=4))
    assert failed(session)["u3"][2:] == (3, "expired")


def test_max_days_counts_from_the_first_record_level_failure_not_an_outage(session) -> None:
    spec = people_spec(retry={"max_syncs": 100, "max_days": 3})
    outage = ScriptedSender(
        lambda m: "connection refused" if m["userId"] == "u3" else None, record_level=False
    )
    run_sync(session, spec, outage, now=START)
    refused = ScriptedSender(lambda m: "HTTP 400: bad trait" if m["userId"] == "u3" else None)
    run_sync(session, spec, refused, now=START + dt.timedelta(days=10))
    assert failed(session)["u3"][2:] == (1, "retrying")


def test_changed_data_restarts_the_attempt_count(session) -> None:
    spec = people_spec(retry={"max_syncs": 3, "max_days": 14})
    refused = ScriptedSender(lambda m: "HTTP 400: bad trait" if m["userId"] == "u3" else None)
    run_sync(session, spec, refused, now=START)
    run_sync(session, spec, refused, now=START + dt.timedelta(hours=1))
    assert failed(session)["u3"][2] == 2
    people_table(session, [*ROWS[:2], ("u3", "c@x.io", "changed")])
    run_sync(session, spec, refused, now=START + dt.timedelta(hours=2))
    assert failed(session)["u3"][2:] == (1, "retrying")


def _oversized(session) -> None:
    people_table(session, [*ROWS[:2], ("u3", "x" * 40_000, "free")])


def test_a_record_rejected_for_its_content_is_parked_until_its_data_changes(session) -> None:
    _oversized(session)
    first = ScriptedSender()
    report = run_sync(session, people_spec(), first)
    assert first.user_ids() == ["u1", "u2"]
    assert report.status == "partial_success" and report.counts["rejected"] == 1
    kind, reason, _attempts, status = failed(session)["u3"]
    assert (kind, status) == ("invalid", "rejected") and "Segment accepts at most 32 KB" in reason

    later = ScriptedSender()
    report = run_sync(session, people_spec(), later)
    assert later.sent == [] and report.status == "success" and report.counts["rejected"] == 0
    assert failed(session)["u3"][3] == "rejected"  # still visible

    people_table(session, ROWS)
    fixed = ScriptedSender()
    run_sync(session, people_spec(), fixed)
    assert fixed.user_ids() == ["u3"] and failed(session) == {}


def test_a_sync_with_only_rejected_records_does_not_fail(session) -> None:
    run_sync(session, people_spec(), ScriptedSender())
    _oversized(session)
    sender = ScriptedSender()
    report = run_sync(session, people_spec(), sender)
    assert sender.sent == [] and report.counts["rejected"] == 1
    assert report.status == "partial_success"


def test_the_32_kb_boundary_is_exact(session) -> None:
    """A message of exactly 32 KB is sent; one byte more is rejected and recorded, never dropped."""
    probe = ScriptedSender()
    people_table(session, [("u1", "", "free")])
    run_sync(session, people_spec(name="probe"), probe)
    overhead = len(orjson.dumps(probe.sent[0]))  # the same message with an empty email
    people_table(
        session,
        [
            ("u1", "e" * (MAX_MESSAGE_BYTES - overhead), "free"),
            ("u2", "e" * (MAX_MESSAGE_BYTES - overhead + 1), "free"),
        ],
    )
    sender = ScriptedSender()
    run_sync(session, people_spec(name="probe"), sender, reset=True)
    assert [len(orjson.dumps(m)) for m in sender.sent] == [MAX_MESSAGE_BYTES]
    assert failed(session, "probe")["u2"][0] == "invalid"


def test_dry_runs_never_write_retry_state(session) -> None:
    people_table(session, [*ROWS[:2], ("u3", "x" * 40_000, "free"), (None, "n", "free")])
    for _ in range(3):
        report = run_sync(session, people_spec(retry={"max_syncs": 1, "max_days": 1}), OUTBOX)
        assert report.counts["rejected"] == 1 and report.counts["invalid"] == 1
        assert report.delivery_rate is None
    assert failed(session) == {}
    outbox = dict(
        session.query(
            "SELECT record_key, operation FROM _segment_profiles.outbox WHERE operation = 'rejected'"
        ).rows
    )
    assert outbox == {"u3": "rejected"}
    real = ScriptedSender()
    run_sync(session, people_spec(), real)
    assert real.user_ids() == ["u1", "u2"] and failed(session)["u3"][3] == "rejected"


def test_a_failed_clear_is_retried_not_forgotten(session) -> None:
    spec = people_spec(on_delete="clear_traits")
    run_sync(session, spec, ScriptedSender())
    people_table(session, ROWS[1:])
    refused = ScriptedSender(lambda _m: "HTTP 503", record_level=False)
    run_sync(session, spec, refused)
    assert len(refused.sent) == 1 and "u1" in ledger(session)
    retry = ScriptedSender()
    run_sync(session, spec, retry)
    assert retry.sent[0]["userId"] == "u1" and retry.sent[0]["traits"] == {"email": None, "plan": None}
    assert "u1" not in ledger(session)


def test_a_mapping_change_re_sends_its_records(session) -> None:
    run_sync(session, people_spec(), ScriptedSender())
    renamed = ScriptedSender()
    run_sync(session, people_spec(traits={"email": "email", "tier": "plan"}), renamed)
    assert renamed.user_ids() == ["u1", "u2", "u3"]
    assert renamed.sent[0]["traits"].keys() == {"email", "tier"}


def test_an_expired_clear_is_parked_not_retried_every_sync(session) -> None:
    spec = people_spec(on_delete="clear_traits", retry={"max_syncs": 2, "max_days": 14})
    run_sync(session, spec, ScriptedSender())
    people_table(session, ROWS[1:])
    refused = ScriptedSender(lambda m: "HTTP 400: bad clear" if m["userId"] == "u1" else None)
    run_sync(session, spec, refused, now=START)
    run_sync(session, spec, refused, now=START + dt.timedelta(hours=1))
    assert len(refused.sent) == 2 and failed(session)["u1"][2:] == (2, "expired")
    idle = ScriptedSender()
    run_sync(session, spec, idle, now=START + dt.timedelta(hours=2))
    assert idle.sent == [] and "u1" in ledger(session)
