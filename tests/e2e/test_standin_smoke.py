"""Smoke tests of the e2e harness itself, without the project's worker: the stand-in, the caller
and the namespace, with a small real-AgentServer worker (tests/e2e/tone_agent.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest
from livekit import api
from livekit.protocol import agent

from tests.e2e import tone_agent
from tests.e2e.conftest import Callers
from tests.e2e.harness import ManagedProcess, ProcessGroup, free_port
from tests.e2e.standin import StandIn

pytestmark = pytest.mark.e2e

WAV = Path(__file__).resolve().parents[1] / "audio" / "hello_48k.wav"
AGENT_NAME = "tone-agent-e2e"
TEST_BUDGET = 60.0  # seconds per test, on 2 cores


async def start_tone_worker(processes: ProcessGroup, standin: StandIn) -> ManagedProcess:
    worker = processes.start_module(
        "tests.e2e.tone_agent",
        {
            "LIVEKIT_URL": standin.url,
            "LIVEKIT_API_KEY": standin.api_key,
            "LIVEKIT_API_SECRET": standin.api_secret,
            "LIVEKIT_AGENT_NAME": AGENT_NAME,
            "PORT": str(free_port()),
        },
        "start",
    )
    try:
        await standin.wait_for_worker(AGENT_NAME, timeout=40)
    except TimeoutError:
        pytest.fail(f"the tone worker never registered:\n{worker.log_tail()}")
    return worker


def near(hz: float | None, expected: float, tolerance: float = 15.0) -> bool:
    return hz is not None and abs(hz - expected) <= tolerance


async def test_a_call_through_the_standin_ends_with_room_closed_and_job_termination(
    standin: StandIn, processes: ProcessGroup, callers: Callers
) -> None:
    async with asyncio.timeout(TEST_BUDGET):
        start = time.monotonic()
        worker = await start_tone_worker(processes, standin)
        caller = await callers.join("caller-1", "room-smoke", agent_name=AGENT_NAME)
        metadata = json.dumps({"scenarioId": "smoke-scenario", "userId": "u-1"})
        job_id = await standin.dispatch("room-smoke", metadata, AGENT_NAME)

        # the assignment token is a real HS256 JWT: kind agent, identity agent-<job id>
        claims = api.TokenVerifier(standin.api_key, standin.api_secret).verify(
            standin.jobs[job_id].token
        )
        assert (claims.kind, claims.identity) == ("agent", f"agent-{job_id}")
        assert claims.video is not None and claims.video.room == "room-smoke"

        agent_participant = await caller.wait_for_agent(timeout=20)
        assert agent_participant.identity == f"agent-{job_id}"

        # the greeting: a tone, and its text (carrying the dispatch metadata) on lk.transcription
        greeting_at = await caller.wait_for_audio(timeout=20)
        assert near(caller.dominant_frequency(greeting_at, greeting_at + 1.0), tone_agent.TONE_HZ)
        greeting = await caller.wait_for_text_stream(
            lambda s: s.sender == agent_participant.identity and "smoke-scenario" in s.text,
            timeout=10,
            what="the greeting's lk.transcription",
        )
        assert greeting.text == "Hello, scenario smoke-scenario"
        job_message = await caller.wait_for_message(lambda m: m["type"] == "job", timeout=10)
        assert job_message["metadata"] == metadata

        # the caller speaks; the agent answers after the end of speech
        _, spoke_until = await caller.speak(WAV, timeout=15)
        reply_at = await caller.wait_for_audio(after=spoke_until, timeout=20)
        assert near(caller.dominant_frequency(reply_at, reply_at + 1.0), tone_agent.TONE_HZ)
        await caller.wait_for_message(
            lambda m: m["type"] == "turn" and m["seq"] == 3, timeout=10, what="turn 3"
        )
        turns = [(m["seq"], m["role"], m["text"]) for m in caller.messages("turn")]
        assert turns == [
            (1, "assistant", "Hello, scenario smoke-scenario"),
            (2, "user", tone_agent.HEARD_TEXT),
            (3, "assistant", f"You said: {tone_agent.HEARD_TEXT}"),
        ]  # each sent as two `parts` packets, reassembled by the caller
        assert caller.rejected == []
        assert any(s.text == f"You said: {tone_agent.HEARD_TEXT}" for s in caller.text_streams), (
            caller.text_streams
        )

        # the caller leaves: CLIENT_INITIATED, then the agent-only room closes
        await caller.leave()
        left = await standin.wait_for_event("left", identity="caller-1", timeout=5)
        assert left.detail["reason"] == "CLIENT_INITIATED"
        # ...as the agent saw it: the reason reached the SDK, and RoomIO closed the session
        await worker.wait_for_log("participant_disconnected caller-1 CLIENT_INITIATED", timeout=5)
        await worker.wait_for_log("session closed reason=participant_disconnected", timeout=5)
        leave_sent = await standin.wait_for_event(
            "leave_sent", identity=f"agent-{job_id}", timeout=10
        )
        assert leave_sent.detail["reason"] == "ROOM_CLOSED"
        assert leave_sent.at - left.at >= standin.departure_timeout - 0.1
        termination = await standin.wait_for_termination(job_id, timeout=10)
        assert termination.reason == "agent_left_room"
        await standin.wait_for_job_status(job_id, agent.JobStatus.JS_SUCCESS, timeout=20)

        # exactly one availability request for the whole call: never re-dispatched
        assert [a.job_id for a in standin.availability_answers()] == [job_id]
        assert standin.auth_failures == 0
        print(f"smoke call took {time.monotonic() - start:.1f}s")


async def test_end_call_rpc_then_drain_refuses_jobs_and_terminate_ends_the_last_call(
    standin: StandIn, processes: ProcessGroup, callers: Callers
) -> None:
    async with asyncio.timeout(TEST_BUDGET):
        start = time.monotonic()
        worker = await start_tone_worker(processes, standin)

        # call 1: the caller hangs up with the agent's RPC; the agent leaves the room
        first = await callers.join("caller-1", "room-rpc", agent_name=AGENT_NAME)
        job_1 = await standin.dispatch("room-rpc", "{}", AGENT_NAME)
        await first.wait_for_audio(timeout=20)
        assert await first.end_call(timeout=10) == "ok"
        await first.wait_for_agent_gone(timeout=10)
        left = await standin.wait_for_event("left", identity=f"agent-{job_1}", timeout=5)
        assert left.detail["reason"] == "CLIENT_INITIATED"
        assert (await standin.wait_for_termination(job_1, timeout=5)).reason == "agent_left_room"
        await standin.wait_for_job_status(job_1, agent.JobStatus.JS_SUCCESS, timeout=20)

        # call 2 is live when the worker gets one SIGTERM: it drains, /agent stays up
        second = await callers.join("caller-2", "room-drain", agent_name=AGENT_NAME)
        job_2 = await standin.dispatch("room-drain", "{}", AGENT_NAME)
        await second.wait_for_audio(timeout=20)
        sent_at = time.monotonic()
        worker.signal(signal.SIGTERM)
        await standin.wait_for_worker_status(agent.WorkerStatus.WS_FULL, since=sent_at, timeout=10)
        answer = await standin.request_availability("room-later", agent_name=AGENT_NAME)
        assert not answer.available
        assert worker.alive()

        # terminating the last job ends the drain: the worker exits 0
        await standin.terminate(job_2)
        await second.wait_for_agent_gone(timeout=15)
        assert await worker.wait_exit(timeout=30) == 0
        assert [t.reason for t in standin.terminations if t.job_id == job_2] == ["requested"]
        print(f"rpc + drain took {time.monotonic() - start:.1f}s")
