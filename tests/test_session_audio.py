"""Session layer, audio mode: a real speech WAV through the real Silero VAD and the project's
pipeline (the real openai.STT/LLM/TTS classes) pointed at an OpenAI-compatible stub on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from livekit.agents import AgentSession, llm, utils

from agent.config import Settings
from agent.persona import PersonaAgent, greeting
from agent.pipeline import build_session, load_vad
from agent.prompts import load_scenario
from tests.support.fakes import CaptureAudioOutput, WavAudioInput
from tests.support.openai_stub import OpenAIStub
from tests.support.settings import make_settings

HELLO_16K = Path(__file__).resolve().parent / "audio" / "hello_16k.wav"


def stub_settings(stub: OpenAIStub, **overrides: str) -> Settings:
    return make_settings(OPENAI_API_KEY="sk-stub-key", OPENAI_BASE_URL=stub.base_url, **overrides)


# the STT's requests, in order, beside the TTS's and the LLM's (DESIGN: realtime streams the
# caller's audio over one WebSocket opened when the session starts; batch uploads each turn)
STT_MODES = {
    "realtime": (["speech", "chat", "speech"], "realtime"),
    "batch": (["speech", "transcriptions", "chat", "speech"], "transcriptions"),
}


@pytest.mark.parametrize("stt_mode", sorted(STT_MODES))
async def test_a_full_voice_turn_completes_through_the_real_plugins(stt_mode: str) -> None:
    scenario = load_scenario("default")
    expected_posts, stt_endpoint = STT_MODES[stt_mode]
    async with OpenAIStub() as stub, utils.http_context.open():
        stub.transcript = "Hi, I'm here to listen. What's going on?"
        stub.tts_max_seconds = 1.0
        session: AgentSession[None] = build_session(
            stub_settings(stub, STT_MODE=stt_mode), load_vad(make_settings()), scenario=scenario
        )
        # the greeting plays first; the caller starts talking once it is over
        audio_in = WavAudioInput(HELLO_16K, lead_silence=1.5, tail_silence=6.0)
        audio_out = CaptureAudioOutput()
        session.input.audio = audio_in
        session.output.audio = audio_out
        try:
            await session.start(PersonaAgent(scenario))
            await asyncio.wait_for(_wait_for_reply(session), 25)
        finally:
            await session.aclose()

        history = [
            (m.role, m.text_content)
            for m in session.history.items
            if isinstance(m, llm.ChatMessage)
        ]
        assert history == [
            ("assistant", greeting(scenario)),
            ("user", "Hi, I'm here to listen. What's going on?"),
            ("assistant", "You said: Hi, I'm here to listen. What's going on?"),
        ]
        # consecutive requests to one endpoint collapse: the TTS speaks sentence by sentence
        endpoints = [r.endpoint for r in stub.requests if r.method == "POST"]
        collapsed = [e for i, e in enumerate(endpoints) if i == 0 or endpoints[i - 1] != e]
        assert collapsed == expected_posts
        assert len(stub.requests_to(stt_endpoint)) == 1
        assert all(r.authorization == "Bearer sk-stub-key" for r in stub.requests)
        assert audio_out.total_duration > 1.5 and not any(s.interrupted for s in audio_out.segments)


async def _wait_for_reply(session: AgentSession[None]) -> None:
    added = asyncio.Event()
    session.on("conversation_item_added", lambda _event: added.set())
    while [m.role for m in session.history.messages()][-2:] != ["user", "assistant"]:
        await added.wait()
        added.clear()
