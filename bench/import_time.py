"""Scenario 5: start-up. How long before any ``dagster`` command on the project can act?

Each figure is one fresh interpreter (``python -c ...`` as a subprocess, timed from start to
exit), best of N, on DuckDB settings and the sample project's models folder:

- **import**: ``import segment_profiles_pipeline.definitions`` (the issue's wording; the module
  is lazy, so this is the imports alone);
- **load**: that import plus building the ``Definitions`` and resolving its repository, as
  ``dagster asset materialize -m ...`` does before it runs anything: the row the target is for;
- **baseline**: ``import dagster`` alone, the floor any Dagster project pays.

Each load also reports whether a Snowflake module got imported (it must not, on DuckDB), and one
more interpreter runs with ``-X importtime``: the heaviest top-level imports go in the notes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.harness import Row, ScenarioResult, Sizes

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 1.5
REPORT = (
    "import json, sys; "
    "print(json.dumps({'modules': len(sys.modules), "
    "'snowflake': sorted(m for m in sys.modules if 'snowflake' in m.split('.')[0] and m != 'snowflake')}))"
)
"""What the interpreter holds at the end. The bare ``snowflake`` namespace does not count: Snowpark's
``-nspkg.pth`` file creates it in every interpreter of the venv, before any code runs."""
COMMANDS = {
    "baseline": "import dagster; " + REPORT,
    "import": "import segment_profiles_pipeline.definitions; " + REPORT,
    "load": "import segment_profiles_pipeline.definitions as d; d.defs().get_repository_def(); " + REPORT,
}
TOP_IMPORTS = 6


def environment(workdir: Path) -> dict[str, str]:
    """DuckDB settings and the sample models; the caller's project settings left out."""
    from segment_profiles_pipeline.settings import ENVIRONMENT

    env = {name: value for name, value in os.environ.items() if name not in ENVIRONMENT}
    return env | {
        "WAREHOUSE": "duckdb",
        "DUCKDB_DATABASE": str(workdir / "import_time.duckdb"),  # never opened: loading reads no data
        "SEGMENT_PROFILES_MODELS_DIR": str(ROOT / "models"),
        "PYTHONWARNINGS": "ignore",
    }


def interpreter(
    code: str, env: dict[str, str], *options: str
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """One fresh ``python -c code``: wall seconds from start to exit, and what it printed."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *options, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"`python -c {code!r}` exited with {done.returncode}:\n{tail}")
    return seconds, done


def heaviest_imports(importtime_stderr: str, top: int = TOP_IMPORTS) -> list[tuple[str, float]]:
    """Seconds spent in each top-level package's own modules, from ``-X importtime``, heaviest first.

    The ``self`` column summed per root package (``dagster.core.x`` counts for ``dagster``): the
    ``cumulative`` one would charge a package for whatever it happens to import first.
    """
    totals: dict[str, float] = defaultdict(float)
    for line in importtime_stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(fields) != 3 or not fields[0].strip().isdigit():
            continue
        totals[fields[2].strip().split(".")[0]] += int(fields[0]) / 1e6
    return sorted(totals.items(), key=lambda item: item[1], reverse=True)[:top]


def run(sizes: Sizes, workdir: Path) -> ScenarioResult:
    env = environment(workdir)
    runs: dict[str, list[float]] = {name: [] for name in COMMANDS}
    reports: dict[str, dict[str, Any]] = {}
    for _ in range(sizes.import_repeat):  # alternating, so a busy moment hits every command
        for name, code in COMMANDS.items():
            seconds, done = interpreter(code, env)
            runs[name].append(seconds)
            reports[name] = json.loads(done.stdout.strip().splitlines()[-1])
    _, profiled = interpreter("import segment_profiles_pipeline.definitions", env, "-X", "importtime")
    heaviest = heaviest_imports(profiled.stderr)
    best = {name: min(seconds) for name, seconds in runs.items()}
    snowflake = reports["load"]["snowflake"]
    title = "5. start-up (sample project, DuckDB)"
    offenders = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in heaviest)
    notes = (
        f"Best of {sizes.import_repeat} fresh interpreters each (all runs: load "
        f"{', '.join(f'{s:.2f}' for s in runs['load'])} s; import {', '.join(f'{s:.2f}' for s in runs['import'])} s). "
        f"{reports['load']['modules']:,} modules after loading; Snowflake modules imported: "
        f"{', '.join(snowflake) if snowflake else 'none'}. Own import time per package (-X importtime): {offenders}."
    )
    rows = [
        Row(
            title,
            "import + build the definitions, fresh interpreter",
            "s",
            best["load"],
            best["baseline"],
            "`import dagster` alone",
            higher_is_better=False,
            target=f"< {TARGET_SECONDS} s, no Snowflake module",
            met=best["load"] < TARGET_SECONDS and not snowflake,
            compare="share",
            notes=notes,
        ),
        Row(
            title,
            "import segment_profiles_pipeline.definitions",
            "s",
            best["import"],
            best["baseline"],
            "`import dagster` alone",
            higher_is_better=False,
            target=f"< {TARGET_SECONDS} s",
            met=best["import"] < TARGET_SECONDS,
            compare="share",
        ),
    ]
    details = {"runs": runs, "best": best, "reports": reports, "heaviest_imports": heaviest}
    return ScenarioResult("import_time", title, rows, details)
