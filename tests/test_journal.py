"""The journal: turns are durable at once, and a row is recovered by exactly one process."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from agent.journal import Journal, Owner
from agent.models import TranscriptPayload, Turn, utc_now
from tests.support import journal_probe

ROWS_PER_ROUND = 40
CHILD = Path(__file__).parent / "support" / "journal_child.py"
PROJECT = Path(__file__).resolve().parents[1]


def make_turn(seq: int, text: str | None = None) -> Turn:
    at = utc_now()
    return Turn(
        seq=seq,
        role="user" if seq % 2 else "assistant",
        text=text if text is not None else f"turn {seq}",
        started_at=at,
        ended_at=at + timedelta(milliseconds=400),
    )


def make_payload(turns: int, *, complete: bool = True) -> TranscriptPayload:
    at = utc_now()
    return TranscriptPayload(
        attempt_number=1,
        complete=complete,
        ended_reason="caller_left" if complete else "crashed",
        started_at=at,
        ended_at=at + timedelta(seconds=turns),
        turn_count=turns,
        turns=[make_turn(seq) for seq in range(1, turns + 1)],
    )


def wire(payload: TranscriptPayload | None) -> dict[str, object] | None:
    """Compare transcripts as sent: the journal stores them at the wire's millisecond precision."""
    return None if payload is None else payload.to_wire()


def open_live_call(journal: Journal, call_id: str, turns: int = 0) -> None:
    journal.open_call(
        call_id, session_id=f"session-{call_id}", attempt_number=1, started_at=utc_now()
    )
    for seq in range(1, turns + 1):
        journal.append_turn(call_id, make_turn(seq))


def gone_owner() -> Owner:
    """This pid with another start: what a reused pid looks like, i.e. the owner is gone."""
    me = Owner.current()
    return Owner(me.host, me.boot_id, me.pid, me.start_ticks - 1)


def other_host_owner() -> Owner:
    """An owner on another host: its liveness cannot be checked, only its lease can expire."""
    return Owner(socket.gethostname() + "-elsewhere", "boot-elsewhere", 1, 1)


