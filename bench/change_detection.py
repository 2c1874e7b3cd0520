"""Scenario 2: change detection. How long does it take to know what to send?

An already-synced ``users`` model of N records (1M; 10M with ``--large``) changes: 1% of the
records get a new email, 0.1% are deleted, 0.1% are added. Two sides, each in its own process:

- **ours**: the plan of a sync (``Plan.build``: the plan table and its counts) against a ledger
  holding every record's acknowledged checksum, written with the engine's own ``checksum_sql``
  over the column types the engine passes, and its quick hash, written by the settling step's
  own ``StateWriter.remember_quick_hashes`` from a plan of the unchanged model (as a previous
  sync would have left the ledger, without sending N messages to build it);
- **before**: the same with the plan SQL as of ``BEFORE_REF`` (its ``plan.py`` imported from git
  as a module of its own; ``BENCH_PLAN_BEFORE_REF`` names another commit), on the same ledger: the
  checksums are the same, so both plan the same rows; ours and before alternate, each in a fresh
  process, ``ROUNDS`` times;
- **baseline**: the same diff as a hand-written pandas script: load the mapped columns and the
  previous hashes, hash each row with ``pandas.util.hash_pandas_object``, outer-``merge`` on the
  key, compare hashes. Its own ledger of hashes is prepared the same way, untimed.

Both must find exactly the changes the generator made (``data.expected_changes``); a diff that
does not is flagged in the table and the JSON, since a fast wrong diff is no result. Each side
plans twice in a row and reports its best run (see ``harness.timed``).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import QUIET, Row, ScenarioResult, Sizes, in_child, source_at, timed

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
MAPPING = "users_identify"
PANDAS_LEDGER = "bench_pandas.ledger"
REPEAT = 2
ROUNDS = 2
TARGET_SPEEDUP = 10.0
TARGET_SECONDS = 5.0
TARGET_RECORDS = 10_000_000
BEFORE_REF = os.environ.get("BENCH_PLAN_BEFORE_REF", "1a001ff")
"""The last commit with the plan SQL before the single FULL JOIN (deletes by a second model scan),
unless ``BENCH_PLAN_BEFORE_REF`` names another (e.g. the commit before a plan change, to measure it)."""
BEFORE_MODULE = "plan_before"

if TYPE_CHECKING:  # each child process imports only what its side needs (see harness.in_child)
    import pandas as pd

    from segment_profiles_pipeline.sync.plan import PlanSpec
    from segment_profiles_pipeline.warehouse.base import WarehouseSession


def _plan_spec(session: WarehouseSession) -> PlanSpec:
    """The ``PlanSpec`` the engine builds for ``users_identify`` on this table."""
    from segment_profiles_pipeline.project import load_project
    from segment_profiles_pipeline.sync.engine import mapped_columns
    from segment_profiles_pipeline.sync.plan import PlanSpec

    spec = next(m for m in load_project(MODELS_DIR).mappings if m.mapping.name == MAPPING)
    types = dict(session.columns("models", "users"))
    mapped = mapped_columns(spec, list(types))
    return PlanSpec(
        spec.mapping,
        spec.source.table,
        spec.source.primary_key,
        mapped,
        0,
        1,
        tuple((c, types[c]) for c in mapped),
    )


def _pandas_hashes(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Key and row hash of every record: the hand-written script's checksum."""
    import pandas as pd

    hashes = pd.util.hash_pandas_object(frame.drop(columns=[key]), index=False)
    return pd.DataFrame({"record_key": frame[key].to_numpy(), "hash": hashes.to_numpy()})


def _mapped_select(plan: PlanSpec) -> str:
    return f"SELECT {', '.join(dict.fromkeys(plan.mapped_columns))} FROM models.users"


