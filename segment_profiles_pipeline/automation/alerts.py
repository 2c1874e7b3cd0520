"""Sync alerts as a pure state machine: sync history rows in, health states and alerts out.

Alerts fire on a *change* of a mapping's health, never on every run: a mapping that keeps
failing alerts once, and once more when it recovers. This is what users of the peers ask for
(alert fatigue is the reason people mute sync alerts). The sensor in ``alert_sensor.py`` does the
I/O (warehouse read, Dagster log, webhook); everything here is deterministic and unit-tested.

Every finished, real (not dry-run) sync-history row is applied in the order the syncs finished,
so a failure followed by a success between two ticks still alerts, then recovers. Health of one
shard, from a row:

- ``failed``: the sync delivered nothing or raised (``status = 'failed'``), or its process died
  and a later sync took it over (``'interrupted'``); any status this code does not know is
  treated the same, so a new status can never hide a problem;
- ``degraded``: it finished but its delivery rate is below the mapping's
  ``delivery_rate_threshold`` (Segment's *partial success*);
- ``healthy``: anything else. A ``partial_success`` at or above the threshold is healthy: the
  threshold is the user's tolerance (rows rejected for a null key do not lower the rate).

A mapping is as bad as its worst current shard (shards above its latest ``shards`` count are
forgotten). A mapping never seen before counts as healthy, so a first sync that fails alerts too.
Dry runs say nothing about delivery and are never applied (the sensor does not even read them).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

COUNTS = ("extracted", "added", "updated", "deleted", "invalid", "rejected", "sent", "delivered", "failed")
"""The count columns of ``_segment_profiles.sync_history``, in the order alerts show them."""

_ERROR_CHARS = 500  # Slack cuts a section at 3000 characters; an error is a hint, not a log.
CURSOR_VERSION = 2
_SEVERITY = {"healthy": 0, "degraded": 1, "failed": 2}


class Health(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILED = "failed"

    @property
    def severity(self) -> int:
        return _SEVERITY[self.value]


@dataclass(frozen=True)
class ShardResult:
    """One finished, real row of ``sync_history``: one shard of one sync of one mapping."""

    mapping: str
    shard: int
    shards: int
    sync_id: str
    status: str
    finished_at: dt.datetime
    dagster_run_id: str | None
    counts: Mapping[str, int]
    delivery_rate: float | None
    error: str | None


@dataclass(frozen=True)
class Alert:
    mapping: str
    kind: Literal["failed", "degraded", "recovered"]
    previous: Health
    health: Health  # the mapping's health after ``outcome`` (its worst shard)
    outcome: ShardResult  # the row that changed it
    threshold: float


@dataclass(frozen=True)
class AlertState:
    """What the sensor remembers between ticks (its cursor).

    ``health`` is per mapping, per shard. ``watermark`` is the latest ``finished_at`` applied and
    ``seen`` the sync ids applied within ``OVERLAP`` of it: rows are read from ``watermark -
    OVERLAP`` on, so a row committed a little after a later-finishing one (parallel shards) is
    still applied once, and none twice."""

    health: dict[str, dict[int, Health]] = field(default_factory=dict)
    watermark: dt.datetime | None = None
    seen: frozenset[str] = frozenset()

    def mapping_health(self, mapping: str) -> Health:
        return worst(self.health.get(mapping, {}).values())


OVERLAP = dt.timedelta(minutes=15)
"""How far before the watermark each tick looks again (commit delays, clocks of parallel runs)."""


def worst(healths: Iterable[Health]) -> Health:
    return max(healths, key=lambda h: h.severity, default=Health.HEALTHY)


def classify(result: ShardResult, threshold: float) -> Health:
    if result.status not in ("success", "partial_success"):
        return Health.FAILED
    if result.delivery_rate is not None and result.delivery_rate < threshold:
        return Health.DEGRADED
    return Health.HEALTHY


def evaluate(
    previous: AlertState, rows: Iterable[ShardResult], thresholds: Mapping[str, float]
) -> tuple[AlertState, list[Alert]]:
    """Apply every new row in the order the syncs finished; an alert for each change of health.

    ``rows`` is everything the tick read: every row finished since ``previous.watermark -
    OVERLAP`` (on a fresh start, the latest row of each shard plus the window before the newest).
    ``thresholds`` lists the configured mappings (name → delivery-rate threshold): state of
    mappings no longer configured is dropped, rows of unknown mappings are ignored, rows already
    in ``previous.seen`` are skipped."""
    rows = sorted(rows, key=lambda r: (r.finished_at, r.mapping, r.shard, r.sync_id))
    health = {m: dict(shards) for m, shards in previous.health.items() if m in thresholds}
    alerts: list[Alert] = []
    for row in rows:
        if row.mapping not in thresholds or row.sync_id in previous.seen:
            continue
        shards = health.setdefault(row.mapping, {})
        before = worst(shards.values())
        shards[row.shard] = classify(row, thresholds[row.mapping])
        for gone in [s for s in shards if s >= row.shards]:
            del shards[gone]
        now = worst(shards.values())
        if now is not before:
            kind: Literal["failed", "degraded", "recovered"] = (
                "recovered" if now is Health.HEALTHY else ("failed" if now is Health.FAILED else "degraded")
            )
            alerts.append(Alert(row.mapping, kind, before, now, row, thresholds[row.mapping]))
    watermark = max([r.finished_at for r in rows] + [w for w in [previous.watermark] if w], default=None)
    # The next window starts at the new watermark minus OVERLAP, inside what this tick read.
    seen = frozenset(r.sync_id for r in rows if watermark and r.finished_at >= watermark - OVERLAP)
    return AlertState(health, watermark, seen), alerts


def dump_state(state: AlertState) -> str:
    return json.dumps(
        {
            "version": CURSOR_VERSION,
            "health": {
                m: {str(s): h.value for s, h in sorted(shards.items())}
                for m, shards in sorted(state.health.items())
            },
            "watermark": state.watermark.isoformat() if state.watermark else None,
            "seen": sorted(state.seen),
        }
    )


def load_state(cursor: str | None) -> AlertState | None:
    """The state kept in the sensor cursor; None (a fresh start) when absent, old or unreadable."""
    if not cursor:
        return None
    try:
        data = json.loads(cursor)
        if data.get("version") != CURSOR_VERSION:
            return None
        return AlertState(
            health={
                str(m): {int(s): Health(h) for s, h in shards.items()} for m, shards in data["health"].items()
            },
            watermark=dt.datetime.fromisoformat(data["watermark"]) if data["watermark"] else None,
            seen=frozenset(str(i) for i in data["seen"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def alert_text(alert: Alert) -> str:
    """One line for the Dagster log and the notification preview."""
    out = alert.outcome
    shard = f" (shard {out.shard} of {out.shards})" if out.shards > 1 else ""
    name = f"Segment sync `{alert.mapping}`{shard}"
    if alert.kind == "failed":
        error = f": {out.error[:_ERROR_CHARS]}" if out.error else ""
        return f"{name} failed{error}"
    if alert.kind == "degraded":
        return (
            f"{name} partially failed: {_rate(out.delivery_rate)} delivered, below its "
            f"{alert.threshold:.0%} threshold ({out.counts.get('failed', 0)} failed, "
            f"{out.counts.get('invalid', 0)} invalid)"
        )
    return f"{name} recovered ({alert.previous.value} before): {out.status}, {_rate(out.delivery_rate)} delivered"


def health_text(health: Health, latest: ShardResult | None, threshold: float) -> str:
    """The ``sync_health`` check's description: the state alerts are judged on, in one line."""
    if latest is None:
        return "no real sync yet"
    when = latest.finished_at.isoformat(sep=" ", timespec="seconds")
    detail = f"latest real sync {latest.status}, {_rate(latest.delivery_rate)} delivered (threshold {threshold:.0%}), finished {when} UTC"
    error = (
        f"; first error: {latest.error[:_ERROR_CHARS]}"
        if latest.error and health is not Health.HEALTHY
        else ""
    )
    return f"{health.value}: {detail}{error}"


