"""Session layer, audio mode: faster must not mean rude. Real speech (tests/audio/hello_16k.wav,
cut and re-joined here) through the real Silero VAD and the worker's own session
(`agent.pipeline.build_session`, default settings: realtime STT) against the OpenAI stub.

Expectations come from DESIGN.md and issue 11, not from the code: a ~300 ms pause inside an
utterance never ends the turn; a caller talking over the agent interrupts it; a backchannel
shorter than the interruption threshold (0.5 s of speech, the library default we keep) does not;
interim user text reaches the data channel in order, before the final turn and never after it.
No timed assertions: only orders, counts and "cut short or not".
"""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
from livekit.agents import Agent, AgentSession, llm, utils

from agent.pipeline import build_session, load_vad
from agent.transcript import TranscriptPublisher, TurnRecorder
from tests.support.fakes import CaptureAudioOutput, WavAudioInput, read_wav_mono16
from tests.support.openai_stub import OpenAIStub
from tests.support.settings import make_settings

HELLO_16K = Path(__file__).resolve().parent / "audio" / "hello_16k.wav"
RATE = 16000
TRANSCRIPT = "Hi, I'm here to listen. What's going on?"
# ~4.8 s of agent speech at the stub's 0.06 s per character
LONG_REPLY = "Thank you for telling me that, I am listening closely and I am here with you now."


def hello() -> np.ndarray[Any, np.dtype[np.int16]]:
    data, rate = read_wav_mono16(HELLO_16K)
    assert rate == RATE
    return data


def ms(value: int) -> int:
    return value * RATE // 1000


def silence(milliseconds: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.zeros(ms(milliseconds), dtype=np.int16)


def write_wav(path: Path, *parts: np.ndarray[Any, np.dtype[np.int16]]) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.concatenate(parts).astype("<i2").tobytes())
    return path


class Packets:
    """A data sink for the project's publisher: every packet, decoded, in order."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    async def __call__(self, payload: bytes, *, reliable: bool, topic: str) -> None:
        assert reliable and topic == "transcript"
        self.items.append(json.loads(payload))


async def run_call(
    stub: OpenAIStub, wav: Path, *, seconds: float, packets: Packets | None = None
) -> tuple[AgentSession[None], CaptureAudioOutput]:
    """The worker's session (no greeting: a plain Agent) hears `wav` once, then silence."""
    settings = make_settings(OPENAI_API_KEY="sk-stub-key", OPENAI_BASE_URL=stub.base_url)
    session: AgentSession[None] = build_session(settings, load_vad(settings))
    output = CaptureAudioOutput()
    session.input.audio = WavAudioInput(wav, lead_silence=0.5, tail_silence=30.0)
    session.output.audio = output
    publisher = None
    if packets is not None:
        publisher = TranscriptPublisher(packets, session_id="sess-1")
        TurnRecorder(publisher=publisher).attach(session)
    async with utils.http_context.open():
        try:
            await session.start(Agent(instructions="You listen."))
            await asyncio.sleep(seconds)
        finally:
            session._opts.session_close_transcript_timeout = 0.0
            await session.aclose()
            await output.aclose()
            if publisher is not None:
                await publisher.finish(send_end=False, timeout=2.0)
    return session, output


def messages(session: AgentSession[None]) -> list[llm.ChatMessage]:
    return [m for m in session.history.items if isinstance(m, llm.ChatMessage)]


async def test_a_300ms_pause_inside_an_utterance_does_not_end_the_turn(tmp_path: Path) -> None:
    data = hello()
    # "...first words" | 300 ms of silence | "the rest" (cut at a natural gap, 1150 ms)
    wav = write_wav(tmp_path / "pause.wav", data[: ms(1150)], silence(300), data[ms(1180) :])
    async with OpenAIStub() as stub:
        stub.transcript = TRANSCRIPT
        session, _ = await run_call(stub, wav, seconds=9.0)

    roles = [(m.role, m.text_content) for m in messages(session)]
    assert roles == [("user", TRANSCRIPT), ("assistant", f"You said: {TRANSCRIPT}")]
    # one utterance to the STT, one reply asked of the LLM
    completed = [
        e
        for e in stub.realtime_events
        if e["event"]["type"] == "conversation.item.input_audio_transcription.completed"
    ]
    assert len(completed) == 1
    assert len(stub.requests_to("chat")) == 1


async def test_interim_text_reaches_the_data_channel_before_the_final_turn(
    tmp_path: Path,
) -> None:
    wav = write_wav(tmp_path / "hello.wav", hello())
    packets = Packets()
    async with OpenAIStub() as stub:
        stub.transcript = TRANSCRIPT
        await run_call(stub, wav, seconds=9.0, packets=packets)

    kinds = [(p["type"], p.get("role")) for p in packets.items]
    user_turn = kinds.index(("turn", "user"))
    interims = [p for p in packets.items[:user_turn] if p["type"] == "interim"]
    assert interims, "the streaming STT's interim text is published"
    assert all(p["v"] == 1 and p["role"] == "user" for p in interims)
    texts = [p["text"] for p in interims]
    # in order: each caption extends the one before, and all are a prefix of the final text
    assert all(TRANSCRIPT.startswith(t) for t in texts)
    assert texts == sorted(texts, key=len)
    assert len({p["itemId"] for p in interims}) == 1
    # never after the final turn of that utterance
    assert not [p for p in packets.items[user_turn:] if p["type"] == "interim"]
    assert packets.items[user_turn]["text"] == TRANSCRIPT


async def test_talking_over_the_agent_interrupts_it(tmp_path: Path) -> None:
    data = hello()
    # a turn, 1.8 s for the reply to start (it lasts ~4.8 s), then the caller talks over it
    wav = write_wav(tmp_path / "over.wav", data, silence(1800), data)
    async with OpenAIStub(reply=LONG_REPLY) as stub:
        stub.transcript = TRANSCRIPT
        stub.tts_max_seconds = 6.0
        session, output = await run_call(stub, wav, seconds=14.0)

    first_reply = output.segments[0]
    assert first_reply.interrupted, "the caller's speech cut the agent short"
    assert first_reply.played < first_reply.duration - 1.0
    assistant = [m for m in messages(session) if m.role == "assistant"]
    assert assistant[0].interrupted


async def test_a_short_backchannel_does_not_stop_the_agent(tmp_path: Path) -> None:
    data = hello()
    # a turn, then a 280 ms burst of speech (an "mm-hm") while the agent is speaking
    wav = write_wav(tmp_path / "backchannel.wav", data, silence(2000), data[ms(1280) : ms(1560)])
    async with OpenAIStub(reply=LONG_REPLY) as stub:
        stub.transcript = TRANSCRIPT
        stub.tts_max_seconds = 6.0
        session, output = await run_call(stub, wav, seconds=12.0)

    first_reply = output.segments[0]
    assert not first_reply.interrupted
    assert first_reply.played == first_reply.duration
    assistant = [m for m in messages(session) if m.role == "assistant"]
    assert assistant[0].text_content == LONG_REPLY and not assistant[0].interrupted
