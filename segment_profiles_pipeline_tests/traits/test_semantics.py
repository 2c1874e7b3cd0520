"""Every trait type, operator and window on small hand-built event tables, with hand-computed answers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from segment_profiles_pipeline.errors import ConfigError
from segment_profiles_pipeline.warehouse.duckdb import DuckDBWarehouse
from segment_profiles_pipeline_tests.traits.helpers import (
    T0,
    compute,
    ev,
    load_events,
    table_rows,
    traits_file,
)

NOW = T0 + dt.timedelta(days=10)
DAY = 24 * 60


def run(
    tmp_path: Path,
    yml: str,
    tables: dict[str, list[dict[str, Any]]],
    types: dict[str, pa.DataType] | None = None,
    now: dt.datetime = NOW,
) -> dict[str, dict[str, Any]]:
    project = traits_file(tmp_path / "models", yml)
    with DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).session() as session:
        for table, rows in tables.items():
            load_events(session, table, rows, types)
        compute(session, project, now, full_refresh=True)
        return table_rows(session)


def column(rows: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    return {profile: row[key] for profile, row in rows.items()}


def test_counters_profiles_dedupe_and_case_sensitivity(tmp_path: Path) -> None:
    rows = run(
        tmp_path,
        """
        traits:
          - {name: Inbounds, type: event_counter, event: Test Event,
             conditions: {property: direction, operator: equals, value: Inbound}}
          - {name: Inbounds any case, type: event_counter, event: Test Event,
             conditions: {property: direction, operator: equals, value: inbound, case_sensitive: false}}
          - {name: Events, type: event_counter, event: Test Event}
          - {name: Other events, type: event_counter, event: Other Event}
        """,
        {
            "flex.test_event": [
                ev("e1", user="u1", anon="a9", minute=0, direction="Inbound"),
                ev("e2", user="u1", minute=1, direction="Inbound"),
                ev("e2", user="u1", minute=1, direction="Inbound", received_at=T0 + dt.timedelta(hours=5)),
                ev("e3", user="u1", minute=2, direction="Outbound"),
                ev("e4", user=None, anon="a1", minute=3, direction="Inbound"),
                ev("e5", user="", anon="a1", minute=4, direction="inbound"),
                ev("e6", user=None, anon=None, minute=5, direction="Inbound"),
                ev("e7", user="u2", minute=6, direction="Outbound"),
            ],
            "flex.other_event": [ev("o1", user="u3", minute=0)],
        },
    )
    # Keyed by user_id when present (the anonymous_id a9 of u1's event does not make a profile), else
    # anonymous_id ("" counts as missing); e6 has neither and belongs to no profile.
    assert {k: (r["user_id"], r["anonymous_id"]) for k, r in rows.items()} == {
        "user:u1": ("u1", None),
        "anon:a1": (None, "a1"),
        "user:u2": ("u2", None),
        "user:u3": ("u3", None),
    }
    # e2 is stored twice but counted once; "inbound" only matches case-insensitively.
    assert column(rows, "inbounds") == {"user:u1": 2, "anon:a1": 1, "user:u2": 0, "user:u3": None}
    assert column(rows, "inbounds_any_case") == {"user:u1": 2, "anon:a1": 2, "user:u2": 0, "user:u3": None}
    assert column(rows, "events") == {"user:u1": 3, "anon:a1": 2, "user:u2": 1, "user:u3": None}
    # A counter is 0 once the profile has any event of the table, null before that.
    assert column(rows, "other_events") == {"user:u1": None, "anon:a1": None, "user:u2": None, "user:u3": 1}


def test_aggregations_over_numbers(tmp_path: Path) -> None:
    rows = run(
        tmp_path,
        """
        traits:
          - {name: Spend sum, type: aggregation, function: sum, event: Test Event, property: amount}
          - {name: Spend avg, type: aggregation, function: avg, event: Test Event, property: amount}
          - {name: Spend min, type: aggregation, function: min, event: Test Event, property: amount}
          - {name: Spend max, type: aggregation, function: max, event: Test Event, property: amount}
          - {name: Spend on a, type: aggregation, function: sum, event: Test Event, property: amount,
             conditions: {property: kind, operator: equals, value: a}}
          - {name: Qty max, type: aggregation, function: max, event: Test Event, property: qty}
        """,
        {
            "flex.test_event": [
                ev("e1", user="u1", minute=0, amount=10.0, kind="a", qty=3),
                ev("e2", user="u1", minute=1, amount=2.5, kind="b", qty=9),
                ev("e3", user="u1", minute=2, amount=None, kind="a", qty=None),
                ev("e4", user="u1", minute=3, amount=7.0, kind="a", qty=1),
                ev("e5", user="u2", minute=0, amount=None, kind="a", qty=None),
            ]
        },
        types={"amount": pa.float64(), "qty": pa.int64()},
    )
    u1, u2 = rows["user:u1"], rows["user:u2"]
    assert (u1["spend_sum"], u1["spend_avg"], u1["spend_min"], u1["spend_max"]) == (19.5, 6.5, 2.5, 10.0)
    assert u1["spend_on_a"] == 17.0 and u1["qty_max"] == 9
    assert (u2["spend_sum"], u2["spend_avg"], u2["spend_min"], u2["spend_max"], u2["spend_on_a"]) == (
        None,
    ) * 5


def test_most_frequent_min_frequency_ties_and_nulls(tmp_path: Path) -> None:
    def events(user: str, values: list[str | None]) -> list[dict[str, Any]]:
        return [ev(f"{user}-{i}", user=user, minute=i, channel_type=v) for i, v in enumerate(values)]

    rows = run(
        tmp_path,
        """
        traits:
          - {name: Channel, type: most_frequent, event: Test Event, property: channelType}
          - {name: Channel 3, type: most_frequent, event: Test Event, property: channelType, min_frequency: 3}
        """,
        {
            "flex.test_event": [
                *events("u1", ["email", "sms", "email", "sms", "chat", None, None, None]),
                *events("u2", ["Sms", "sms"]),
                *events("u3", ["b", "B", "b", "B"]),
                *events("u4", ["y", "x", "y", "x", "y"]),
            ]
        },
    )
    # u1: email and sms tie at 2 (three nulls do not count) → the smaller value; u2: no value twice;
    # u3: "B" < "b" in byte order; u4: y (3) beats x (2).
    assert column(rows, "channel") == {"user:u1": "email", "user:u2": None, "user:u3": "B", "user:u4": "y"}
    assert column(rows, "channel_3") == {"user:u1": None, "user:u2": None, "user:u3": None, "user:u4": "y"}


def test_first_and_last_order_nulls_and_ties(tmp_path: Path) -> None:
    later = dt.timedelta(minutes=3, seconds=2)
    rows = run(
        tmp_path,
        """
        traits:
          - {name: First v, type: first, event: Test Event, property: v}
          - {name: Last v, type: last, event: Test Event, property: v}
          - {name: Last kept v, type: last, event: Test Event, property: v,
             conditions: {property: kind, operator: equals, value: keep}}
          - {name: Last duration, type: last, event: Test Event, property: duration, value_type: number}
        """,
        {
            "flex.test_event": [
                # u1: the latest event has no value, so last is the one before it
                ev("a3", user="u1", minute=10, v=None, kind="keep", duration=None),
                ev("a1", user="u1", minute=0, v="a", kind="keep", duration=30),
                ev("a2", user="u1", minute=5, v="b", kind="drop", duration=45),
                # u2: same timestamp → received_at decides
                ev("k2", user="u2", minute=3, v="x", duration=1),
                ev("k1", user="u2", minute=3, v="y", duration=2, received_at=T0 + later),
                # u3: same timestamp and received_at → id decides
                ev("m2", user="u3", minute=3, v="q", duration=5),
                ev("m1", user="u3", minute=3, v="p", duration=6),
                # u4: no value at all
                ev("n1", user="u4", minute=1, v=None, duration=None),
            ]
        },
        types={"duration": pa.int64()},
    )
    assert column(rows, "first_v") == {"user:u1": "a", "user:u2": "x", "user:u3": "p", "user:u4": None}
    assert column(rows, "last_v") == {"user:u1": "b", "user:u2": "y", "user:u3": "q", "user:u4": None}
    assert column(rows, "last_kept_v") == {"user:u1": "a", "user:u2": None, "user:u3": None, "user:u4": None}
    assert column(rows, "last_duration") == {"user:u1": 45, "user:u2": 2, "user:u3": 5, "user:u4": None}


def test_unique_list_sorted_and_its_count(tmp_path: Path) -> None:
    rows = run(
        tmp_path,
        """
        traits:
          - {name: Seen values, type: unique_list, event: Test Event, property: v}
          - {name: Value count, type: unique_list_count, event: Test Event, property: v}
          - {name: Kept values, type: unique_list, event: Test Event, property: v,
             conditions: {property: kind, operator: equals, value: keep}}
        """,
        {
            "flex.test_event": [
                ev("a1", user="u1", minute=0, v="b", kind="keep"),
                ev("a2", user="u1", minute=1, v="a", kind="drop"),
                ev("a3", user="u1", minute=2, v="b", kind="keep"),
                ev("a4", user="u1", minute=3, v=None, kind="keep"),
                ev("a5", user="u1", minute=4, v="C", kind="keep"),
                ev("b1", user="u2", minute=0, v=None, kind="keep"),
            ]
        },
    )
    assert column(rows, "seen_values") == {"user:u1": ["C", "a", "b"], "user:u2": None}
    assert column(rows, "value_count") == {"user:u1": 3, "user:u2": 0}
    assert column(rows, "kept_values") == {"user:u1": ["C", "b"], "user:u2": None}


OPERATOR_TRAITS = {
    # trait key: (conditions as YAML flow, hand-counted matches among r1..r5 below)
    "eq": ("{property: s, operator: equals, value: Apple}", 1),
    "eq_ci": ("{property: s, operator: equals, value: apple, case_sensitive: false}", 1),
    "neq": ("{property: s, operator: not_equals, value: Apple}", 3),
    "lt": ("{property: n, operator: less_than, value: 5}", 1),
    "gt": ("{property: n, operator: greater_than, value: 5}", 1),
    "lte": ("{property: n, operator: less_than_or_equal, value: 5}", 3),
    "gte": ("{property: n, operator: greater_than_or_equal, value: 5}", 3),
    "lt_text": ("{property: s, operator: less_than, value: B}", 1),
    "has": ("{property: s, operator: contains, value: pp}", 2),
    "has_ci": ("{property: s, operator: contains, value: APP, case_sensitive: false}", 2),
    "has_cs": ("{property: s, operator: contains, value: APP}", 0),
    "hasnt": ("{property: s, operator: not_contains, value: an}", 3),
    "starts": ("{property: s, operator: starts_with, value: a}", 1),
    "starts_ci": ("{property: s, operator: starts_with, value: a, case_sensitive: false}", 2),
    "ends": ("{property: s, operator: ends_with, value: e}", 3),
    "present": ("{property: s, operator: exists}", 4),
    "absent": ("{property: s, operator: not_exists}", 1),
    "one_of": ("{property: s, operator: equals_one_of, value: [Apple, grape, Kiwi]}", 2),
    "one_of_ci": ("{property: s, operator: equals_one_of, value: [apple, BANANA], case_sensitive: false}", 2),
    "nested": (
        "{or: [{property: s, operator: equals, value: Banana},"
        " {and: [{property: n, operator: greater_than_or_equal, value: 5}, {property: s, operator: starts_with, value: g}]}]}",
        2,
    ),
    "all_of_list": (
        "[{property: n, operator: greater_than, value: 1}, {property: n, operator: less_than, value: 10}]",
        2,
    ),
}


def test_every_operator(tmp_path: Path) -> None:
    yml = "traits:\n" + "".join(
        f"  - {{name: {key}, key: {key}, type: event_counter, event: Test Event, conditions: {cond}}}\n"
        for key, (cond, _) in OPERATOR_TRAITS.items()
    )
    rows = run(
        tmp_path,
        yml,
        {
            "flex.test_event": [
                ev("r1", user="u1", minute=1, s="Apple", n=1),
                ev("r2", user="u1", minute=2, s="apple pie", n=5),
                ev("r3", user="u1", minute=3, s="Banana", n=10),
                ev("r4", user="u1", minute=4, s=None, n=None),
                ev("r5", user="u1", minute=5, s="grape", n=5),
            ]
        },
        types={"n": pa.int64()},
    )
    assert {key: rows["user:u1"][key] for key in OPERATOR_TRAITS} == {
        k: n for k, (_, n) in OPERATOR_TRAITS.items()
    }


def test_windows_in_days_and_hours(tmp_path: Path) -> None:
    rows = run(
        tmp_path,
        """
        traits:
          - {name: Any time, type: event_counter, event: Test Event}
          - {name: Last 7 days, type: event_counter, event: Test Event, window: {days: 7}}
          - {name: Last 2 hours, type: event_counter, event: Test Event, window: {hours: 2}}
          - {name: Last v 7 days, type: last, event: Test Event, property: v, window: {days: 7}}
        """,
        {
            "flex.test_event": [
                ev("d1", user="u1", minute=1 * DAY, v="old"),
                ev("d3", user="u1", minute=3 * DAY, v="edge"),  # exactly now - 7 days: inside
                ev("d5", user="u1", minute=5 * DAY, v="mid"),
                ev("d9", user="u1", minute=9 * DAY + 23 * 60, v=None),
                ev("x1", user="u2", minute=1 * DAY, v="old"),
            ]
        },
        now=NOW,
    )
    assert column(rows, "any_time") == {"user:u1": 4, "user:u2": 1}
    assert column(rows, "last_7_days") == {"user:u1": 3, "user:u2": 0}
    assert column(rows, "last_2_hours") == {"user:u1": 1, "user:u2": 0}
    assert column(rows, "last_v_7_days") == {"user:u1": "mid", "user:u2": None}


def test_duplicate_ids_keep_the_first_received_copy(tmp_path: Path) -> None:
    rows = run(
        tmp_path,
        """
        traits:
          - {name: Events, type: event_counter, event: Test Event}
          - {name: Last v, type: last, event: Test Event, property: v}
        """,
        {
            "flex.test_event": [
                ev("m", user="u1", minute=1, v="second", received_at=T0 + dt.timedelta(hours=2)),
                ev("m", user="u1", minute=1, v="first", received_at=T0 + dt.timedelta(hours=1)),
                # a copy of "x" under another profile, received later: it does not count for u2
                ev("x", user="u1", minute=0, v="zero", received_at=T0 + dt.timedelta(minutes=1)),
                ev("x", user="u2", minute=0, v="zero", received_at=T0 + dt.timedelta(minutes=9)),
            ]
        },
    )
    # profile_key is the profile's canonical segment_id (identity layer), no longer "user:u1"
    assert rows["user:u1"].pop("profile_key").startswith("use_")
    assert rows == {
        "user:u1": {
            "user_id": "u1",
            "anonymous_id": None,
            "events": 2,
            "last_v": "first",
        }
    }


def test_numeric_aggregation_over_text_fails_naming_trait_and_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        run(
            tmp_path,
            "traits:\n  - {name: Spend, type: aggregation, function: sum, event: Test Event, property: amount}\n",
            {"flex.test_event": [ev("e1", user="u1", amount="12")]},
        )
    text = str(err.value)
    assert "computed_traits.yml" in text and "trait 'Spend'" in text
    assert "sum needs a numeric property" in text and "flex.test_event" in text


def test_missing_property_lists_the_available_columns(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        run(
            tmp_path,
            "traits:\n  - {name: Agent, type: last, event: Test Event, property: lastKnownAgent}\n",
            {"flex.test_event": [ev("e1", user="u1", agent_sid="WK1")]},
        )
    text = str(err.value)
    assert "trait 'Agent'" in text and "'last_known_agent'" in text
    assert "available columns: id, user_id, anonymous_id, timestamp, received_at, agent_sid" in text


def test_missing_event_table_names_table_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        run(
            tmp_path,
            "traits:\n  - {name: Orders, type: event_counter, event: Order Completed}\n",
            {"flex.test_event": [ev("e1", user="u1")]},
        )
    text = str(err.value)
    assert "trait 'Orders'" in text and "flex.order_completed, which does not exist" in text
    assert "sources.events" in text


def test_type_mismatches_in_conditions_fail_at_run_time(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        run(
            tmp_path,
            "traits:\n  - {name: Big, type: event_counter, event: Test Event,"
            " conditions: {property: n, operator: contains, value: '5'}}\n",
            {"flex.test_event": [ev("e1", user="u1", n=5)]},
            types={"n": pa.int64()},
        )
    assert "trait 'Big'" in str(err.value) and "needs a text column" in str(err.value)


def test_windows_over_time_zone_aware_timestamps(tmp_path: Path) -> None:
    utc = pa.timestamp("us", tz="UTC")
    rows = run(
        tmp_path,
        "traits:\n  - {name: Last day, type: event_counter, event: Test Event, window: {hours: 24}}\n",
        {
            "flex.test_event": [
                {
                    **ev("a", user="u1", minute=9 * DAY - 60),
                    "timestamp": (T0 + dt.timedelta(days=9, hours=-1)).replace(tzinfo=dt.UTC),
                },
                {
                    **ev("b", user="u1", minute=9 * DAY + 60),
                    "timestamp": (T0 + dt.timedelta(days=9, hours=1)).replace(tzinfo=dt.UTC),
                },
            ]
        },
        types={"timestamp": utc, "received_at": utc},
        now=NOW.replace(tzinfo=dt.timezone(dt.timedelta(hours=2))),  # 22:00 UTC on day 9
    )
    # The window starts 22:00 UTC on day 8, so both count; reading the run time as 00:00 UTC would drop a.
    assert column(rows, "last_day") == {"user:u1": 2}
