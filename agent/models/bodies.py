"""Job metadata and the backend's bodies: scenario, session, transcript (turns, usage, latency).

Rule: what the worker receives (`ReceivedModel`) ignores unknown keys; what it sends
(`SentModel`) is closed; `TranscriptPayload` checks its own consistency (seq continuity,
turnCount, complete vs endedReason) so an inconsistent transcript never leaves the worker.
`HeldTranscript` (what the backend holds, read back to resume a call) is received: any source,
any endedReason, and its consistency is the resuming caller's to judge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from agent.models.wire import (
    INCOMPLETE_REASONS,
    LABEL_MAX,
    Count,
    EndedReason,
    Id,
    Label,
    Millis,
    ReceivedModel,
    Role,
    Seconds,
    SentModel,
    Text,
    UtcDatetime,
    _empty_is_absent,
)


class JobMetadata(ReceivedModel):
    """Dispatch metadata; read from `ctx.job.metadata` only (clients cannot change it)."""

    scenario_id: Id = Field(alias="scenarioId")
    user_id: Id = Field(alias="userId")
    session_id: Id | None = Field(default=None, alias="sessionId")
    assignment_id: Id | None = Field(default=None, alias="assignmentId")
    participant_identity: Id | None = Field(default=None, alias="participantIdentity")
    # The platform's consent to record this call (DESIGN "Contracts"); a JSON boolean only, so
    # a "false" string never turns recording on.
    record: bool = Field(default=False, strict=True)


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
    # How many turns the backend already holds for this attempt (0: a new call, nothing to
    # read back). Absent: an older backend, so the worker reads the held transcript back.
    held_turns: int | None = Field(default=None, alias="heldTurns", ge=0)


class Turn(SentModel):
    """One final turn; only non-empty texts make turns (DESIGN "Turns")."""

    seq: int = Field(ge=1)
    role: Role
    text: Text
    started_at: UtcDatetime = Field(alias="startedAt")
    ended_at: UtcDatetime = Field(alias="endedAt")
    interrupted: bool = False


UsageKind = Literal["llm", "stt", "tts"]
USAGE_KINDS: frozenset[str] = frozenset(("llm", "stt", "tts"))


class Usage(SentModel):
    kind: UsageKind
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


class HeldTurn(Turn, ReceivedModel):
    """A turn of a held transcript: a `Turn` (a resumed call carries it on into its own
    transcript) that is received, so open in the exported schema and `interrupted` optional."""


class HeldUsage(Usage, ReceivedModel):
    """A usage entry of a held transcript: what an earlier run of the call spent, carried into
    the resumed call's final transcript (received, so open in the exported schema)."""


def _known_usage(value: Any) -> Any:
    # Usage rides along with the turns; an entry of a kind this worker does not bill (a newer
    # backend's) is left out rather than costing the resume its turns.
    if isinstance(value, list):
        return [e for e in value if not isinstance(e, Mapping) or e.get("kind") in USAGE_KINDS]
    return value


class HeldTranscript(ReceivedModel):
    """The best transcript the backend holds for one attempt (`GET .../transcript`): the POST
    body's shape, but received. `source` may be "agent" or "browser" and `endedReason` is any
    string the backend has; latency is not read. Every timestamp must carry its offset; what
    holds across fields (its attempt, seq 1..n, times not in the future) is the resuming
    caller's to judge (`agent.call.resume`), so a bad body there is a fresh start."""

    attempt_number: int = Field(alias="attemptNumber", ge=1)
    source: str = Field(min_length=1, max_length=LABEL_MAX)
    complete: bool
    ended_reason: str = Field(alias="endedReason", min_length=1, max_length=LABEL_MAX)
    started_at: UtcDatetime = Field(alias="startedAt")
    ended_at: UtcDatetime = Field(alias="endedAt")
    turn_count: int = Field(alias="turnCount", ge=0)
    turns: list[HeldTurn]
    usage: Annotated[list[HeldUsage], BeforeValidator(_known_usage)] = Field(default_factory=list)
