"""One Dagster schedule per scheduled mapping, from the mapping's ``schedule`` block.

A scheduled run materializes the mapping's sync asset *and what it reads* (its model, or the
computed traits and the models behind them), so a sync never sends stale data because nobody
refreshed the model; source tables are not part of it (they are the user's, or the sample
data that is only ever created once). This matches Segment's Reverse ETL, where every sync runs
its model query first.

Sharded mappings (``shards > 1``) are the exception: their sync is a partitioned asset, one
partition per shard, and Dagster cannot run one model refresh followed by N shard partitions as
a single run. Rebuilding the model in every shard run would race the shards that read it, so a
sharded schedule launches one run per shard that syncs the model as it stands; the model is
refreshed by the source-change sensor (or a schedule of an unsharded mapping of the same model).
"""

from collections.abc import Iterator, Sequence

from dagster import (
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
)

from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.vocabulary import DEFAULT_KEYS, AssetKeys, shard_partitions


def schedule_name(mapping_name: str) -> str:
    return f"{mapping_name}_schedule"


def sync_selection(
    spec: MappingSpec, sources: Sequence[AssetKey], keys: AssetKeys = DEFAULT_KEYS
) -> AssetSelection:
    """The sync asset plus everything upstream of it that can be materialized, except ``sources``
    (the source tables' assets: the user's, or sample data created once). By key, not by group:
    a translator may rename the ``sources`` group."""
    upstream = AssetSelection.assets(keys.sync(spec)).upstream() - AssetSelection.assets(*sources)
    return upstream.materializable()


def _sharded_schedule(
    spec: MappingSpec, cron: str, status: DefaultScheduleStatus, keys: AssetKeys
) -> ScheduleDefinition:
    mapping = spec.mapping
    key = keys.sync(spec)
    partitions = shard_partitions(mapping.shards)
    assert partitions is not None  # only called for shards > 1
    shard_keys = partitions.get_partition_keys()

    def every_shard(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
        tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
        for shard in shard_keys:
            yield RunRequest(run_key=f"{tick}:{shard}", partition_key=shard, asset_selection=[key])

    return ScheduleDefinition(
        name=schedule_name(mapping.name),
        cron_schedule=cron,
        execution_timezone=mapping.schedule.timezone,
        default_status=status,
        target=AssetSelection.assets(key),
        execution_fn=every_shard,
        description=f"Syncs mapping `{mapping.name}` ({spec.source.file}): one run per shard "
        f"({mapping.shards}), from the model as last materialized.",
    )


def build_schedules(
    mappings: Sequence[MappingSpec], sources: Sequence[AssetKey], keys: AssetKeys = DEFAULT_KEYS
) -> list[ScheduleDefinition]:
    """A schedule per mapping that is neither ``manual`` nor ``on_upstream_change`` (an automation
    condition runs those, see ``conditions.py``); running by default iff the mapping is enabled.

    Cron expressions and time zones were validated when the project loaded (``config.py``), so a
    bad schedule is a load error naming the YAML file, not a schedule that silently never runs.
    """
    schedules = []
    for spec in mappings:
        mapping = spec.mapping
        cron = mapping.schedule.cron_schedule
        if cron is None or not mapping.schedule.scheduled:  # manual, or follows its upstream
            continue
        status = DefaultScheduleStatus.RUNNING if mapping.enabled else DefaultScheduleStatus.STOPPED
        if mapping.shards > 1:
            schedules.append(_sharded_schedule(spec, cron, status, keys))
            continue
        schedules.append(
            ScheduleDefinition(
                name=schedule_name(mapping.name),
                cron_schedule=cron,
                execution_timezone=mapping.schedule.timezone,
                default_status=status,
                target=sync_selection(spec, sources, keys),
                description=f"Refreshes `{spec.source.table}` and what it reads, then syncs mapping "
                f"`{mapping.name}` ({spec.source.file}).",
            )
        )
    return schedules
