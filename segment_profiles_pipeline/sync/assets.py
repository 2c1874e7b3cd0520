"""One Dagster asset per mapping under ``profile_sync/``, downstream of the table it reads."""

import hashlib

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import Field

from segment_profiles_pipeline.models.assets import POOL
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.sync.engine import SyncReport, run_sync
from segment_profiles_pipeline.sync.resources import SegmentDestination
from segment_profiles_pipeline.warehouse.base import Warehouse

DELIVERY_RATE = "delivery_rate"


class SyncRunConfig(Config):
    """Per-run options, set in the launchpad or with ``--config``."""

    reset: bool = Field(
        default=False, description="Segment's *Reset sync*: forget acknowledged records, send all again."
    )
    dry_run: bool = Field(default=False, description="Plan and build payloads into the outbox, send nothing.")


def sync_asset_key(mapping_name: str) -> AssetKey:
    return AssetKey(["profile_sync", mapping_name])


def shard_partitions(shards: int) -> StaticPartitionsDefinition | None:
    return StaticPartitionsDefinition([f"shard_{i}" for i in range(shards)]) if shards > 1 else None


def report_metadata(report: SyncReport, endpoint: str) -> dict[str, MetadataValue]:
    counts = {k: MetadataValue.int(v) for k, v in report.counts.items()}
    return {
        "status": MetadataValue.text(report.status),
        "dry_run": MetadataValue.bool(report.dry_run),
        "sync_id": MetadataValue.text(report.sync_id),
        "shard": MetadataValue.int(report.shard),
        **counts,
        "delivery_rate": MetadataValue.float(round(report.delivery_rate or 0.0, 6)),
        "duration_s": MetadataValue.float(round(report.duration_s, 3)),
        "messages_per_s": MetadataValue.float(round(report.messages_per_s, 1)),
        "destination": MetadataValue.text("dry run (outbox table)" if report.dry_run else endpoint),
        "first_error": MetadataValue.text(report.first_error or ""),
        "sample_payloads": MetadataValue.json(report.samples),
    }


def build_sync_asset(spec: MappingSpec, kind: str) -> AssetsDefinition:
    mapping = spec.mapping
    key = sync_asset_key(mapping.name)
    partitions = shard_partitions(mapping.shards)
    threshold = mapping.delivery_rate_threshold

    @asset(
        key=key,
        group_name="profile_sync",
        deps=[AssetKey(list(spec.source.asset_key))],
        kinds={"segment", kind},
        partitions_def=partitions,
        code_version=hashlib.sha256(mapping.model_dump_json().encode()).hexdigest()[:16],
        description=f"Sends `{spec.source.table}` to Segment as {mapping.action} calls (mapping `{mapping.name}` "
        f"in {spec.source.file}). Only added/updated records; acknowledged state in `_segment_profiles`.",
        check_specs=[
            AssetCheckSpec(
                DELIVERY_RATE,
                asset=key,
                description=f"At least {threshold:.0%} of the records sent were acknowledged.",
            )
        ],
        pool=POOL,
        metadata={"mapping": mapping.name, "action": mapping.action, "source_table": spec.source.table},
    )
    def sync(
        context: AssetExecutionContext,
        config: SyncRunConfig,
        warehouse: ResourceParam[Warehouse],
        segment: SegmentDestination,
    ) -> MaterializeResult:
        shard = int(context.partition_key.removeprefix("shard_")) if partitions else 0
        with segment.sender(force_dry_run=config.dry_run) as sender, warehouse.session() as session:
            report = run_sync(
                session,
                spec,
                sender,
                shard=shard,
                dagster_run_id=context.run.run_id,
                reset=config.reset,
                log=context.log.info,
            )
        metadata = report_metadata(report, segment.endpoint_url)
        if report.status == "failed":
            raise Failure(
                description=f"sync of mapping '{mapping.name}' delivered nothing: {report.first_error}. Failed records "
                "are in _segment_profiles.failed_records and are retried on the next sync.",
                metadata=metadata,
            )
        rate = report.delivery_rate or 0.0
        return MaterializeResult(
            metadata=metadata,
            check_results=[
                AssetCheckResult(
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
            ],
        )

    return sync
