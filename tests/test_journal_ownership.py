"""The journal never takes over a live call (DESIGN.md, "Journal"): ownership and leases that a
wall-clock step cannot move, a recovery that lost the race to the owner, a job id run twice, the
orphan sweep, and a v1 journal left by an older worker.

Cross-process tests drive a real owner process (tests/support/journal_child.py, mode `owner`)
that delivers through the real HttpBackend to the loopback backend stub. Expected transcripts are
written here by hand from DESIGN.md's contract, not produced by the code under test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from livekit.agents import llm
from pydantic import SecretStr

from agent.backend import HttpBackend
from agent.call import Call
from agent.call.finish import deliver_transcript
from agent.delivery import backstop, deliver, recover_pending
from agent.journal import AttemptHeldElsewhere, CallHeldElsewhere, ClaimedCall, Journal, Owner
from agent.models import JobMetadata, Session, TranscriptPayload, Turn, utc_now
from tests.support import journal_probe
from tests.support.backend_stub import BackendStub, Fault
from tests.support.fake_backend import FakeBackend
from tests.support.fakes import CaptureRoom

KEY = "internal-service-key-for-tests"
CHILD = Path(__file__).parent / "support" / "journal_child.py"
PROJECT = Path(__file__).resolve().parents[1]


class OwnerProcess:
    """journal_child.py in `owner` mode: a live call in another process, one command a line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), "owner", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=PROJECT,
            start_new_session=True,
        )

    async def ask(self, command: str | None) -> str:
        """Send `command` (None: just read) and return the child's one-line answer. Read in a
        thread: the backend stub the child posts to runs on this test's event loop."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 30)
        assert line, f"owner process exited early with {self.proc.poll()}"
        return line.strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def owners() -> Iterator[list[OwnerProcess]]:
    started: list[OwnerProcess] = []
    yield started
    for owner in started:
        owner.kill()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


class WallClock:
    """Steps this process's wall clock as NTP does: `time.time` and the kernel's reported boot
    time (from which wall-clock process start times are derived) move together."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + self.offset)
        pslinux: Any = getattr(psutil, "_pslinux", None)
        if pslinux is not None:
            real_boot = pslinux.boot_time
            monkeypatch.setattr(pslinux, "boot_time", lambda: real_boot() + self.offset)

    def step(self, seconds: float) -> None:
        self.offset += seconds


