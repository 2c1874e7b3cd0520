"""Named record errors with a stable code and a fixed message (the destination's, where it has one).

The message is the reason stored in ``failed_records``; details (which column) follow it, so a
search for the fixed text finds every record rejected for that reason. Messages marked *destination*
are copied from ``segment-profiles/errors.ts`` in ``segmentio/action-destinations``.
"""

from __future__ import annotations

from dataclasses import dataclass

from segment_profiles_pipeline.state.failed_records import ReasonCode


class InvalidRecord(ValueError):
    """A record that must not be sent; the message is the reason stored in failed_records."""

    def __init__(self, reason: str, code: ReasonCode = "invalid"):
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class RecordError:
    """One kind of rejection: ``code`` goes to ``failed_records.reason_code``, ``message`` starts the reason."""

    code: ReasonCode
    message: str

    def __call__(self, detail: str = "") -> InvalidRecord:
        return InvalidRecord(f"{self.message} {detail}".strip(), self.code)


# destination: MissingUserOrAnonymousIdThrowableError (identify, group, track)
MISSING_USER_OR_ANONYMOUS_ID = RecordError(
    "missing_user_or_anonymous_id", "Either `Anonymous ID` or `User ID` must be defined."
)
# destination: event_name is a required field of Send Track
MISSING_EVENT_NAME = RecordError("missing_event_name", "`Event Name` is required for Send Track.")
# destination: consent is an object field; validateConsentObject throws on anything else
CONSENT_NOT_AN_OBJECT = RecordError("consent_not_an_object", "`Consent` must be an object.")

# destination: sendSubscription's validations, in the order it runs them
MISSING_EXTERNAL_IDS = RecordError(
    "missing_external_ids",
    "Either `Email` or `Phone` or `Android_Push_Token` or `Ios_Push_Token` must be defined.",
)
MISSING_SUBSCRIPTION_STATUSES = RecordError(
    "missing_subscription_statuses",
    "If any of `Email`, `Phone`, `Android_Push_Token` or `Ios_Push_Token` is present, `Email_Subscription` or "
    "`Sms_Subscription` or `Whatsapp_Subscription` or `Ios_Push_Subscription` or `Android_Push_Subscription` "
    "must be defined.",
)
MISSING_EMAIL_FOR_EMAIL_SUBSCRIPTION = RecordError(
    "missing_email_for_email_subscription", "A valid `Email` must be defined for `Email_Subscription`."
)
MISSING_EMAIL_SUBSCRIPTION_FOR_GROUPS = RecordError(
    "missing_email_subscription_for_groups",
    "`Email_Subscription` must be defined if Subscription Groups are present.",
)
MISSING_PHONE_FOR_SMS_OR_WHATSAPP = RecordError(
    "missing_phone_for_sms_or_whatsapp",
    "A valid `Phone` must be defined for `Sms_Subscription` or `Whatsapp_Subscription`.",
)
MISSING_ANDROID_PUSH_TOKEN = RecordError(
    "missing_android_push_token",
    "A valid `Android_Push_Token` must be defined for `Android_Push_Subscription`.",
)
MISSING_IOS_PUSH_TOKEN = RecordError(
    "missing_ios_push_token", "A valid `Ios_Push_Token` must be defined for `Ios_Push_Subscription`."
)
INVALID_SUBSCRIPTION_STATUS = RecordError(
    "invalid_subscription_status",
    "Invalid Subscription Status in `Email_Subscription` or `Sms_Subscription` or `Whatsapp_Subscription` or "
    "`Android_Push_Subscription` or `Ios_Push_Subscription`.",
)
