"""The embedded default's sessions (`LocalBackend`): numbered in a small SQLite file.

Rule: one session per room sid (a create for a room sid already held answers its session), and
attempts numbered per user and scenario without a race: job processes run side by side, so the
count is read under SQLite's write lock (SQLite rather than JSON for this). The database is
private to the worker's user whatever the umask (the file 0600, a new data dir 0700), and a
data dir of the job-keyed version keeps working (migrated in place). Blocking: `LocalBackend`
runs these in a thread; an `OSError` or `sqlite3.Error` is its `BackendUnavailable`.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

from agent.models import Session, SessionCreate, utc_now

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    room_sid TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    assignment_id TEXT,
    room_name TEXT NOT NULL,
    attempt_number INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions (user_id, scenario_id);
"""
# Versions before resume keyed sessions by LiveKit job (`job_id`). Their rows keep their ids
# and attempt numbers; the old job ids in the renamed column never match a room sid, so those
# finished calls are simply never found again by a create.
_MIGRATE_JOB_KEY = "ALTER TABLE sessions RENAME COLUMN job_id TO room_sid"
_COLUMNS = "id, user_id, scenario_id, assignment_id, attempt_number"


def _connect(db_path: Path) -> sqlite3.Connection:
    # Private to the worker's user whatever the umask: a new data dir 0700 and the database
    # created 0600 before SQLite opens it (its -journal/-wal files copy the file's mode).
    db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(db_path, os.O_RDWR | os.O_CREAT, 0o600))
    db = sqlite3.connect(db_path, timeout=10, isolation_level=None)
    try:
        db.executescript(_SCHEMA)
        _migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite3.Connection) -> None:
    """An existing data dir of the job-keyed version keeps working (see _MIGRATE_JOB_KEY)."""

    def columns() -> set[str]:
        return {row[1] for row in db.execute("PRAGMA table_info(sessions)")}

    if "job_id" not in columns():
        return
    # Checked again under the write lock: two processes opening an old file at once must
    # not both rename.
    db.execute("BEGIN IMMEDIATE")
    try:
        if "job_id" in columns():
            db.execute(_MIGRATE_JOB_KEY)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _session_from_row(row: tuple[Any, ...]) -> Session:
    session_id, user_id, scenario_id, assignment_id, attempt_number = row
    return Session(
        id=session_id,
        user_id=user_id,
        scenario_id=scenario_id,
        assignment_id=assignment_id,
        attempt_number=attempt_number,
    )


def create_session(db_path: Path, body: SessionCreate, room_sid: str) -> Session:
    """The session of `room_sid`: the one held for it, else a new one numbered after the
    user's earlier attempts at the scenario."""
    with closing(_connect(db_path)) as db:
        # IMMEDIATE takes the write lock before reading the count: two processes creating
        # sessions for the same user and scenario get consecutive numbers, never the same.
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE room_sid = ?", (room_sid,)
            ).fetchone()
            if row is None:
                (number,) = db.execute(
                    "SELECT COALESCE(MAX(attempt_number), 0) + 1 FROM sessions "
                    "WHERE user_id = ? AND scenario_id = ?",
                    (body.user_id, body.scenario_id),
                ).fetchone()
                session_id = f"local-{uuid.uuid4().hex}"
                db.execute(
                    "INSERT INTO sessions (id, room_sid, user_id, scenario_id, assignment_id,"
                    " room_name, attempt_number, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        session_id,
                        room_sid,
                        body.user_id,
                        body.scenario_id,
                        body.assignment_id,
                        body.room_name,
                        number,
                        utc_now().isoformat(),
                    ),
                )
                row = (session_id, body.user_id, body.scenario_id, body.assignment_id, number)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return _session_from_row(row)


def find_session(db_path: Path, session_id: str) -> Session | None:
    """The session `session_id`, or None when this database holds none of that id."""
    with closing(_connect(db_path)) as db:
        row = db.execute(
            f"SELECT {_COLUMNS} FROM sessions WHERE id = ?",
            (session_id,),
        ).fetchone()
    return None if row is None else _session_from_row(row)
