"""The schedule gap behind each sync's freshness policy is computed once per (cron, timezone) per
process: Dagster builds the definitions several times in one run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from segment_profiles_pipeline import translator


def test_longest_gap_reads_the_days_once_per_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    walks: list[str] = []
    real = translator._matching_days

    def counting(cron: str, every_day: bool) -> Iterator[dt.date]:
        walks.append(cron)
        return real(cron, every_day)

    translator.longest_gap.cache_clear()
    monkeypatch.setattr(translator, "_matching_days", counting)
    try:
        for _ in range(3):
            assert translator.longest_gap("0 * * * *", "UTC") == dt.timedelta(hours=1)
        assert translator.longest_gap("0 6 * * 1,5", "UTC") == dt.timedelta(days=4)
    finally:
        translator.longest_gap.cache_clear()  # later tests get uncounted results
    assert walks == ["0 * * * *", "0 6 * * 1,5"]
