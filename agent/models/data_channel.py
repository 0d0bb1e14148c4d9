"""The data-channel messages on topic `transcript`: turn, interim, end.

Rule: `v` is 1; a packet is at most MAX_PACKET_BYTES (a longer turn is split into `parts`, see
agent.transcript.packets).
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from agent.models.wire import (
    LABEL_MAX,
    Id,
    Role,
    SentModel,
    Text,
    UtcDatetime,
)

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