class FakeClock:
    """An injectable monotonic clock (leases are measured on CLOCK_MONOTONIC)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def later(seconds: float) -> FakeClock:
    """A monotonic clock `seconds` ahead of the real one."""
    clock = FakeClock()
    clock.now += seconds
    return clock


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


@pytest.fixture
def journal(db: Path) -> Iterator[Journal]:
    with Journal(db) as opened:
        yield opened


class Child:
    """A journal_child.py process in its own process group, killed at teardown."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=PROJECT,
            start_new_session=True,
        )

    def readline(self, timeout: float = 15.0) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # the child flushes each line; it never blocks long
        assert time.monotonic() < deadline, "journal child too slow"
        assert line, f"journal child exited early with {self.proc.poll()}"
        return line.strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def finish(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()
        for stream in (child.proc.stdin, child.proc.stdout):
            if stream is not None:
                stream.close()


# ------------------------------------------------------------------ durability


def test_turns_survive_reopen(db: Path) -> None:
    with Journal(db) as first:
        open_live_call(first, "job-1", turns=5)
    with Journal(db) as second:
        assert [turn.seq for turn in journal_probe.turns(second, "job-1")] == [1, 2, 3, 4, 5]
        assert journal_probe.turns(second, "job-1")[0].text == "turn 1"
        assert second.state("job-1") == "live"


def test_wal_mode_and_synchronous_normal_are_on(journal: Journal, db: Path) -> None:
    assert journal.journal_mode() == "wal"
    with Journal(db) as again:
        assert again._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_journal_file_is_private_to_its_user(journal: Journal, db: Path) -> None:
    open_live_call(journal, "job-1", turns=1)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{db}-wal").stat().st_mode) == 0o600


def test_sigkilled_call_is_recovered_with_all_turns_incomplete_and_crashed(
    db: Path, journal: Journal, children: list[Child]
) -> None:
    turns = 25
    child = Child("live", str(db), "job-killed", str(turns))
    children.append(child)
    assert child.readline() == "ready"
    child.kill()

    claimed = journal.claim_recoverable()

    assert len(claimed) == 1
    payload = claimed[0].payload
    assert claimed[0].call_id == "job-killed"
    assert claimed[0].session_id == "session-job-killed"
    assert claimed[0].previous_state == "live"
    assert payload.complete is False
    assert payload.ended_reason == "crashed"
    assert payload.turn_count == turns
    assert [turn.seq for turn in payload.turns] == list(range(1, turns + 1))
    assert payload.turns[-1].interrupted is True
    assert payload.turns[0].text == "turn 1: ünïcode and 'quotes'"
    assert payload.ended_at >= payload.turns[-1].ended_at


# ------------------------------------------------------------------ ownership and claims


def test_live_owner_with_unexpired_lease_is_not_claimed(
    db: Path, journal: Journal, children: list[Child]
) -> None:
    child = Child("live", str(db), "job-live", "3")
    children.append(child)
    assert child.readline() == "ready"

    assert journal.claim_recoverable() == []
    assert journal.state("job-live") == "live"


def test_expired_lease_is_claimed_even_though_owner_lives(db: Path) -> None:
    clock = FakeClock()
    with Journal(db, owner=other_host_owner()) as owner, Journal(db, clock=clock) as recovery:
        open_live_call(owner, "job-hung", turns=2)
        assert recovery.claim_recoverable() == []
        clock.now += owner.lease_seconds + 1
        assert [c.call_id for c in recovery.claim_recoverable()] == ["job-hung"]


def test_owner_whose_pid_was_reused_counts_as_gone(db: Path) -> None:
    with Journal(db, owner=gone_owner()) as owner, Journal(db) as recovery:
        open_live_call(owner, "job-reused", turns=1)
        assert [c.call_id for c in recovery.claim_recoverable()] == ["job-reused"]


def test_claimed_row_is_not_claimed_again_while_its_claimer_lives(db: Path) -> None:
    with (
        Journal(db, owner=gone_owner()) as dead,
        Journal(db) as first,
        Journal(db, owner=other_host_owner()) as second,
    ):
        open_live_call(dead, "job-1", turns=1)
        assert len(first.claim_recoverable()) == 1
        assert second.claim_recoverable() == []


def test_a_process_never_claims_its_own_rows(db: Path) -> None:
    clock = FakeClock()
    with Journal(db, clock=clock) as journal:
        open_live_call(journal, "job-mine", turns=1)
        clock.now += 3600
        assert journal.claim_recoverable() == []


def test_racing_processes_claim_each_row_exactly_once(
    db: Path, journal: Journal, children: list[Child]
) -> None:
    racers = [Child("claim", str(db)) for _ in range(4)]
    children.extend(racers)
    for racer in racers:
        assert racer.readline() == "ready"
    all_claimed: list[str] = []
    with Journal(db, owner=gone_owner()) as dead:
        for round_number in range(3):  # many rounds: each row is one race between 4 processes
            ids = [f"job-{round_number}-{index}" for index in range(ROWS_PER_ROUND)]
            for call_id in ids:
                open_live_call(dead, call_id, turns=1)
            start_at = time.time() + 0.2
            for racer in racers:
                racer.send(f"go {start_at}")
            per_racer = [json.loads(racer.readline()) for racer in racers]
            claimed = [call_id for batch in per_racer for call_id in batch]
            assert sorted(claimed) == sorted(ids), "every row claimed exactly once"
            all_claimed.extend(claimed)
    for racer in racers:
        racer.finish()
    assert len(all_claimed) == len(set(all_claimed)) == 3 * ROWS_PER_ROUND


def test_released_row_is_claimable_by_any_process(db: Path) -> None:
    with Journal(db) as owner, Journal(db, owner=other_host_owner()) as other:
        owner.finish_call("job-1", make_payload(2), session_id="session-1")
        assert other.claim_recoverable() == []
        assert owner.release("job-1") is True
        claimed = other.claim_recoverable()
        assert [c.previous_state for c in claimed] == ["pending"]
        assert claimed[0].payload.turn_count == 2


# ------------------------------------------------------------------ finishing and settling


def test_pending_row_yields_its_stored_final_payload(db: Path) -> None:
    final = make_payload(4)
    with Journal(db, owner=gone_owner()) as owner, Journal(db) as recovery:
        open_live_call(owner, "job-1", turns=4)
        owner.finish_call("job-1", final)
        claimed = recovery.claim_recoverable()
    assert claimed[0].payload.to_wire() == final.to_wire()
    assert claimed[0].payload.complete is True


def test_finish_call_keeps_the_better_transcript(journal: Journal) -> None:
    complete = make_payload(3, complete=True)
    rebuilt = make_payload(5, complete=False)
    assert journal.finish_call("job-1", complete, session_id="s") == complete
    # A late rebuild from turns (incomplete) must not replace the complete transcript.
    assert wire(journal.finish_call("job-1", rebuilt)) == complete.to_wire()
    assert wire(journal.current_payload("job-1")) == complete.to_wire()
    longer = make_payload(4, complete=True)
    assert journal.finish_call("job-1", longer) == longer


def test_finish_call_needs_a_session_id_for_a_call_never_opened(journal: Journal) -> None:
    with pytest.raises(LookupError):
        journal.finish_call("job-unknown", make_payload(1))


def test_mark_delivered_removes_the_call_and_its_turns(journal: Journal) -> None:
    open_live_call(journal, "job-1", turns=3)
    journal.finish_call("job-1", make_payload(3))
    open_live_call(journal, "job-2", turns=2)

    assert journal.mark_delivered("job-1") is True

    assert journal.state("job-1") is None
    assert journal_probe.turns(journal, "job-1") == []
    assert journal_probe.counts(journal).live == 1  # job-2 untouched
    assert journal_probe.counts(journal).turns == 2


def test_only_the_owner_can_mark_delivered(db: Path) -> None:
    with Journal(db) as owner, Journal(db, owner=other_host_owner()) as other:
        owner.finish_call("job-1", make_payload(1), session_id="s")
        assert other.mark_delivered("job-1") is False
        assert other.mark_dead("job-1", "nope") is False
        assert other.release("job-1") is False
        assert owner.state("job-1") == "pending"


def test_dead_letters_are_kept_and_never_claimed_again(db: Path) -> None:
    with (
        Journal(db, clock=later(3600)) as owner,
        Journal(db, owner=other_host_owner(), clock=later(3600)) as other,
    ):
        owner.finish_call("job-1", make_payload(2), session_id="session-1")
        assert owner.mark_dead("job-1", "422: turns.0.text too short") is True

        assert other.claim_recoverable() == []
        assert owner.claim_recoverable() == []
        letters = other.rows("dead")
        assert [(d.call_id, d.session_id, d.last_error) for d in letters] == [
            ("job-1", "session-1", "422: turns.0.text too short")
        ]
        assert other.current_payload("job-1") is not None  # the transcript itself is kept
        assert other.is_undelivered("job-1") is False


def test_dead_letter_is_replaced_only_by_a_better_transcript(journal: Journal) -> None:
    journal.finish_call("job-1", make_payload(2, complete=False), session_id="s")
    journal.mark_dead("job-1", "422")
    assert journal.finish_call("job-1", make_payload(2, complete=False)) is None
    assert journal.state("job-1") == "dead"
    better = make_payload(3, complete=True)
    assert journal.finish_call("job-1", better) == better
    assert journal.state("job-1") == "pending"


def test_refresh_lease_reports_a_lost_row(db: Path) -> None:
    clock = FakeClock()
    with Journal(db, owner=other_host_owner()) as owner, Journal(db, clock=clock) as recovery:
        open_live_call(owner, "job-1", turns=1)
        assert owner.refresh_lease("job-1") is True
        recovery.claim_recoverable()  # first sight of the other host's lease
        clock.now += 3600
        assert len(recovery.claim_recoverable()) == 1
        assert owner.refresh_lease("job-1") is False


def test_attempts_are_counted_across_rounds(journal: Journal) -> None:
    journal.finish_call("job-1", make_payload(1), session_id="s")
    assert journal.begin_attempt("job-1") == 1
    assert journal.begin_attempt("job-1") == 2


def test_gap_in_turns_is_renumbered_so_the_rest_stays_deliverable(db: Path) -> None:
    with Journal(db, owner=gone_owner()) as owner, Journal(db) as recovery:
        open_live_call(owner, "job-1")
        for seq in (1, 2, 4):
            owner.append_turn("job-1", make_turn(seq, text=f"text {seq}"))
        payload = recovery.claim_recoverable()[0].payload
    assert [turn.seq for turn in payload.turns] == [1, 2, 3]
    assert [turn.text for turn in payload.turns] == ["text 1", "text 2", "text 4"]
