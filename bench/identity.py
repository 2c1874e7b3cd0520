"""Identity graph benchmark: ``python -m bench.identity --events N [--identities M]``.

N Flex-like events (user_id / anonymous_id, 20% anonymous-only, 2% carrying another user's device
id, a few blocked placeholders) over M users, in DuckDB. Measured, each in its own process:

- **ours**: ``compute_identity`` full, then incremental after 1% new events (new messages above the
  arrival mark);
- **baseline**: a plain pandas + networkx connected-components script over the same events
  (load, drop nulls, one edge per user_id-anonymous_id pair, components). It **ignores limits,
  priorities and blocked values**, so shared devices merge users: it answers an easier question,
  and after the new events it recomputes everything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import QUIET, in_child

TABLE = "flex.flex_engagement_initiated"


def events_sql(events: int, users: int, first: int) -> str:
    """``events`` rows numbered from ``first``: ~events/users per user, deterministic by hash."""
    return f"""
SELECT 'ev-' || i AS id,
       CASE WHEN hash(i, 1) % 5 = 0 THEN NULL ELSE 'u' || (hash(i, 2) % {users}) END AS user_id,
       CASE WHEN hash(i, 3) % 50 = 0 THEN 'd' || (hash(i, 4) % {users})
            WHEN hash(i, 5) % 500 = 0 THEN 'anonymous'
            ELSE 'd' || (hash(i, 2) % {users}) END AS anonymous_id,
       TIMESTAMP '2026-01-01' + to_seconds(CAST(i AS BIGINT)) AS timestamp,
       TIMESTAMP '2026-01-01' + to_seconds(CAST(i AS BIGINT)) AS received_at
FROM range({first}, {first + events}) AS t(i)"""


def add_events(database: str, events: int, users: int, first: int) -> dict[str, Any]:
    import duckdb

    with duckdb.connect(database) as con:
        con.execute(QUIET)
        con.execute("CREATE SCHEMA IF NOT EXISTS flex")
        verb = f"CREATE TABLE {TABLE} AS" if first == 0 else f"INSERT INTO {TABLE}"
        con.execute(f"{verb} {events_sql(events, users, first)}")
        return {"rows": con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]}


def ours(database: str, full: bool) -> dict[str, Any]:
    from segment_profiles_pipeline.identity import compute_identity
    from segment_profiles_pipeline.identity.config import IdentityFile, IdentityProject, rules_from
    from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

    identity = IdentityProject(Path("identity.yml"), IdentityFile(), rules_from(IdentityFile()))
    with DuckDBWarehouse(database=database).session() as session:
        session.execute(QUIET)
        started = time.perf_counter()
        stats = compute_identity(
            session, identity, [tuple(TABLE.split("."))], [], dt.datetime(2027, 1, 1), full
        )
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "mode": stats.mode,
        "candidates": stats.candidates,
        "profiles": stats.profiles,
        "merges": stats.merges,
        "demotions": stats.demotions,
    }


def baseline(database: str) -> dict[str, Any]:
    import duckdb
    import networkx as nx

    started = time.perf_counter()
    with duckdb.connect(database, read_only=True) as con:
        frame = con.sql(f"SELECT user_id, anonymous_id FROM {TABLE}").df()
    graph = nx.Graph()
    graph.add_nodes_from("u:" + frame["user_id"].dropna().unique())
    graph.add_nodes_from("a:" + frame["anonymous_id"].dropna().unique())
    pairs = frame.dropna().drop_duplicates()
    graph.add_edges_from(zip("u:" + pairs["user_id"], "a:" + pairs["anonymous_id"], strict=True))
    components = nx.number_connected_components(graph)
    return {"seconds": time.perf_counter() - started, "profiles": components}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.identity", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--identities", type=int, help="users (default events / 10)")
    args = parser.parse_args(argv)
    users = args.identities or max(1, args.events // 10)
    new = max(1, args.events // 100)
    with tempfile.TemporaryDirectory(prefix="bench-identity-") as workdir:
        database = str(Path(workdir) / "graph.duckdb")  # "identity.duckdb" would shadow the schema
        in_child(add_events, database=database, events=args.events, users=users, first=0)
        full = in_child(ours, database=database, full=True)
        base_full = in_child(baseline, database=database)
        in_child(add_events, database=database, events=new, users=users, first=args.events)
        inc = in_child(ours, database=database, full=False)
        base_inc = in_child(baseline, database=database)
    print(f"{os.cpu_count()} cores; {args.events:,} events, {users:,} users, then {new:,} new events (1%)\n")
    print(
        "| run | ours (Segment rules) | pandas + networkx components (ignores limits, priorities, blocked values) |"
    )
    print("|---|---|---|")
    print(
        f"| full | {full['seconds']:.2f} s, {full['candidates']:,} identifier sets resolved, {full['profiles']:,} profiles, "
        f"{full['merges']:,} merges, {full['demotions']:,} demotions, peak {full['peak_rss_mb']:,.0f} MB "
        f"| {base_full['seconds']:.2f} s, {base_full['profiles']:,} components, peak {base_full['peak_rss_mb']:,.0f} MB |"
    )
    print(
        f"| after 1% new events | {inc['seconds']:.2f} s ({inc['mode']}, {inc['candidates']:,} new sets), {inc['profiles']:,} profiles "
        f"| {base_inc['seconds']:.2f} s (recomputes everything), {base_inc['profiles']:,} components |"
    )


if __name__ == "__main__":
    main()
