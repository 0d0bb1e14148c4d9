"""Session layer for agent/transcript.py: a real AgentSession with the TurnRecorder attached.

Text mode with a fake LLM for turns and order; audio mode with a real speech WAV, the real Silero
VAD and a fake streaming STT for interim captions.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit.agents import Agent, AgentSession
from livekit.plugins import silero

from agent.models import TRANSCRIPT_TOPIC, Turn
from agent.transcript import TranscriptPublisher, TurnRecorder, usage_from_session
from tests.support.fakes import (
    CaptureAudioOutput,
    CaptureTextOutput,
    FakeLLM,
    FakeStreamingSTT,
    FakeTTS,
    WavAudioInput,
    echo_reply,
)

HELLO_16K = Path(__file__).resolve().parent / "audio" / "hello_16k.wav"
SESSION_ID = "sess-42"


@dataclass
class CapturingSink:
    packets: list[tuple[bytes, bool, str]] = field(default_factory=list)

    async def __call__(self, payload: bytes, *, reliable: bool, topic: str) -> None:
        self.packets.append((payload, reliable, topic))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(payload) for payload, _, _ in self.packets]


async def test_text_session_turns_get_seq_in_order_and_reach_journal_and_publisher() -> None:
    sink = CapturingSink()
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    journal: list[Turn] = []
    recorder = TurnRecorder(on_turn=journal.append, publisher=publisher)
    session: AgentSession[None] = AgentSession(
        llm=FakeLLM(echo_reply), vad=None, turn_handling={"turn_detection": None}
    )
    recorder.attach(session)
    await session.start(Agent(instructions="You are a caller."))
    try:
        await session.run(user_input="Hello there")
        await session.run(user_input="How are you?")
    finally:
        await session.aclose()
    await publisher.finish(send_end=True)

    expected = [
        (1, "user", "Hello there"),
        (2, "assistant", "You said: Hello there"),
        (3, "user", "How are you?"),
        (4, "assistant", "You said: How are you?"),
    ]
    assert [(t.seq, t.role, t.text) for t in recorder.turns] == expected
    assert journal == recorder.turns
    assert all(t.started_at <= t.ended_at and not t.interrupted for t in journal)
    assert [(m["seq"], m["role"], m["text"]) for m in sink.messages[:-1]] == expected
    assert sink.messages[-1] == {"type": "end", "v": 1, "sessionId": SESSION_ID, "turnCount": 4}
    assert {(reliable, topic) for _, reliable, topic in sink.packets} == {(True, TRANSCRIPT_TOPIC)}
    assert recorder.ended_at is not None and recorder.ended_at >= recorder.started_at
    llm_usage = [u for u in usage_from_session(session) if u.kind == "llm"]
    assert [(u.provider, u.model) for u in llm_usage] == [("fake", "fake-llm")]
    assert (llm_usage[0].output_tokens or 0) > 0


async def test_streaming_stt_interim_transcripts_are_published_before_the_user_turn() -> None:
    vad = silero.VAD.load()
    transcript = "I would like to talk to someone about my week"
    stt = FakeStreamingSTT(transcript, vad=vad, interim_interval=0.3)
    sink = CapturingSink()
    publisher = TranscriptPublisher(sink, session_id=SESSION_ID)
    assistant_spoke = asyncio.Event()

    def on_turn(turn: Turn) -> None:
        if turn.role == "assistant":
            assistant_spoke.set()

    recorder = TurnRecorder(on_turn=on_turn, publisher=publisher)
    session: AgentSession[None] = AgentSession(
        stt=stt,
        llm=FakeLLM("Okay."),
        tts=FakeTTS(),
        vad=vad,
        turn_handling={
            "turn_detection": "vad",
            "interruption": {"mode": "vad"},
            "endpointing": {"min_delay": 0.3},
        },
    )
    session.input.audio = WavAudioInput(HELLO_16K, lead_silence=0.3, tail_silence=3.0)
    session.output.audio = CaptureAudioOutput()
    session.output.transcription = CaptureTextOutput()
    recorder.attach(session)
    await session.start(Agent(instructions="You are a caller."))
    try:
        await asyncio.wait_for(assistant_spoke.wait(), 12)
    finally:
        await session.aclose()
    await publisher.finish(send_end=True)

    assert [(t.seq, t.role, t.text) for t in recorder.turns[:2]] == [
        (1, "user", transcript),
        (2, "assistant", "Okay."),
    ]
    kinds = [m["type"] for m in sink.messages]
    first_turn = kinds.index("turn")
    interims = sink.messages[:first_turn]
    assert len(interims) >= 2 and set(kinds[:first_turn]) == {"interim"}
    assert {m["itemId"] for m in interims} == {"utterance-1"}
    assert all(transcript.startswith(m["text"]) for m in interims)
    assert len(interims[-1]["text"]) > len(interims[0]["text"])  # the caption grows
    assert kinds[-1] == "end"
    user = recorder.turns[0]
    assert user.started_at < user.ended_at  # from the VAD's speaking metrics, not created_at
    assert recorder.latency().e2e_ms is not None
