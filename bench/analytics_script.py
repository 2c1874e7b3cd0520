"""The hand-written segment-analytics-python sync a user would run instead of this project.

Run as a plain script (``python bench/analytics_script.py DATABASE URL WRITE_KEY``) so its process
imports only DuckDB and the library, as the user's script would: the whole-process scenario
times it from process start to exit. It reads ``app.users`` (the table our ``users`` model reads),
sends one ``identify`` per row with the traits of the sample ``users_identify`` mapping, and sets
``max_queue_size`` to the row count: the library's default queue (10,000) drops every message the
reader gets ahead of its upload thread, and a script that loses data is no baseline.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import duckdb
import segment.analytics as analytics

QUERY = "SELECT user_id, email, first_name, last_name, phone, plan, created_at, updated_at FROM app.users"


def identify_rows(cursor: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """One ``analytics.identify`` per row of ``cursor`` (``QUERY``'s columns), with the traits of
    the sample ``users_identify`` mapping; returns (calls, messages the full queue dropped)."""
    calls = dropped = 0
    while rows := cursor.fetchmany(10_000):
        for user_id, email, first_name, last_name, phone, plan, created_at, updated_at in rows:
            queued, _ = analytics.identify(
                user_id,
                traits={
                    "email": email,
                    "first_name": first_name,
                    "last_name": last_name,
                    "phone": phone,
                    "plan": plan,
                    "created_at": created_at,
                },
                timestamp=updated_at,
                integrations={"All": False},
            )
            calls += 1
            dropped += not queued
    return calls, dropped


def main(database: str, url: str, write_key: str) -> dict[str, float | int]:
    """Send every user; return what the script saw (calls, drops by the queue, seconds)."""
    logging.getLogger("segment").addHandler(logging.NullHandler())
    started = time.perf_counter()
    with duckdb.connect(database, read_only=True) as con:
        con.execute("SET enable_progress_bar = false")
        (count,) = con.execute("SELECT count(*) FROM app.users").fetchone() or (0,)
        analytics.write_key = write_key
        analytics.host = url
        analytics.max_queue_size = max(count, 1)
        calls, dropped = identify_rows(con.execute(QUERY))
    analytics.flush()
    analytics.shutdown()
    return {"calls": calls, "dropped_by_queue": dropped, "seconds_in_script": time.perf_counter() - started}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
