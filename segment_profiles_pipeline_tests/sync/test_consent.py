"""Consent on every action, as the destination's validateConsentObject (segment-properties.ts)."""

import datetime as dt

import pytest

from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.sync.actions.consent import context_consent
from segment_profiles_pipeline.sync.payloads import InvalidRecord, PayloadBuilder

NOW = dt.datetime(2026, 12, 1)
VALID = {"categoryPreferences": {"Advertising": True, "Analytics": False}}


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (None, {}),  # undefined consent is valid → {...undefined} = {}
        (VALID, VALID),
        ({"categoryPreferences": {}}, {"categoryPreferences": {}}),  # every() of nothing is true
        ({"categoryPreferences": {"Advertising": "true"}}, {}),  # a string is not a boolean
        ({"categoryPreferences": {"Advertising": 1}}, {}),
        ({"categoryPreferences": None}, {}),
        ({"categoryPreferences": ["a"]}, {}),  # JS Object.values(['a']) has a non-boolean
        ({"other": True}, {}),  # no categoryPreferences
        ({}, {}),
    ],
)
def test_consent_validation_table(value, sent) -> None:
    assert context_consent(value, "consent") == sent


@pytest.mark.parametrize("value", ["yes", 3, ["a"]])
def test_a_consent_that_is_not_an_object_rejects_the_record(value) -> None:
    with pytest.raises(InvalidRecord, match=r"`Consent` must be an object\. Column consent holds") as err:
        context_consent(value, "consent")
    assert err.value.code == "consent_not_an_object"


@pytest.mark.parametrize("action", ["identify", "group", "track", "subscription"])
def test_every_action_sends_context_consent_from_a_json_text_column(action) -> None:
    fields = {
        "identify": {"user_id": "uid"},
        "group": {"user_id": "uid", "group_id": "gid"},
        "track": {"user_id": "uid", "event_name": {"value": "E"}},
        "subscription": {"email": "email", "email_subscription_status": "status"},
    }[action]
    mapping = MappingConfig(name="m", action=action, consent="consent", **fields)
    builder = PayloadBuilder.for_mapping(mapping, {"uid": "VARCHAR", "gid": "VARCHAR", "consent": "VARCHAR"})
    row = {"uid": "u1", "gid": "g1", "email": "a@x.io", "status": "true"}
    text = '{"categoryPreferences": {"Advertising": true, "Analytics": false}}'
    assert builder.build({**row, "consent": text}, "id", NOW)["context"]["consent"] == VALID
    invalid = '{"categoryPreferences": {"Advertising": "yes"}}'
    assert builder.build({**row, "consent": invalid}, "id", NOW)["context"]["consent"] == {}
    assert builder.build({**row, "consent": None}, "id", NOW)["context"]["consent"] == {}
