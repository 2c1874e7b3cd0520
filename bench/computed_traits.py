"""Scenario 3: computed traits. The six Flex recipes of ``models/computed_traits.yml``.

N Flex events (1M; 10M with ``--large``; half initiated, half completed, 0.5% of messages held
twice as Segment warehouses do) for N/20 users, 5% of the messages anonymous only (the user's
device id, which the identity graph links to the user). The identity graph is built first
(untimed; its own time is in the notes), as the asset graph does. Each side runs in its own process:

- **ours**: ``compute_traits`` with ``full_refresh=True`` (the full computation) per
  identity-resolved profile, then again after 1% new events have landed above the watermark and
  the graph took them in (the incremental run);
- **baseline**: the same six traits as a hand-written pandas script (load, deduplicate by message
  id, key each event on the graph's profile of its user_id, else anonymous_id, order events,
  ``groupby``), run on the same tables each time; such a script has no incremental mode, so after
  the new events it recomputes everything;
- **before**: the traits computation as it was before incremental runs were limited to what
  changed (git ``BEFORE_REF``: every run staged the whole identifier map and every send target,
  diffed the map with two EXCEPTs, compared every profile's target and keyed the new events
  through the whole map), on a copy of the same events and graph, loaded from git into a package
  of its own: old and new side by side in the same run, full and incremental.

After each run both results are compared row by row in DuckDB (``EXCEPT ALL`` both ways, pandas
values cast to the warehouse's column types). A mismatch is reported in the table and the JSON:
timings of different answers would not be a comparison.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.data import ANCHOR, EVENTS_PER_USER
from bench.harness import QUIET, Row, ScenarioResult, Sizes, in_child, source_at, timed

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "models"
BEFORE_REF = "43f1bcb"
"""The last commit before incremental runs were limited to what changed (issue 13)."""
BEFORE_PACKAGE = "traits_before"
INITIATED = "flex.flex_engagement_initiated"
COMPLETED = "flex.flex_engagement_completed"
NEW_EVENTS_SHARE = 0.01
REPEAT = 2
"""Every measured run happens twice per side, alternating ours and before, and the best counts
(see ``harness.timed``); the incremental run repeats on a copy of the state it starts from."""
READY = ".ready"
"""Suffix of the database copies the repeated incremental runs start from."""
TARGET_SECONDS = 10.0
TARGET_EVENTS = 10_000_000
TARGET_INCREMENTAL_SHARE = 0.10
if TYPE_CHECKING:  # each child process imports only what its side needs (see harness.in_child)
    import pandas as pd

NOW = dt.datetime.fromisoformat(ANCHOR)
"""The full run's time; the incremental run happens an hour later (no recipe has a window)."""


def add_events(database: str, events: int, users: int, first: int) -> dict[str, Any]:
    """Untimed: append ``events`` messages numbered from ``first`` (creating the tables at first)."""
    import duckdb

    from bench.data import duplicates_sql, flex_sql

    with duckdb.connect(database) as con:
        con.execute(QUIET)
        con.execute("CREATE SCHEMA IF NOT EXISTS flex")
        for table, select in flex_sql(events, users=users, first=first).items():
            verb = f"CREATE TABLE {table} AS" if first == 0 else f"INSERT INTO {table}"
            con.execute(f"{verb} {select}")
            con.execute(duplicates_sql(table, first))
        rows = con.execute(
            f"SELECT (SELECT count(*) FROM {INITIATED}) + (SELECT count(*) FROM {COMPLETED})"
        ).fetchone()
    return {"rows": rows[0] if rows else 0}


def build_graph(database: str, now: str) -> dict[str, Any]:
    """The identity graph over both tables (full the first time, incremental after), timed."""
    from segment_profiles_pipeline.identity.compute import compute_identity
    from segment_profiles_pipeline.identity.config import load_identity
    from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

    tables = [tuple(t.split(".")) for t in (INITIATED, COMPLETED)]
    with DuckDBWarehouse(database=database).session() as session:
        session.execute(QUIET)
        stats = compute_identity(
            session, load_identity(MODELS_DIR), tables, [], dt.datetime.fromisoformat(now)
        )
    return {"seconds": stats.seconds, "mode": stats.mode, "profiles": stats.profiles}


