"""Scenario 0: the whole process, as a user runs it, against the scripts they would write instead.

What runs is the user's command on a project whose only model is the sample ``users`` (with its
``users_identify`` mapping), over a generated ``app.users`` of N users (100k; the target is set
there), in a fresh folder: no computed traits, no predictions, no sample data, no readback space.
``materialize '*'`` then means exactly what it means for that user: the ``users`` model, the
identity graph, the ``users_identify`` sync and the Profiles Sync tables the project always
defines (the step durations in the JSON show what each costs). Every side is a fresh process
(``subprocess``, not a fork: start-up is part of the figure), timed from process start to exit,
against a fresh Segment-compatible server process that counts the messages that arrived:

- **ours**: ``dagster asset materialize -m segment_profiles_pipeline.definitions --select '*'``
  (the issue's command: the row), and at the default and large sizes, for the notes, the same
  with ``--select '+profile_sync/users_identify'`` (the sync and its model only) and ``dg launch
  --assets '*'`` (``make run``'s). Each run gets a fresh copy of the warehouse, so every run is a
  first sync: first-sync-ness lives in the warehouse (ledger, identity and Profiles Sync tables).
  The Dagster instance is the user's, which exists before their first sync: each command has one
  ``DAGSTER_HOME``, created untimed by ``dagster instance info`` (SQLite run, event-log index and
  schedule storage, ~2.8 s here) and kept across its runs. So nothing is hidden, the row's
  command also runs with a fresh ``DAGSTER_HOME`` per run (``materialize_fresh_home``: the
  instance's creation inside the timed process, this scenario's figure until December 2026);
- **segment-analytics-python 2.3.4**: ``bench/analytics_script.py``, the loop a user writes,
  with a lossless queue (``max_queue_size`` = N);
- **drt** (``drt-core``, reverse ETL as code): it has no Segment destination, so its generic
  ``rest_api`` destination posts Segment batches: the model SQL shapes each row as an identify
  message, ``body_mode: batch`` sends 1,000 per request, rate limit off (its default is 10
  requests/s). drt lives in its own virtualenv (``DRT_VENV``), installed on demand at the
  default and large sizes; when it cannot be installed, the side is skipped with the reason.

The row is ours against the best baseline, in messages delivered per second of wall time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import QUIET, WRITE_KEY, Row, ScenarioResult, SegmentServerProcess, Sizes, in_child

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_FILES = ("users.sql", "users.yml")
BIN = Path(sys.executable).parent
ANALYTICS_SCRIPT = Path(__file__).resolve().parent / "analytics_script.py"
ANALYTICS_LABEL = "segment-analytics-python 2.3.4, lossless queue"
DRT_VERSION = "1.2.1"
DRT_LABEL = f"drt-core {DRT_VERSION}, rest_api batches"
DRT_VENV = Path(tempfile.gettempdir()) / "segment-profiles-bench" / f"drt-core-{DRT_VERSION}"
"""Outside the project's ``.venv`` on purpose: drt's dependencies must not touch ours."""
DRT_BATCH = 1_000
"""Messages per request: ~250 KB, under Segment's 500 KB request limit."""
INSTALL_TIMEOUT_S = 600.0
PROCESS_TIMEOUT_S = 1_800.0
TARGET_SPEEDUP = 2.0
TARGET_USERS = 100_000
METRIC = "messages/s, process start to exit"
SYNC_ONLY = "+profile_sync/users_identify"
"""The sync and what it needs (the ``users`` model): a user who wants only the sync runs this."""
RUN_EVENT = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \+0000 - dagster - .* - (RUN_START|RUN_SUCCESS) - ", re.M
)
STEP_LINE = re.compile(r'Finished execution of step "([^"]+)" in ([\d.]+)(ms|s)\b')


def prepare(root: str, users: int) -> dict[str, Any]:
    """Untimed: the project folder (the sample ``users`` files only) and its warehouse."""
    import duckdb

    from bench.data import users_sql

    models = Path(root) / "models"
    models.mkdir(parents=True, exist_ok=True)
    for name in SAMPLE_FILES:
        shutil.copyfile(ROOT / "models" / name, models / name)
    with duckdb.connect(str(Path(root) / "pristine.duckdb")) as con:
        con.execute(QUIET)
        con.execute("CREATE SCHEMA IF NOT EXISTS app")
        con.execute(f"CREATE OR REPLACE TABLE app.users AS {users_sql(users)}")
        (count,) = con.execute("SELECT count(*) FROM app.users").fetchone() or (0,)
    return {"users": count}


