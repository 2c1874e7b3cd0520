"""Live delivery renders the next chunk while one is on the wire, and keeps one chunk's order."""

import datetime as dt
from collections.abc import Iterator
from concurrent.futures import Future
from itertools import chain

import pytest

from segment_profiles_pipeline.config import RetryConfig
from segment_profiles_pipeline.segment.client import SegmentClient
from segment_profiles_pipeline.segment.outcomes import REJECTED, DeliveryFailure, Outcome
from segment_profiles_pipeline.state import ensure_state
from segment_profiles_pipeline.state.writer import StateWriter
from segment_profiles_pipeline.sync.delivery import Chunk, Live, PlannedMessage, pipelined, planned_table
from segment_profiles_pipeline_tests.sync.helpers import ScriptedSender

NOW = dt.datetime(2026, 3, 1, 9, 0)


class _Stage:
    """The two fields of a SyncStage that ``record_all`` reads."""

    def __init__(self, writer: StateWriter):
        self.writer = writer
        self.mapping = type("M", (), {"retry": RetryConfig()})()


class HeldSender:
    """A pipelined sender whose deliveries stay unanswered until ``answer``; ``ledger_at_submit``
    is what the ledger held when each delivery was submitted."""

    destination_salt = "test-destination"

    def __init__(self, session):
        self.session = session
        self.futures: list[Future[list[Outcome]]] = []
        self.sizes: list[int] = []
        self.ledger_at_submit: list[list[str]] = []

    def deliver(self, messages):
        raise AssertionError("a pipelined sender is only asked to submit")

    def submit(self, messages) -> Future[list[Outcome]]:
        self.ledger_at_submit.append(_ledger(self.session))
        self.futures.append(Future())
        self.sizes.append(len(messages))
        return self.futures[-1]

    def answer(self, index: int, outcomes: list[Outcome] | None = None) -> None:
        self.futures[index].set_result(outcomes or [None] * self.sizes[index])


@pytest.fixture
def session(warehouse):
    with warehouse.session() as s:
        ensure_state(s)
        yield s


def _ledger(session) -> list[str]:
    return sorted(r[0] for r in session.query("SELECT record_key FROM _segment_profiles.ledger").rows)


def _failed(session) -> list[str]:
    return sorted(r[0] for r in session.query("SELECT record_key FROM _segment_profiles.failed_records").rows)


def _chunk(*keys: str) -> Chunk:
    return Chunk(
        messages=[f'{{"userId":"{k}"}}'.encode() for k in keys],
        planned=planned_table([PlannedMessage(k, f"c-{k}", None, "add") for k in keys]),
    )


def _stage(session) -> _Stage:
    return _Stage(StateWriter(session, "people", 0, "s1", NOW))


def _rendering(sender: HeldSender, groups, in_flight: list[bool], answers=None) -> Iterator[Chunk]:
    """Chunks of ``groups``. Each time the caller asks for the next chunk, notes whether the
    delivery before was still unanswered, then answers it (``answers[i]``, else all acknowledged)."""
    for i, keys in enumerate(groups):
        if i:
            _answer(sender, i - 1, in_flight, answers)
        yield _chunk(*keys)
    _answer(sender, len(groups) - 1, in_flight, answers)


def _answer(sender: HeldSender, index: int, in_flight: list[bool], answers) -> None:
    in_flight.append(not sender.futures[index].done())
    sender.answer(index, (answers or {}).get(index))


def test_the_next_chunk_is_rendered_while_one_is_on_the_wire_and_sent_once_that_one_is_recorded(
    session,
) -> None:
    sender, in_flight = HeldSender(session), []
    groups = [("u1", "u2"), ("u3",), ("u4",)]
    results = Live(sender).record_all(_stage(session), _rendering(sender, groups, in_flight))
    chunk, result = next(results)
    assert [p.key for p in chunk.planned_rows()] == ["u1", "u2"] and result.delivered == 2
    assert in_flight == [True]  # chunk 2 was rendered while chunk 1 was unanswered
    assert len(sender.futures) == 1  # …and is not sent yet: the caller checks its lock first
    assert [r.delivered for _, r in results] == [1, 1] and in_flight == [True, True, True]
    assert sender.ledger_at_submit == [[], ["u1", "u2"], ["u1", "u2", "u3"]]
    assert _ledger(session) == ["u1", "u2", "u3", "u4"]


