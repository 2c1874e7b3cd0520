"""Declarative automation for mappings that follow their table: ``schedule: {on_upstream_change: true}``.

A schedule runs a mapping at set times and refreshes what it reads first; a mapping that follows
its upstream does the opposite: whoever materializes the table's asset (a dbt run, the
source-change sensor refreshing a model, a person) decides when, and the sync comes after. That
is what Dagster's declarative automation expresses on the asset itself, with no polling code:

- alone, ``AutomationCondition.eager()``: sync after every update of the upstream asset (and once
  when the sync has never run), never while the upstream is missing or being materialized, and
  not again for an update made by a run that synced too;
- with ``interval``/``cron``/``days``+``hours``, ``AutomationCondition.on_cron``: at most once per
  tick, as soon as the upstream has updated since that tick.

A disabled mapping gets no condition (nothing would turn it on per asset, as a stopped schedule
can be). The conditions are evaluated by ``sync_automation_sensor`` (``automation_sensor.py``).
"""

from __future__ import annotations

from dagster import AutomationCondition

from segment_profiles_pipeline.config import MappingConfig


def sync_condition(mapping: MappingConfig) -> AutomationCondition | None:
    """The automation condition of a mapping's sync asset, or None when it does not follow its upstream."""
    schedule = mapping.schedule
    if not schedule.on_upstream_change or not mapping.enabled:
        return None
    cron = schedule.cron_schedule
    if cron is None:
        return AutomationCondition.eager()
    return AutomationCondition.on_cron(cron, schedule.timezone)