class FakeClock:
    """An injectable monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def eventually(condition: Callable[[], object]) -> None:
    for _ in range(1_500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never met")


def transcripts_posted(stub: BackendStub, session_id: str) -> list[dict[str, Any]]:
    return [
        request.json
        for request in stub.requests_for("post_transcript")
        if request.path.endswith(f"/sessions/{session_id}/transcript")
    ]


def summary(body: dict[str, Any]) -> tuple[bool, str, int, list[int], list[str]]:
    turns = body["turns"]
    return (
        body["complete"],
        body["endedReason"],
        body["turnCount"],
        [turn["seq"] for turn in turns],
        [turn["text"] for turn in turns],
    )


def hand_written(n: int) -> tuple[bool, str, int, list[int], list[str]]:
    """The owner process's final transcript of n turns, as DESIGN.md says it goes out: complete,
    its own ended reason, turnCount = last seq, seq 1..n in order."""
    return (True, "caller_left", n, list(range(1, n + 1)), [f"turn {i}" for i in range(1, n + 1)])


def dead_local_owner() -> Owner:
    """This host, this boot, this pid, another start: a process that is gone (pid reused)."""
    me = Owner.current()
    return dataclasses.replace(me, start_ticks=me.start_ticks - 1)


def make_turn(seq: int, text: str) -> Turn:
    at = utc_now()
    return Turn(
        seq=seq,
        role="user" if seq % 2 else "assistant",
        text=text,
        started_at=at,
        ended_at=at + timedelta(milliseconds=300),
    )


# ------------------------------------------------------------------ the wall clock


async def test_a_wall_clock_step_never_hands_a_live_call_to_recovery(
    db: Path, owners: list[OwnerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = WallClock(monkeypatch)
    async with BackendStub(key=KEY) as stub:
        stub.add_session(
            Session(id="S-clock", user_id="u1", scenario_id="default", attempt_number=1)
        )
        owner = OwnerProcess(str(db), "job-clock", "S-clock", stub.url, KEY)
        owners.append(owner)
        assert await owner.ask(None) == "ready"
        assert await owner.ask("open") == "0"
        assert await owner.ask("turns 1 2") == "ok"
        backend = HttpBackend(stub.url, SecretStr(KEY))
        with Journal(db) as recovery:
            # Ten minutes forward, then twenty back (ten minutes behind real time): every
            # process sees the step, as with NTP. Turns keep coming in between.
            for step, first, last in ((600.0, 3, 4), (-1200.0, 5, 5)):
                wall.step(step)
                assert await owner.ask(f"wall {step}") == "ok"
                assert await owner.ask("refresh") == "true"
                assert await recover_pending(recovery, backend, deadline=5) == []
                assert await owner.ask(f"turns {first} {last}") == "ok"
                assert await recover_pending(recovery, backend, deadline=5) == []
            assert await owner.ask("turns 6 6") == "ok"
            assert await owner.ask("deliver 6") == "delivered"
            assert await recover_pending(recovery, backend, deadline=5) == []
            stats = journal_probe.counts(recovery)
        await backend.aclose()
        posted = transcripts_posted(stub, "S-clock")
    # every turn delivered once, complete, by its owner
    assert [summary(body) for body in posted] == [hand_written(6)]
    assert (stats.live, stats.pending, stats.dead, stats.turns) == (0, 0, 0, 0)


# ------------------------------------------------------------------ two processes, one call


@pytest.mark.parametrize("owner_finishes", ["before_recovery_posts", "while_recovery_posts"])
async def test_a_recovery_racing_a_slow_owner_delivers_the_owners_complete_transcript(
    db: Path, owners: list[OwnerProcess], owner_finishes: str
) -> None:
    async with BackendStub(key=KEY) as stub:
        stub.add_session(
            Session(id="S-race", user_id="u1", scenario_id="default", attempt_number=1)
        )
        # A 0.3 s lease that the owner does not refresh: its event loop hung past the lease,
        # so recovery may rightly take the row while the owner process still lives.
        owner = OwnerProcess(str(db), "job-race", "S-race", stub.url, KEY, "0.3")
        owners.append(owner)
        assert await owner.ask(None) == "ready"
        assert await owner.ask("open") == "0"
        assert await owner.ask("turns 1 4") == "ok"
        backend = HttpBackend(stub.url, SecretStr(KEY))
        with Journal(db) as recovery:
            claimed: list[ClaimedCall] = []
            while not claimed:  # until the owner's lease has run out
                claimed = recovery.claim_recoverable()
                await asyncio.sleep(0.05)
            [item] = claimed
            assert (item.call_id, item.payload.complete, item.payload.turn_count) == (
                "job-race",
                False,
                4,
            )
            if owner_finishes == "before_recovery_posts":
                # The owner wakes up and ends its call: the row is held by recovery now.
                assert await owner.ask("deliver 4") in ("deferred", "delivered")
                assert [t.seq for t in journal_probe.turns(recovery, "job-race")] == [1, 2, 3, 4]
                await deliver(recovery, backend, "job-race", "S-race", item.payload, deadline=5)
            else:
                stub.queue("post_transcript", Fault(delay=1.0))
                posting = asyncio.create_task(
                    deliver(recovery, backend, "job-race", "S-race", item.payload, deadline=5)
                )
                await eventually(lambda: stub.requests_for("post_transcript"))
                assert await owner.ask("deliver 4") in ("deferred", "delivered")
                await posting
            # Whatever is left is delivered by the next recovery pass (worker start, next job).
            await recover_pending(recovery, backend, deadline=5)
            stats = journal_probe.counts(recovery)
        await backend.aclose()
        best = stub.best_transcript("S-race")
        posted = transcripts_posted(stub, "S-race")
    assert best is not None
    assert summary(best.payload.to_wire()) == hand_written(4)
    # never one transcript posted twice (a retry of the same body would reuse its key)
    assert len({json.dumps(body, sort_keys=True) for body in posted}) == len(posted)
    assert (stats.live, stats.pending, stats.dead, stats.turns) == (0, 0, 0, 0)


# ------------------------------------------------------------------ one job id, two runs


class _Session:
    def on(self, event: str, handler: Any) -> None:
        return None

    def off(self, event: str, handler: Any) -> None:
        return None


def _message(role: str, text: str) -> llm.ChatMessage:
    return llm.ChatMessage(role=role, content=[text])


async def _run_job(journal: Journal, texts: list[tuple[str, str]], backend: FakeBackend) -> Call:
    """One run of job AJ_rerun through the worker's own journal wiring."""
    from agent.call.session import attach_transcript, open_journal

    session = Session(id="S-rerun", user_id="u1", scenario_id="default", attempt_number=1)
    call = Call(
        "AJ_rerun",
        "room-1",
        JobMetadata(scenario_id="default", user_id="u1", session_id="S-rerun"),
        backend=backend,
        journal=journal,
        session=session,
    )
    await open_journal(call)
    # nothing to publish (a disconnected room): this test is about the journal
    room = CaptureRoom(connected=False).as_room()
    attach_transcript(call, _Session(), room)  # type: ignore[arg-type]
    assert call.recorder is not None
    for role, text in texts:
        call.recorder.add_item(_message(role, text))
    return call


