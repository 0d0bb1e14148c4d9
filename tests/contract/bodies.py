"""Bodies built the way the worker builds them (TurnRecorder from the library's chat items,
usage from the library's usage records, TranscriptPayload as Call.payload does), with input
values written by hand to match the golden files."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from livekit.agents import llm
from livekit.agents.metrics import LLMModelUsage, STTModelUsage, TTSModelUsage

from agent.models import Latency, Percentiles, TranscriptPayload
from agent.transcript import TurnRecorder, usage_from_model_usage


def at(iso: str) -> datetime:
    """A UTC instant from `2026-11-22T10:00:00.000Z`-style text."""
    return datetime.fromisoformat(iso)


def item(
    role: str,
    text: str,
    start: str,
    end: str,
    *,
    interrupted: bool = False,
    metrics: dict[str, Any] | None = None,
) -> llm.ChatMessage:
    started, stopped = at(start).timestamp(), at(end).timestamp()
    return llm.ChatMessage.model_validate(
        {
            "role": role,
            "content": [text],
            "interrupted": interrupted,
            "created_at": started,
            "metrics": {
                "started_speaking_at": started,
                "stopped_speaking_at": stopped,
                **(metrics or {}),
            },
        }
    )


def recorder(started: str, *items: llm.ChatMessage) -> TurnRecorder:
    rec = TurnRecorder(started_at=at(started))
    for chat_item in items:
        rec.add_item(chat_item)
    return rec


def complete_call() -> TranscriptPayload:
    """The call of golden/transcript_complete.json."""
    rec = recorder(
        "2026-11-22T10:00:00.000Z",
        item(
            "assistant",
            "Hello, this is the crisis line role-play. Who am I speaking with?",
            "2026-11-22T10:00:01.100Z",
            "2026-11-22T10:00:04.900Z",
        ),
        item(
            "user",
            "Hi, it's Zoë — I wanted to talk.",
            "2026-11-22T10:00:05.000Z",
            "2026-11-22T10:00:07.125Z",
        ),
        item(
            "assistant",
            "Of course, take your",
            "2026-11-22T10:00:08.000Z",
            "2026-11-22T10:00:09.001Z",
            interrupted=True,
        ),
    )
    usage = usage_from_model_usage(
        [
            LLMModelUsage(
                provider="openai", model="gpt-4o-mini", input_tokens=1200, output_tokens=85
            ),
            STTModelUsage(provider="openai", model="gpt-4o-transcribe", audio_duration=12.5),
            TTSModelUsage(
                provider="openai",
                model="gpt-4o-mini-tts",
                characters_count=84,
                audio_duration=9.25,
            ),
        ]
    )
    return TranscriptPayload(
        attempt_number=2,
        complete=True,
        ended_reason="caller_hangup",
        started_at=rec.started_at,
        ended_at=at("2026-11-22T10:03:05.250Z"),
        turn_count=rec.turn_count,
        turns=rec.turns,
        usage=usage,
        latency=Latency(
            e2e_ms=Percentiles(p50=812.5, p90=1304.2, max=1500.0),
            llm_ttft_ms=Percentiles(p50=350.0, p90=420.5, max=430.0),
            tts_ttfb_ms=Percentiles(p50=210.0, p90=260.0, max=270.0),
            end_of_turn_ms=Percentiles(p50=400.0, p90=510.0, max=520.0),
        ),
    )


def no_show_call() -> TranscriptPayload:
    """golden/transcript_no_show.json: nobody came; zero turns, nothing measured."""
    rec = recorder("2026-11-22T11:00:00.000Z")
    return TranscriptPayload(
        attempt_number=1,
        complete=True,
        ended_reason="no_show",
        started_at=rec.started_at,
        ended_at=at("2026-11-22T11:01:00.000Z"),
        turn_count=rec.turn_count,
        turns=rec.turns,
        usage=usage_from_model_usage([]),
        latency=rec.latency(),
    )


def crashed_call() -> TranscriptPayload:
    """golden/transcript_crashed.json: one greeting measured once (e2e 0.9 s), then recovered."""
    rec = recorder(
        "2026-11-22T12:00:00.000Z",
        item(
            "assistant",
            "Hello?",
            "2026-11-22T12:00:01.000Z",
            "2026-11-22T12:00:02.000Z",
            metrics={"e2e_latency": 0.9},
        ),
    )
    return TranscriptPayload(
        attempt_number=1,
        complete=False,
        ended_reason="crashed",
        started_at=rec.started_at,
        ended_at=at("2026-11-22T12:00:30.500Z"),
        turn_count=rec.turn_count,
        turns=rec.turns,
        usage=[],
        latency=rec.latency(),
    )


GOLDEN_CALLS = {
    "transcript_complete": complete_call,
    "transcript_no_show": no_show_call,
    "transcript_crashed": crashed_call,
}
