"""The sync's chunk loop runs with the collector paced for many short-lived objects, and only it."""

import gc

import pytest

from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.sync.hot_loop import SYNC_GC_THRESHOLD, fewer_collections
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender, people_spec, people_table


def test_the_thresholds_are_raised_inside_and_restored_after_also_on_errors() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold() == SYNC_GC_THRESHOLD
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), fewer_collections((1234, 5, 6)):
        assert gc.get_threshold() == (1234, 5, 6)
        raise RuntimeError("boom")
    assert gc.get_threshold() == before


class _ThresholdSpy(ScriptedSender):
    """Notes the collector's thresholds each time the engine hands it a chunk."""

    def __init__(self) -> None:
        super().__init__()
        self.thresholds: list[tuple[int, int, int]] = []

    def deliver(self, messages):
        self.thresholds.append(gc.get_threshold())
        return super().deliver(messages)


def test_run_sync_delivers_its_chunks_under_the_sync_thresholds_and_restores_them(warehouse) -> None:
    before = gc.get_threshold()
    spy = _ThresholdSpy()
    with warehouse.session() as session:
        people_table(session, [("u1", "a@x.io", "pro"), ("u2", "b@x.io", "free")])
        report = run_sync(session, people_spec(), spy)
    assert report.counts["delivered"] == 2
    assert spy.thresholds == [SYNC_GC_THRESHOLD]
    assert gc.get_threshold() == before
