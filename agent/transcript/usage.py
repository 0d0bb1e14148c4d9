"""The transcript's `usage` entries, from the session's model usage.

Rule: LLM tokens, STT audio seconds, TTS characters and audio seconds, per provider + model;
interruption and end-of-turn models are not billed here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from livekit.agents import AgentSession
from livekit.agents.metrics import LLMModelUsage, STTModelUsage, TTSModelUsage
from livekit.agents.metrics.usage import ModelUsage

from agent.models import Usage


def usage_from_model_usage(model_usage: Iterable[ModelUsage]) -> list[Usage]:
    """The transcript's `usage` entries: LLM tokens, STT audio seconds, TTS characters and audio
    seconds, per provider + model (interruption and end-of-turn models are not billed here)."""
    result: list[Usage] = []
    for entry in model_usage:
        if isinstance(entry, LLMModelUsage):
            result.append(
                Usage(
                    kind="llm",
                    provider=entry.provider,
                    model=entry.model,
                    input_tokens=entry.input_tokens,
                    output_tokens=entry.output_tokens,
                )
            )
        elif isinstance(entry, STTModelUsage):
            result.append(
                Usage(
                    kind="stt",
                    provider=entry.provider,
                    model=entry.model,
                    audio_seconds=round(entry.audio_duration, 3),
                    input_tokens=entry.input_tokens or None,
                    output_tokens=entry.output_tokens or None,
                )
            )
        elif isinstance(entry, TTSModelUsage):
            result.append(
                Usage(
                    kind="tts",
                    provider=entry.provider,
                    model=entry.model,
                    characters=entry.characters_count,
                    audio_seconds=round(entry.audio_duration, 3),
                    input_tokens=entry.input_tokens or None,
                    output_tokens=entry.output_tokens or None,
                )
            )
    return result


def usage_from_session(session: AgentSession[Any]) -> list[Usage]:
    """Usage so far; still valid in `on_session_end`, after the session closed."""
    return usage_from_model_usage(session.usage.model_usage)
