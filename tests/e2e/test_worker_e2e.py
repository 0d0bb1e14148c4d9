"""End to end: the project's worker (`python -m agent start`, its own process group) against the
LiveKit stand-in, a caller on the real rtc SDK, the OpenAI stub and the backend stub, all in the
test network namespace (DESIGN.md, "Tests" layer 3).

One worker per test (two for the crash-and-restart scenario). Every wait is bounded, every test
runs under an overall budget, and the fixtures kill every process group (worker first, stand-in
last) at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psutil
import pytest
from livekit.protocol import agent as agentpb

from agent.prompts import load_prompt, load_scenario
from tests.e2e.caller import Caller
from tests.e2e.conftest import Callers
from tests.e2e.harness import ManagedProcess, ProcessGroup, worker_env
from tests.e2e.standin import StandIn
from tests.e2e.stubs import (
    BackendStubProcess,
    OpenAIStubProcess,
    start_backend_stub,
    start_openai_stub,
)

pytestmark = pytest.mark.e2e

AGENT_NAME: Final = "roleplay-e2e"
SERVICE_KEY: Final = "e2e-internal-service-key-0123456789"
HEARD: Final = "I have had a really hard week and I need to talk to someone."
REPLY: Final = f"You said: {HEARD}"  # the OpenAI stub's default reply
WAV: Final = Path(__file__).resolve().parents[1] / "audio" / "hello_48k.wav"
TONE_HZ: Final = 550.0  # the OpenAI stub's TTS carrier
TEST_BUDGET: Final = 90.0  # hard bound per scenario (they aim at < 40 s)
# caller leaves -> job ended: the session waits for a last transcript only while words are in
# flight (agent/close_wait.py), then delivers and disconnects; the stand-in would close the room
# only after 30 s (departure timeout set in the test), so anything under this bound is the
# worker's doing (tests/e2e/test_hangup_e2e.py holds the tight 2 s bound)
LEAVE_TO_END: Final = 9.0
TURN_KEYS: Final = ("seq", "role", "text", "interrupted", "startedAt", "endedAt")


# ------------------------------------------------------------------------------- the stack
@dataclass
class Stack:
    standin: StandIn
    processes: ProcessGroup
    callers: Callers
    openai: OpenAIStubProcess
    backend: BackendStubProcess
    data_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        # Checkpoints off unless a scenario asks: these scenarios count the transcripts the
        # backend accepted (each checkpoint is one) and scenario 4 expects the crashed copy,
        # which a checkpoint with as many turns would outrank. tests/e2e/test_resume_e2e.py
        # turns them on.
        extra = {"CHECKPOINT_SECONDS": "0", **extra}
        return worker_env(
            livekit_url=self.standin.url,
            api_key=self.standin.api_key,
            api_secret=self.standin.api_secret,
            agent_name=AGENT_NAME,
            data_dir=self.data_dir,
            OPENAI_BASE_URL=self.openai.base_url,
            BACKEND_URL=self.backend.url,
            INTERNAL_SERVICE_KEY=SERVICE_KEY,
            NUM_IDLE_PROCESSES="1",
            DELIVERY_DEADLINE="5",
            **extra,
        )

    async def start_worker(self, *, name: str = "worker", **extra: str) -> ManagedProcess:
        """Start the worker and wait until it registered (a new worker id, for a restart)."""
        known = set(self.standin.worker_ids(AGENT_NAME))
        worker = self.processes.start_worker(self.env(**extra), name=name)
        try:
            await self.standin.wait_until(
                lambda: [w for w in self.standin.worker_ids(AGENT_NAME) if w not in known] or None,
                timeout=40,
                what=f"{name} to register",
            )
        except TimeoutError:
            pytest.fail(f"{name} never registered:\n{worker.log_tail()}")
        return worker


@pytest.fixture
async def stack(
    standin: StandIn, processes: ProcessGroup, callers: Callers, tmp_path: Path
) -> AsyncIterator[Stack]:
    openai, backend = await asyncio.gather(
        start_openai_stub(processes, transcript=HEARD),
        start_backend_stub(processes, key=SERVICE_KEY),
    )
    yield Stack(standin, processes, callers, openai, backend, tmp_path / "data")


# ------------------------------------------------------------------------------- helpers
def metadata(**fields: str) -> str:
    return json.dumps({"scenarioId": "default", "userId": "u1", **fields})


def near(hz: float | None, expected: float = TONE_HZ, tolerance: float = 20.0) -> bool:
    return hz is not None and abs(hz - expected) <= tolerance


def turns_of(caller: Caller) -> list[dict[str, Any]]:
    return caller.messages("turn")


def brief(turns: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(t[k] for k in TURN_KEYS) for t in turns]


def assert_seq_continuous(turns: list[dict[str, Any]]) -> None:
    """Every final turn once, in order, seq 1..n without gaps."""
    assert [t["seq"] for t in turns] == list(range(1, len(turns) + 1)), turns


def log_records(proc: ManagedProcess) -> list[dict[str, Any]]:
    """The worker's JSON log records (`start` logs one JSON object per line)."""
    records: list[dict[str, Any]] = []
    for line in proc.log_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def find_records(proc: ManagedProcess, message: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        r
        for r in log_records(proc)
        if r.get("message") == message and all(r.get(k) == v for k, v in fields.items())
    ]


