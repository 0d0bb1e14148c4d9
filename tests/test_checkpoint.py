"""Checkpoints of a live call (issue 15 part 1; DESIGN.md "Surviving a worker's death" and the
Backend contract): the transcript so far, `complete: false`, `endedReason: "in_progress"`,
coalesced after assistant turns, at most one request in flight and one per CHECKPOINT_SECONDS.

Unit tests drive `Checkpointer` with a fake clock (time moves only when a test says so) and a
fake backend; the body is checked against the hand-written contract schema, not our models. The
session test runs the worker's own `attach_transcript` against the backend stub on loopback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from livekit.agents import llm
from prometheus_client import REGISTRY
from pydantic import SecretStr
from structlog.testing import capture_logs

from agent.backend import BackendUnavailable, DeliveryReceipt, HttpBackend
from agent.call import Call
from agent.call.finish import build_checkpoint
from agent.delivery.checkpoint import Checkpointer
from agent.journal import Journal
from agent.models import JobMetadata, Session, TranscriptPayload
from agent.transcript import TurnRecorder
from tests.contract.oracle import contract_errors
from tests.support.backend_stub import BackendStub, Fault
from tests.support.text_call import text_call

KEY = "internal-service-key-for-tests"
INTERVAL = 5.0
STARTED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


class FakeClock:
    """Monotonic seconds that move only on `advance`; `sleep` wakes when its time has come."""

    def __init__(self) -> None:
        self.now = 100.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for wake, future in list(self._sleepers):
            if wake <= self.now and not future.done():
                future.set_result(None)
        self._sleepers = [(w, f) for w, f in self._sleepers if not f.done()]
        await settle()


async def settle() -> None:
    """Let every ready task run until nothing moves (no real time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


@dataclass
class RecordingBackend:
    """`post_transcript` only: records each body as JSON, can hold a post open or fail it."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    payloads: list[TranscriptPayload] = field(default_factory=list)
    deadlines: list[float] = field(default_factory=list)
    gate: asyncio.Event | None = None
    error: Exception | None = None
    status: str = "delivered"
    in_flight: int = 0
    most_in_flight: int = 0

    async def post_transcript(
        self, session_id: str, payload: TranscriptPayload, *, deadline: float
    ) -> DeliveryReceipt:
        assert session_id == "S1"
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.bodies.append(json.loads(payload.to_json_bytes()))
            self.payloads.append(payload)
            self.deadlines.append(deadline)
            if self.gate is not None:
                await self.gate.wait()
            if self.error is not None:
                raise self.error
            return DeliveryReceipt(status=self.status, attempts=1)  # type: ignore[arg-type]
        finally:
            self.in_flight -= 1


def live_call(backend: RecordingBackend) -> Call:
    call = Call(
        "AJ_1",
        "room-1",
        JobMetadata(scenario_id="default", user_id="u1", session_id="S1"),
        backend=backend,  # type: ignore[arg-type]
        started_at=STARTED,
        session=Session(id="S1", user_id="u1", scenario_id="default", attempt_number=2),
    )
    call.recorder = TurnRecorder(started_at=STARTED)
    return call


def exchange(call: Call, n: int) -> None:
    """Exchange number `n`: a user turn, then the assistant's answer."""
    assert call.recorder is not None
    call.recorder.add_item(llm.ChatMessage(role="user", content=[f"question {n}"]))
    call.recorder.add_item(llm.ChatMessage(role="assistant", content=[f"answer {n}"]))


def checkpointer_for(
    call: Call, backend: RecordingBackend, clock: FakeClock, *, interval: float = INTERVAL
) -> Checkpointer:
    return Checkpointer(
        backend,  # type: ignore[arg-type]
        "S1",
        functools.partial(build_checkpoint, call),
        interval=interval,
        spawn=call.spawn,
        is_live=lambda: call.ended_reason is None,
        clock=clock,
        sleep=clock.sleep,
    )


def checkpoints_counted(result: str) -> float:
    return REGISTRY.get_sample_value("voice_agent_checkpoints_total", {"result": result}) or 0.0


async def test_turns_inside_one_window_make_one_request_now_and_one_at_its_end() -> None:
    backend, clock = RecordingBackend(), FakeClock()
    call = live_call(backend)
    checkpoints = checkpointer_for(call, backend, clock)
    sent_before = checkpoints_counted("sent")

    for n, at in enumerate((0.0, 1.0, 2.0), start=1):  # three assistant turns within 5 s
        await clock.advance(at - (clock.now - 100.0))
        exchange(call, n)
        checkpoints.trigger()
        await settle()
        assert len(backend.bodies) == 1  # the first at once, the others wait for the window

    assert [b["turnCount"] for b in backend.bodies] == [2]
    await clock.advance(2.9)  # t = 4.9: still inside the window
    assert len(backend.bodies) == 1
    await clock.advance(0.1)  # t = 5.0: the window's end
    assert [b["turnCount"] for b in backend.bodies] == [2, 6]
    assert [t["text"] for t in backend.bodies[1]["turns"]] == [
        "question 1",
        "answer 1",
        "question 2",
        "answer 2",
        "question 3",
        "answer 3",
    ]
    await clock.advance(60)  # nothing new: nothing more
    assert len(backend.bodies) == 2
    assert checkpoints_counted("sent") - sent_before == 2
    assert all(0 < d <= INTERVAL for d in backend.deadlines)  # short: superseded by the next


async def test_a_checkpoint_body_is_the_turns_so_far_incomplete_and_in_progress() -> None:
    backend, clock = RecordingBackend(), FakeClock()
    call = live_call(backend)
    checkpoints = checkpointer_for(call, backend, clock)
    exchange(call, 1)
    checkpoints.trigger()
    await settle()

    (body,) = backend.bodies
    assert contract_errors("transcript", body) == []
    # written by hand from DESIGN.md: a checkpoint of a live call
    assert body["complete"] is False
    assert body["endedReason"] == "in_progress"
    assert body["attemptNumber"] == 2
    assert body["source"] == "agent"
    assert body["startedAt"] == "2026-01-02T03:04:05.678Z"
    assert body["endedAt"] >= body["startedAt"]
    assert body["turnCount"] == 2
    assert [(t["seq"], t["role"], t["text"]) for t in body["turns"]] == [
        (1, "user", "question 1"),
        (2, "assistant", "answer 1"),
    ]
    assert call.ended_reason is None  # building a checkpoint does not end the call


async def test_one_request_in_flight_at_most_even_past_the_window() -> None:
    gate = asyncio.Event()
    backend, clock = RecordingBackend(gate=gate), FakeClock()
    call = live_call(backend)
    checkpoints = checkpointer_for(call, backend, clock)
    exchange(call, 1)
    checkpoints.trigger()
    await settle()
    assert backend.in_flight == 1

    await clock.advance(INTERVAL * 3)  # the window is long over, the post still hangs
    exchange(call, 2)
    checkpoints.trigger()
    exchange(call, 3)
    checkpoints.trigger()
    await settle()
    assert len(backend.bodies) == 1 and backend.in_flight == 1

    gate.set()  # the slow post answers: the deferred trigger goes out, with every turn
    await settle()
    assert [b["turnCount"] for b in backend.bodies] == [2, 6]
    assert backend.most_in_flight == 1


async def test_no_new_turn_since_the_last_acknowledged_one_is_not_sent_409_included() -> None:
    backend, clock = RecordingBackend(status="already_delivered"), FakeClock()
    call = live_call(backend)
    checkpoints = checkpointer_for(call, backend, clock)
    exchange(call, 1)
    checkpoints.trigger()
    await settle()
    assert len(backend.bodies) == 1

    await clock.advance(INTERVAL)
    checkpoints.trigger()  # the 409 acknowledged those two turns
    await clock.advance(INTERVAL)
    assert len(backend.bodies) == 1


async def test_zero_seconds_turns_checkpoints_off() -> None:
    backend, clock = RecordingBackend(), FakeClock()
    call = live_call(backend)
    checkpoints = checkpointer_for(call, backend, clock, interval=0)
    exchange(call, 1)
    checkpoints.trigger()
    await clock.advance(60)
    assert backend.bodies == []
    assert not call._tasks  # not even a task


async def test_a_failure_is_one_log_line_and_the_next_turn_checkpoints_again() -> None:
    backend = RecordingBackend(error=BackendUnavailable("connection refused (fake)"))
    clock = FakeClock()
    call = live_call(backend)
    checkpoints = checkpointer_for(call, backend, clock)
    failed_before = checkpoints_counted("failed")
    exchange(call, 1)
    with capture_logs() as logs:
        checkpoints.trigger()
        await settle()
    assert [entry["event"] for entry in logs] == ["checkpoint.failed"]
    (line,) = logs
    assert line["session_id"] == "S1"
    assert line["turn_count"] == 2
    assert line["error_type"] == "BackendUnavailable"
    assert "question 1" not in repr(line) and "answer 1" not in repr(line)
    assert checkpoints_counted("failed") - failed_before == 1

    # the call goes on; not acknowledged, so the next assistant turn sends everything again
    backend.error = RuntimeError("a bug in some backend")
    await clock.advance(INTERVAL)
    exchange(call, 2)
    with capture_logs() as logs:
        checkpoints.trigger()
        await settle()
    assert [(entry["event"], entry["error_type"]) for entry in logs] == [
        ("checkpoint.failed", "RuntimeError")
    ]
    backend.error = None
    await clock.advance(INTERVAL)
    checkpoints.trigger()
    await settle()
    assert [b["turnCount"] for b in backend.bodies] == [2, 4, 4]


async def test_a_failed_checkpoint_through_the_http_client_is_one_warning_line() -> None:
    """The real backend client retries a 503 within the checkpoint's deadline; its own retry
    and give-up lines are debug for a checkpoint, so an outage costs one line per checkpoint,
    not one per attempt (the final transcript's delivery keeps its warnings and error)."""
    async with BackendStub(key=KEY) as stub:
        stub.queue("post_transcript", *[Fault(status=503) for _ in range(50)])
        backend = HttpBackend(stub.url, SecretStr(KEY))
        call = live_call(RecordingBackend())
        checkpoints = Checkpointer(
            backend,
            "S1",
            functools.partial(build_checkpoint, call),
            interval=1.0,
            spawn=call.spawn,
        )
        exchange(call, 1)
        with capture_logs() as logs:
            checkpoints.trigger()
            await call.settle_tasks(timeout=10)
        await backend.aclose()
    assert len(stub.requests_for("post_transcript")) >= 2  # it did retry
    loud = [entry["event"] for entry in logs if entry["log_level"] != "debug"]
    assert loud == ["checkpoint.failed"]
    assert "backend.retrying" in [entry["event"] for entry in logs]


async def test_nothing_is_sent_once_the_call_ended() -> None:
    backend, clock = RecordingBackend(), FakeClock()
    call = live_call(backend)
    checkpoints = checkpointer_for(call, backend, clock)
    exchange(call, 1)
    checkpoints.trigger()
    await settle()
    exchange(call, 2)
    checkpoints.trigger()  # deferred to the window's end ...
    await settle()
    call.end_reason("caller_hangup")  # ... but the call ends first
    await clock.advance(INTERVAL)
    exchange(call, 3)
    checkpoints.trigger()
    await clock.advance(INTERVAL)
    assert [b["turnCount"] for b in backend.bodies] == [2]


async def test_the_call_end_cancels_a_deferred_checkpoint_task() -> None:
    backend, clock = RecordingBackend(), FakeClock()
    call = live_call(backend)
    checkpoints = checkpointer_for(call, backend, clock)
    exchange(call, 1)
    checkpoints.trigger()
    await settle()
    exchange(call, 2)
    checkpoints.trigger()
    await settle()
    assert len(call._tasks) == 1  # the checkpoint task, owned by the call, waiting
    await call.cancel_tasks()  # what `finish` does first
    assert not call._tasks
    await clock.advance(INTERVAL * 2)
    assert [b["turnCount"] for b in backend.bodies] == [2]


def journal_snapshot(journal: Journal) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(journal.path)) as db:
        calls = db.execute(
            "SELECT call_id, state, ended_reason, payload, complete, turn_count, attempts "
            "FROM calls ORDER BY call_id"
        ).fetchall()
        turns = db.execute("SELECT call_id, seq, text FROM turns ORDER BY call_id, seq").fetchall()
    return [*calls, *turns]


