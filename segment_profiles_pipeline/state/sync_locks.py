"""``_segment_profiles.sync_locks``: one sync per mapping shard at a time, as a row.

A row rather than a warehouse lock, because Snowflake runs our statements in autocommit and has
no advisory locks; the same row works on DuckDB. **Acquire** is insert-then-check: delete the
rows of dead holders, insert ours, read the earliest row of the shard (by ``acquired_at``, then
``sync_id``); if it is not ours, we delete ours and refuse. Of concurrent claimants the earliest
wins and the others back off, without transactions.

**Liveness.** On Snowflake a background thread rewrites the row's ``heartbeat_at`` every
``HEARTBEAT_EVERY`` on a connection of its own: the sync's connection is busy for minutes with
one plan statement or one chunk sent under 429 backoff, so beats from the sync itself would be
far apart. A row whose heartbeat is older than ``STALE_AFTER`` belonged to a process that
stopped (kill -9, OOM, a lost node); the next sync deletes it and marks that sync's history row
``interrupted``. A live sync can only be taken over after missing ``STALE_AFTER /
HEARTBEAT_EVERY - 1`` beats in a row (9 with the defaults); the rest of the margin absorbs clock
skew between hosts (timestamps come from each process's clock) and a statement that queues.
On DuckDB the file lock makes a read-write session exclusive, so any other row is a dead
process's: it is taken over at once and no thread is needed.

**Losing the lock.** A sync whose row was taken over (or that a skewed clock made lose to an
earlier claimant) finds out at its next ``ensure_held`` (once per chunk) and stops with
``LockLost``; its heartbeat thread stops at its next beat. Releasing deletes only our own row.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from segment_profiles_pipeline.errors import SyncError, WarehouseError
from segment_profiles_pipeline.state import sync_history
from segment_profiles_pipeline.state.schema import STATE_SCHEMA
from segment_profiles_pipeline.warehouse.base import WarehouseSession, in_list, literal

LOCKS = f"{STATE_SCHEMA}.sync_locks"

DDL = f"""CREATE TABLE IF NOT EXISTS {LOCKS} (
    mapping VARCHAR NOT NULL,
    shard INTEGER NOT NULL,
    sync_id VARCHAR NOT NULL,
    acquired_at TIMESTAMP NOT NULL,
    heartbeat_at TIMESTAMP NOT NULL
)"""

HEARTBEAT_EVERY = dt.timedelta(seconds=30)
STALE_AFTER = dt.timedelta(minutes=5)
MIN_BEATS_PER_STALE = 4
"""``stale_after`` must span at least this many heartbeats, so one slow beat never loses a live lock."""
RELEASE_WAIT_S = 30.0
"""How long release waits for a beat in flight (one single-row UPDATE) before closing its connection."""


def ensure(session: WarehouseSession) -> None:
    session.execute(DDL)


class LockLost(SyncError):
    """Another sync took this sync's lock over (it looked dead): stop before writing more."""


@runtime_checkable
class OpensSibling(Protocol):
    """A session that can open a second connection to the same warehouse (Snowflake)."""

    def sibling(self) -> AbstractContextManager[WarehouseSession]: ...


