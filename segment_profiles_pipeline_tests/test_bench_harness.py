"""The benchmark harness cannot rot: every scenario runs once at the tiny size, end to end.

Benchmarks are not tests, so no timing is asserted. What is asserted is that the harness
produces well-formed results (every row has our figure and the baseline's, the JSON file and the
markdown table hold them), that each scenario measured what it claims (everything arrived, the
diffs found the changes the generator made, pandas and ours computed the same traits), and that
the issue's target table finds each scenario's figure (a renamed metric would leave a line
"not measured").
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import duckdb
import pytest
import yaml

from bench import import_time, summary, whole_process
from bench.__main__ import run
from bench.data import users_sql
from bench.harness import SIZES, Row, ScenarioResult, render_markdown

TINY = SIZES["tiny"]


def _measured_lines(result: ScenarioResult) -> dict[str, summary.Line]:
    """The target-table lines this one scenario fills, by their "now" column (short and unique)."""
    return {
        line.now: line for line in summary.summary([result], TINY) if line.measured != summary.NOT_MEASURED
    }


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
    assert [line["now"] for line in written["targets"]] == [
        line.now for line in summary.summary([result], TINY)
    ]
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
    assert details["ours"]["cpu_s"] > 0 and "µs of CPU per record" in result.rows[2].notes
    assert [row.metric for row in result.rows] == [
        "messages/s delivered, end to end",
        "messages/s delivered, end to end",
        "share of the loopback server's ceiling",
        "peak RSS of the syncing process",
    ]
    lines = _measured_lines(result)
    assert set(lines) == {"12-25%", "822 MB at 1M"}
    assert (
        "2,000 records" in lines["12-25%"].measured
        and "MB at 2,000 records" in lines["822 MB at 1M"].measured
    )


def test_change_detection_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result, written, table = _run_one("change_detection", tmp_path, capsys)
    _assert_well_formed(result, written, table)
    # 20,000 records: i % 100 = 2 → 200 updated; i % 1000 = 1 → 20 deleted; 20,000 // 1000 = 20 added.
    expected = {"update": 200, "delete": 20, "add": 20}
    assert {op: result.details["ours"]["counts"][op] for op in expected} == expected
    assert result.details["baseline"]["counts"] == expected
    assert result.details["agree"] is True
    assert len(result.details["ours"]["runs"]) == len(result.details["baseline"]["runs"]) == 2
    (line,) = _measured_lines(result).values()
    assert line.now == "8.5 s" and "20,000 records" in line.measured and line.met is None  # target is at 10M


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
    (line,) = _measured_lines(result).values()
    assert line.now == "30% of full" and "of full" in line.measured and "same results" in line.measured


def test_whole_process_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny never installs drt; pointing at an empty folder makes the skip (and its printed reason) certain.
    monkeypatch.setattr(whole_process, "DRT_VENV", tmp_path / "no-drt")
    result, written, table = _run_one("whole_process", tmp_path, capsys)
    _assert_well_formed(result, written, table)
    sides = result.details["sides"]
    users = TINY.whole_process_users
    # `dagster asset materialize` ran the sync: every user arrived at the server, and the step ran.
    (ours,) = sides["materialize"]
    assert ours["delivered"] == users and ours["server"]["rejected_requests"] == 0
    assert "profile_sync__users_identify" in ours["steps"]
    assert 0 < ours["until_run_start_s"] < ours["seconds"] + 1  # log stamps are whole seconds
    (analytics,) = sides["analytics"]
    assert analytics["delivered"] == analytics["calls"] == users and analytics["dropped_by_queue"] == 0
    assert sides["drt"] == [] and "drt is not installed" in result.details["drt"]
    assert "drt skipped: drt is not installed" in table
    (line,) = _measured_lines(result).values()
    assert line.now == "0.65x" and f"{users:,} users" in line.measured and line.met is None


def test_run_window_reads_the_runs_start_and_end_from_the_log() -> None:
    log = "\n".join(
        [
            "warnings before the run",
            "2026-12-02 04:00:05 +0000 - dagster - DEBUG - __ASSET_JOB - 5110e041 - 8756 - RUN_START - Started.",
            '2026-12-02 04:00:09 +0000 - dagster - DEBUG - __ASSET_JOB - 5110e041 - 8756 - users - STEP_SUCCESS - Finished execution of step "users" in 554ms.',
            "2026-12-02 04:00:20 +0000 - dagster - DEBUG - __ASSET_JOB - 5110e041 - 8756 - RUN_SUCCESS - Finished.",
        ]
    )
    started_at = dt.datetime(2026, 12, 2, 4, 0, 0, tzinfo=dt.UTC).timestamp()
    assert whole_process.run_window(log, started_at, 21.5) == {
        "until_run_start_s": 5.0,
        "after_run_success_s": 1.5,
    }
    assert whole_process.step_seconds(log) == {"users": 0.554}
    assert whole_process.run_window("no run in this log", started_at, 21.5) == {}


def test_drt_project_sends_the_analytics_scripts_messages(tmp_path: Path) -> None:
    database = tmp_path / "w.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute(f"CREATE SCHEMA app; CREATE TABLE app.users AS {users_sql(5)}")
        first = con.execute(f"SELECT * FROM ({whole_process.drt_model_sql()}) ORDER BY 2 LIMIT 1").fetchone()
    home = whole_process.write_drt_project(tmp_path, database, "http://127.0.0.1:1")
    sync = yaml.safe_load((tmp_path / "syncs" / "users_identify.yml").read_text())
    assert sync["destination"]["url"] == "http://127.0.0.1:1/v1/batch"
    assert (
        sync["destination"]["body_mode"] == "batch" and sync["sync"]["batch_size"] == whole_process.DRT_BATCH
    )
    assert sync["sync"]["rate_limit"] == {"requests_per_second": 0}  # drt's default is 10 requests/s
    profile = yaml.safe_load((home / ".drt" / "profiles.yml").read_text())
    assert profile == {"bench": {"type": "duckdb", "database": str(database)}}
    assert first is not None
    kind, user_id, traits, timestamp, integrations = first
    assert (kind, user_id, integrations) == ("identify", "u_000000000", {"All": False})
    assert set(traits) == {"email", "first_name", "last_name", "phone", "plan", "created_at"}
    assert traits["created_at"].endswith("Z") and timestamp.endswith("Z") and "T" in timestamp


def test_import_time_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result, written, table = _run_one("import_time", tmp_path, capsys)
    _assert_well_formed(result, written, table)
    details = result.details
    assert details["reports"]["load"]["snowflake"] == []  # a DuckDB load imports no Snowflake module
    assert details["reports"]["load"]["modules"] > details["reports"]["baseline"]["modules"]
    assert "dagster" in dict(details["heaviest_imports"])
    (line,) = _measured_lines(result).values()
    assert line.now == "4.6 s" and "imported and built" in line.measured


def test_heaviest_imports_sums_own_time_per_package() -> None:
    stderr = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       500 |        500 |     dagster._core.a",
            "import time:      1500 |       2000 |   dagster",
            "import time:       300 |       2300 | segment_profiles_pipeline.definitions",
            "some other line",
        ]
    )
    assert import_time.heaviest_imports(stderr) == [("dagster", 0.002), ("segment_profiles_pipeline", 0.0003)]


def test_target_table_says_what_this_run_did_not_measure() -> None:
    lines = summary.summary([], TINY)
    assert [line.now for line in lines] == [
        "0.65x",
        "12-25%",
        "4.6 s",
        "8.5 s",
        "30% of full",
        "822 MB at 1M",
    ]
    assert all(line.measured == summary.NOT_MEASURED and line.met is None for line in lines)
    table = summary.render(lines)
    assert table.count(f"| {summary.NOT_MEASURED} |") == 6


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


def test_a_failing_scenario_keeps_the_figures_of_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long run that crashes in one scenario still writes (and prints) the others, then fails."""
    import bench.__main__ as bench_main

    measured = ScenarioResult("measured", "a scenario that works", details={"figure": 42})

    def broken(sizes: object, workdir: Path) -> ScenarioResult:
        raise ValueError("this scenario broke")

    monkeypatch.setattr(bench_main, "SCENARIOS", {"broken": broken, "measured": lambda s, w: measured})
    out = tmp_path / "latest.json"
    with pytest.raises(bench_main.BenchFailed, match="broken"):
        run(TINY, ["broken", "measured"], tmp_path, out)
    written = json.loads(out.read_text())
    assert [s["name"] for s in written["scenarios"]] == ["measured"]
    assert written["scenarios"][0]["details"] == {"figure": 42}
    assert "this scenario broke" in capsys.readouterr().err


def test_the_package_is_byte_compiled_even_when_bytecode_writing_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fresh processes of a start-up run must not compile the project again (an installed one
    never does), also under PYTHONDONTWRITEBYTECODE."""
    import importlib.util
    import sys

    from bench.harness import compile_package

    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    package = tmp_path / "pkg"
    package.mkdir()
    module = package / "module.py"
    module.write_text("VALUE = 1\n")
    compile_package(package)
    assert Path(importlib.util.cache_from_source(str(module))).is_file()
    (package / "broken.py").write_text("def (:\n")
    with pytest.raises(RuntimeError, match="does not compile"):
        compile_package(package)


def test_a_bench_run_compiles_the_project_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench.__main__ as bench_main

    compiled: list[Path] = []
    monkeypatch.setattr(bench_main, "compile_package", compiled.append)
    monkeypatch.setattr(bench_main, "SCENARIOS", {"one": lambda s, w: ScenarioResult("one", "one")})
    run(TINY, ["one"], tmp_path, tmp_path / "latest.json")
    assert compiled == [bench_main.PACKAGE]
    assert (bench_main.PACKAGE / "definitions.py").is_file()
