"""The alert state machine: every health transition, shard combination, cursor and payload."""

import datetime as dt

import pytest

from segment_profiles_pipeline.automation.alerts import (
    Health,
    ShardResult,
    SyncOutcome,
    alert_text,
    classify,
    combine,
    dump_state,
    evaluate,
    load_state,
    slack_payload,
)

T0 = dt.datetime(2026, 11, 2, 8, 0, 0)
ZERO = dict.fromkeys(
    ("extracted", "added", "updated", "deleted", "invalid", "sent", "delivered", "failed"), 0
)


def outcome(
    status: str = "success", rate: float | None = 1.0, error: str | None = None, **counts: int
) -> SyncOutcome:
    return SyncOutcome(
        mapping="users_identify",
        status=status,
        counts={**ZERO, **counts},
        delivery_rate=rate,
        error=error,
        dagster_run_id="run-123",
        finished_at=T0,
        dry_run=False,
    )


OUTCOME_OF = {
    Health.HEALTHY: outcome("success", 1.0),
    Health.DEGRADED: outcome("partial_success", 0.5, failed=5, sent=10, delivered=5),
    Health.FAILED: outcome("failed", 0.0, error="HTTP 401 from Segment: invalid write key"),
}


@pytest.mark.parametrize(
    ("status", "rate", "expected"),
    [
        ("failed", 0.0, Health.FAILED),
        ("failed", None, Health.FAILED),
        ("success", 1.0, Health.HEALTHY),
        ("partial_success", 0.995, Health.HEALTHY),  # above the 99% threshold: within tolerance
        ("partial_success", 0.99, Health.HEALTHY),  # exactly at the threshold
        ("partial_success", 0.98, Health.DEGRADED),
        ("partial_success", None, Health.HEALTHY),  # nothing attempted: no rate to judge
        ("success", 0.5, Health.DEGRADED),
    ],
)
def test_classify(status: str, rate: float | None, expected: Health) -> None:
    assert classify(outcome(status, rate), threshold=0.99) is expected


# previous state (None = never seen) → current health → alert kind (None = no alert)
TRANSITIONS = [
    (None, Health.HEALTHY, None),
    (None, Health.DEGRADED, "degraded"),
    (None, Health.FAILED, "failed"),
    (Health.HEALTHY, Health.HEALTHY, None),
    (Health.HEALTHY, Health.DEGRADED, "degraded"),
    (Health.HEALTHY, Health.FAILED, "failed"),
    (Health.DEGRADED, Health.HEALTHY, "recovered"),
    (Health.DEGRADED, Health.DEGRADED, None),
    (Health.DEGRADED, Health.FAILED, "failed"),
    (Health.FAILED, Health.HEALTHY, "recovered"),
    (Health.FAILED, Health.DEGRADED, "degraded"),
    (Health.FAILED, Health.FAILED, None),
]


@pytest.mark.parametrize(("before", "now", "kind"), TRANSITIONS)
def test_every_transition(before: Health | None, now: Health, kind: str | None) -> None:
    previous = {} if before is None else {"users_identify": before}
    state, alerts = evaluate(previous, {"users_identify": OUTCOME_OF[now]}, {"users_identify": 0.99})
    assert state == {"users_identify": now}
    assert [a.kind for a in alerts] == ([kind] if kind else [])
    if kind:
        assert alerts[0].previous is (before or Health.HEALTHY)
        assert alerts[0].mapping == "users_identify"


def test_a_failing_mapping_alerts_once_then_once_on_recovery() -> None:
    """Tick by tick through the cursor, as the sensor does."""
    ticks = [Health.HEALTHY, Health.FAILED, Health.FAILED, Health.FAILED, Health.HEALTHY, Health.HEALTHY]
    cursor = None
    kinds = []
    for health in ticks:
        state, alerts = evaluate(
            load_state(cursor), {"users_identify": OUTCOME_OF[health]}, {"users_identify": 0.99}
        )
        cursor = dump_state(state)
        kinds.append([a.kind for a in alerts])
    assert kinds == [[], ["failed"], [], [], ["recovered"], []]


def test_mappings_without_a_finished_sync_keep_state_and_removed_ones_are_dropped() -> None:
    previous = {"a": Health.FAILED, "gone": Health.FAILED}
    state, alerts = evaluate(previous, {}, {"a": 0.99, "b": 0.99})
    assert state == {"a": Health.FAILED}  # "b" never synced: no state; "gone" is no longer configured
    assert alerts == []


