"""The messageId rule: the same id only for a resend of a state Segment never acknowledged.

Segment drops a message whose id it saw in about the last day, across sources and workspaces,
so every id Segment could already hold must be new (docs/decisions.md, "Message ids").
"""

import hashlib

import pytest

from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.sync.payloads import message_id, message_ids
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender, ledger, people_spec, people_table

ROWS = [("u1", "a@x.io", "pro"), ("u2", "b@x.io", "free")]


@pytest.fixture
def session(warehouse):
    with warehouse.session() as s:
        people_table(s, ROWS)
        yield s


def ids(sender: ScriptedSender) -> dict[str, str]:
    return {m["userId"]: m["messageId"] for m in sender.sent}


def test_a_state_that_comes_back_is_sent_under_a_new_id(session) -> None:
    """pro → free → pro: the second "pro" must not reuse the first one's id (Segment would drop it)."""
    spec = people_spec()
    first = ScriptedSender()
    run_sync(session, spec, first)
    people_table(session, [("u1", "a@x.io", "free"), ROWS[1]])
    middle = ScriptedSender()
    run_sync(session, spec, middle)
    people_table(session, ROWS)
    back = ScriptedSender()
    run_sync(session, spec, back)
    assert [m["traits"]["plan"] for m in back.sent] == ["pro"]
    assert len({ids(first)["u1"], ids(middle)["u1"], ids(back)["u1"]}) == 3


def test_a_reset_sends_every_record_under_new_ids(session) -> None:
    first = ScriptedSender()
    run_sync(session, people_spec(), first)
    after_reset = ScriptedSender()
    run_sync(session, people_spec(), after_reset, reset=True)
    assert after_reset.user_ids() == ["u1", "u2"]
    assert set(ids(first).values()).isdisjoint(ids(after_reset).values())
    # a second reset again gives ids neither earlier sync used
    again = ScriptedSender()
    run_sync(session, people_spec(), again, reset=True)
    assert set(ids(again).values()).isdisjoint(set(ids(first).values()) | set(ids(after_reset).values()))


def test_a_resend_of_a_never_acknowledged_state_keeps_its_id(session) -> None:
    """Crash recovery stays deduplicable: nothing was acknowledged, so the id must not move."""
    lost = ScriptedSender(lambda m: "connection reset" if m["userId"] == "u2" else None, record_level=False)
    run_sync(session, people_spec(), lost)
    retry = ScriptedSender()
    run_sync(session, people_spec(), retry)
    assert retry.user_ids() == ["u2"] and ids(retry)["u2"] == ids(lost)["u2"]


def test_two_destinations_never_share_ids(session, warehouse) -> None:
    staging = ScriptedSender(salt="hash-of-staging-key")
    run_sync(session, people_spec(name="to_staging"), staging)
    production = ScriptedSender(salt="hash-of-production-key")
    run_sync(session, people_spec(name="to_production"), production)
    same_mapping_other_key = ScriptedSender(salt="hash-of-production-key")
    people_table(session, ROWS)
    run_sync(session, people_spec(name="to_staging"), same_mapping_other_key, reset=True)
    assert set(ids(staging).values()).isdisjoint(ids(production).values())
    assert set(ids(staging).values()).isdisjoint(ids(same_mapping_other_key).values())


def test_a_record_that_is_cleared_and_comes_back_gets_a_new_id(session) -> None:
    spec = people_spec(on_delete="clear_traits")
    first = ScriptedSender()
    run_sync(session, spec, first)
    people_table(session, ROWS[1:])
    clear = ScriptedSender()
    run_sync(session, spec, clear)
    assert [m["traits"] for m in clear.sent] == [{"email": None, "plan": None}]
    people_table(session, ROWS)
    back = ScriptedSender()
    run_sync(session, spec, back)
    assert back.user_ids() == ["u1"] and back.sent[0]["traits"] == {"email": "a@x.io", "plan": "pro"}
    assert ids(back)["u1"] not in {ids(first)["u1"], ids(clear)["u1"]}
    assert set(ledger(session)) == {"u1", "u2"}


def test_an_ignored_delete_that_comes_back_gets_a_new_id(session) -> None:
    first = ScriptedSender()
    run_sync(session, people_spec(), first)
    people_table(session, ROWS[1:])
    run_sync(session, people_spec(), ScriptedSender())
    people_table(session, ROWS)
    back = ScriptedSender()
    run_sync(session, people_spec(), back)
    assert back.user_ids() == ["u1"] and ids(back)["u1"] != ids(first)["u1"]


def test_tombstones_are_pruned_after_the_dedup_safety_window(session) -> None:
    import datetime as dt

    start = dt.datetime(2026, 1, 1)
    run_sync(session, people_spec(), ScriptedSender(), now=start)
    people_table(session, ROWS[1:])
    run_sync(session, people_spec(), ScriptedSender(), now=start + dt.timedelta(days=1))
    tombstones = "SELECT count(*) FROM _segment_profiles.ledger WHERE NOT live"
    assert session.query(tombstones).scalar() == 1
    run_sync(session, people_spec(), ScriptedSender(), now=start + dt.timedelta(days=30))
    assert session.query(tombstones).scalar() == 1  # 29 days old: kept
    run_sync(session, people_spec(), ScriptedSender(), now=start + dt.timedelta(days=32))
    assert session.query(tombstones).scalar() == 0


def _documented_id(*parts: str) -> str:
    """docs/decisions.md's id, computed here with hashlib: ``spp-`` and the 20-byte blake2b of
    the parts joined by U+001F, in hex."""
    return "spp-" + hashlib.blake2b("\x1f".join(parts).encode(), digest_size=20).hexdigest()


def test_an_id_is_the_documented_hash_one_by_one_and_per_chunk() -> None:
    records = [("u1", "c1", ""), ("ü\x1fx", "c2", "20260101T000000-abcdef12"), ("", "", "")]
    expected = [_documented_id("salt", "people", "upsert", *r) for r in records]
    assert [message_id("salt", "people", "upsert", *r) for r in records] == expected
    assert message_ids("salt", "people", "upsert", ["\x1f".join(r).encode() for r in records]) == expected
    # pinned: the id the code before the per-chunk hashing gave (ids must never change)
    assert expected[0] == "spp-e891a359a5a5fd5541b8a541242166fc24fedd28"


def test_sent_ids_are_the_documented_hash_of_key_checksum_and_generation(session) -> None:
    """The rendered path (this mapping renders in SQL) hashes the ledger's checksum and, for an
    update, the generation: the sync id of the ledger row it replaces."""
    first = ScriptedSender()
    run_sync(session, people_spec(), first)
    acked = ledger(session)
    salt, name = "test-destination", "people_identify"
    assert ids(first) == {k: _documented_id(salt, name, "upsert", k, acked[k], "") for k in ("u1", "u2")}
    generation = session.query(
        "SELECT sync_id FROM _segment_profiles.ledger WHERE record_key = 'u1'"
    ).scalar()
    people_table(session, [("u1", "a@x.io", "free"), ROWS[1]])
    update = ScriptedSender()
    run_sync(session, people_spec(), update)
    assert ids(update) == {
        "u1": _documented_id(salt, name, "upsert", "u1", ledger(session)["u1"], generation)
    }
