"""Send Track semantics over syncs: a record is an event, sent once per key.

Changed keys are not re-sent (unless ``send: upsert``), deletes send nothing, and an
``incremental_column`` reads only rows above the stored mark without losing a failed row or the
rows of a crashed sync."""

from collections.abc import Sequence

import pytest

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.sync.delivery import OUTBOX
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.warehouse.base import WarehouseSession, literal
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender, failed, ledger

Row = tuple[str, str | None, str, int | None]  # id, user_id, plan, seq


def events_table(session: WarehouseSession, rows: Sequence[Row]) -> None:
    session.execute("CREATE SCHEMA IF NOT EXISTS models")
    session.execute(
        "CREATE OR REPLACE TABLE models.events (id VARCHAR, user_id VARCHAR, plan VARCHAR, seq INTEGER)"
    )
    if rows:
        values = ", ".join("(" + ", ".join(literal(v) for v in row) + ")" for row in rows)
        session.execute(f"INSERT INTO models.events VALUES {values}")


def track_spec(**overrides) -> MappingSpec:
    fields = {
        "name": "events_track",
        "action": "track",
        "user_id": "user_id",
        "event_name": {"value": "Plan Changed"},
        "properties": {"plan": "plan"},
    }
    mapping = MappingConfig(**{**fields, **overrides})
    return MappingSpec(SyncSource("events", ("events",), "models.events", "id", "models/events.yml"), mapping)


def sent_ids(sender: ScriptedSender) -> list[str]:
    return sorted(m["properties"]["plan"] for m in sender.sent)


ROWS: list[Row] = [("e1", "u1", "free", 1), ("e2", "u2", "pro", 2)]


@pytest.fixture
def session(warehouse):
    with warehouse.session() as s:
        events_table(s, ROWS)
        yield s


def test_each_new_key_is_sent_once_over_three_syncs(session) -> None:
    first = ScriptedSender()
    assert run_sync(session, track_spec(), first).counts["added"] == 2
    assert sent_ids(first) == ["free", "pro"] and {m["type"] for m in first.sent} == {"track"}

    events_table(session, [("e1", "u1", "CHANGED", 1), ("e3", "u3", "new", 3)])  # e1 changed, e2 gone, e3 new
    second = ScriptedSender()
    report = run_sync(session, track_spec(), second)
    assert sent_ids(second) == ["new"]  # the changed key is not re-sent, the gone one sends nothing
    assert (report.counts["updated"], report.counts["deleted"]) == (0, 0)

    events_table(session, [*ROWS, ("e3", "u3", "new", 3)])  # e2 comes back: it was sent, it stays sent
    third = ScriptedSender()
    assert run_sync(session, track_spec(), third).counts["added"] == 0 and third.sent == []
    assert set(ledger(session, "events_track")) == {"e1", "e2", "e3"}  # only keys count for the ledger


def test_upsert_re_sends_a_changed_event_under_a_new_id(session) -> None:
    first = ScriptedSender()
    run_sync(session, track_spec(send="upsert"), first)
    events_table(session, [("e1", "u1", "CHANGED", 1), ("e2", "u2", "pro", 2)])
    second = ScriptedSender()
    assert run_sync(session, track_spec(send="upsert"), second).counts["updated"] == 1
    assert sent_ids(second) == ["CHANGED"]
    assert second.sent[0]["messageId"] != next(m["messageId"] for m in first.sent if m["userId"] == "u1")


def test_reset_sends_every_event_again(session) -> None:
    run_sync(session, track_spec(), ScriptedSender())
    again = ScriptedSender()
    run_sync(session, track_spec(), again, reset=True)
    assert sent_ids(again) == ["free", "pro"]


def incremental(**overrides) -> MappingSpec:
    return track_spec(incremental_column="seq", **overrides)


