"""Send Subscriptions: ``context.externalIds`` and ``context.messaging_subscriptions`` of an identify.

A port of ``segment-profiles/sendSubscription/index.ts``: the same status normalisation, the same
channel table, the same validations in the same order with the same messages. Differences, each
deliberate (docs/decisions.md):

- values arrive from warehouse columns, so a boolean status is its text (``true``/``false``) and
  an empty string counts as missing for the ids and tokens (the project-wide rule for ids);
- a subscription group whose column is null is left out (like a null channel status), instead of
  the destination's ``String(null)`` → ``INVALID``; an empty one is sent as ``{name}`` without a
  status, as the destination sends it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from segment_profiles_pipeline.sync.actions import errors

SUBSCRIBED, UNSUBSCRIBED, DID_NOT_SUBSCRIBE, INVALID = (
    "SUBSCRIBED",
    "UNSUBSCRIBED",
    "DID_NOT_SUBSCRIBE",
    "INVALID",
)
STATUSES: dict[str, str] = {
    "true": SUBSCRIBED,
    "subscribed": SUBSCRIBED,
    "false": UNSUBSCRIBED,
    "unsubscribed": UNSUBSCRIBED,
    "did-not-subscribe": DID_NOT_SUBSCRIBE,
    "did_not_subscribe": DID_NOT_SUBSCRIBE,
}
"""Accepted values (after trimming and lower-casing) → the status sent; anything else is INVALID."""


@dataclass(frozen=True)
class Channel:
    """One row of the destination's ``supportedChannels``."""

    field: str  # the id field (mapping field name)
    external_id: str  # context.externalIds[].type
    statuses: tuple[tuple[str, str], ...]  # (status field, messaging subscription type)
    groups: bool = False


CHANNELS = (
    Channel("email", "email", (("email_subscription_status", "EMAIL"),), groups=True),
    Channel(
        "phone", "phone", (("sms_subscription_status", "SMS"), ("whatsapp_subscription_status", "WHATSAPP"))
    ),
    Channel(
        "android_push_token", "android.push_token", (("android_push_subscription_status", "ANDROID_PUSH"),)
    ),
    Channel("ios_push_token", "ios.push_token", (("ios_push_subscription_status", "IOS_PUSH"),)),
)
STATUS_FIELDS = tuple(status for channel in CHANNELS for status, _ in channel.statuses)

# (condition on the id field, status fields, error): the "a status without its id" checks, in order
_NEEDS_ID = (
    (
        "phone",
        ("sms_subscription_status", "whatsapp_subscription_status"),
        errors.MISSING_PHONE_FOR_SMS_OR_WHATSAPP,
    ),
    ("android_push_token", ("android_push_subscription_status",), errors.MISSING_ANDROID_PUSH_TOKEN),
    ("ios_push_token", ("ios_push_subscription_status",), errors.MISSING_IOS_PUSH_TOKEN),
)


def normalise(status: str | None) -> str | None:
    """The destination's ``getStatus``: None for a missing or blank status, else one of the four."""
    text = (status or "").strip().lower()
    if not text:
        return None
    return STATUSES.get(text, INVALID)


def as_text(value: Any) -> str | None:
    """A warehouse value as the string field the destination declares (booleans as true/false)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def validate(values: Mapping[str, str | None], groups: Mapping[str, str]) -> None:
    """The destination's ``validateSubscriptions``, in its order; raises the first failing check."""
    if not any(values.get(channel.field) for channel in CHANNELS):
        raise errors.MISSING_EXTERNAL_IDS()
    if not any(values.get(field) for field in STATUS_FIELDS):
        raise errors.MISSING_SUBSCRIPTION_STATUSES()
    if not values.get("email") and values.get("email_subscription_status"):
        raise errors.MISSING_EMAIL_FOR_EMAIL_SUBSCRIPTION()
    if groups and not values.get("email_subscription_status"):
        raise errors.MISSING_EMAIL_SUBSCRIPTION_FOR_GROUPS()
    for id_field, status_fields, error in _NEEDS_ID:
        if not values.get(id_field) and any(values.get(f) for f in status_fields):
            raise error()
    if all(values.get(f) and normalise(values[f]) == INVALID for f in STATUS_FIELDS):
        raise errors.INVALID_SUBSCRIPTION_STATUS()


def context(values: Mapping[str, str | None], groups: Mapping[str, str]) -> dict[str, Any]:
    """``externalIds``, ``messaging_subscriptions`` and ``messaging_subscriptions_retl`` for one record.

    ``values`` holds the id and status fields as text (None when null or empty for the ids);
    ``groups`` the email group statuses that are not null, in mapping order."""
    validate(values, groups)
    external_ids = [
        {"id": values[c.field], "type": c.external_id, "collection": "users", "encoding": "none"}
        for c in CHANNELS
        if values.get(c.field) is not None
    ]
    subscriptions: list[dict[str, Any]] = []
    for channel in CHANNELS:
        for status_field, kind in channel.statuses:
            status = normalise(values.get(status_field))
            if status is None:
                continue
            subscription: dict[str, Any] = {"key": values.get(channel.field), "type": kind, "status": status}
            if channel.groups and groups:
                subscription["groups"] = [_group(name, value) for name, value in groups.items()]
            subscriptions.append(subscription)
    return {
        "messaging_subscriptions": subscriptions,
        "externalIds": external_ids,
        "messaging_subscriptions_retl": True,
    }


def _group(name: str, status: str) -> dict[str, str]:
    normalised = normalise(status)
    return {"name": name} if normalised is None else {"name": name, "status": normalised}
