"""One row that cannot be built never blocks the rest (DESIGN.md "Journal", "Backend": a held
body is input like any other; a bad one is a log line, never a blocked recovery).

The poisoned row is what an earlier version left when it adopted a held transcript whose
timestamps had no timezone: turn rows and a call start written without an offset. It is written
here straight into SQLite (the models of today refuse such a time, so nothing of ours can write it
any more), beside good rows written through the Journal API as the worker writes them. Expected
outcomes are written by hand: the good rows delivered in the same pass, the poisoned one a dead
letter whose reason names the problem, visible to the operator.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from agent.delivery import backstop, recover_pending
from agent.journal import Journal, Owner
from agent.models import TranscriptPayload, Turn, utc_now
from tests.support import journal_probe
from tests.support.fake_backend import FakeBackend

ROOT = Path(__file__).resolve().parents[1]
NAIVE = "2026-12-02T18:00:00"  # no offset: what a garbled held transcript carried


def gone_owner() -> Owner:
    """This pid with another start: the owner process is gone (a pid reused)."""
    me = Owner.current()
    return dataclasses.replace(me, start_ticks=me.start_ticks - 1)


def turn(seq: int, text: str) -> Turn:
    at = utc_now()
    return Turn(
        seq=seq,
        role="assistant" if seq % 2 else "user",
        text=text,
        started_at=at,
        ended_at=at + timedelta(milliseconds=300),
    )


def final(turns: int) -> TranscriptPayload:
    at = utc_now()
    return TranscriptPayload(
        attempt_number=1,
        complete=True,
        ended_reason="caller_left",
        started_at=at,
        ended_at=at + timedelta(seconds=5),
        turn_count=turns,
        turns=[turn(seq, f"final turn {seq}") for seq in range(1, turns + 1)],
    )


def poison(path: Path, call_id: str, *, session_id: str = "S-poison") -> None:
    """A live row of a dead owner whose start and turns carry times without a timezone."""
    with Journal(path, owner=gone_owner()) as dead:
        dead.open_call(call_id, session_id=session_id, attempt_number=1, started_at=utc_now())
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE calls SET started_at = ? WHERE call_id = ?", (NAIVE, call_id))
        db.executemany(
            "INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (call_id, 1, "assistant", "Hi... is this the line?", NAIVE, NAIVE, 0),
                (call_id, 2, "user", "Yes, go on.", NAIVE, NAIVE, 0),
            ],
        )


def good_rows(path: Path) -> None:
    """A crashed live call (dead owner, two turns) and a pending final transcript."""
    with Journal(path, owner=gone_owner()) as dead:
        dead.open_call("crashed-1", session_id="S-crashed", attempt_number=1, started_at=utc_now())
        dead.append_turn("crashed-1", turn(1, "Hello?"))
        dead.append_turn("crashed-1", turn(2, "Hi."))
        dead.finish_call("pending-1", final(3), session_id="S-pending")
        dead.release("pending-1")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


async def test_recovery_sets_a_poisoned_row_aside_and_delivers_every_other_in_the_same_pass(
    db: Path,
) -> None:
    good_rows(db)
    poison(db, "poisoned-1")
    backend = FakeBackend()
    with Journal(db) as journal:
        outcomes = await recover_pending(journal, backend, deadline=5)
        assert sorted(o.status for o in outcomes) == ["delivered", "delivered"]
        delivered = sorted((sid, p.turn_count, p.complete) for sid, p in backend.accepted)
        assert delivered == [("S-crashed", 2, False), ("S-pending", 3, True)]
        [dead] = journal.rows("dead")
        assert dead.call_id == "poisoned-1"
        assert dead.last_error is not None and "timezone" in dead.last_error
        assert "is this the line" not in dead.last_error  # never the transcript's text
        # the next pass neither raises nor claims it again
        assert await recover_pending(journal, backend, deadline=5) == []
    assert journal_probe.counts(journal) == journal_probe.Counts(0, 0, 1, 2)


def test_the_look_back_skips_a_poisoned_row_and_finds_the_good_one(db: Path) -> None:
    poison(db, "poisoned-1", session_id="S1")
    with Journal(db, owner=gone_owner()) as dead:
        dead.open_call("good-1", session_id="S1", attempt_number=1, started_at=utc_now())
        dead.append_turn("good-1", turn(1, "Hello?"))
    with Journal(db) as journal:
        found = journal.earlier_call("S1", 1)
    assert found is not None
    assert (found.call_id, [t.text for t in found.payload.turns]) == ("good-1", ["Hello?"])


async def test_the_backstop_of_a_poisoned_row_is_skipped_not_raised(db: Path) -> None:
    poison(db, "poisoned-1")
    backend = FakeBackend()
    with Journal(db) as journal:
        outcome = await backstop(journal, backend, "poisoned-1", "S-poison", timeout=5)
    assert outcome is None and backend.posts == 0


def run_journal(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "journal", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "AGENT_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


async def test_the_operator_sees_the_set_aside_row_with_its_reason(tmp_path: Path) -> None:
    db = tmp_path / "journal.sqlite3"
    good_rows(db)
    poison(db, "poisoned-1")
    exported = run_journal(tmp_path, "export", "poisoned-1")
    assert exported.returncode == 1
    assert "Traceback" not in exported.stderr
    assert "poisoned-1" in exported.stderr and "timezone" in exported.stderr
    with Journal(db) as journal:
        await recover_pending(journal, FakeBackend(), deadline=5)
    status = run_journal(tmp_path, "status")
    assert status.returncode == 0, status.stderr
    assert "dead: 1" in status.stdout.splitlines()
    listed = run_journal(tmp_path, "list", "--dead")
    assert listed.returncode == 0, listed.stderr
    [_header, line] = listed.stdout.splitlines()
    assert line.startswith("dead") and "poisoned-1" in line and "timezone" in line
    assert "is this the line" not in listed.stdout
