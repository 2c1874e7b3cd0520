"""Sync alerts as a pure state machine: sync history rows in, health states and alerts out.

Alerts fire on a *change* of a mapping's health, never on every run: a mapping that keeps
failing alerts once, and once more when it recovers. This is what users of the peers ask for
(alert fatigue is the reason people mute sync alerts). The sensor in ``alert_sensor.py`` does the
I/O (warehouse read, Dagster log, webhook); everything here is deterministic and unit-tested.

Health of a mapping, from its latest finished sync:

- ``failed``: the sync delivered nothing (``sync_history.status = 'failed'``);
- ``degraded``: it finished but its delivery rate is below the mapping's
  ``delivery_rate_threshold`` (Segment's *partial success*);
- ``healthy``: anything else. A ``partial_success`` at or above the threshold is healthy: the
  threshold is the user's tolerance (rows rejected for a null key do not lower the rate).

A mapping never seen before counts as healthy, so a first sync that fails alerts too.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

COUNTS = ("extracted", "added", "updated", "deleted", "invalid", "sent", "delivered", "failed")
"""The count columns of ``_segment_profiles.sync_history``, in the order alerts show them."""

_SEVERITY = {"success": 0, "partial_success": 1, "failed": 2}
_ERROR_CHARS = 500  # Slack cuts a section at 3000 characters; an error is a hint, not a log.
CURSOR_VERSION = 1


class Health(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILED = "failed"


@dataclass(frozen=True)
class ShardResult:
    """One finished row of ``sync_history``: one shard of one sync of one mapping."""

    mapping: str
    shard: int
    shards: int
    status: str
    finished_at: dt.datetime
    dagster_run_id: str | None
    dry_run: bool
    counts: Mapping[str, int]
    delivery_rate: float | None
    error: str | None


@dataclass(frozen=True)
class SyncOutcome:
    """A mapping's latest finished sync, its shards combined."""

    mapping: str
    status: str
    counts: Mapping[str, int]
    delivery_rate: float | None
    error: str | None
    dagster_run_id: str | None
    finished_at: dt.datetime
    dry_run: bool


@dataclass(frozen=True)
class Alert:
    mapping: str
    kind: Literal["failed", "degraded", "recovered"]
    previous: Health
    outcome: SyncOutcome
    threshold: float


def combine(rows: Sequence[ShardResult]) -> SyncOutcome | None:
    """Combine the latest finished row of each shard of one mapping into one outcome.

    Shards are synced by separate runs, so "the latest sync" is the latest row of every shard
    that still exists (the newest row tells the current shard count; rows of shards removed by
    lowering ``shards`` are ignored). The mapping is as bad as its worst shard: status and
    delivery rate are the worst ones, so one shard at 50% is not hidden by others at 100%.
    """
    if not rows:
        return None
    newest = max(rows, key=lambda r: (r.finished_at, r.shard))
    current = sorted((r for r in rows if r.shard < newest.shards), key=lambda r: r.shard)
    worst = max(current, key=lambda r: (_SEVERITY.get(r.status, 2), -r.shard))
    rates = [r.delivery_rate for r in current if r.delivery_rate is not None]
    errors = [r.error for r in current if r.error and r.status == worst.status]
    return SyncOutcome(
        mapping=newest.mapping,
        status=worst.status,
        counts={name: sum(int(r.counts.get(name) or 0) for r in current) for name in COUNTS},
        delivery_rate=min(rates) if rates else None,
        error=errors[0] if errors else None,
        dagster_run_id=worst.dagster_run_id,
        finished_at=newest.finished_at,
        dry_run=any(r.dry_run for r in current),
    )


def classify(outcome: SyncOutcome, threshold: float) -> Health:
    if outcome.status == "failed":
        return Health.FAILED
    if outcome.delivery_rate is not None and outcome.delivery_rate < threshold:
        return Health.DEGRADED
    return Health.HEALTHY


def evaluate(
    previous: Mapping[str, Health], outcomes: Mapping[str, SyncOutcome], thresholds: Mapping[str, float]
) -> tuple[dict[str, Health], list[Alert]]:
    """The next health state of every configured mapping, and the alerts for the changes.

    ``thresholds`` lists the configured mappings (name → delivery-rate threshold); state of
    mappings no longer configured is dropped, and a mapping without a finished sync keeps its
    state (a sync still running says nothing yet).
    """
    state: dict[str, Health] = {}
    alerts: list[Alert] = []
    for mapping in sorted(thresholds):
        outcome = outcomes.get(mapping)
        before = previous.get(mapping, Health.HEALTHY)
        if outcome is None:
            if mapping in previous:
                state[mapping] = before
            continue
        now = classify(outcome, thresholds[mapping])
        state[mapping] = now
        if now is not before:
            kind: Literal["failed", "degraded", "recovered"] = (
                "recovered" if now is Health.HEALTHY else now.value
            )
            alerts.append(Alert(mapping, kind, before, outcome, thresholds[mapping]))
    return state, alerts


def dump_state(state: Mapping[str, Health]) -> str:
    return json.dumps({"version": CURSOR_VERSION, "health": {k: v.value for k, v in sorted(state.items())}})


def load_state(cursor: str | None) -> dict[str, Health]:
    """The health state kept in the sensor cursor; an absent or unreadable cursor is a fresh start."""
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
        return (
            {str(k): Health(v) for k, v in data["health"].items()}
            if data.get("version") == CURSOR_VERSION
            else {}
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def alert_text(alert: Alert) -> str:
    """One line for the Dagster log and the notification preview."""
    out = alert.outcome
    name = f"Segment sync `{alert.mapping}`" + (" (dry run)" if out.dry_run else "")
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
        f"*Status*\n{out.status} ({alert.previous.value} → {classify(out, alert.threshold).value})",
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
