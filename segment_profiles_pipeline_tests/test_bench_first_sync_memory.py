"""The first-sync memory measurement runs end to end at a tiny size (so it cannot rot)."""

from __future__ import annotations

from pathlib import Path

from bench import summary
from bench.first_sync import memory_by_size, run_memory
from bench.harness import SIZES


def test_memory_by_size_syncs_every_record_and_reports_both_peaks(tmp_path: Path) -> None:
    (result,) = memory_by_size(tmp_path, [2_000], memory_limit="256MB")
    assert result["records"] == result["delivered"] == 2_000 and result["status"] == "success"
    assert 0 < result["peak_rss_after_plan_mb"] <= result["peak_rss_mb"]
    assert result["memory_limit"] == "256MB"
    # measured again in the same folder, it is again a first sync (not one with nothing to send)
    (again,) = memory_by_size(tmp_path, [2_000])
    assert again["delivered"] == 2_000


def test_memory_scenario_compares_ten_times_the_records(tmp_path: Path) -> None:
    result = run_memory(SIZES["tiny"], tmp_path)
    (row,) = result.rows
    small, large = result.details["runs"]
    assert (small["records"], large["records"]) == (2_000, 20_000)
    assert (row.ours, row.baseline) == (large["peak_rss_mb"], small["peak_rss_mb"])
    assert row.met is None  # the target is set at 10M records
    (line,) = [line for line in summary.summary([result], SIZES["tiny"]) if line.now == "822 MB at 1M"]
    assert line.measured == (
        f"{small['peak_rss_mb']:,.0f} MB at 2,000, {large['peak_rss_mb']:,.0f} MB at 20,000 records"
    )
    assert line.met is None