def project_environment(root: Path, database: Path, home: Path, url: str) -> dict[str, str]:
    """The environment of our side: every project setting from this run, none from the caller's
    shell (a ``WAREHOUSE`` or ``SEGMENT_*`` exported there would change what is measured)."""
    from segment_profiles_pipeline.settings import ENVIRONMENT

    env = {name: value for name, value in os.environ.items() if name not in ENVIRONMENT}
    return env | {
        "WAREHOUSE": "duckdb",
        "DUCKDB_DATABASE": str(database),
        "SAMPLE_DATA": "0",
        "SEGMENT_PROFILES_MODELS_DIR": str(root / "models"),
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_ENDPOINT": url,
        "DAGSTER_HOME": str(home),
    }


def timed_process(argv: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> dict[str, Any]:
    """Run one command to its end; wall seconds from start to exit. Its output goes to ``log``;
    a non-zero exit raises with the end of that log, since a failed run has no figure."""
    with log.open("w") as out:
        started_at = time.time()
        started = time.perf_counter()
        process = subprocess.run(
            argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=PROCESS_TIMEOUT_S,
            check=False,
        )
        seconds = time.perf_counter() - started
    if process.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"`{' '.join(argv)}` exited with {process.returncode} (log: {log}):\n{tail}")
    return {"seconds": seconds, "started_at": started_at}


def run_window(log_text: str, started_at: float, seconds: float) -> dict[str, float]:
    """Seconds from process start to the run's ``RUN_START`` event and from ``RUN_SUCCESS`` to exit
    (loading before, bookkeeping after), from the log's UTC timestamps: whole seconds only, so
    each figure is good to about one second."""
    found = dict((event, stamp) for stamp, event in RUN_EVENT.findall(log_text))
    if set(found) != {"RUN_START", "RUN_SUCCESS"}:
        return {}
    at = {
        event: dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC).timestamp()
        for event, stamp in found.items()
    }
    return {
        "until_run_start_s": at["RUN_START"] - started_at,
        "after_run_success_s": started_at + seconds - at["RUN_SUCCESS"],
    }


def step_seconds(log_text: str) -> dict[str, float]:
    """Each Dagster step's own duration, from the run's ``STEP_SUCCESS`` lines."""
    return {
        step: float(value) / (1000 if unit == "ms" else 1)
        for step, value, unit in STEP_LINE.findall(log_text)
    }


def new_instance(home: Path) -> Path:
    """A ``DAGSTER_HOME`` with the project's ``dagster.yaml`` and nothing else (no storage yet)."""
    home.mkdir(parents=True)
    shutil.copyfile(ROOT / "instance" / "dagster.yaml", home / "dagster.yaml")
    return home


def existing_instance(home: Path) -> Path:
    """Untimed: a ``DAGSTER_HOME`` whose instance exists, as a user's does before their first sync
    (``dagster instance info`` creates its SQLite storages and runs their migrations)."""
    new_instance(home)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    subprocess.run(
        [str(BIN / "dagster"), "instance", "info"],
        env=env,
        capture_output=True,
        timeout=PROCESS_TIMEOUT_S,
        check=True,
    )
    return home


FRESH_HOME = "materialize_fresh_home"
"""The row's command with a fresh ``DAGSTER_HOME`` per run (the instance created in the timed process)."""


def _ours(command: str, root: Path, run: int, home: Path | None, url: str) -> dict[str, Any]:
    """One of our commands on a fresh copy of the warehouse, with the existing instance ``home``
    (None: a fresh ``DAGSTER_HOME`` for this run)."""
    folder = root / f"{command}-{run}"
    folder.mkdir(parents=True)
    home = home or new_instance(folder / "dagster_home")
    database = folder / "warehouse.duckdb"
    shutil.copyfile(root / "pristine.duckdb", database)
    env = project_environment(root, database, home, url)
    materialize = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "segment_profiles_pipeline.definitions",
    ]
    argv = {
        "materialize": [*materialize, "--select", "*"],
        FRESH_HOME: [*materialize, "--select", "*"],
        "sync_only": [*materialize, "--select", SYNC_ONLY],
        # dg reads [tool.dg] from the project's pyproject.toml, so it runs in the project root
        "dg_launch": [str(BIN / "dg"), "launch", "--assets", "*"],
    }[command]
    log = folder / "run.log"
    result = timed_process(argv, env=env, cwd=ROOT, log=log)
    text = log.read_text(errors="replace")
    steps = step_seconds(text)
    window = run_window(text, result["started_at"], result["seconds"])
    return (
        result | window | {"steps": steps, "outside_steps_seconds": result["seconds"] - sum(steps.values())}
    )


