"""Loading computed_traits.yml: the shipped recipes, naming rules, the sync interface, load errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from segment_profiles_pipeline.config import MappingConfig, TraitField
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import SyncSource, load_project
from segment_profiles_pipeline.settings import PROJECT_ROOT
from segment_profiles_pipeline.traits.config import (
    check_trait_key_clashes,
    event_table_name,
    load_traits,
    snake_case,
)
from segment_profiles_pipeline_tests.traits.helpers import traits_file

SHIPPED = PROJECT_ROOT / "models" / "computed_traits.yml"
ONE = "traits:\n  - {name: Total inbounds, type: event_counter, event: Flex - Engagement Initiated}\n"


def test_the_six_flex_recipes_ship_exactly() -> None:
    project = load_traits(SHIPPED.parent)
    assert project is not None
    described = [
        (
            t.key,
            t.type,
            t.event,
            t.property,
            t.frequency() if t.type == "most_frequent" else None,
            t.value_type,
        )
        for t in project.traits
    ]
    initiated, completed = "Flex - Engagement Initiated", "Flex - Engagement Completed"
    assert described == [
        ("total_inbounds", "event_counter", initiated, None, None, None),
        ("frequent_inbound_channel", "most_frequent", initiated, "channelType", 2, "text"),
        ("total_outbounds", "event_counter", initiated, None, None, None),
        ("last_known_service_agent", "last", initiated, "lastKnownAgentWorkerSid", None, "text"),
        ("last_interaction_duration", "last", initiated, "duration", None, "number"),
        ("sentiment_in_last_interaction", "last", completed, "sentiment", None, "text"),
    ]
    directions = [
        [(c.property, c.operator, c.value) for c in [t.conditions]] if t.conditions else []
        for t in project.traits
    ]
    assert directions[0] == directions[1] == [("direction", "equals", "Inbound")]
    assert directions[2] == [("direction", "equals", "Outbound")]
    assert directions[3:] == [[], [], []]
    assert [(a.key, a.conditions.trait, a.conditions.value) for a in project.audiences] == [
        ("email_inbound_customers", "frequent_inbound_channel", "email")
    ]
    assert project.event_tables() == [
        ("flex", "flex_engagement_initiated"),
        ("flex", "flex_engagement_completed"),
    ]


def test_sync_mappings_expand_all_columns_without_the_profile_key() -> None:
    project = load_traits(SHIPPED.parent)
    assert project is not None
    specs = project.sync_mappings()
    assert [s.source for s in specs] == [
        SyncSource(
            "computed_traits", ("computed_traits",), "traits.computed_traits", "profile_key", str(SHIPPED)
        ),
        SyncSource("audiences", ("audiences",), "traits.audiences", "profile_key", str(SHIPPED)),
    ]
    traits, audiences = specs[0].mapping, specs[1].mapping
    assert type(traits) is MappingConfig and traits.action == "identify" and not traits.all_columns_as_traits
    assert (traits.user_id, traits.anonymous_id) == ("user_id", "anonymous_id")
    assert list(traits.traits) == [t.key for t in project.traits]
    assert audiences.traits == {"email_inbound_customers": "email_inbound_customers"}
    assert audiences.nulls == "skip"  # never a member: the key is left out, not sent as null


def test_no_traits_file_means_no_traits(tmp_path: Path) -> None:
    assert load_traits(tmp_path) is None


def test_the_model_loader_ignores_the_traits_file(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(PROJECT_ROOT / "models", models)
    assert set(load_project(models).models) == {"users", "account_memberships", "subscriptions"}


@pytest.mark.parametrize(
    ("name", "column"),
    [
        ("channelType", "channel_type"),
        ("lastKnownAgentWorkerSid", "last_known_agent_worker_sid"),
        ("Duration", "duration"),
        ("userID", "user_id"),
        ("URLPath", "url_path"),
        ("utm source", "utm_source"),
        ("codes.topic", "codes_topic"),
    ],
)
def test_properties_resolve_to_snake_case_columns(name: str, column: str) -> None:
    assert snake_case(name) == column


def test_event_names_map_to_segment_tables_or_an_override(tmp_path: Path) -> None:
    assert event_table_name("Flex - Engagement Initiated") == "flex_engagement_initiated"
    assert event_table_name("Order  Completed!!") == "order_completed"
    project = traits_file(
        tmp_path,
        """
        sources:
          schema: app
          events:
            Weird Event: other.weird_table
            Short: short_table
        traits:
          - {name: A, type: event_counter, event: Order Completed!!}
          - {name: B, type: event_counter, event: Weird Event}
          - {name: C, type: event_counter, event: Short}
        """,
    )
    assert project.event_tables() == [
        ("app", "order_completed"),
        ("other", "weird_table"),
        ("app", "short_table"),
    ]


@pytest.mark.parametrize(
    ("yml", "expected"),
    [
        (
            ONE.replace("event_counter", "counter"),
            "trait 'Total inbounds': type: unknown type 'counter'; use one of: event_counter, aggregation",
        ),
        (
            ONE.replace("}", ", conditions: {property: direction, operator: eq, value: Inbound}}"),
            "trait 'Total inbounds': conditions.operator: unknown operator 'eq'; use one of: equals",
        ),
        (
            ONE.replace("}", ", conditions: {property: direction, operator: equals}}"),
            "trait 'Total inbounds': conditions: operator 'equals' needs a `value`",
        ),
        (
            ONE.replace("}", ", conditions: {property: d, operator: equals_one_of, value: x}}"),
            "needs a non-empty list `value`",
        ),
        (
            ONE.replace(
                "}", ", conditions: {property: n, operator: equals, value: 5, case_sensitive: false}}"
            ),
            "`case_sensitive: false` applies to string values only",
        ),
        (
            ONE.replace("}", ", property: direction}"),
            "an event_counter counts events and reads no `property`",
        ),
        (
            "traits:\n  - {name: Last agent, type: last, event: E}\n",
            "trait 'Last agent': type 'last' needs `property`",
        ),
        (
            "traits:\n  - {name: Spend, type: aggregation, event: E, property: amount}\n",
            "type 'aggregation' needs `function: sum | avg | min | max`",
        ),
        (ONE.replace("}", ", window: {days: 3, hours: 2}}"), "set exactly one of `days` or `hours`"),
        (ONE.replace("}", ", key: Total}"), "key 'Total' must be snake_case"),
        (ONE.replace("}", ", key: user_id}"), "key 'user_id' is reserved"),
        (ONE.replace("}", ", key: order}"), "key 'order' is an SQL keyword"),
        (
            ONE + "  - {name: Total Inbounds, type: event_counter, event: Other}\n",
            "trait 'Total Inbounds' has key 'total_inbounds', already used by trait 'Total inbounds'",
        ),
        (
            ONE
            + "audiences:\n  - {name: Total inbounds, conditions: {trait: total_inbounds, operator: exists}}\n",
            "audience 'Total inbounds' has key 'total_inbounds', already used by trait 'Total inbounds'",
        ),
        (
            ONE + "audiences:\n  - {name: A, conditions: {trait: nope, operator: exists}}\n",
            "audience 'A' uses trait 'nope', which is not defined; use one of: total_inbounds",
        ),
        (
            ONE + "audiences:\n  - {name: A, conditions: {model: users, column: plan, operator: exists}}\n",
            "audience 'A' uses model 'users', which is not listed under `joins`",
        ),
        (
            ONE + "mappings:\n  - {name: m, table: computed_traits, action: identify, user_id: uid}\n",
            "mapping 'm' uses column 'uid', which traits.computed_traits does not have",
        ),
        (
            ONE + "mappings:\n  - {name: m, table: audiences, action: identify, user_id: user_id}\n",
            "mapping 'm' syncs the audiences table, but no audience is defined",
        ),
        (
            ONE + "mappings:\n  - {name: m, table: computed_traits, action: identify, user_id: user_id, "
            "on_delete: clear_traits}\n",
            "mapping 'm': on_delete: clear_traits is not available for computed traits and audiences",
        ),
        (ONE + "extra: 1\n", "field 'extra': unknown key"),
        ("traits: [\n", "the YAML does not parse"),
    ],
)
def test_bad_definitions_fail_at_load_naming_file_and_trait(tmp_path: Path, yml: str, expected: str) -> None:
    (tmp_path / "computed_traits.yml").write_text(yml)
    with pytest.raises(ConfigError) as err:
        load_traits(tmp_path)
    assert str(tmp_path / "computed_traits.yml") in str(err.value)
    assert expected in str(err.value)


def test_trait_key_clashing_with_a_model_mapping_names_both_files(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(PROJECT_ROOT / "models", models)
    project = load_project(models)
    traits = load_traits(models)
    assert traits is not None
    check_trait_key_clashes(traits, project)  # the shipped files do not clash

    users = models / "users.yml"
    users.write_text(
        users.read_text().replace("      plan: plan\n", "      plan: plan\n      total_inbounds: plan\n")
    )
    with pytest.raises(ConfigError) as err:
        check_trait_key_clashes(traits, load_project(models))
    text = str(err.value)
    assert "trait key 'total_inbounds'" in text and str(users) in text and "computed_traits.yml" in text
    assert "mapping 'computed_traits_identify'" in text and "mapping 'users_identify'" in text


def test_all_columns_model_mappings_clash_through_their_selected_columns(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(PROJECT_ROOT / "models", models)
    (models / "users.sql").write_text("SELECT user_id, email, 0 AS total_outbounds FROM app.users")
    users = models / "users.yml"
    users.write_text(
        "primary_key: user_id\nmappings:\n  - {name: users_identify, action: identify, "
        "user_id: user_id, all_columns_as_traits: true}\n"
    )
    traits = load_traits(models)
    assert traits is not None
    with pytest.raises(ConfigError, match="trait key 'total_outbounds'"):
        check_trait_key_clashes(traits, load_project(models))


def test_explicit_traits_in_a_traits_mapping_are_kept(tmp_path: Path) -> None:
    project = traits_file(
        tmp_path,
        ONE + "mappings:\n  - {name: m, table: computed_traits, action: identify, user_id: user_id,"
        " traits: {inbound_calls: {column: total_inbounds, nulls: skip}}}\n",
    )
    assert project.sync_mappings()[0].mapping.traits == {
        "inbound_calls": TraitField(column="total_inbounds", nulls="skip")
    }