async def test_the_same_job_run_twice_keeps_the_first_runs_turns(db: Path) -> None:
    backend = FakeBackend()
    # First run: three turns, then the process dies (its owner identity is gone).
    with Journal(db, owner=dead_local_owner()) as first_process:
        first = await _run_job(
            first_process,
            [("assistant", "Hello, I'm Sam."), ("user", "Hi Sam."), ("assistant", "I'm scared.")],
            backend,
        )
        await first.cancel_tasks()
    # LiveKit runs the same job id again in a new process.
    with Journal(db) as second_process:
        second = await _run_job(
            second_process,
            [("user", "Tell me more."), ("assistant", "It started Monday.")],
            backend,
        )
        journaled = [(t.seq, t.text) for t in journal_probe.turns(second_process, "AJ_rerun")]
        second.end_reason("caller_left")
        outcome = await deliver_transcript(second, deadline=5)
        await second.cancel_tasks()
    expected = [
        (1, "Hello, I'm Sam."),
        (2, "Hi Sam."),
        (3, "I'm scared."),
        (4, "Tell me more."),
        (5, "It started Monday."),
    ]
    assert journaled == expected
    assert outcome is not None and outcome.status == "delivered"
    [(session_id, sent)] = backend.accepted
    wire = sent.to_wire()
    assert session_id == "S-rerun"
    assert (wire["complete"], wire["endedReason"], wire["turnCount"]) == (True, "caller_left", 5)
    assert [(t["seq"], t["text"]) for t in wire["turns"]] == expected


async def test_a_rerun_while_the_first_run_still_runs_the_call_stands_down(db: Path) -> None:
    # Only one job may run a room's call at a time (the journal row is the lock): the first
    # run is alive with a fresh lease, so the second journals nothing and stands down.
    backend = FakeBackend()
    me = Owner.current()
    with (
        Journal(db) as first_process,  # alive (this process), lease fresh
        Journal(db, owner=dataclasses.replace(me, pid=me.pid + 10_000_000)) as second_process,
    ):
        first = await _run_job(first_process, [("assistant", "Hello."), ("user", "Hi.")], backend)
        session = Session(id="S-rerun", user_id="u1", scenario_id="default", attempt_number=1)
        second = Call(
            "AJ_rerun",
            "room-1",
            JobMetadata(scenario_id="default", user_id="u1", session_id="S-rerun"),
            backend=backend,
            journal=second_process,
            session=session,
        )
        from agent.call.session import open_journal

        await open_journal(second)
        await first.cancel_tasks()
        await second.cancel_tasks()
        assert second.held_by == "AJ_rerun" and second.stands_down
        assert [(t.seq, t.text) for t in journal_probe.turns(first_process, "AJ_rerun")] == [
            (1, "Hello."),
            (2, "Hi."),
        ]
        assert journal_probe.counts(first_process) == journal_probe.Counts(1, 0, 0, 2)
        assert first_process.refresh_lease("AJ_rerun") is True  # still the first run's


