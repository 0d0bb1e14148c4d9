"""`python -m agent schema` (agent.models.json_schema_document) checked with jsonschema, Draft
2020-12 with format checking on, the way a TypeScript backend would use it: against real bodies
from the worker's own delivery code (accepted) and broken copies of them (refused). The
hand-written schema (tests/contract/transcript.schema.json) must agree on every case, so each
broken copy is known to break DESIGN.md's text and not just our exporter."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from livekit.agents.metrics import LLMModelUsage, STTModelUsage, TTSModelUsage

from agent.backend import HttpBackend
from agent.models import SessionCreate, TranscriptPayload, json_schema_document
from agent.transcript import usage_from_model_usage
from tests.contract import bodies
from tests.contract.cases import BROKEN_SESSION_CREATES, BROKEN_TRANSCRIPTS
from tests.contract.conftest import CaptureServer
from tests.contract.oracle import ENDED_REASONS, contract_errors, golden, strict_json

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"

# Keys the worker always sends, per definition, from DESIGN.md (no '?' in the text).
REQUIRED = {
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
    "Usage": {"kind", "provider", "model"},
    "Percentiles": {"p50", "p90", "max"},
    "Latency": set(),
    "SessionCreate": {"scenarioId", "userId", "roomName"},
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
    },
    "InterimMessage": {"type", "v", "role", "itemId", "text"},
    "EndMessage": {"type", "v", "sessionId", "turnCount"},
    # What the worker receives: the keys it cannot do without.
    "JobMetadata": {"scenarioId", "userId"},
    "Scenario": {"id", "title", "prompt"},
    "Session": {"id", "userId", "scenarioId", "attemptNumber"},
    # The held transcript the GET answers: the POST body's shape, from any source.
    "HeldTranscript": {
        "attemptNumber",
        "source",
        "complete",
        "endedReason",
        "startedAt",
        "endedAt",
        "turnCount",
        "turns",
    },
    "HeldTurn": {"seq", "role", "text", "startedAt", "endedAt"},
}
SENT = {
    "TranscriptPayload",
    "Turn",
    "Usage",
    "Percentiles",
    "Latency",
    "SessionCreate",
    "TurnMessage",
    "InterimMessage",
    "EndMessage",
}
RECEIVED = {"JobMetadata", "Scenario", "Session", "HeldTranscript", "HeldTurn"}


def exported(definition: str) -> Draft202012Validator:
    document = json_schema_document()
    Draft202012Validator.check_schema(document)
    return Draft202012Validator(
        {**document, "$ref": f"#/$defs/{definition}"}, format_checker=FormatChecker()
    )


def refusals(definition: str, body: Any) -> list[str]:
    return [error.message for error in exported(definition).iter_errors(body)]


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def odd_call() -> TranscriptPayload:
    """A call whose library data has every oddity the wire must survive: lone surrogates in the
    text, NaN and infinite usage figures, an unmeasured latency."""
    rec = bodies.recorder(
        "2026-11-22T10:00:00.000Z",
        bodies.item(
            "assistant", "Hi \ud83d there", "2026-11-22T10:00:01.000Z", "2026-11-22T10:00:02.000Z"
        ),
        bodies.item("user", "ok \udfff", "2026-11-22T10:00:03.000Z", "2026-11-22T10:00:04.000Z"),
    )
    usage = usage_from_model_usage(
        [
            LLMModelUsage(provider="openai", model="m", input_tokens=3, output_tokens=1),
            STTModelUsage(provider="openai", model="s", audio_duration=math.nan),
            TTSModelUsage(provider="", model="t", characters_count=5, audio_duration=math.inf),
        ]
    )
    return TranscriptPayload(
        attempt_number=1,
        complete=True,
        ended_reason="caller_left",
        started_at=rec.started_at,
        ended_at=bodies.at("2026-11-22T10:00:05.000Z"),
        turn_count=rec.turn_count,
        turns=rec.turns,
        usage=usage,
        latency=rec.latency(),
    )


REAL_CALLS = {**bodies.GOLDEN_CALLS, "odd": odd_call}


async def delivered(client: HttpBackend, capture: CaptureServer, payload: TranscriptPayload) -> Any:
    receipt = await client.post_transcript("sess-1", payload, deadline=10.0)
    assert receipt.status == "delivered"
    return strict_json(capture.last("/transcript").body)


@pytest.fixture
async def real_body(client: HttpBackend, capture: CaptureServer) -> dict[str, Any]:
    body: dict[str, Any] = await delivered(client, capture, bodies.complete_call())
    return body


# --------------------------------------------------------------------------- the document


def test_document_is_valid_draft_2020_12_with_an_id() -> None:
    document = json_schema_document()
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert isinstance(document.get("$id"), str) and document["$id"]
    Draft202012Validator.check_schema(document)


def test_every_key_the_worker_always_sends_is_required() -> None:
    defs = json_schema_document()["$defs"]
    for name, required in REQUIRED.items():
        assert set(defs[name].get("required", [])) == required, name


def test_what_the_worker_sends_is_closed_and_what_it_receives_is_open() -> None:
    defs = json_schema_document()["$defs"]
    for name in SENT:
        assert defs[name].get("additionalProperties") is False, name
    for name in RECEIVED:
        # The worker ignores unknown keys in what it receives (the backend may add fields).
        assert "additionalProperties" not in defs[name], name


def test_no_null_anywhere_in_the_document() -> None:
    document = json_schema_document()
    for node in walk(document):
        assert node is not None
        if isinstance(node, dict):
            assert node.get("type") != "null" and "null" not in (node.get("type") or [])


def test_every_string_is_bounded_or_enumerated() -> None:
    for node in walk(json_schema_document()):
        if isinstance(node, dict) and node.get("type") == "string":
            closed = "enum" in node or "const" in node or "pattern" in node
            assert closed or (node.get("minLength", 0) >= 1 and "maxLength" in node), node


def test_timestamps_are_utc_with_milliseconds_by_pattern() -> None:
    defs = json_schema_document()["$defs"]
    stamps = [
        schema
        for definition in defs.values()
        for key, schema in definition.get("properties", {}).items()
        if key in ("startedAt", "endedAt")
    ]
    assert len(stamps) == 10  # TranscriptPayload, Turn, TurnMessage, HeldTranscript, HeldTurn
    for schema in stamps:
        assert (schema["type"], schema["format"], schema["pattern"]) == (
            "string",
            "date-time",
            TIMESTAMP_PATTERN,
        )


def test_ended_reason_is_an_enum_of_the_documented_values() -> None:
    properties = json_schema_document()["$defs"]["TranscriptPayload"]["properties"]
    assert properties["endedReason"]["enum"] == ENDED_REASONS


# --------------------------------------------------------------------------- real bodies


@pytest.mark.parametrize("name", sorted(REAL_CALLS))
async def test_real_bodies_are_accepted(
    name: str, client: HttpBackend, capture: CaptureServer
) -> None:
    body = await delivered(client, capture, REAL_CALLS[name]())
    assert contract_errors("transcript", body) == []
    assert refusals("TranscriptPayload", body) == []


async def test_a_live_checkpoint_is_accepted(client: HttpBackend, capture: CaptureServer) -> None:
    checkpoint = bodies.crashed_call().model_copy(update={"ended_reason": "in_progress"})
    body = await delivered(client, capture, checkpoint)
    assert body["endedReason"] == "in_progress" and body["complete"] is False
    assert contract_errors("transcript", body) == []
    assert refusals("TranscriptPayload", body) == []


async def test_odd_characters_and_numbers_still_make_a_valid_body(
    client: HttpBackend, capture: CaptureServer
) -> None:
    body = await delivered(client, capture, odd_call())
    assert [t["text"] for t in body["turns"]] == ["Hi \ufffd there", "ok \ufffd"]
    stt, tts = body["usage"][1], body["usage"][2]
    assert "audioSeconds" not in stt and "audioSeconds" not in tts
    assert tts["characters"] == 5 and tts["provider"]
    assert body["latency"] == {}


@pytest.mark.parametrize("name", ["session_create", "session_create_minimal"])
async def test_real_session_create_bodies_are_accepted(
    name: str, client: HttpBackend, capture: CaptureServer
) -> None:
    await client.create_session(SessionCreate.model_validate(golden(name)), room_sid="RM_1")
    body = strict_json(capture.last("/sessions").body)
    assert contract_errors("session_create", body) == []
    assert refusals("SessionCreate", body) == []


@pytest.mark.parametrize(
    "name", ["held_transcript_browser", "transcript_in_progress", "transcript_complete"]
)
def test_held_transcripts_are_accepted_by_the_exported_schema(name: str) -> None:
    # Received, so open: a browser copy with keys the worker does not know, any endedReason.
    assert refusals("HeldTranscript", golden(name)) == []


BROKEN_HELD: list[tuple[str, Any]] = [
    ("missing turns", lambda b: b.pop("turns")),
    ("missing attemptNumber", lambda b: b.pop("attemptNumber")),
    ("empty source", lambda b: b.update(source="")),
    ("null endedReason", lambda b: b.update(endedReason=None)),
    ("role system", lambda b: b["turns"][0].update(role="system")),
    ("turn without startedAt", lambda b: b["turns"][1].pop("startedAt")),
    ("timestamp without milliseconds", lambda b: b.update(endedAt="2026-11-22T09:01:10Z")),
]


@pytest.mark.parametrize(("case", "mutate"), BROKEN_HELD, ids=[c for c, _ in BROKEN_HELD])
def test_broken_held_transcripts_are_refused(case: str, mutate: Any) -> None:
    broken = copy.deepcopy(golden("held_transcript_browser"))
    mutate(broken)
    assert refusals("HeldTranscript", broken), f"the exported schema accepts {case!r}"


# --------------------------------------------------------------------------- broken copies


@pytest.mark.parametrize(
    ("case", "mutate"), BROKEN_TRANSCRIPTS, ids=[c for c, _ in BROKEN_TRANSCRIPTS]
)
def test_broken_transcripts_are_refused(case: str, mutate: Any, real_body: dict[str, Any]) -> None:
    broken = copy.deepcopy(real_body)
    mutate(broken)
    assert contract_errors("transcript", broken), f"the oracle itself accepts {case!r}"
    assert refusals("TranscriptPayload", broken), f"the exported schema accepts {case!r}"


@pytest.mark.parametrize(
    ("case", "mutate"), BROKEN_SESSION_CREATES, ids=[c for c, _ in BROKEN_SESSION_CREATES]
)
def test_broken_session_creates_are_refused(case: str, mutate: Any) -> None:
    broken = copy.deepcopy(golden("session_create"))
    mutate(broken)
    assert contract_errors("session_create", broken), f"the oracle itself accepts {case!r}"
    assert refusals("SessionCreate", broken), f"the exported schema accepts {case!r}"
