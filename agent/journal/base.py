"""The journal's connections, its lock and its transactions.

Rule (durability): WAL with `synchronous=NORMAL`. A committed write survives the death of the
process (SIGKILL, OOM), not a power loss; the per-turn cost target (<= 2 ms median) is measured
against that. The journal starts no thread; async callers reach it through `asyncio.to_thread`,
which is why one connection is shared under a lock (`check_same_thread=False`). Open one
`Journal` per process: an SQLite connection must never cross a fork. Every row write but
`append_turn` (its own connection and lock, see `JournalBase.__init__`) goes through
`_transaction`, and every read holds `_lock`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from agent.journal.ownership import (
    LEASE_SECONDS,
    Owner,
    Ownership,
    current_boot_id,
    current_host,
)
from agent.journal.schema import (
    _SCHEMA,
    _V1_COLUMNS_TO_V2,
    _V1_REPAIR_COMPLETE,
    BUSY_TIMEOUT_MS,
    SCHEMA_VERSION,
    enable_wal,
)
from agent.log import get_logger

log = get_logger(__name__)


def _monotonic() -> float:
    # Looked up at call time (not bound as a default) so that one clock serves every caller.
    return time.monotonic()


def _wall_clock() -> float:
    return time.time()


class JournalBase(Ownership):
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

    def _setup(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = enable_wal(conn)
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
                conn.execute(_V1_REPAIR_COMPLETE)
                conn.execute("DROP TABLE calls_v1")
            if 0 < version < SCHEMA_VERSION:
                log.info("journal.migrated", from_version=version, to_version=SCHEMA_VERSION)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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

    def close(self) -> None:
        with self._append_lock:
            if self._append_conn is not None:
                self._append_conn.close()
        with self._lock:
            self._conn.close()

    def checkpoint(self) -> None:
        """Copy the WAL back into the database file (PASSIVE: never waits for readers). Called
        from `refresh_lease`, `mark_delivered` and `claim_recoverable`, which async callers run
        in a thread, so the fsync it costs stays off the event loop."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._appends_since_checkpoint = 0

    def _lease_until(self) -> float:
        return self._clock() + self.lease_seconds
