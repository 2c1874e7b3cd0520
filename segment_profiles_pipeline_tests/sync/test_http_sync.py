"""Syncs over real HTTP to the Segment-compatible server on 127.0.0.1."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from segment_profiles_pipeline.segment.client import SegmentClient
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline_tests.conftest import materialize_all
from segment_profiles_pipeline_tests.sync.helpers import failed, ledger, people_spec, people_table

WRITE_KEY = "wk-test-3f9a1c-should-never-be-logged"


async def no_wait(_seconds: float) -> None:
    """Backoff without waiting: the tests check outcomes, not the clock."""


@pytest.fixture
def server():
    with FakeSegmentServer(write_key=WRITE_KEY) as srv:
        yield srv


def client(srv: FakeSegmentServer, **kwargs) -> SegmentClient:
    return SegmentClient(srv.url, WRITE_KEY, sleep=no_wait, **kwargs)


def test_pipeline_sends_exactly_the_valid_records_and_hides_the_write_key(
    monkeypatch, server, sample_models, settings_for, build, db_path
) -> None:
    monkeypatch.setenv("SEGMENT_WRITE_KEY", WRITE_KEY)
    monkeypatch.setenv("SEGMENT_ENDPOINT", server.url)
    defs = build(settings_for(sample_models, sample_users=300))
    result = materialize_all(defs)
    assert result.success

    with duckdb.connect(str(db_path), read_only=True) as con:
        expected = con.execute(
            "SELECT user_id, email, first_name, last_name, phone, plan, created_at, updated_at FROM models.users "
            "WHERE user_id IN (SELECT user_id FROM models.users GROUP BY user_id HAVING count(*) = 1)"
        ).fetchall()
        groups = con.execute("SELECT count(*) FROM models.account_memberships").fetchone()[0]
    # users_identify's calls; computed_traits_identify and audiences_identify send identify calls too
    identifies = {
        m["userId"]: m for m in server.messages if m["type"] == "identify" and "email" in m["traits"]
    }
    assert len(identifies) == len(expected) == 297  # 300 rows - 1 null key - 2 rows sharing a key
    user_id, email, first, last, phone, plan, created, updated = expected[0]
    message = identifies[user_id]
    assert message["traits"] == {
        "email": email,
        "first_name": first,
        "last_name": last,
        "phone": phone,
        "plan": plan,
        "created_at": created.isoformat(timespec="milliseconds") + "Z",
    }
    assert message["timestamp"] == updated.isoformat(timespec="milliseconds") + "Z"
    assert message["integrations"] == {"All": False}
    assert sum(m["type"] == "group" for m in server.messages) == groups
    assert {(r.auth, r.status) for r in server.request_log} == {("basic", 200)}

    meta = result.asset_materializations_for_node("profile_sync__users_identify")[0].metadata
    assert meta["segment_profiles/delivered"].value == 297 and meta["segment_profiles/invalid"].value == 3
    assert (
        meta["segment_profiles/status"].value == "partial_success"
    )  # the rejected rows are reported, the rest delivered
    assert len(meta["segment_profiles/sample_payloads"].value) == 5
    events = " ".join(str(e) for e in result.all_events)
    assert WRITE_KEY not in events

    before = server.message_count
    assert materialize_all(defs).success
    assert server.message_count == before  # nothing changed: nothing sent


def test_rate_limits_server_errors_and_drops_lose_nothing(server, warehouse) -> None:
    rows = [(f"u{i:04d}", f"{i}@x.io", "free") for i in range(6000)]
    server.rate_limit_next(1, retry_after=2)
    server.fail_next(2, status=503)
    server.drop_next(1)
    waits: list[float] = []

    async def record_wait(seconds: float) -> None:
        waits.append(seconds)

    with warehouse.session() as session, SegmentClient(server.url, WRITE_KEY, sleep=record_wait) as sender:
        people_table(session, rows)
        report = run_sync(session, people_spec(), sender)
        assert report.status == "success" and report.counts["delivered"] == 6000
        assert len(ledger(session)) == 6000
    assert 2.0 in waits  # Retry-After honoured
    assert sorted(m["userId"] for m in server.messages) == [r[0] for r in rows]  # each exactly once


def test_exhausted_retries_fail_only_that_batch_and_retry_next_sync(server, warehouse) -> None:
    rows = [(f"u{i}", f"{i}@x.io", "free") for i in range(10)]
    server.reject_when(lambda m: m.get("userId") == "u3", status=500, message="boom")
    with warehouse.session() as session:
        people_table(session, rows)
        with client(server, max_retries=2) as sender:
            report = run_sync(session, people_spec(), sender)
        assert report.status == "failed"  # one batch, it failed: nothing delivered
        reason = failed(session)["u3"]
        assert reason[0] == "delivery" and "HTTP 500 after 3 attempts" in reason[1]
        assert ledger(session) == {}
        server.reject_when(None)
        with client(server) as sender:
            report = run_sync(session, people_spec(), sender)
        assert report.status == "success" and report.counts["delivered"] == 10
        assert failed(session) == {}


def test_a_bad_record_is_isolated_by_splitting_its_batch(server, warehouse) -> None:
    rows = [(f"u{i:03d}", f"{i}@x.io", "free") for i in range(100)]
    server.reject_when(lambda m: m.get("userId") == "u042", status=400, message="invalid trait")
    with warehouse.session() as session, client(server) as sender:
        people_table(session, rows)
        report = run_sync(session, people_spec(), sender)
        assert report.counts["delivered"] == 99 and report.counts["failed"] == 1
        assert report.status == "partial_success" and report.delivery_rate == pytest.approx(0.99)
        assert set(failed(session)) == {"u042"} and "HTTP 400" in failed(session)["u042"][1]
        assert len(ledger(session)) == 99


KILLED_SYNC = textwrap.dedent(
    """
    import sys
    from segment_profiles_pipeline.segment.client import SegmentClient
    from segment_profiles_pipeline.sync.engine import run_sync
    from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
    from segment_profiles_pipeline_tests.sync.helpers import people_spec

    database, url, key = sys.argv[1:4]
    with DuckDBWarehouse(database=database).session() as session, SegmentClient(url, key, max_in_flight=1) as sender:
        run_sync(session, people_spec(), sender)
    """
)


def _wait_until(condition, proc: subprocess.Popen, what: str, timeout_s: float = 120) -> None:
    """Poll a condition (bounded); fail with ``what`` if it never holds or the process exits."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, f"the sync process exited before {what}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def test_sync_killed_mid_flight_resumes_without_loss_or_new_ids(warehouse, db_path, tmp_path: Path) -> None:
    """kill -9 while the second chunk is half delivered: Segment received part of it, the ledger
    none of it. The resumed sync re-sends those records under the ids Segment already holds."""
    rows = [(f"u{i:05d}", f"{i}@x.io", "free") for i in range(60_000)]  # three chunks of 20,000
    with warehouse.session() as session:
        people_table(session, rows)
    stall_after = 25_000  # the first chunk plus two batches of the second
    seen = 0

    def stall_the_next_request(_message) -> None:
        # runs inside the request that brings message `stall_after`: with one request in flight,
        # the fault is queued before the client can send the next one
        nonlocal seen
        seen += 1
        if seen == stall_after:
            srv.delay_next(1, seconds=60)

    script = tmp_path / "killed_sync.py"
    script.write_text(KILLED_SYNC)
    root = Path(__file__).parents[2]
    with FakeSegmentServer(write_key=WRITE_KEY, on_message=stall_the_next_request) as srv:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(db_path), srv.url, WRITE_KEY],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        try:
            _wait_until(lambda: srv.requests > 0 and srv.message_count >= stall_after, proc, "the stall")
            stalled_after = srv.requests
            _wait_until(lambda: srv.requests > stalled_after, proc, "the stalled request is in flight")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        _resume_after_the_kill(srv, warehouse, rows)


def _resume_after_the_kill(server: FakeSegmentServer, warehouse, rows) -> None:
    with warehouse.session() as session:
        acknowledged = ledger(session)
        assert len(acknowledged) == 20_000  # the first chunk's acknowledgements survived the kill
        assert session.query("SELECT status FROM _segment_profiles.sync_history").rows == [("running",)]
        with client(server) as sender:
            report = run_sync(session, people_spec(), sender)
        assert report.counts["added"] == 60_000 - len(acknowledged)  # only what was not acknowledged
        assert len(ledger(session)) == 60_000
        statuses = sorted(
            r[0] for r in session.query("SELECT status FROM _segment_profiles.sync_history").rows
        )
        assert statuses == ["interrupted", "success"]  # the killed sync is marked interrupted
    ids_by_user: dict[str, list[str]] = {}
    for message in server.messages:
        ids_by_user.setdefault(message["userId"], []).append(message["messageId"])
    assert sorted(ids_by_user) == [r[0] for r in rows]  # every record arrived
    resent = [ids for ids in ids_by_user.values() if len(ids) > 1]
    assert len(resent) >= 5_000  # the received-but-unacknowledged batches went out again…
    assert all(len(set(ids)) == 1 for ids in resent)  # …under the same messageId: Segment dedups them
