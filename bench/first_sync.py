"""Scenario 1 (first sync throughput) and 4 (peak memory of that sync).

A ``users``-like model of N records, never synced, goes to the Segment-compatible server on
127.0.0.1 (a separate process). Three sides, each in its own process with a fresh server:

- **ours**: ``run_sync`` with a ``SegmentClient`` at its defaults, end to end (plan + build +
  send + acknowledge), on the project's real ``users_identify`` mapping;
- **baseline**: segment-analytics-python with its DEFAULT settings, as a user would script it
  (read the rows, ``analytics.identify`` each, ``flush()``). Its queue holds 10,000 messages and
  drops the rest when the reader outpaces its one upload thread, so what *arrived* is counted
  at the server, next to how many calls were made. The same script with ``max_queue_size``
  raised to N (nothing dropped, all else default) is measured too: the fair lossless baseline;
- **ceiling**: a raw sender posting one pre-built ~475 KB batch over and over on 4 concurrent
  connections: the most the loopback server can take, so the table shows how close we are.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.harness import QUIET, WRITE_KEY, Row, ScenarioResult, SegmentServerProcess, Sizes, in_child

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
MAPPING = "users_identify"
CEILING_CONNECTIONS = 4
"""As many as ``SegmentClient``'s default ``max_in_flight``: the same concurrency, the best sender."""
BASELINE_LABEL = "segment-analytics-python 2.3.4, defaults"
TARGET_SPEEDUP = 10.0
TARGET_CEILING_SHARE = 0.5
TARGET_RSS_MB = 1024.0
TARGET_RSS_RECORDS = 1_000_000


def create_users(database: str, records: int) -> dict[str, Any]:
    """The model table ``models.users`` as the ``users`` asset would leave it (setup, not timed)."""
    import duckdb

    from bench.data import users_sql

    with duckdb.connect(database) as con:
        con.execute(QUIET)
        con.execute("CREATE SCHEMA IF NOT EXISTS models")
        con.execute(f"CREATE OR REPLACE TABLE models.users AS {users_sql(records)}")
        rows = con.execute("SELECT count(*) FROM models.users").fetchone()
    return {"records": rows[0] if rows else 0}


def sync_ours(database: str, url: str) -> dict[str, Any]:
    """One first sync of ``users_identify`` through the real engine and client."""
    from segment_profiles_pipeline.project import load_project
    from segment_profiles_pipeline.segment.client import SegmentClient
    from segment_profiles_pipeline.sync.engine import run_sync
    from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

    spec = next(m for m in load_project(MODELS_DIR).mappings if m.mapping.name == MAPPING)
    with (
        DuckDBWarehouse(database=database).sync_session() as session,
        SegmentClient(url, WRITE_KEY) as client,
    ):
        session.execute(QUIET)
        started, cpu_started = time.perf_counter(), time.process_time()
        report = run_sync(session, spec, client)
        seconds = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started  # every thread of this process, DuckDB's too
        stats = client.stats
    return {
        "seconds": seconds,
        "cpu_s": cpu_s,
        "status": report.status,
        "counts": report.counts,
        "requests": stats.requests,
        "retries": stats.retries,
        "bytes_sent": stats.bytes_sent,
    }


class _Acknowledging:
    """An in-process ``Sender`` that acknowledges every message at once: the sync's own memory,
    with no HTTP client or server in the process."""

    destination_salt = "bench-memory"

    def __init__(self) -> None:
        self.messages = 0

    def deliver(self, messages: Any) -> list[None]:
        self.messages += len(messages)
        return [None] * len(messages)


def sync_memory(database: str, memory_limit: str | None = None) -> dict[str, Any]:
    """One first sync of ``users_identify`` to an acknowledging in-process sender, with the
    process's peak RSS when the plan is built and at the end (``harness.peak_rss_mb``): what grows
    with N shows up in one or the other (the plan table, or the chunk loop and ledger writes).
    The session is the one a sync asset runs in (``DuckDBWarehouse.sync_session``); ``memory_limit``
    replaces the resource's ``sync_memory_limit`` (``""``: DuckDB's default, 80% of RAM)."""
    from bench.harness import peak_rss_mb
    from segment_profiles_pipeline.project import load_project
    from segment_profiles_pipeline.sync import plan
    from segment_profiles_pipeline.sync.engine import run_sync
    from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

    spec = next(m for m in load_project(MODELS_DIR).mappings if m.mapping.name == MAPPING)
    build = plan.Plan.build
    after_plan: list[float] = []

    def measured_build(self: plan.Plan) -> plan.PlanCounts:
        found = build(self)
        after_plan.append(peak_rss_mb())
        return found

    plan.Plan.build = measured_build  # type: ignore[method-assign]  # this child process only
    sender = _Acknowledging()
    warehouse = DuckDBWarehouse(database=database)
    if memory_limit is not None:
        warehouse = DuckDBWarehouse(database=database, sync_memory_limit=memory_limit)
    with warehouse.sync_session() as session:
        session.execute(QUIET)
        started = time.perf_counter()
        report = run_sync(session, spec, sender)
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "status": report.status,
        "delivered": sender.messages,
        "peak_rss_after_plan_mb": after_plan[0],
    }


