"""Broken copies of a valid transcript body, each breaking one rule of DESIGN.md's contract.

Each case is (id, mutate): `mutate` edits a deep copy of a valid body (one with at least two
turns, llm usage with inputTokens, and an e2eMs latency) in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Mutation = Callable[[dict[str, Any]], None]


def _rename(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


BROKEN_TRANSCRIPTS: list[tuple[str, Mutation]] = [
    ("missing turnCount", lambda b: b.pop("turnCount")),
    ("missing usage", lambda b: b.pop("usage")),
    ("missing turn interrupted", lambda b: b["turns"][0].pop("interrupted")),
    ("e2EMs instead of e2eMs", lambda b: _rename(b["latency"], "e2eMs", "e2EMs")),
    ("null inputTokens", lambda b: b["usage"][0].update(inputTokens=None)),
    ("null latency key", lambda b: b["latency"].update(llmTtftMs=None)),
    ("null startedAt", lambda b: b.update(startedAt=None)),
    ("unknown top-level key", lambda b: b.update(notInTheContract=1)),
    ("unknown turn key", lambda b: b["turns"][1].update(speaker="x")),
    ("unknown percentile key", lambda b: b["latency"]["e2eMs"].update(p99=1.0)),
    ("empty turn text", lambda b: b["turns"][0].update(text="")),
    ("turn text over its bound", lambda b: b["turns"][0].update(text="x" * 100_001)),
    ("timestamp without milliseconds", lambda b: b.update(startedAt="2026-11-22T10:00:00Z")),
    ("timestamp with microseconds", lambda b: b.update(endedAt="2026-11-22T10:03:05.250000Z")),
    (
        "non-UTC offset",
        lambda b: b["turns"][0].update(startedAt="2026-11-22T12:00:01.100+02:00"),
    ),
    ("+00:00 instead of Z", lambda b: b.update(startedAt="2026-11-22T10:00:00.000+00:00")),
    ("impossible date", lambda b: b.update(endedAt="2026-13-22T10:00:00.000Z")),
    ("complete false with caller_hangup", lambda b: b.update(complete=False)),
    ("complete true with crashed", lambda b: b.update(endedReason="crashed")),
    ("complete true with in_progress", lambda b: b.update(endedReason="in_progress")),
    ("unknown endedReason", lambda b: b.update(endedReason="bored")),
    ("role system", lambda b: b["turns"][0].update(role="system")),
    ("source browser", lambda b: b.update(source="browser")),
    ("seq 0", lambda b: b["turns"][0].update(seq=0)),
    ("p90 missing", lambda b: b["latency"]["e2eMs"].pop("p90")),
    ("latency number as string", lambda b: b["latency"]["e2eMs"].update(p50="812.5")),
    ("usage kind vad", lambda b: b["usage"][0].update(kind="vad")),
    ("empty provider", lambda b: b["usage"][0].update(provider="")),
    ("attemptNumber 0", lambda b: b.update(attemptNumber=0)),
    ("complete as string", lambda b: b.update(complete="true")),
]

BROKEN_SESSION_CREATES: list[tuple[str, Mutation]] = [
    ("missing roomName", lambda b: b.pop("roomName")),
    ("null assignmentId", lambda b: b.update(assignmentId=None)),
    ("empty userId", lambda b: b.update(userId="")),
    ("id over its bound", lambda b: b.update(scenarioId="s" * 129)),
    ("unknown key", lambda b: b.update(sessionId="x")),
]