def test_incremental_reads_only_rows_above_the_mark(session, monkeypatch) -> None:
    run_sync(session, incremental(), ScriptedSender())
    mark = session.query("SELECT mark FROM _segment_profiles.watermark__events_track__0").scalar()
    assert mark == 2
    # a row below the mark whose key the ledger does not know is not read at all: history is not re-hashed
    events_table(session, [*ROWS, ("e0", "u0", "old", 0), ("e3", "u3", "new", 3), ("e4", "u4", "nul", None)])
    seen: list[list[str]] = []
    from segment_profiles_pipeline.sync import engine

    original = engine._render_sql  # the warehouse renders these rows

    def spy(batch, *args):
        seen.append(sorted(batch["__key"].to_pylist()))
        return original(batch, *args)

    monkeypatch.setattr(engine, "_render_sql", spy)
    sender = ScriptedSender()
    run_sync(session, incremental(), sender)
    assert seen == [["e3", "e4"]]  # e0 (below the mark) is never read; a null value is always read
    assert session.query("SELECT mark FROM _segment_profiles.watermark__events_track__0").scalar() == 3


def test_incremental_retries_a_failed_row_below_the_mark(session) -> None:
    events_table(session, [*ROWS, ("e3", "u3", "new", 3)])
    flaky = ScriptedSender(lambda m: "400 bad" if m["userId"] == "u1" else None)
    run_sync(session, incremental(), flaky)
    assert session.query("SELECT mark FROM _segment_profiles.watermark__events_track__0").scalar() == 3
    assert failed(session, "events_track")["e1"][3] == "retrying"
    retry = ScriptedSender()
    report = run_sync(session, incremental(), retry)
    assert [m["userId"] for m in retry.sent] == ["u1"] and report.counts[
        "delivered"
    ] == 1  # e1 (seq 1 < mark 3)
    assert failed(session, "events_track") == {} and set(ledger(session, "events_track")) == {
        "e1",
        "e2",
        "e3",
    }


def test_incremental_dry_run_never_moves_the_mark(session) -> None:
    run_sync(session, incremental(), OUTBOX)
    assert not session.table_exists("_segment_profiles", "watermark__events_track__0")


def test_incremental_crash_mid_sync_loses_nothing(session) -> None:
    """The process dies after one acknowledged chunk: the mark has not moved, so the next sync reads
    the same rows and the ledger skips what was acknowledged."""

    class Crash(Exception):
        pass

    rows = [(f"e{i:05d}", f"u{i}", "p", i) for i in range(45_000)]  # three chunks
    events_table(session, rows)
    calls: list[int] = []

    class CrashOnSecondChunk(ScriptedSender):
        def deliver(self, messages):
            calls.append(len(messages))
            if len(calls) == 2:
                raise Crash("process died")
            return super().deliver(messages)

    with pytest.raises(Crash):
        run_sync(session, incremental(), CrashOnSecondChunk())
    assert not session.table_exists("_segment_profiles", "watermark__events_track__0")
    acked = set(ledger(session, "events_track"))
    assert len(acked) == calls[0]
    resumed = ScriptedSender()
    run_sync(session, incremental(), resumed)
    assert {m["userId"] for m in resumed.sent}.isdisjoint({f"u{int(k[1:])}" for k in acked})
    assert len(resumed.sent) == 45_000 - calls[0] and len(ledger(session, "events_track")) == 45_000


def test_refreshed_rows_still_move_the_mark(session) -> None:
    """A ``refresh`` row (acknowledged, no quick hash stored yet: here, a sync that died before
    settling) carries no mapped values but keeps its incremental_column: the mark is the largest
    value among every planned row."""
    spec = incremental(send="upsert")
    run_sync(session, spec, ScriptedSender())
    session.execute("UPDATE _segment_profiles.ledger SET quick_hash = NULL")
    session.execute("DROP TABLE _segment_profiles.watermark__events_track__0")
    again = ScriptedSender()
    assert run_sync(session, spec, again).counts["updated"] == 0 and again.sent == []
    assert session.query("SELECT mark FROM _segment_profiles.watermark__events_track__0").scalar() == 2


def test_a_reset_that_crashes_still_re_sends_everything_next_time(session) -> None:
    """Reset forgets the mark before sending: a reset sync that dies must not leave a mark over
    rows whose ledger rows it already turned into tombstones."""

    class Crash(Exception):
        pass

    class CrashAtOnce(ScriptedSender):
        def deliver(self, messages):
            raise Crash("process died")

    run_sync(session, incremental(), ScriptedSender())
    with pytest.raises(Crash):
        run_sync(session, incremental(), CrashAtOnce(), reset=True)
    after = ScriptedSender()
    run_sync(session, incremental(), after)
    assert sent_ids(after) == ["free", "pro"]