def memory_by_size(
    workdir: Path, sizes: Sequence[int], memory_limit: str | None = None
) -> list[dict[str, Any]]:
    """Peak RSS of a first sync at each size (fresh model, fresh process each): flat in N or not."""
    results = []
    for records in sizes:
        database = workdir / f"first_sync_memory_{records}.duckdb"
        for leftover in (database, database.with_name(database.name + ".wal")):
            leftover.unlink(missing_ok=True)  # a first sync: no ledger left by an earlier run
        in_child(create_users, database=str(database), records=records)
        result = in_child(sync_memory, database=str(database), memory_limit=memory_limit)
        if result["delivered"] != records:
            raise RuntimeError(f"the memory run delivered {result['delivered']} of {records} records")
        results.append({"records": records, "memory_limit": memory_limit, **result})
    return results


def run_memory(sizes: Sizes, workdir: Path) -> ScenarioResult:
    """Scenario ``first_sync_memory``: peak RSS of a first sync at N and 10 N records (N: the sync
    size; 1M and 10M with ``--large``), to an acknowledging in-process sender, in the session a
    sync asset gets (``sync_memory_limit`` at its default). Flat in N means the 10 N figure is close to the N one."""
    small, large = sizes.sync_records, 10 * sizes.sync_records
    low, high = memory_by_size(workdir, [small, large])
    title = f"4. memory, first sync ({small:,} and {large:,} records)"
    row = Row(
        title,
        f"peak RSS at {large:,} records, vs at {small:,}",
        "MB",
        high["peak_rss_mb"],
        low["peak_rss_mb"],
        f"the same sync at {small:,} records",
        higher_is_better=False,
        target=f"< {TARGET_RSS_MB / 1024:.0f} GB at {10 * TARGET_RSS_RECORDS:,} records (flat in N)",
        met=high["peak_rss_mb"] < TARGET_RSS_MB if large >= 10 * TARGET_RSS_RECORDS else None,
        compare="share",
        notes=(
            f"In-process acknowledging sender (no HTTP). Peak RSS once the plan is built: "
            f"{low['peak_rss_after_plan_mb']:,.0f} MB at {small:,}, {high['peak_rss_after_plan_mb']:,.0f} MB at "
            f"{large:,}; sync time {low['seconds']:.1f} s and {high['seconds']:.1f} s."
        ),
    )
    return ScenarioResult("first_sync_memory", title, [row], {"runs": [low, high]})


def sync_baseline(database: str, url: str, max_queue_size: int | None = None) -> dict[str, Any]:
    """The script a user would write with segment-analytics-python, default settings except
    ``max_queue_size`` when given.

    The library logs a warning per message its full queue drops; a ``NullHandler`` keeps 90k
    warnings off the terminal (without it they go to stderr, which would only slow it further).
    """
    import logging

    import duckdb
    import segment.analytics as analytics

    from bench.analytics_script import QUERY, identify_rows

    logging.getLogger("segment").addHandler(logging.NullHandler())
    analytics.write_key = WRITE_KEY
    analytics.host = url
    if max_queue_size is not None:
        analytics.max_queue_size = max_queue_size
    with duckdb.connect(database, read_only=True) as con:
        con.execute(QUIET)
        started = time.perf_counter()
        calls, dropped = identify_rows(con.execute(QUERY.replace("FROM app.users", "FROM models.users")))
        called = time.perf_counter() - started
        analytics.flush()
        seconds = time.perf_counter() - started
    analytics.shutdown()
    return {"seconds": seconds, "calls_seconds": called, "calls": calls, "dropped_by_queue": dropped}


def _sample_message(i: int) -> bytes:
    """An identify message shaped like ours (same fields and trait sizes)."""
    import orjson

    return orjson.dumps(
        {
            "type": "identify",
            "userId": f"u_{i:09d}",
            "traits": {
                "email": f"margaret.hamilton{i}@example.com",
                "first_name": "Margaret",
                "last_name": "Hamilton",
                "phone": "+15551234567",
                "plan": "business",
                "created_at": "2025-03-01T12:34:56.000Z",
            },
            "timestamp": "2026-10-31T08:00:00.000Z",
            "messageId": f"spp-{i:040x}",
            "integrations": {"All": False},
            "context": {"library": {"name": "segment-profiles-pipeline", "version": "0.1.0"}},
        }
    )