def _before_package() -> Any:
    """Import the traits computation at ``BEFORE_REF`` from git as ``traits_before`` (compiler and
    compute, their imports of each other rewritten; everything else, the definitions' loader
    included, is today's, so both sides read the same project)."""
    import importlib
    import sys
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="traits-before-"))
    package = root / BEFORE_PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")  # not the old one: it imports the Dagster assets
    for name in ("compiler", "compute"):
        text = source_at(BEFORE_REF, f"segment_profiles_pipeline/traits/{name}.py")
        for module in ("compiler", "compute"):
            text = text.replace(f"segment_profiles_pipeline.traits.{module}", f"{BEFORE_PACKAGE}.{module}")
        (package / f"{name}.py").write_text(text)
    sys.path.insert(0, str(root))
    return importlib.import_module(f"{BEFORE_PACKAGE}.compute")


def traits_before(database: str, now: str, full_refresh: bool, repeat: int = 1) -> dict[str, Any]:
    """``compute_traits`` as of ``BEFORE_REF``, timed like ours."""
    from segment_profiles_pipeline.traits import load_traits

    return _timed_traits(_before_package().compute_traits, load_traits, database, now, full_refresh, repeat)


def traits_ours(database: str, now: str, full_refresh: bool, repeat: int = 1) -> dict[str, Any]:
    """``compute_traits``, timed around the call (``repeat`` times in a row)."""
    from segment_profiles_pipeline.traits import compute_traits, load_traits

    return _timed_traits(compute_traits, load_traits, database, now, full_refresh, repeat)


def _timed_traits(
    compute_traits: Any, load_traits: Any, database: str, now: str, full_refresh: bool, repeat: int
) -> dict[str, Any]:
    from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse

    traits = load_traits(MODELS_DIR)
    if traits is None:
        raise RuntimeError(f"{MODELS_DIR}/computed_traits.yml is missing; the scenario runs its six recipes.")
    with DuckDBWarehouse(database=database).session() as session:
        session.execute(QUIET)
        runs, stats = timed(
            repeat,
            lambda: compute_traits(
                session, traits, dt.datetime.fromisoformat(now), full_refresh=full_refresh
            ),
        )
    return {
        "seconds": min(runs),
        "runs": runs,
        "mode": stats.mode,
        "reason": stats.reason,
        "profiles": stats.rows,
        "profiles_recomputed": stats.profiles_recomputed,
        "profiles_from_history": stats.profiles_from_history,
        "new_events": stats.new_events,
        "profiles_moved": getattr(stats, "profiles_moved", 0),  # the pre-identity stats have none
    }


def _events(frame: pd.DataFrame, graph: pd.DataFrame) -> pd.DataFrame:
    """Deduplicate by message id (first received copy), attach the resolved profile (the graph's
    profile of the user_id, else of the anonymous_id; none when the graph holds neither), order."""
    import pandas as pd

    frame = frame.sort_values(["received_at", "timestamp", "user_id", "anonymous_id"], na_position="last")
    frame = frame.drop_duplicates("id")

    def owner(kind: str) -> pd.Series:
        rows = graph[graph["external_id_type"] == kind]
        return frame[kind].map(rows.set_index("external_id_value")["canonical_segment_id"])

    frame = frame.assign(profile_key=owner("user_id").fillna(owner("anonymous_id")))
    frame = frame[frame["profile_key"].notna()]
    return frame.sort_values(["timestamp", "received_at", "id"], na_position="first").astype(
        {"profile_key": pd.StringDtype()}
    )


def _targets(graph: pd.DataFrame) -> pd.DataFrame:
    """Per profile: its first user_id, else its first anonymous_id (by seq, then value)."""
    import pandas as pd

    first = (
        graph[graph["external_id_type"].isin(["user_id", "anonymous_id"])]
        .sort_values(["seq", "external_id_value"])
        .drop_duplicates(["canonical_segment_id", "external_id_type"])
        .pivot(index="canonical_segment_id", columns="external_id_type", values="external_id_value")
    )
    user = first["user_id"] if "user_id" in first else pd.Series(index=first.index, dtype=object)
    anonymous = (
        first["anonymous_id"] if "anonymous_id" in first else pd.Series(index=first.index, dtype=object)
    )
    return pd.DataFrame({"user_id": user, "anonymous_id": anonymous.where(user.isna())})


