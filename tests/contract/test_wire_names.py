"""Every wire name, written by hand from DESIGN.md, against every field of every wire model:
no name may be computed into something the contract does not say (`e2EMs`), and no value on the
wire is ever `null` (optional keys are absent)."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from typing import Any

import pytest

from agent import models
from agent.models import (
    EndMessage,
    InterimMessage,
    JobMetadata,
    Latency,
    Percentiles,
    Scenario,
    Session,
    SessionCreate,
    TranscriptPayload,
    Turn,
    TurnMessage,
    Usage,
    json_schema_document,
)

WIRE_KEYS: dict[str, set[str]] = {
    "JobMetadata": {
        "scenarioId",
        "userId",
        "sessionId",
        "assignmentId",
        "participantIdentity",
        "record",
    },
    "Scenario": {"id", "title", "prompt", "greeting", "voice", "language"},
    "SessionCreate": {"scenarioId", "userId", "assignmentId", "roomName"},
    "Session": {"id", "userId", "scenarioId", "attemptNumber", "assignmentId", "heldTurns"},
    "TranscriptPayload": {
        "attemptNumber",
        "source",
        "complete",
        "endedReason",
        "startedAt",
        "endedAt",
        "turnCount",
        "turns",
        "usage",
        "latency",
    },
    "Turn": {"seq", "role", "text", "startedAt", "endedAt", "interrupted"},
    # The GET's answer: the POST body's keys the worker reads (latency is not read; usage is,
    # to bill a resumed call's earlier runs).
    "HeldTranscript": {
        "attemptNumber",
        "source",
        "complete",
        "endedReason",
        "startedAt",
        "endedAt",
        "turnCount",
        "turns",
        "usage",
    },
    "HeldTurn": {"seq", "role", "text", "startedAt", "endedAt", "interrupted"},
    "HeldUsage": {
        "kind",
        "provider",
        "model",
        "inputTokens",
        "outputTokens",
        "audioSeconds",
        "characters",
    },
    "Usage": {
        "kind",
        "provider",
        "model",
        "inputTokens",
        "outputTokens",
        "audioSeconds",
        "characters",
    },
    "Percentiles": {"p50", "p90", "max"},
    "Latency": {"e2eMs", "llmTtftMs", "ttsTtfbMs", "endOfTurnMs"},
    "TurnMessage": {
        "type",
        "v",
        "sessionId",
        "seq",
        "role",
        "text",
        "interrupted",
        "startedAt",
        "endedAt",
        "part",
        "parts",
    },
    "InterimMessage": {"type", "v", "role", "itemId", "text"},
    "EndMessage": {"type", "v", "sessionId", "turnCount"},
}

T = datetime(2026, 11, 22, 10, 0, 0, 123000, tzinfo=UTC)
P = Percentiles(p50=1.0, p90=2.0, max=3.0)
TURN = Turn(seq=1, role="user", text="hi", started_at=T, ended_at=T, interrupted=True)

# One instance per model with every optional field set, and one with none set.
FULL: dict[str, Any] = {
    "JobMetadata": JobMetadata(
        scenario_id="s",
        user_id="u",
        session_id="x",
        assignment_id="a",
        participant_identity="p",
        record=True,
    ),
    "Scenario": Scenario(id="s", title="t", prompt="p", greeting="g", voice="v", language="en"),
    "SessionCreate": SessionCreate(scenario_id="s", user_id="u", assignment_id="a", room_name="r"),
    "Session": Session(
        id="x", user_id="u", scenario_id="s", attempt_number=1, assignment_id="a", held_turns=0
    ),
    "TranscriptPayload": TranscriptPayload(
        attempt_number=1,
        complete=True,
        ended_reason="caller_left",
        started_at=T,
        ended_at=T,
        turn_count=1,
        turns=[TURN],
        usage=[
            Usage(
                kind="tts",
                provider="openai",
                model="m",
                input_tokens=1,
                output_tokens=2,
                audio_seconds=1.5,
                characters=3,
            )
        ],
        latency=Latency(e2e_ms=P, llm_ttft_ms=P, tts_ttfb_ms=P, end_of_turn_ms=P),
    ),
    "Turn": TURN,
    "Usage": Usage(
        kind="llm",
        provider="p",
        model="m",
        input_tokens=1,
        output_tokens=2,
        audio_seconds=0.5,
        characters=3,
    ),
    "Percentiles": P,
    "Latency": Latency(e2e_ms=P, llm_ttft_ms=P, tts_ttfb_ms=P, end_of_turn_ms=P),
    "TurnMessage": TurnMessage(
        session_id="x",
        seq=1,
        role="user",
        text="hi",
        interrupted=False,
        started_at=T,
        ended_at=T,
        part=1,
        parts=2,
    ),
    "InterimMessage": InterimMessage(item_id="i", text="hi"),
    "EndMessage": EndMessage(session_id="x", turn_count=0),
}
MINIMAL: dict[str, Any] = {
    "JobMetadata": JobMetadata(scenario_id="s", user_id="u"),
    "Scenario": Scenario(id="s", title="t", prompt="p"),
    "SessionCreate": SessionCreate(scenario_id="s", user_id="u", room_name="r"),
    "Session": Session(id="x", user_id="u", scenario_id="s", attempt_number=1),
    "TranscriptPayload": TranscriptPayload(
        attempt_number=1,
        complete=True,
        ended_reason="no_show",
        started_at=T,
        ended_at=T,
        turn_count=0,
        turns=[],
    ),
    "Usage": Usage(kind="stt", provider="p", model="m"),
    "Latency": Latency(),
    "TurnMessage": TurnMessage(
        session_id="x", seq=1, role="user", text="hi", interrupted=False, started_at=T, ended_at=T
    ),
}


def wire_models() -> dict[str, type[models.WireModel]]:
    return {
        name: cls
        for name, cls in inspect.getmembers(models, inspect.isclass)
        if issubclass(cls, models.WireModel)
        and cls not in (models.WireModel, models.SentModel, models.ReceivedModel)
    }


def keys_of(node: Any) -> set[str]:
    return set(node) if isinstance(node, dict) else set()


def test_every_wire_model_is_in_the_hand_written_list() -> None:
    assert set(wire_models()) == set(WIRE_KEYS)


@pytest.mark.parametrize("name", sorted(WIRE_KEYS))
def test_field_wire_names_are_the_documented_ones(name: str) -> None:
    fields = wire_models()[name].model_fields
    assert {field.alias or key for key, field in fields.items()} == WIRE_KEYS[name]


@pytest.mark.parametrize("name", sorted(FULL))
def test_a_full_instance_dumps_exactly_the_documented_keys(name: str) -> None:
    wire = FULL[name].to_wire()
    assert set(wire) == WIRE_KEYS[name]
    if name == "TranscriptPayload":
        assert set(wire["latency"]) == WIRE_KEYS["Latency"]
        assert set(wire["usage"][0]) == WIRE_KEYS["Usage"]
        assert set(wire["turns"][0]) == WIRE_KEYS["Turn"]
        assert set(wire["latency"]["e2eMs"]) == WIRE_KEYS["Percentiles"]


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_no_null_on_the_wire_optional_keys_are_absent(name: str) -> None:
    instance = MINIMAL[name]
    wire = instance.to_wire()
    assert None not in wire.values()
    assert b"null" not in instance.to_json_bytes()


def test_exported_property_names_are_the_documented_ones() -> None:
    defs = json_schema_document()["$defs"]
    for name, keys in WIRE_KEYS.items():
        if name in defs:
            assert set(defs[name]["properties"]) == keys, name