def server_ceiling(url: str, messages: int) -> dict[str, Any]:
    """Post one pre-built full batch (~475 KB) repeatedly: nothing to build, only to send."""
    import asyncio

    import httpx

    from segment_profiles_pipeline.segment.batching import format_sent_at, plan_batches, request_body

    pool = [_sample_message(i) for i in range(2_500)]
    start, stop = plan_batches(pool)[0]
    body = request_body(pool[start:stop], format_sent_at())
    per_request = stop - start
    requests = math.ceil(messages / per_request)
    headers = {"Content-Type": "application/json"}

    async def send() -> None:
        remaining = iter(range(requests))
        limits = httpx.Limits(max_connections=CEILING_CONNECTIONS)
        async with httpx.AsyncClient(auth=(WRITE_KEY, ""), limits=limits, timeout=60.0) as http:

            async def connection() -> None:
                for _ in remaining:
                    response = await http.post(f"{url}/v1/batch", content=body, headers=headers)
                    response.raise_for_status()

            await asyncio.gather(*(connection() for _ in range(CEILING_CONNECTIONS)))

    started = time.perf_counter()
    asyncio.run(send())
    return {
        "seconds": time.perf_counter() - started,
        "requests": requests,
        "messages_per_request": per_request,
        "body_bytes": len(body),
    }


def _side(function: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """Run one side against a fresh server; add what the server counted."""
    with SegmentServerProcess() as server:
        result = in_child(function, url=server.url, **kwargs)
        result["server"] = server.stats()
    result["delivered"] = result["server"]["messages"]
    result["delivered_per_s"] = result["delivered"] / result["seconds"]
    return result


def run(sizes: Sizes, workdir: Path) -> ScenarioResult:
    records = sizes.sync_records
    database = str(workdir / "first_sync.duckdb")
    setup = in_child(create_users, database=database, records=records)
    ours = _side(sync_ours, database=database)
    baseline = _side(sync_baseline, database=database)
    lossless = _side(sync_baseline, database=database, max_queue_size=records)
    ceiling = _side(server_ceiling, messages=sizes.ceiling_messages)
    if ours["delivered"] != records or ours["counts"]["delivered"] != records:
        raise RuntimeError(
            f"our first sync delivered {ours['delivered']} of {records} records (report: {ours['counts']}); "
            "the benchmark only means something when everything arrives. Check the server's stderr above."
        )

    title = f"1. first sync ({records:,} records)"
    rows = [
        Row(
            title,
            "messages/s delivered, end to end",
            "msg/s",
            ours["delivered_per_s"],
            baseline["delivered_per_s"],
            BASELINE_LABEL,
            higher_is_better=True,
            target=f"≥ {TARGET_SPEEDUP:.0f}x baseline",
            met=ours["delivered_per_s"] >= TARGET_SPEEDUP * baseline["delivered_per_s"],
            notes=_baseline_note(baseline, records),
        ),
        Row(
            title,
            "messages/s delivered, end to end",
            "msg/s",
            ours["delivered_per_s"],
            lossless["delivered_per_s"],
            f"segment-analytics-python, max_queue_size={records:,}",
            higher_is_better=True,
            target="none (the lossless way to use the library)",
            met=None,
            notes=_baseline_note(lossless, records),
        ),
        Row(
            title,
            "share of the loopback server's ceiling",
            "msg/s",
            ours["delivered_per_s"],
            ceiling["delivered_per_s"],
            "raw sender, pre-built batches",
            higher_is_better=True,
            target=f"≥ {TARGET_CEILING_SHARE:.0%} of ceiling",
            met=ours["delivered_per_s"] >= TARGET_CEILING_SHARE * ceiling["delivered_per_s"],
            compare="share",
            notes=(
                f"{ceiling['requests']:,} requests of {ceiling['messages_per_request']:,} messages "
                f"({ceiling['body_bytes'] / 1000:,.0f} KB, built once) on {CEILING_CONNECTIONS} connections. "
                f"Our sync used {ours['cpu_s'] / records * 1e6:.1f} µs of CPU per record "
                f"({ours['cpu_s'] / ours['seconds']:.2f} cores): on a shared machine the share moves "
                "with the other load, the CPU per record much less."
            ),
        ),
        Row(
            f"4. memory ({records:,} records)",
            "peak RSS of the syncing process",
            "MB",
            ours["peak_rss_mb"],
            baseline["peak_rss_mb"],
            BASELINE_LABEL,
            higher_is_better=False,
            target=f"< {TARGET_RSS_MB / 1024:.0f} GB at {TARGET_RSS_RECORDS:,} records",
            met=ours["peak_rss_mb"] < TARGET_RSS_MB if records >= TARGET_RSS_RECORDS else None,
        ),
    ]
    details = {"setup": setup, "ours": ours, "baseline": baseline, "lossless": lossless, "ceiling": ceiling}
    return ScenarioResult("first_sync", title, rows, details)


def _baseline_note(side: dict[str, Any], records: int) -> str:
    """What the library did with the calls: made, dropped by its queue, arrived."""
    return (
        f"{side['calls']:,} identify calls in {side['calls_seconds']:.1f} s "
        f"({side['calls'] / side['calls_seconds']:,.0f} calls/s); the queue dropped {side['dropped_by_queue']:,}; "
        f"{side['delivered']:,} of {records:,} arrived, {side['seconds']:.1f} s after the start (flush() included)."
    )
