"""Deterministic sample warehouse: Segment-style app tables, Twilio Flex and shop event tables.

Generated with numpy (vectorised, so 10M events take seconds) and loaded as Arrow tables.
It only ever *creates* missing tables: a table that already exists is left untouched, so a user
pointing ``DUCKDB_DATABASE`` at their own warehouse gets their own data used as it is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from segment_profiles_pipeline.models.sample_tables import SOURCE_TABLES
from segment_profiles_pipeline.warehouse.base import WarehouseSession, ident

ANCHOR = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
FIRST = np.array(
    ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Frances", "Dennis"]
)
LAST = np.array(
    [
        "Lovelace",
        "Hopper",
        "Turing",
        "Dijkstra",
        "Liskov",
        "Thompson",
        "Hamilton",
        "Torvalds",
        "Allen",
        "Ritchie",
    ]
)
PLANS = np.array(["free", "pro", "business", "enterprise"])
INDUSTRIES = np.array(["Retail", "Healthcare", "Finance", "Travel", "Education", "Media", "Logistics"])
CHANNELS = np.array(["voice", "sms", "email", "chat", "whatsapp"])
SENTIMENTS = np.array(["positive", "neutral", "negative"])
TOPICS = np.array(["billing", "shipping", "returns", "account", "technical"])

ORDER_DAYS = 365
CURRENCIES = np.array(["USD", "EUR"])


@dataclass(frozen=True)
class SeedReport:
    created: dict[str, int]  # table → rows
    kept: list[str]  # tables that already existed


def _ts(seconds: np.ndarray) -> pa.Array:
    micros = (ANCHOR.timestamp() * 1e6 + seconds * 1e6).astype("int64")
    return pa.array(micros, type=pa.timestamp("us"))


def _ids(prefix: str, n: np.ndarray, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(n.astype(str), width))


def generate(users: int = 5000, seed: int = 7) -> dict[str, pa.Table]:
    """All four source tables for ``users`` users (accounts = users/10, ~20 events per user)."""
    rng = np.random.default_rng(seed)
    n_acc = max(1, users // 10)
    acc_ids = _ids("acc_", np.arange(1, n_acc + 1), 5)
    acc_created = -rng.integers(30 * 86400, 900 * 86400, n_acc)
    accounts = pa.table(
        {
            "account_id": acc_ids,
            "name": np.char.add(
                rng.choice(LAST, n_acc), np.char.add(" ", np.char.add(rng.choice(INDUSTRIES, n_acc), " Co"))
            ),
            "industry": rng.choice(INDUSTRIES, n_acc),
            "employees": rng.integers(2, 5000, n_acc).astype("int64"),
            "plan": rng.choice(PLANS, n_acc, p=[0.4, 0.3, 0.2, 0.1]),
            "created_at": _ts(acc_created),
            "updated_at": _ts(acc_created + rng.integers(0, 20 * 86400, n_acc)),
        }
    )

    nums = np.arange(1, users + 1)
    user_ids = _ids("u_", nums, 7).astype(object)
    first = rng.choice(FIRST, users)
    last = rng.choice(LAST, users)
    emails = np.char.add(
        np.char.add(np.char.lower(first), "."),
        np.char.add(np.char.lower(last), np.char.add(nums.astype(str), "@example.com")),
    )
    account_of = rng.integers(0, n_acc, users)
    user_created = -rng.integers(86400, 700 * 86400, users)
    user_cols = {
        "user_id": user_ids,
        "email": emails,
        "first_name": first,
        "last_name": last,
        "phone": np.char.add("+1555", np.char.zfill(rng.integers(0, 10_000_000, users).astype(str), 7)),
        "plan": rng.choice(PLANS, users, p=[0.5, 0.3, 0.15, 0.05]),
        "account_id": acc_ids[account_of].astype(object),
        "created_at": user_created,
        "updated_at": user_created + rng.integers(0, 30 * 86400, users),
    }
    # Real warehouses are messy: the models keep these rows and the sync rejects and reports them.
    if users >= 100:
        user_cols["user_id"][users - 1] = None  # a null key
        user_cols["account_id"][users - 2] = None  # a user without an account
        user_cols["user_id"][users - 3] = user_cols["user_id"][users - 4]  # a duplicated key
        user_cols["email"][9] = user_cols["email"][10] = (
            "family@example.com"  # a shared email (docs/identity.md)
        )
        user_cols["email"][0] = (
            "ana@example.com"  # the explorer's example (README); u_0000001 owns a shared device
        )
    users_table = pa.table(
        {k: (_ts(v) if k.endswith("_at") else pa.array(v, type=pa.string())) for k, v in user_cols.items()}
    )

    # Flex interactions: each initiated event is followed by a completed event with the same interaction.
    n_int = users * 10
    who = rng.integers(0, users, n_int)
    anonymous_only = rng.random(n_int) < 0.05
    uid = _ids("u_", nums[who], 7).astype(object)
    uid[anonymous_only] = None
    anon = np.char.add("anon-", np.char.zfill((who * 7919 % 10_000_000).astype(str), 7)).astype(object)
    if users >= 100:  # identity cases (docs/identity.md); user rows only, so no trait changes
        anon[(who == 1) & ~anonymous_only] = "anon-0000000"  # u_0000002 signs in on u_0000001's device
        anon[(who == 2) & ~anonymous_only] = "anonymous"  # blocked placeholder ids
        anon[(who == 3) & ~anonymous_only] = "00000000-0000-0000-0000-000000000000"
    start = -rng.integers(60, 180 * 86400, n_int)
    duration = rng.gamma(2.0, 180.0, n_int).astype("int64") + 5
    int_sid = _ids("KD", np.arange(n_int), 32)
    chan_sid = _ids("UO", rng.integers(0, n_int, n_int), 32)
    agents = _ids("WK", rng.integers(0, 60, n_int), 32)
    first_agents = np.where(rng.random(n_int) < 0.8, agents, _ids("WK", rng.integers(0, 60, n_int), 32))
    direction = np.where(rng.random(n_int) < 0.7, "Inbound", "Outbound")
    favourite = rng.integers(0, len(CHANNELS), users)
    channel = np.where(rng.random(n_int) < 0.6, CHANNELS[favourite[who]], rng.choice(CHANNELS, n_int))
    delay = rng.integers(0, 120, n_int)

    def events(ids: np.ndarray, event: str, ts: np.ndarray, cols: dict[str, pa.Array]) -> pa.Table:
        return pa.table(
            {
                "id": ids,
                "user_id": pa.array(uid, type=pa.string()),
                "anonymous_id": pa.array(anon, type=pa.string()),
                "event": np.full(n_int, event.lower().replace(" - ", "_").replace(" ", "_")),
                "event_text": np.full(n_int, event),
                "timestamp": _ts(ts),
                "received_at": _ts(ts + delay),
                **cols,
            }
        )

    initiated = events(
        _ids("ei-", np.arange(n_int), 9),
        "Flex - Engagement Initiated",
        start + duration,
        {
            "direction": direction,
            "channel_type": channel,
            "last_known_agent_worker_sid": agents,
            "first_known_agent_worker_sid": first_agents,
            "interaction_sid": int_sid,
            "channel_sid": chan_sid,
            "duration": pa.array(duration, type=pa.int64()),
            "customer_start_time": _ts(start),
        },
    )
    sentiment = rng.choice(SENTIMENTS, n_int, p=[0.5, 0.35, 0.15]).astype(object)
    sentiment[rng.random(n_int) < 0.03] = None  # Copilot sometimes infers nothing
    topics = rng.choice(TOPICS, n_int)
    codes = np.char.add('{"dispositionCode": "resolved", "topic": "', np.char.add(topics, '"}'))
    completed = events(
        _ids("ec-", np.arange(n_int), 9),
        "Flex - Engagement Completed",
        start + duration + rng.integers(30, 600, n_int),
        {
            "interaction_sid": int_sid,
            "channel_sid": chan_sid,
            "sentiment": pa.array(sentiment, type=pa.string()),
            "codes": codes,
        },
    )
    # Segment warehouses can hold a message twice: repeat ~0.5% of rows with the same id.
    dup = rng.choice(n_int, max(1, n_int // 200), replace=False)
    initiated = pa.concat_tables([initiated, initiated.take(pa.array(dup))])
    completed = pa.concat_tables([completed, completed.take(pa.array(dup[: len(dup) // 2]))])
    return {
        "app.users": users_table,
        "app.accounts": accounts,
        "flex.flex_engagement_initiated": initiated,
        "flex.flex_engagement_completed": completed,
        "shop.order_completed": orders(users, seed),
    }


def orders(users: int, seed: int = 7) -> pa.Table:
    """A year of ``Order Completed`` track events with learnable churn and spend (the predictions' data).

    About 70% of users shop. Each shopper has a purchase rate (gamma: a few frequent buyers, many
    occasional ones), a typical basket (log-normal) and a first order day; about half stop buying
    after an exponential lifetime. Orders are a Poisson process between start and stop, so
    recency against a shopper's own rhythm predicts churn and rate x basket predicts spend.
    A generator of its own keeps the other sample tables exactly as they were.
    """
    rng = np.random.default_rng([seed, 1])
    day = 86400
    shopper = rng.random(users) < 0.7
    rate = rng.gamma(1.5, 1 / 45, users)  # orders per day, mean one every 30 days
    basket = rng.lognormal(3.8, 0.6, users)
    start = -rng.uniform(30, ORDER_DAYS, users) * day
    stops = rng.random(users) < 0.5
    stop = np.where(stops, np.minimum(start + rng.exponential(150, users) * day, 0), 0)
    n = np.where(shopper, rng.poisson(rate * np.maximum(stop - start, 0) / day), 0)
    who = np.repeat(np.arange(users), n)
    ts = (start[who] + rng.random(len(who)) * (stop[who] - start[who])).astype("int64")
    total = len(who)
    guest = rng.random(total) < 0.02  # guest checkouts: no user_id, not scored
    uid = _ids("u_", who + 1, 7).astype(object)
    uid[guest] = None
    table = pa.table(
        {
            "id": _ids("oc-", np.arange(total), 9),
            "user_id": pa.array(uid, type=pa.string()),
            "anonymous_id": np.char.add("anon-", np.char.zfill((who * 7919 % 10_000_000).astype(str), 7)),
            "event": np.full(total, "order_completed"),
            "event_text": np.full(total, "Order Completed"),
            "timestamp": _ts(ts),
            "received_at": _ts(ts + rng.integers(0, 120, total)),
            "order_id": _ids("ord_", np.arange(total), 8),
            "revenue": np.round(basket[who] * rng.lognormal(0, 0.3, total), 2),
            "currency": np.where(rng.random(total) < 0.97, CURRENCIES[0], CURRENCIES[1]),
        }
    )
    dup = rng.choice(total, max(1, total // 200), replace=False) if total else np.array([], dtype=int)
    return pa.concat_tables([table, table.take(pa.array(dup, type=pa.int64()))])


def seed_missing(session: WarehouseSession, users: int, seed: int = 7) -> SeedReport:
    """Create each sample table that does not exist yet; never touch one that does."""
    existing = {name for name in SOURCE_TABLES if session.table_exists(*name.split("."))}
    created: dict[str, int] = {}
    if len(existing) < len(SOURCE_TABLES):
        for name, table in generate(users, seed).items():
            if name in existing:
                continue
            schema = name.split(".")[0]
            session.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
            session.load(name, table, create=True)
            created[name] = table.num_rows
    return SeedReport(created=created, kept=sorted(existing))
