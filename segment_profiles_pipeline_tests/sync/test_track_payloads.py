"""Send Track payloads, checked against the destination's sendTrack (segment-profiles/sendTrack/index.ts)
and its snapshot: {userId, anonymousId, timestamp, event, messageId, integrations: {All: false},
properties, context: {consent}, type: 'track'}; group_id is never sent."""

import datetime as dt

import pytest

from segment_profiles_pipeline import __version__
from segment_profiles_pipeline.config import MappingConfig, ModelConfig
from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.sync.payloads import InvalidRecord, PayloadBuilder
from segment_profiles_pipeline.yaml_config import validate

NOW = dt.datetime(2026, 12, 1, 9, 0)
LIBRARY = {"name": "segment-profiles-pipeline", "version": __version__}
TYPES = {
    "id": "VARCHAR",
    "uid": "VARCHAR",
    "anon": "VARCHAR",
    "event": "VARCHAR",
    "plan": "VARCHAR",
    "at": "TIMESTAMP",
}


def track(**overrides) -> MappingConfig:
    fields = {
        "name": "t",
        "action": "track",
        "user_id": "uid",
        "anonymous_id": "anon",
        "event_name": {"column": "event"},
    }
    return MappingConfig(**{**fields, **overrides})


ROW = {
    "id": "e1",
    "uid": "test-user-ufi5bgkko5",
    "anon": "arky4h2sh7k",
    "event": "Test Event",
    "plan": "Business",
    "at": dt.datetime(2023, 9, 26, 9, 46, 28, 290000),
}


def test_track_message_is_the_destinations_shape() -> None:
    builder = PayloadBuilder.for_mapping(track(properties={"plan": "plan"}, timestamp="at"), TYPES)
    assert builder.build(ROW, "spp-x", NOW) == {
        "type": "track",
        "userId": "test-user-ufi5bgkko5",
        "anonymousId": "arky4h2sh7k",
        "event": "Test Event",
        "properties": {"plan": "Business"},
        "timestamp": "2023-09-26T09:46:28.290Z",
        "messageId": "spp-x",
        "integrations": {"All": False},
        "context": {"library": LIBRARY, "consent": {}},
    }


def test_fixed_event_name_and_all_remaining_columns_as_properties() -> None:
    mapping = track(event_name={"value": "Order Completed"}, all_columns_as_properties=True, timestamp="at")
    message = PayloadBuilder.for_mapping(mapping, TYPES).build(ROW, "spp-x", NOW)
    assert message["event"] == "Order Completed"
    # every column not feeding a field (ids, event, timestamp) becomes a property
    assert message["properties"] == {"id": "e1", "event": "Test Event", "plan": "Business"}
    assert "traits" not in message


def test_missing_ids_and_missing_event_name_are_the_destinations_errors() -> None:
    builder = PayloadBuilder.for_mapping(track(), TYPES)
    with pytest.raises(InvalidRecord, match=r"^Either `Anonymous ID` or `User ID` must be defined\.") as err:
        builder.build({**ROW, "uid": None, "anon": ""}, "spp-x", NOW)
    assert err.value.code == "missing_user_or_anonymous_id"
    with pytest.raises(
        InvalidRecord, match=r"^`Event Name` is required for Send Track\. Column event"
    ) as err:
        builder.build({**ROW, "event": " "}, "spp-x", NOW)
    assert err.value.code == "missing_event_name"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"on_delete": "clear_traits"}, "on_delete: clear_traits is not available for action track"),
        ({"group_id": "uid"}, "`group_id` is not a field of action track"),
        ({"traits": {"plan": "plan"}}, "`traits` is not a field of action track"),
        ({"send": "update"}, "send: update is not available for action track"),
        ({"event_name": None}, "a `track` mapping needs `event_name`"),
        ({"event_name": {"column": "event", "value": "E"}}, "set exactly one of `column`"),
    ],
)
def test_track_config_errors_name_the_file_and_field(fields, message) -> None:
    mapping = {"name": "t", "action": "track", "user_id": "uid", "event_name": {"column": "event"}, **fields}
    with pytest.raises(ConfigError) as err:
        validate(ModelConfig, {"primary_key": "id", "mappings": [mapping]}, "models/events.yml")
    assert str(err.value).startswith(
        "models/events.yml: invalid configuration: field 'mappings[0]"
    ) and message in str(err.value)


def test_track_defaults_to_add_and_identify_accepts_group_id() -> None:
    assert track().send == "add" and track(send="upsert").send == "upsert"
    identify = MappingConfig(name="i", action="identify", user_id="uid", group_id="gid")
    builder = PayloadBuilder.for_mapping(identify, {"uid": "VARCHAR", "gid": "VARCHAR"})
    message = builder.build({"uid": "u1", "gid": "acc_1"}, "spp-x", NOW)
    assert message["groupId"] == "acc_1" and message["type"] == "identify"  # as sendIdentify emits it
    assert "groupId" not in builder.build({"uid": "u1", "gid": None}, "spp-x", NOW)  # optional there
