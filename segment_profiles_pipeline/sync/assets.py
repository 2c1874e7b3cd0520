"""One Dagster asset per mapping under ``profile_sync/``, downstream of the table it reads.

What a sync shows in the UI, and why each piece is there:

- metadata: counts, rates, 5 sample payloads and a table of the records this sync failed or
  rejected (read back from ``failed_records``, capped), so nobody needs SQL to see what broke;
- ``delivery_rate`` check: this sync's delivery rate against the mapping's threshold; a dry run
  passes it with a description saying there is no verdict (nothing was sent to judge);
- ``sync_health`` check: the mapping's health as the alert sensor judges it (worst shard,
  latest real sync, dry runs ignored), evaluated from ``sync_history`` at the end of every
  sync, a failed one included, so the alert state is on the asset without any webhook;
- metadata keys are ``segment_profiles/<key>`` (``metadata.namespaced``), apart from Dagster's own;
- a dry run is labelled everywhere: ``segment_profiles/mode`` metadata, both check descriptions, a
  ``segment_profiles/dry_run`` run tag and a warning in the run's log.
"""

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)
from pydantic import Field

from segment_profiles_pipeline.automation.alert_sensor import current_health
from segment_profiles_pipeline.automation.alerts import Health, health_text
from segment_profiles_pipeline.automation.conditions import sync_condition
from segment_profiles_pipeline.errors import SyncError
from segment_profiles_pipeline.metadata import namespaced
from segment_profiles_pipeline.project import MappingSpec, display_path
from segment_profiles_pipeline.state import failed_records, outbox
from segment_profiles_pipeline.sync.engine import SyncReport, run_sync
from segment_profiles_pipeline.sync.readback import build_readback_check
from segment_profiles_pipeline.sync.resources import SegmentDestination
from segment_profiles_pipeline.sync.test_mapping import build_test_mapping_job
from segment_profiles_pipeline.vocabulary import (
    DEFAULT_KEYS,
    POOL,
    AssetKeys,
    mapping_test_job_name,
    shard_partitions,
)
from segment_profiles_pipeline.warehouse.base import Warehouse, WarehouseSession

DELIVERY_RATE = "delivery_rate"
SYNC_HEALTH = "sync_health"
DRY_RUN_TAG = "segment_profiles/dry_run"
FAILED_TABLE_ROWS = 20
"""Failed records listed in a sync's metadata (the event log keeps it forever); the total is exact."""
_REASON_CHARS = 300
_FAILED_SCHEMA = TableSchema(
    columns=[
        TableColumn("record_key", "string"),
        TableColumn("kind", "string"),
        TableColumn("reason_code", "string"),
        TableColumn("reason", "string"),
        TableColumn("attempts", "int"),
        TableColumn("status", "string"),
    ]
)


class SyncRunConfig(Config):
    """Per-run options, set in the launchpad or with ``--config``."""

    reset: bool = Field(
        default=False, description="Segment's *Reset sync*: forget acknowledged records, send all again."
    )
    dry_run: bool = Field(
        default=False,
        description="Plan and build payloads into the outbox, send nothing (even with a write key set).",
    )


def report_metadata(report: SyncReport, endpoint: str) -> dict[str, MetadataValue]:
    counts = {k: MetadataValue.int(v) for k, v in report.counts.items()}
    rate = (
        {}
        if report.dry_run
        else {"delivery_rate": MetadataValue.float(round(report.delivery_rate or 0.0, 6))}
    )
    return {
        "mode": MetadataValue.text("DRY RUN: nothing sent" if report.dry_run else "live"),
        "status": MetadataValue.text(report.status),
        "dry_run": MetadataValue.bool(report.dry_run),
        "sync_id": MetadataValue.text(report.sync_id),
        "shard": MetadataValue.int(report.shard),
        **counts,
        **rate,
        "duration_s": MetadataValue.float(round(report.duration_s, 3)),
        "messages_per_s": MetadataValue.float(round(report.messages_per_s, 1)),
        "destination": MetadataValue.text(
            "none: dry run (payloads in _segment_profiles.outbox)" if report.dry_run else endpoint
        ),
        "first_error": MetadataValue.text(report.first_error or ""),
        "sample_payloads": MetadataValue.json(report.samples),
    }


