"""The change-detection bench's "before" side plans with any commit's ``plan.py``: one from before
the ``Plan`` object (its ``counts_sql``) and one from after it (``Plan.build``), in one process.

Timings are not asserted; what is, is that each before side found exactly the generator's changes.
"""

from __future__ import annotations

from pathlib import Path

from bench import change_detection
from bench.data import expected_changes

RECORDS = 2_000
REFS = {"1a001ff": "counts_sql", "96d1047": "Plan.build"}
"""The bench's default before (three statements, no ``Plan``) and the quick hash's commit."""


def test_the_before_side_plans_with_a_commit_before_and_after_the_plan_object(tmp_path: Path) -> None:
    database = str(tmp_path / "change_detection.duckdb")
    change_detection.prepare(database, RECORDS)
    expected = expected_changes(RECORDS)
    for ref, via in REFS.items():
        before = change_detection.plan_before(database, 1, ref)
        assert (before["via"], before["counts"]) == (via, expected), ref
