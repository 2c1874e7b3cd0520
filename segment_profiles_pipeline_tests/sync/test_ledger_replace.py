"""An acknowledgement replaces the record's ledger row only when it has one (``ledger.record``'s
``replaces``, from the plan's generation): exactly one ledger row per key, whatever mix of first
adds, updates and comebacks of tombstoned keys a chunk holds, and a first sync never runs the
DELETE that scans the whole ledger once per chunk."""

from __future__ import annotations

import pytest

from segment_profiles_pipeline.state.ledger import LEDGER
from segment_profiles_pipeline.sync import engine
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender, people_spec, people_table

FIRST = [("u1", "a@x.io", "free"), ("u2", "b@x.io", "pro"), ("u3", "c@x.io", "free")]


@pytest.fixture(params=["sql", "python"], ids=["rendered in SQL", "built in Python"])
def session(request: pytest.FixtureRequest, warehouse, monkeypatch):
    """A session; the messages rendered by the warehouse, or by the Python builder."""
    if request.param == "python":
        monkeypatch.setattr(engine, "sql_renderer", lambda *_a: None)
    with warehouse.session() as s:
        yield s


def _rows_per_key(session) -> dict[str, tuple[int, bool, str]]:
    """key → (ledger rows, all live, checksum) over every row of the mapping, tombstones included."""
    rows = session.query(
        f"SELECT record_key, count(*), bool_and(live), max(checksum) FROM {LEDGER} "
        "WHERE mapping = 'people_identify' GROUP BY record_key"
    ).rows
    return {key: (n, live, checksum) for key, n, live, checksum in rows}


def test_a_first_sync_acknowledges_without_deleting_from_the_ledger(session, monkeypatch) -> None:
    people_table(session, FIRST)
    monkeypatch.setattr(engine, "CHUNK_ROWS", 2)
    statements: list[str] = []
    execute = session.execute

    def recording(sql: str) -> None:
        statements.append(sql)
        execute(sql)

    monkeypatch.setattr(session, "execute", recording)
    run_sync(session, people_spec(), ScriptedSender())
    assert {k: v[:2] for k, v in _rows_per_key(session).items()} == {k: (1, True) for k in ("u1", "u2", "u3")}
    assert sum(s.startswith(f"INSERT INTO {LEDGER} ") for s in statements) == 2  # two chunks acknowledged
    assert not [s for s in statements if s.startswith(f"DELETE FROM {LEDGER} ") and "record_key IN" in s]


@pytest.mark.parametrize("chunk_rows", [1, 20_000], ids=["a key per chunk", "one mixed chunk"])
def test_updates_and_comebacks_replace_their_row_and_new_keys_add_one(
    session, monkeypatch, chunk_rows
) -> None:
    people_table(session, FIRST)
    run_sync(session, people_spec(), ScriptedSender())
    before = _rows_per_key(session)
    people_table(session, FIRST[:2])  # u3 gone: its row becomes a tombstone
    run_sync(session, people_spec(), ScriptedSender())
    assert _rows_per_key(session)["u3"][:2] == (1, False)

    monkeypatch.setattr(engine, "CHUNK_ROWS", chunk_rows)
    # u1 updated, u2 unchanged, u3 back (over its tombstone), u4 and u5 new
    people_table(
        session, [("u1", "a@x.io", "pro"), FIRST[1], FIRST[2], ("u4", "d@x.io", "free"), ("u5", None, None)]
    )
    sender = ScriptedSender()
    run_sync(session, people_spec(), sender)
    assert sender.user_ids() == ["u1", "u3", "u4", "u5"]
    after = _rows_per_key(session)
    assert {k: v[:2] for k, v in after.items()} == {k: (1, True) for k in ("u1", "u2", "u3", "u4", "u5")}
    assert after["u1"][2] != before["u1"][2] and after["u2"] == before["u2"]
