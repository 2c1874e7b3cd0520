"""The translator hook (groups, owners, tags, freshness of the generated assets) and the freshness
policies it derives from each mapping's schedule."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dagster import AssetKey, AssetSpec, FreshnessPolicy

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.translator import SegmentProfilesTranslator, longest_gap, schedule_freshness

SYNC = AssetKey(["profile_sync", "users_identify"])


def _mapping(**schedule: object) -> MappingConfig:
    return MappingConfig.model_validate(
        {"name": "m", "action": "identify", "user_id": "user_id", "traits": {"email": "email"}, **schedule}
    )


@pytest.mark.parametrize(
    ("cron", "timezone", "gap"),
    [
        ("0 * * * *", "UTC", dt.timedelta(hours=1)),
        ("*/15 * * * *", "UTC", dt.timedelta(minutes=15)),
        ("0 6 * * 1,5", "UTC", dt.timedelta(days=4)),  # Mon → Fri is the longer of the two gaps
        ("0 6,18 * * 1,5", "Europe/Berlin", dt.timedelta(days=3, hours=12)),  # Mon 18:00 → Fri 06:00
        ("0 0 31 * *", "UTC", dt.timedelta(days=61)),  # Aug 31 → Oct 31
    ],
)
def test_longest_gap_between_ticks(cron: str, timezone: str, gap: dt.timedelta) -> None:
    assert longest_gap(cron, timezone) == gap


def test_a_scheduled_mapping_warns_after_one_gap_and_fails_after_two() -> None:
    hourly = schedule_freshness(_mapping(schedule={"interval": "1h", "timezone": "Europe/Berlin"}))
    assert hourly == FreshnessPolicy.time_window(
        fail_window=dt.timedelta(hours=2), warn_window=dt.timedelta(hours=1)
    )
    twice_a_week = schedule_freshness(_mapping(schedule={"days": ["mon", "fri"], "hours": [6]}))
    assert twice_a_week == FreshnessPolicy.time_window(
        fail_window=dt.timedelta(days=8), warn_window=dt.timedelta(days=4)
    )


def test_manual_and_disabled_mappings_promise_no_freshness() -> None:
    assert schedule_freshness(_mapping(schedule={"manual": True})) is None
    assert schedule_freshness(_mapping(schedule={"interval": "1h"}, enabled=False)) is None


def test_the_default_translator_keeps_the_project_and_adds_freshness_to_scheduled_syncs(
    sample_models: Path, settings_for, build
) -> None:
    graph = build(settings_for(sample_models)).resolve_asset_graph()
    assert graph.get(SYNC).freshness_policy == FreshnessPolicy.time_window(
        fail_window=dt.timedelta(hours=2), warn_window=dt.timedelta(hours=1)
    )  # models/users.yml: users_identify, interval 1h
    assert graph.get(AssetKey("users")).freshness_policy is None
    assert (
        graph.get(SYNC).group_name == "profile_sync" and graph.get(AssetKey("users")).group_name == "models"
    )
    assert graph.get(SYNC).owners == []


class CrmTranslator(SegmentProfilesTranslator):
    """What a user writes: owners and a tag on every sync, models in their own group, no freshness."""

    def get_asset_spec(self, default: AssetSpec, mapping: MappingSpec | None) -> AssetSpec:
        spec = super().get_asset_spec(default, mapping)
        if mapping is not None:
            return spec.replace_attributes(
                owners=["team:crm"], tags={**spec.tags, "segment_action": mapping.mapping.action}
            )
        if spec.group_name == "models":
            return spec.replace_attributes(group_name="crm_models")
        return spec

    def get_freshness_policy(self, mapping: MappingSpec) -> FreshnessPolicy | None:
        return None


def test_a_subclass_sets_owners_tags_groups_and_freshness(sample_models: Path, settings_for) -> None:
    from segment_profiles_pipeline.definitions import build_definitions

    defs = build_definitions(settings_for(sample_models), translator=CrmTranslator())
    graph = defs.resolve_asset_graph()
    sync = graph.get(SYNC)
    assert sync.owners == ["team:crm"] and sync.tags["segment_action"] == "identify"
    assert sync.freshness_policy is None
    assert graph.get(AssetKey("users")).group_name == "crm_models"
    assert (
        graph.get(AssetKey(["profile_sync", "account_memberships_group"])).tags["segment_action"] == "group"
    )
    # schedules, sensors and jobs still resolve against the translated assets
    repository = defs.get_repository_def()
    assert {s.name for s in repository.schedule_defs} >= {"users_identify_schedule"}


class RenamingTranslator(SegmentProfilesTranslator):
    def get_asset_spec(self, default: AssetSpec, mapping: MappingSpec | None) -> AssetSpec:
        return default.replace_attributes(key=default.key.with_prefix("crm")) if mapping else default


def test_a_translator_that_changes_a_key_fails_the_load_with_the_fix(
    sample_models: Path, settings_for
) -> None:
    from segment_profiles_pipeline.definitions import build_definitions

    with pytest.raises(
        ConfigError, match=r"translator: RenamingTranslator.get_asset_spec changed the key of "
    ):
        build_definitions(settings_for(sample_models), translator=RenamingTranslator())
