"""The project's call set up for in-process benchmarks the way `agent.worker.entrypoint` does it,
minus the room.

Rule: a benchmark builds the call through the same functions the entrypoint calls
(`agent.call.start.start_in_parallel`, `agent.call.session.open_journal`, `build_conversation`,
`start_conversation`), with fakes injected, so that a change to the wiring cannot leave a bench
measuring another shape; only the LiveKit room is replaced (no WebRTC here: a `CaptureRoom`
for the data channel and `session.output.audio` is a `CaptureAudioOutput`).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, cast

from livekit.agents import AgentSession, JobContext, vad
from livekit.agents.voice import io

from agent.backend import Backend
from agent.call import Call
from agent.call.session import build_conversation, open_journal, start_conversation
from agent.config import Settings
from agent.journal import Journal
from agent.models import JobMetadata, Scenario, Session
from agent.prompts import load_scenario
from bench._common import (
    Providers,
)
from tests.support.fake_job import FakeJob, FakeJobContext, FakeProc, FakeRoomInfo
from tests.support.fakes import (
    CaptureAudioOutput,
    CaptureRoom,
)

# --------------------------------------------------------------------------- the project's call


async def close_session_fast(session: AgentSession[Any]) -> None:
    """Teardown after the measurement. `AgentSession.aclose()` waits up to
    `session_close_transcript_timeout` (the project sets 5 s) for a final user transcript that
    never comes when nobody is mid-utterance; a benchmark does not need to wait for it, so the
    timeout is zeroed first (a private option, touched only here, after the figures are taken)."""
    with contextlib.suppress(Exception):
        session._opts.session_close_transcript_timeout = 0.0
    with contextlib.suppress(Exception):
        await session.aclose()


@dataclass
class BenchJobContext(FakeJobContext):
    """`FakeJobContext` (ids, `connect()` with `connect_delay`, shutdown) plus the room parts the
    transcript wiring reads; there is no real room, so `session.start` gets none."""

    proc: FakeProc = field(default_factory=FakeProc)
    room: CaptureRoom = field(default_factory=CaptureRoom)

    def as_job_context(self) -> JobContext:
        return cast(JobContext, self)


def make_job_context(
    index: int, metadata: JobMetadata | None = None, *, connect_delay: float = 0.0
) -> BenchJobContext:
    raw = json.dumps(metadata.to_wire()) if metadata is not None else ""
    job = FakeJob(id=f"AJ_bench{index}", metadata=raw, room=FakeRoomInfo(name=f"room-{index}"))
    return BenchJobContext(job=job, connect_delay=connect_delay)


@dataclass
class ProjectCall:
    """A call of this project's agent, set up like `entrypoint` after `start_in_parallel`."""

    ctx: BenchJobContext
    call: Call
    session: AgentSession[Call]
    output: CaptureAudioOutput

    async def aclose(self) -> None:
        await self.call.cancel_tasks()
        await close_session_fast(self.session)
        if self.call.publisher is not None:
            await self.call.publisher.finish(send_end=False, timeout=2.0)
        await self.output.aclose()


def new_call(
    ctx: BenchJobContext, metadata: JobMetadata, *, backend: Backend | None, journal: Journal
) -> Call:
    return Call.for_job(ctx.as_job_context(), metadata, backend=backend, journal=journal)


async def start_project_session(
    ctx: BenchJobContext,
    call: Call,
    *,
    scenario: Scenario,
    session_record: Session,
    settings: Settings,
    vad_model: vad.VAD | None,
    providers: Providers,
    audio_input: io.AudioInput | None = None,
    realtime_output: bool = True,
) -> ProjectCall:
    """`entrypoint` from "the scenario and session are known" on, through the same functions:
    `open_journal` (row, lease task), `build_conversation` (providers injected, the transcript
    wiring, the end-of-call handlers), `start_conversation` (the persona, the no-show and
    max-duration timers). Only the room differs: no WebRTC, so the session's audio IO is set
    here and `session.start` gets no room."""
    call.scenario, call.session = scenario, session_record
    await open_journal(call)
    session = build_conversation(
        call,
        settings,
        vad_model,
        ctx.room.as_room(),
        stt_model=providers.stt,
        llm_model=providers.llm,
        tts_model=providers.tts,
    )
    output = CaptureAudioOutput(realtime=realtime_output)
    session.output.audio = output
    if audio_input is not None:
        session.input.audio = audio_input
    await start_conversation(call, session, settings, room=None)
    return ProjectCall(ctx=ctx, call=call, session=session, output=output)


async def start_default_call(
    index: int,
    tag: str,
    *,
    settings: Settings,
    vad_model: vad.VAD | None,
    journal: Journal,
    providers: Providers,
    audio_input: io.AudioInput | None = None,
) -> ProjectCall:
    """A call of the bundled default scenario with session `sess-{tag}` (user `user-{tag}`),
    started by `start_project_session`."""
    metadata = JobMetadata(scenario_id="default", user_id=f"user-{tag}")
    ctx = make_job_context(index, metadata)
    call = new_call(ctx, metadata, backend=None, journal=journal)
    record = Session(
        id=f"sess-{tag}", user_id=metadata.user_id, scenario_id="default", attempt_number=1
    )
    return await start_project_session(
        ctx,
        call,
        scenario=load_scenario("default"),
        session_record=record,
        settings=settings,
        vad_model=vad_model,
        providers=providers,
        audio_input=audio_input,
    )
