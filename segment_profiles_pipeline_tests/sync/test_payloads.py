"""Payload building: exactly Segment's Identify/Group shape, JSON-safe values, limits."""

import datetime as dt
import decimal

import orjson
import pytest

from segment_profiles_pipeline import __version__
from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.segment.spec import destination_salt
from segment_profiles_pipeline.sync.payloads import (
    InvalidRecord,
    PayloadBuilder,
    encode,
    json_value,
    message_id,
)

NOW = dt.datetime(2026, 11, 22, 8, 0, 0)
ID = "spp-test-id"
TYPES = {
    "user_id": "VARCHAR",
    "email": "VARCHAR",
    "plan": "VARCHAR",
    "updated_at": "TIMESTAMP",
    "account_id": "VARCHAR",
}


def identify(**overrides) -> MappingConfig:
    fields = {
        "name": "users_identify",
        "action": "identify",
        "user_id": "user_id",
        "traits": {"email": "email", "plan": "plan"},
        "timestamp": "updated_at",
    }
    return MappingConfig(**{**fields, **overrides})


def test_identify_message_is_exactly_segments_shape() -> None:
    builder = PayloadBuilder.for_mapping(identify(), TYPES)
    row = {"user_id": "u1", "email": "a@b.c", "plan": "pro", "updated_at": dt.datetime(2026, 1, 2, 3, 4, 5)}
    message = builder.build(row, ID, NOW)
    assert message == {
        "type": "identify",
        "userId": "u1",
        "traits": {"email": "a@b.c", "plan": "pro"},
        "timestamp": "2026-01-02T03:04:05.000Z",
        "messageId": message["messageId"],
        "integrations": {"All": False},
        # the destination always sends context.consent ({} without a consent column)
        "context": {"library": {"name": "segment-profiles-pipeline", "version": __version__}, "consent": {}},
    }
    assert message["messageId"] == ID


def test_message_id_is_deterministic_and_differs_in_every_input() -> None:
    base = ("salt", "m", "upsert", "k", "c", "gen")
    assert message_id(*base) == message_id(*base)
    assert message_id(*base).startswith("spp-") and len(message_id(*base)) < 100
    variants = {message_id(*base[:i], "other", *base[i + 1 :]) for i in range(len(base))}
    assert len(variants | {message_id(*base)}) == len(base) + 1


def test_destination_salt_is_a_hash_never_the_key() -> None:
    key = "wk_live_1234567890abcdef"
    salt = destination_salt(key)
    assert salt == destination_salt(key) and salt != destination_salt(key + "x")
    assert key not in salt and key.lower() not in salt
    assert destination_salt(None) == destination_salt("") == "dry-run"


def test_group_message_and_required_group_id() -> None:
    mapping = MappingConfig(
        name="g", action="group", user_id="user_id", group_id="account_id", traits={"plan": "plan"}
    )
    builder = PayloadBuilder.for_mapping(mapping, TYPES)
    message = builder.build({"user_id": "u1", "account_id": "acc_1", "plan": "pro"}, ID, NOW)
    assert message["type"] == "group" and message["groupId"] == "acc_1" and message["userId"] == "u1"
    assert message["timestamp"] == "2026-11-22T08:00:00.000Z"  # no timestamp column: the sync time
    with pytest.raises(InvalidRecord, match="Group ID is required"):
        builder.build({"user_id": "u1", "account_id": None, "plan": "pro"}, ID, NOW)


@pytest.mark.parametrize("user_id", [None, ""])
def test_missing_ids_are_invalid_with_segments_message(user_id) -> None:
    builder = PayloadBuilder.for_mapping(identify(), TYPES)
    with pytest.raises(InvalidRecord, match="Either `Anonymous ID` or `User ID` must be defined"):
        builder.build({"user_id": user_id, "email": "x"}, ID, NOW)


def test_anonymous_only_profile() -> None:
    mapping = MappingConfig(
        name="t", action="identify", user_id="user_id", anonymous_id="anonymous_id", traits={"n": "n"}
    )
    builder = PayloadBuilder.for_mapping(
        mapping, {"user_id": "VARCHAR", "anonymous_id": "VARCHAR", "n": "BIGINT"}
    )
    message = builder.build({"user_id": None, "anonymous_id": "anon-1", "n": 3}, ID, NOW)
    assert "userId" not in message and message["anonymousId"] == "anon-1" and message["traits"] == {"n": 3}


def test_null_handling_per_trait() -> None:
    mapping = identify(nulls="skip", traits={"email": "email", "plan": {"column": "plan", "nulls": "send"}})
    builder = PayloadBuilder.for_mapping(mapping, TYPES)
    message = builder.build({"user_id": "u1", "email": None, "plan": None, "updated_at": None}, ID, NOW)
    assert message["traits"] == {"plan": None}  # email skipped (fill, don't overwrite); plan sent as null


def test_all_columns_as_traits_takes_the_remaining_columns() -> None:
    builder = PayloadBuilder.for_mapping(
        identify(traits={"mail": "email"}, all_columns_as_traits=True), TYPES
    )
    assert set(builder.traits) == {"mail", "plan", "account_id"}  # ids, timestamp and mapped columns excluded


def test_warehouse_values_become_json() -> None:
    tz = dt.timezone(dt.timedelta(hours=2))
    assert json_value(decimal.Decimal("12.50")) == 12.5
    assert json_value(decimal.Decimal("12")) == 12
    assert json_value(decimal.Decimal("NaN")) is None
    assert json_value(float("nan")) is None and json_value(float("-inf")) is None
    assert json_value(dt.date(2026, 3, 1)) == "2026-03-01"
    assert json_value(dt.datetime(2026, 3, 1, 12, 0, tzinfo=tz)) == "2026-03-01T10:00:00.000Z"
    assert json_value({"a": [decimal.Decimal("1.5"), dt.date(2026, 1, 1)]}) == {"a": [1.5, "2026-01-01"]}
    mapping = identify(traits={"prefs": "prefs"})
    builder = PayloadBuilder.for_mapping(mapping, {**TYPES, "prefs": "JSON"})
    message = builder.build({"user_id": 42, "prefs": '{"tz": "UTC", "n": [1, 2]}'}, ID, NOW)
    assert message["traits"]["prefs"] == {"tz": "UTC", "n": [1, 2]}
    assert message["userId"] == "42"  # ids are strings


def test_oversized_message_is_rejected_alone() -> None:
    builder = PayloadBuilder.for_mapping(identify(), TYPES)
    big = builder.build({"user_id": "u1", "email": "x" * 40_000}, ID, NOW)
    with pytest.raises(InvalidRecord, match=r"message is [\d,]+ bytes; Segment accepts at most 32 KB"):
        encode(big)
    small = builder.build({"user_id": "u1", "email": "x"}, ID, NOW)
    assert orjson.loads(encode(small)) == small


def test_clear_message_nulls_every_mapped_trait() -> None:
    builder = PayloadBuilder.for_mapping(identify(), TYPES)
    message = builder.build_clear({"userId": "u1"}, "spp-clear", NOW)
    assert message["traits"] == {"email": None, "plan": None}
    assert message["userId"] == "u1" and message["messageId"] == "spp-clear"
