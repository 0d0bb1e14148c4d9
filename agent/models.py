"""Every wire format of the worker: job metadata, backend bodies, data-channel messages.

Rule: these pydantic models are the single source of truth for anything that crosses a process
boundary. camelCase on the wire (snake_case in Python), every multi-word wire name written out
(`Field(alias=...)`, never computed: a generator once turned `e2e_ms` into `e2EMs`), timestamps
ISO-8601 UTC with milliseconds, no value ever `null` (optional keys are absent), and
`python -m agent schema` prints them all as one JSON Schema document (draft 2020-12) that Ajv in
strict mode compiles as it is.

Sanitising happens here, at the boundary, so one odd character or number never costs a call its
transcript: lone surrogates become U+FFFD, non-finite or negative usage and latency figures are
dropped, and the encoder refuses NaN (`allow_nan=False`) as a last guard.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import core_schema

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
    "in_progress",
]
# The only reasons a transcript is incomplete: a call recovered from a dead process, and a
# checkpoint of a live call. Every other reason ends a call whose turns are all there.
INCOMPLETE_REASONS: frozenset[str] = frozenset({"crashed", "in_progress"})
Role = Literal["user", "assistant"]

ID_MAX = 128
TEXT_MAX = 100_000  # a turn: far above what MAX_CALL_SECONDS of speech can produce
LABEL_MAX = 256  # provider and model names, room names, item ids
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """`value` with every lone surrogate replaced by U+FFFD (a pair split into two code points is
    joined into its character), so it always encodes as UTF-8."""
    if _SURROGATE.search(value) is None:
        return value
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _label(value: Any) -> Any:
    # A provider or model name is a label, not evidence: an empty one becomes "unknown" and a
    # long one is cut, rather than refusing the transcript that carries it.
    if not isinstance(value, str):
        return value
    value = value.strip()
    return value[:LABEL_MAX] if value else "unknown"


def _empty_is_absent(value: Any) -> Any:
    # The worker treats an empty optional text as absent (`scenario.greeting or default`).
    return None if value == "" else value


def _figure(value: Any) -> Any:
    # A usage figure that is NaN, infinite or negative is no measurement: dropped (absent).
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and (not math.isfinite(value) or value < 0):
        return None
    return value


Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=ID_MAX)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=TEXT_MAX)]
Label = Annotated[
    str, BeforeValidator(_label), StringConstraints(min_length=1, max_length=LABEL_MAX)
]
# The bounds sit on the number itself, not on the optional: a bound on `X | None` would be
# exported as an unknown keyword (`ge`), which Ajv's strict mode refuses.
Count = Annotated[Annotated[int, Field(ge=0)] | None, BeforeValidator(_figure)]
Seconds = Annotated[
    Annotated[float, Field(ge=0, allow_inf_nan=False)] | None, BeforeValidator(_figure)
]
Millis = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _iso_ms(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


UtcDatetime = Annotated[
    datetime,
    PlainSerializer(_iso_ms, return_type=str, when_used="json"),
    Field(json_schema_extra={"format": "date-time", "pattern": TIMESTAMP_PATTERN}),
]


def utc_from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


def _one_word(name: str) -> str:
    """The alias generator: a one-word field is its own wire name; a multi-word field must
    write its wire name out (`Field(alias="e2eMs")`), checked when the class is defined."""
    if "_" in name:
        raise TypeError(f"wire field {name!r} needs an explicit name: Field(alias=...)")
    return name


class WireModel(BaseModel):
    """camelCase on the wire; unknown keys ignored when reading (the other side may add fields,
    and journaled payloads stay readable); every text sanitised (`clean_text`)."""

    model_config = ConfigDict(
        alias_generator=_one_word, populate_by_name=True, extra="ignore", frozen=True
    )

    @field_validator("*", mode="before")
    @classmethod
    def _clean_texts(cls, value: Any) -> Any:
        return clean_text(value) if isinstance(value, str) else value

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json_bytes(self) -> bytes:
        # allow_nan=False: bare NaN is not JSON; validation drops such numbers, this is the
        # last guard (a model_construct or model_copy skips validation).
        return json.dumps(
            self.to_wire(), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()


class SentModel(WireModel):
    """What the worker sends: closed in the exported schema (`additionalProperties: false`),
    every key it always sends `required`."""


class ReceivedModel(WireModel):
    """What the worker receives: open in the exported schema, since the worker ignores keys it
    does not know (the backend may add fields without breaking running workers)."""


# --------------------------------------------------------------------------- job and backend


class JobMetadata(ReceivedModel):
    """Dispatch metadata; read from `ctx.job.metadata` only (clients cannot change it)."""

    scenario_id: Id = Field(alias="scenarioId")
    user_id: Id = Field(alias="userId")
    session_id: Id | None = Field(default=None, alias="sessionId")
    assignment_id: Id | None = Field(default=None, alias="assignmentId")
    participant_identity: Id | None = Field(default=None, alias="participantIdentity")


class Scenario(ReceivedModel):
    id: Id
    title: str = Field(min_length=1, max_length=300)
    prompt: str = Field(min_length=1, max_length=50_000)
    greeting: Annotated[str | None, BeforeValidator(_empty_is_absent)] = Field(
        default=None, min_length=1, max_length=2_000
    )
    voice: Annotated[str | None, BeforeValidator(_empty_is_absent)] = Field(
        default=None, min_length=1, max_length=64
    )
    language: Annotated[str | None, BeforeValidator(_empty_is_absent)] = Field(
        default=None, min_length=1, max_length=16
    )


class SessionCreate(SentModel):
    scenario_id: Id = Field(alias="scenarioId")
    user_id: Id = Field(alias="userId")
    assignment_id: Id | None = Field(default=None, alias="assignmentId")
    room_name: str = Field(alias="roomName", min_length=1, max_length=LABEL_MAX)


class Session(ReceivedModel):
    id: Id
    user_id: Id = Field(alias="userId")
    scenario_id: Id = Field(alias="scenarioId")
    attempt_number: int = Field(alias="attemptNumber", ge=1)
    assignment_id: Id | None = Field(default=None, alias="assignmentId")


class Turn(SentModel):
    """One final turn; only non-empty texts make turns (DESIGN "Turns")."""

    seq: int = Field(ge=1)
    role: Role
    text: Text
    started_at: UtcDatetime = Field(alias="startedAt")
    ended_at: UtcDatetime = Field(alias="endedAt")
    interrupted: bool = False


class Usage(SentModel):
    kind: Literal["llm", "stt", "tts"]
    provider: Label
    model: Label
    input_tokens: Count = Field(default=None, alias="inputTokens")
    output_tokens: Count = Field(default=None, alias="outputTokens")
    audio_seconds: Seconds = Field(default=None, alias="audioSeconds")
    characters: Count = None


class Percentiles(SentModel):
    """One latency summary in milliseconds; finite, non-negative numbers only."""

    p50: Millis
    p90: Millis
    max: Millis


def _measured(value: Any) -> Any:
    # A summary given as data (a dict) with a NaN, infinite or negative figure is no
    # measurement: the key is dropped (absent), the rest of the latency block stays.
    if isinstance(value, Mapping):
        for key in ("p50", "p90", "max"):
            figure = value.get(key)
            if isinstance(figure, int | float) and not (math.isfinite(figure) and figure >= 0):
                return None
    return value


Measured = Annotated[Percentiles | None, BeforeValidator(_measured)]


class Latency(SentModel):
    """Per-turn latency summaries in milliseconds; a key is absent where no turn measured it."""

    e2e_ms: Measured = Field(default=None, alias="e2eMs")
    llm_ttft_ms: Measured = Field(default=None, alias="llmTtftMs")
    tts_ttfb_ms: Measured = Field(default=None, alias="ttsTtfbMs")
    end_of_turn_ms: Measured = Field(default=None, alias="endOfTurnMs")


class TranscriptPayload(SentModel):
    """The transcript POST body. `complete` is false exactly when `endedReason` is `crashed`
    (recovered from a dead call) or `in_progress` (a checkpoint of a live call)."""

    model_config = ConfigDict(
        json_schema_extra={
            # The combination rule, for validators built from the schema (Ajv, Zod); the
            # same set as INCOMPLETE_REASONS (the contract tests check both sides).
            "if": {
                "type": "object",
                "properties": {"endedReason": {"enum": ["crashed", "in_progress"]}},
                "required": ["endedReason"],
            },
            "then": {"type": "object", "properties": {"complete": {"const": False}}},
            "else": {"type": "object", "properties": {"complete": {"const": True}}},
        }
    )

    attempt_number: int = Field(alias="attemptNumber", ge=1)
    source: Literal["agent"] = "agent"
    complete: bool
    ended_reason: EndedReason = Field(alias="endedReason")
    started_at: UtcDatetime = Field(alias="startedAt")
    ended_at: UtcDatetime = Field(alias="endedAt")
    turn_count: int = Field(alias="turnCount", ge=0)
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
        if self.complete == (self.ended_reason in INCOMPLETE_REASONS):
            raise ValueError(
                "complete must be false exactly when endedReason is crashed or in_progress "
                f"(got complete={self.complete} with {self.ended_reason})"
            )
        return self


class BackendError(ReceivedModel):
    """The backend's error body, when it sends one (kept for dead-letter logs)."""

    error: str | None = None
    message: str | None = None


