"""The voice pipeline's latency choices (issue 11): streaming (realtime) STT by default with the
batch path still available, and preemptive generation configurable. Expected values are the
issue's and the README's, written by hand."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit import rtc
from livekit.agents import utils
from pydantic import ValidationError

from agent.pipeline import build_session, build_stt
from tests.support.openai_stub import OpenAIStub
from tests.support.settings import make_settings


def test_the_default_stt_streams_and_batch_stays_available() -> None:
    realtime = build_stt(make_settings())
    batch = build_stt(make_settings(STT_MODE="batch"))
    assert (realtime.capabilities.streaming, realtime.capabilities.interim_results) == (True, True)
    assert (batch.capabilities.streaming, batch.capabilities.interim_results) == (False, False)
    assert realtime.model == batch.model == "gpt-4o-mini-transcribe"


def test_an_unknown_stt_mode_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError) as caught:
        make_settings(STT_MODE="fast")
    assert caught.value.errors()[0]["loc"] == ("STT_MODE",)


@pytest.mark.parametrize(("value", "enabled"), [(None, True), ("false", False)])
async def test_preemptive_generation_follows_the_setting(value: str | None, enabled: bool) -> None:
    overrides: dict[str, Any] = {} if value is None else {"PREEMPTIVE_GENERATION": value}
    session: Any = build_session(make_settings(**overrides), None)
    assert session.options.preemptive_generation["enabled"] is enabled
    # the end of turn stays the VAD's and interruptions stay VAD-based (polite turn-taking)
    assert session.options.turn_handling["interruption"]["mode"] == "vad"


@pytest.mark.parametrize(
    ("overrides", "preemptive_tts"),
    [
        ({}, True),
        ({"PREEMPTIVE_TTS": "false"}, False),
        # the TTS cannot start early on a reply that does not
        ({"PREEMPTIVE_TTS": "true", "PREEMPTIVE_GENERATION": "false"}, False),
    ],
)
async def test_preemptive_tts_follows_the_setting_with_preemptive_generation(
    overrides: dict[str, Any], preemptive_tts: bool
) -> None:
    session: Any = build_session(make_settings(**overrides), None)
    assert session.options.preemptive_generation["preemptive_tts"] is preemptive_tts


@pytest.mark.parametrize(("value", "silence_ms"), [(None, 350), ("200", 200)])
async def test_the_realtime_stt_asks_the_provider_for_the_configured_silence(
    value: str | None, silence_ms: int
) -> None:
    # the oracle is the session.update the provider (the stub) received over the WebSocket
    overrides: dict[str, Any] = {} if value is None else {"STT_SILENCE_MS": value}
    async with OpenAIStub() as stub, utils.http_context.open():
        model = build_stt(make_settings(OPENAI_BASE_URL=stub.base_url, **overrides))
        stream = model.stream()
        frame = rtc.AudioFrame(b"\0\0" * 480, 48000, 1, 480)
        for _ in range(100):  # bounded: 1 s of silence in 10 ms frames, until the update is in
            stream.push_frame(frame)
            await asyncio.sleep(0.01)
            if any(e["event"].get("type") == "session.update" for e in stub.realtime_events):
                break
        await stream.aclose()
        await model.aclose()
        [update] = [
            e["event"] for e in stub.realtime_events if e["event"]["type"] == "session.update"
        ]
    detection = update["session"]["audio"]["input"]["turn_detection"]
    assert (detection["type"], detection["silence_duration_ms"]) == ("server_vad", silence_ms)


def test_a_provider_silence_under_100_ms_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError) as caught:
        make_settings(STT_SILENCE_MS="50")
    assert caught.value.errors()[0]["loc"] == ("STT_SILENCE_MS",)