def failed_records_metadata(session: WarehouseSession, report: SyncReport) -> dict[str, MetadataValue]:
    """The records this sync failed or rejected, as a table (first ``FAILED_TABLE_ROWS``) and a total.

    A real sync reads them from ``failed_records`` (what the next sync retries); a dry run writes
    nothing there, so its rejected rows come from the outbox it just wrote."""
    m, sync = report.mapping, report.sync_id
    if report.dry_run:
        rows = [
            (key, "invalid", code, reason, 0, "rejected (dry run)")
            for key, code, reason in outbox.rejected_of_sync(session, m, sync, FAILED_TABLE_ROWS)
        ]
        total = outbox.rejected_count(session, m, sync)
    else:
        rows = failed_records.of_sync(session, m, sync, FAILED_TABLE_ROWS)
        total = failed_records.count_of_sync(session, m, sync)
    records = [
        TableRecord(
            {
                "record_key": key if key is not None else "(null key)",
                "kind": kind,
                "reason_code": code or "",
                "reason": reason if len(reason) <= _REASON_CHARS else reason[: _REASON_CHARS - 1] + "…",
                "attempts": int(attempts),
                "status": status,
            }
        )
        for key, kind, code, reason, attempts, status in rows
    ]
    return {
        "failed_records": MetadataValue.table(records, schema=_FAILED_SCHEMA),
        "failed_records_total": MetadataValue.int(total),
    }


def summary_line(report: SyncReport) -> str:
    """The one INFO line that ends every sync: what happened, in numbers."""
    c = report.counts
    where = f"'{report.mapping}' shard {report.shard}"
    timing = f"in {report.duration_s:.1f} s ({report.messages_per_s:.1f} msg/s)"
    if report.dry_run:
        return (
            f"DRY RUN of {where} finished {report.status}: planned {c.get('planned', 0)}, sent 0 (nothing sent), "
            f"rejected {c.get('rejected', 0)}, invalid {c.get('invalid', 0)} {timing}"
        )
    return (
        f"sync of {where} finished {report.status}: sent {c.get('sent', 0)}, delivered {c.get('delivered', 0)}, "
        f"failed {c.get('failed', 0)}, rejected {c.get('rejected', 0)}, invalid {c.get('invalid', 0)} {timing}"
    )


def delivery_check(report: SyncReport, threshold: float) -> AssetCheckResult:
    if report.dry_run:
        return AssetCheckResult(
            check_name=DELIVERY_RATE,
            passed=True,
            description=f"dry run: nothing sent, no delivery verdict ({report.counts.get('planned', 0)} payloads "
            "written to _segment_profiles.outbox).",
            metadata={"dry_run": True},
        )
    rate = report.delivery_rate or 0.0
    return AssetCheckResult(
        check_name=DELIVERY_RATE,
        passed=rate >= threshold,
        severity=AssetCheckSeverity.ERROR,
        description=f"{rate:.2%} delivered (threshold {threshold:.0%}); status {report.status}.",
        metadata={
            "delivery_rate": rate,
            "failed": report.counts.get("failed", 0),
            "invalid": report.counts.get("invalid", 0),
        },
    )


def health_check(session: WarehouseSession, spec: MappingSpec, dry_run: bool) -> AssetCheckResult:
    health, latest = current_health(session, spec)
    threshold = spec.mapping.delivery_rate_threshold
    prefix = "dry run, not judged (dry runs never are); " if dry_run else ""
    return AssetCheckResult(
        check_name=SYNC_HEALTH,
        passed=health is Health.HEALTHY,
        severity=AssetCheckSeverity.WARN if health is Health.DEGRADED else AssetCheckSeverity.ERROR,
        description=prefix + health_text(health, latest, threshold),
        metadata={
            "health": health.value,
            "sync_id": latest.sync_id if latest else "",
            "dagster_run_id": (latest.dagster_run_id or "") if latest else "",
        },
    )


