"""Segment's identity rules on hand-written messages (pure logic, no warehouse)."""

from __future__ import annotations

import hashlib

import pytest

from segment_profiles_pipeline.identity.config import IdentityFile, rules_from
from segment_profiles_pipeline.identity.resolver import Graph, Identifier, Message, profile_id, set_key

RULES = rules_from(IdentityFile())


def run(*messages: tuple[Identifier, ...]) -> tuple[Graph, list[str | None]]:
    """Resolve the messages m1, m2, … in order; the graph and each message's profile."""
    graph = Graph(RULES)
    out = []
    for seq, ids in enumerate(messages, start=1):
        result = graph.resolve(Message(f"m{seq}", None, ids, seq))
        out.append(result.segment_id if result else None)
    return graph, out


def pid(seq: int, *ids: Identifier) -> str:
    return profile_id(f"m{seq}", set_key(ids))


def members(graph: Graph, profile: str) -> set[Identifier]:
    return {i for i, p in graph.owner.items() if graph.canonical(p) == profile}


U1, U2 = ("user_id", "u1"), ("user_id", "u2")
A1, A2 = ("anonymous_id", "a1"), ("anonymous_id", "a2")
E1, E2 = ("email", "e1"), ("email", "e2")


def test_default_rules_are_segments() -> None:
    assert [(t.type, t.priority, t.limit) for t in RULES.types] == [
        ("user_id", 1, 1),
        ("email", 2, 5),
        ("anonymous_id", 3, 5),
    ]


def test_custom_types_follow_the_defaults_alphabetically() -> None:
    rules = rules_from(
        IdentityFile.model_validate({"identifiers": [{"type": "phone"}, {"type": "crm_id", "limit": 2}]})
    )
    assert [(t.type, t.priority, t.limit) for t in rules.types] == [
        ("user_id", 1, 1),
        ("email", 2, 5),
        ("anonymous_id", 3, 5),
        ("crm_id", 4, 2),
        ("phone", 5, 5),
    ]


@pytest.mark.parametrize("value", ["", "0", "0000-0000", "---", "-1", "null", "NULL", "Anonymous", None])
def test_blocked_values(value: str | None) -> None:
    assert RULES.is_blocked(value)


@pytest.mark.parametrize("value", ["a-1", "10", "nullable", "anonymous1", "-2"])
def test_values_that_are_not_blocked(value: str) -> None:
    assert not RULES.is_blocked(value)


def test_anonymous_session_later_identified_joins_the_profile() -> None:
    graph, out = run((A1,), (U1, A1))
    assert out == [pid(1, A1), pid(1, A1)]
    assert members(graph, pid(1, A1)) == {A1, U1}


def test_several_matches_merge_into_the_oldest_profile() -> None:
    graph, out = run((A1,), (E1,), (A1, E1))
    assert out == [pid(1, A1), pid(2, E1), pid(1, A1)]
    assert [(a, b, m.message_id) for a, b, m in graph.merges] == [(pid(2, E1), pid(1, A1), "m3")]
    assert members(graph, pid(1, A1)) == {A1, E1}


def test_shared_device_stays_with_the_first_user() -> None:
    graph, out = run((U1, A1), (U2, A1))
    assert out == [pid(1, U1, A1), pid(2, U2, A1)]
    assert members(graph, pid(1, U1, A1)) == {U1, A1}
    assert members(graph, pid(2, U2, A1)) == {U2}
    assert graph.merges == []


def test_segments_priority_example_new_user_id_with_a_known_email() -> None:
    """Docs: profile {abc123, jane}; {abc456, jane} would hold two user_ids: email is demoted, new profile."""
    old, new, jane = ("user_id", "abc123"), ("user_id", "abc456"), ("email", "jane@example.com")
    graph, out = run((old, jane), (new, jane))
    assert out[1] == pid(2, new, jane)
    assert members(graph, out[1]) == {new}
    assert members(graph, out[0]) == {old, jane}


def test_two_user_ids_never_merge_the_lowest_priority_identifier_is_demoted() -> None:
    graph, out = run((U1, E1), (U2, E2), (E1, E2))
    assert out[2] == pid(1, U1, E1)  # e2 (the last email by value) was demoted, e1 led to u1's profile
    assert members(graph, out[0]) == {U1, E1}
    assert members(graph, out[1]) == {U2, E2}


def test_limit_of_five_anonymous_ids() -> None:
    anons = [("anonymous_id", f"a{i}") for i in range(1, 7)]
    graph, out = run(*((U1, a) for a in anons))
    assert set(out) == {pid(1, U1, anons[0])}
    assert members(graph, out[0]) == {U1, *anons[:5]}
    assert anons[5] not in graph.owner


def test_a_repeated_identifier_set_changes_nothing() -> None:
    graph, out = run((U1, A1), (U2, A1), (U2, A1))
    assert out[1] == out[2]
    assert len(graph.new_profiles) == 2 and len(graph.new_mappings) == 3


def test_profile_ids_are_deterministic() -> None:
    assert pid(1, U1) == "use_" + hashlib.sha256(b"m1\x1f7:user_id2:u1").hexdigest()[:27]
    assert run((U1, A1), (A2,))[1] == run((U1, A1), (A2,))[1]
