"""Send Subscriptions, checked against the destination's sendSubscription/index.ts and its snapshot
("Should return transformed event"): externalIds, messaging_subscriptions, the retl flag, statuses,
and its validations in its order with its messages."""

import datetime as dt

import pytest

from segment_profiles_pipeline import __version__
from segment_profiles_pipeline.config import MappingConfig
from segment_profiles_pipeline.sync.actions.subscription import normalise
from segment_profiles_pipeline.sync.payloads import InvalidRecord, PayloadBuilder

NOW = dt.datetime(2026, 12, 1)
FIELDS = {
    "email": "email",
    "email_subscription_status": "email_s",
    "phone": "phone",
    "sms_subscription_status": "sms_s",
    "whatsapp_subscription_status": "wa_s",
    "android_push_token": "android",
    "android_push_subscription_status": "android_s",
    "ios_push_token": "ios",
    "ios_push_subscription_status": "ios_s",
}
FULL = {
    "uid": "user1234",
    "anon": "anonId1234",
    "email": "tester11@seg.com",
    "email_s": "true",
    "phone": "+12135618345",
    "sms_s": "true",
    "wa_s": "true",
    "android": "abcd12bbfygdbvbvvvv",
    "android_s": "false",
    "ios": "abcd12bbfjfsykdbvbvvvvvv",
    "ios_s": "true",
    "name": "Test User",
    "trait_email": "test-user@test-company.com",
    "at": dt.datetime(2023, 10, 10, 7, 24, 7, 36000),
}


def builder(**overrides) -> PayloadBuilder:
    fields = {
        "name": "s",
        "action": "subscription",
        "user_id": "uid",
        "anonymous_id": "anon",
        "traits": {"email": "trait_email", "name": "name"},
        "timestamp": "at",
        **FIELDS,
    }
    return PayloadBuilder.for_mapping(MappingConfig(**{**fields, **overrides}), {c: "VARCHAR" for c in FULL})


def ext(id_: str, type_: str) -> dict:
    return {"id": id_, "type": type_, "collection": "users", "encoding": "none"}


def test_subscription_message_is_the_destinations_snapshot() -> None:
    assert builder().build(FULL, "spp-x", NOW) == {
        "type": "identify",
        "userId": "user1234",
        "anonymousId": "anonId1234",
        "traits": {"email": "test-user@test-company.com", "name": "Test User"},
        "timestamp": "2023-10-10T07:24:07.036Z",
        "messageId": "spp-x",
        "integrations": {"All": False},
        "context": {
            "library": {"name": "segment-profiles-pipeline", "version": __version__},
            "consent": {},
            "externalIds": [
                ext("tester11@seg.com", "email"),
                ext("+12135618345", "phone"),
                ext("abcd12bbfygdbvbvvvv", "android.push_token"),
                ext("abcd12bbfjfsykdbvbvvvvvv", "ios.push_token"),
            ],
            "messaging_subscriptions": [
                {"key": "tester11@seg.com", "status": "SUBSCRIBED", "type": "EMAIL"},
                {"key": "+12135618345", "status": "SUBSCRIBED", "type": "SMS"},
                {"key": "+12135618345", "status": "SUBSCRIBED", "type": "WHATSAPP"},
                {"key": "abcd12bbfygdbvbvvvv", "status": "UNSUBSCRIBED", "type": "ANDROID_PUSH"},
                {"key": "abcd12bbfjfsykdbvbvvvvvv", "status": "SUBSCRIBED", "type": "IOS_PUSH"},
            ],
            "messaging_subscriptions_retl": True,
        },
    }


def test_email_groups_go_on_the_email_subscription_only() -> None:
    groups = {"marketing": "m", "ProductUpdates": "p", "newsletter": "n", "absent": "x"}
    row = {**FULL, "m": "true", "p": "", "n": "false", "x": None}
    types = {c: "VARCHAR" for c in [*FULL, "m", "p", "n", "x"]}
    mapping = MappingConfig(name="s", action="subscription", subscription_groups=groups, **FIELDS)
    subs = PayloadBuilder.for_mapping(mapping, types).build(row, "spp-x", NOW)["context"][
        "messaging_subscriptions"
    ]
    assert subs[0] == {
        "key": "tester11@seg.com",
        "type": "EMAIL",
        "status": "SUBSCRIBED",
        # '' → getStatus undefined → {name} only; a null column is left out (docs/decisions.md)
        "groups": [
            {"name": "marketing", "status": "SUBSCRIBED"},
            {"name": "ProductUpdates"},
            {"name": "newsletter", "status": "UNSUBSCRIBED"},
        ],
    }
    assert all("groups" not in s for s in subs[1:])


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("true", "SUBSCRIBED"),
        (" Subscribed ", "SUBSCRIBED"),
        ("TRUE", "SUBSCRIBED"),
        ("false", "UNSUBSCRIBED"),
        ("unsubscribed", "UNSUBSCRIBED"),
        ("did-not-subscribe", "DID_NOT_SUBSCRIBE"),
        ("DID_NOT_SUBSCRIBE", "DID_NOT_SUBSCRIBE"),
        ("yes", "INVALID"),
        ("1", "INVALID"),
        ("did not subscribe", "INVALID"),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_status_normalisation_table(raw, status) -> None:
    assert normalise(raw) == status


