"""Session layer, audio mode: an LLM failure on a preemptive (early) reply. With preemptive
generation on, the reply's LLM request starts on the final transcript, before the caller's turn
has ended; when it fails (HTTP 500 for LLM_MAX_RETRY + 1 attempts) the caller must still hear the
whole llm_error line, after their turn, and their next turn must be answered (DESIGN.md: an LLM
failure gets the apology line, then the call goes on; issue 11).

Real speech (tests/audio/hello_16k.wav) through the real Silero VAD, the worker's own wiring
(`agent.call.session.build_conversation`: the providers are the OpenAI plugins against the stub).
No timed assertions: only which turns happen, in which order, and "cut short or not".
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from typing import Any

import numpy as np
from livekit.agents import Agent, AgentSession, llm, utils

from agent.call import Call
from agent.call.session import build_conversation, open_journal
from agent.journal import Journal
from agent.models import JobMetadata, Session
from agent.pipeline import load_vad
from agent.prompts import load_prompt, load_scenario
from tests.support.fakes import CaptureAudioOutput, CaptureRoom, WavAudioInput, read_wav_mono16
from tests.support.openai_stub import OpenAIStub
from tests.support.settings import make_settings

HELLO_16K = Path(__file__).resolve().parent / "audio" / "hello_16k.wav"
RATE = 16000
TRANSCRIPT = "Hi, I'm here to listen. What's going on?"
APOLOGY = "Sorry, I lost my train of thought for a moment. Could you say that again?"


def write_wav(path: Path, *parts: np.ndarray[Any, np.dtype[np.int16]]) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.concatenate(parts).astype("<i2").tobytes())
    return path


def spoken(session: AgentSession[Call], role: str | None = None) -> list[llm.ChatMessage]:
    """The session's messages with text (the failed reply adds none), of `role` if given."""
    return [
        m
        for m in session.history.items
        if isinstance(m, llm.ChatMessage) and m.text_content and role in (None, m.role)
    ]


async def test_a_failed_preemptive_reply_still_gets_the_whole_apology_then_the_next_turn(
    tmp_path: Path,
) -> None:
    data, rate = read_wav_mono16(HELLO_16K)
    assert rate == RATE
    # a turn, 7 s for the apology (~4.5 s at the stub's 0.06 s per character), a second turn
    wav = write_wav(tmp_path / "two.wav", data, np.zeros(7 * RATE, dtype=np.int16), data)
    scenario = load_scenario("default")
    meta = JobMetadata(scenario_id="default", user_id="u1", session_id="S1")
    call = Call(
        "AJ_1",
        "room-1",
        meta,
        journal=Journal.in_dir(tmp_path),
        scenario=scenario,
        session=Session(id="S1", user_id="u1", scenario_id="default", attempt_number=1),
    )
    await open_journal(call)
    output = CaptureAudioOutput()
    async with OpenAIStub() as stub:
        stub.transcript = TRANSCRIPT
        stub.tts_max_seconds = 6.0
        stub.fail_next_chat(2, status=500)  # LLM_MAX_RETRY + 1 attempts: the first reply fails
        settings = make_settings(
            OPENAI_API_KEY="sk-stub-key",
            OPENAI_BASE_URL=stub.base_url,
            PREEMPTIVE_GENERATION="true",
            LLM_MAX_RETRY="1",
        )
        async with utils.http_context.open():
            session: AgentSession[Call] = build_conversation(
                call, settings, load_vad(settings), CaptureRoom().as_room()
            )
            session.input.audio = WavAudioInput(wav, lead_silence=0.5, tail_silence=30.0)
            session.output.audio = output
            # an assistant message is added once played out (or cut): wait for the second
            answered = asyncio.Event()
            session.on(
                "conversation_item_added",
                lambda _e: answered.set() if len(spoken(session, "assistant")) >= 2 else None,
            )
            try:
                await session.start(Agent(instructions="You listen."))
                await asyncio.wait_for(answered.wait(), 60)  # a generous budget, not a timing
            finally:
                session._opts.session_close_transcript_timeout = 0.0
                await session.aclose()
                await output.aclose()
                await call.cancel_tasks()
        chat = stub.requests_to("chat")

    assert call.journal is not None
    call.journal.close()
    assert load_prompt("llm_error") == APOLOGY
    said = [(m.role, m.text_content, m.interrupted) for m in spoken(session)]
    # the failed reply says nothing; the apology comes after the caller's turn, whole
    assert said == [
        ("user", TRANSCRIPT, False),
        ("assistant", APOLOGY, False),
        ("user", TRANSCRIPT, False),
        ("assistant", f"You said: {TRANSCRIPT}", False),
    ]
    assert [s.interrupted for s in output.segments] == [False, False]
    assert all(s.played == s.duration for s in output.segments)
    # two failed attempts for the first turn, one answered request for the second
    assert [r.fault for r in chat] == ["status:500", "status:500", None]
