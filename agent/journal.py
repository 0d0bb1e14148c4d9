"""The durable local store of turns and undelivered transcripts (SQLite in AGENT_DATA_DIR).

Rule: a transcript leaves the journal only when the backend has it (`mark_delivered`) and never
silently: a rejected one stays as a dead letter. Each call row has exactly one owner, a process
identified by (host, boot id, pid, start ticks), holding a lease. Only the owner may refresh,
release, deliver-and-delete or dead-letter a row; any other process takes a row over only through
`claim_recoverable` (under BEGIN IMMEDIATE: a look at the candidates, then one UPDATE), and only
when the lease expired or the owner process is provably gone. So two processes never deliver one
transcript at once, and a live call is never taken over.

Nothing here reads the wall clock to decide ownership: an NTP step of minutes must not make a live
owner look dead or its lease look expired. The owner's start mark is its start in clock ticks since
boot (/proc/<pid>/stat field 22) under the kernel's boot id; the lease is measured on
CLOCK_MONOTONIC (`time.monotonic()`, system-wide since boot on Linux) and is comparable only on the
host and boot that wrote it. A host is the host name plus the pid namespace (a pid means nothing
outside its namespace, and containers may share a host name):
- same host, same boot: expired when `lease_until` is past; the owner is gone when its pid is not
  running with the same start ticks (or is a zombie).
- same host, another boot: the machine rebooted since; the owner is gone, its lease meaningless.
- another host (a volume shared between containers): neither its pid nor its clock can be read
  from here. Every write of the owner bumps `lease_generation`; a claimer records the generation
  with its own monotonic time the first time it sees it (`lease_watch`, per observing host and
  boot) and claims only after a whole lease of its own time without a new generation. The worker
  sweeps again one lease after start-up for exactly this case.
- a row migrated from a version 1 file has no boot id: on this host name its older worker is
  gone; from another, the generation rule applies.
`updated_at` is the wall clock, for display and age only (and the rebuilt transcript's endedAt).

Whoever ends up holding a row delivers the best transcript anyone wrote for it (complete over
incomplete, then more turns): an owner that finishes while recovery holds its row leaves its final
transcript in the row, and the holder's `finish_call`, claim and `mark_delivered` compare against
it. Turns leave the journal only with their delivered row (or the orphan sweep).

Durability: WAL with `synchronous=NORMAL`. A committed write survives the death of the process
(SIGKILL, OOM), not a power loss; the per-turn cost target (<= 2 ms median) is measured against
that. The journal starts no thread; async callers reach it through `asyncio.to_thread`, which is
why one connection is shared under a lock (`check_same_thread=False`). Open one `Journal` per
process: an SQLite connection must never cross a fork.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
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
MAX_REASON_CHARS = 1_000
# 2: owners by (host, boot id, pid, start ticks), leases on CLOCK_MONOTONIC with a generation
# counter, the lease_watch table. A version 1 file is migrated in place, rows kept.
SCHEMA_VERSION = 2
# A safety net for a caller that appends but never refreshes a lease: the WAL stays bounded.
APPENDS_PER_FORCED_CHECKPOINT = 2_000

CallState = Literal["live", "pending", "dead"]
# DESIGN.md: `complete: false` if and only if the call ended for one of these reasons.
INCOMPLETE_REASONS: frozenset[str] = frozenset({"crashed", "in_progress"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id          TEXT PRIMARY KEY,
    session_id       TEXT NOT NULL,
    attempt_number   INTEGER NOT NULL,
    started_at       TEXT NOT NULL,
    owner_host       TEXT,
    owner_boot_id    TEXT,
    owner_pid        INTEGER,
    owner_start_ticks INTEGER,
    lease_until      REAL NOT NULL,  -- CLOCK_MONOTONIC seconds on the owner's host and boot
    lease_generation INTEGER NOT NULL DEFAULT 0,  -- bumped by every write of an owner
    state            TEXT NOT NULL CHECK (state IN ('live', 'pending', 'dead')),
    ended_reason     TEXT,
    payload          TEXT,
    complete         INTEGER,
    turn_count       INTEGER,
    dead_reason      TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    updated_at       REAL NOT NULL  -- wall clock: display and age only
);
CREATE INDEX IF NOT EXISTS calls_by_state ON calls (state, lease_until);
CREATE TABLE IF NOT EXISTS lease_watch (
    call_id          TEXT NOT NULL,
    observer_host    TEXT NOT NULL,
    observer_boot_id TEXT NOT NULL,
    generation       INTEGER NOT NULL,
    seen_at          REAL NOT NULL,  -- the observer's CLOCK_MONOTONIC
    PRIMARY KEY (call_id, observer_host, observer_boot_id)
) WITHOUT ROWID;
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

_V1_COLUMNS_TO_V2 = """
INSERT INTO calls (call_id, session_id, attempt_number, started_at, owner_host, owner_boot_id,
    owner_pid, owner_start_ticks, lease_until, lease_generation, state, ended_reason, payload,
    complete, turn_count, dead_reason, attempts, updated_at)
