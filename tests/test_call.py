"""agent.call's state and ending, and the job's end: ended reasons, hang-up, max duration, and
`on_session_end` for jobs that never started a session."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest
from livekit.agents import AgentSession, JobContext
from livekit.agents.voice.events import CloseEvent, CloseReason
from structlog.testing import capture_logs

from agent import worker
from agent.call import CALL_KEY, Call
from agent.call.ending import end_at_max_duration, hang_up
from agent.journal import Journal
from agent.models import JobMetadata
from agent.persona import PersonaAgent
from agent.pipeline import load_vad
from agent.prompts import load_prompt, load_scenario
from agent.transcript import TranscriptPublisher
from agent.worker import PROCESS_KEY, ProcessState
from tests.support.fake_job import FakeEndingJobContext
from tests.support.fakes import CaptureAudioOutput, FakeLLM, FakeTTS
from tests.support.settings import make_settings

META = JobMetadata(scenario_id="default", user_id="u1")


def ending_ctx(tmp_path: Path, *, connected: bool = True) -> FakeEndingJobContext:
    ctx = FakeEndingJobContext()
    ctx.room.connected = connected
    ctx.proc.userdata[PROCESS_KEY] = ProcessState(
        settings=make_settings(AGENT_DATA_DIR=str(tmp_path)),
        vad=load_vad(make_settings()),
        journal=Journal.in_dir(tmp_path),
    )
    return ctx


@pytest.mark.parametrize(
    ("reason", "connected", "expected"),
    [
        (CloseReason.PARTICIPANT_DISCONNECTED, True, "caller_left"),
        (CloseReason.ERROR, True, "agent_error"),
        (CloseReason.JOB_SHUTDOWN, True, "job_terminated"),
        (CloseReason.JOB_SHUTDOWN, False, "room_closed"),
    ],
)
def test_the_session_close_reason_maps_to_an_ended_reason(
    reason: CloseReason, connected: bool, expected: str
) -> None:
    shutdowns: list[str] = []
    call = Call("AJ_1", "room", META, shutdown=shutdowns.append, room_connected=lambda: connected)
    call.on_session_close(CloseEvent(reason=reason))
    assert call.ended_reason == expected
    assert shutdowns == [f"session_closed:{reason.value}"]  # the job ends with the session


def test_the_first_ended_reason_wins() -> None:
    call = Call("AJ_1", "room", META)
    call.end_reason("caller_hangup")
    call.on_session_close(CloseEvent(reason=CloseReason.JOB_SHUTDOWN))
    assert call.ended_reason == "caller_hangup"


async def test_on_session_end_without_any_call_logs_and_returns(tmp_path: Path) -> None:
    ctx = ending_ctx(tmp_path)
    with capture_logs() as logs:
        await worker.on_session_end(cast(JobContext, ctx))
    assert [entry["event"] for entry in logs] == ["call.ended_without_session"]


async def test_on_session_end_after_the_apology_path_delivers_nothing(tmp_path: Path) -> None:
    ctx = ending_ctx(tmp_path)
    call = Call("AJ_1", "room", META)
    call.end_reason("backend_unavailable")
    ctx.proc.userdata[CALL_KEY] = call
    with capture_logs() as logs:
        await worker.on_session_end(cast(JobContext, ctx))
    [ended] = [entry for entry in logs if entry["event"] == "call.ended"]
    assert ended["ended_reason"] == "backend_unavailable" and ended["delivery"] == "none"
    assert ended["turn_count"] == 0


async def test_on_session_end_names_the_reason_when_nothing_set_one(tmp_path: Path) -> None:
    ctx = ending_ctx(tmp_path, connected=False)
    call = Call.for_job(cast(JobContext, ctx), META, backend=None, journal=None)
    ctx.proc.userdata[CALL_KEY] = call
    await worker.on_session_end(cast(JobContext, ctx))
    assert call.ended_reason == "room_closed"


class RecordingSink:
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    async def __call__(self, payload: bytes, *, reliable: bool, topic: str) -> None:
        self.packets.append(payload)


async def test_hang_up_ends_the_job_and_end_follows_from_on_session_end(tmp_path: Path) -> None:
    ctx = ending_ctx(tmp_path)
    call = Call.for_job(cast(JobContext, ctx), META, backend=None, journal=None)
    sink = RecordingSink()
    call.publisher = TranscriptPublisher(sink, session_id="S1")
    ctx.proc.userdata[CALL_KEY] = call
    await hang_up(call, "caller-1")
    assert call.ended_reason == "caller_hangup"
    assert ctx.shutdown_reasons == ["caller_hangup"]
    assert sink.packets == []  # nothing before the session closed
    await worker.on_session_end(cast(JobContext, ctx))  # the room is still connected
    assert len(sink.packets) == 1 and b'"type":"end"' in sink.packets[-1]


async def test_max_duration_says_the_closing_line_then_ends(tmp_path: Path) -> None:
    ctx = ending_ctx(tmp_path)
    call = Call.for_job(cast(JobContext, ctx), META, backend=None, journal=None)
    tts = FakeTTS()
    session: AgentSession[None] = AgentSession(
        llm=FakeLLM("ok"), tts=tts, turn_handling={"turn_detection": None}
    )
    session.output.audio = CaptureAudioOutput(realtime=False)
    call.agent_session = session
    await session.start(PersonaAgent(load_scenario("default")))
    try:
        await asyncio.wait_for(end_at_max_duration(call, 0.2), 15)
    finally:
        await session.aclose()
    assert call.ended_reason == "max_duration"
    assert ctx.shutdown_reasons == ["max_duration"]
    assert " ".join(tts.inputs).endswith(load_prompt("closing"))
