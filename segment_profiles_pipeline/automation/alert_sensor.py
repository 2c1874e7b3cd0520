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

import httpx
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
    ShardResult,
    alert_text,
    combine,
    dump_state,
    evaluate,
    load_state,
    slack_payload,
)
from segment_profiles_pipeline.project import MappingSpec
from segment_profiles_pipeline.settings import env
from segment_profiles_pipeline.sync.state import HISTORY, STATE_SCHEMA
from segment_profiles_pipeline.warehouse.base import Warehouse, WarehouseBusy, in_list

WEBHOOK_TIMEOUT_S = 10.0


def latest_rows_sql(mappings: Sequence[str]) -> str:
    """The latest finished row of every shard of every mapping in ``mappings``."""
    columns = (
        "mapping, shard, shards, status, finished_at, dagster_run_id, dry_run, delivery_rate, error, "
        + ", ".join(COUNTS)
    )
    return (
        f"SELECT {columns} FROM (SELECT {columns}, row_number() OVER "
        "(PARTITION BY mapping, shard ORDER BY finished_at DESC, started_at DESC) AS rn "
        f"FROM {HISTORY} WHERE status <> 'running' AND finished_at IS NOT NULL AND mapping IN {in_list(sorted(mappings))}"
        ") AS latest WHERE rn = 1"
    )


def shard_results(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[ShardResult]]:
    out: dict[str, list[ShardResult]] = {}
    for row in rows:
        out.setdefault(row["mapping"], []).append(
            ShardResult(
                mapping=row["mapping"],
                shard=int(row["shard"]),
                shards=int(row["shards"]),
                status=row["status"],
                finished_at=row["finished_at"],
                dagster_run_id=row["dagster_run_id"],
                dry_run=bool(row["dry_run"]),
                counts={name: int(row[name] or 0) for name in COUNTS},
                delivery_rate=None if row["delivery_rate"] is None else float(row["delivery_rate"]),
                error=row["error"],
            )
        )
    return out


def post_webhook(url: str, payload: Mapping[str, Any], log: logging.Logger) -> bool:
    """POST the alert; log (never raise) a failure. The URL is a secret: it never reaches a log."""
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
    """The sensor watching every mapping's latest sync against its ``delivery_rate_threshold``."""
    thresholds = {s.mapping.name: s.mapping.delivery_rate_threshold for s in mappings}

    @sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Alerts when a mapping's latest sync fails or falls below its delivery-rate threshold, and "
        "when it recovers (on change only). Dagster log, plus ALERT_WEBHOOK_URL (Slack-compatible) when set.",
    )
    def sync_alerts(
        context: SensorEvaluationContext, warehouse: ResourceParam[Warehouse]
    ) -> SensorResult | SkipReason:
        if not thresholds:
            return SkipReason("the project has no mappings")
        try:
            with warehouse.read_only_session() as session:
                if not session.table_exists(STATE_SCHEMA, HISTORY.split(".")[1]):
                    return SkipReason("no sync has run yet (no sync history table)")
                rows = session.query(latest_rows_sql(list(thresholds))).dicts()
        except WarehouseBusy as exc:
            context.log.info(f"skipped: {exc}")
            return SkipReason(f"cannot read the warehouse now, will look again next tick: {exc}")
        outcomes = {m: o for m, results in shard_results(rows).items() if (o := combine(results)) is not None}
        state, alerts = evaluate(load_state(context.cursor), outcomes, thresholds)
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