def _compute_pandas(initiated: pd.DataFrame, completed: pd.DataFrame, graph: pd.DataFrame) -> pd.DataFrame:
    """The six recipes with pandas, one row per profile, columns as ``traits.computed_traits``."""
    import pandas as pd

    initiated, completed = _events(initiated, graph), _events(completed, graph)
    by_profile = initiated.groupby("profile_key", sort=False)
    inbound = initiated["direction"] == "Inbound"
    first = pd.DataFrame(
        {
            "total_inbounds": inbound.groupby(initiated["profile_key"], sort=False).sum(),
            "total_outbounds": (initiated["direction"] == "Outbound")
            .groupby(initiated["profile_key"], sort=False)
            .sum(),
            "last_known_service_agent": by_profile["last_known_agent_worker_sid"].last(),  # last non-null
            "last_interaction_duration": by_profile["duration"].last(),
        }
    )
    channels = (
        initiated[inbound & initiated["channel_type"].notna()]
        .groupby(["profile_key", "channel_type"], sort=False)
        .size()
        .reset_index(name="n")
    )
    frequent = (
        channels[channels["n"] >= 2]
        .sort_values(["profile_key", "n", "channel_type"], ascending=[True, False, True])
        .drop_duplicates("profile_key")
        .set_index("profile_key")["channel_type"]
    )
    first["frequent_inbound_channel"] = frequent
    by_profile = completed.groupby("profile_key", sort=False)
    second = pd.DataFrame({"sentiment_in_last_interaction": by_profile["sentiment"].last()})
    result = first.join(second, how="outer")
    result = result.join(_targets(graph), how="left")
    return result.rename_axis("profile_key").reset_index()


def traits_pandas(database: str, out: str, repeat: int = 1) -> dict[str, Any]:
    """The hand-written pandas script, timed from reading the tables to the result (``repeat``
    times in a row); the result is then written to ``out`` (Parquet, untimed) for the comparison."""
    import duckdb

    with duckdb.connect(database, read_only=True) as con:
        con.execute(QUIET)
        loads: list[float] = []

        def work() -> pd.DataFrame:
            started = time.perf_counter()
            initiated = con.sql(
                "SELECT id, user_id, anonymous_id, timestamp, received_at, direction, channel_type, "
                f"last_known_agent_worker_sid, duration FROM {INITIATED}"
            ).df()
            completed = con.sql(
                f"SELECT id, user_id, anonymous_id, timestamp, received_at, sentiment FROM {COMPLETED}"
            ).df()
            graph = con.sql(
                "SELECT external_id_type, external_id_value, canonical_segment_id, seq "
                "FROM identity.external_id_mapping"
            ).df()
            loads.append(time.perf_counter() - started)
            return _compute_pandas(initiated, completed, graph)

        runs, result = timed(repeat, work)
    result.to_parquet(out, index=False)
    best = runs.index(min(runs))
    return {"seconds": runs[best], "runs": runs, "load_seconds": loads[best], "profiles": len(result)}


def compare(database: str, parquet: str) -> dict[str, Any]:
    """Rows only in ours / only in the pandas result (values cast to the warehouse's types)."""
    import duckdb

    with duckdb.connect(database, read_only=True) as con:
        con.execute(QUIET)
        columns = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'traits' AND table_name = 'computed_traits' ORDER BY ordinal_position"
        ).fetchall()
        ours = ", ".join(name for name, _ in columns)
        theirs = ", ".join(f"CAST({name} AS {kind}) AS {name}" for name, kind in columns)
        pandas_rows = f"SELECT {theirs} FROM read_parquet('{parquet}')"
        only_ours = con.execute(
            f"SELECT count(*) FROM (SELECT {ours} FROM traits.computed_traits EXCEPT ALL {pandas_rows})"
        ).fetchone()
        only_pandas = con.execute(
            f"SELECT count(*) FROM ({pandas_rows} EXCEPT ALL SELECT {ours} FROM traits.computed_traits)"
        ).fetchone()
        example = con.execute(
            f"SELECT * FROM (SELECT {ours} FROM traits.computed_traits EXCEPT ALL {pandas_rows}) LIMIT 1"
        ).fetchall()
    return {
        "only_ours": only_ours[0] if only_ours else -1,
        "only_pandas": only_pandas[0] if only_pandas else -1,
        "example": [str(v) for v in example[0]] if example else None,
    }