def test_boolean_status_columns_are_their_text() -> None:
    row = {**FULL, "email_s": True, "sms_s": False}
    subs = builder().build(row, "spp-x", NOW)["context"]["messaging_subscriptions"]
    assert [s["status"] for s in subs[:2]] == ["SUBSCRIBED", "UNSUBSCRIBED"]


NONE = dict.fromkeys(FIELDS.values())


@pytest.mark.parametrize(
    ("row", "code", "message"),
    [
        (
            {},
            "missing_external_ids",
            "Either `Email` or `Phone` or `Android_Push_Token` or `Ios_Push_Token` must be defined.",
        ),
        ({"email": ""}, "missing_external_ids", "Either `Email` or `Phone`"),
        (
            {"email": "a@x.io", "phone": "+1"},
            "missing_subscription_statuses",
            "If any of `Email`, `Phone`, `Android_Push_Token` or `Ios_Push_Token` is present, `Email_Subscription` or "
            "`Sms_Subscription` or `Whatsapp_Subscription` or `Ios_Push_Subscription` or `Android_Push_Subscription` "
            "must be defined.",
        ),
        (
            {"phone": "+1", "email_s": "true"},
            "missing_email_for_email_subscription",
            "A valid `Email` must be defined for `Email_Subscription`.",
        ),
        (
            {"email": "a@x.io", "sms_s": "true", "g": "true"},
            "missing_email_subscription_for_groups",
            "`Email_Subscription` must be defined if Subscription Groups are present.",
        ),
        (
            {"email": "a@x.io", "wa_s": "true"},
            "missing_phone_for_sms_or_whatsapp",
            "A valid `Phone` must be defined for `Sms_Subscription` or `Whatsapp_Subscription`.",
        ),
        (
            {"email": "a@x.io", "android_s": "true"},
            "missing_android_push_token",
            "A valid `Android_Push_Token` must be defined for `Android_Push_Subscription`.",
        ),
        (
            {"email": "a@x.io", "email_s": "true", "phone": "+1", "ios_s": "true"},
            "missing_ios_push_token",
            "A valid `Ios_Push_Token` must be defined for `Ios_Push_Subscription`.",
        ),
        (
            {**FULL, "email_s": "x", "sms_s": "x", "wa_s": "x", "android_s": "x", "ios_s": "x"},
            "invalid_subscription_status",
            "Invalid Subscription Status in `Email_Subscription` or `Sms_Subscription` or `Whatsapp_Subscription` or "
            "`Android_Push_Subscription` or `Ios_Push_Subscription`.",
        ),
        # a token alone: the statuses check comes before the per-channel ones
        ({"android": "t", "wa_s": None}, "missing_subscription_statuses", "If any of"),
    ],
)
def test_each_validation_in_the_destinations_order_with_its_message(row, code, message) -> None:
    b = builder(subscription_groups={"g": "g"}) if "g" in row else builder()
    with pytest.raises(InvalidRecord) as err:
        b.build({**NONE, "uid": "u1", **row}, "spp-x", NOW)
    assert err.value.code == code and str(err.value).startswith(message)


def test_all_statuses_invalid_but_one_missing_is_still_sent() -> None:
    """InvalidSubscriptionStatusError needs all five present and INVALID; otherwise INVALID is sent."""
    row = {**FULL, "email_s": "x", "sms_s": "x", "wa_s": "x", "android_s": "x", "ios_s": None}
    subs = builder().build(row, "spp-x", NOW)["context"]["messaging_subscriptions"]
    assert [s["status"] for s in subs] == ["INVALID"] * 4


def test_subscriptions_need_no_user_or_anonymous_id() -> None:
    message = builder().build({**FULL, "uid": None, "anon": None}, "spp-x", NOW)
    assert "userId" not in message and "anonymousId" not in message
    assert message["context"]["externalIds"][0] == ext("tester11@seg.com", "email")