def test_each_chunk_is_recorded_from_its_own_answers(session) -> None:
    sender, in_flight = HeldSender(session), []
    rejected = DeliveryFailure(REJECTED, "HTTP 400: bad", record_level=True)
    chunks = _rendering(sender, [("u1", "u2"), ("u3",)], in_flight, answers={0: [None, rejected]})
    results = Live(sender).record_all(_stage(session), chunks)
    _, first = next(results)
    assert (first.sent, first.delivered, first.failed) == (2, 1, 1)
    assert _ledger(session) == ["u1"] and _failed(session) == ["u2"]
    assert [(r.sent, r.delivered, r.failed) for _, r in results] == [(1, 1, 0)]
    assert _ledger(session) == ["u1", "u3"] and _failed(session) == ["u2"]


def test_a_caller_that_stops_after_a_result_sends_nothing_more(session) -> None:
    sender, in_flight = HeldSender(session), []
    results = Live(sender).record_all(_stage(session), _rendering(sender, [("u1",), ("u2",)], in_flight))
    next(results)
    results.close()  # the engine stops: its lock was taken over, or recording failed
    assert len(sender.futures) == 1 and _ledger(session) == ["u1"]


def test_a_rendering_error_records_the_chunk_in_flight_then_goes_on(session) -> None:
    sender = HeldSender(session)

    def chunks():
        yield _chunk("u1")
        sender.answer(0)
        raise ValueError("render failed")

    results = Live(sender).record_all(_stage(session), chunks())
    assert next(results)[1].delivered == 1
    with pytest.raises(ValueError, match="render failed"):
        next(results)
    assert _ledger(session) == ["u1"]


def test_an_interrupt_while_rendering_cancels_the_delivery_in_flight(session) -> None:
    sender = HeldSender(session)

    def chunks():
        yield _chunk("u1")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        next(Live(sender).record_all(_stage(session), chunks()))
    assert sender.futures[0].cancelled() and _ledger(session) == []


def test_an_empty_chunk_sends_nothing_and_keeps_its_place(session) -> None:
    sender, in_flight = HeldSender(session), []
    chunks = chain([Chunk()], _rendering(sender, [("u1",)], in_flight))
    results = list(Live(sender).record_all(_stage(session), chunks))
    assert [r.sent for _, r in results] == [0, 1] and len(sender.futures) == 1


class _Forwarding:
    """A wrapper that intercepts ``deliver`` and forwards everything else."""

    def __init__(self, inner):
        self.inner = inner

    def deliver(self, messages):
        return self.inner.deliver(messages)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_the_segment_client_is_pipelined_and_a_forwarding_wrapper_is_not() -> None:
    client = SegmentClient("http://127.0.0.1:1", "wk")
    assert pipelined(client)
    assert not pipelined(_Forwarding(client)) and not pipelined(ScriptedSender())


def test_a_chunks_acknowledgements_and_failures_are_written_as_one_unit(session, monkeypatch) -> None:
    sender, in_flight = HeldSender(session), []
    writer = StateWriter(session, "people", 0, "s1", NOW)

    def failing(*_args, **_kwargs):
        raise RuntimeError("disk full")  # after the chunk's acknowledgements were written

    monkeypatch.setattr(writer, "fail", failing)
    stage = _Stage(writer)
    with pytest.raises(RuntimeError, match="disk full"):
        list(Live(sender).record_all(stage, _rendering(sender, [("u1", "u2")], in_flight)))
    assert _ledger(session) == []  # rolled back with the failure write: the next sync re-sends them