def build_sync_asset(spec: MappingSpec, kind: str, keys: AssetKeys = DEFAULT_KEYS) -> AssetsDefinition:
    mapping = spec.mapping
    key = keys.sync(spec)
    partitions = shard_partitions(mapping.shards)
    threshold = mapping.delivery_rate_threshold

    @asset(
        key=key,
        group_name="profile_sync",
        deps=[keys.source_asset(spec.source)],
        kinds={"segment", kind},
        partitions_def=partitions,
        code_version=hashlib.sha256(mapping.model_dump_json().encode()).hexdigest()[:16],
        description=f"Sends `{spec.source.table}` to Segment as {mapping.action} calls (mapping `{mapping.name}` "
        f"in `{display_path(Path(spec.source.file))}`). Only added/updated records; acknowledged state in `_segment_profiles`. "
        f"Test Mapping: job `{mapping_test_job_name(mapping.name)}`.",
        check_specs=[
            AssetCheckSpec(
                DELIVERY_RATE,
                asset=key,
                description=f"At least {threshold:.0%} of the records sent were acknowledged (no verdict for a dry run).",
            ),
            AssetCheckSpec(
                SYNC_HEALTH,
                asset=key,
                description="The mapping's alert state: healthy, degraded (below the threshold) or failed, from the "
                "latest real sync of every shard (what sync_alert_sensor alerts on; dry runs ignored).",
            ),
        ],
        pool=POOL,
        automation_condition=sync_condition(mapping),  # schedule: {on_upstream_change: true}
        metadata=namespaced(
            {"mapping": mapping.name, "action": mapping.action, "source_table": spec.source.table}
        ),
    )
    def sync(
        context: AssetExecutionContext,
        config: SyncRunConfig,
        warehouse: ResourceParam[Warehouse],
        segment: SegmentDestination,
    ) -> Iterator[AssetCheckResult | MaterializeResult]:
        shard = int(context.partition_key.removeprefix("shard_")) if partitions else 0
        dry_run = segment.is_dry_run(config.dry_run)
        if dry_run:
            why = "run config dry_run: true" if config.dry_run else "SEGMENT_WRITE_KEY is not set"
            context.instance.add_run_tags(context.run.run_id, {DRY_RUN_TAG: "true"})
            context.log.warning(
                f"DRY RUN of mapping '{mapping.name}' ({why}): nothing is sent to Segment; the payloads go to "
                "_segment_profiles.outbox and the ledger is not advanced."
            )
        try:
            with segment.delivery(force_dry_run=config.dry_run) as delivery, warehouse.sync_session() as session:
                report = run_sync(
                    session,
                    spec,
                    delivery,
                    shard=shard,
                    dagster_run_id=context.run.run_id,
                    reset=config.reset,
                    log=context.log.info,
                )
                failures = failed_records_metadata(session, report)
                health = health_check(session, spec, dry_run)
        except SyncError:  # a refused sync (empty-model guard, missing table) is health news too
            with warehouse.session() as session:
                yield health_check(session, spec, dry_run)
            raise
        context.log.info(summary_line(report))
        metadata = namespaced({**report_metadata(report, segment.endpoint_url), **failures})
        delivery_result = delivery_check(report, threshold)
        if report.status == "failed":
            yield delivery_result
            yield health
            raise Failure(
                description=f"sync of mapping '{mapping.name}' delivered nothing: {report.first_error}. Failed records "
                "are in _segment_profiles.failed_records and are retried on the next sync.",
                metadata=metadata,
            )
        yield MaterializeResult(metadata=metadata, check_results=[delivery_result, health])

    return sync


def build_defs(mappings: Sequence[MappingSpec], kind: str, keys: AssetKeys = DEFAULT_KEYS) -> Definitions:
    """One sync asset per mapping (with its delivery-rate and health checks), the Profile API
    readback check of every identify mapping, and every mapping's Test Mapping job."""
    return Definitions(
        assets=[build_sync_asset(spec, kind, keys) for spec in mappings],
        asset_checks=[build_readback_check(s, keys) for s in mappings if s.mapping.action == "identify"],
        jobs=[build_test_mapping_job(spec, keys) for spec in mappings],
    )