def prepare(database: str, records: int) -> dict[str, Any]:
    """Untimed: the model after one sync (both ledgers filled), then the changes on top of it."""
    from bench.data import users_sql
    from segment_profiles_pipeline.state import ensure_state
    from segment_profiles_pipeline.state.ledger import LEDGER
    from segment_profiles_pipeline.state.writer import StateWriter
    from segment_profiles_pipeline.sync.plan import Plan, checksum_sql
    from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

    started = time.perf_counter()
    with DuckDBWarehouse(database=database).session() as session:
        session.execute(QUIET)
        session.execute("CREATE SCHEMA IF NOT EXISTS models")
        session.execute(f"CREATE OR REPLACE TABLE models.users AS {users_sql(records)}")
        ensure_state(session)
        plan = _plan_spec(session)
        synced_at = dt.datetime(2026, 10, 31)
        session.execute(
            f"INSERT INTO {LEDGER} (mapping, record_key, checksum, identity, delivered, synced_at, sync_id) "
            f"SELECT '{MAPPING}', CAST(user_id AS VARCHAR), {checksum_sql(plan)}, "
            f"""'{{"userId":"' || user_id || '"}}', TRUE, TIMESTAMP '{synced_at.isoformat(sep=" ")}', 'bench' """
            "FROM models.users"
        )
        # The quick hashes: every record of the unchanged model is a `refresh` row of its plan
        # (no quick hash stored yet), which settling writes, as after an upgrade's first sync.
        unchanged = Plan(plan, session)
        unchanged.build()
        StateWriter(session, MAPPING, 0, "bench", synced_at).remember_quick_hashes(unchanged.table)
        unchanged.drop()
        previous = _pandas_hashes(session.con.sql(_mapped_select(plan)).df(), plan.primary_key)
        session.execute("CREATE SCHEMA IF NOT EXISTS bench_pandas")
        session.con.register("previous_hashes", previous)
        session.execute(f"CREATE OR REPLACE TABLE {PANDAS_LEDGER} AS SELECT * FROM previous_hashes")
        session.con.unregister("previous_hashes")
        session.execute(f"CREATE OR REPLACE TABLE models.users AS {users_sql(records, changed=True)}")
    return {
        "seconds": time.perf_counter() - started,
        "columns": list(dict.fromkeys(plan.mapped_columns)),
        "key": plan.primary_key,
    }


def plan_ours(database: str, repeat: int) -> dict[str, Any]:
    """Time the plan of one sync: ``Plan.build`` (the plan table, its counts and ``extracted``)."""
    from segment_profiles_pipeline.sync.plan import Plan
    from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

    with DuckDBWarehouse(database=database).session() as session:
        session.execute(QUIET)
        plan = Plan(_plan_spec(session), session)

        def work() -> dict[str, int]:
            found = plan.build()
            return {"add": found.added, "update": found.updated, "delete": found.deleted}

        runs, counts = timed(repeat, work)
        plan.drop()
    return {"seconds": min(runs), "runs": runs, "counts": counts}


def _before_module(ref: str) -> Any:
    """``sync/plan.py`` as of ``ref``, run as the module ``plan_before`` (everything it imports is
    today's). A fresh module each call, so one process can load two commits' plans."""
    import sys
    import types

    path = "segment_profiles_pipeline/sync/plan.py"
    module = types.ModuleType(BEFORE_MODULE)
    sys.modules[BEFORE_MODULE] = module  # dataclasses resolve string annotations through it
    exec(compile(source_at(ref, path), f"{ref}:{path}", "exec"), module.__dict__)
    return module


