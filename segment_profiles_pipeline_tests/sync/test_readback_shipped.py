"""The shipped project, synced live to the loopback server, read back by every identify mapping's check."""

from __future__ import annotations

import pytest

from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline_tests.conftest import materialize_all

WRITE_KEY = "wk-shipped-readback"
SPACE, TOKEN = "spa_shipped", "pat-shipped-secret"


def test_every_identify_sync_reads_back_what_it_sent(
    monkeypatch: pytest.MonkeyPatch, sample_models, settings_for, build
) -> None:
    with FakeSegmentServer(write_key=WRITE_KEY, profile_spaces={SPACE: TOKEN}) as server:
        for name, value in {
            "SEGMENT_WRITE_KEY": WRITE_KEY,
            "SEGMENT_ENDPOINT": server.url,
            "SEGMENT_SPACE_ID": SPACE,
            "SEGMENT_PROFILE_API_TOKEN": TOKEN,
            "SEGMENT_PROFILE_API_ENDPOINT": server.url,
            "SEGMENT_READBACK_SAMPLE": "5",
        }.items():
            monkeypatch.setenv(name, value)
        result = materialize_all(build(settings_for(sample_models, sample_users=200)))
        assert result.success
        checks = {
            e.event_specific_data.asset_key.path[-1]: e.event_specific_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and e.event_specific_data.check_name == "profile_readback"
        }
        assert set(checks) >= {"users_identify", "computed_traits_identify"}
        for mapping, evaluation in checks.items():
            assert evaluation.passed, (mapping, evaluation.description)
        sampled = {m: e.metadata["sampled"].value for m, e in checks.items()}
        # predictions cannot train on 200 sample users (their requirements), so they send nothing
        assert sampled == {
            "users_identify": 5,
            "computed_traits_identify": 5,
            "audiences_identify": 5,
            "predictions_identify": 0,
        }
        assert server.profile_api_log and all(status == 200 for _, status in server.profile_api_log)
        assert TOKEN not in " ".join(str(e) for e in result.all_events)
