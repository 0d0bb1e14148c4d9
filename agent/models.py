"""Every wire format of the worker: job metadata, backend bodies, data-channel messages.

Rule: these pydantic models are the single source of truth for anything that crosses a process
boundary. camelCase on the wire (snake_case in Python), timestamps are ISO-8601 UTC with
milliseconds, and `python -m agent schema` prints them all as one JSON Schema document.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

EndedReason = Literal[
    "caller_left",
    "caller_hangup",
    "room_closed",
    "max_duration",
    "no_show",
    "agent_error",
    "job_terminated",
    "worker_shutdown",
    "backend_unavailable",
    "crashed",
]
Role = Literal["user", "assistant"]

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


def _iso_ms(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


UtcDatetime = Annotated[
    datetime,
    PlainSerializer(_iso_ms, return_type=str, when_used="json"),
    Field(json_schema_extra={"format": "date-time"}),
]


def utc_from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


class WireModel(BaseModel):
    """camelCase on the wire; unknown keys ignored (the other side may add fields)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json_bytes(self) -> bytes:
        return json.dumps(self.to_wire(), ensure_ascii=False, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- job and backend


class JobMetadata(WireModel):
    """Dispatch metadata; read from `ctx.job.metadata` only (clients cannot change it)."""

    scenario_id: Id
    user_id: Id
    session_id: Id | None = None
    assignment_id: Id | None = None
    participant_identity: Id | None = None


class Scenario(WireModel):
    id: Id
    title: str = Field(min_length=1, max_length=300)
    prompt: str = Field(min_length=1, max_length=50_000)
    greeting: str | None = Field(default=None, max_length=2_000)
    voice: str | None = Field(default=None, max_length=64)
    language: str | None = Field(default=None, max_length=16)


class SessionCreate(WireModel):
    scenario_id: Id
    user_id: Id
    assignment_id: Id | None = None
    room_name: str = Field(min_length=1, max_length=256)


class Session(WireModel):
    id: Id
    user_id: Id
    scenario_id: Id
    attempt_number: int = Field(ge=1)
    assignment_id: Id | None = None


class Turn(WireModel):
    seq: int = Field(ge=1)
    role: Role
    text: str
    started_at: UtcDatetime
    ended_at: UtcDatetime
    interrupted: bool = False


class Usage(WireModel):
    kind: Literal["llm", "stt", "tts"]
    provider: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    audio_seconds: float | None = None
    characters: int | None = None


class Percentiles(WireModel):
    p50: float
    p90: float
    max: float


class Latency(WireModel):
    """Per-turn latency summaries in milliseconds; None where no turn measured it."""

    e2e_ms: Percentiles | None = None
    llm_ttft_ms: Percentiles | None = None
    tts_ttfb_ms: Percentiles | None = None
    end_of_turn_ms: Percentiles | None = None


class TranscriptPayload(WireModel):
    attempt_number: int = Field(ge=1)
    source: Literal["agent"] = "agent"
    complete: bool
    ended_reason: EndedReason
    started_at: UtcDatetime
    ended_at: UtcDatetime
    turn_count: int = Field(ge=0)
    turns: list[Turn]
    usage: list[Usage] = Field(default_factory=list)
    latency: Latency = Field(default_factory=Latency)

    @field_validator("turns")
    @classmethod
    def _seq_continuous(cls, turns: list[Turn]) -> list[Turn]:
        for index, turn in enumerate(turns, start=1):
            if turn.seq != index:
                raise ValueError(f"turn seq must run 1..n without gaps (position {index})")
        return turns

    @model_validator(mode="after")
    def _turn_count_matches(self) -> TranscriptPayload:
        if self.turn_count != len(self.turns):
            raise ValueError("turnCount must equal the number of turns")
        return self


class BackendError(WireModel):
    """The backend's error body, when it sends one (kept for dead-letter logs)."""

    error: str | None = None
    message: str | None = None


# --------------------------------------------------------------------------- data channel

TRANSCRIPT_TOPIC = "transcript"
MAX_PACKET_BYTES = 15_000


class TurnMessage(WireModel):
    type: Literal["turn"] = "turn"
    v: Literal[1] = 1
    session_id: str
    seq: int = Field(ge=1)
    role: Role
    text: str
    interrupted: bool
    started_at: UtcDatetime
    ended_at: UtcDatetime
    part: int | None = Field(default=None, ge=1)
    parts: int | None = Field(default=None, ge=2)


class InterimMessage(WireModel):
    type: Literal["interim"] = "interim"
    v: Literal[1] = 1
    role: Literal["user"] = "user"
    item_id: str
    text: str


class EndMessage(WireModel):
    type: Literal["end"] = "end"
    v: Literal[1] = 1
    session_id: str
    turn_count: int = Field(ge=0)


DataMessage = Annotated[TurnMessage | InterimMessage | EndMessage, Field(discriminator="type")]


def json_schema_document() -> dict[str, Any]:
    """One JSON Schema document with a named definition per wire model."""
    from pydantic.json_schema import models_json_schema

    models: list[type[BaseModel]] = [
        JobMetadata,
        Scenario,
        SessionCreate,
        Session,
        TranscriptPayload,
        TurnMessage,
        InterimMessage,
        EndMessage,
    ]
    _, schema = models_json_schema(
        [(model, "serialization") for model in models],
        by_alias=True,
        title="Voice agent worker wire formats",
        ref_template="#/$defs/{model}",
    )
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