def test_threshold_is_per_mapping() -> None:
    rate_97 = {"strict": outcome("partial_success", 0.97), "lenient": outcome("partial_success", 0.97)}
    state, alerts = evaluate({}, rate_97, {"strict": 0.99, "lenient": 0.95})
    assert state == {"lenient": Health.HEALTHY, "strict": Health.DEGRADED}
    assert [(a.mapping, a.kind, a.threshold) for a in alerts] == [("strict", "degraded", 0.99)]


@pytest.mark.parametrize(
    "cursor",
    [
        None,
        "",
        "not json",
        '{"version": 99, "health": {}}',
        '{"version": 1, "health": {"a": "bogus"}}',
        "[1, 2]",
    ],
)
def test_unreadable_cursor_is_a_fresh_start(cursor: str | None) -> None:
    assert load_state(cursor) == {}


def test_cursor_round_trip() -> None:
    state = {"b": Health.DEGRADED, "a": Health.FAILED}
    assert dump_state(state) == '{"version": 1, "health": {"a": "failed", "b": "degraded"}}'
    assert load_state(dump_state(state)) == state


def shard(shard: int, shards: int, status: str, rate: float | None, minute: int, **kw) -> ShardResult:
    counts = {**ZERO, "sent": 10, "delivered": round(10 * (rate or 0)), "added": 10}
    return ShardResult(
        mapping="users_identify",
        shard=shard,
        shards=shards,
        status=status,
        finished_at=T0 + dt.timedelta(minutes=minute),
        dagster_run_id=kw.get("run", f"run-{shard}"),
        dry_run=kw.get("dry_run", False),
        counts=counts,
        delivery_rate=rate,
        error=kw.get("error"),
    )


def test_combine_takes_the_worst_current_shard() -> None:
    rows = [
        shard(0, 2, "success", 1.0, minute=5),
        shard(1, 2, "partial_success", 0.5, minute=4, error="HTTP 400: bad trait"),
        shard(2, 3, "failed", 0.0, minute=1, error="old shard, removed since"),
    ]
    combined = combine(rows)
    assert combined is not None
    assert combined.status == "partial_success"
    assert combined.delivery_rate == 0.5
    assert combined.error == "HTTP 400: bad trait"
    assert combined.dagster_run_id == "run-1"
    assert combined.finished_at == T0 + dt.timedelta(minutes=5)
    assert (
        combined.counts["sent"] == 20
        and combined.counts["delivered"] == 15
        and combined.counts["added"] == 20
    )


def test_combine_single_shard_and_empty() -> None:
    assert combine([]) is None
    only = combine([shard(0, 1, "failed", 0.0, minute=0, error="boom", dry_run=True)])
    assert only is not None
    assert (only.status, only.delivery_rate, only.error, only.dry_run) == ("failed", 0.0, "boom", True)


def test_messages_and_slack_payload() -> None:
    _, [failed] = evaluate({}, {"users_identify": OUTCOME_OF[Health.FAILED]}, {"users_identify": 0.99})
    assert (
        alert_text(failed) == "Segment sync `users_identify` failed: HTTP 401 from Segment: invalid write key"
    )
    payload = slack_payload(failed)
    assert set(payload) == {"text", "blocks"}
    assert payload["text"] == ":rotating_light: " + alert_text(failed)
    body = str(payload["blocks"])
    for expected in (
        "`users_identify`",
        "failed (healthy → failed)",
        "0.0% (threshold 99%)",
        "/runs/run-123",
        "HTTP 401 from Segment: invalid write key",
        "sent 0",
        "2026-11-02 08:00:00 UTC",
    ):
        assert expected in body, expected
    assert all(block["type"] in {"section", "context"} for block in payload["blocks"])

    _, [degraded] = evaluate({}, {"users_identify": OUTCOME_OF[Health.DEGRADED]}, {"users_identify": 0.99})
    assert alert_text(degraded) == (
        "Segment sync `users_identify` partially failed: 50.0% delivered, below its 99% threshold (5 failed, 0 invalid)"
    )
    assert "failed 5" in str(slack_payload(degraded)["blocks"])

    _, [recovered] = evaluate(
        {"users_identify": Health.FAILED},
        {"users_identify": OUTCOME_OF[Health.HEALTHY]},
        {"users_identify": 0.99},
    )
    assert (
        alert_text(recovered)
        == "Segment sync `users_identify` recovered (failed before): success, 100.0% delivered"
    )
    assert slack_payload(recovered)["text"].startswith(":white_check_mark: ")
