"""Issue 13's target table, filled from the rows the scenarios measured in this run.

Each line reads the ``Row`` its scenario module produced (found by scenario name and metric), so
nothing here measures or re-times anything: a figure that no scenario of this run produced is
printed as not measured, never carried over from an earlier run. The "now" column is the issue's
own before-figure, kept as text; the targets are the issue's, judged at the size they are set for
(``met`` is ``-`` at a smaller size).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from bench.harness import Row, ScenarioResult, Sizes

NOT_MEASURED = "not measured in this run"


@dataclass(frozen=True)
class Line:
    """One line of the target table."""

    scenario: str
    now: str
    target: str
    measured: str = NOT_MEASURED
    met: bool | None = None


def _row(results: dict[str, ScenarioResult], scenario: str, metric_prefix: str) -> Row | None:
    """The row of ``scenario`` whose metric starts with ``metric_prefix`` (the first one)."""
    result = results.get(scenario)
    rows = [row for row in result.rows if row.metric.startswith(metric_prefix)] if result else []
    return rows[0] if rows else None


def _records(row: Row) -> int:
    """The record count a row's scenario title names, as ``(1,000,000 records)``; 0 when none."""
    found = re.search(r"\(([\d,]+) (?:records|users)\)", row.scenario)
    return int(found.group(1).replace(",", "")) if found else 0


def _whole_process(results: dict[str, ScenarioResult], sizes: Sizes) -> Line:
    line = Line(
        "whole process, `materialize '*'`, 100k users, vs the best of segment-analytics-python "
        "(lossless queue) and drt",
        "0.65x",
        "≥ 2x",
    )
    row = _row(results, "whole_process", "messages/s, process start to exit (`dagster asset materialize`)")
    if row is None:
        return line
    measured = (
        f"{row.comparison:.2f}x ({row.ours:,.0f} vs {row.baseline:,.0f} msg/s, {row.baseline_label}; "
        f"{_records(row):,} users)"
    )
    return Line(line.scenario, line.now, line.target, measured, row.met)


def _ceiling(results: dict[str, ScenarioResult], sizes: Sizes) -> Line:
    line = Line(
        "users_identify step of a 1M first sync vs the loopback ceiling "
        "(pre-built ~475 KB batches, 4 connections)",
        "12-25%",
        "≥ 50%",
    )
    row = _row(results, "first_sync", "share of the loopback server's ceiling")
    if row is None:
        return line
    records = _records(row)
    measured = f"{row.comparison:.0%} ({row.ours:,.0f} of {row.baseline:,.0f} msg/s; {records:,} records)"
    return Line(
        line.scenario,
        line.now,
        line.target,
        measured,
        row.comparison >= 0.5 if records >= 1_000_000 else None,
    )


def _import(results: dict[str, ScenarioResult], sizes: Sizes) -> Line:
    line = Line("importing `segment_profiles_pipeline.definitions` on DuckDB", "4.6 s", "< 1.5 s")
    load = _row(results, "import_time", "import + build the definitions")
    plain = _row(results, "import_time", "import segment_profiles_pipeline.definitions")
    if load is None or plain is None:
        return line
    measured = f"{load.ours:.2f} s imported and built ({plain.ours:.2f} s the import alone; `import dagster` {load.baseline:.2f} s)"
    return Line(line.scenario, line.now, line.target, measured, load.met)


def _plan(results: dict[str, ScenarioResult], sizes: Sizes) -> Line:
    line = Line(
        "plan of 10M records (1% / 0.1% / 0.1% changed)", "8.5 s", "≤ 5 s, pandas diff in the same table"
    )
    row = _row(results, "change_detection", "time to plan")
    if row is None:
        return line
    agree = bool(results["change_detection"].details.get("agree"))
    measured = (
        f"{row.ours:.2f} s (pandas {row.baseline:.2f} s; {sizes.plan_records:,} records"
        + ("" if agree else "; **the diffs disagree**")
        + ")"
    )
    met = (row.ours <= 5.0 and agree) if sizes.plan_records >= 10_000_000 else None
    return Line(line.scenario, line.now, line.target, measured, met)


def _traits(results: dict[str, ScenarioResult], sizes: Sizes) -> Line:
    line = Line(
        "incremental computed traits after 1% new events",
        "30% of full",
        "≤ 10% of full, same results as full",
    )
    full = _row(results, "computed_traits", "six traits, full computation")
    incremental = _row(results, "computed_traits", "incremental after")
    if full is None or incremental is None:
        return line
    share = incremental.ours / full.ours
    agree = bool(results["computed_traits"].details.get("agree"))
    measured = (
        f"{share:.0%} of full ({incremental.ours:.2f} s vs {full.ours:.2f} s; {sizes.trait_events:,} events; "
        + ("same results as full and as pandas" if agree else "**results differ**")
        + ")"
    )
    met = (share <= 0.10 and agree) if sizes.name != "tiny" else None
    return Line(line.scenario, line.now, line.target, measured, met)


def _memory(results: dict[str, ScenarioResult], sizes: Sizes) -> Line:
    line = Line("peak RSS, first sync", "822 MB at 1M", "< 1 GB at 10M (flat in N)")
    scaled = results.get("first_sync_memory")
    if scaled is not None:  # the same sync at N and 10 N records: the figure the target is set for
        runs = sorted(scaled.details["runs"], key=lambda run: run["records"])
        measured = (
            ", ".join(f"{run['peak_rss_mb']:,.0f} MB at {run['records']:,}" for run in runs) + " records"
        )
        met = runs[-1]["peak_rss_mb"] < 1024 if runs[-1]["records"] >= 10_000_000 else None
        return Line(line.scenario, line.now, line.target, measured, met)
    result = results.get("first_sync")
    rows = [row for row in result.rows if row.metric.startswith("peak RSS")] if result else []
    if not rows:
        return line
    by_size = sorted(rows, key=_records)
    measured = ", ".join(f"{row.ours:,.0f} MB at {_records(row):,}" for row in by_size) + " records"
    largest = by_size[-1]
    met = largest.ours < 1024 if _records(largest) >= 10_000_000 else None
    return Line(line.scenario, line.now, line.target, measured, met)


LINES: tuple[Callable[[dict[str, ScenarioResult], Sizes], Line], ...] = (
    _whole_process,
    _ceiling,
    _import,
    _plan,
    _traits,
    _memory,
)


def summary(results: list[ScenarioResult], sizes: Sizes) -> list[Line]:
    """The six lines of the issue's table, in its order."""
    by_name = {result.name: result for result in results}
    return [line(by_name, sizes) for line in LINES]


def render(lines: list[Line]) -> str:
    """The target table as GitHub markdown."""
    table = [
        "Targets of issue 13 (every figure from this run):",
        "",
        "| scenario | now (issue) | measured | target | met |",
        "|---|---|---|---|:-:|",
    ]
    for line in lines:
        met = "-" if line.met is None else ("yes" if line.met else "**no**")
        table.append(f"| {line.scenario} | {line.now} | {line.measured} | {line.target} | {met} |")
    return "\n".join(table)