async def wait_for_record(
    proc: ManagedProcess, message: str, *, timeout: float, **fields: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not (found := find_records(proc, message, **fields)):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{proc.name}: no {message!r} record {fields} within {timeout}s:\n"
                + proc.log_tail(40)
            )
        await asyncio.sleep(0.1)
    return found[0]


async def poll(
    fetch: Callable[[], Any], predicate: Callable[[Any], bool], *, timeout: float, what: str
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last: {value}")
        await asyncio.sleep(0.2)


async def accepted_transcripts(
    stack: Stack, session_id: str, *, count: int = 1, timeout: float = 20.0
) -> list[dict[str, Any]]:
    held: list[dict[str, Any]] = await poll(
        lambda: stack.backend.transcripts(session_id),
        lambda held: len(held) >= count,
        timeout=timeout,
        what=f"{count} accepted transcript(s) of {session_id}",
    )
    return held


def job_status_at(standin: StandIn, job_id: str, status: agentpb.JobStatus) -> float | None:
    for record in standin.worker_messages:
        update = record.message.update_job
        if record.kind == "update_job" and update.job_id == job_id and update.status == status:
            return record.at
    return None


@dataclass
class Call:
    caller: Caller
    job_id: str
    session_id: str
    greeting_at: float


async def start_call(
    stack: Stack, room: str, identity: str, job_metadata: str, *, greeting_timeout: float = 30
) -> Call:
    """The caller joins, the job is dispatched, the greeting is heard (after the join) and its
    final turn (seq 1) arrives on the data channel."""
    caller = await stack.callers.join(identity, room, agent_name=AGENT_NAME)
    job_id = await stack.standin.dispatch(room, job_metadata, AGENT_NAME)
    greeting_at = await caller.wait_for_audio(timeout=greeting_timeout)
    first = await caller.wait_for_message(
        lambda m: m["type"] == "turn" and m["seq"] == 1, timeout=15, what="the greeting turn"
    )
    assert near(caller.dominant_frequency(greeting_at, greeting_at + 0.8)), "greeting not a tone"
    assert first["role"] == "assistant"
    assert first["text"] == load_scenario("default").greeting
    return Call(caller, job_id, str(first["sessionId"]), greeting_at)


async def spoken_turn(call: Call, *, reply_seq: int, timeout: float = 25) -> dict[str, Any]:
    """The caller speaks the WAV; the agent's reply is heard after the end of speech and its
    final turn (`reply_seq`) arrives. Returns that turn."""
    _, spoke_until = await call.caller.speak(WAV, timeout=15)
    reply_at = await call.caller.wait_for_audio(after=spoke_until, timeout=timeout)
    assert near(call.caller.dominant_frequency(reply_at, reply_at + 0.8)), "reply not a tone"
    turn: dict[str, Any] = await call.caller.wait_for_message(
        lambda m: m["type"] == "turn" and m["seq"] == reply_seq,
        timeout=timeout,
        what=f"turn {reply_seq}",
    )
    return turn


async def hang_up(call: Call) -> dict[str, Any]:
    """`agent.end_call`; returns the `end` message, which must come after every turn."""
    assert await call.caller.end_call(timeout=10) == "ok"
    end: dict[str, Any] = await call.caller.wait_for_message(
        lambda m: m["type"] == "end", timeout=10, what="the end message"
    )
    return end


def assert_transcript_matches(
    stored: dict[str, Any], turns: list[dict[str, Any]], *, complete: bool, ended_reason: str
) -> None:
    body = stored["transcript"]
    assert stored["source"] == "agent"
    assert (body["complete"], body["endedReason"]) == (complete, ended_reason)
    assert body["turnCount"] == len(turns) == len(body["turns"])
    assert brief(body["turns"]) == brief(turns)


# ------------------------------------------------------------------------------- scenarios
async def test_full_call_greeting_turn_hang_up_and_delivery(stack: Stack) -> None:
    """1. Dispatch with a pre-created session; greeting heard; a spoken turn answered; the caller
    hangs up with the RPC: every turn once, in order, then `end`; the backend holds the same."""
    async with asyncio.timeout(TEST_BUDGET):
        started = time.monotonic()
        await stack.backend.add_session("sess-e2e-1", user_id="u1", scenario_id="default")
        worker = await stack.start_worker()
        call = await start_call(
            stack,
            "room-full",
            "caller-1",
            metadata(sessionId="sess-e2e-1", participantIdentity="caller-1"),
        )
        assert call.session_id == "sess-e2e-1"

        await spoken_turn(call, reply_seq=3)
        end = await hang_up(call)

        turns = turns_of(call.caller)
        assert_seq_continuous(turns)
        assert [(t["role"], t["text"]) for t in turns] == [
            ("assistant", load_scenario("default").greeting),
            ("user", HEARD),
            ("assistant", REPLY),
        ]
        assert all(t["sessionId"] == "sess-e2e-1" for t in turns)
        assert end == {"type": "end", "v": 1, "sessionId": "sess-e2e-1", "turnCount": len(turns)}

        held = await accepted_transcripts(stack, "sess-e2e-1")
        assert len(held) == 1
        assert_transcript_matches(held[0], turns, complete=True, ended_reason="caller_hangup")

        requests = await stack.backend.requests()
        assert requests and all(r["keyOk"] for r in requests), "every request carries the key"
        assert [r["route"] for r in requests if r["route"] != "get_scenario"] == [
            "get_session",  # its answer says `heldTurns: 0`: a new call reads nothing back
            "post_transcript",
        ]  # the pre-created session is fetched, never created
        assert requests[-1]["headers"].get("Idempotency-Key") == held[0]["idempotencyKey"]

        await stack.standin.wait_for_job_status(
            call.job_id, agentpb.JobStatus.JS_SUCCESS, timeout=15
        )
        ended = await wait_for_record(worker, "call.ended", timeout=5)
        assert ended["ended_reason"] == "caller_hangup"
        assert ended["delivery"] == "delivered"
        # the job ran as shipped: uvloop (prewarm's policy), the native Silero VAD
        [started_record] = find_records(worker, "call.started")
        assert started_record["event_loop"] == "uvloop.Loop"
        assert started_record["vad"] == "livekit-local-inference"
        # and without the library's event-loop monitor (`start`'s default: a fifth of a call's CPU)
        assert started_record["loop_block_warn_ms"] is None
        # and its end-of-turn predictions went to the worker's inference process, all answered
        closed = await wait_for_record(worker, "end_of_turn.stream_closed", timeout=10)
        assert closed["where"] == "inference_process"
        assert closed["predictions"] >= 1 and closed["failed"] == 0, closed
        # once the job is over: still every turn exactly once, and nothing after `end`
        assert turns_of(call.caller) == turns
        assert call.caller.messages()[-1] == end
        assert call.caller.rejected == []
        print(f"scenario 1 (full call) took {time.monotonic() - started:.1f}s")


async def test_caller_leaves_the_job_ends_at_once(stack: Stack) -> None:
    """2. The caller simply leaves: the job ends within seconds (not when the room closes) and the
    transcript says `caller_left`."""
    async with asyncio.timeout(TEST_BUDGET):
        started = time.monotonic()
        # the room would close (and so end the job) only after 30 s: what ends it is the worker
        stack.standin.departure_timeout = 30.0
        await stack.start_worker()
        call = await start_call(
            stack, "room-leave", "caller-1", metadata(participantIdentity="caller-1")
        )
        await call.caller.leave()
        left = await stack.standin.wait_for_event("left", identity="caller-1", timeout=5)
        agent_identity = stack.standin.jobs[call.job_id].participant_identity

        agent_left = await stack.standin.wait_for_event("left", identity=agent_identity, timeout=10)
        assert agent_left.detail["reason"] == "CLIENT_INITIATED", "the agent left on its own"
        await stack.standin.wait_for_job_status(
            call.job_id, agentpb.JobStatus.JS_SUCCESS, timeout=15
        )
        ended_at = job_status_at(stack.standin, call.job_id, agentpb.JobStatus.JS_SUCCESS)
        assert ended_at is not None
        assert ended_at - left.at < LEAVE_TO_END, f"job ended {ended_at - left.at:.1f}s after"
        assert agent_left.at - left.at < LEAVE_TO_END
        assert stack.standin.events_of("leave_sent", room="room-leave") == []

        turns = turns_of(call.caller)
        assert_seq_continuous(turns)
        held = await accepted_transcripts(stack, call.session_id)
        assert len(held) == 1
        assert_transcript_matches(held[0], turns, complete=True, ended_reason="caller_left")
        print(
            f"scenario 2 (caller leaves) took {time.monotonic() - started:.1f}s; "
            f"job ended {ended_at - left.at:.1f}s after the leave"
        )


async def test_sigterm_mid_call_drains_then_exits_zero(stack: Stack) -> None:
    """3. One SIGTERM mid-call: the worker refuses new jobs, the call goes on (a turn after the
    signal is answered), ends with a hang-up, is delivered, then the worker exits 0."""
    async with asyncio.timeout(TEST_BUDGET):
        started = time.monotonic()
        worker = await stack.start_worker()
        call = await start_call(
            stack, "room-drain", "caller-1", metadata(participantIdentity="caller-1")
        )

        sent_at = time.monotonic()
        worker.signal(signal.SIGTERM)  # exactly once: a second one makes the library exit at once
        await stack.standin.wait_for_worker_status(
            agentpb.WorkerStatus.WS_FULL, since=sent_at, timeout=10
        )
        answer = await stack.standin.request_availability("room-later", agent_name=AGENT_NAME)
        assert not answer.available, "a draining worker takes no new job"
        assert worker.alive()

        await spoken_turn(call, reply_seq=3)  # the call goes on
        assert worker.alive()
        end = await hang_up(call)
        turns = turns_of(call.caller)
        assert_seq_continuous(turns)
        assert end["turnCount"] == len(turns) == 3

        assert await worker.wait_exit(timeout=30) == 0
        held = await stack.backend.transcripts(call.session_id)  # delivered before the exit
        assert len(held) == 1
        assert_transcript_matches(held[0], turns, complete=True, ended_reason="caller_hangup")
        # one job accepted, the availability request during the drain refused, no other
        assert [a.available for a in stack.standin.availability_answers()] == [True, False]
        print(f"scenario 3 (SIGTERM drain) took {time.monotonic() - started:.1f}s")


async def test_sigkill_then_restart_recovers_the_turns_as_crashed(stack: Stack) -> None:
    """4. The container dies (SIGKILL of the worker's whole process group) after 3 final turns;
    a fresh worker on the same AGENT_DATA_DIR delivers them at start, without any new call:
    complete=false, endedReason crashed."""
    async with asyncio.timeout(TEST_BUDGET):
        started = time.monotonic()
        worker = await stack.start_worker()
        call = await start_call(
            stack, "room-crash", "caller-1", metadata(participantIdentity="caller-1")
        )
        await spoken_turn(call, reply_seq=3)
        turns = turns_of(call.caller)
        assert_seq_continuous(turns)
        assert len(turns) >= 2

        # the container dies: SIGKILL to the worker's process group and every descendant seen
        # (forkserver, idle and job processes); no hook of any process runs
        worker.kill_group()
        assert not worker.alive()
        assert worker.descendants, "the job process was seen"
        for pid, created in worker.descendants.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                if process.create_time() == created:  # not a reused pid: at most a zombie
                    # a killed process with the end-of-turn model's few hundred MB takes a
                    # moment to tear down: give it up to 5 s to become a zombie (or vanish)
                    for _ in range(50):
                        if process.status() == psutil.STATUS_ZOMBIE:
                            break
                        await asyncio.sleep(0.1)
                    assert process.status() == psutil.STATUS_ZOMBIE, f"{pid} survived"
        assert await stack.backend.transcripts(call.session_id) == []

        jobs_before = len(stack.standin.jobs)
        restarted = await stack.start_worker(name="worker-restarted")
        held = await accepted_transcripts(stack, call.session_id, timeout=25)
        assert len(held) == 1
        assert_transcript_matches(held[0], turns, complete=False, ended_reason="crashed")
        assert len(stack.standin.jobs) == jobs_before, "recovered without any new call"
        recovered = await wait_for_record(restarted, "recovery.delivered", timeout=5)
        assert "job_id" not in recovered, "delivered by the main process, at worker start"
        assert restarted.alive()
        print(f"scenario 4 (SIGKILL + restart) took {time.monotonic() - started:.1f}s")


async def test_backend_down_for_the_whole_call_delivered_once_later(stack: Stack) -> None:
    """5. The backend goes down once the session exists and comes back after the call: the next
    job's background recovery delivers the journaled transcript, exactly once (the drain's
    recovery finds nothing more)."""
    async with asyncio.timeout(TEST_BUDGET):
        started = time.monotonic()
        # the shutdown backstop retries within SHUTDOWN_PROCESS_TIMEOUT - 2 s: keep it short
        worker = await stack.start_worker(SHUTDOWN_PROCESS_TIMEOUT="4")
        caller = await stack.callers.join("caller-1", "room-down", agent_name=AGENT_NAME)
        job_id = await stack.standin.dispatch(
            "room-down", metadata(participantIdentity="caller-1"), AGENT_NAME
        )
        sessions = await poll(
            stack.backend.sessions, bool, timeout=30, what="the session to be created"
        )
        session_id = str(sessions[0]["id"])
        await stack.backend.down()

        call = Call(caller, job_id, session_id, await caller.wait_for_audio(timeout=30))
        await caller.wait_for_message(
            lambda m: m["type"] == "turn" and m["seq"] == 1, timeout=15, what="the greeting"
        )
        await hang_up(call)
        turns = turns_of(caller)
        assert_seq_continuous(turns)
        await stack.standin.wait_for_job_status(job_id, agentpb.JobStatus.JS_SUCCESS, timeout=25)
        deferred = await wait_for_record(worker, "delivery.deferred", timeout=5)
        assert deferred["session_id"] == session_id
        assert await stack.backend.requests("post_transcript") == []  # nothing got through

        await stack.backend.up()
        second = await start_call(
            stack, "room-after", "caller-2", metadata(userId="u2", participantIdentity="caller-2")
        )
        held = await accepted_transcripts(stack, session_id, timeout=20)
        assert_transcript_matches(held[0], turns, complete=True, ended_reason="caller_hangup")
        recovered = await wait_for_record(worker, "recovery.delivered", timeout=5)
        assert recovered.get("job_id") == second.job_id, "by the next job, in the background"
        await hang_up(second)
        await accepted_transcripts(stack, second.session_id, timeout=20)

        worker.signal(signal.SIGTERM)  # the drain's recovery must not send it again
        assert await worker.wait_exit(timeout=30) == 0
        assert len(await stack.backend.transcripts(session_id)) == 1
        posts = [
            r
            for r in await stack.backend.requests("post_transcript")
            if r["path"] == f"/api/internal/sessions/{session_id}/transcript"
        ]
        assert len(posts) == 1, f"delivered once, never re-sent: {len(posts)} posts"
        print(f"scenario 5 (backend down) took {time.monotonic() - started:.1f}s")


async def test_malformed_metadata_ends_that_job_and_the_worker_keeps_serving(
    stack: Stack,
) -> None:
    """6. Bad metadata: a clear `job.metadata_invalid` line with the field paths, the job ends
    without connecting; the next job on the same worker works."""
    async with asyncio.timeout(TEST_BUDGET):
        started = time.monotonic()
        worker = await stack.start_worker()
        await stack.callers.join("caller-1", "room-bad", agent_name=AGENT_NAME)
        bad = json.dumps({"scenarioId": "", "userId": 42, "participantIdentity": "caller-1"})
        bad_job = await stack.standin.dispatch("room-bad", bad, AGENT_NAME)

        record = await wait_for_record(worker, "job.metadata_invalid", timeout=30)
        fields = " ".join(record["fields"])
        assert "scenarioId" in fields and "userId" in fields, record
        assert record.get("job_id") == bad_job
        await stack.standin.wait_until(
            lambda: (
                job_status_at(stack.standin, bad_job, agentpb.JobStatus.JS_SUCCESS)
                or job_status_at(stack.standin, bad_job, agentpb.JobStatus.JS_FAILED)
            ),
            timeout=15,
            what="the bad job to end",
        )
        agent_identity = stack.standin.jobs[bad_job].participant_identity
        joined = [e.identity for e in stack.standin.events_of("joined", room="room-bad")]
        assert agent_identity not in joined, "the bad job never connected"
        assert await stack.backend.requests() == [], "nor asked the backend anything"

        call = await start_call(
            stack, "room-good", "caller-2", metadata(participantIdentity="caller-2")
        )
        assert worker.alive()
        assert job_status_at(stack.standin, bad_job, agentpb.JobStatus.JS_SUCCESS) is not None
        await hang_up(call)
        print(f"scenario 6 (bad metadata) took {time.monotonic() - started:.1f}s")


async def test_llm_failure_apology_then_next_turn_answered(stack: Stack) -> None:
    """7. The LLM fails one turn (HTTP 500 for max_retry + 1 requests): the caller hears the
    llm_error line; the next turn's first request stalls past LLM_TIMEOUT, its retry answers."""
    async with asyncio.timeout(TEST_BUDGET):
        started = time.monotonic()
        await stack.start_worker(LLM_TIMEOUT="3", LLM_MAX_RETRY="1")
        call = await start_call(
            stack, "room-llm", "caller-1", metadata(participantIdentity="caller-1")
        )
        await stack.openai.fail_chat(2, status=500)  # LLM_MAX_RETRY + 1 attempts
        await stack.openai.stall_chat(1, seconds=10)  # > LLM_TIMEOUT: a read timeout

        apology = await spoken_turn(call, reply_seq=3)
        assert apology["role"] == "assistant"
        assert apology["text"] == load_prompt("llm_error")
        reply = await spoken_turn(call, reply_seq=5)
        assert (reply["role"], reply["text"]) == ("assistant", REPLY)

        chat = await stack.openai.requests("chat")
        assert [r["fault"] for r in chat] == ["status:500", "status:500", "stall:10.0", None]
        assert chat[-1]["status"] == 200

        await hang_up(call)
        turns = turns_of(call.caller)
        assert_seq_continuous(turns)
        assert [t["role"] for t in turns] == ["assistant", "user", "assistant", "user", "assistant"]
        held = await accepted_transcripts(stack, call.session_id)
        assert_transcript_matches(held[0], turns, complete=True, ended_reason="caller_hangup")
        print(f"scenario 7 (LLM failure) took {time.monotonic() - started:.1f}s")


async def test_backend_down_at_start_the_caller_hears_an_apology_then_the_job_ends(
    stack: Stack,
) -> None:
    """8. The backend is unreachable when the job starts: the caller hears a short apology (not
    silence), nothing is journaled or delivered, and the job ends on its own."""
    async with asyncio.timeout(TEST_BUDGET):
        started = time.monotonic()
        worker = await stack.start_worker()
        await stack.backend.down()
        caller = await stack.callers.join("caller-1", "room-apology", agent_name=AGENT_NAME)
        job_id = await stack.standin.dispatch(
            "room-apology", metadata(participantIdentity="caller-1"), AGENT_NAME
        )
        await wait_for_record(worker, "job.backend_unavailable", timeout=30)
        heard_at = await caller.wait_for_audio(timeout=20)
        assert near(caller.dominant_frequency(heard_at, heard_at + 0.8)), "apology not a tone"
        await stack.standin.wait_until(
            lambda: job_status_at(stack.standin, job_id, agentpb.JobStatus.JS_SUCCESS),
            timeout=30,
            what="the apology job to end",
        )
        ended = await wait_for_record(worker, "call.ended", timeout=10)
        assert (ended["ended_reason"], ended["delivery"]) == ("backend_unavailable", "none")
        assert caller.messages("turn") == []
        await stack.backend.up()
        assert await stack.backend.sessions() == []
        print(f"scenario 8 (apology) took {time.monotonic() - started:.1f}s")


async def test_nobody_joins_the_call_ends_as_no_show_with_a_zero_turn_transcript(
    stack: Stack,
) -> None:
    """9. NO_SHOW_SECONDS pass and nobody joined: the call ends by itself and a zero-turn
    transcript is still delivered with endedReason no_show."""
    async with asyncio.timeout(TEST_BUDGET):
        started = time.monotonic()
        worker = await stack.start_worker(NO_SHOW_SECONDS="3")
        job_id = await stack.standin.dispatch("room-empty", metadata(), AGENT_NAME)
        await stack.standin.wait_until(
            lambda: job_status_at(stack.standin, job_id, agentpb.JobStatus.JS_SUCCESS),
            timeout=40,
            what="the no-show job to end",
        )
        [session] = await stack.backend.sessions()
        [stored] = await accepted_transcripts(stack, session["id"])
        body = stored["transcript"]
        assert (body["endedReason"], body["turnCount"], body["turns"]) == ("no_show", 0, [])
        assert find_records(worker, "call.ended", ended_reason="no_show")
        print(f"scenario 9 (no show) took {time.monotonic() - started:.1f}s")


async def test_max_call_seconds_ends_the_call_with_the_closing_line(stack: Stack) -> None:
    """10. MAX_CALL_SECONDS: the agent says the closing line, the call ends by itself, and the
    transcript says max_duration with the closing line as its last turn."""
    async with asyncio.timeout(TEST_BUDGET):
        started = time.monotonic()
        await stack.start_worker(MAX_CALL_SECONDS="10", DRAIN_TIMEOUT="70")
        call = await start_call(
            stack, "room-long", "caller-1", metadata(participantIdentity="caller-1")
        )
        closing: dict[str, Any] = await call.caller.wait_for_message(
            lambda m: m["type"] == "turn" and m["text"] == load_prompt("closing"),
            timeout=30,
            what="the closing line",
        )
        await stack.standin.wait_until(
            lambda: job_status_at(stack.standin, call.job_id, agentpb.JobStatus.JS_SUCCESS),
            timeout=30,
            what="the job to end",
        )
        [stored] = await accepted_transcripts(stack, call.session_id)
        body = stored["transcript"]
        assert body["endedReason"] == "max_duration" and body["complete"] is True
        assert body["turns"][-1]["text"] == closing["text"]
        assert_seq_continuous(body["turns"])
        print(f"scenario 10 (max duration) took {time.monotonic() - started:.1f}s")
