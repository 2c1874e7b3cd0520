"""The two delivery modes: what each writes for the same rendered chunk."""

import datetime as dt
from typing import Any

import orjson
import pytest

from segment_profiles_pipeline.config import RetryConfig
from segment_profiles_pipeline.state import ensure_state
from segment_profiles_pipeline.state.failed_records import Failure
from segment_profiles_pipeline.state.writer import StateWriter
from segment_profiles_pipeline.sync.delivery import (
    OUTBOX,
    Chunk,
    Live,
    PlannedMessage,
    delivery_for,
    planned_table,
)
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender

NOW = dt.datetime(2026, 3, 1, 9, 0)


class _Stage:
    """The two fields of a SyncStage that ``record`` reads."""

    def __init__(self, writer: StateWriter):
        self.writer = writer
        self.mapping = type("M", (), {"retry": RetryConfig()})()


@pytest.fixture
def session(warehouse):
    with warehouse.session() as s:
        ensure_state(s)
        yield s


def _chunk() -> Chunk:
    return Chunk(
        messages=[b'{"userId":"u1"}', b'{"userId":"u2"}'],
        planned=planned_table(
            [PlannedMessage("u1", "c1", None, "add"), PlannedMessage("u2", "c2", None, "add")]
        ),
        rejected=[Failure("u3", "c3", "invalid", "too many traits")],
    )


def _keys(session, table: str) -> list[str]:
    return sorted(r[0] for r in session.query(f"SELECT record_key FROM _segment_profiles.{table}").rows)


def test_live_delivery_acknowledges_only_what_segment_accepted(session) -> None:
    sender = ScriptedSender(lambda m: "HTTP 400: bad" if m["userId"] == "u2" else None)
    result = Live(sender).record(_Stage(StateWriter(session, "people", 0, "s1", NOW)), _chunk())
    assert (result.sent, result.delivered, result.failed) == (2, 1, 1)
    assert result.first_error == "record 'u3': too many traits"
    assert _keys(session, "ledger") == ["u1"] and _keys(session, "failed_records") == ["u2", "u3"]


def test_the_outbox_writes_payloads_and_rejections_and_no_retry_state(session) -> None:
    result = OUTBOX.record(_Stage(StateWriter(session, "people", 0, "s1", NOW)), _chunk())
    assert (result.sent, result.delivered, result.failed) == (0, 2, 0)
    rows = session.query(
        "SELECT record_key, operation, message FROM _segment_profiles.outbox ORDER BY 1"
    ).rows
    assert [tuple(r[:2]) for r in rows] == [("u1", "add"), ("u2", "add"), ("u3", "rejected")]
    assert orjson.loads(rows[2][2]) == {"reason": "too many traits", "reason_code": "invalid"}
    assert _keys(session, "ledger") == [] and _keys(session, "failed_records") == []


def test_a_bare_sender_means_live_delivery_and_the_outbox_stays_a_dry_run() -> None:
    sender = ScriptedSender()
    live = delivery_for(sender)
    assert isinstance(live, Live) and live.sender is sender and not live.dry_run
    assert delivery_for(OUTBOX) is OUTBOX and OUTBOX.dry_run
    assert delivery_for(live) is live


def test_a_sender_wrapper_that_forwards_attributes_is_live_delivery_on_every_python() -> None:
    class Forwarding:
        def __init__(self, inner: ScriptedSender) -> None:
            self.inner = inner

        def deliver(self, messages: Any) -> Any:
            return self.inner.deliver(messages)

        def __getattr__(self, name: str) -> Any:  # destination_salt, and anything else
            return getattr(self.inner, name)

    wrapper = Forwarding(ScriptedSender())
    live = delivery_for(wrapper)  # type: ignore[arg-type]  # a Sender only through __getattr__
    assert isinstance(live, Live) and live.sender is wrapper and not live.dry_run
