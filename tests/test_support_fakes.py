"""tests/support/fakes.py: each fake works with livekit-agents 1.8.9 as documented."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import (
    Agent,
    AgentSession,
    APIConnectOptions,
    APIStatusError,
    RunContext,
    function_tool,
    llm,
    stt,
)
from livekit.agents.vad import VAD
from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent
from livekit.plugins import silero

from tests.support.fakes import (
    CaptureAudioOutput,
    CaptureTextOutput,
    FakeLLM,
    FakeStreamingSTT,
    FakeSTT,
    FakeTTS,
    WavAudioInput,
    echo_reply,
)

ROOT = Path(__file__).resolve().parent.parent
HELLO_16K = ROOT / "tests" / "audio" / "hello_16k.wav"
TRANSCRIPT = "I would like to book a table for two people"


def ctx(text: str) -> llm.ChatContext:
    c = llm.ChatContext.empty()
    c.add_message(role="user", content=text)
    return c


async def test_fake_llm_text_usage_and_calls() -> None:
    fake = FakeLLM(echo_reply, token_delay=0)
    resp = await fake.chat(chat_ctx=ctx("hello there")).collect()
    assert resp.text == "You said: hello there"
    assert resp.usage is not None and resp.usage.completion_tokens == 4
    assert fake.calls[0].user_text == "hello there" and fake.attempts == 1


async def test_fake_llm_failure_injection() -> None:
    fake = FakeLLM("ok", token_delay=0)
    fake.fail_next(1)
    with pytest.raises(APIStatusError):
        await fake.chat(chat_ctx=ctx("x"), conn_options=APIConnectOptions(max_retry=0)).collect()
    assert (await fake.chat(chat_ctx=ctx("x")).collect()).text == "ok"
    fake.fail_next(1)
    retry = APIConnectOptions(max_retry=1, retry_interval=0.05)
    assert (await fake.chat(chat_ctx=ctx("x"), conn_options=retry).collect()).text == "ok"
    assert fake.attempts == 4 and len(fake.calls) == 3


class Booker(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="book")

    @function_tool
    async def book_table(self, context: RunContext[None], people: int) -> str:
        """Book.

        Args:
            people: people
        """
        return f"booked {people}"


async def test_fake_llm_tool_calls_in_a_text_session() -> None:
    def reply(c: llm.ChatContext) -> str | list[llm.FunctionToolCall]:
        if c.items[-1].type == "function_call_output":
            return "Done."
        return [llm.FunctionToolCall(name="book_table", arguments='{"people": 2}', call_id="c1")]

    fake = FakeLLM(reply, token_delay=0)
    async with AgentSession(llm=fake, vad=None, turn_handling={"turn_detection": None}) as s:
        await s.start(Booker())
        result: Any = await s.run(user_input="book")
        result.expect.next_event().is_function_call(name="book_table")
        result.expect.next_event().is_function_call_output(output="booked 2")
        result.expect.next_event().is_message(role="assistant")
    assert fake.calls[0].tool_names == ["book_table"]


async def test_fake_tts_tone() -> None:
    fake = FakeTTS()
    frame = await fake.synthesize("x" * 50).collect()
    assert frame.sample_rate == 24000 and frame.duration == pytest.approx(1.0, abs=0.02)
    samples = np.frombuffer(frame.data, dtype=np.int16).astype(float)
    freq = np.fft.rfftfreq(len(samples), 1 / 24000)[np.argmax(np.abs(np.fft.rfft(samples)))]
    assert freq == pytest.approx(550, abs=5) and 0 < np.abs(samples).max() < 2000
    assert fake.inputs == ["x" * 50]


async def test_fake_streaming_stt_explicit_calls() -> None:
    fake = FakeStreamingSTT()
    stream = fake.stream()
    stream.push_frame(rtc.AudioFrame.create(16000, 1, 160))
    await asyncio.sleep(0.01)
    fake.emit_interim("I would")
    fake.emit_final("I would like")
    events = [await stream.__anext__(), await stream.__anext__()]
    assert [(e.type, e.alternatives[0].text) for e in events] == [
        (stt.SpeechEventType.INTERIM_TRANSCRIPT, "I would"),
        (stt.SpeechEventType.FINAL_TRANSCRIPT, "I would like"),
    ]
    assert stream.audio_duration == pytest.approx(0.01)
    await stream.aclose()
    assert fake.open_streams == []


async def test_capture_audio_output_interrupt() -> None:
    out = CaptureAudioOutput()
    started: list[float] = []
    out.on("playback_started", lambda ev: started.append(ev.created_at))
    for _ in range(50):
        await out.capture_frame(rtc.AudioFrame.create(24000, 1, 480))
    out.flush()
    await asyncio.sleep(0.2)
    out.clear_buffer()
    ev = await out.wait_for_playout()
    assert ev.interrupted and ev.playback_position == pytest.approx(0.2, abs=0.05)
    assert len(started) == 1 and out.segments[0].duration == pytest.approx(1.0)
    await out.capture_frame(rtc.AudioFrame.create(24000, 1, 480))
    out.flush()
    ev = await out.wait_for_playout()
    assert not ev.interrupted and ev.playback_position == pytest.approx(0.02)


Turn = tuple[
    AgentSession[None],
    list[UserInputTranscribedEvent],
    CaptureAudioOutput,
    CaptureTextOutput,
    WavAudioInput,
]


async def run_turn(stt_model: stt.STT[Any], vad: VAD) -> Turn:
    session: AgentSession[None] = AgentSession(
        vad=vad,
        stt=stt_model,
        llm=FakeLLM(echo_reply),
        tts=FakeTTS(max_duration=1.0),
        turn_handling={"turn_detection": "vad", "interruption": {"mode": "vad"}},
    )
    audio_in = WavAudioInput(HELLO_16K, lead_silence=0.3, tail_silence=5.0)
    audio_out, text_out = CaptureAudioOutput(), CaptureTextOutput()
    session.input.audio = audio_in
    session.output.audio = audio_out
    session.output.transcription = text_out
    transcribed: list[UserInputTranscribedEvent] = []
    done = asyncio.Event()
    session.on("user_input_transcribed", transcribed.append)

    @session.on("conversation_item_added")
    def _item(ev: ConversationItemAddedEvent) -> None:
        if isinstance(ev.item, llm.ChatMessage) and ev.item.role == "assistant":
            done.set()

    await session.start(Agent(instructions="x"))
    await asyncio.wait_for(done.wait(), 20)
    await session.aclose()
    return session, transcribed, audio_out, text_out, audio_in


async def test_streaming_stt_driven_by_vad_sends_interims_then_final() -> None:
    vad = silero.VAD.load()
    fake = FakeStreamingSTT(TRANSCRIPT, vad=vad, interim_interval=0.5)
    session, transcribed, audio_out, text_out, _audio_in = await run_turn(fake, vad)
    interims = [e.transcript for e in transcribed if not e.is_final]
    finals = [e.transcript for e in transcribed if e.is_final]
    print("interims", interims, "finals", finals)
    assert len(interims) >= 3 and interims[-1] != interims[0]
    assert all(TRANSCRIPT.startswith(i) for i in interims)
    assert finals == [TRANSCRIPT]
    hist = [
        (m.role, m.text_content) for m in session.history.items if isinstance(m, llm.ChatMessage)
    ]
    assert hist == [("user", TRANSCRIPT), ("assistant", f"You said: {TRANSCRIPT}")]
    assert text_out.segments == [f"You said: {TRANSCRIPT}"]
    assert audio_out.total_duration == pytest.approx(1.0, abs=0.05)
    types = [e.type for e in fake.emitted]
    assert types[0] == stt.SpeechEventType.START_OF_SPEECH
    assert stt.SpeechEventType.RECOGNITION_USAGE in types


async def test_batch_stt_in_an_audio_session() -> None:
    vad = silero.VAD.load()
    fake = FakeSTT(TRANSCRIPT)
    _session, transcribed, audio_out, _, audio_in = await run_turn(fake, vad)
    assert [e.transcript for e in transcribed if e.is_final] == [TRANSCRIPT]
    assert len(fake.recognize_calls) == 1 and fake.recognize_calls[0] > 4.0
    assert audio_in.speech_end_at is not None and audio_out.first_frame_at is not None
    lat = audio_out.first_frame_at - audio_in.speech_end_at
    print("first frame after speech end:", round(lat, 3))
    assert 0 < lat < 1.5


async def test_capture_audio_output_pause_resume() -> None:
    out = CaptureAudioOutput()
    assert out.can_pause
    for _ in range(25):
        await out.capture_frame(rtc.AudioFrame.create(24000, 1, 480))
    out.flush()
    t0 = asyncio.get_running_loop().time()
    await asyncio.sleep(0.1)
    out.pause()
    await asyncio.sleep(0.3)
    assert out.segments[0].position(__import__("time").time()) == pytest.approx(0.1, abs=0.03)
    out.resume()
    ev = await out.wait_for_playout()
    elapsed = asyncio.get_running_loop().time() - t0
    assert not ev.interrupted and ev.playback_position == pytest.approx(0.5)
    assert elapsed == pytest.approx(0.8, abs=0.06)
    # interrupted while paused
    for _ in range(25):
        await out.capture_frame(rtc.AudioFrame.create(24000, 1, 480))
    out.flush()
    await asyncio.sleep(0.1)
    out.pause()
    await asyncio.sleep(0.2)
    out.clear_buffer()
    ev = await out.wait_for_playout()
    assert ev.interrupted and ev.playback_position == pytest.approx(0.1, abs=0.03)
    out.resume()
