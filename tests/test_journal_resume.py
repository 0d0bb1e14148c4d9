"""The journal's side of a resumed call (DESIGN.md, "Surviving a worker's death"): a job
re-dispatched into the same room has a new job id, so the earlier call is found by session and
attempt; the new call's row adopts a dead run's row (which no recovery then delivers as a
separate `crashed` transcript); a row another live process holds is never superseded.

Expected turns are written here by hand; the journal file is read back through
tests/support/journal_probe.py (raw SQLite), not through the code under test.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from agent.delivery import recover_pending
from agent.journal import AttemptHeldElsewhere, Journal, Owner
from agent.models import TranscriptPayload, Turn, utc_now
from tests.support import journal_probe
from tests.support.fake_backend import FakeBackend


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


def dead_local_owner() -> Owner:
    """This host, this boot, this pid, another start: a process that is gone (pid reused)."""
    me = Owner.current()
    return dataclasses.replace(me, start_ticks=me.start_ticks - 1)


def another_live_process() -> Owner:
    """An identity another process of this host would have; its journal is the adopter here,
    while this very process (alive, lease fresh) holds the earlier row."""
    me = Owner.current()
    return dataclasses.replace(me, pid=me.pid + 10_000_000)


def turn(seq: int, text: str) -> Turn:
    at = utc_now()
    return Turn(
        seq=seq,
        role="assistant" if seq % 2 else "user",
        text=text,
        started_at=at,
        ended_at=at + timedelta(milliseconds=300),
    )


DEAD_RUN = ["Hi, is this the support line?", "Yes, I'm listening.", "I lost my job."]


def journal_dead_run(db: Path, call_id: str, session_id: str, attempt: int) -> None:
    """A job that journaled the three turns of DEAD_RUN and then died (SIGKILL: no hook ran)."""
    with Journal(db, owner=dead_local_owner()) as dead:
        dead.open_call(call_id, session_id=session_id, attempt_number=attempt, started_at=utc_now())
        for seq, text in enumerate(DEAD_RUN, start=1):
            dead.append_turn(call_id, turn(seq, text))


def test_the_earlier_call_is_found_by_session_and_attempt_under_any_call_id(db: Path) -> None:
    journal_dead_run(db, "AJ_dead", "S1", 1)
    journal_dead_run(db, "AJ_other_attempt", "S1", 2)
    journal_dead_run(db, "AJ_other_session", "S2", 1)
    with Journal(db) as journal:
        found = journal.earlier_call("S1", 1)
        assert found is not None
        assert found.call_id == "AJ_dead"
        assert not found.payload.complete
        assert [(t.seq, t.text) for t in found.payload.turns] == list(enumerate(DEAD_RUN, start=1))
        assert journal.earlier_call("S1", 3) is None
        assert journal.earlier_call("S9", 1) is None


async def test_adoption_supersedes_the_dead_row_so_recovery_delivers_nothing_for_it(
    db: Path,
) -> None:
    journal_dead_run(db, "AJ_dead", "S1", 1)
    with Journal(db) as journal:
        earlier = journal.open_call(
            "AJ_new",
            session_id="S1",
            attempt_number=1,
            started_at=utc_now(),
            continue_from="AJ_dead",
            adopt=True,
        )
        assert [t.text for t in earlier] == DEAD_RUN
        # the dead row and its turns are gone; the new row holds them as seq 1..3
        assert journal.state("AJ_dead") is None
        assert journal_probe.turns(journal, "AJ_dead") == []
        assert [(t.seq, t.text) for t in journal_probe.turns(journal, "AJ_new")] == list(
            enumerate(DEAD_RUN, start=1)
        )
        assert journal_probe.counts(journal).live == 1
    # another process's recovery: the new row is live (its owner, this process, is alive) and
    # the dead one is gone, so nothing is delivered as a separate `crashed` transcript
    backend = FakeBackend()
    with Journal(db, owner=another_live_process()) as elsewhere:
        outcomes = await recover_pending(elsewhere, backend, deadline=5)
    assert outcomes == []
    assert backend.accepted == []


def test_a_row_held_live_by_another_process_is_neither_offered_nor_superseded(db: Path) -> None:
    with Journal(db) as holder, Journal(db, owner=another_live_process()) as adopter:
        # this process holds AJ_first (alive, fresh lease): the adopter sees it held elsewhere
        holder.open_call("AJ_first", session_id="S1", attempt_number=1, started_at=utc_now())
        holder.append_turn("AJ_first", turn(1, "Hello?"))
        holder.append_turn("AJ_first", turn(2, "Hi."))
        assert adopter.earlier_call("S1", 1) is None
        # the attempt is the holder's while its call runs: the adopter opens nothing
        with pytest.raises(AttemptHeldElsewhere):
            adopter.open_call(
                "AJ_second",
                session_id="S1",
                attempt_number=1,
                started_at=utc_now(),
                continue_from="AJ_first",
                adopt=True,
            )
        assert adopter.state("AJ_second") is None
        assert holder.state("AJ_first") == "live"
        assert [t.text for t in journal_probe.turns(holder, "AJ_first")] == ["Hello?", "Hi."]
        assert holder.refresh_lease("AJ_first") is True  # still its own


def test_a_complete_transcript_held_elsewhere_still_says_the_call_is_over(db: Path) -> None:
    at = utc_now()
    with Journal(db) as holder, Journal(db, owner=another_live_process()) as looker:
        holder.open_call("AJ_first", session_id="S1", attempt_number=1, started_at=at)
        holder.append_turn("AJ_first", turn(1, "Hello?"))
        # the first run ended its call and is delivering it (its row is pending and held)
        holder.finish_call(
            "AJ_first",
            TranscriptPayload.model_validate(
                {
                    "attemptNumber": 1,
                    "complete": True,
                    "endedReason": "caller_left",
                    "startedAt": at.isoformat(),
                    "endedAt": (at + timedelta(seconds=5)).isoformat(),
                    "turnCount": 1,
                    "turns": [
                        {
                            "seq": 1,
                            "role": "assistant",
                            "text": "Hello?",
                            "startedAt": at.isoformat(),
                            "endedAt": (at + timedelta(seconds=1)).isoformat(),
                        }
                    ],
                }
            ),
        )
        found = looker.earlier_call("S1", 1)
        assert found is not None and found.payload.complete and found.held_elsewhere