async def test_session_checkpoints_reach_the_backend_and_never_the_journal(
    tmp_path: Path,
) -> None:
    """The worker's own wiring (`attach_transcript`) on a real text AgentSession: after the
    reply, a checkpoint with the turns so far is stored by the backend stub (which validates it
    with the hand-written schema and checks its idempotency key); the journal is as the turns
    left it; the final transcript replaces the checkpoint and nothing is posted after it."""
    # a short window so the test does not wait long for the deferred checkpoint
    async with text_call(tmp_path, reply="I lost my job.", checkpoint_seconds=0.05) as tc:
        await tc.greet_then_say("What's on your mind?")

        async def stored_turns() -> int:
            while True:
                best = tc.stub.best_transcript("S1")
                if best is not None and best.body["turnCount"] == 3:
                    return 3
                await asyncio.sleep(0.01)

        await asyncio.wait_for(stored_turns(), 10)
        best = tc.stub.best_transcript("S1")
        assert best is not None
        assert best.body["complete"] is False and best.body["endedReason"] == "in_progress"
        assert [t["seq"] for t in best.body["turns"]] == [1, 2, 3]
        # the journal holds the turns and nothing of the checkpoint: still live, no payload
        assert journal_snapshot(tc.journal) == [
            ("AJ_1", "live", None, None, None, None, 0),
            ("AJ_1", 1, best.body["turns"][0]["text"]),
            ("AJ_1", 2, "What's on your mind?"),
            ("AJ_1", 3, "I lost my job."),
        ]

        await tc.hang_up()
        assert tc.call.outcome is not None and tc.call.outcome.status == "delivered"
        posts = [r.json for r in tc.stub.requests_for("post_transcript")]
        assert posts[-1]["complete"] is True and posts[-1]["turnCount"] == 3
        assert all(p["complete"] is False for p in posts[:-1])
        best = tc.stub.best_transcript("S1")
        assert best is not None and best.body["complete"] is True


async def test_session_without_checkpoints_posts_only_the_final_transcript(
    tmp_path: Path,
) -> None:
    async with text_call(tmp_path, reply="I lost my job.", checkpoint_seconds=0.0) as tc:
        await tc.greet_then_say("What's on your mind?")
        await settle()
        await tc.hang_up()
        assert [r.json["complete"] for r in tc.stub.requests_for("post_transcript")] == [True]
