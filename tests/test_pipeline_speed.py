"""The voice pipeline's latency choices (issue 11): streaming (realtime) STT by default with the
batch path still available, and preemptive generation configurable. Expected values are the
issue's and the README's, written by hand."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agent.pipeline import build_session, build_stt
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
