"""The schedule gap behind each sync's freshness policy is computed once per (cron, timezone) per
process: Dagster builds the definitions several times in one run, and the ticks are the cost."""

from __future__ import annotations

import datetime as dt

import pytest

from segment_profiles_pipeline import translator


def test_longest_gap_walks_the_ticks_once_per_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    walks: list[str] = []
    real = translator.croniter

    def counting(cron: str, start: dt.datetime) -> object:
        walks.append(cron)
        return real(cron, start)

    translator.longest_gap.cache_clear()
    monkeypatch.setattr(translator, "croniter", counting)
    try:
        for _ in range(3):
            assert translator.longest_gap("0 * * * *", "UTC") == dt.timedelta(hours=1)
        assert translator.longest_gap("0 6 * * 1,5", "UTC") == dt.timedelta(days=4)
    finally:
        translator.longest_gap.cache_clear()  # later tests get the real croniter's results
    assert walks == ["0 * * * *", "0 6 * * 1,5"]
