"""The durable local store of turns and undelivered transcripts (SQLite in AGENT_DATA_DIR).

Rule: a transcript leaves the journal only when the backend has it (`mark_delivered`) and never
silently: a rejected one stays as a dead letter. Each call row has exactly one owner, a process
identified by (host, pid, process start time), holding a lease. Only the owner may refresh,
release, deliver-and-delete or dead-letter a row; any other process takes a row over only through
`claim_recoverable`, one atomic UPDATE under BEGIN IMMEDIATE, and only when the lease expired or
the owner process is gone. So two processes never deliver one transcript at once.

Durability: WAL with `synchronous=NORMAL`. A committed write survives the death of the process
(SIGKILL, OOM), not a power loss; the per-turn cost target (<= 2 ms median) is measured against
that. The journal starts no thread; async callers reach it through `asyncio.to_thread`, which is
why one connection is shared under a lock (`check_same_thread=False`). Open one `Journal` per
process: an SQLite connection must never cross a fork.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

import psutil
import structlog
from pydantic import ValidationError

from agent.models import EndedReason, TranscriptPayload, Turn, utc_from_timestamp


def _log() -> structlog.stdlib.BoundLogger:
    # Looked up per use, not once per module: with `cache_logger_on_first_use` a module-level
    # logger would keep the processors of whichever configuration came first (and miss a later
    # reconfiguration such as tests' capture_logs). Logging here is rare, so the lookup is free.
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(__name__)
    return logger


JOURNAL_FILENAME = "journal.sqlite3"
# The live job refreshes every LEASE_REFRESH_SECONDS; three missed refreshes and the row is fair
# game for recovery even if the owner process still exists (for example a hung event loop).
LEASE_SECONDS = 30.0
LEASE_REFRESH_SECONDS = 10.0
# Other processes hold the write lock for well under a millisecond; wait rather than fail.
BUSY_TIMEOUT_MS = 5_000
# Linux derives a process start time from the boot time, which can shift by whole seconds when
# the wall clock is stepped; a reused pid started within one second of the old one is not a risk.
START_TIME_TOLERANCE = 1.0
MAX_REASON_CHARS = 1_000
SCHEMA_VERSION = 1
# A safety net for a caller that appends but never refreshes a lease: the WAL stays bounded.
APPENDS_PER_FORCED_CHECKPOINT = 2_000

CallState = Literal["live", "pending", "dead"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id          TEXT PRIMARY KEY,
    session_id       TEXT NOT NULL,
    attempt_number   INTEGER NOT NULL,
    started_at       TEXT NOT NULL,
    owner_host       TEXT,
    owner_pid        INTEGER,
    owner_start_time REAL,
    lease_until      REAL NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('live', 'pending', 'dead')),
    ended_reason     TEXT,
    payload          TEXT,
    complete         INTEGER,
    turn_count       INTEGER,
    dead_reason      TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    updated_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_by_state ON calls (state, lease_until);
CREATE TABLE IF NOT EXISTS turns (
    call_id     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    role        TEXT NOT NULL,
    text        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT NOT NULL,
    interrupted INTEGER NOT NULL,
    PRIMARY KEY (call_id, seq)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Owner:
    """A process, told apart from a later process that reuses its pid by its start time."""

    host: str
    pid: int
    start_time: float

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())


def owner_alive(host: str | None, pid: int | None, start_time: float | None) -> bool:
    """Is the owner process still running? A process on another host cannot be checked from
    here, so it counts as alive and only its lease can expire."""
    if pid is None or start_time is None:
        return False
    if host is not None and host != socket.gethostname():
        return True
    try:
        return _local_owner_alive(pid, start_time)
    except Exception:
        # Called from inside SQL: an exception there would fail the whole claim. When in
        # doubt the owner counts as alive; its lease still expires.
        return True


def _local_owner_alive(pid: int, start_time: float) -> bool:
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - start_time) > START_TIME_TOLERANCE:
            return False  # the pid now belongs to another process
        # A killed child stays a zombie until its parent reaps it: it is gone all the same.
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:  # ZombieProcess is a subclass
        return False
    except psutil.AccessDenied:
        return True  # it exists and is not ours to inspect: do not steal its row


@dataclass(frozen=True, slots=True)
class ClaimedCall:
    """A row taken over by `claim_recoverable`, now owned by this process, and what to send."""

    call_id: str
    session_id: str
    previous_state: Literal["live", "pending"]
    payload: TranscriptPayload
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    call_id: str
    session_id: str
    attempt_number: int
    reason: str
    attempts: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class JournalStats:
    live: int
    pending: int
    dead: int
    turns: int


def _rank(complete: bool, turn_count: int) -> tuple[bool, int]:
    # The backend's ranking within one attempt (source is always agent here): complete first,
    # then more turns. The journal keeps the best transcript it has seen for a call.
    return (complete, turn_count)


class CallHeldElsewhere(Exception):
    """Another live process holds this call's row (it claimed it for recovery): only it may
    deliver it now, so two processes never post one transcript at once."""


class Journal:
    """One SQLite connection, shared by the threads `asyncio.to_thread` uses, under a lock."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lease_seconds: float = LEASE_SECONDS,
        owner: Owner | None = None,
    ) -> None:
        self.path = Path(path)
        self.lease_seconds = lease_seconds
        self.owner = owner or Owner.current()
        self._lock = threading.Lock()
        # One claim asks about the same few owners once per candidate row: ask psutil once.
        self._alive_memo: dict[tuple[str | None, int | None, float | None], bool] = {}
        self._appends_since_checkpoint = 0
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Transcripts are personal data: create the file private; SQLite gives the -wal and -shm
        # files the database file's permissions.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._conn = self._connect()
        # append_turn runs on the event loop: it gets its own connection and lock, so it never
        # waits behind a checkpoint's fsync or a claim's process checks that hold `_lock` in a
        # thread (SQLite itself serializes the writes, briefly).
        self._append_lock = threading.Lock()
        self._append_conn: sqlite3.Connection | None = None
        try:
            self._setup()
            self._append_conn = self._connect()
            self._append_conn.execute("PRAGMA synchronous = NORMAL")
            self._append_conn.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            self._conn.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # autocommit: every transaction below is explicit
            check_same_thread=False,
        )

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike[str], **kwargs: Any) -> Journal:
        return cls(Path(data_dir) / JOURNAL_FILENAME, **kwargs)

    def _setup(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self._enable_wal(conn)
        if str(mode).lower() != "wal":
            raise RuntimeError(f"journal: SQLite refused WAL mode (got {mode!r}) at {self.path}")
        conn.execute("PRAGMA synchronous = NORMAL")
        # A checkpoint is the one write here that fsyncs. Left automatic it would run inside
        # whichever commit crossed the threshold, often an append_turn on the event loop; we run
        # it from the off-loop calls instead (see `checkpoint`).
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.create_function("owner_alive", 3, self._owner_alive_cached)
        with self._transaction():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"journal: {self.path} has schema {version}, newer than {SCHEMA_VERSION}"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _enable_wal(conn: sqlite3.Connection) -> str:
        """Switching a new file to WAL needs a moment of exclusive access, which the busy
        timeout does not cover: job processes opening a fresh journal together see "database
        is locked". Retry briefly; once the file is in WAL mode this returns at once."""
        delay = 0.01
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _owner_alive_cached(
        self, host: str | None, pid: int | None, start_time: float | None
    ) -> bool:
        key = (host, pid, start_time)
        if key not in self._alive_memo:
            self._alive_memo[key] = owner_alive(host, pid, start_time)
        return self._alive_memo[key]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so a read-then-write cannot interleave
        with another process's write (no upgrade deadlock, no lost update)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _mine(self) -> dict[str, Any]:
        return {
            "host": self.owner.host,
            "pid": self.owner.pid,
            "start": self.owner.start_time,
        }

    _IS_MINE = "owner_host IS :host AND owner_pid IS :pid AND owner_start_time IS :start"

    def close(self) -> None:
        with self._append_lock:
            if self._append_conn is not None:
                self._append_conn.close()
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ the live call

    def open_call(
        self,
        call_id: str,
        *,
        session_id: str,
        attempt_number: int,
        started_at: datetime,
        now: float | None = None,
    ) -> None:
        """Start journaling a call, owned by this process with a fresh lease. Opening an id
        again (a retried entrypoint) keeps its turns and takes the row back as live."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            conn.execute(
                """
                INSERT INTO calls (call_id, session_id, attempt_number, started_at, owner_host,
                                   owner_pid, owner_start_time, lease_until, state, updated_at)
                VALUES (:call_id, :session_id, :attempt, :started_at, :host, :pid, :start,
                        :lease_until, 'live', :now)
                ON CONFLICT (call_id) DO UPDATE SET
                    session_id = excluded.session_id, attempt_number = excluded.attempt_number,
                    owner_host = excluded.owner_host, owner_pid = excluded.owner_pid,
                    owner_start_time = excluded.owner_start_time,
                    lease_until = excluded.lease_until, updated_at = excluded.updated_at
                """,
                {
                    "call_id": call_id,
                    "session_id": session_id,
                    "attempt": attempt_number,
                    "started_at": started_at.isoformat(),
                    "lease_until": now + self.lease_seconds,
                    "now": now,
                    **self._mine(),
                },
            )

    def append_turn(self, call_id: str, turn: Turn) -> None:
        """One committed INSERT per final turn: on disk (in the WAL) before this returns, so a
        SIGKILL right after loses nothing. Cheap enough to call from the event loop."""
        row = (
            call_id,
            turn.seq,
            turn.role,
            turn.text,
            turn.started_at.isoformat(),
            turn.ended_at.isoformat(),
            int(turn.interrupted),
        )
        assert self._append_conn is not None
        with self._append_lock:
            # A single statement in autocommit mode is its own transaction: no BEGIN needed.
            self._append_conn.execute(
                "INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?, ?, ?, ?)", row
            )
            self._appends_since_checkpoint += 1
            overdue = self._appends_since_checkpoint >= APPENDS_PER_FORCED_CHECKPOINT
        if overdue:
            # Nobody refreshed a lease for a long while: bound the WAL here after all.
            self.checkpoint()

    def checkpoint(self) -> None:
        """Copy the WAL back into the database file (PASSIVE: never waits for readers). Called
        from `refresh_lease`, `mark_delivered` and `claim_recoverable`, which async callers run
        in a thread, so the fsync it costs stays off the event loop."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._appends_since_checkpoint = 0

    def refresh_lease(self, call_id: str, *, now: float | None = None) -> bool:
        """Extend this process's lease. False: the row is not ours any more (claimed after our
        lease ran out, or delivered and gone)."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE calls SET lease_until = :lease_until, updated_at = :now "
                f"WHERE call_id = :call_id AND state != 'dead' AND {self._IS_MINE}",
                {"call_id": call_id, "lease_until": now + self.lease_seconds, "now": now}
                | self._mine(),
            )
            held = cursor.rowcount == 1
        self.checkpoint()
        return held

    # ------------------------------------------------------------------ the end of a call

    def finish_call(
        self,
        call_id: str,
        payload: TranscriptPayload,
        *,
        session_id: str | None = None,
        now: float | None = None,
    ) -> TranscriptPayload | None:
        """Store the final transcript (state pending, owned by this process) and return the one
        to deliver. The journal keeps the best transcript it has seen for a call (complete over
        incomplete, then more turns), so a late rebuild never overwrites a fuller one. A call
        that was never opened, or was already delivered, is written anew: that needs
        `session_id`. None: the call is a dead letter whose transcript ranks at least as high
        as this one (it was rejected already; retrying is an operator's decision)."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            row = conn.execute(
                """
                SELECT state, payload, complete, turn_count, owner_host, owner_pid,
                       owner_start_time, lease_until
                FROM calls WHERE call_id = ?
                """,
                (call_id,),
            ).fetchone()
            if row is not None and self._held_by_other(row[4], row[5], row[6], row[7], now):
                raise CallHeldElsewhere(call_id)
            chosen = payload
            if row is not None and row[1] is not None:
                stored_rank = _rank(bool(row[2]), int(row[3]))
                new_rank = _rank(payload.complete, payload.turn_count)
                if row[0] == "dead" and stored_rank >= new_rank:
                    return None
                if stored_rank > new_rank:
                    chosen = self._parse_payload(call_id, row[1]) or payload
            params = {
                "call_id": call_id,
                "payload": chosen.to_json_bytes().decode(),
                "complete": int(chosen.complete),
                "turn_count": chosen.turn_count,
                "ended_reason": chosen.ended_reason,
                "lease_until": now + self.lease_seconds,
                "now": now,
            } | self._mine()
            if row is None:
                if session_id is None:
                    raise LookupError(f"journal: no call {call_id!r} and no session_id given")
                conn.execute(
                    """
                    INSERT INTO calls (call_id, session_id, attempt_number, started_at,
                        owner_host, owner_pid, owner_start_time, lease_until, state,
                        ended_reason, payload, complete, turn_count, updated_at)
                    VALUES (:call_id, :session_id, :attempt, :started_at, :host, :pid, :start,
                        :lease_until, 'pending', :ended_reason, :payload, :complete,
                        :turn_count, :now)
                    """,
                    params
                    | {
                        "session_id": session_id,
                        "attempt": chosen.attempt_number,
                        "started_at": chosen.started_at.isoformat(),
                    },
                )
            else:
                conn.execute(
                    """
                    UPDATE calls SET state = 'pending', payload = :payload,
                        complete = :complete, turn_count = :turn_count,
                        ended_reason = :ended_reason, dead_reason = NULL,
                        owner_host = :host, owner_pid = :pid, owner_start_time = :start,
                        lease_until = :lease_until, updated_at = :now
                    WHERE call_id = :call_id
                    """,
                    params,
                )
            # The payload now carries every turn; the per-turn rows were only for a crash.
            conn.execute("DELETE FROM turns WHERE call_id = ?", (call_id,))
            return chosen

    def begin_attempt(self, call_id: str, *, now: float | None = None) -> int:
        """Count one delivery round of a row this process owns (refreshing its lease) and return
        the count so far; 0 when the row is not ours."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            row = conn.execute(
                f"UPDATE calls SET attempts = attempts + 1, lease_until = :lease_until, "
                f"updated_at = :now WHERE call_id = :call_id AND {self._IS_MINE} "
                f"RETURNING attempts",
                {"call_id": call_id, "lease_until": now + self.lease_seconds, "now": now}
                | self._mine(),
            ).fetchone()
            return int(row[0]) if row is not None else 0

    def mark_delivered(self, call_id: str) -> bool:
        """The backend holds the transcript: drop the row and its turns. Only the owner may;
        False (and a log line) when another process took the row over meanwhile."""
        with self._transaction() as conn:
            cursor = conn.execute(
                f"DELETE FROM calls WHERE call_id = :call_id AND {self._IS_MINE}",
                {"call_id": call_id} | self._mine(),
            )
            removed = cursor.rowcount == 1
            if removed:
                conn.execute("DELETE FROM turns WHERE call_id = ?", (call_id,))
        if not removed:
            _log().warning("journal.not_owner", call_id=call_id, operation="mark_delivered")
        self.checkpoint()
        return removed

    def mark_dead(self, call_id: str, reason: str, *, now: float | None = None) -> bool:
        """Keep the row as a dead letter: never dropped, never claimed again automatically."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE calls SET state = 'dead', dead_reason = :reason, owner_host = NULL, "
                f"owner_pid = NULL, owner_start_time = NULL, lease_until = 0, updated_at = :now "
                f"WHERE call_id = :call_id AND {self._IS_MINE}",
                {"call_id": call_id, "reason": reason[:MAX_REASON_CHARS], "now": now}
                | self._mine(),
            )
            if cursor.rowcount == 1:
                return True
        _log().warning("journal.not_owner", call_id=call_id, operation="mark_dead")
        return False

    def release(self, call_id: str, *, now: float | None = None) -> bool:
        """Give up ownership (delivery deferred) so that any process's recovery may claim it."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE calls SET owner_host = NULL, owner_pid = NULL, owner_start_time = NULL, "
                f"lease_until = 0, updated_at = :now "
                f"WHERE call_id = :call_id AND state != 'dead' AND {self._IS_MINE}",
                {"call_id": call_id, "now": now} | self._mine(),
            )
            return cursor.rowcount == 1

    # ------------------------------------------------------------------ recovery

    def claim_recoverable(
        self, *, now: float | None = None, limit: int | None = None
    ) -> list[ClaimedCall]:
        """Take over every live or pending row (at most `limit`) whose lease expired or whose
        owner process is gone, in one UPDATE under BEGIN IMMEDIATE: the claimer becomes the owner
        with a fresh lease, so a row is claimed by exactly one process. A claimed live row is a
        call whose process died: its payload is rebuilt from the journaled turns, marked
        incomplete and `crashed`. Rows owned by this very process are never claimed here."""
        now = time.time() if now is None else now
        params = {
            "now": now,
            "lease_until": now + self.lease_seconds,
            "limit": -1 if limit is None else limit,
        } | self._mine()
        claimed: list[ClaimedCall] = []
        unreadable: list[tuple[str, str]] = []
        with self._transaction() as conn:
            self._alive_memo.clear()  # liveness is judged afresh, inside the write lock
            rows = conn.execute(
                f"""
                UPDATE calls SET owner_host = :host, owner_pid = :pid, owner_start_time = :start,
                    lease_until = :lease_until
                WHERE call_id IN (
                    SELECT call_id FROM calls
                    WHERE state IN ('live', 'pending') AND NOT ({self._IS_MINE})
                      AND (lease_until < :now
                           OR NOT owner_alive(owner_host, owner_pid, owner_start_time))
                    ORDER BY updated_at LIMIT :limit)
                RETURNING call_id, session_id, attempt_number, started_at, state, payload,
                    attempts, updated_at
                """,
                params,
            ).fetchall()
            for call_id, session_id, attempt, started_at, state, stored, attempts, updated in rows:
                if state == "pending":
                    payload = self._parse_payload(call_id, stored)
                else:
                    payload = self._rebuild(conn, call_id, attempt, started_at, updated)
                if payload is None:
                    unreadable.append((call_id, "stored transcript does not validate"))
                    continue
                claimed.append(ClaimedCall(call_id, session_id, state, payload, int(attempts)))
            for call_id, reason in unreadable:
                # Kept as a dead letter for an operator: retrying would fail the same way.
                conn.execute(
                    "UPDATE calls SET state = 'dead', dead_reason = ?, owner_host = NULL, "
                    "owner_pid = NULL, owner_start_time = NULL, lease_until = 0 "
                    "WHERE call_id = ?",
                    (reason, call_id),
                )
            dead = conn.execute("SELECT count(*) FROM calls WHERE state = 'dead'").fetchone()[0]
        self.checkpoint()
        if claimed:
            _log().info(
                "journal.claimed",
                count=len(claimed),
                crashed=sum(1 for c in claimed if c.previous_state == "live"),
                call_ids=[c.call_id for c in claimed],
            )
        for call_id, _ in unreadable:
            _log().error("journal.payload_invalid", call_id=call_id)
        if dead:
            # Dead letters wait for an operator (`dead_letters()`): say so on every sweep.
            _log().warning("journal.dead_letters", count=int(dead))
        return claimed

    def _held_by_other(
        self,
        host: str | None,
        pid: int | None,
        start_time: float | None,
        lease_until: float | None,
        now: float,
    ) -> bool:
        if host is None and pid is None:
            return False  # released: free for anyone
        mine = (host, pid, start_time) == (self.owner.host, self.owner.pid, self.owner.start_time)
        if mine or lease_until is None or lease_until < now:
            return False
        return self._owner_alive_cached(host, pid, start_time)

    def _parse_payload(self, call_id: str, stored: str | None) -> TranscriptPayload | None:
        if stored is None:
            return None
        try:
            return TranscriptPayload.model_validate_json(stored)
        except ValidationError as error:
            _log().error("journal.payload_invalid", call_id=call_id, errors=error.error_count())
            return None

    def _rebuild(
        self,
        conn: sqlite3.Connection,
        call_id: str,
        attempt_number: int,
        started_at: str,
        last_sign_of_life: float,
        *,
        ended_reason: EndedReason = "crashed",
    ) -> TranscriptPayload | None:
        rows = conn.execute(
            "SELECT seq, role, text, started_at, ended_at, interrupted FROM turns "
            "WHERE call_id = ? ORDER BY seq",
            (call_id,),
        ).fetchall()
        if any(row[0] != index for index, row in enumerate(rows, start=1)):
            # A lost turn (an append that failed) must not make the rest undeliverable: the
            # wire format wants seq 1..n, so renumber and say so.
            _log().warning("journal.seq_gap", call_id=call_id, turns=len(rows))
        try:
            turns = [
                Turn(
                    seq=index,
                    role=role,
                    text=text,
                    started_at=datetime.fromisoformat(turn_started),
                    ended_at=datetime.fromisoformat(turn_ended),
                    interrupted=bool(interrupted),
                )
                for index, (_, role, text, turn_started, turn_ended, interrupted) in enumerate(
                    rows, start=1
                )
            ]
            started = datetime.fromisoformat(started_at)
            # The call ended somewhere between its last turn and its last lease refresh.
            ended = max(
                [started, utc_from_timestamp(last_sign_of_life)] + [t.ended_at for t in turns]
            )
            return TranscriptPayload(
                attempt_number=attempt_number,
                complete=False,
                ended_reason=ended_reason,
                started_at=started,
                ended_at=ended,
                turn_count=len(turns),
                turns=turns,
            )
        except (ValidationError, ValueError) as error:
            _log().error("journal.rebuild_failed", call_id=call_id, error=type(error).__name__)
            return None

    # ------------------------------------------------------------------ queries

    def state(self, call_id: str) -> CallState | None:
        """None: no row (delivered, or never journaled)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT state FROM calls WHERE call_id = ?", (call_id,)
            ).fetchone()
        return None if row is None else cast(CallState, row[0])

    def holder(self, call_id: str) -> Owner | None:
        """The process that owns the row now; None when nobody does (released, dead letter,
        delivered)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT owner_host, owner_pid, owner_start_time FROM calls WHERE call_id = ?",
                (call_id,),
            ).fetchone()
        if row is None or row[1] is None or row[2] is None:
            return None
        return Owner(row[0] or "", int(row[1]), float(row[2]))

    def is_undelivered(self, call_id: str) -> bool:
        """True while the call is live or pending; a dead letter counts as settled (its retry is
        an operator's decision), and no row means delivered."""
        return self.state(call_id) in ("live", "pending")

    def current_payload(
        self, call_id: str, *, ended_reason: EndedReason = "crashed"
    ) -> TranscriptPayload | None:
        """The transcript the journal would deliver for this call now: the stored final one, or
        (for a live row) one rebuilt from its turns, incomplete, with `ended_reason`."""
        with self._lock:
            row = self._conn.execute(
                "SELECT state, payload, attempt_number, started_at, updated_at FROM calls "
                "WHERE call_id = ?",
                (call_id,),
            ).fetchone()
            if row is None:
                return None
            if row[0] == "live":
                return self._rebuild(
                    self._conn, call_id, row[2], row[3], row[4], ended_reason=ended_reason
                )
        return self._parse_payload(call_id, row[1])

    def turns(self, call_id: str) -> list[Turn]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, role, text, started_at, ended_at, interrupted FROM turns "
                "WHERE call_id = ? ORDER BY seq",
                (call_id,),
            ).fetchall()
        return [
            Turn(
                seq=seq,
                role=role,
                text=text,
                started_at=datetime.fromisoformat(started),
                ended_at=datetime.fromisoformat(ended),
                interrupted=bool(interrupted),
            )
            for seq, role, text, started, ended, interrupted in rows
        ]

    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT call_id, session_id, attempt_number, dead_reason, attempts, updated_at "
                "FROM calls WHERE state = 'dead' ORDER BY updated_at"
            ).fetchall()
        return [DeadLetter(r[0], r[1], r[2], r[3] or "", r[4], r[5]) for r in rows]

    def stats(self) -> JournalStats:
        with self._lock:
            counts = dict(
                self._conn.execute("SELECT state, count(*) FROM calls GROUP BY state").fetchall()
            )
            turns = self._conn.execute("SELECT count(*) FROM turns").fetchone()[0]
        return JournalStats(
            live=counts.get("live", 0),
            pending=counts.get("pending", 0),
            dead=counts.get("dead", 0),
            turns=turns,
        )

    def journal_mode(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    def sweep_orphan_turns(self) -> int:
        """Delete turns whose call row is gone (a hung owner that kept appending after its call
        was recovered and delivered). Returns how many."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM turns WHERE call_id NOT IN (SELECT call_id FROM calls)"
            )
            return cursor.rowcount