SELECT call_id, session_id, attempt_number, started_at, owner_host, NULL, owner_pid, NULL, 0, 0,
    state, ended_reason, payload, complete, turn_count, dead_reason, attempts, updated_at
FROM calls_v1
"""

_PROC = Path("/proc")


def current_host() -> str:
    """This host as an owner's identity: the host name plus the pid namespace, because a pid
    means something only inside its namespace (two containers given the same host name must
    not read each other's pids). A process in another namespace counts as another host."""
    try:
        namespace = os.readlink(_PROC / "self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{namespace}"


def current_boot_id() -> str:
    """The kernel's id of this boot: a process start in ticks, or a CLOCK_MONOTONIC reading,
    means something only together with it. Off Linux (a developer's laptop) the boot time
    stands in, which a clock step can move: the clock-step guarantee is Linux's."""
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"boot-time-{int(psutil.boot_time())}"


def process_start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/<pid>/stat): never moved
    by the wall clock. None when no such process runs or it is a zombie (killed, not yet reaped:
    gone all the same). Raises PermissionError when it exists but may not be inspected."""
    if not (_PROC / "self/stat").exists():
        try:  # off Linux: the start time in centiseconds, which a clock step can move
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return round(process.create_time() * 100)
        except psutil.NoSuchProcess:
            return None
        except psutil.AccessDenied as error:
            raise PermissionError(pid) from error
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: fields resume after the last
    # ')'. The rest starts at field 3 (state), so field 22 is the 20th of them.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass(frozen=True, slots=True)
class Owner:
    """A process: its host, the boot it runs in, its pid, and its start in ticks since that
    boot (which tells it apart from a later process that reuses the pid)."""

    host: str
    boot_id: str
    pid: int
    start_ticks: int

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        ticks = process_start_ticks(pid)
        if ticks is None:
            raise RuntimeError("journal: cannot read this process's own start ticks")
        return cls(current_host(), current_boot_id(), pid, ticks)


def owner_alive(
    host: str | None,
    boot_id: str | None,
    pid: int | None,
    start_ticks: int | None,
    *,
    here: tuple[str, str] | None = None,
) -> bool:
    """Is the owner process still running? `here` is (host, boot id) of the asking process. A
    process on another host cannot be checked from here, so it counts as alive (only its lease
    can lapse); one of this host under another boot id is gone (the machine rebooted since)."""
    if pid is None:
        return False
    here_host, here_boot = here or (current_host(), current_boot_id())
    if host != here_host:
        return True
    if boot_id != here_boot:
        return False
    try:
        return _local_owner_alive(pid, start_ticks)
    except Exception:
        # When in doubt the owner counts as alive: its lease still lapses.
        return True


def _local_owner_alive(pid: int, start_ticks: int | None) -> bool:
    try:
        ticks = process_start_ticks(pid)
    except PermissionError:
        return True  # it exists and is not ours to inspect: do not steal its row
    # Another start: the pid now belongs to another process.
    return ticks is not None and ticks == start_ticks


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


def _best(*candidates: TranscriptPayload | None) -> TranscriptPayload | None:
    """The best of several transcripts of one call (the first of equals), None if none."""
    best: TranscriptPayload | None = None
    for candidate in candidates:
        if candidate is not None and (
            best is None
            or _rank(candidate.complete, candidate.turn_count)
            > _rank(best.complete, best.turn_count)
        ):
            best = candidate
    return best


def _turn_row(call_id: str, turn: Turn) -> tuple[str, int, str, str, str, str, int]:
    return (
        call_id,
        turn.seq,
        turn.role,
        turn.text,
        turn.started_at.isoformat(),
        turn.ended_at.isoformat(),
        int(turn.interrupted),
    )


def _turn_from_row(seq: int, row: tuple[Any, ...]) -> Turn:
    """A `turns` row (seq, role, text, started_at, ended_at, interrupted) as turn number `seq`."""
    _, role, text, started_at, ended_at, interrupted = row
    return Turn(
        seq=seq,
        role=role,
        text=text,
        started_at=datetime.fromisoformat(started_at),
        ended_at=datetime.fromisoformat(ended_at),
        interrupted=bool(interrupted),
    )


def _monotonic() -> float:
    # Looked up at call time (not bound as a default) so that one clock serves every caller.
    return time.monotonic()


def _wall_clock() -> float:
    return time.time()


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
        clock: Callable[[], float] | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        """`clock` is CLOCK_MONOTONIC (leases); `wall` the wall clock (`updated_at`, for display
        and age only). Both are injectable for tests; looked up at call time by default."""
        self.path = Path(path)
        self.lease_seconds = lease_seconds
        self.owner = owner or Owner.current()
        self._clock = clock or _monotonic
        self._wall = wall or _wall_clock
        # Where this process runs, whatever identity it journals under (tests give it others):
        # what decides whether a row's owner and lease can be checked from here.
        self._here = (current_host(), current_boot_id())
        self._lock = threading.Lock()
        # One claim asks about the same few owners once per candidate row: read /proc once.
        self._alive_memo: dict[tuple[str | None, str | None, int | None, int | None], bool] = {}
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
        with self._transaction():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"journal: {self.path} has schema {version}, newer than {SCHEMA_VERSION}"
                )
            if version == 1:
                # An older worker's file: keep every row (pending transcripts must still be
                # delivered). Its owners carry no boot id, so their leases count as another
                # boot's: expired on this host, watched for a lease from another.
                conn.execute("DROP INDEX IF EXISTS calls_by_state")
                conn.execute("ALTER TABLE calls RENAME TO calls_v1")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if version == 1:
                conn.execute(_V1_COLUMNS_TO_V2)
                conn.execute("DROP TABLE calls_v1")
                _log().info("journal.migrated", from_version=1, to_version=SCHEMA_VERSION)
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
        self, host: str | None, boot_id: str | None, pid: int | None, start_ticks: int | None
    ) -> bool:
        key = (host, boot_id, pid, start_ticks)
        if key not in self._alive_memo:
            self._alive_memo[key] = owner_alive(*key, here=self._here)
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
            "boot": self.owner.boot_id,
            "pid": self.owner.pid,
            "ticks": self.owner.start_ticks,
        }

    _IS_MINE = (
        "owner_host IS :host AND owner_boot_id IS :boot AND owner_pid IS :pid "
        "AND owner_start_ticks IS :ticks"
    )
    _SET_MINE = (
        "owner_host = :host, owner_boot_id = :boot, owner_pid = :pid, owner_start_ticks = :ticks"
    )
    _SET_NOBODY = (
        "owner_host = NULL, owner_boot_id = NULL, owner_pid = NULL, owner_start_ticks = NULL, "
        "lease_until = 0, lease_generation = lease_generation + 1"
    )
    _OWNER_COLUMNS = (
        "owner_host, owner_boot_id, owner_pid, owner_start_ticks, lease_until, lease_generation"
    )

    def _lapsed(
        self,
        conn: sqlite3.Connection,
        call_id: str,
        owner: tuple[Any, ...],
        now: float,
        *,
        watch: bool,
    ) -> bool:
        """May a process other than the row's owner take the row now? `owner` is the row's
        `_OWNER_COLUMNS`. True for a released row, an owner provably gone, or a lease that ran
        out (the module docstring has the rule per host and boot). `watch`: record what this
        process sees of another host's lease (claims do; a mere look does not)."""
        host, boot_id, pid, ticks, lease_until, generation = owner
        if host is None and pid is None:
            return True  # released: free for anyone
        here_host, here_boot = self._here
        if boot_id is None and host == socket.gethostname():
            return True  # a v1 row of this host (migrated): its older worker process is gone
        if host == here_host:
            if boot_id != here_boot:
                return True  # written before this host rebooted: owner and lease are gone
            if lease_until is not None and lease_until < now:
                return True
            return not self._owner_alive_cached(host, boot_id, pid, ticks)
        # Another host: its clock is not ours. A whole lease of our time without a new write.
        key = (call_id, here_host, here_boot)
        seen = conn.execute(
            "SELECT generation, seen_at FROM lease_watch "
            "WHERE call_id = ? AND observer_host = ? AND observer_boot_id = ?",
            key,
        ).fetchone()
        if seen is not None and seen[0] == generation:
            return bool(now - seen[1] >= self.lease_seconds)
        if watch:
            conn.execute(
                "INSERT OR REPLACE INTO lease_watch VALUES (?, ?, ?, ?, ?)",
                (*key, generation, now),
            )
        return False

    def _held_by_other(
        self, conn: sqlite3.Connection, call_id: str, owner: tuple[Any, ...], now: float
    ) -> bool:
        """Does another process hold this row (its owner alive, its lease fresh)?"""
        if tuple(owner[:4]) == tuple(self._mine().values()):
            return False
        return not self._lapsed(conn, call_id, owner, now, watch=False)

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
        continue_from: str | None = None,
    ) -> list[Turn]:
        """Start journaling a call, owned by this process with a fresh lease, and return the
        turns an earlier run of it journaled (seq 1..k; empty for a new call). The caller
        continues `seq` after them and its final transcript includes them: an id opened again
        (LiveKit running the same job in a new process) never overwrites the first run's
        turns. `continue_from`: start this row from another call's turns instead (its row held
        elsewhere). Raises CallHeldElsewhere, writing nothing, while another live process
        holds the row with a fresh lease."""
        now = self._clock()
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {self._OWNER_COLUMNS} FROM calls WHERE call_id = ?", (call_id,)
            ).fetchone()
            if row is not None and self._held_by_other(conn, call_id, row, now):
                raise CallHeldElsewhere(call_id)
            earlier = self._earlier_turns(conn, continue_from or call_id)
            conn.execute(
                f"""
                INSERT INTO calls (call_id, session_id, attempt_number, started_at, owner_host,
                    owner_boot_id, owner_pid, owner_start_ticks, lease_until, state, updated_at)
                VALUES (:call_id, :session_id, :attempt, :started_at, :host, :boot, :pid, :ticks,
                        :lease_until, 'live', :wall)
                ON CONFLICT (call_id) DO UPDATE SET
                    session_id = excluded.session_id, attempt_number = excluded.attempt_number,
                    {self._SET_MINE}, lease_until = excluded.lease_until,
                    lease_generation = lease_generation + 1, state = 'live',
                    updated_at = excluded.updated_at
                """,
                {
                    "call_id": call_id,
                    "session_id": session_id,
                    "attempt": attempt_number,
                    "started_at": started_at.isoformat(),
                    "lease_until": now + self.lease_seconds,
                    "wall": self._wall(),
                    **self._mine(),
                },
            )
            rewrite = [t.seq for t in earlier] != [
                r[0]
                for r in conn.execute(
                    "SELECT seq FROM turns WHERE call_id = ? ORDER BY seq", (call_id,)
                )
            ]
            if rewrite:
                # The row's turns become exactly 1..k (renumbered after a gap, copied from
                # `continue_from`, or taken from a stored transcript whose turns were deleted),
                # so the next run's seq k+1.. never lands on an earlier turn.
                conn.execute("DELETE FROM turns WHERE call_id = ?", (call_id,))
                conn.executemany(
                    "INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [_turn_row(call_id, turn) for turn in earlier],
                )
        if earlier:
            _log().info("journal.call_reopened", call_id=call_id, earlier_turns=len(earlier))
        return earlier

    def _earlier_turns(self, conn: sqlite3.Connection, call_id: str) -> list[Turn]:
        """The most turns journaled for a call: its per-turn rows, or its stored transcript's
        turns when that has more (a v1 journal deleted the rows once it stored the transcript)."""
        rows = conn.execute(
            "SELECT seq, role, text, started_at, ended_at, interrupted FROM turns "
            "WHERE call_id = ? ORDER BY seq",
            (call_id,),
        ).fetchall()
        turns = [_turn_from_row(index, row) for index, row in enumerate(rows, start=1)]
        stored = conn.execute("SELECT payload FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        payload = self._parse_payload(call_id, stored[0]) if stored is not None else None
        if payload is not None and payload.turn_count > len(turns):
            return list(payload.turns)
        return turns

    def append_turn(self, call_id: str, turn: Turn) -> None:
        """One committed INSERT per final turn: on disk (in the WAL) before this returns, so a
        SIGKILL right after loses nothing. Cheap enough to call from the event loop."""
        row = _turn_row(call_id, turn)
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

    def refresh_lease(self, call_id: str) -> bool:
        """Extend this process's lease. False: the row is not ours any more (claimed after our
        lease ran out, or delivered and gone)."""
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE calls SET lease_until = :lease_until, "
                f"lease_generation = lease_generation + 1, updated_at = :wall "
                f"WHERE call_id = :call_id AND state != 'dead' AND {self._IS_MINE}",
                {"call_id": call_id, "lease_until": self._lease_until(), "wall": self._wall()}
                | self._mine(),
            )
            held = cursor.rowcount == 1
        self.checkpoint()
        return held

    def _lease_until(self) -> float:
        return self._clock() + self.lease_seconds

    # ------------------------------------------------------------------ the end of a call

    def finish_call(
        self,
        call_id: str,
        payload: TranscriptPayload,
        *,
        session_id: str | None = None,
    ) -> TranscriptPayload | None:
        """Store the final transcript (state pending, owned by this process) and return the one
        to deliver. The journal keeps the best transcript it has seen for a call (complete over
        incomplete, then more turns), so a late rebuild never overwrites a fuller one. A call
        that was never opened, or was already delivered, is written anew: that needs
        `session_id`. None: the call is a dead letter whose transcript ranks at least as high
        as this one (it was rejected already; retrying is an operator's decision).

        Raises CallHeldElsewhere when another live process holds the row (it claimed it for
        recovery): the row stays that process's, but a better transcript than the one stored
        is left in it first, so that whoever delivers the row delivers the best one."""
        now = self._clock()
        held_elsewhere = False
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT state, payload, complete, turn_count, {self._OWNER_COLUMNS} "
                f"FROM calls WHERE call_id = ?",
                (call_id,),
            ).fetchone()
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
                "wall": self._wall(),
            } | self._mine()
            if row is not None and self._held_by_other(conn, call_id, row[4:], now):
                held_elsewhere = True
                if chosen is payload:
                    conn.execute(
                        "UPDATE calls SET payload = :payload, complete = :complete, "
                        "turn_count = :turn_count, ended_reason = :ended_reason, "
                        "updated_at = :wall WHERE call_id = :call_id",
                        params,
                    )
            elif row is None:
                if session_id is None:
                    raise LookupError(f"journal: no call {call_id!r} and no session_id given")
                conn.execute(
                    """
                    INSERT INTO calls (call_id, session_id, attempt_number, started_at,
                        owner_host, owner_boot_id, owner_pid, owner_start_ticks, lease_until,
                        state, ended_reason, payload, complete, turn_count, updated_at)
                    VALUES (:call_id, :session_id, :attempt, :started_at, :host, :boot, :pid,
                        :ticks, :lease_until, 'pending', :ended_reason, :payload, :complete,
                        :turn_count, :wall)
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
                    f"""
                    UPDATE calls SET state = 'pending', payload = :payload,
                        complete = :complete, turn_count = :turn_count,
                        ended_reason = :ended_reason, dead_reason = NULL, {self._SET_MINE},
                        lease_until = :lease_until, lease_generation = lease_generation + 1,
                        updated_at = :wall
                    WHERE call_id = :call_id
                    """,
                    params,
                )
            # The per-turn rows stay until the row is delivered: a process that lost this row
            # (or a run of the same job) may still need them, and they cost little.
        if held_elsewhere:
            raise CallHeldElsewhere(call_id)
        return chosen

    def begin_attempt(self, call_id: str) -> int:
        """Count one delivery round of a row this process owns (refreshing its lease) and return
        the count so far; 0 when the row is not ours."""
        with self._transaction() as conn:
            row = conn.execute(
                f"UPDATE calls SET attempts = attempts + 1, lease_until = :lease_until, "
                f"lease_generation = lease_generation + 1, updated_at = :wall "
                f"WHERE call_id = :call_id AND {self._IS_MINE} RETURNING attempts",
                {"call_id": call_id, "lease_until": self._lease_until(), "wall": self._wall()}
                | self._mine(),
            ).fetchone()
            return int(row[0]) if row is not None else 0

    def mark_delivered(self, call_id: str, delivered: TranscriptPayload | None = None) -> bool:
        """The backend holds the transcript: drop the row and its turns. Only the owner may;
        False (and a log line) when another process took the row over meanwhile. With
        `delivered` (what was posted): when the journal meanwhile holds a better transcript
        (the call's owner finished while this process was delivering a rebuild, or kept
        appending turns), the row is kept pending and released instead, so the next recovery
        delivers the better one; False then too."""
        superseded = False
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT complete, turn_count, "
                f"(SELECT count(*) FROM turns t WHERE t.call_id = c.call_id) "
                f"FROM calls c WHERE call_id = :call_id AND {self._IS_MINE}",
                {"call_id": call_id} | self._mine(),
            ).fetchone()
            if row is not None and delivered is not None:
                sent = _rank(delivered.complete, delivered.turn_count)
                stored = _rank(bool(row[0]), int(row[1] or 0))
                rebuilt = _rank(False, int(row[2]))
                superseded = max(stored, rebuilt) > sent
            if row is not None and superseded:
                conn.execute(
                    f"UPDATE calls SET state = 'pending', {self._SET_NOBODY}, updated_at = ? "
                    f"WHERE call_id = ?",
                    (self._wall(), call_id),
                )
            elif row is not None:
                conn.execute("DELETE FROM calls WHERE call_id = ?", (call_id,))
                conn.execute("DELETE FROM turns WHERE call_id = ?", (call_id,))
                conn.execute("DELETE FROM lease_watch WHERE call_id = ?", (call_id,))
        if row is None:
            _log().warning("journal.not_owner", call_id=call_id, operation="mark_delivered")
        elif superseded:
            sent_turns = delivered.turn_count if delivered is not None else None
            _log().info("journal.superseded", call_id=call_id, delivered_turns=sent_turns)
        self.checkpoint()
        return row is not None and not superseded

    def mark_dead(self, call_id: str, reason: str) -> bool:
        """Keep the row as a dead letter: never dropped, never claimed again automatically."""
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE calls SET state = 'dead', dead_reason = :reason, {self._SET_NOBODY}, "
                f"updated_at = :wall WHERE call_id = :call_id AND {self._IS_MINE}",
                {"call_id": call_id, "reason": reason[:MAX_REASON_CHARS], "wall": self._wall()}
                | self._mine(),
            )
            if cursor.rowcount == 1:
                return True
        _log().warning("journal.not_owner", call_id=call_id, operation="mark_dead")
        return False

    def release(self, call_id: str) -> bool:
        """Give up ownership (delivery deferred) so that any process's recovery may claim it."""
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE calls SET {self._SET_NOBODY}, updated_at = :wall "
                f"WHERE call_id = :call_id AND state != 'dead' AND {self._IS_MINE}",
                {"call_id": call_id, "wall": self._wall()} | self._mine(),
            )
            return cursor.rowcount == 1

    # ------------------------------------------------------------------ recovery

    def claim_recoverable(self, *, limit: int | None = None) -> list[ClaimedCall]:
        """Take over every live or pending row (at most `limit`) whose lease lapsed or whose
        owner is provably gone (the module docstring has the rule), in one UPDATE under BEGIN
        IMMEDIATE: the claimer becomes the owner with a fresh lease, so a row is claimed by
        exactly one process, and never a row with a fresh lease. What to deliver is the best
        transcript the row has: its stored one, or one rebuilt from its turns (incomplete,
        `crashed`: the call's process died or hung past its lease). The turns stay in the journal
        until the row is delivered. Rows owned by this very process are never claimed here."""
        now = self._clock()
        claimed: list[ClaimedCall] = []
        unreadable: list[str] = []
        with self._transaction() as conn:
            self._alive_memo.clear()  # liveness is judged afresh, inside the write lock
            candidates = conn.execute(
                f"SELECT call_id, {self._OWNER_COLUMNS} FROM calls "
                f"WHERE state IN ('live', 'pending') AND NOT ({self._IS_MINE}) "
                f"ORDER BY updated_at",
                self._mine(),
            ).fetchall()
            chosen = [
                row[0] for row in candidates if self._lapsed(conn, row[0], row[1:], now, watch=True)
            ][: len(candidates) if limit is None else limit]
            ids = json.dumps(chosen)
            rows = conn.execute(
                f"""
                UPDATE calls SET {self._SET_MINE}, lease_until = :lease_until,
                    lease_generation = lease_generation + 1
                WHERE call_id IN (SELECT value FROM json_each(:ids))
                RETURNING call_id, session_id, attempt_number, started_at, state, payload,
                    attempts, updated_at
                """,
                {"ids": ids, "lease_until": now + self.lease_seconds} | self._mine(),
            ).fetchall()
            conn.execute(
                "DELETE FROM lease_watch WHERE call_id IN (SELECT value FROM json_each(?))", (ids,)
            )
            rows.sort(key=lambda row: chosen.index(row[0]))
            for call_id, session_id, attempt, started_at, state, stored, attempts, updated in rows:
                payload = _best(
                    self._parse_payload(call_id, stored),
                    self._rebuild(
                        conn, call_id, attempt, started_at, updated, empty_ok=state == "live"
                    ),
                )
                if payload is None:
                    unreadable.append(call_id)
                    continue
                claimed.append(ClaimedCall(call_id, session_id, state, payload, int(attempts)))
            for call_id in unreadable:
                # Kept as a dead letter for an operator: retrying would fail the same way.
                conn.execute(
                    f"UPDATE calls SET state = 'dead', dead_reason = ?, {self._SET_NOBODY} "
                    f"WHERE call_id = ?",
                    ("stored transcript does not validate", call_id),
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
        for call_id in unreadable:
            _log().error("journal.payload_invalid", call_id=call_id)
        if dead:
            # Dead letters wait for an operator (`dead_letters()`): say so on every sweep.
            _log().warning("journal.dead_letters", count=int(dead))
        return claimed

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
        empty_ok: bool = True,
    ) -> TranscriptPayload | None:
        """The transcript of a call from its journaled turns. `complete` follows the design rule
        (false exactly for `crashed` and `in_progress`): a live process that ends its call for
        another reason (the backstop's `job_terminated`) journaled every final turn it saw.
        None when it cannot be built, or has no turns and not `empty_ok`."""
        rows = conn.execute(
            "SELECT seq, role, text, started_at, ended_at, interrupted FROM turns "
            "WHERE call_id = ? ORDER BY seq",
            (call_id,),
        ).fetchall()
        if not rows and not empty_ok:
            return None
        if any(row[0] != index for index, row in enumerate(rows, start=1)):
            # A lost turn (an append that failed) must not make the rest undeliverable: the
            # wire format wants seq 1..n, so renumber and say so.
            _log().warning("journal.seq_gap", call_id=call_id, turns=len(rows))
        try:
            turns = [_turn_from_row(index, row) for index, row in enumerate(rows, start=1)]
            started = datetime.fromisoformat(started_at)
            # The call ended somewhere between its last turn and its last lease refresh.
            ended = max(
                [started, utc_from_timestamp(last_sign_of_life)] + [t.ended_at for t in turns]
            )
            return TranscriptPayload(
                attempt_number=attempt_number,
                complete=ended_reason not in INCOMPLETE_REASONS,
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
                "SELECT owner_host, owner_boot_id, owner_pid, owner_start_ticks FROM calls "
                "WHERE call_id = ?",
                (call_id,),
            ).fetchone()
        if row is None or row[2] is None:
            return None
        return Owner(row[0] or "", row[1] or "", int(row[2]), int(row[3] or 0))

    def is_undelivered(self, call_id: str) -> bool:
        """True while the call is live or pending; a dead letter counts as settled (its retry is
        an operator's decision), and no row means delivered."""
        return self.state(call_id) in ("live", "pending")

    def current_payload(
        self, call_id: str, *, ended_reason: EndedReason = "crashed"
    ) -> TranscriptPayload | None:
        """The transcript the journal would deliver for this call now: the stored final one, or
        (for a live row) the better of that and one rebuilt from its turns with `ended_reason`
        (complete unless that is `crashed` or `in_progress`)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT state, payload, attempt_number, started_at, updated_at FROM calls "
                "WHERE call_id = ?",
                (call_id,),
            ).fetchone()
            if row is None:
                return None
            stored = self._parse_payload(call_id, row[1])
            if row[0] == "live":
                rebuilt = self._rebuild(
                    self._conn, call_id, row[2], row[3], row[4], ended_reason=ended_reason
                )
                return _best(stored, rebuilt)
        return stored

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
        was recovered and delivered), and lease observations of gone rows. Returns how many
        turns. Run by every recovery pass (`agent.delivery.recover_pending`)."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM turns WHERE call_id NOT IN (SELECT call_id FROM calls)"
            )
            conn.execute("DELETE FROM lease_watch WHERE call_id NOT IN (SELECT call_id FROM calls)")
            return cursor.rowcount

    # ------------------------------------------------------------------ operator
    # Used by `python -m agent journal` (agent/ops/journal_cli.py), often while a worker runs on
    # the same file. The reads are single autocommit SELECTs: in WAL mode each is a short read
    # transaction that never blocks a writer (a live call's appends). The one write,
    # `requeue_dead`, is a single UPDATE under the write lock. Only non-ownership columns are
    # read here, so these stay valid whatever the ownership scheme.

    def rows(self, state: CallState | None = None) -> list[JournalRow]:
        """Every call (or those in `state`), oldest first, as the operator sees them: ids,
        counts, reasons and times, never transcript text."""
        with self._lock:
            rows = self._conn.execute(
                """
                SELECT call_id, session_id, attempt_number, state,
                    COALESCE(turn_count,
                             (SELECT count(*) FROM turns t WHERE t.call_id = c.call_id)),
                    ended_reason, dead_reason, attempts, started_at,
                    CASE WHEN json_valid(payload) THEN json_extract(payload, '$.endedAt') END,
                    updated_at
                FROM calls c WHERE :state IS NULL OR state = :state
                ORDER BY started_at, call_id
                """,
                {"state": state},
            ).fetchall()
        return [
            JournalRow(
                call_id=str(call_id),
                session_id=str(session_id),
                attempt_number=int(attempt),
                state=cast(CallState, row_state),
                turn_count=int(turns or 0),
                ended_reason=ended_reason,
                last_error=dead_reason,
                attempts=int(attempts or 0),
                started_at=_parse_time(started_at),
                ended_at=_parse_time(ended_at),
                updated_at=float(updated_at),
            )
            for (
                call_id,
                session_id,
                attempt,
                row_state,
                turns,
                ended_reason,
                dead_reason,
                attempts,
                started_at,
                ended_at,
                updated_at,
            ) in rows
        ]

    def requeue_dead(self, call_id: str | None = None, *, now: float | None = None) -> list[str]:
        """Move dead letters (one, or all when `call_id` is None) back to pending, unowned, so
        that a delivery (the operator's retry, or any recovery) may take them. The last error
        stays on the row until a delivery replaces the transcript. Returns the ids moved."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            rows = conn.execute(
                "UPDATE calls SET state = 'pending', updated_at = :now "
                "WHERE state = 'dead' AND (:call_id IS NULL OR call_id = :call_id) "
                "RETURNING call_id",
                {"call_id": call_id, "now": now},
            ).fetchall()
        return sorted(str(row[0]) for row in rows)


@dataclass(frozen=True, slots=True)
class JournalRow:
    """One call as `Journal.rows` reports it. `last_error` is the dead letter's reason (the
    server's, capped when it was stored)."""

    call_id: str
    session_id: str
    attempt_number: int
    state: CallState
    turn_count: int
    ended_reason: str | None
    last_error: str | None
    attempts: int
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: float

    def age_seconds(self, now: float) -> float:
        """A live call's age since it started; a transcript's since its call ended (the time it
        has waited for the backend). Falls back to the row's last update."""
        mark = self.started_at if self.state == "live" else self.ended_at
        since = mark.timestamp() if mark is not None else self.updated_at
        return max(0.0, now - since)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # A naive time would be read as local time; everything stored here is UTC.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
