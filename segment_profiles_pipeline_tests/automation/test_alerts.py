"""The alert state machine: every health transition, shard combination, ordering, cursor and payload."""

import datetime as dt

import pytest

from segment_profiles_pipeline.automation.alerts import (
    OVERLAP,
    AlertState,
    Health,
    ShardResult,
    alert_text,
    classify,
    dump_state,
    evaluate,
    health_text,
    load_state,
    slack_payload,
)

T0 = dt.datetime(2026, 11, 2, 8, 0, 0)
ZERO = dict.fromkeys(
    ("extracted", "added", "updated", "deleted", "invalid", "sent", "delivered", "failed"), 0
)
THRESHOLDS = {"users_identify": 0.99}
_ids = iter(range(10**6))


def row(
    status: str = "success",
    rate: float | None = 1.0,
    error: str | None = None,
    *,
    minute: int = 0,
    shard: int = 0,
    shards: int = 1,
    mapping: str = "users_identify",
    **counts: int,
) -> ShardResult:
    return ShardResult(
        mapping=mapping,
        shard=shard,
        shards=shards,
        sync_id=f"sync-{next(_ids)}",
        status=status,
        finished_at=T0 + dt.timedelta(minutes=minute),
        dagster_run_id="run-123",
        counts={**ZERO, **counts},
        delivery_rate=rate,
        error=error,
    )


ROW_OF = {
    Health.HEALTHY: lambda: row("success", 1.0),
    Health.DEGRADED: lambda: row("partial_success", 0.5, failed=5, sent=10, delivered=5),
    Health.FAILED: lambda: row("failed", 0.0, error="HTTP 401 from Segment: invalid write key"),
}


def state_of(health: dict[str, Health]) -> AlertState:
    return AlertState(health={m: {0: h} for m, h in health.items()})


@pytest.mark.parametrize(
    ("status", "rate", "expected"),
    [
        ("failed", 0.0, Health.FAILED),
        ("failed", None, Health.FAILED),
        ("interrupted", None, Health.FAILED),  # a dead run, taken over by a later sync
        ("some_new_status", 1.0, Health.FAILED),  # unknown statuses never hide a problem
        ("success", 1.0, Health.HEALTHY),
        ("partial_success", 0.995, Health.HEALTHY),  # above the 99% threshold: within tolerance
        ("partial_success", 0.99, Health.HEALTHY),  # exactly at the threshold
        ("partial_success", 0.98, Health.DEGRADED),
        ("partial_success", None, Health.HEALTHY),  # nothing attempted: no rate to judge
        ("success", 0.5, Health.DEGRADED),
    ],
)
def test_classify(status: str, rate: float | None, expected: Health) -> None:
    assert classify(row(status, rate), threshold=0.99) is expected


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
    previous = state_of({} if before is None else {"users_identify": before})
    state, alerts = evaluate(previous, [ROW_OF[now]()], THRESHOLDS)
    assert state.mapping_health("users_identify") is now
    assert [a.kind for a in alerts] == ([kind] if kind else [])
    if kind:
        assert alerts[0].previous is (before or Health.HEALTHY)
        assert alerts[0].health is now
        assert alerts[0].mapping == "users_identify"


def test_a_failure_and_a_recovery_between_two_ticks_both_alert_in_order() -> None:
    rows = [
        row("success", minute=3),
        row("failed", 0.0, error="HTTP 401", minute=1),
        row("success", minute=2),
    ]
    state, alerts = evaluate(state_of({"users_identify": Health.HEALTHY}), rows, THRESHOLDS)
    assert [(a.kind, a.outcome.finished_at.minute) for a in alerts] == [("failed", 1), ("recovered", 2)]
    assert state.mapping_health("users_identify") is Health.HEALTHY
    assert state.watermark == T0 + dt.timedelta(minutes=3)


def test_rows_already_seen_are_not_applied_twice() -> None:
    failure = row("failed", 0.0, minute=1)
    state, alerts = evaluate(AlertState(), [failure], THRESHOLDS)
    assert [a.kind for a in alerts] == ["failed"] and failure.sync_id in state.seen
    # the next tick reads the overlap window again: the same row must not alert again
    state, alerts = evaluate(load_state(dump_state(state)), [failure], THRESHOLDS)
    assert alerts == [] and state.mapping_health("users_identify") is Health.FAILED


