"""The benchmark harness cannot rot: every scenario runs once at the tiny size, end to end.

Benchmarks are not tests, so no timing is asserted. What is asserted is that the harness
produces well-formed results (every row has our figure and the baseline's, the JSON file and the
markdown table hold them) and that each scenario measured what it claims: everything arrived,
the diffs found the changes the generator made, pandas and ours computed the same traits.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.__main__ import run
from bench.harness import SIZES, Row, ScenarioResult, render_markdown

TINY = SIZES["tiny"]


def _run_one(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[ScenarioResult, dict, str]:
    out = tmp_path / "results" / "latest.json"
    (result,) = run(TINY, [name], tmp_path, out)
    return result, json.loads(out.read_text()), capsys.readouterr().out


def _assert_well_formed(result: ScenarioResult, written: dict, table: str) -> None:
    assert result.rows
    for row in result.rows:
        for figure in (row.ours, row.baseline):
            assert math.isfinite(figure) and figure > 0, row
        assert row.baseline_label and row.target and row.unit
        assert f"| {row.metric} |" in table
    (scenario,) = written["scenarios"]
    assert scenario["name"] == result.name
    assert [(r["metric"], r["ours"], r["baseline"]) for r in scenario["rows"]] == [
        (r.metric, r.ours, r.baseline) for r in result.rows
    ]
    assert written["machine"]["cores"] >= 1
    assert written["sizes"]["name"] == "tiny"


def test_first_sync_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result, written, table = _run_one("first_sync", tmp_path, capsys)
    _assert_well_formed(result, written, table)
    details = result.details
    # The server counted every message of our sync; the baselines cannot deliver more than exists.
    assert details["ours"]["delivered"] == 2_000
    assert details["ours"]["counts"]["added"] == 2_000
    assert 0 < details["baseline"]["delivered"] <= 2_000
    assert details["lossless"]["delivered"] == 2_000  # its queue holds every message
    assert details["ceiling"]["delivered"] >= 2_000
    assert [row.metric for row in result.rows] == [
        "messages/s delivered, end to end",
        "messages/s delivered, end to end",
        "share of the loopback server's ceiling",
        "peak RSS of the syncing process",
    ]


def test_change_detection_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result, written, table = _run_one("change_detection", tmp_path, capsys)
    _assert_well_formed(result, written, table)
    # 20,000 records: i % 100 = 2 → 200 updated; i % 1000 = 1 → 20 deleted; 20,000 // 1000 = 20 added.
    expected = {"update": 200, "delete": 20, "add": 20}
    assert {op: result.details["ours"]["counts"][op] for op in expected} == expected
    assert result.details["baseline"]["counts"] == expected
    assert result.details["agree"] is True
    assert len(result.details["ours"]["runs"]) == len(result.details["baseline"]["runs"]) == 2


def test_computed_traits_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result, written, table = _run_one("computed_traits", tmp_path, capsys)
    _assert_well_formed(result, written, table)
    details = result.details
    assert details["agree"] is True
    assert details["check_full"]["only_ours"] == details["check_full"]["only_pandas"] == 0
    assert details["check_incremental"]["only_ours"] == details["check_incremental"]["only_pandas"] == 0
    assert details["ours_full"]["mode"] == "full"
    assert details["ours_incremental"]["mode"] == "incremental"
    assert 0 < details["ours_incremental"]["profiles_recomputed"] < details["ours_incremental"]["profiles"]


def test_rows_compare_in_the_right_direction() -> None:
    faster = Row("scenario", "time", "s", 2.0, 10.0, "b", higher_is_better=False, target="t", met=None)
    more = Row("scenario", "rate", "msg/s", 30.0, 3.0, "b", higher_is_better=True, target="t", met=True)
    share = Row(
        "scenario",
        "ceiling",
        "msg/s",
        50.0,
        200.0,
        "b",
        higher_is_better=True,
        target="t",
        met=False,
        compare="share",
    )
    assert (faster.comparison, more.comparison, share.comparison) == (5.0, 10.0, 0.25)
    info = {"cores": 2, "cpu": "x", "python": "3.11", "duckdb": "2.0", "pandas": "3.1"}
    table = render_markdown([ScenarioResult("s", "title", [faster, more, share])], info, TINY)
    assert "| scenario | time | 2.00 s | 10.00 s (b) | 5.0x | t | - |" in table
    assert "| scenario | rate | 30 msg/s | 3 msg/s (b) | 10.0x | t | yes |" in table
    assert "| scenario | ceiling | 50 msg/s | 200 msg/s (b) | 25% | t | **no** |" in table
