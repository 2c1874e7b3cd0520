import pytest

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.segment.spec import (
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_ID_CHARS,
    MAX_REQUEST_BYTES,
    REQUEST_BYTES_BUDGET,
    batch_url,
    resolve_endpoint,
)


def test_limits_match_segment_documentation():
    assert MAX_MESSAGE_BYTES == 32_768
    assert MAX_REQUEST_BYTES == 512_000
    assert MAX_BATCH_MESSAGES == 2500
    assert MAX_MESSAGE_ID_CHARS == 100
    assert REQUEST_BYTES_BUDGET < 500_000


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        (None, "https://api.segment.io"),
        ("", "https://api.segment.io"),
        ("north_america", "https://api.segment.io"),
        ("europe", "https://events.eu1.segmentapis.com"),
        (" Europe ", "https://events.eu1.segmentapis.com"),
    ],
)
def test_region_picks_the_tracking_api(region, expected):
    assert resolve_endpoint(region, None) == expected


def test_unknown_region_names_the_variable_and_the_choices():
    with pytest.raises(ConfigError) as error:
        resolve_endpoint("asia", None)
    text = str(error.value)
    assert "SEGMENT_REGION" in text
    assert "europe" in text and "north_america" in text


def test_explicit_endpoint_wins_over_region_and_is_normalised():
    assert resolve_endpoint("europe", "https://proxy.example.com/") == "https://proxy.example.com"
    assert resolve_endpoint(None, "https://API.segment.io/v1/") == "https://api.segment.io"
    assert resolve_endpoint(None, "https://gw.example.com/segment/v1") == "https://gw.example.com/segment"
    assert resolve_endpoint("north_america", "   ") == "https://api.segment.io"


def test_requests_go_to_v1_batch():
    assert batch_url("https://api.segment.io") == "https://api.segment.io/v1/batch"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://127.9.9.9:1", "http://localhost:9000", "http://[::1]:8080"],
)
def test_plain_http_is_allowed_on_loopback(url):
    assert resolve_endpoint(None, url) == url.lower()


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.5:8080", "http://api.segment.io", "http://127.0.0.1.evil.example.com", "http://[::2]:80"],
)
def test_plain_http_is_refused_off_loopback(url):
    with pytest.raises(ConfigError) as error:
        resolve_endpoint(None, url)
    text = str(error.value)
    assert "SEGMENT_ENDPOINT" in text
    assert "https://" in text


@pytest.mark.parametrize(
    "url",
    [
        "ftp://api.segment.io",
        "api.segment.io",
        "https://",
        "https://user:pw@api.segment.io",
        "https://h/?a=1",
        "http://127.0.0.1:port",
    ],
)
def test_malformed_endpoints_are_refused(url):
    with pytest.raises(ConfigError, match="SEGMENT_ENDPOINT"):
        resolve_endpoint(None, url)


def test_credentials_in_the_endpoint_are_not_echoed():
    with pytest.raises(ConfigError) as error:
        resolve_endpoint(None, "ftp://user:s3cret@api.segment.io")
    assert "s3cret" not in str(error.value)


SECRET = "wkLiveS3cretValue"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (SECRET, "without '://'"),
        (f" {SECRET}\n", "without '://'"),
        (f"{SECRET}:9000", "without '://'"),
        (f"ftp://{SECRET}", "scheme must be http or https"),
        (f"{SECRET}://api.segment.io", "scheme must be http or https"),
        ("https://", "no host name"),
        (f"https:///{SECRET}", "no host name"),
        (f"http://127.0.0.1:{SECRET}", "port"),
        ("http://127.0.0.1:99999", "port"),
    ],
)
def test_a_non_url_endpoint_is_described_not_echoed(value, problem):
    # A user may paste the write key into SEGMENT_ENDPOINT; the error lands in logs and the UI.
    with pytest.raises(ConfigError) as error:
        resolve_endpoint(None, value)
    text = str(error.value)
    assert "SEGMENT_ENDPOINT" in text and problem in text
    assert SECRET not in text and SECRET.lower() not in text.lower()
    assert "9000" not in text and "99999" not in text


def test_a_bare_value_gets_a_hint_about_the_write_key():
    with pytest.raises(ConfigError) as error:
        resolve_endpoint(None, SECRET)
    assert f"a {len(SECRET)}-character value" in str(error.value)
    assert "SEGMENT_WRITE_KEY" in str(error.value)