# --------------------------------------------------------------------------- data channel

TRANSCRIPT_TOPIC = "transcript"
MAX_PACKET_BYTES = 15_000


class TurnMessage(SentModel):
    type: Literal["turn"] = "turn"
    v: Literal[1] = 1
    session_id: Id = Field(alias="sessionId")
    seq: int = Field(ge=1)
    role: Role
    text: Text  # a part of a split turn is a slice of it: never longer
    interrupted: bool
    started_at: UtcDatetime = Field(alias="startedAt")
    ended_at: UtcDatetime = Field(alias="endedAt")
    part: int | None = Field(default=None, ge=1)
    parts: int | None = Field(default=None, ge=2)


class InterimMessage(SentModel):
    type: Literal["interim"] = "interim"
    v: Literal[1] = 1
    role: Literal["user"] = "user"
    item_id: str = Field(alias="itemId", min_length=1, max_length=LABEL_MAX)
    text: Text


class EndMessage(SentModel):
    type: Literal["end"] = "end"
    v: Literal[1] = 1
    session_id: Id = Field(alias="sessionId")
    turn_count: int = Field(alias="turnCount", ge=0)


DataMessage = Annotated[TurnMessage | InterimMessage | EndMessage, Field(discriminator="type")]


SCHEMA_ID = "urn:voice-agent-worker:wire"


