"""Tests' own look into a journal file, straight from SQLite on a connection of its own.

The worker reads its journal through `Journal`'s queries (`rows`, `state`, `current_payload`);
what tests need beyond them (every row's state counted, the raw turn rows, orphans included) is
read here, independently of the code under test.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime

from agent.journal import Journal
from agent.models import Turn


@dataclass(frozen=True, slots=True)
class Counts:
    live: int
    pending: int
    dead: int
    turns: int  # every turn row, including those whose call row is gone


def counts(journal: Journal) -> Counts:
    with closing(sqlite3.connect(journal.path)) as db:
        states = dict(db.execute("SELECT state, count(*) FROM calls GROUP BY state").fetchall())
        (turns,) = db.execute("SELECT count(*) FROM turns").fetchone()
    return Counts(states.get("live", 0), states.get("pending", 0), states.get("dead", 0), turns)


def turns(journal: Journal, call_id: str) -> list[Turn]:
    """The turn rows journaled for a call, by seq."""
    with closing(sqlite3.connect(journal.path)) as db:
        rows = db.execute(
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
