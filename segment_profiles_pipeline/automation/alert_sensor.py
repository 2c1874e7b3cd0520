"""The alert sensor: reads sync history read-only, keeps health in its cursor, notifies on change.

A sensor (not a run-failure hook) because the truth is ``_segment_profiles.sync_history`` in the
warehouse: it sees partial successes that do not fail a run, syncs started from the CLI or
another Dagster instance, and it survives a lost Dagster instance like the rest of the state.
Delivery: the Dagster log of the tick, plus a Slack-compatible webhook when ``ALERT_WEBHOOK_URL``
is set. A webhook failure is logged and never raised: the tick still advances its state, so a
broken webhook cannot turn into an alert storm later.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    DefaultSensorStatus,
    ResourceParam,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from segment_profiles_pipeline.automation.alerts import (
    COUNTS,
    OVERLAP,
    AlertState,
    Health,
    ShardResult,
    alert_text,
    dump_state,
    evaluate,
    load_state,
    slack_payload,
)
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.settings import env
from segment_profiles_pipeline.state import sync_history
from segment_profiles_pipeline.warehouse.base import Warehouse, WarehouseBusy, WarehouseSession

WEBHOOK_TIMEOUT_S = 10.0
_COLUMNS = (
    "sync_id",
    "mapping",
    "shard",
    "shards",
    "status",
    "finished_at",
    "dagster_run_id",
    "delivery_rate",
    "error",
    *COUNTS,
)
"""The ``sync_history`` columns a ``ShardResult`` is made of."""


def shard_results(rows: Sequence[Mapping[str, Any]]) -> list[ShardResult]:
    return [
        ShardResult(
            mapping=row["mapping"],
            shard=int(row["shard"]),
            shards=int(row["shards"]),
            sync_id=row["sync_id"],
            status=row["status"],
            finished_at=row["finished_at"],
            dagster_run_id=row["dagster_run_id"],
            counts={name: int(row[name] or 0) for name in COUNTS},
            delivery_rate=None if row["delivery_rate"] is None else float(row["delivery_rate"]),
            error=row["error"],
        )
        for row in rows
    ]


def read_new_rows(
    session: WarehouseSession, mappings: Sequence[str], state: AlertState | None
) -> list[ShardResult]:
    """What a tick applies: every real row since the watermark (minus the overlap), or on a
    fresh start the latest row of each shard plus the overlap window before the newest one, so
    the window of the next tick holds no row this one did not read."""
    if state is not None and state.watermark is not None:
        return shard_results(
            sync_history.finished_since(session, mappings, state.watermark - OVERLAP, _COLUMNS)
        )
    latest = shard_results(sync_history.latest_finished(session, mappings, _COLUMNS))
    if not latest:
        return []
    newest = max(r.finished_at for r in latest)
    recent = shard_results(sync_history.finished_since(session, mappings, newest - OVERLAP, _COLUMNS))
    return list({r.sync_id: r for r in latest + recent}.values())


def current_health(session: WarehouseSession, spec: MappingSpec) -> tuple[Health, ShardResult | None]:
    """A mapping's health now, from its latest real row per shard: the state the alert sensor
    reaches after applying every row (only the latest row of a shard decides its health).
    Returns the health and the row that decides it (the worst, newest), or None before any."""
    name = spec.mapping.name
    if not sync_history.exists(session):
        return Health.HEALTHY, None
    rows = shard_results(sync_history.latest_finished(session, [name], _COLUMNS))
    state, _ = evaluate(AlertState(), rows, {name: spec.mapping.delivery_rate_threshold})
    health = state.mapping_health(name)
    shards = state.health.get(name, {})
    deciding = [r for r in rows if shards.get(r.shard) is health]
    return health, max(deciding, key=lambda r: r.finished_at, default=None)


def post_webhook(url: str, payload: Mapping[str, Any], log: logging.Logger) -> bool:
    """POST the alert; log (never raise) a failure. The URL is a secret: it never reaches a log."""
    import httpx  # ~0.1 s: an alert pays it, not each definitions load

    try:
        response = httpx.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        reason = str(exc).replace(url, "<ALERT_WEBHOOK_URL>")
        log.warning(f"alert webhook not delivered ({type(exc).__name__}: {reason}); check ALERT_WEBHOOK_URL.")
        return False
    if not response.is_success:
        log.warning(
            f"alert webhook answered HTTP {response.status_code} ({response.text[:200]!r}); check ALERT_WEBHOOK_URL."
        )
        return False
    return True


def build_alert_sensor(
    mappings: Sequence[MappingSpec],
    *,
    name: str = "sync_alert_sensor",
    minimum_interval_seconds: int = 30,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
) -> SensorDefinition:
    """The sensor watching every mapping's syncs against its ``delivery_rate_threshold``."""
    thresholds = {s.mapping.name: s.mapping.delivery_rate_threshold for s in mappings}

    @sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Alerts when a mapping's sync fails or falls below its delivery-rate threshold, and when it "
        "recovers (on change only, judged on every real sync since the last tick; dry runs ignored). Dagster "
        "log, plus ALERT_WEBHOOK_URL (Slack-compatible) when set.",
    )
    def sync_alerts(
        context: SensorEvaluationContext, warehouse: ResourceParam[Warehouse]
    ) -> SensorResult | SkipReason:
        if not thresholds:
            return SkipReason("the project has no mappings")
        previous = load_state(context.cursor)
        try:
            with warehouse.read_only_session() as session:
                if not sync_history.exists(session):
                    return SkipReason("no sync has run yet (no sync history table)")
                rows = read_new_rows(session, list(thresholds), previous)
        except WarehouseBusy as exc:
            context.log.info(f"skipped: {exc}")
            return SkipReason(f"cannot read the warehouse now, will look again next tick: {exc}")
        state, alerts = evaluate(previous or AlertState(), rows, thresholds)
        url = env("ALERT_WEBHOOK_URL")
        for alert in alerts:
            text = alert_text(alert)
            if alert.kind == "recovered":
                context.log.info(text)
            else:
                context.log.error(text)
            if url:
                post_webhook(url, slack_payload(alert), context.log)
        summary = "; ".join(f"{a.mapping}: {a.kind}" for a in alerts) or "no change in sync health"
        # No run to request: the skip reason is what the tick shows in the UI.
        return SensorResult(cursor=dump_state(state), skip_reason=SkipReason(summary))

    return sync_alerts
