"""The contract's newer keys (DESIGN.md "Contracts"), each from a golden body written by hand:
`heldTurns` on the session answer (a new call reads nothing back; a resumed one reads once),
`record` in the job metadata (a JSON boolean), and the usage a resumed call carries over from
the checkpoint it resumed (added per kind, provider and model in its final transcript)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from types import SimpleNamespace

import pytest
from livekit.agents import llm
from livekit.agents.metrics import LLMModelUsage, STTModelUsage, TTSModelUsage
from pydantic import SecretStr

from agent.backend import BackendResponseInvalid, HttpBackend
from agent.call import Call
from agent.call.finish import build_transcript
from agent.call.resume import look_back
from agent.call.start import MetadataError, open_session, parse_job_metadata
from agent.models import HeldTranscript, JobMetadata, Session, TranscriptPayload
from agent.transcript import TurnRecorder
from tests.contract.conftest import CaptureServer
from tests.contract.oracle import contract_errors, golden, strict_json
from tests.contract.test_exported_schema import refusals
from tests.support.backend_stub import BackendStub, Fault
from tests.support.settings import make_settings

STUB_KEY = "resume-contract-stub-key-0123456789"


@pytest.fixture
async def stub() -> AsyncIterator[BackendStub]:
    async with BackendStub(key=STUB_KEY) as running:
        yield running


@pytest.fixture
async def backend(stub: BackendStub) -> AsyncIterator[HttpBackend]:
    client = HttpBackend(stub.url, SecretStr(STUB_KEY), timeout=5.0, default_deadline=10.0)
    try:
        yield client
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- heldTurns


@pytest.mark.parametrize(("name", "held"), [("session_new", 0), ("session_resumed", 2)])
async def test_the_session_answer_carries_held_turns(
    name: str, held: int, stub: BackendStub, backend: HttpBackend
) -> None:
    assert refusals("Session", golden(name)) == []  # the exported schema takes it too
    stub.queue("get_session", Fault(json=golden(name)))
    session = await backend.get_session("sess-1")
    assert (session.id, session.held_turns) == ("sess-1", held)


async def test_a_negative_held_turns_is_invalid_naming_the_field(
    stub: BackendStub, backend: HttpBackend
) -> None:
    stub.queue("get_session", Fault(json={**golden("session_new"), "heldTurns": -1}))
    with pytest.raises(BackendResponseInvalid, match="heldTurns"):
        await backend.get_session("sess-1")


METADATA = JobMetadata(scenario_id="default", user_id="user-42")


async def test_a_new_call_reads_nothing_back_and_a_redispatched_one_reads_once(
    stub: BackendStub, backend: HttpBackend
) -> None:
    session = await open_session(backend, METADATA, room_sid="RM_1", room_name="room-1")
    assert session.held_turns == 0
    assert await look_back(backend, None, session) is None
    assert stub.requests_for("get_transcript") == []  # no round trip for a new call
    # the call's checkpoint reaches the backend, then its container dies; the room's job is
    # dispatched again: same room key, same session, and now turns are held
    checkpoint = golden("transcript_in_progress") | {"attemptNumber": session.attempt_number}
    await backend.post_transcript(
        session.id, TranscriptPayload.model_validate(checkpoint), deadline=5.0
    )
    again = await open_session(backend, METADATA, room_sid="RM_1", room_name="room-1")
    assert (again.id, again.held_turns) == (session.id, checkpoint["turnCount"])
    earlier = await look_back(backend, None, again)
    assert earlier is not None and len(earlier.turns) == checkpoint["turnCount"]
    assert len(stub.requests_for("get_transcript")) == 1


# --------------------------------------------------------------------------- record


def test_job_metadata_with_record_parses_and_ignores_unknown_keys() -> None:
    body = golden("job_metadata_record")
    assert refusals("JobMetadata", body) == []
    metadata = parse_job_metadata(json.dumps(body), make_settings())
    assert metadata.record is True and metadata.participant_identity == "trainee-42"
    assert (
        parse_job_metadata(json.dumps({**body, "record": False}), make_settings()).record is False
    )
    del body["record"]
    assert parse_job_metadata(json.dumps(body), make_settings()).record is False  # off by default


@pytest.mark.parametrize("value", ["true", 1, "yes", None])
def test_record_must_be_a_json_boolean(value: object) -> None:
    body = golden("job_metadata_record") | {"record": value}
    with pytest.raises(MetadataError) as caught:
        parse_job_metadata(json.dumps(body), make_settings())
    assert [field.split(":")[0] for field in caught.value.fields] == ["record"]


# --------------------------------------------------------------------------- usage carried over


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def said(role: str, text: str, start: str, end: str) -> llm.ChatMessage:
    return llm.ChatMessage.model_validate(
        {
            "role": role,
            "content": [text],
            "created_at": at(start),
            "metrics": {"started_speaking_at": at(start), "stopped_speaking_at": at(end)},
        }
    )


class HeldCheckpoint:
    """The backend as the resumed job meets it: the dead run's checkpoint, with its usage."""

    async def get_transcript(self, session_id: str, attempt_number: int) -> HeldTranscript:
        return HeldTranscript.model_validate(golden("held_checkpoint_usage"))


async def test_a_resumed_calls_transcript_is_the_golden_body(
    client: HttpBackend, capture: CaptureServer
) -> None:
    session = Session(
        id="sess-1", user_id="user-42", scenario_id="scenario-7", attempt_number=2, held_turns=2
    )
    earlier = await look_back(HeldCheckpoint(), None, session)  # type: ignore[arg-type]
    assert earlier is not None
    call = Call("AJ_2", "room-1", METADATA, session=session)
    call.resume_from(earlier)
    recorder = TurnRecorder(started_at=call.started_at, earlier_turns=earlier.turns)
    recorder.add_item(
        said(
            "assistant",
            "Sorry, the line dropped. Where were we?",
            "2026-11-22T10:01:00.000Z",
            "2026-11-22T10:01:02.500Z",
        )
    )
    recorder.add_item(
        said("user", "I wanted to talk.", "2026-11-22T10:01:03.000Z", "2026-11-22T10:01:04.250Z")
    )
    call.recorder = recorder
    # what this job's own session spent (the library's usage records)
    call.agent_session = SimpleNamespace(  # type: ignore[assignment]
        usage=SimpleNamespace(
            model_usage=[
                LLMModelUsage(
                    provider="openai", model="gpt-4o-mini", input_tokens=500, output_tokens=45
                ),
                STTModelUsage(provider="openai", model="gpt-4o-transcribe", audio_duration=6.5),
                TTSModelUsage(
                    provider="openai",
                    model="gpt-4o-mini-tts",
                    characters_count=20,
                    audio_duration=5.5,
                ),
            ]
        )
    )
    call.end_reason("caller_hangup")
    call.ended_at = datetime.fromisoformat("2026-11-22T10:02:00.000Z")
    expected = golden("transcript_resumed")
    assert contract_errors("transcript", expected) == []  # the two oracles agree
    await client.post_transcript("sess-1", build_transcript(call), deadline=10.0)
    assert strict_json(capture.last("/sessions/sess-1/transcript").body) == expected
