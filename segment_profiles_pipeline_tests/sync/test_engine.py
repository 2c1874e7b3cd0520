"""The sync engine on a real DuckDB warehouse with a scripted sender (HTTP is tested separately).

Covers the change detection, ledger, failed records, retries, modes, guards, shards and locks.
"""

import pytest

from segment_profiles_pipeline.errors import SyncError
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


@pytest.fixture
def session(warehouse):
    with warehouse.session() as s:
        people_table(s, ROWS)
        yield s


def test_first_sync_sends_all_then_nothing_then_only_changes(session) -> None:
    spec = people_spec()
    first = ScriptedSender()
    report = run_sync(session, spec, first)
    assert first.user_ids() == ["u1", "u2", "u3"]
    assert report.counts["added"] == 3 and report.counts["delivered"] == 3 and report.status == "success"
    assert set(ledger(session)) == {"u1", "u2", "u3"}

    again = ScriptedSender()
    report = run_sync(session, spec, again)
    assert again.sent == [] and report.counts["added"] == report.counts["updated"] == 0

    people_table(
        session,
        [
            ("u1", "a@x.io", "enterprise"),
            ("u2", "b@x.io", "pro"),
            ("u3", "c@x.io", "free"),
            ("u4", None, "free"),
        ],
    )
    changed = ScriptedSender()
    report = run_sync(session, spec, changed)
    assert changed.user_ids() == ["u1", "u4"]
    assert (report.counts["added"], report.counts["updated"]) == (1, 1)
    assert next(m for m in changed.sent if m["userId"] == "u1")["traits"] == {
        "email": "a@x.io",
        "plan": "enterprise",
    }


def test_unmapped_columns_do_not_trigger_a_resend(session) -> None:
    spec = people_spec(traits={"email": "email"})
    run_sync(session, spec, ScriptedSender())
    people_table(session, [("u1", "a@x.io", "CHANGED"), ("u2", "b@x.io", "pro"), ("u3", "c@x.io", "free")])
    sender = ScriptedSender()
    run_sync(session, spec, sender)
    assert sender.sent == []


def test_deletes_ignore_by_default_and_clear_traits_on_request(session, warehouse) -> None:
    run_sync(session, people_spec(), ScriptedSender())
    people_table(session, ROWS[:2])
    sender = ScriptedSender()
    report = run_sync(session, people_spec(), sender)
    assert report.counts["deleted"] == 1 and sender.sent == []
    assert set(ledger(session)) == {"u1", "u2"}

    clearing = people_spec(on_delete="clear_traits")
    people_table(session, ROWS)
    run_sync(session, clearing, ScriptedSender())
    people_table(session, ROWS[1:])
    sender = ScriptedSender()
    report = run_sync(session, clearing, sender)
    assert sender.sent == [
        {**sender.sent[0], "type": "identify", "userId": "u1", "traits": {"email": None, "plan": None}}
    ]
    assert "u1" not in ledger(session)


def test_invalid_records_land_in_failed_records_with_reasons(session) -> None:
    people_table(session, [("u1", "a", "x"), ("u1", "b", "y"), (None, "c", "z"), ("u2", "d", "w")])
    sender = ScriptedSender()
    report = run_sync(session, people_spec(), sender)
    assert sender.user_ids() == ["u2"]
    assert report.counts["invalid"] == 3 and report.status == "partial_success"
    rows = failed(session)
    assert "appears in 2 rows" in rows["u1"][1]
    assert "null primary key 'id'" in rows[None][1]
    assert rows["u1"][0] == "invalid"


def test_failed_delivery_is_retried_with_latest_data_until_delivered(session) -> None:
    spec = people_spec()
    flaky = ScriptedSender(lambda m: "HTTP 503 after 7 attempts" if m["userId"] == "u2" else None)
    report = run_sync(session, spec, flaky)
    assert report.status == "partial_success" and report.counts["failed"] == 1
    assert report.delivery_rate == pytest.approx(2 / 3)
    assert "u2" not in ledger(session)
    assert failed(session)["u2"] == ("delivery", "HTTP 503 after 7 attempts", 1, "retrying")

    people_table(session, [("u1", "a@x.io", "free"), ("u2", "b@x.io", "NEW"), ("u3", "c@x.io", "free")])
    healthy = ScriptedSender()
    run_sync(session, spec, healthy)
    assert [m["traits"]["plan"] for m in healthy.sent] == ["NEW"]  # only u2, with the latest data
    assert "u2" in ledger(session) and failed(session) == {}


def test_failures_expire_after_max_syncs_until_the_data_changes(session) -> None:
    spec = people_spec(retry={"max_syncs": 2, "max_days": 14})
    down = ScriptedSender(lambda m: "HTTP 500" if m["userId"] == "u3" else None)
    run_sync(session, spec, down)
    run_sync(session, spec, down)
    assert failed(session)["u3"][2:] == (2, "expired")
    idle = ScriptedSender()
    run_sync(session, spec, idle)
    assert idle.sent == []  # expired: no longer retried
    people_table(session, [*ROWS[:2], ("u3", "c@x.io", "changed")])
    run_sync(session, spec, idle)
    assert idle.user_ids() == ["u3"] and failed(session) == {}


