"""What a resumed call makes of what it finds (DESIGN.md "Backend": a held body is input like any
other; "Surviving a worker's death"): the better of the journal's and the backend's turns, only
the agent's own complete transcript ends the call, a body of another attempt or with times in the
future is a fresh start, a new call reads nothing back, the earlier runs' usage is billed, and
two jobs in one room never both run its call.

Held bodies are written by hand here (the contract's POST shape); the worker's own functions run
the call (tests/test_resume.py's helpers, a text session, the real journal).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from agent.call import CALL_KEY, Call
from agent.journal import Journal
from agent.models import utc_now
from agent.worker import PROCESS_KEY, ProcessState, _start_call, on_session_end
from tests.support import journal_probe
from tests.support.fake_job import FakeEndingJobContext, FakeJob
from tests.support.fakes import CaptureRoom
from tests.support.settings import make_settings
from tests.test_resume import (
    AGENT_SAYS,
    CHECKPOINT_JSON,
    CHECKPOINT_TEXTS,
    GREETING,
    METADATA,
    RESUME_LINE,
    USER_SAYS,
    ResumeBackend,
    dead_local_owner,
    journal_turn,
    start_job,
    talk,
    turn_packets,
)


def held(**changes: Any) -> str:
    body: dict[str, Any] = json.loads(CHECKPOINT_JSON)
    body.update(changes)
    return json.dumps(body)


def five_turn_checkpoint() -> str:
    body: dict[str, Any] = json.loads(CHECKPOINT_JSON)
    more = [("user", "How long ago?"), ("assistant", "Two weeks, maybe three.")]
    for seq, (role, text) in enumerate(more, start=4):
        body["turns"].append(
            {
                "seq": seq,
                "role": role,
                "text": text,
                "startedAt": f"2026-12-02T18:00:{10 + seq * 3}.000Z",
                "endedAt": f"2026-12-02T18:00:{11 + seq * 3}.000Z",
                "interrupted": False,
            }
        )
    body["turnCount"] = 5
    body["usage"] = [
        {"kind": "llm", "provider": "openai", "model": "gpt-4o-mini", "inputTokens": 900},
        {"kind": "stt", "provider": "openai", "model": "gpt-4o-transcribe", "audioSeconds": 8.5},
        {"kind": "realtime", "provider": "x", "model": "y"},  # a kind this worker never bills
    ]
    return json.dumps(body)


async def run_call(backend: ResumeBackend, tmp_path: Path) -> tuple[Call, CaptureRoom]:
    room = CaptureRoom()
    with Journal.in_dir(tmp_path) as journal:
        call, session, _ = await start_job(backend, journal, room, job_id="AJ_new")
        assert session is not None
        await talk(call, session, room)
    return call, room


def fresh_start(room: CaptureRoom) -> bool:
    return turn_packets(room) == [
        (1, "assistant", GREETING),
        (2, "user", USER_SAYS),
        (3, "assistant", AGENT_SAYS),
    ]


async def test_a_held_transcript_of_another_attempt_is_a_fresh_start(tmp_path: Path) -> None:
    backend = ResumeBackend(held=held(attemptNumber=2))  # the session's attempt is 1
    call, room = await run_call(backend, tmp_path)
    assert backend.gets == [("S1", 1)]
    assert call.resumed_from is None and fresh_start(room)


async def test_a_held_transcript_whose_seq_has_a_gap_is_a_fresh_start(tmp_path: Path) -> None:
    body: dict[str, Any] = json.loads(CHECKPOINT_JSON)
    body["turns"][2]["seq"] = 4
    call, room = await run_call(ResumeBackend(held=json.dumps(body)), tmp_path)
    assert call.resumed_from is None and fresh_start(room)


async def test_a_held_transcript_from_the_future_is_a_fresh_start_and_the_call_ends_after_it_starts(
    tmp_path: Path,
) -> None:
    tomorrow = utc_now() + timedelta(days=1)
    stamp = tomorrow.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    backend = ResumeBackend(held=held(startedAt=stamp, endedAt=stamp))
    call, room = await run_call(backend, tmp_path)
    assert call.resumed_from is None and fresh_start(room)
    [sent] = backend.posted
    assert sent.started_at <= sent.ended_at


async def test_the_backends_checkpoint_wins_when_it_holds_more_than_the_journal(
    tmp_path: Path,
) -> None:
    # the dead job journaled two turns here; its checkpoint (five turns) reached the backend
    with Journal.in_dir(tmp_path, owner=dead_local_owner()) as dead:
        dead.open_call("AJ_dead", session_id="S1", attempt_number=1, started_at=utc_now())
        for seq, (role, text) in enumerate(CHECKPOINT_TEXTS[:2], start=1):
            dead.append_turn("AJ_dead", journal_turn(seq, role, text))
    backend = ResumeBackend(held=five_turn_checkpoint())
    room = CaptureRoom()
    with Journal.in_dir(tmp_path) as journal:
        call, session, _ = await start_job(backend, journal, room, job_id="AJ_new")
        assert session is not None
        assert journal.state("AJ_dead") is None  # adopted all the same: never sent as crashed
        await talk(call, session, room)
        assert journal_probe.counts(journal) == journal_probe.Counts(0, 0, 0, 0)
    assert call.resumed_from == "backend"
    assert [seq for seq, _role, _text in turn_packets(room)] == [6, 7, 8]
    [sent] = backend.posted
    assert [t.text for t in sent.turns][3:] == [
        "How long ago?",
        "Two weeks, maybe three.",
        RESUME_LINE,
        USER_SAYS,
        AGENT_SAYS,
    ]


async def test_a_new_call_reads_nothing_back_when_the_session_holds_no_turns(
    tmp_path: Path,
) -> None:
    backend = ResumeBackend(held=None)  # heldTurns: 0
    call, room = await run_call(backend, tmp_path)
    assert backend.gets == []
    assert call.resumed_from is None and fresh_start(room)


async def test_an_older_backend_without_held_turns_is_read_back(tmp_path: Path) -> None:
    backend = ResumeBackend(held=CHECKPOINT_JSON, says_held_turns=False)
    call, _room = await run_call(backend, tmp_path)
    assert backend.gets == [("S1", 1)]
    assert call.resumed_from == "backend"


async def test_a_browsers_complete_copy_is_resumed_not_taken_for_the_end_of_the_call(
    tmp_path: Path,
) -> None:
    backend = ResumeBackend(held=held(source="browser", complete=True, endedReason="tab_closed"))
    call, room = await run_call(backend, tmp_path)
    assert not call.already_ended and call.resumed_from == "backend"
    assert turn_packets(room)[0] == (4, "assistant", RESUME_LINE)


async def test_complete_beside_in_progress_is_resumed_not_taken_for_the_end_of_the_call(
    tmp_path: Path,
) -> None:
    backend = ResumeBackend(held=held(complete=True, endedReason="in_progress"))
    call, room = await run_call(backend, tmp_path)
    assert not call.already_ended and call.resumed_from == "backend"
    assert turn_packets(room)[0] == (4, "assistant", RESUME_LINE)


async def test_a_resumed_calls_transcript_bills_what_the_earlier_run_spent(tmp_path: Path) -> None:
    backend = ResumeBackend(held=five_turn_checkpoint())
    await run_call(backend, tmp_path)
    [sent] = backend.posted
    usage = {(u["kind"], u["provider"], u["model"]): u for u in sent.to_wire()["usage"]}
    # the text session of the test spends nothing of its own: the dead run's figures, kept
    assert usage[("llm", "openai", "gpt-4o-mini")]["inputTokens"] == 900
    assert usage[("stt", "openai", "gpt-4o-transcribe")]["audioSeconds"] == 8.5
    assert {kind for kind, _p, _m in usage} == {"llm", "stt"}


async def test_a_second_job_in_the_same_room_stands_down_without_a_word(tmp_path: Path) -> None:
    # Job A runs the room's call (this process, its lease fresh); LiveKit dispatches job B into
    # the same room, in another job process of the same container.
    backend = ResumeBackend(held=None)
    room_a = CaptureRoom()
    settings = make_settings(AGENT_DATA_DIR=str(tmp_path))
    me = dead_local_owner()
    other_process = me.__class__(me.host, me.boot_id, me.pid + 10_000_000, me.start_ticks)
    with (
        Journal.in_dir(tmp_path) as journal_a,
        Journal.in_dir(tmp_path, owner=other_process) as journal_b,
    ):
        call_a, session_a, _ = await start_job(backend, journal_a, room_a, job_id="AJ_a")
        assert session_a is not None
        ctx = FakeEndingJobContext(job=FakeJob(id="AJ_b", metadata=METADATA.model_dump_json()))
        call_b = Call(
            "AJ_b",
            "room-1",
            METADATA,
            backend=backend,
            journal=journal_b,
            shutdown=ctx.shutdown,
            room_connected=ctx.room.isconnected,
        )
        proc = ProcessState(settings=settings, vad=None, journal=journal_b)  # type: ignore[arg-type]
        ctx.proc.userdata |= {CALL_KEY: call_b, PROCESS_KEY: proc}
        await _start_call(ctx, call_b, proc, METADATA)  # type: ignore[arg-type]
        assert ctx.shutdown_reasons == ["attempt_held_elsewhere"]
        assert call_b.agent_session is None and call_b.recorder is None  # nothing said
        assert journal_b.state("AJ_b") is None  # nothing journaled
        await on_session_end(ctx)  # type: ignore[arg-type]
        assert backend.posted == []  # nothing delivered by B
        await talk(call_a, session_a, room_a)  # A's call goes on and ends as usual
    assert [(p.turn_count, p.complete) for p in backend.posted] == [(3, True)]
