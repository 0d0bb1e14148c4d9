"""The transcript's `usage` entries, from the session's model usage.

Rule: LLM tokens, STT audio seconds, TTS characters and audio seconds, per provider + model;
interruption and end-of-turn models are not billed here. A resumed call bills what its earlier
runs spent too (`merge_usage`): added per kind, provider and model, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

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


_N = TypeVar("_N", int, float)


def _add(a: _N | None, b: _N | None) -> _N | None:
    # absent means not measured: a sum of one measured figure is that figure
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def merge_usage(*groups: Iterable[Usage]) -> list[Usage]:
    """The usage of several runs of one call, added per (kind, provider, model) in the order
    they first appear: what a resumed call's final transcript bills."""
    merged: dict[tuple[str, str, str], Usage] = {}
    for group in groups:
        for entry in group:
            key = (entry.kind, entry.provider, entry.model)
            seen = merged.get(key)
            if seen is None:
                merged[key] = Usage.model_validate(entry.model_dump())
                continue
            audio = _add(seen.audio_seconds, entry.audio_seconds)
            merged[key] = seen.model_copy(
                update={
                    "input_tokens": _add(seen.input_tokens, entry.input_tokens),
                    "output_tokens": _add(seen.output_tokens, entry.output_tokens),
                    "audio_seconds": None if audio is None else round(audio, 3),
                    "characters": _add(seen.characters, entry.characters),
                }
            )
    return list(merged.values())