class _WireJsonSchema(GenerateJsonSchema):
    """The schema of what actually goes over the wire, for Ajv (strict, 2020-12) and Zod.

    - No `null`: an optional key is absent on the wire (`exclude_none`), so it is optional and
      never nullable, and a `None` default is not written.
    - What the worker sends (`SentModel`, serialization mode) is closed and every key it always
      sends is required, defaults included (`source`, `usage`, `latency`, `interrupted`, `type`,
      `v`); only keys whose default is absence are optional.
    - What it receives (`ReceivedModel`, validation mode) stays open: it ignores unknown keys.
    - No per-field titles.
    """

    def field_title_should_be_set(self, schema: Any) -> bool:
        # Titles made from wire names ("Endedreason") would become type names in generators
        # such as json-schema-to-typescript; definitions keep their model names.
        return False

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if json_schema.get("default", ...) is None:
            del json_schema["default"]
        return json_schema

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        if self.mode != "serialization":
            return super().field_is_required(field, total)
        inner = field["schema"]
        return inner["type"] != "default" or inner.get("default", ...) is not None

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        if issubclass(schema["cls"], SentModel):
            json_schema["additionalProperties"] = False
        return json_schema


def json_schema_document() -> dict[str, Any]:
    """One JSON Schema document (draft 2020-12, `$id` SCHEMA_ID) with a named definition per
    wire model: sent ones as the worker serialises them, received ones as it accepts them."""
    from pydantic.json_schema import models_json_schema

    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (JobMetadata, "validation"),
        (Scenario, "validation"),
        (SessionCreate, "serialization"),
        (Session, "validation"),
        (TranscriptPayload, "serialization"),
        (TurnMessage, "serialization"),
        (InterimMessage, "serialization"),
        (EndMessage, "serialization"),
    ]
    _, schema = models_json_schema(
        models,
        by_alias=True,
        title="Voice agent worker wire formats",
        ref_template="#/$defs/{model}",
        schema_generator=_WireJsonSchema,
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "description": (
            "Bodies the worker sends are closed (additionalProperties: false) with every key it "
            "always sends required; bodies it receives (JobMetadata, Scenario, Session) are open "
            "because the worker ignores unknown keys. No value is ever null: optional keys are "
            "absent. Timestamps are ISO-8601 UTC with milliseconds."
        ),
        **schema,
    }