def plan_before(database: str, repeat: int, ref: str) -> dict[str, Any]:
    """The plan as of ``ref``, timed like ours, as its engine ran it: ``Plan.build`` where that
    commit has the ``Plan`` object (f577d37 on), else its three statements (plan table,
    ``counts_sql``, ``extracted_sql``)."""
    from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

    before = _before_module(ref)
    with DuckDBWarehouse(database=database).session() as session:
        session.execute(QUIET)
        plan = _plan_spec(session)

        def statements() -> dict[str, int]:
            session.execute(before.build_plan_sql(plan))
            ops = {str(op): int(n) for op, n in session.query(before.counts_sql(plan)).rows}
            session.query(before.extracted_sql(plan))
            return {
                "add": ops.get("add", 0),
                "update": ops.get("update", 0),
                "delete": ops.get("delete", 0) + ops.get("delete_shared", 0),
            }

        def build() -> dict[str, int]:
            found = before.Plan(plan, session).build()
            return {"add": found.added, "update": found.updated, "delete": found.deleted}

        via = "Plan.build" if hasattr(before, "Plan") else "counts_sql"
        runs, counts = timed(repeat, build if via == "Plan.build" else statements)
        session.execute(f"DROP TABLE {plan.plan_table}")
    return {"seconds": min(runs), "runs": runs, "counts": counts, "ref": ref, "via": via}


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of a side's rounds, with every round's figures kept."""
    best = dict(min(runs, key=lambda r: float(r["seconds"])))
    best["rounds"] = [{"seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"]} for r in runs]
    best["peak_rss_mb"] = max(float(r["peak_rss_mb"]) for r in runs)
    return best


def plan_pandas(database: str, columns: list[str], key: str, repeat: int) -> dict[str, Any]:
    """The diff a hand-written pandas script would do, timed from reading the tables to counts."""
    import duckdb

    with duckdb.connect(database, read_only=True) as con:
        con.execute(QUIET)
        phases: list[tuple[float, float]] = []

        def work() -> dict[str, int]:
            started = time.perf_counter()
            current = con.sql(f"SELECT {', '.join(columns)} FROM models.users").df()
            previous = con.sql(f"SELECT record_key, hash FROM {PANDAS_LEDGER}").df()
            loaded = time.perf_counter()
            hashed = _pandas_hashes(current, key)
            merged = hashed.merge(
                previous, on="record_key", how="outer", suffixes=("", "_before"), indicator=True
            )
            both = merged["_merge"] == "both"
            counts = {
                "add": int((merged["_merge"] == "left_only").sum()),
                "update": int((both & (merged["hash"] != merged["hash_before"])).sum()),
                "delete": int((merged["_merge"] == "right_only").sum()),
            }
            phases.append((loaded - started, time.perf_counter() - loaded))
            return counts

        runs, counts = timed(repeat, work)
    best = runs.index(min(runs))
    return {
        "seconds": runs[best],
        "runs": runs,
        "load_seconds": phases[best][0],
        "diff_seconds": phases[best][1],
        "counts": counts,
    }


def run(sizes: Sizes, workdir: Path) -> ScenarioResult:
    from bench.data import expected_changes

    records = sizes.plan_records
    database = str(workdir / "change_detection.duckdb")
    setup = in_child(prepare, database=database, records=records)
    ours_runs: list[dict[str, Any]] = []
    before_runs: list[dict[str, Any]] = []
    for _ in range(ROUNDS):  # alternating, so both sides see the same (shared, noisy) machine
        before_runs.append(in_child(plan_before, database=database, repeat=REPEAT, ref=BEFORE_REF))
        ours_runs.append(in_child(plan_ours, database=database, repeat=REPEAT))
    ours, before = _best(ours_runs), _best(before_runs)
    baseline = in_child(
        plan_pandas, database=database, columns=setup["columns"], key=setup["key"], repeat=REPEAT
    )
    expected = expected_changes(records)
    agree = ours["counts"] == expected == baseline["counts"] == before["counts"]
    verdict = (
        f"both found the {expected['update']:,} updated, {expected['add']:,} added and {expected['delete']:,} "
        "deleted records the generator made."
        if agree
        else f"**DIFFS DISAGREE**: expected {expected}, plan SQL found {ours['counts']}, pandas {baseline['counts']}, "
        f"plan SQL before {before['counts']}."
    )
    speedup = baseline["seconds"] / ours["seconds"]
    fast_enough = ours["seconds"] <= TARGET_SECONDS or records < TARGET_RECORDS
    met = agree and speedup >= TARGET_SPEEDUP and fast_enough
    title = f"2. change detection ({records:,} records)"
    metric = "time to plan (1% updated, 0.1% added, 0.1% deleted)"
    size_note = "" if records >= TARGET_RECORDS else f" The ≤ {TARGET_SECONDS:.0f} s target is for --large."
    row = Row(
        title,
        metric,
        "s",
        ours["seconds"],
        baseline["seconds"],
        "pandas hash + merge",
        higher_is_better=False,
        target=f"≥ {TARGET_SPEEDUP:.0f}x faster; ≤ {TARGET_SECONDS:.0f} s at {TARGET_RECORDS:,} records",
        met=met,
        notes=(
            f"{verdict} Best of {REPEAT} runs (first runs: ours {ours['runs'][0]:.2f} s, pandas "
            f"{baseline['runs'][0]:.2f} s). pandas: {baseline['load_seconds']:.1f} s loading, "
            f"{baseline['diff_seconds']:.1f} s hashing and merging, peak RSS {baseline['peak_rss_mb']:,.0f} MB; "
            f"ours: peak RSS {ours['peak_rss_mb']:,.0f} MB." + size_note
        ),
    )
    versus_before = Row(
        title,
        metric,
        "s",
        ours["seconds"],
        before["seconds"],
        f"plan SQL of {BEFORE_REF}",
        higher_is_better=False,
        target=f"≤ {TARGET_SECONDS:.0f} s at {TARGET_RECORDS:,} records",
        met=agree and fast_enough if records >= TARGET_RECORDS else None,
        notes=(
            f"Alternating, {ROUNDS} rounds of {REPEAT} runs, each side in a fresh process; best run. "
            f"Peak RSS: ours {ours['peak_rss_mb']:,.0f} MB, before {before['peak_rss_mb']:,.0f} MB."
            + size_note
        ),
    )
    details = {
        "setup": setup,
        "ours": ours,
        "before": before,
        "baseline": baseline,
        "expected": expected,
        "agree": agree,
    }
    return ScenarioResult("change_detection", title, [row, versus_before], details)