def test_reopening_a_call_held_by_a_live_owner_is_refused(db: Path) -> None:
    me = Owner.current()
    another_process_here = dataclasses.replace(me, pid=me.pid + 10_000_000)
    with Journal(db) as first, Journal(db, owner=another_process_here) as second:
        first.open_call("job-1", session_id="s", attempt_number=1, started_at=utc_now())
        first.append_turn("job-1", make_turn(1, "first run's words"))
        # The first owner (this process) is alive and its lease fresh: its row stays its own.
        with pytest.raises(AttemptHeldElsewhere):
            second.open_call("job-1", session_id="s", attempt_number=1, started_at=utc_now())
        assert [t.text for t in journal_probe.turns(first, "job-1")] == ["first run's words"]
        assert first.refresh_lease("job-1") is True


def test_reopening_a_call_whose_ended_row_another_process_delivers_is_refused_as_held(
    db: Path,
) -> None:
    me = Owner.current()
    another_process_here = dataclasses.replace(me, pid=me.pid + 10_000_000)
    with Journal(db) as first, Journal(db, owner=another_process_here) as second:
        first.open_call("job-1", session_id="s", attempt_number=1, started_at=utc_now())
        turn = make_turn(1, "first run's words")
        first.append_turn("job-1", turn)
        ended = TranscriptPayload(
            attempt_number=1,
            complete=True,
            ended_reason="caller_left",
            started_at=turn.started_at,
            ended_at=turn.ended_at,
            turn_count=1,
            turns=[turn],
        )
        first.finish_call("job-1", ended)  # pending, the first process delivering it
        # the call is over, not running: this is the row (CallHeldElsewhere), not the attempt
        with pytest.raises(CallHeldElsewhere):
            second.open_call("job-1", session_id="s", attempt_number=1, started_at=utc_now())
        assert first.state("job-1") == "pending"


# ------------------------------------------------------------------ leases across hosts and boots


def test_a_lease_from_another_host_is_claimed_only_after_no_refresh_for_a_lease(
    db: Path,
) -> None:
    clock = FakeClock()
    elsewhere = Owner("other-container", "boot-of-another-machine", 7, 4242)
    with Journal(db, owner=elsewhere) as owner, Journal(db, clock=clock) as recovery:
        owner.open_call("job-far", session_id="s", attempt_number=1, started_at=utc_now())
        owner.append_turn("job-far", make_turn(1, "hello"))
        assert recovery.claim_recoverable() == []  # first sight: the lease is fresh
        clock.now += recovery.lease_seconds - 1
        assert owner.refresh_lease("job-far") is True  # the owner lives: it refreshed
        assert recovery.claim_recoverable() == []
        clock.now += recovery.lease_seconds - 1  # less than a lease since the refresh was seen
        assert recovery.claim_recoverable() == []
        clock.now += 2  # a whole lease with no refresh
        assert [c.call_id for c in recovery.claim_recoverable()] == ["job-far"]


def test_a_row_of_this_host_from_before_a_reboot_is_claimed_at_once(db: Path) -> None:
    me = Owner.current()
    before_reboot = dataclasses.replace(me, boot_id="boot-before-the-reboot")
    with Journal(db, owner=before_reboot) as owner, Journal(db) as recovery:
        owner.open_call("job-old", session_id="s", attempt_number=1, started_at=utc_now())
        owner.append_turn("job-old", make_turn(1, "hello"))
        assert [c.call_id for c in recovery.claim_recoverable()] == ["job-old"]


