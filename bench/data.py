"""Warehouse tables for the benchmarks, generated in DuckDB SQL.

``range()`` plus ``hash(i, salt)`` gives deterministic pseudo-random columns at millions of rows
per second, far faster than the numpy sample generator at 10M rows. Column names and types match
the sample warehouse (``app.users`` and the Flex event tables of DESIGN.md), so the project's real
``users_identify`` mapping and ``computed_traits.yml`` recipes run on them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from segment_profiles_pipeline.models.sample_data import CHANNELS, FIRST, LAST, PLANS, SENTIMENTS

ANCHOR = "2026-11-01 00:00:00"
"""Every generated timestamp is before this moment (the benchmark's "now")."""

USER_COLUMNS = (
    "user_id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "plan",
    "account_id",
    "created_at",
    "updated_at",
)


def _pick(values: Sequence[str], salt: int, i: str = "i") -> str:
    """One of ``values``, chosen by a hash of ``i`` (different salts give independent choices)."""
    items = ", ".join(f"'{v}'" for v in values)
    return f"([{items}])[1 + CAST(hash({i}, {salt}) % {len(values)} AS INTEGER)]"


def _between(low: int, high: int, salt: int, i: str = "i") -> str:
    """A pseudo-random integer in [low, high)."""
    return f"({low} + CAST(hash({i}, {salt}) % {high - low} AS BIGINT))"


def users_sql(records: int, *, changed: bool = False) -> str:
    """A SELECT of ``records`` users like ``app.users`` (key ``u_<9 digits>``, all keys unique).

    With ``changed=True`` it is the same table one sync later: 1% of the users (``i % 100 = 2``)
    have a new email, 0.1% (``i % 1000 = 1``) are gone and ``records // 1000`` new users follow.
    """
    added = records // 1000 if changed else 0
    email = "lower(first_name) || '.' || lower(last_name) || i || '@example.com'"
    if changed:
        email = f"CASE WHEN i % 100 = 2 THEN 'moved.' || {email} ELSE {email} END"
    where = f"WHERE i >= {records} OR i % 1000 <> 1" if changed else ""
    return f"""
SELECT user_id, {email} AS email, first_name, last_name, phone, plan, account_id, created_at, updated_at
FROM (
    SELECT
        i,
        'u_' || lpad(CAST(i AS VARCHAR), 9, '0') AS user_id,
        {_pick(FIRST, 1)} AS first_name,
        {_pick(LAST, 2)} AS last_name,
        '+1555' || lpad(CAST(hash(i, 3) % 10000000 AS VARCHAR), 7, '0') AS phone,
        {_pick(PLANS, 4)} AS plan,
        'acc_' || lpad(CAST(i // 10 AS VARCHAR), 8, '0') AS account_id,
        TIMESTAMP '{ANCHOR}' - to_seconds({_between(86_400, 700 * 86_400, 5)}) AS created_at,
        TIMESTAMP '{ANCHOR}' - to_seconds({_between(0, 86_400, 6)}) AS updated_at
    FROM range({records + added}) AS t(i)
)
{where}
"""


def expected_changes(records: int) -> dict[str, int]:
    """What ``users_sql(records, changed=True)`` changes, counted by hand from its predicates."""
    updated = sum(1 for i in range(2, records, 100))  # i % 100 = 2 (never also i % 1000 = 1)
    deleted = sum(1 for i in range(1, records, 1000))  # i % 1000 = 1
    return {"add": records // 1000, "update": updated, "delete": deleted}


EVENTS_PER_USER = 20
"""As in the sample data: the number of profiles grows with the events."""
DUPLICATE_ONE_IN = 200
"""Segment warehouses can hold a message twice: this share of messages gets an exact second copy."""


def flex_sql(events: int, *, users: int, first: int = 0) -> dict[str, str]:
    """SELECTs for the two Flex event tables: ``events // 2`` messages each, numbered from ``first``.

    Per message: a user (5% anonymous only: the profile is then the ``anonymous_id``), direction
    (70% inbound), a channel (60% the user's favourite), one of 60 agents, a duration, and for the
    completed event a sentiment (3% null). ``received_at`` grows with the number, so messages
    generated with a higher ``first`` land above the previous watermark, as new events do.
    """
    half = events // 2
    numbered = f"""
    SELECT
        n,
        'u_' || lpad(CAST(hash(n, 11) % {users} AS VARCHAR), 9, '0') AS who,
        hash(n, 12) % 100 < 5 AS anonymous_only,
        TIMESTAMP '{ANCHOR}' - INTERVAL 200 DAY + to_seconds(CAST(n AS BIGINT)) AS arrived
    FROM range({first}, {first + half}) AS t(n)"""
    identity = """
    CASE WHEN anonymous_only THEN NULL ELSE who END AS user_id,
    'anon-' || who AS anonymous_id,"""
    times = """
    arrived - to_seconds(CAST(hash(n, 13) % 120 AS BIGINT)) AS timestamp,
    arrived AS received_at,"""
    initiated = f"""
SELECT
    'ei-' || n AS id,{identity}
    'flex_engagement_initiated' AS event,
    'Flex - Engagement Initiated' AS event_text,{times}
    CASE WHEN hash(n, 14) % 100 < 70 THEN 'Inbound' ELSE 'Outbound' END AS direction,
    CASE WHEN hash(n, 15) % 100 < 60 THEN {_pick(CHANNELS, 16, "who")} ELSE {_pick(CHANNELS, 17, "n")} END
        AS channel_type,
    'WK' || lpad(CAST(hash(n, 18) % 60 AS VARCHAR), 32, '0') AS last_known_agent_worker_sid,
    'WK' || lpad(CAST(hash(n, 19) % 60 AS VARCHAR), 32, '0') AS first_known_agent_worker_sid,
    'KD' || lpad(CAST(n AS VARCHAR), 32, '0') AS interaction_sid,
    'UO' || lpad(CAST(hash(n, 20) % 1000000 AS VARCHAR), 32, '0') AS channel_sid,
    CAST(5 + hash(n, 21) % 900 AS BIGINT) AS duration,
    arrived - to_seconds(CAST(600 + hash(n, 21) % 900 AS BIGINT)) AS customer_start_time
FROM ({numbered})
"""
    completed = f"""
SELECT
    'ec-' || n AS id,{identity}
    'flex_engagement_completed' AS event,
    'Flex - Engagement Completed' AS event_text,{times}
    'KD' || lpad(CAST(n AS VARCHAR), 32, '0') AS interaction_sid,
    'UO' || lpad(CAST(hash(n, 20) % 1000000 AS VARCHAR), 32, '0') AS channel_sid,
    CASE WHEN hash(n, 22) % 100 < 3 THEN NULL ELSE {_pick(SENTIMENTS, 23, "n")} END AS sentiment,
    '{{"dispositionCode": "resolved"}}' AS codes
FROM ({numbered})
"""
    return {"flex.flex_engagement_initiated": initiated, "flex.flex_engagement_completed": completed}


def duplicates_sql(table: str, first: int) -> str:
    """Second copies of some messages numbered from ``first`` (same id, same content)."""
    return (
        f"INSERT INTO {table} SELECT * FROM {table} "
        f"WHERE CAST(split_part(id, '-', 2) AS BIGINT) >= {first} AND hash(id) % {DUPLICATE_ONE_IN} = 0"
    )
