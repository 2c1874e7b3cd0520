"""The ``profile_readback`` check over real HTTP: a real sync to the loopback server, then the Profile API."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import orjson
import pytest
from dagster import AssetCheckSeverity, Definitions, EnvVar

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.segment.client import SegmentClient
from segment_profiles_pipeline.segment.profile_api import (
    ProfileApiClient,
    ProfileApiError,
    resolve_profile_api_base,
)
from segment_profiles_pipeline.state import ensure_state
from segment_profiles_pipeline.sync.assets import build_sync_asset
from segment_profiles_pipeline.sync.engine import run_sync
from segment_profiles_pipeline.sync.readback import (
    ProfileApiResource,
    build_readback_check,
    profile_api_from_env,
    run_readback,
)
from segment_profiles_pipeline.sync.resources import SegmentDestination
from segment_profiles_pipeline.testing.segment_server import FakeSegmentServer
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.sync.helpers import people_spec, people_table
from segment_profiles_pipeline_tests.warehouse.fake_snowflake import fake_snowflake

WRITE_KEY = "wk-readback-test"
SPACE = "spa_readback"
TOKEN = "pat-readback-secret-token-7d1e"
ROWS = [("u1", "ana@example.com", "pro"), ("u2", None, "free"), ("u3", "cy@example.com", "business")]
SPEC = people_spec()


async def no_wait(_seconds: float) -> None:
    """Tracking API backoff without waiting."""


@pytest.fixture
def server():
    with FakeSegmentServer(write_key=WRITE_KEY, profile_spaces={SPACE: TOKEN}) as srv:
        yield srv


@pytest.fixture
def warehouse(tmp_path: Path) -> DuckDBWarehouse:
    return DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))


def sync(warehouse: DuckDBWarehouse, server: FakeSegmentServer, rows=ROWS) -> None:
    with warehouse.session() as session:
        people_table(session, rows)
        with SegmentClient(server.url, WRITE_KEY, sleep=no_wait) as client:
            assert run_sync(session, SPEC, client).status == "success"


def api(server: FakeSegmentServer, **overrides) -> ProfileApiResource:
    fields = {"space_id": SPACE, "access_token": TOKEN, "endpoint": server.url, **overrides}
    return ProfileApiResource(**fields)


def readback(warehouse, server, **overrides):
    return run_readback(warehouse, SPEC, api(server, **overrides), server.url)


def test_profiles_that_match_pass(warehouse, server) -> None:
    sync(warehouse, server)
    result = readback(warehouse, server)
    assert result.passed
    assert result.description == (
        f"3 of 3 sampled profiles of 'people_identify' match what Segment acknowledged (space '{SPACE}' at "
        f"{server.url})."
    )
    assert result.metadata["sampled"].value == 3
    # only the traits the record sent were asked for, 200 per page
    paths = [p for p, _ in server.profile_api_log]
    assert (
        f"/v1/spaces/{SPACE}/collections/users/profiles/user_id:u1/traits?limit=200&include=email%2Cplan"
        in paths
    )


def test_a_lost_and_an_altered_trait_fail_naming_record_and_trait(warehouse, server) -> None:
    sync(warehouse, server)
    server.tamper_profile("user_id:u1", drop=["email"])
    server.tamper_profile("user_id:u3", set_traits={"plan": "free"})
    server.tamper_profile("user_id:u2", drop=["email"])  # u2 sent email: null; a missing null is no mismatch
    result = readback(warehouse, server)
    assert not result.passed
    assert result.severity == AssetCheckSeverity.WARN
    assert "1 of 3 sampled profiles" in result.description
    assert "2 differ" in result.description
    mismatches = {
        (r.data["record_key"], r.data["trait"], r.data["acknowledged"], r.data["profile_api"])
        for r in result.metadata["mismatches"].records
    }
    assert mismatches == {
        ("u1", "email", '"ana@example.com"', "(missing)"),
        ("u3", "plan", '"business"', '"free"'),
    }


def test_profiles_missing_everywhere_point_at_region_or_space(warehouse, server) -> None:
    sync(warehouse, server)
    with FakeSegmentServer(write_key="elsewhere", profile_spaces={SPACE: TOKEN}) as other_region:
        result = run_readback(warehouse, SPEC, api(other_region), server.url)
    assert not result.passed
    assert result.severity == AssetCheckSeverity.ERROR
    assert (
        "0 of 3 sampled profiles" in result.description and "3 not found in the space." in result.description
    )
    assert "The likely cause is a wrong region or space" in result.description
    assert f"syncs go to the Tracking API at {server.url}" in result.description
    assert {r.data["profile_api"] for r in result.metadata["mismatches"].records} == {"(no profile)"}


def test_a_wrong_token_fails_with_an_auth_message_that_hides_it(warehouse, server) -> None:
    sync(warehouse, server)
    result = readback(warehouse, server, access_token="pat-wrong-token-0000")
    assert not result.passed and result.severity == AssetCheckSeverity.ERROR
    assert result.metadata["code"].value == "auth_refused"
    assert "HTTP 401: the Profile API refused the access token for space 'spa_readback'" in result.description
    assert (
        "Check that SEGMENT_PROFILE_API_TOKEN is an access token of space 'spa_readback'"
        in result.description
    )
    assert "pat-wrong-token-0000" not in result.description


def test_429s_are_retried_after_retry_after(warehouse, server) -> None:
    sync(warehouse, server)
    server.profile_api_rate_limit_next(2, retry_after=0)
    result = readback(warehouse, server)
    assert result.passed
    assert [status for _, status in server.profile_api_log] == [429, 429, 200, 200, 200]


def test_retries_give_up_with_the_reason(server) -> None:
    waits: list[float] = []
    server.profile_api_rate_limit_next(3, retry_after=None)
    with (
        ProfileApiClient(server.url, SPACE, TOKEN, max_retries=2, sleep=waits.append) as client,
        pytest.raises(ProfileApiError, match=r"user_id:u1: HTTP 429 \(rate limited\) after 3 attempts"),
    ):
        client.traits("user_id:u1")
    assert (
        len(waits) == 2 and 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0
    )  # exponential, no Retry-After


def test_pages_through_more_traits_than_one_answer_holds(server) -> None:
    many = {f"t{i:03d}": i for i in range(250)}
    message = {"type": "identify", "userId": "u9", "messageId": "m9", "traits": many}
    with SegmentClient(server.url, WRITE_KEY, sleep=no_wait) as sender:
        assert sender.deliver([orjson.dumps(message)]) == [None]
    with ProfileApiClient(server.url, SPACE, TOKEN) as client:
        assert client.traits("user_id:u9") == many
    assert [p.split("?")[1] for p, _ in server.profile_api_log] == ["limit=200", "limit=200&next=200"]


def test_requests_are_paced_under_the_rate_limit(server) -> None:
    sync_rate = 20.0
    with ProfileApiClient(server.url, SPACE, TOKEN, max_requests_per_second=sync_rate) as client:
        started = time.monotonic()
        for _ in range(5):
            assert client.traits("user_id:nobody") is None
        elapsed = time.monotonic() - started
    assert elapsed >= 4 / sync_rate  # 5 requests, one slot every 50 ms


def test_only_records_unchanged_since_acknowledged_are_sampled_newest_first(warehouse, server) -> None:
    sync(warehouse, server)
    with warehouse.session() as session:
        session.execute("UPDATE models.people SET plan = 'enterprise' WHERE id = 'u3'")  # not synced yet
    result = readback(warehouse, server, sample_size=1)
    assert result.passed and result.metadata["sampled"].value == 1
    everything = readback(warehouse, server)
    assert everything.metadata["sampled"].value == 2  # u3's row is not what Segment acknowledged


def test_not_configured_is_skipped_not_failed(warehouse, server) -> None:
    result = run_readback(warehouse, SPEC, ProfileApiResource(), server.url)
    assert result.passed
    assert result.description.startswith("not configured: set SEGMENT_SPACE_ID and SEGMENT_PROFILE_API_TOKEN")
    assert server.profile_api_log == []


def test_nothing_acknowledged_yet(warehouse, server) -> None:
    with warehouse.session() as session:
        people_table(session, ROWS)
    before_any_sync = readback(warehouse, server)  # no state tables at all
    with warehouse.session() as session:
        ensure_state(session)  # the state a dry run leaves: an empty ledger
    for result in (before_any_sync, readback(warehouse, server)):
        assert result.passed
        assert result.description.startswith(
            "nothing to read back: no record of 'people_identify' is acknowledged"
        )
    assert server.profile_api_log == []


def test_the_check_runs_after_the_sync_in_dagster_and_never_logs_the_token(warehouse, server) -> None:
    with warehouse.session() as session:
        people_table(session, ROWS)
    defs = Definitions(
        assets=[build_sync_asset(SPEC, "duckdb")],
        asset_checks=[build_readback_check(SPEC)],
        resources={
            "warehouse": warehouse,
            "segment": SegmentDestination(write_key=WRITE_KEY, endpoint=server.url),
            "profile_api": api(server),
        },
    )
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(raise_on_error=False)
    assert result.success
    [evaluation] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.check_name == "profile_readback"
    ]
    assert evaluation.passed and evaluation.metadata["sampled"].value == 3
    logs = " ".join(str(e) for e in result.all_events)
    assert TOKEN not in logs


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert profile_api_from_env().configured is False
    monkeypatch.setenv("SEGMENT_SPACE_ID", SPACE)
    monkeypatch.setenv("SEGMENT_PROFILE_API_TOKEN", TOKEN)
    monkeypatch.setenv("SEGMENT_REGION", "europe")
    monkeypatch.setenv("SEGMENT_READBACK_SAMPLE", "5")
    resource = profile_api_from_env()
    assert resource.configured and resource.sample_size == 5
    assert resource.base_url == "https://profiles.euw1.segment.com"
    assert resource.access_token == EnvVar(
        "SEGMENT_PROFILE_API_TOKEN"
    )  # resolved by Dagster at run time only
    monkeypatch.setenv("SEGMENT_READBACK_SAMPLE", "0")
    with pytest.raises(
        ConfigError, match="SEGMENT_READBACK_SAMPLE: '0' is not a whole number from 1 to 1000"
    ):
        profile_api_from_env()


def test_profile_api_base_urls() -> None:
    assert resolve_profile_api_base(None, None) == "https://profiles.segment.com"
    assert resolve_profile_api_base("europe", None) == "https://profiles.euw1.segment.com"
    assert resolve_profile_api_base("europe", "http://127.0.0.1:9/") == "http://127.0.0.1:9"
    with pytest.raises(
        ConfigError, match=r"plain http is only allowed for loopback hosts, not 'example\.com'"
    ):
        resolve_profile_api_base(None, "http://example.com")
    with pytest.raises(ConfigError, match="SEGMENT_REGION: unknown Segment region 'mars'"):
        resolve_profile_api_base("mars", None)


def test_read_back_on_snowflake_through_fakesnow(server) -> None:
    with fake_snowflake() as warehouse:
        sync(warehouse, server)
        server.tamper_profile("user_id:u3", set_traits={"plan": "free"})
        result = readback(warehouse, server)
    assert not result.passed
    assert result.metadata["sampled"].value == 3
    assert [(r.data["record_key"], r.data["trait"]) for r in result.metadata["mismatches"].records] == [
        ("u3", "plan")
    ]


def test_an_answer_echoing_the_token_is_masked_in_errors(server) -> None:
    echoed = f"token {TOKEN} or Basic {base64.b64encode(f'{TOKEN}:'.encode()).decode()} refused"
    with ProfileApiClient(server.url, SPACE, TOKEN) as client:
        assert client._short(echoed) == "token *** or Basic *** refused"
        assert TOKEN not in repr(client)
