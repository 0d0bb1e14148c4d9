"""models.py: camelCase on the wire, ISO-8601 UTC timestamps with milliseconds, the transcript's
invariants and the published JSON Schema."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from agent.models import (
    EndMessage,
    HeldTurn,
    InterimMessage,
    JobMetadata,
    Latency,
    Percentiles,
    TranscriptPayload,
    Turn,
    TurnMessage,
    Usage,
    json_schema_document,
)
from tests.contract.oracle import contract_errors, strict_json

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


@pytest.mark.parametrize("model", [Turn, HeldTurn])
def test_a_time_without_a_timezone_is_refused_naming_its_field(model: type[Turn]) -> None:
    body = {
        "seq": 1,
        "role": "user",
        "text": "x",
        "startedAt": "2026-12-02T18:00:00.000Z",
        "endedAt": "2026-12-02T18:00:01",  # no offset: local time of which machine?
    }
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    [error] = caught.value.errors()
    assert error["loc"] == ("endedAt",) and "timezone" in error["msg"]


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


# ---------------------------------------------------------------- sanitising at the boundary


def delivery_body(payload: TranscriptPayload) -> object:
    """The bytes HttpBackend sends, parsed as a strict JSON parser would (no NaN, valid UTF-8),
    and checked against the contract schema written by hand from DESIGN.md."""
    body = strict_json(payload.to_json_bytes())
    assert contract_errors("transcript", body) == []
    return body


def test_a_lone_surrogate_in_a_turn_is_replaced_and_the_body_still_encodes() -> None:
    odd = Turn(seq=1, role="user", text="caf\ud800e", started_at=T0, ended_at=T0)
    assert odd.text == "caf\ufffde"
    body = delivery_body(payload([odd]))
    assert body["turns"][0]["text"] == "caf\ufffde"  # type: ignore[index]


def test_a_split_surrogate_pair_is_joined_into_its_character() -> None:
    assert Turn(seq=1, role="user", text="\ud83d\ude00!", started_at=T0, ended_at=T0).text == "😀!"


def test_every_wire_text_is_sanitised() -> None:
    message = TurnMessage(
        session_id="S\udc00",
        seq=1,
        role="user",
        text="x\udfff",
        interrupted=False,
        started_at=T0,
        ended_at=T0,
    )
    interim = InterimMessage(item_id="i", text="\ud800")
    usage = Usage(kind="llm", provider="open\udc80ai", model="m")
    for model in (message, interim, usage):
        model.to_json_bytes().decode("utf-8")  # encodes: nothing left to break it
    assert (message.session_id, message.text, interim.text) == ("S\ufffd", "x\ufffd", "\ufffd")
    assert usage.provider == "open\ufffdai"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0])
def test_a_bad_usage_figure_is_dropped_and_the_body_stays_json(bad: float) -> None:
    usage = Usage(kind="stt", provider="openai", model="m", audio_seconds=bad, input_tokens=5)
    assert usage.audio_seconds is None
    body = delivery_body(payload([turn(1)], usage=[usage]))
    assert body["usage"] == [  # type: ignore[index]
        {"kind": "stt", "provider": "openai", "model": "m", "inputTokens": 5}
    ]


def test_a_bad_latency_figure_drops_that_key_only() -> None:
    good = {"p50": 1.0, "p90": 2.0, "max": 3.0}
    # by Python name, as TurnRecorder.latency() fills it
    latency = Latency.model_validate(
        {"e2e_ms": {"p50": math.nan, "p90": 1.0, "max": 1.0}, "llm_ttft_ms": good}
    )
    body = delivery_body(payload([turn(1)], latency=latency))
    assert body["latency"] == {"llmTtftMs": good}  # type: ignore[index]


def test_percentiles_refuse_non_finite_numbers() -> None:
    with pytest.raises(ValidationError):
        Percentiles(p50=math.inf, p90=1.0, max=1.0)


def test_encoding_refuses_nan_that_bypassed_validation() -> None:
    sneaked = Percentiles.model_construct(p50=math.nan, p90=1.0, max=1.0)
    with pytest.raises(ValueError):
        sneaked.to_json_bytes()


def test_an_empty_provider_label_becomes_unknown_and_a_long_one_is_cut() -> None:
    usage = Usage(kind="tts", provider="", model="m" * 1000)
    assert usage.provider == "unknown" and len(usage.model) == 256


def test_a_turn_needs_text() -> None:
    with pytest.raises(ValidationError):
        Turn(seq=1, role="user", text="", started_at=T0, ended_at=T0)


@pytest.mark.parametrize(
    ("complete", "reason", "allowed"),
    [
        (True, "caller_left", True),
        (True, "job_terminated", True),
        (False, "crashed", True),
        (False, "in_progress", True),
        (False, "caller_left", False),
        (False, "job_terminated", False),
        (True, "crashed", False),
        (True, "in_progress", False),
    ],
)
def test_complete_is_false_exactly_for_crashed_and_in_progress(
    complete: bool, reason: str, allowed: bool
) -> None:
    if allowed:
        assert payload([], complete=complete, endedReason=reason).complete is complete
    else:
        with pytest.raises(ValidationError, match="complete"):
            payload([], complete=complete, endedReason=reason)