def test_a_lease_is_measured_on_the_monotonic_clock_not_the_wall_clock(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = WallClock(monkeypatch)
    clock = FakeClock()
    me = Owner.current()
    another_process_here = dataclasses.replace(me, pid=me.pid + 10_000_000)
    with (
        Journal(db, clock=clock) as owner,  # this process: alive, so only its lease can lapse
        Journal(db, clock=clock, owner=another_process_here) as recovery,
    ):
        owner.open_call("job-1", session_id="s", attempt_number=1, started_at=utc_now())
        wall.step(3600.0)
        assert recovery.claim_recoverable() == []
        wall.step(-7200.0)
        clock.now += owner.lease_seconds - 0.5
        assert recovery.claim_recoverable() == []
        clock.now += 1
        assert [c.call_id for c in recovery.claim_recoverable()] == ["job-1"]
        assert owner.refresh_lease("job-1") is False  # the owner learns it lost the row


# ------------------------------------------------------------------ the sweep and the backstop


async def test_recovery_sweeps_turns_whose_call_is_gone(db: Path) -> None:
    with Journal(db) as journal:
        # A hung owner that kept appending after its call was recovered and delivered.
        journal.append_turn("job-delivered-elsewhere", make_turn(1, "late"))
        assert journal_probe.counts(journal).turns == 1
        assert await recover_pending(journal, FakeBackend(), deadline=5) == []
        assert journal_probe.counts(journal).turns == 0


async def test_backstop_of_a_live_call_sends_every_turn_complete_with_job_terminated(
    db: Path,
) -> None:
    backend = FakeBackend()
    with Journal(db) as journal:
        journal.open_call("job-1", session_id="s-1", attempt_number=1, started_at=utc_now())
        for seq, text in ((1, "Hello."), (2, "Hi."), (3, "Bye.")):
            journal.append_turn("job-1", make_turn(seq, text))
        outcome = await backstop(
            journal, backend, "job-1", "s-1", timeout=5, ended_reason="job_terminated"
        )
    assert outcome is not None and outcome.status == "delivered"
    wire = backend.accepted[0][1].to_wire()
    # DESIGN.md: complete is false only for crashed / in_progress; the process is alive and
    # journaled every final turn it saw.
    assert (wire["complete"], wire["endedReason"], wire["turnCount"]) == (
        True,
        "job_terminated",
        3,
    )
    assert [t["text"] for t in wire["turns"]] == ["Hello.", "Hi.", "Bye."]


# ------------------------------------------------------------------ a journal from an older worker

_V1_SCHEMA = """
CREATE TABLE calls (
    call_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, attempt_number INTEGER NOT NULL,
    started_at TEXT NOT NULL, owner_host TEXT, owner_pid INTEGER, owner_start_time REAL,
    lease_until REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('live', 'pending', 'dead')),
    ended_reason TEXT, payload TEXT, complete INTEGER, turn_count INTEGER, dead_reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL
);
CREATE INDEX calls_by_state ON calls (state, lease_until);
CREATE TABLE turns (
    call_id TEXT NOT NULL, seq INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT NOT NULL, interrupted INTEGER NOT NULL,
    PRIMARY KEY (call_id, seq)
) WITHOUT ROWID;
"""


async def test_a_v1_journal_left_by_an_older_worker_is_migrated_and_delivered(db: Path) -> None:
    pending_body = {
        "attemptNumber": 1,
        "source": "agent",
        "complete": True,
        "endedReason": "caller_left",
        "startedAt": "2026-01-05T10:00:00.000Z",
        "endedAt": "2026-01-05T10:01:00.000Z",
        "turnCount": 1,
        "turns": [
            {
                "seq": 1,
                "role": "assistant",
                "text": "Hello from the old worker.",
                "startedAt": "2026-01-05T10:00:01.000Z",
                "endedAt": "2026-01-05T10:00:02.000Z",
                "interrupted": False,
            }
        ],
        "usage": [],
        "latency": {},
    }
    conn = sqlite3.connect(db)
    conn.executescript(_V1_SCHEMA)
    conn.execute("PRAGMA user_version = 1")
    # A deferred delivery, released by its old owner; and a call whose old process died live.
    conn.execute(
        "INSERT INTO calls VALUES ('job-pending', 'S-old', 1, '2026-01-05T10:00:00+00:00', NULL,"
        " NULL, NULL, 0, 'pending', 'caller_left', ?, 1, 1, NULL, 1, 1767607260.0)",
        (json.dumps(pending_body),),
    )
    conn.execute(
        "INSERT INTO calls VALUES ('job-live', 'S-crashed', 1, '2026-01-05T11:00:00+00:00', ?,"
        " 999999, 1767610000.0, 1767610030.0, 'live', NULL, NULL, NULL, NULL, NULL, 0,"
        " 1767610000.0)",
        (socket.gethostname(),),
    )
    for seq, text in ((1, "Are you there?"), (2, "I am.")):
        conn.execute(
            "INSERT INTO turns VALUES ('job-live', ?, ?, ?, '2026-01-05T11:00:01+00:00',"
            " '2026-01-05T11:00:02+00:00', 0)",
            (seq, "user" if seq == 1 else "assistant", text),
        )
    conn.commit()
    conn.close()

    backend = FakeBackend()
    with Journal(db) as journal:
        outcomes = await recover_pending(journal, backend, deadline=5)
        stats = journal_probe.counts(journal)
    assert sorted(o.status for o in outcomes) == ["delivered", "delivered"]
    sent = {session_id: payload.to_wire() for session_id, payload in backend.accepted}
    assert sent["S-old"]["turns"][0]["text"] == "Hello from the old worker."
    assert (sent["S-old"]["complete"], sent["S-old"]["turnCount"]) == (True, 1)
    assert [t["text"] for t in sent["S-crashed"]["turns"]] == ["Are you there?", "I am."]
    assert (sent["S-crashed"]["complete"], sent["S-crashed"]["endedReason"]) == (False, "crashed")
    assert (stats.live, stats.pending, stats.dead, stats.turns) == (0, 0, 0, 0)


async def test_a_v1_backstop_transcript_marked_incomplete_is_repaired_and_delivered(
    db: Path,
) -> None:
    # A version 1 worker's backstop rebuilt a live call as complete: false with job_terminated,
    # a pair the contract now refuses (DESIGN: complete is false only for crashed/in_progress).
    # The migration must not leave it undeliverable.
    body = {
        "attemptNumber": 1,
        "source": "agent",
        "complete": False,
        "endedReason": "job_terminated",
        "startedAt": "2026-01-05T10:00:00.000Z",
        "endedAt": "2026-01-05T10:01:00.000Z",
        "turnCount": 1,
        "turns": [
            {
                "seq": 1,
                "role": "assistant",
                "text": "Hello from the old backstop.",
                "startedAt": "2026-01-05T10:00:01.000Z",
                "endedAt": "2026-01-05T10:00:02.000Z",
                "interrupted": False,
            }
        ],
        "usage": [],
        "latency": {},
    }
    conn = sqlite3.connect(db)
    conn.executescript(_V1_SCHEMA)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO calls VALUES ('job-old', 'S-old', 1, '2026-01-05T10:00:00+00:00', NULL,"
        " NULL, NULL, 0, 'pending', 'job_terminated', ?, 0, 1, NULL, 1, 1767607260.0)",
        (json.dumps(body),),
    )
    conn.commit()
    conn.close()

    backend = FakeBackend()
    with Journal(db) as journal:
        outcomes = await recover_pending(journal, backend, deadline=5)
        stats = journal_probe.counts(journal)
    assert [o.status for o in outcomes] == ["delivered"]
    (session_id, payload), *_ = backend.accepted
    sent = payload.to_wire()
    assert session_id == "S-old"
    assert (sent["complete"], sent["endedReason"], sent["turnCount"]) == (
        True,
        "job_terminated",
        1,
    )
    assert (stats.pending, stats.dead) == (0, 0)
