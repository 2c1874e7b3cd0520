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
import itertools
import warnings
import zoneinfo
from collections.abc import Iterator, Mapping

from croniter import croniter
from dagster import AssetKey, AssetSpec, Definitions, FreshnessPolicy, PreviewWarning

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.vocabulary import AssetKeys

GAP_HORIZON = dt.timedelta(days=400)
"""How far from ``REFERENCE`` the gaps are looked at: a year and a bit covers every cron pattern
bar leap days (month lengths, weekdays and both DST changes repeat within it)."""
REFERENCE = dt.date(2026, 1, 1)
"""Gaps are measured from a fixed date, so the policy (part of the asset's definition) is the
same on every load."""
_DAY = dt.timedelta(days=1)


@functools.cache
def longest_gap(cron: str, timezone: str) -> dt.timedelta:
    """The longest real time between two consecutive ticks of ``cron`` (``0 6 * * 1,5``: Mon→Fri,
    4 days), in real time (UTC), not wall-clock time, over the ticks of the matching days from
    ``REFERENCE`` through the first one past ``GAP_HORIZON``.

    Computed from the cron's structure instead of walking its ticks (an hourly schedule has
    ~9,600 in the horizon, ~0.1 ms each through croniter): every matching day has the same
    wall-clock times, so between two days that have no DST change only the day's first and last
    tick matter, and the within-day gaps are those of the wall-clock times. Only the days of a DST
    change get all their ticks placed, by Dagster's rules (``_instants``). Cached per process:
    one ``dagster asset materialize`` builds the definitions several times."""
    fields, *_ = croniter.expand(cron)
    if len(fields) != 5:
        raise ConfigError(
            f"'{cron}' has {len(fields)} fields; a Dagster schedule takes five (minute hour day month weekday).",
            field="schedule.cron",
            fix="remove the seconds or year field.",
        )
    minutes = range(60) if fields[0] == ["*"] else fields[0]
    hours = range(24) if fields[1] == ["*"] else fields[1]
    times = sorted(dt.time(int(h), int(m)) for h in hours for m in minutes)
    every_hour = fields[1] == ["*"]  # Dagster's test for its DST rules (``cron_string_repeats_every_hour``)
    zone = zoneinfo.ZoneInfo(timezone)
    within = max((_minutes(b) - _minutes(a) for a, b in itertools.pairwise(times)), default=0)
    horizon = REFERENCE + GAP_HORIZON
    longest = dt.timedelta(0)
    previous: dt.datetime | None = None
    for day in _matching_days(cron, every_day=all(field == ["*"] for field in fields[2:])):
        if _offset_changes(day, zone):
            ticks = [t for time in times for t in _instants(dt.datetime.combine(day, time, zone), every_hour)]
            ticks = sorted(set(ticks))
            longest = max([longest, *(b - a for a, b in itertools.pairwise(ticks))])
        else:
            ticks = [dt.datetime.combine(day, times[i], zone).astimezone(dt.UTC) for i in (0, -1)]
            longest = max(longest, dt.timedelta(minutes=within))
        if previous is not None:
            longest = max(longest, ticks[0] - previous)
            if day > horizon:
                break
        previous = ticks[-1]
    return longest


def _minutes(time: dt.time) -> int:
    return time.hour * 60 + time.minute


def _matching_days(cron: str, every_day: bool) -> Iterator[dt.date]:
    """The days ``cron`` ticks on, from ``REFERENCE`` on: each one when its day, month and weekday
    fields are ``*`` (``every_day``), otherwise by croniter's own day rules (day-of-month *or*
    weekday, ``L``, ``#``, ``W``, ``@weekly``), one tick per day: each walk resumes at the day's
    last minute."""
    if every_day:
        day = REFERENCE
        while True:
            yield day
            day += _DAY
    day = REFERENCE - _DAY
    ticks = croniter(cron)
    while True:
        ticks.set_current(dt.datetime.combine(day, dt.time(23, 59)))
        day = ticks.get_next(dt.datetime).date()
        yield day


def _offset_changes(day: dt.date, zone: zoneinfo.ZoneInfo) -> bool:
    """Whether the zone's UTC offset changes during ``day`` (or at either midnight), when some of
    the day's wall-clock times do not exist or exist twice."""
    midnights = (dt.datetime.combine(d, dt.time(fold=f), zone) for d in (day, day + _DAY) for f in (0, 1))
    return len({m.utcoffset() for m in midnights}) > 1


def _instants(wall: dt.datetime, every_hour: bool) -> list[dt.datetime]:
    """When Dagster runs a tick at local time ``wall`` (its documented DST rules): a time the
    clocks skip runs when they jump, a time they repeat runs at its later occurrence; for a
    schedule whose hour field is ``*``, a skipped time does not run and a repeated one runs twice."""
    first, second = (wall.replace(fold=f).astimezone(dt.UTC) for f in (0, 1))
    if first == second:
        return [first]
    if first < second:  # repeated
        return [first, second] if every_hour else [second]
    if every_hour:  # skipped: fold 0 reads it with the offset before the jump, fold 1 with the one after
        return []
    before = wall.utcoffset()  # fold 0: the offset before the jump
    low, high = int(second.timestamp()), int(first.timestamp())  # the jump is in (low, high]
    while high - low > 1:
        middle = (low + high) // 2
        if dt.datetime.fromtimestamp(middle, wall.tzinfo).utcoffset() == before:
            low = middle
        else:
            high = middle
    return [dt.datetime.fromtimestamp(high, dt.UTC)]


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
