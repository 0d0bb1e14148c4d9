"""Session layer for agent/transcript/: a real AgentSession with the TurnRecorder attached.

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
from livekit.agents.voice.transcription import TranscriptSynchronizer

from agent.models import TRANSCRIPT_TOPIC, Scenario, Turn
from agent.persona import PersonaAgent
from agent.pipeline import load_vad
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
from tests.support.settings import make_settings

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
    vad = load_vad(make_settings())
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


# --------------------------------------------------------------------------- the greeting


GREETING = "Hello there, thank you for calling the clinic. How can I help you today?"


class WordsOutput(CaptureTextOutput):
    """Sets `enough` once the text released so far holds `words` words."""

    def __init__(self, words: int) -> None:
        super().__init__()
        self.enough = asyncio.Event()
        self._words = words

    async def capture_text(self, text: str) -> None:
        await super().capture_text(text)
        if len(self.pending.split()) >= self._words:
            self.enough.set()


@dataclass
class GreetingCall:
    session: AgentSession[None]
    audio_out: CaptureAudioOutput
    text_out: WordsOutput
    recorder: TurnRecorder


async def start_greeting_call() -> GreetingCall:
    """Audio out as in a room: RoomIO puts a TranscriptSynchronizer in front of the track, so an
    interrupted speech's text is what the synchronizer released (what was played)."""
    session: AgentSession[None] = AgentSession(
        llm=FakeLLM(echo_reply),
        tts=FakeTTS(sec_per_char=0.06, max_duration=10.0),
        vad=None,
        turn_handling={"turn_detection": None},
    )
    audio_out, text_out = CaptureAudioOutput(), WordsOutput(3)
    synchronizer = TranscriptSynchronizer(
        next_in_chain_audio=audio_out, next_in_chain_text=text_out
    )
    session.output.audio = synchronizer.audio_output
    session.output.transcription = synchronizer.text_output
    recorder = TurnRecorder()
    recorder.attach(session)
    scenario = Scenario(id="s1", title="T", prompt="You are Alex.", greeting=GREETING)
    await session.start(PersonaAgent(scenario))
    return GreetingCall(session, audio_out, text_out, recorder)


async def end_greeting_call(call: GreetingCall) -> None:
    await call.session.aclose()
    await call.audio_out.aclose()


async def type_over(session: AgentSession[None], text: str) -> None:
    # what the library's default lk.chat handler does with a caller's typed message
    await session.interrupt()
    session.generate_reply(user_input=text)


async def test_a_greeting_cut_in_its_first_word_is_still_an_interrupted_turn() -> None:
    # Issue 10 section 6: the caller heard the greeting start, then cut in. The library adds no
    # item when the synchronizer had not released a whole word yet, so the greeting vanished
    # from the transcript; DESIGN: only a reply cut before its first audio frame has no turn.
    call = await start_greeting_call()
    replied = asyncio.Event()

    def on_item(event: Any) -> None:
        item = event.item
        if getattr(item, "role", None) == "assistant" and not item.interrupted:
            replied.set()

    call.session.on("conversation_item_added", on_item)
    try:
        await asyncio.wait_for(call.audio_out.first_frame.wait(), 10)  # it starts playing
        await type_over(call.session, "Sorry, who is this?")
        await asyncio.wait_for(replied.wait(), 10)
    finally:
        await end_greeting_call(call)

    turns = call.recorder.turns
    assert [(t.seq, t.role) for t in turns] == [(1, "assistant"), (2, "user"), (3, "assistant")]
    greeting_turn = turns[0]
    assert greeting_turn.interrupted
    assert greeting_turn.text and GREETING.startswith(greeting_turn.text)
    assert greeting_turn.text != GREETING  # what was played, not the whole line
    assert greeting_turn.started_at <= greeting_turn.ended_at <= turns[1].ended_at
    assert turns[1].text == "Sorry, who is this?" and not turns[2].interrupted
    assert call.audio_out.segments[0].interrupted


async def test_a_greeting_cut_after_some_words_is_one_turn_with_the_words_played() -> None:
    call = await start_greeting_call()
    try:
        await asyncio.wait_for(call.audio_out.first_frame.wait(), 10)
        await asyncio.wait_for(call.text_out.enough.wait(), 10)  # some words were played
        await call.session.interrupt()
    finally:
        await end_greeting_call(call)

    # the library's own item (a word was released): one interrupted turn, nothing added twice
    turns = call.recorder.turns
    assert [(t.role, t.interrupted) for t in turns] == [("assistant", True)]
    assert turns[0].text and GREETING.startswith(turns[0].text) and turns[0].text != GREETING
