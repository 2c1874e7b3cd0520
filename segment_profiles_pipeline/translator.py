"""How the generated assets look in Dagster, as one class a user can subclass.

Like ``dagster_dbt.DagsterDbtTranslator``: every asset the project generates (sources, models,
computed traits, identity, predictions, Profiles Sync tables, one sync per mapping) passes
through the translator once, when the definitions are built:

- ``get_asset_key(default_key, mapping)`` decides its key, *before* anything is built, so the
  deps between generated assets, their checks, the Test Mapping jobs, schedules, sensors and
  their run requests all use the new key (``vocabulary.AssetKeys``);
- ``get_asset_spec(spec, mapping)`` then sets groups, owners, tags, descriptions, metadata or
  freshness policies of the spec (which already has its final key).

``mapping`` is set for the sync asset of a mapping. For example::

    class MyTranslator(SegmentProfilesTranslator):
        def get_asset_key(self, default, mapping):
            return default.with_prefix("segment")

        def get_asset_spec(self, default, mapping):
            spec = super().get_asset_spec(default, mapping)
            return spec.replace_attributes(owners=["team:crm"]) if mapping else spec

and passes it to ``build_definitions(settings, translator=MyTranslator())`` or names it in the
component's YAML (``translator: my_package.module.MyTranslator``).

Keys of assets another project defines (``upstream.yml``, a dbt model) are never translated:
they are final as written. The warehouse state (ledger, history, failed records) is keyed by the
mapping's name, not the asset key, so changing a translator never resets a sync. Two generated
assets given the same key fail the load, naming both; ``get_asset_spec`` changing a key fails
too (the key must be decided before the schedules and sensors are built).

The default translator returns the project's specs as they are, plus a freshness policy on the
sync of every enabled, scheduled mapping, derived from its schedule (``schedule_freshness``).
"""

from __future__ import annotations

import datetime as dt
import functools
import warnings
import zoneinfo
from collections.abc import Mapping

from croniter import croniter
from dagster import AssetKey, AssetSpec, Definitions, FreshnessPolicy, PreviewWarning

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.vocabulary import AssetKeys

GAP_HORIZON = dt.timedelta(days=400)
GAP_TICKS = 2000
"""Ticks looked at for a schedule's longest gap: a year and a bit covers every cron pattern
(monthly and weekday rules repeat within it); 2,000 ticks bound a minute-level cron's cost."""
REFERENCE = dt.datetime(2026, 1, 1)
"""Gaps are measured from a fixed date, so the policy (part of the asset's definition) is the
same on every load."""


@functools.cache
def longest_gap(cron: str, timezone: str) -> dt.timedelta:
    """The longest real time between two consecutive ticks of ``cron`` (``0 6 * * 1,5``: Mon→Fri,
    4 days), in real time (UTC), not wall-clock time.

    Cached per process: it depends only on its arguments (gaps are measured from ``REFERENCE``),
    and one ``dagster asset materialize`` builds the definitions several times; an hourly
    schedule's 2,000 ticks cost ~0.25 s per build."""
    start = REFERENCE.replace(tzinfo=zoneinfo.ZoneInfo(timezone))
    ticks = croniter(cron, start)
    previous = ticks.get_next(dt.datetime).astimezone(dt.UTC)
    longest = dt.timedelta(0)
    for _ in range(GAP_TICKS):
        tick = ticks.get_next(dt.datetime).astimezone(dt.UTC)
        longest = max(longest, tick - previous)
        if tick - start > GAP_HORIZON:
            break
        previous = tick
    return longest


def schedule_freshness(mapping: MappingConfig) -> FreshnessPolicy | None:
    """From the mapping's schedule: *warn* when no sync finished within the longest gap between two
    ticks (the sync due at the last tick is late), *fail* when none finished within twice that
    (a scheduled sync was missed or failed).

    A time window rather than ``FreshnessPolicy.cron`` with the schedule as deadline: the run of
    a tick finishes after that tick, so every deadline would pass before its own sync, and Dagster
    bounds a cron policy's window by the *shortest* gap, which would flag a Mon/Fri schedule every
    Friday. Manual and disabled mappings (whose schedule is stopped) get none: nothing promises a
    time. Those that sync on upstream change have no cron either.
    """
    cron = mapping.schedule.cron_schedule
    if cron is None or not mapping.enabled:
        return None
    gap = longest_gap(cron, mapping.schedule.timezone)
    return FreshnessPolicy.time_window(fail_window=2 * gap, warn_window=gap)


class SegmentProfilesTranslator:
    """Default look of the generated assets; subclass and override ``get_asset_key`` and
    ``get_asset_spec``."""

    def get_asset_key(self, default: AssetKey, mapping: MappingSpec | None) -> AssetKey:
        """The key of one generated asset, from its default key; ``mapping`` is set for a sync asset.
        Called once per asset; must give distinct assets distinct keys."""
        return default

    def asset_keys(self) -> AssetKeys:
        """The keys of one build, through ``get_asset_key``."""
        return AssetKeys(self.get_asset_key, owner=type(self).__name__)

    def get_asset_spec(self, default: AssetSpec, mapping: MappingSpec | None) -> AssetSpec:
        """The spec of one generated asset; ``mapping`` is set for the sync asset of a mapping."""
        if mapping is None:
            return default
        policy = self.get_freshness_policy(mapping)
        return default if policy is None else default.replace_attributes(freshness_policy=policy)

    def get_freshness_policy(self, mapping: MappingSpec) -> FreshnessPolicy | None:
        return schedule_freshness(mapping.mapping)

    def apply(self, defs: Definitions, syncs: Mapping[AssetKey, MappingSpec]) -> Definitions:
        """``defs`` (built with ``asset_keys()``) with every asset spec translated; ``syncs`` maps
        the (translated) sync asset keys to their mappings."""

        def translate(spec: AssetSpec) -> AssetSpec:
            translated = self.get_asset_spec(spec, syncs.get(spec.key))
            if translated.key != spec.key:
                raise ConfigError(
                    f"{type(self).__name__}.get_asset_spec changed the key of {spec.key.to_user_string()} to "
                    f"{translated.key.to_user_string()}; the schedules, sensors and checks were built with the key.",
                    field="translator",
                    fix=f"return the key from {type(self).__name__}.get_asset_key instead; it is applied everywhere.",
                )
            return translated

        with warnings.catch_warnings():  # public map_asset_specs calls a preview helper: noise on every load
            warnings.simplefilter("ignore", PreviewWarning)
            return defs.map_asset_specs(func=translate)