def _analytics(root: Path, run: int, url: str) -> dict[str, Any]:
    log = root / f"analytics-{run}.log"
    argv = [sys.executable, str(ANALYTICS_SCRIPT), str(root / "pristine.duckdb"), url, WRITE_KEY]
    result = timed_process(argv, env=dict(os.environ), cwd=root, log=log)
    report = [line for line in log.read_text().splitlines() if line.startswith("{")]
    return result | json.loads(report[-1])


def drt_model_sql() -> str:
    """Each ``app.users`` row as the identify message analytics-python sends for it (same traits,
    ISO timestamps in UTC), so drt's batch template only has to wrap the rows."""
    iso = "'%Y-%m-%dT%H:%M:%S.%gZ'"
    return (
        "SELECT 'identify' AS type, user_id AS \"userId\", "
        "{'email': email, 'first_name': first_name, 'last_name': last_name, 'phone': phone, 'plan': plan, "
        f"'created_at': strftime(created_at, {iso})}} AS traits, "
        f"strftime(updated_at, {iso}) AS timestamp, {{'All': false}} AS integrations FROM app.users"
    )


def write_drt_project(folder: Path, database: Path, url: str) -> Path:
    """A drt project (``drt_project.yml``, one sync, a profile in its own ``HOME``); returns that HOME.

    The write key goes in the body (``writeKey``), as Segment accepts: drt's basic auth refuses the
    empty password a Segment write key has.
    """
    import yaml

    home = folder / "home"
    (home / ".drt").mkdir(parents=True, exist_ok=True)
    (folder / "syncs").mkdir(exist_ok=True)
    (folder / "drt_project.yml").write_text(
        yaml.safe_dump({"name": "bench", "version": "0.1", "profile": "bench"})
    )
    (home / ".drt" / "profiles.yml").write_text(
        yaml.safe_dump({"bench": {"type": "duckdb", "database": str(database)}})
    )
    sync = {
        "name": "users_identify",
        "description": "app.users to Segment identify calls, through the generic REST destination",
        "model": drt_model_sql(),
        "destination": {
            "type": "rest_api",
            "url": f"{url}/v1/batch",
            "method": "POST",
            "headers": {"Content-Type": "application/json"},
            "body_mode": "batch",
            "batch_template": f'{{"writeKey": "{WRITE_KEY}", "batch": {{{{ rows | tojson_safe }}}}}}',
        },
        "sync": {
            "mode": "full",
            "batch_size": DRT_BATCH,
            "rate_limit": {"requests_per_second": 0},
            "on_error": "fail",
        },
    }
    (folder / "syncs" / "users_identify.yml").write_text(yaml.safe_dump(sync, sort_keys=False))
    return home