def run_path(run_id: str | None) -> str | None:
    """Path of the run page in the Dagster UI (prefix it with your webserver's address)."""
    return f"/runs/{run_id}" if run_id else None


def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message (``text`` for notifications, ``blocks`` for the body).

    Other chat tools with Slack-compatible webhooks (Mattermost, Rocket.Chat, Discord's
    ``/slack`` endpoint) accept the same JSON.
    """
    out = alert.outcome
    icon = {"failed": ":rotating_light:", "degraded": ":warning:", "recovered": ":white_check_mark:"}[
        alert.kind
    ]
    text = f"{icon} {alert_text(alert)}"
    counts = ", ".join(f"{name} {out.counts.get(name, 0)}" for name in COUNTS)
    fields = [
        f"*Mapping*\n`{alert.mapping}`",
        f"*Status*\n{out.status} ({alert.previous.value} → {alert.health.value})",
        f"*Delivery rate*\n{_rate(out.delivery_rate)} (threshold {alert.threshold:.0%})",
        f"*Finished*\n{out.finished_at.isoformat(sep=' ', timespec='seconds')} UTC",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Counts*: {counts}"}},
    ]
    if out.error:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*First error*\n```{out.error[:_ERROR_CHARS]}```"},
            }
        )
    path = run_path(out.dagster_run_id)
    context = [f"Run: `{path}`" if path else "Run: unknown", "Details: `_segment_profiles.sync_history`"]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": c} for c in context]})
    return {"text": text, "blocks": blocks}