def test_a_late_committed_row_inside_the_overlap_is_still_applied() -> None:
    first, _ = evaluate(AlertState(), [row("success", minute=10)], THRESHOLDS)
    late = row("failed", 0.0, minute=5, shard=0)  # finished earlier, committed after the tick
    state, alerts = evaluate(first, [late], THRESHOLDS)
    assert [a.kind for a in alerts] == ["failed"]
    assert state.watermark == T0 + dt.timedelta(minutes=10)  # the watermark never goes back
    # the seen window only keeps ids within OVERLAP of the watermark
    far = row("success", minute=10 + int(OVERLAP.total_seconds() // 60) + 1)
    state, _ = evaluate(state, [late, far], THRESHOLDS)
    assert late.sync_id not in state.seen and far.sync_id in state.seen


def test_a_failing_mapping_alerts_once_then_once_on_recovery() -> None:
    """Tick by tick through the cursor, as the sensor does."""
    ticks = [Health.HEALTHY, Health.FAILED, Health.FAILED, Health.FAILED, Health.HEALTHY, Health.HEALTHY]
    cursor = None
    kinds = []
    for minute, health in enumerate(ticks):
        r = ROW_OF[health]()
        r = ShardResult(**{**r.__dict__, "finished_at": T0 + dt.timedelta(minutes=minute)})
        state, alerts = evaluate(load_state(cursor) or AlertState(), [r], THRESHOLDS)
        cursor = dump_state(state)
        kinds.append([a.kind for a in alerts])
    assert kinds == [[], ["failed"], [], [], ["recovered"], []]


def test_mappings_without_a_new_sync_keep_state_and_removed_ones_are_dropped() -> None:
    previous = state_of({"a": Health.FAILED, "gone": Health.FAILED})
    state, alerts = evaluate(previous, [], {"a": 0.99, "b": 0.99})
    assert state.health == {"a": {0: Health.FAILED}}  # "b" never synced; "gone" is no longer configured
    assert alerts == []


def test_rows_of_unconfigured_mappings_are_ignored() -> None:
    state, alerts = evaluate(AlertState(), [row("failed", 0.0, mapping="elsewhere")], THRESHOLDS)
    assert alerts == [] and state.health == {}


def test_threshold_is_per_mapping() -> None:
    rows = [row("partial_success", 0.97, mapping="strict"), row("partial_success", 0.97, mapping="lenient")]
    state, alerts = evaluate(AlertState(), rows, {"strict": 0.99, "lenient": 0.95})
    assert state.mapping_health("lenient") is Health.HEALTHY
    assert state.mapping_health("strict") is Health.DEGRADED
    assert [(a.mapping, a.kind, a.threshold) for a in alerts] == [("strict", "degraded", 0.99)]


def test_a_sharded_mapping_is_as_bad_as_its_worst_current_shard() -> None:
    rows = [
        row("failed", 0.0, minute=0, shard=2, shards=3, error="old shard, removed since"),
        row("success", 1.0, minute=4, shard=0, shards=2),
        row("partial_success", 0.5, minute=5, shard=1, shards=2, error="HTTP 400: bad trait"),
        row("success", 1.0, minute=6, shard=0, shards=2),
    ]
    state, alerts = evaluate(AlertState(), rows, THRESHOLDS)
    # shard 2 failed first; shards: 2 forgot it at once (recovered), then shard 1 degraded it
    assert [(a.kind, a.outcome.shard) for a in alerts] == [("failed", 2), ("recovered", 0), ("degraded", 1)]
    assert state.health["users_identify"] == {0: Health.HEALTHY, 1: Health.DEGRADED}
    assert "(shard 1 of 2)" in alert_text(alerts[-1])
    # shard 0 doing fine does not hide shard 1
    assert evaluate(state, [row("success", minute=7, shard=0, shards=2)], THRESHOLDS)[1] == []


@pytest.mark.parametrize(
    "cursor",
    [
        None,
        "",
        "not json",
        '{"version": 99, "health": {}}',
        '{"version": 1, "health": {"a": "failed"}}',  # the old per-mapping cursor: a fresh start
        '{"version": 2, "health": {"a": {"0": "bogus"}}, "watermark": null, "seen": []}',
        "[1, 2]",
    ],
)
def test_unreadable_cursor_is_a_fresh_start(cursor: str | None) -> None:
    assert load_state(cursor) is None


def test_cursor_round_trip() -> None:
    state = AlertState(
        health={"b": {0: Health.DEGRADED}, "a": {0: Health.FAILED, 1: Health.HEALTHY}},
        watermark=T0,
        seen=frozenset({"s2", "s1"}),
    )
    assert load_state(dump_state(state)) == state
    assert '"seen": ["s1", "s2"]' in dump_state(state)


def test_messages_and_slack_payload() -> None:
    _, [failed] = evaluate(AlertState(), [ROW_OF[Health.FAILED]()], THRESHOLDS)
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

    _, [degraded] = evaluate(AlertState(), [ROW_OF[Health.DEGRADED]()], THRESHOLDS)
    assert alert_text(degraded) == (
        "Segment sync `users_identify` partially failed: 50.0% delivered, below its 99% threshold (5 failed, 0 invalid)"
    )
    assert "failed 5" in str(slack_payload(degraded)["blocks"])

    _, [recovered] = evaluate(
        state_of({"users_identify": Health.FAILED}), [ROW_OF[Health.HEALTHY]()], THRESHOLDS
    )
    assert (
        alert_text(recovered)
        == "Segment sync `users_identify` recovered (failed before): success, 100.0% delivered"
    )
    assert slack_payload(recovered)["text"].startswith(":white_check_mark: ")


def test_health_text() -> None:
    assert health_text(Health.HEALTHY, None, 0.99) == "no real sync yet"
    failed = ROW_OF[Health.FAILED]()
    assert health_text(Health.FAILED, failed, 0.99) == (
        "failed: latest real sync failed, 0.0% delivered (threshold 99%), finished 2026-11-02 08:00:00 UTC; "
        "first error: HTTP 401 from Segment: invalid write key"
    )
