"""The traits mapping over real HTTP (loopback Segment server): when an anonymous profile is
identified its next identify goes to the userId, and a merged-away profile gets no message, so
Segment's profile ends with the merged totals, nothing cleared, nothing counted twice."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from segment_profiles_pipeline.segment.client import SegmentClient
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.traits.helpers import T0, compute, ev, load_events, traits_file

WRITE_KEY = "wk-traits-targets"
TRAITS = """
traits:
  - {name: Events, type: event_counter, event: Test Event}
mappings:
  - {name: traits_identify, table: computed_traits, action: identify, user_id: user_id,
     anonymous_id: anonymous_id, all_columns_as_traits: true}
"""


async def no_wait(_seconds: float) -> None:
    """Backoff without waiting: the test checks outcomes, not the clock."""


def test_identified_and_merged_profiles_are_sent_to_their_new_target_once(tmp_path: Path) -> None:
    project = traits_file(tmp_path / "models", TRAITS)
    (spec,) = project.sync_mappings()
    now = T0 + dt.timedelta(days=1)
    with (
        FakeSegmentServer(write_key=WRITE_KEY) as server,
        DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session,
        SegmentClient(server.url, WRITE_KEY, sleep=no_wait) as sender,
    ):
        load_events(
            session,
            "flex.test_event",
            [
                ev("t1", anon="a1", minute=0),
                ev("t2", anon="a1", minute=1),
                ev("t3", user="u2", minute=2),
                ev("t4", anon="a2", minute=3),
            ],
        )
        compute(session, project, now)
        first = run_sync(session, spec, sender)
        sent = [(m.get("userId"), m.get("anonymousId"), m["traits"]["events"]) for m in server.messages]
        assert sorted(sent, key=str) == sorted([(None, "a1", 2), ("u2", None, 1), (None, "a2", 1)], key=str)
        assert first.counts["delivered"] == 3

        # a1 identifies as u1 (its profile gains u1: same record, new target); a2 is seen as u2
        # (a2's younger profile merges into u2's: its record leaves the table)
        load_events(
            session,
            "flex.test_event",
            [ev("t5", user="u1", anon="a1", minute=4), ev("t6", user="u2", anon="a2", minute=5)],
            create=False,
        )
        compute(session, project, now)
        before = server.message_count
        second = run_sync(session, spec, sender)
        sent = [
            (m.get("userId"), m.get("anonymousId"), m["traits"]["events"]) for m in server.messages[before:]
        ]
    assert sorted(sent) == [("u1", None, 3), ("u2", None, 3)]  # t1 t2 t5; t3 t4 t6
    assert (second.counts["updated"], second.counts["deleted"], second.counts["delivered"]) == (2, 1, 2)