def ensure_drt(install: bool) -> tuple[Path | None, str]:
    """drt's executable in ``DRT_VENV`` (created when ``install``), or None and why not."""
    drt = DRT_VENV / "bin" / "drt"
    probe = [str(DRT_VENV / "bin" / "python"), "-c", "import drt, duckdb"]
    if drt.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return drt, f"drt-core {DRT_VERSION} in {DRT_VENV}"
    if not install:
        return None, f"drt is not installed in {DRT_VENV} (the default and large sizes install it)"
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(DRT_VENV)],
        [str(DRT_VENV / "bin" / "pip"), "install", "--quiet", f"drt-core[duckdb]=={DRT_VERSION}"],
    ]
    print(f"  installing drt-core {DRT_VERSION} into {DRT_VENV}...", file=sys.stderr, flush=True)
    for step in steps:
        try:
            done = subprocess.run(
                step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            return None, f"`{' '.join(step)}` did not finish within {INSTALL_TIMEOUT_S:.0f} s"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return None, f"`{' '.join(step)}` failed ({last})"
    return drt, f"drt-core {DRT_VERSION} installed in {DRT_VENV}"


def _drt(drt: Path, root: Path, run: int, url: str) -> dict[str, Any]:
    folder = root / f"drt-{run}"
    folder.mkdir()
    home = write_drt_project(folder, root / "pristine.duckdb", url)
    env = dict(os.environ) | {"HOME": str(home), "DO_NOT_TRACK": "1"}
    return timed_process(
        [str(drt), "run", "--select", "users_identify"], env=env, cwd=folder, log=folder / "run.log"
    )


def _against_server(side: Any, *args: Any) -> dict[str, Any]:
    """One side with a fresh server; what arrived there, and the rate per second of wall time."""
    with SegmentServerProcess() as server:
        result = side(*args, server.url)
        result["server"] = server.stats()
    result["delivered"] = result["server"]["messages"]
    result["delivered_per_s"] = result["delivered"] / result["seconds"]
    return result


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(runs, key=lambda r: r["delivered_per_s"])
    return best | {"runs_seconds": [r["seconds"] for r in runs]}


def run(sizes: Sizes, workdir: Path) -> ScenarioResult:
    users = sizes.whole_process_users
    root = workdir / "whole_process"
    setup = in_child(prepare, root=str(root), users=users)
    drt, drt_status = ensure_drt(install=sizes.name != "tiny")
    ours = (*sizes.whole_process_commands, FRESH_HOME)
    homes = {
        command: existing_instance(root / f"{command}-home") for command in ours if command != FRESH_HOME
    }
    sides: dict[str, list[dict[str, Any]]] = {name: [] for name in (*ours, "analytics", "drt")}
    for attempt in range(sizes.whole_process_repeat):  # alternating, so load on the machine hits every side
        for command in ours:
            sides[command].append(_against_server(_ours, command, root, attempt, homes.get(command)))
        sides["analytics"].append(_against_server(_analytics, root, attempt))
        if drt is not None:
            sides["drt"].append(_against_server(_drt, drt, root, attempt))
    for name in ours:
        short = [r["delivered"] for r in sides[name] if r["delivered"] != users]
        if short:
            raise RuntimeError(
                f"our `{name}` run delivered {short[0]:,} of {users:,} messages; the figure only means "
                f"something when everything arrives. See the run logs under {root}."
            )
    best = {name: _best(runs) for name, runs in sides.items() if runs}
    baselines = {"analytics": ANALYTICS_LABEL, "drt": DRT_LABEL}
    leader = max((name for name in baselines if name in best), key=lambda n: best[n]["delivered_per_s"])
    title = f"0. whole process, materialize '*' ({users:,} users)"
    notes = _notes(best, users, drt_status if drt is not None else f"drt skipped: {drt_status}.")
    rows = [
        Row(
            title,
            f"{METRIC} (`dagster asset materialize`)",
            "msg/s",
            best["materialize"]["delivered_per_s"],
            best[leader]["delivered_per_s"],
            f"best baseline: {baselines[leader]}",
            higher_is_better=True,
            target=f"≥ {TARGET_SPEEDUP:.0f}x the best baseline",
            met=(
                best["materialize"]["delivered_per_s"] >= TARGET_SPEEDUP * best[leader]["delivered_per_s"]
                if users >= TARGET_USERS
                else None
            ),
            notes=notes,
        )
    ]
    informative = {
        FRESH_HOME: (
            "`dagster asset materialize`, fresh DAGSTER_HOME",
            "none (the instance created in the run)",
        ),
        "sync_only": (f"`materialize --select '{SYNC_ONLY}'`", "none (the sync and its model only)"),
        "dg_launch": ("`dg launch`", "none (make run's command)"),
    }
    rows += [
        Row(
            title,
            f"{METRIC} ({command})",
            "msg/s",
            best[name]["delivered_per_s"],
            best[leader]["delivered_per_s"],
            f"best baseline: {baselines[leader]}",
            higher_is_better=True,
            target=target,
            met=None,
        )
        for name, (command, target) in informative.items()
        if name in best
    ]
    details = {"setup": setup, "drt": drt_status, "best_baseline": leader, "sides": sides}
    return ScenarioResult("whole_process", title, rows, details)


def _window(side: dict[str, Any]) -> str:
    if "until_run_start_s" not in side:
        return "start-up, loading, run bookkeeping"
    return (
        f"~{side['until_run_start_s']:.0f} s from process start to RUN_START, "
        f"~{side['after_run_success_s']:.0f} s from RUN_SUCCESS to exit, the rest between steps"
    )


def _notes(best: dict[str, dict[str, Any]], users: int, drt_status: str) -> str:
    def side(name: str, label: str) -> str:
        figures = best[name]
        runs = ", ".join(f"{s:.1f}" for s in figures["runs_seconds"])
        return f"{label} {figures['seconds']:.1f} s (runs {runs} s), {figures['delivered']:,} of {users:,} arrived"

    labels = {
        "materialize": "materialize '*'",
        FRESH_HOME: "materialize '*' with a fresh DAGSTER_HOME",
        "sync_only": "sync only",
        "dg_launch": "dg launch",
        "analytics": "analytics",
        "drt": "drt",
    }
    parts = [side(name, label) for name, label in labels.items() if name in best]
    ours = best["materialize"]
    steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in ours["steps"].items())
    return (
        f"{'; '.join(parts)}. Best run of each; each a fresh process, server and warehouse copy, our commands "
        f"on an existing Dagster instance unless said otherwise. materialize's steps: {steps}; "
        f"{ours['outside_steps_seconds']:.1f} s outside the steps ({_window(ours)}). {drt_status}"
    )
