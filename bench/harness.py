"""What every scenario shares: sizes, isolated child processes, the loopback server, results.

Isolation is the point of this module. Every measured side (ours, a baseline, the server ceiling)
runs in a fresh *spawned* process that imports only what that side needs, so its peak RSS is its
own figure and no side inherits another's warm caches or allocations. The Segment-compatible
server always runs as a separate process too, so the sender is measured, not a server sharing
its interpreter and its GIL.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import platform
import re
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import httpx

T = TypeVar("T")

WRITE_KEY = "wk"
SERVER_START_TIMEOUT_S = 30.0
SERVER_STOP_TIMEOUT_S = 15.0

QUIET = "SET enable_progress_bar = false"
"""DuckDB draws a progress bar on stderr for long queries, even into a pipe; it would garble the output."""

SizeName = Literal["tiny", "default", "large"]


@dataclass(frozen=True)
class Sizes:
    """How big each scenario runs. ``tiny`` only proves the harness works (the test suite)."""

    name: SizeName
    sync_records: int
    ceiling_messages: int
    """Enough for the raw sender to run a few seconds: the server ceiling is then a steady rate."""
    plan_records: int
    trait_events: int
    prediction_profiles: int = 2_000
    prediction_events: int = 40_000
    whole_process_users: int = 3_000
    """The whole-process target is set at 100k users, so ``--large`` keeps that size."""
    whole_process_repeat: int = 1
    whole_process_commands: tuple[str, ...] = ("materialize",)
    """Our commands in the whole-process scenario (each more costs another start-up and run)."""
    import_repeat: int = 1
    """Fresh interpreters per import measurement (the best counts: start-up is noisy here)."""


OURS = ("materialize", "sync_only", "dg_launch")
SIZES: dict[SizeName, Sizes] = {
    "tiny": Sizes("tiny", 2_000, 2_000, 20_000, 20_000),
    "default": Sizes(
        "default", 100_000, 1_000_000, 1_000_000, 1_000_000, 100_000, 2_000_000, 100_000, 2, OURS, 5
    ),
    "large": Sizes(
        "large", 1_000_000, 2_000_000, 10_000_000, 10_000_000, 1_000_000, 20_000_000, 100_000, 3, OURS, 7
    ),
}


@dataclass(frozen=True)
class Row:
    """One line of the results table: our figure next to the baseline's, and the target.

    ``compare`` says how the two figures relate: ``times`` (how many times better ours is, in
    the direction given by ``higher_is_better``) or ``share`` (ours as a fraction of the baseline,
    for a ceiling that cannot be beaten). ``met`` is None when the target is set for another size.
    """

    scenario: str
    metric: str
    unit: str
    ours: float
    baseline: float
    baseline_label: str
    higher_is_better: bool
    target: str
    met: bool | None
    compare: Literal["times", "share"] = "times"
    notes: str = ""

    @property
    def comparison(self) -> float:
        if self.compare == "share" or self.higher_is_better:
            return self.ours / self.baseline if self.baseline else float("inf")
        return self.baseline / self.ours if self.ours else float("inf")


@dataclass
class ScenarioResult:
    """Rows for the table plus every raw figure the children reported (for the JSON file)."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def timed(repeat: int, work: Callable[[], T]) -> tuple[list[float], T]:
    """Run ``work`` ``repeat`` times in a row; every duration (seconds) and the last result.

    Scenarios that can repeat report the best run: on this kind of VM the first multi-GB
    allocation after a pause is markedly slower (memory first-touch), which says more about the
    host than about the code. The first run stays in the JSON and in the notes.
    """
    runs: list[float] = []
    result: T | None = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        runs.append(time.perf_counter() - started)
    assert result is not None, "repeat must be at least 1"
    return runs, result


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program, in MiB.

    ``VmHWM`` belongs to the process's current address space, so it starts from zero at
    ``exec``. ``getrusage``'s ``ru_maxrss`` does not: Linux carries the pre-exec high-water mark
    over, so a spawned child would report at least its parent's size at fork time. It is the
    fallback only where ``/proc`` does not exist.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measured(function: Callable[..., dict[str, Any]], kwargs: dict[str, Any]) -> dict[str, Any]:
    result = function(**kwargs)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def in_child(function: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """Run ``function(**kwargs)`` in a fresh spawned process and return its result dict, plus
    ``peak_rss_mb``, that process's peak resident memory. Exceptions are re-raised here.

    ``function`` must be a module-level function of a ``bench`` module that imports its heavy
    dependencies itself, so the process holds only what the measured side needs.
    """
    context = multiprocessing.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(_measured, (function, kwargs))


class SegmentServerProcess:
    """``python -m segment_profiles_pipeline.testing.segment_server`` as a child process.

    Started fresh for each measured side so counters start at zero and no side inherits a warm
    (or fragmented) server. SIGTERM ends it; uvicorn then exits with -15, which is normal.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> Self:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "segment_profiles_pipeline.testing.segment_server",
                "--port",
                "0",
                "--write-key",
                WRITE_KEY,
                "--record",
                "count",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._process = process
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], SERVER_START_TIMEOUT_S)
        line = process.stdout.readline() if readable else ""
        if not line.startswith("READY "):
            self._stop()
            raise RuntimeError(
                f"the Segment-compatible server did not print 'READY <url>' within {SERVER_START_TIMEOUT_S:.0f}s "
                f"(got {line.strip()!r}); run `python -m segment_profiles_pipeline.testing.segment_server` "
                "by hand to see why."
            )
        self.url = line.split()[1]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def stats(self) -> dict[str, int]:
        """The server's counters: requests, messages (accepted), rejected requests, ..."""
        response = httpx.get(f"{self.url}/stats", timeout=10.0)
        response.raise_for_status()
        return dict(response.json())

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def compile_package(package: Path) -> None:
    """Byte-compile ``package`` (``.pyc`` next to its sources), as installing it would.

    Why: with ``PYTHONDONTWRITEBYTECODE`` set (as in this workplace) a fresh checkout never gets
    its bytecode written, so every fresh process of a start-up or whole-process run compiled the
    project's ~100 modules again (the import 2.38 -> 1.79 s wall once compiled, best of 7),
    which no installed deployment pays. ``compileall`` writes the files whatever that setting."""
    import compileall

    if not compileall.compile_dir(str(package), quiet=1):
        raise RuntimeError(f"{package} has a module that does not compile")


def machine() -> dict[str, Any]:
    """What the figures depend on, recorded next to them."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    import duckdb
    import pandas

    return {
        "cores": os.cpu_count(),
        "cpu": model or platform.processor(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pandas": pandas.__version__,
    }


def _number(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f} s" if value < 100 else f"{value:,.0f} s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:,.0f} {unit}"


def render_markdown(results: list[ScenarioResult], info: dict[str, Any], sizes: Sizes) -> str:
    """The results table as GitHub markdown, with the machine it ran on."""
    lines = [
        f"Size `{sizes.name}` on {info['cores']} cores ({info['cpu']}), Python {info['python']}, "
        f"DuckDB {info['duckdb']}, pandas {info['pandas']}.",
        "",
        "| scenario | metric | ours | baseline | ours vs baseline | target | met |",
        "|---|---|---:|---:|---:|---|:-:|",
    ]
    for result in results:
        for row in result.rows:
            comparison = f"{row.comparison:.0%}" if row.compare == "share" else f"{row.comparison:,.1f}x"
            met = "-" if row.met is None else ("yes" if row.met else "**no**")
            baseline = f"{_number(row.baseline, row.unit)} ({row.baseline_label})"
            lines.append(
                f"| {row.scenario} | {row.metric} | {_number(row.ours, row.unit)} | {baseline} | "
                f"{comparison} | {row.target} | {met} |"
            )
    notes = [
        f"- {row.scenario}, {row.metric}, vs {row.baseline_label}: {row.notes}"
        for result in results
        for row in result.rows
        if row.notes
    ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def write_json(
    path: Path, results: list[ScenarioResult], info: dict[str, Any], sizes: Sizes, summary: list[Any]
) -> None:
    """Every figure, raw child outputs included, so runs can be compared later; ``summary`` is the
    target table's lines (dataclasses, see ``bench.summary``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": info,
        "sizes": asdict(sizes),
        "scenarios": [
            {
                "name": r.name,
                "title": r.title,
                "rows": [{**asdict(row), "comparison": row.comparison} for row in r.rows],
                "details": r.details,
            }
            for r in results
        ],
        "targets": [asdict(line) for line in summary],
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


MOVED_NAMES = {
    "segment_profiles_pipeline.sync.state": {
        "STATE_SCHEMA": "segment_profiles_pipeline.state",
        "ensure_state": "segment_profiles_pipeline.state",
        "LEDGER": "segment_profiles_pipeline.state.ledger",
        "FAILED": "segment_profiles_pipeline.state.failed_records",
        "HISTORY": "segment_profiles_pipeline.state.sync_history",
        "OUTBOX": "segment_profiles_pipeline.state.outbox",
    },
}
"""Names an older commit imports from a module that has since moved, and where they are now."""


def source_at(ref: str, path: str) -> str:
    """A file of this repository as of git ``ref``, its imports of moved modules pointed at where
    the names live today: the "before" side of a scenario runs old code beside today's package."""
    repo = Path(__file__).resolve().parent.parent
    text = subprocess.run(
        ["git", "-C", str(repo), "show", f"{ref}:{path}"], capture_output=True, text=True, check=True
    ).stdout
    for old, names in MOVED_NAMES.items():
        pattern = re.compile(rf"^from {re.escape(old)} import ([\w, ]+)$", re.MULTILINE)

        def moved(found: re.Match[str], names: dict[str, str] = names) -> str:
            return "\n".join(f"from {names[n.strip()]} import {n.strip()}" for n in found.group(1).split(","))

        text = pattern.sub(moved, text)
    return text