def _runs(result: dict[str, Any]) -> str:
    return ", ".join(f"{seconds:.2f}" for seconds in result["runs"]) + " s"


def _agree(check: dict[str, Any]) -> bool:
    return check["only_ours"] == 0 and check["only_pandas"] == 0


def _alternate(
    sides: dict[str, tuple[Any, str]], repeat: int, fresh: str | None, **kwargs: Any
) -> dict[str, Any]:
    """Each side ``name: (function, database)`` ``repeat`` times, alternating sides, each run in its
    own process; the best run per side, with every run in ``runs``. With ``fresh`` (a file name
    suffix) each run starts from a copy of ``<database><fresh>`` (untimed), so an incremental run
    can be repeated on the same new events."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for _ in range(repeat):
        for name, (function, database) in sides.items():
            if fresh:
                shutil.copy(database + fresh, database)
            results[name].append(in_child(function, database=database, **kwargs))
    best = {}
    for name, runs in results.items():
        best[name] = min(runs, key=lambda r: r["seconds"]) | {"runs": [r["seconds"] for r in runs]}
    return best


def run(sizes: Sizes, workdir: Path) -> ScenarioResult:
    events = sizes.trait_events
    users = max(1, events // EVENTS_PER_USER)
    new_events = max(2, int(events * NEW_EVENTS_SHARE))
    database = str(workdir / "computed_traits.duckdb")
    parquet = str(workdir / "pandas_traits.parquet")
    before_db = str(workdir / "computed_traits_before.duckdb")
    setup = in_child(add_events, database=database, events=events, users=users, first=0)
    graph_full = in_child(build_graph, database=database, now=NOW.isoformat())
    shutil.copy(database, before_db)  # the same events and graph for the code before
    sides = {"ours": (traits_ours, database), "before": (traits_before, before_db)}
    full = _alternate(sides, REPEAT, None, now=NOW.isoformat(), full_refresh=True)
    ours_full, before_full = full["ours"], full["before"]
    pandas_full = in_child(traits_pandas, database=database, out=parquet, repeat=REPEAT)
    check_full = in_child(compare, database=database, parquet=parquet)
    later = (NOW + dt.timedelta(hours=1)).isoformat()
    appended = in_child(add_events, database=database, events=new_events, users=users, first=events // 2)
    graph_incremental = in_child(build_graph, database=database, now=later)
    in_child(add_events, database=before_db, events=new_events, users=users, first=events // 2)
    in_child(build_graph, database=before_db, now=later)
    for db in (database, before_db):  # the state every repetition of the incremental run starts from
        shutil.copy(db, db + READY)
    incremental = _alternate(sides, REPEAT, READY, now=later, full_refresh=False)
    ours_incremental, before_incremental = incremental["ours"], incremental["before"]
    pandas_again = in_child(traits_pandas, database=database, out=parquet)
    check_incremental = in_child(compare, database=database, parquet=parquet)
    check_before = in_child(compare, database=before_db, parquet=parquet)

    agree = _agree(check_full) and _agree(check_incremental) and _agree(check_before)
    verdict = (
        f"pandas and ours agree on all {ours_incremental['profiles']:,} profiles, after the full and the incremental run."
        if agree
        else f"**RESULTS DIFFER** (full: {check_full}, incremental: {check_incremental}, before: {check_before}): "
        "fix before trusting timings."
    )
    share = ours_incremental["seconds"] / ours_full["seconds"]
    before_share = before_incremental["seconds"] / before_full["seconds"]
    incremental_ok = ours_incremental["mode"] == "incremental"
    title = f"3. computed traits ({events:,} events)"
    rows = [
        Row(
            title,
            "six traits, full computation",
            "s",
            ours_full["seconds"],
            pandas_full["seconds"],
            "pandas groupby",
            higher_is_better=False,
            target=f"< {TARGET_SECONDS:.0f} s at {TARGET_EVENTS:,} events",
            met=(ours_full["seconds"] < TARGET_SECONDS and agree) if events >= TARGET_EVENTS else None,
            notes=(
                f"{ours_full['profiles']:,} profiles; {setup['rows']:,} rows incl. duplicate copies. Best of "
                f"{REPEAT} runs (first runs: ours {ours_full['runs'][0]:.2f} s, pandas {pandas_full['runs'][0]:.2f} s). pandas: "
                f"{pandas_full['load_seconds']:.1f} s loading, peak RSS {pandas_full['peak_rss_mb']:,.0f} MB; "
                f"ours: peak RSS {ours_full['peak_rss_mb']:,.0f} MB. {verdict}"
            ),
        ),
        Row(
            title,
            f"incremental after {NEW_EVENTS_SHARE:.0%} new events",
            "s",
            ours_incremental["seconds"],
            pandas_again["seconds"],
            "pandas groupby, full recompute",
            higher_is_better=False,
            target=f"≤ {TARGET_INCREMENTAL_SHARE:.0%} of our full time",
            met=incremental_ok and share <= TARGET_INCREMENTAL_SHARE and agree,
            notes=(
                f"{share:.1%} of our full time; best of {REPEAT}, each from a copy of the same state; mode {ours_incremental['mode']} ({ours_incremental['reason']}), "
                f"{ours_incremental['profiles_recomputed']:,} profiles recomputed "
                f"({ours_incremental['profiles_from_history']:,} from their whole history) for "
                f"{ours_incremental['new_events']:,} new rows."
            ),
        ),
        Row(
            title,
            "six traits, full computation, ours vs before",
            "s",
            ours_full["seconds"],
            before_full["seconds"],
            f"before: git {BEFORE_REF}",
            higher_is_better=False,
            target="no slower than before (within noise)",
            met=ours_full["seconds"] < 1.15 * before_full["seconds"],
            notes=(
                f"Alternating, best of {REPEAT} each (ours {_runs(ours_full)}, before {_runs(before_full)}); ours also "
                "stores the identifiers its events hold that the graph lacks. The identity graph itself (untimed above): "
                f"{graph_full['seconds']:.2f} s full, {graph_incremental['seconds']:.2f} s incremental."
            ),
        ),
        Row(
            title,
            f"incremental after {NEW_EVENTS_SHARE:.0%} new events, ours vs before",
            "s",
            ours_incremental["seconds"],
            before_incremental["seconds"],
            f"before: git {BEFORE_REF}",
            higher_is_better=False,
            target=f"≤ {TARGET_INCREMENTAL_SHARE:.0%} of full (before: {before_share:.1%} of its full)",
            met=share <= TARGET_INCREMENTAL_SHARE and agree,
            notes=(
                f"Alternating, each from a copy of the same state, best of {REPEAT} (ours {_runs(ours_incremental)}, "
                f"before {_runs(before_incremental)}). before: mode {before_incremental['mode']}, "
                f"{before_incremental['profiles_recomputed']:,} profiles recomputed; results equal to pandas on both sides."
            ),
        ),
    ]
    details = {
        "setup": setup,
        "appended": appended,
        "ours_full": ours_full,
        "pandas_full": pandas_full,
        "check_full": check_full,
        "ours_incremental": ours_incremental,
        "graph_full": graph_full,
        "graph_incremental": graph_incremental,
        "before_full": before_full,
        "before_incremental": before_incremental,
        "pandas_recompute": pandas_again,
        "check_incremental": check_incremental,
        "check_before": check_before,
        "agree": agree,
    }
    return ScenarioResult("computed_traits", title, rows, details)
