"""The alert sensor over a real sync_history table, delivering to a webhook receiver on 127.0.0.1."""

import datetime as dt
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from dagster import DagsterInstance, SensorDefinition, build_sensor_context
from dagster._core.definitions.sensor_definition import SensorExecutionData

from segment_profiles_pipeline.automation.alert_sensor import build_alert_sensor, post_webhook
from segment_profiles_pipeline.project import load_project
from segment_profiles_pipeline.state import ensure_state
from segment_profiles_pipeline.state.sync_history import HISTORY
from segment_profiles_pipeline.warehouse.base import literal
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

T0 = dt.datetime(2026, 11, 2, 8, 0, 0)


@dataclass
class Receiver:
    """A Slack stand-in: records every JSON body, answers ``status``."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            box["r"].bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(box["r"].status)
            self.end_headers()
            self.wfile.write(b"ok" if box["r"].status == 200 else b"invalid_token")

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box["r"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/secret-token")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box["r"]
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def sensor(sample_models) -> SensorDefinition:
    return build_alert_sensor(
        load_project(sample_models).mappings
    )  # users_identify, account_memberships_group


def tick(sensor: SensorDefinition, warehouse: DuckDBWarehouse, cursor: str | None) -> SensorExecutionData:
    context = build_sensor_context(
        instance=DagsterInstance.ephemeral(), cursor=cursor, resources={"warehouse": warehouse}
    )
    return sensor.evaluate_tick(context)


def record(
    warehouse: DuckDBWarehouse,
    minute: int,
    status: str,
    *,
    mapping: str = "users_identify",
    rate: float | None = 1.0,
    error: str | None = None,
    run: str = "run-1",
    dry_run: bool = False,
) -> None:
    """One sync_history row as the sync engine writes it."""
    started = T0 + dt.timedelta(minutes=minute)
    finished = None if status == "running" else started + dt.timedelta(seconds=30)
    with warehouse.session() as session:
        ensure_state(session)
        session.execute(
            f"INSERT INTO {HISTORY} (sync_id, mapping, shard, shards, dagster_run_id, dry_run, started_at, finished_at, "
            "status, extracted, added, updated, deleted, invalid, sent, delivered, failed, delivery_rate, error) VALUES ("
            f"{literal(f'{mapping}-{minute}')}, {literal(mapping)}, 0, 1, {literal(run)}, {literal(dry_run)}, {literal(started)}, "
            f"{literal(finished)}, {literal(status)}, 100, 10, 5, 0, 1, 15, {round(15 * (rate or 0))}, "
            f"{15 - round(15 * (rate or 0))}, {literal(rate)}, {literal(error)})"
        )


def test_before_any_sync(sensor, warehouse) -> None:
    missing = tick(sensor, warehouse, None)
    assert "cannot read the warehouse now" in (missing.skip_message or "") and "does not exist yet" in (
        missing.skip_message or ""
    )
    with warehouse.session() as session:
        session.execute("CREATE TABLE t AS SELECT 1 AS a")
    assert tick(sensor, warehouse, None).skip_message == "no sync has run yet (no sync history table)"


def test_alerts_on_change_only_with_webhook(sensor, warehouse, receiver, monkeypatch) -> None:
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
    record(warehouse, 0, "success")
    healthy = tick(sensor, warehouse, None)
    assert healthy.skip_message == "no change in sync health"
    assert json.loads(healthy.cursor or "")["health"] == {"users_identify": {"0": "healthy"}}
    assert receiver.bodies == []

    record(warehouse, 10, "failed", rate=0.0, error="HTTP 401: invalid write key", run="run-2")
    record(warehouse, 20, "running", run="run-3")  # still running: says nothing yet
    failed = tick(sensor, warehouse, healthy.cursor)
    assert failed.skip_message == "users_identify: failed"
    [body] = receiver.bodies
    assert (
        body["text"] == ":rotating_light: Segment sync `users_identify` failed: HTTP 401: invalid write key"
    )
    blocks = json.dumps(body["blocks"])
    assert (
        "/runs/run-2" in blocks and "sent 15" in blocks and "delivered 0" in blocks and "failed 15" in blocks
    )

    assert tick(sensor, warehouse, failed.cursor).skip_message == "no change in sync health"
    record(warehouse, 30, "failed", rate=0.0, error="HTTP 401: invalid write key", run="run-4")
    still = tick(sensor, warehouse, failed.cursor)
    assert still.skip_message == "no change in sync health"
    assert len(receiver.bodies) == 1  # a mapping that keeps failing alerts once

    record(warehouse, 40, "success", run="run-5")
    recovered = tick(sensor, warehouse, still.cursor)
    assert recovered.skip_message == "users_identify: recovered"
    assert receiver.bodies[-1]["text"].startswith(
        ":white_check_mark: Segment sync `users_identify` recovered"
    )
    assert "/runs/run-5" in json.dumps(receiver.bodies[-1]["blocks"])
    assert len(receiver.bodies) == 2


def test_partial_success_below_threshold(sensor, warehouse, receiver, monkeypatch) -> None:
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
    record(warehouse, 0, "partial_success", rate=0.995)  # above the default 99% threshold
    record(warehouse, 0, "partial_success", mapping="account_memberships_group", rate=0.8)
    result = tick(sensor, warehouse, None)
    assert result.skip_message == "account_memberships_group: degraded"
    assert json.loads(result.cursor or "")["health"] == {
        "account_memberships_group": {"0": "degraded"},
        "users_identify": {"0": "healthy"},
    }
    [body] = receiver.bodies
    assert "80.0% delivered, below its 99% threshold" in body["text"]


def test_without_webhook_only_the_log(sensor, warehouse, receiver, capfd) -> None:
    record(warehouse, 0, "failed", rate=0.0, error="boom")
    assert tick(sensor, warehouse, None).skip_message == "users_identify: failed"
    assert (
        "ERROR - Segment sync `users_identify` failed: boom" in capfd.readouterr().err
    )  # the tick's Dagster log
    assert receiver.bodies == []  # ALERT_WEBHOOK_URL unset (the autouse fixture clears it)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webhook_failures_are_logged_never_raised(sensor, warehouse, receiver, monkeypatch, caplog) -> None:
    receiver.status = 403
    log = logging.getLogger("alert-test")
    with caplog.at_level(logging.WARNING, logger="alert-test"):
        assert post_webhook(receiver.url, {"text": "x"}, log) is False
        unreachable = f"http://127.0.0.1:{closed_port()}/services/secret-token"
        assert post_webhook(unreachable, {"text": "x"}, log) is False
    assert "alert webhook answered HTTP 403 ('invalid_token')" in caplog.text
    assert "alert webhook not delivered (ConnectError" in caplog.text
    assert "secret-token" not in caplog.text  # the URL is a secret
    assert receiver.bodies == [{"text": "x"}]

    # in the sensor: the tick still succeeds and advances its state (no alert storm later)
    monkeypatch.setenv("ALERT_WEBHOOK_URL", unreachable)
    record(warehouse, 0, "failed", rate=0.0, error="boom")
    result = tick(sensor, warehouse, None)
    assert result.skip_message == "users_identify: failed"
    assert json.loads(result.cursor or "")["health"] == {"users_identify": {"0": "failed"}}


def test_a_failure_then_a_success_between_two_ticks_alerts_then_recovers(
    sensor, warehouse, receiver, monkeypatch
) -> None:
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
    record(warehouse, 0, "success")
    first = tick(sensor, warehouse, None)
    record(warehouse, 10, "failed", rate=0.0, error="HTTP 401: invalid write key", run="run-2")
    record(warehouse, 20, "success", run="run-3")
    both = tick(sensor, warehouse, first.cursor)
    assert both.skip_message == "users_identify: failed; users_identify: recovered"
    assert [b["text"].split(" ", 1)[0] for b in receiver.bodies] == [":rotating_light:", ":white_check_mark:"]
    assert tick(sensor, warehouse, both.cursor).skip_message == "no change in sync health"  # nothing twice


def test_an_interrupted_sync_alerts(sensor, warehouse) -> None:
    record(warehouse, 0, "interrupted", rate=None, error="interrupted: the process stopped")
    assert tick(sensor, warehouse, None).skip_message == "users_identify: failed"


def test_dry_runs_are_ignored(sensor, warehouse) -> None:
    record(warehouse, 0, "success")
    first = tick(sensor, warehouse, None)
    record(warehouse, 10, "failed", rate=None, error="dry run went wrong", dry_run=True)
    assert tick(sensor, warehouse, first.cursor).skip_message == "no change in sync health"
    # and a fresh cursor does not judge a dry run either
    assert tick(sensor, warehouse, None).skip_message == "no change in sync health"


def test_a_row_committed_after_a_later_finishing_one_still_alerts(sensor, warehouse) -> None:
    """Parallel shards: the row that finished first can be committed last."""
    record(warehouse, 10, "success")
    first = tick(sensor, warehouse, None)
    record(warehouse, 5, "failed", rate=0.0, error="HTTP 500", mapping="account_memberships_group")
    assert tick(sensor, warehouse, first.cursor).skip_message == "account_memberships_group: failed"