def test_send_modes_add_and_update(session) -> None:
    add_only = people_spec(send="add")
    run_sync(session, add_only, ScriptedSender())
    people_table(session, [("u1", "a@x.io", "CHANGED"), *ROWS[1:], ("u9", "z", "free")])
    sender = ScriptedSender()
    run_sync(session, add_only, sender)
    assert sender.user_ids() == ["u9"]

    update_only = people_spec(name="people_updates", send="update")
    people_table(session, ROWS)
    sender = ScriptedSender()
    run_sync(session, update_only, sender)
    assert sender.sent == []  # new records are tracked, not sent
    tracked = session.query(
        "SELECT record_key, delivered FROM _segment_profiles.ledger WHERE mapping = 'people_updates' ORDER BY 1"
    ).rows
    assert tracked == [("u1", False), ("u2", False), ("u3", False)]
    people_table(session, [("u1", "a@x.io", "CHANGED"), *ROWS[1:], ("u9", "z", "free")])
    run_sync(session, update_only, sender)
    assert sender.user_ids() == ["u1"]


def test_empty_model_never_clears_everything_without_override(session) -> None:
    spec = people_spec(on_delete="clear_traits")
    run_sync(session, spec, ScriptedSender())
    people_table(session, [])
    sender = ScriptedSender()
    with pytest.raises(
        SyncError, match=r"returned no rows but 3 records were synced before.*allow_full_delete: true"
    ):
        run_sync(session, spec, sender)
    assert sender.sent == [] and len(ledger(session)) == 3
    sender = ScriptedSender()
    run_sync(session, people_spec(on_delete="clear_traits", allow_full_delete=True), sender)
    assert len(sender.sent) == 3 and ledger(session) == {}


def test_dry_run_writes_outbox_and_leaves_ledger_untouched(session) -> None:
    report = run_sync(session, people_spec(), OUTBOX)
    assert report.dry_run and report.counts["planned"] == 3
    assert ledger(session) == {}
    outbox = session.query("SELECT record_key, operation FROM _segment_profiles.outbox ORDER BY 1").rows
    assert outbox == [("u1", "add"), ("u2", "add"), ("u3", "add")]
    run_sync(session, people_spec(), OUTBOX)  # the outbox holds the latest dry run only
    assert session.query("SELECT count(*) FROM _segment_profiles.outbox").scalar() == 3


def test_reset_sends_everything_again(session) -> None:
    run_sync(session, people_spec(), ScriptedSender())
    sender = ScriptedSender()
    run_sync(session, people_spec(), sender, reset=True)
    assert sender.user_ids() == ["u1", "u2", "u3"]


def test_shards_together_deliver_exactly_what_one_shard_delivers(warehouse) -> None:
    rows = [(f"u{i}", f"{i}@x.io", "free" if i % 3 else "pro") for i in range(500)]
    with warehouse.session() as session:
        people_table(session, rows)
        whole = ScriptedSender()
        run_sync(session, people_spec(name="one_shard"), whole)
        sharded = people_spec(name="four_shards", shards=4)
        parts = [ScriptedSender() for _ in range(4)]
        for shard, sender in enumerate(parts):
            run_sync(session, sharded, sender, shard=shard)
        assert all(p.sent for p in parts)  # every shard got a slice
        combined = sorted(u for p in parts for u in p.user_ids())
        assert combined == whole.user_ids() and len(set(combined)) == 500
        assert {m["userId"]: m["traits"] for p in parts for m in p.sent} == {
            m["userId"]: m["traits"] for m in whole.sent
        }
        # a change lands in exactly one shard
        rows[7] = ("u7", "new@x.io", "pro")
        people_table(session, rows)
        again = [ScriptedSender() for _ in range(4)]
        for shard, sender in enumerate(again):
            run_sync(session, sharded, sender, shard=shard)
        assert sorted(u for p in again for u in p.user_ids()) == ["u7"]


def test_crash_mid_sync_resumes_with_the_same_message_ids(session) -> None:
    """The process dies after Segment got the second chunk but before it was acknowledged in the
    ledger: the resumed sync re-sends exactly those records, under the ids Segment already holds."""

    class Crash(Exception):
        pass

    rows = [(f"u{i:05d}", f"{i}@x.io", "free") for i in range(45_000)]  # three chunks
    people_table(session, rows)
    calls = []

    class CrashAfterSendingSecondChunk(ScriptedSender):
        def deliver(self, messages):
            calls.append(len(messages))
            outcomes = super().deliver(messages)  # Segment received them…
            if len(calls) == 2:
                raise Crash("process died")  # …but the acknowledgement never reached the ledger
            return outcomes

    first = CrashAfterSendingSecondChunk()
    with pytest.raises(Crash):
        run_sync(session, people_spec(), first)
    acked = ledger(session)
    assert len(acked) == calls[0] and len(first.sent) == calls[0] + calls[1]
    history = session.query("SELECT status, error FROM _segment_profiles.sync_history").rows
    assert history == [("failed", "process died")]

    resumed = ScriptedSender()
    report = run_sync(session, people_spec(), resumed)
    assert report.counts["added"] == 45_000 - len(acked)
    first_ids = {m["userId"]: m["messageId"] for m in first.sent}
    resent = [m for m in resumed.sent if m["userId"] in first_ids]
    assert len(resent) == calls[1]  # the unacknowledged chunk went out again…
    assert all(m["messageId"] == first_ids[m["userId"]] for m in resent)  # …under the same ids
    assert sorted({*first.user_ids(), *resumed.user_ids()}) == [r[0] for r in rows]
    assert len(ledger(session)) == 45_000


def test_missing_mapped_column_names_file_mapping_and_field(session) -> None:
    with pytest.raises(SyncError) as err:
        run_sync(session, people_spec(traits={"phone": "phone"}), ScriptedSender())
    text = str(err.value)
    assert (
        "models/people.yml (mapping 'people_identify', field 'traits.phone'): column 'phone' is not in models.people"
        in text
    )
    assert "which has: id, email, plan" in text