def utc_now() -> dt.datetime:
    """Naive UTC, like every timestamp in the state tables."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _where(mapping: str, shard: int) -> str:
    return f"mapping = {literal(mapping)} AND shard = {shard}"


def _holder(session: WarehouseSession, mapping: str, shard: int) -> tuple[str, dt.datetime] | None:
    rows = session.query(
        f"SELECT sync_id, acquired_at FROM {LOCKS} WHERE {_where(mapping, shard)} "
        "ORDER BY acquired_at, sync_id LIMIT 1"
    ).rows
    return (rows[0][0], rows[0][1]) if rows else None


def ensure_held(session: WarehouseSession, mapping: str, shard: int, sync_id: str) -> None:
    """Raise ``LockLost`` unless ``sync_id`` still holds the lock: call it before writing more."""
    holder = _holder(session, mapping, shard)
    if holder is None or holder[0] != sync_id:
        now = f"held by sync {holder[0]} since {holder[1]}" if holder else "not held by any sync"
        raise LockLost(
            f"sync {sync_id} of mapping '{mapping}' (shard {shard}) lost its lock (now {now}): its heartbeat "
            "stopped long enough for another sync to take it over. Stopped before writing more; the next "
            "sync re-plans everything that was not acknowledged."
        )


class SyncLock:
    """The lock of one sync of one mapping shard, heart-beating while held.

    ``clock`` gives the timestamps written and compared (tests inject one); ``heartbeat_every``
    and ``stale_after`` default to the module's constants, read at construction.
    """

    def __init__(
        self,
        session: WarehouseSession,
        mapping: str,
        shard: int,
        sync_id: str,
        *,
        heartbeat_every: dt.timedelta | None = None,
        stale_after: dt.timedelta | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        log: Callable[[str], None] = lambda _msg: None,
    ):
        self.session = session
        self.mapping = mapping
        self.shard = shard
        self.sync_id = sync_id
        self.heartbeat_every = heartbeat_every or HEARTBEAT_EVERY
        self.stale_after = stale_after or STALE_AFTER
        if self.stale_after < MIN_BEATS_PER_STALE * self.heartbeat_every:
            raise ValueError(
                f"stale_after ({self.stale_after}) must be at least {MIN_BEATS_PER_STALE} heartbeats "
                f"({self.heartbeat_every} each), or a live sync could be taken over"
            )
        self.clock = clock
        self.log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resources = ExitStack()

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.release()

    # acquire ---------------------------------------------------------------------------
    def acquire(self) -> Self:
        """Take the lock (taking over dead holders) and start heart-beating, or raise ``SyncError``."""
        now = self.clock()
        dead = self._dead_holders(now)
        if dead:
            self.session.execute(
                f"DELETE FROM {LOCKS} WHERE {_where(self.mapping, self.shard)} "
                f"AND sync_id IN {in_list(dead)} AND {self._stale(now)}"
            )
        self.session.execute(
            f"INSERT INTO {LOCKS} (mapping, shard, sync_id, acquired_at, heartbeat_at) VALUES "
            f"({literal(self.mapping)}, {self.shard}, {literal(self.sync_id)}, {literal(now)}, {literal(now)})"
        )
        holder = _holder(self.session, self.mapping, self.shard)
        if holder is None or holder[0] != self.sync_id:
            self._delete_own_row()
            raise SyncError(self._refusal(holder))
        if dead:
            self._mark_interrupted(dead, now)
        if not self.session.exclusive:
            self._start_heartbeat()
        return self

    def _stale(self, now: dt.datetime) -> str:
        """SQL predicate of a dead holder's row; on an exclusive session every other row is dead."""
        if self.session.exclusive:
            return "TRUE"
        return f"heartbeat_at < {literal(now - self.stale_after)}"

    def _dead_holders(self, now: dt.datetime) -> list[str]:
        rows = self.session.query(
            f"SELECT sync_id FROM {LOCKS} WHERE {_where(self.mapping, self.shard)} AND {self._stale(now)}"
        ).rows
        return [r[0] for r in rows]

    def _mark_interrupted(self, dead: list[str], now: dt.datetime) -> None:
        """The dead holders' history rows say what happened instead of staying ``running``."""
        quiet = "" if self.session.exclusive else f" (no lock heartbeat for over {self.stale_after})"
        error = (
            f"interrupted: the process running this sync stopped before it finished{quiet}; "
            f"sync {self.sync_id} took its lock over"
        )
        sync_history.mark_interrupted(self.session, self.mapping, self.shard, dead, now, error)
        self.log(
            f"took over the lock of '{self.mapping}' shard {self.shard} from dead sync(s) {', '.join(dead)}"
        )

    def _refusal(self, holder: tuple[str, dt.datetime] | None) -> str:
        running = f"sync {holder[0]}, started {holder[1]}" if holder else "a sync that just finished"
        return (
            f"another sync of mapping '{self.mapping}' (shard {self.shard}) is running ({running}). Two syncs "
            "of one mapping never run at once; wait for it to finish. A lock left by a dead process is taken "
            f"over once its heartbeat is older than {self.stale_after}."
        )

    # heartbeat -------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        """Open the heartbeat's own session here, so a connection failure fails the sync at once."""
        if not isinstance(self.session, OpensSibling):
            self._delete_own_row()
            raise SyncError(
                f"a {self.session.dialect} session shared with other writers must open a second session "
                "(`sibling()`) for the sync lock's heartbeat"
            )
        try:
            beat_session = self._resources.enter_context(self.session.sibling())
        except BaseException:
            self._delete_own_row()
            raise
        self._thread = threading.Thread(
            target=self._beat_until_stopped,
            args=(beat_session,),
            name=f"sync-lock-heartbeat-{self.sync_id}",
            daemon=True,
        )
        self._thread.start()

    def _beat_until_stopped(self, session: WarehouseSession) -> None:
        while not self._stop.wait(self.heartbeat_every.total_seconds()):
            try:
                session.execute(
                    f"UPDATE {LOCKS} SET heartbeat_at = {literal(self.clock())} "
                    f"WHERE {_where(self.mapping, self.shard)} AND sync_id = {literal(self.sync_id)}"
                )
                ensure_held(session, self.mapping, self.shard, self.sync_id)
            except LockLost as exc:
                self.log(str(exc))
                return
            except WarehouseError as exc:  # a blip: the next beat retries, a long outage loses the lock
                self.log(f"sync lock heartbeat of '{self.mapping}' shard {self.shard} failed: {exc}")

    # release ---------------------------------------------------------------------------
    def release(self) -> None:
        """Stop heart-beating and delete our row (never another sync's, if ours was taken over)."""
        self._stop.set()
        if self._thread is not None:
            # The beat in flight finishes before our row is deleted; one stuck in a queued
            # statement must not hold the sync's end hostage: closing its connection below fails
            # that statement in the (daemon) thread.
            self._thread.join(timeout=RELEASE_WAIT_S)
            self._thread = None
        self._resources.close()
        self._delete_own_row()

    def _delete_own_row(self) -> None:
        self.session.execute(
            f"DELETE FROM {LOCKS} WHERE {_where(self.mapping, self.shard)} AND sync_id = {literal(self.sync_id)}"
        )
