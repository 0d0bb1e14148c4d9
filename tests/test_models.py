"""models.py: camelCase on the wire, ISO-8601 UTC timestamps with milliseconds, the transcript's
invariants and the published JSON Schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from agent.models import (
    EndMessage,
    JobMetadata,
    TranscriptPayload,
    Turn,
    TurnMessage,
    json_schema_document,
)

T0 = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)


def turn(seq: int, role: str = "user") -> Turn:
    return Turn.model_validate(
        {"seq": seq, "role": role, "text": f"t{seq}", "startedAt": T0, "endedAt": T0}
    )


def payload(turns: list[Turn], **extra: object) -> TranscriptPayload:
    return TranscriptPayload.model_validate(
        {
            "attemptNumber": 1,
            "complete": True,
            "endedReason": "caller_left",
            "startedAt": T0,
            "endedAt": T0,
            "turnCount": len(turns),
            "turns": turns,
            **extra,
        }
    )


def test_fields_are_camel_case_on_the_wire() -> None:
    wire = payload([turn(1)]).to_wire()
    assert {"attemptNumber", "endedReason", "startedAt", "turnCount", "source"} <= set(wire)
    assert wire["source"] == "agent"
    assert set(wire["turns"][0]) == {"seq", "role", "text", "startedAt", "endedAt", "interrupted"}


def test_timestamps_are_utc_iso_with_milliseconds() -> None:
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    message = TurnMessage(
        session_id="S",
        seq=1,
        role="user",
        text="x",
        interrupted=False,
        started_at=plus_two,
        ended_at=T0,
    )
    wire = message.to_wire()
    assert wire["startedAt"] == "2026-11-22T10:00:00.123Z" == wire["endedAt"]


def test_turn_count_must_equal_the_number_of_turns() -> None:
    with pytest.raises(ValidationError, match="turnCount"):
        payload([turn(1), turn(2)], turnCount=3)


def test_seq_must_run_from_one_without_gaps() -> None:
    with pytest.raises(ValidationError, match="seq"):
        payload([turn(1), turn(3)])


def test_unknown_ended_reason_is_refused() -> None:
    with pytest.raises(ValidationError, match="endedReason"):
        payload([], endedReason="bored")


def test_job_metadata_ignores_unknown_keys_and_strips_ids() -> None:
    meta = JobMetadata.model_validate({"scenarioId": " s1 ", "userId": "u", "x": 1})
    assert meta.scenario_id == "s1"


def test_end_message_serializes_compactly() -> None:
    raw = EndMessage(session_id="S", turn_count=4).to_json_bytes()
    assert json.loads(raw) == {"type": "end", "v": 1, "sessionId": "S", "turnCount": 4}
    assert b" " not in raw


def test_schema_document_has_a_named_definition_per_wire_model() -> None:
    document = json_schema_document()
    defs = document["$defs"]
    assert {
        "JobMetadata",
        "Scenario",
        "SessionCreate",
        "Session",
        "TranscriptPayload",
        "Turn",
        "TurnMessage",
        "InterimMessage",
        "EndMessage",
        "Usage",
        "Latency",
    } <= set(defs)
    assert "attemptNumber" in defs["TranscriptPayload"]["properties"]
    assert defs["Turn"]["properties"]["startedAt"]["format"] == "date-time"
