"""The journal file: its tables, schema version, the in-place migration of a version 1 file, and
switching a connection to WAL.

Rule: a file is only ever migrated forward, keeping every row (pending transcripts must still be
delivered); a file newer than this code is refused, never downgraded (`base.JournalBase._setup`).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Literal

JOURNAL_FILENAME = "journal.sqlite3"
# Other processes hold the write lock for well under a millisecond; wait rather than fail.
BUSY_TIMEOUT_MS = 5_000
# 2: owners by (host, boot id, pid, start ticks), leases on CLOCK_MONOTONIC with a generation
# counter, the lease_watch table. A version 1 file is migrated in place, rows kept.
# 3: the recordings table (a version 2 file gains it, empty).
SCHEMA_VERSION = 3

CallState = Literal["live", "pending", "dead"]
# recording: its call is live and the file growing; pending: sealed (size and sha256 known),
# waiting for the backend; dead: rejected, kept for the operator; delivered: the backend holds
# it and the file is gone (the row stays a while so that a resumed call numbers its part after it)
RecordingState = Literal["recording", "pending", "dead", "delivered"]

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
CREATE TABLE IF NOT EXISTS recordings (
    recording_id     TEXT PRIMARY KEY,  -- "{call_id}#part{part}"
    call_id          TEXT NOT NULL,
    session_id       TEXT NOT NULL,
    attempt_number   INTEGER NOT NULL,
    part             INTEGER NOT NULL,
    path             TEXT NOT NULL,
    size             INTEGER,
    sha256           TEXT,
    started_at       TEXT NOT NULL,
    owner_host       TEXT,
    owner_boot_id    TEXT,
    owner_pid        INTEGER,
    owner_start_ticks INTEGER,
    lease_until      REAL NOT NULL,
    lease_generation INTEGER NOT NULL DEFAULT 0,
    state            TEXT NOT NULL
        CHECK (state IN ('recording', 'pending', 'dead', 'delivered')),
    dead_reason      TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    updated_at       REAL NOT NULL  -- wall clock: display and age only
);
CREATE INDEX IF NOT EXISTS recordings_by_attempt ON recordings (session_id, attempt_number);
"""

_V1_COLUMNS_TO_V2 = """
INSERT INTO calls (call_id, session_id, attempt_number, started_at, owner_host, owner_boot_id,
    owner_pid, owner_start_ticks, lease_until, lease_generation, state, ended_reason, payload,
    complete, turn_count, dead_reason, attempts, updated_at)
SELECT call_id, session_id, attempt_number, started_at, owner_host, NULL, owner_pid, NULL, 0, 0,
    state, ended_reason, payload, complete, turn_count, dead_reason, attempts, updated_at
FROM calls_v1
"""

# Version 1's shutdown backstop stored a live call rebuilt by its own, still running process as
# `complete: false` with `job_terminated`. The contract now pairs `complete: false` only with
# crashed/in_progress (agent.models.INCOMPLETE_REASONS), and that process had journaled every
# final turn it saw: such a transcript is complete. Left as it was it would fail validation when
# claimed and end as a dead letter instead of being delivered.
_V1_REPAIR_COMPLETE = """
UPDATE calls SET complete = 1, payload = json_set(payload, '$.complete', json('true'))
WHERE payload IS NOT NULL AND complete = 0
  AND ended_reason NOT IN ('crashed', 'in_progress')
"""


def enable_wal(conn: sqlite3.Connection) -> str:
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
