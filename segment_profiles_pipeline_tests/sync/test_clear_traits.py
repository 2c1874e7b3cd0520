"""``on_delete: clear_traits`` may only clear a profile that no live record of the mapping addresses."""

import pytest

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.project import MappingSpec, SyncSource
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.warehouse.base import literal
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender, people_spec, people_table


def memberships(session, rows: list[tuple[str, str, str]]) -> None:
    """models.memberships(membership_id, user_id, account_id, account_plan)."""
    session.execute("CREATE SCHEMA IF NOT EXISTS models")
    session.execute(
        "CREATE OR REPLACE TABLE models.memberships (membership_id VARCHAR, user_id VARCHAR, account_id VARCHAR, account_plan VARCHAR)"
    )
    values = ", ".join(
        f"({literal(u + '-' + a)}, {literal(u)}, {literal(a)}, {literal(p)})" for u, a, p in rows
    )
    session.execute(f"INSERT INTO models.memberships VALUES {values}")


GROUP = MappingSpec(
    SyncSource(
        "memberships", ("memberships",), "models.memberships", "membership_id", "models/memberships.yml"
    ),
    MappingConfig(
        name="accounts_group",
        action="group",
        user_id="user_id",
        group_id="account_id",
        traits={"plan": "account_plan"},
        on_delete="clear_traits",
    ),
)


@pytest.fixture
def session(warehouse):
    with warehouse.session() as s:
        yield s


def test_a_member_leaving_a_group_does_not_clear_the_group_others_still_belong_to(session) -> None:
    memberships(session, [("u1", "a1", "pro"), ("u2", "a1", "pro"), ("u3", "a2", "free")])
    run_sync(session, GROUP, ScriptedSender())
    memberships(session, [("u2", "a1", "pro"), ("u3", "a2", "free")])  # u1 left a1
    sender = ScriptedSender()
    report = run_sync(session, GROUP, sender)
    assert sender.sent == [] and report.counts["deleted"] == 1
    memberships(session, [("u2", "a1", "pro")])  # a2 has no member left: now it may be cleared
    sender = ScriptedSender()
    run_sync(session, GROUP, sender)
    assert [(m["groupId"], m["traits"]) for m in sender.sent] == [("a2", {"plan": None})]


def test_a_key_change_for_the_same_user_never_clears_the_live_profile(session) -> None:
    spec = people_spec(on_delete="clear_traits", user_id="email")  # the profile is the email; the key is id
    people_table(session, [("k1", "a@x.io", "pro"), ("k2", "b@x.io", "free")])
    run_sync(session, spec, ScriptedSender())
    people_table(session, [("k9", "a@x.io", "pro"), ("k2", "b@x.io", "free")])  # same user, new key
    sender = ScriptedSender()
    run_sync(session, spec, sender)
    assert [(m["userId"], m["traits"]) for m in sender.sent] == [
        ("a@x.io", {"email": "a@x.io", "plan": "pro"})
    ]
    assert all(m["traits"]["plan"] is not None for m in sender.sent)
