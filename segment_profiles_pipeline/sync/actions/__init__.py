"""The Segment Profiles destination's four actions, one small module each (as the destination does).

``identify`` and ``group`` are built by ``sync/payloads.py`` directly; ``track`` and
``subscription`` add their own fields here. Every module is pure (plain values in, message parts
out) and raises only the named errors of ``errors.py``, so a rejected record's reason is the
destination's fixed message and its ``code`` is stable.
"""

WIRE_TYPE: dict[str, str] = {
    "identify": "identify",
    "group": "group",
    "track": "track",
    "subscription": "identify",  # Send Subscriptions emits an identify (defaultSubscription type = "identify")
}
"""The Tracking API ``type`` each action sends."""
