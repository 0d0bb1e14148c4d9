"""What the watcher reads of the server and what it decides, as plain values.

Rule: frozen dataclasses, no I/O and no livekit types: `server_api` builds the views from the
server's protos, `policy` reads them and returns a `Decision`, `loop` carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ParticipantKind = Literal["caller", "agent", "other"]
JobStatus = Literal["pending", "running", "success", "failed", "cancelled", "other"]
Action = Literal["dispatch", "none"]


@dataclass(frozen=True)
class ParticipantView:
    identity: str
    kind: ParticipantKind
    agent_name: str = ""  # the `lk.agent.name` attribute of an agent, else ""


@dataclass(frozen=True)
class DispatchView:
    id: str
    agent_name: str
    metadata: str
    created_at: float = 0.0  # server time, epoch seconds; 0 when the server did not say
    deleted: bool = False
    jobs: tuple[JobStatus, ...] = ()  # in the server's order: the last is the newest
    job_started_at: float = 0.0  # the newest job's start, epoch seconds; 0 when not said
    job_identity: str = ""  # the newest job's agent participant identity; "" when not said


@dataclass(frozen=True)
class RoomView:
    name: str
    sid: str
    participants: tuple[ParticipantView, ...]
    # None: not fetched (the participants alone decided: agent present or no caller)
    dispatches: tuple[DispatchView, ...] | None = None


@dataclass(frozen=True)
class Decision:
    room: str
    action: Action
    state: str  # what the room is in: ok, no_dispatch, no_caller, finished, waiting_grace, ...
    log_event: str | None  # the line to log (None: nothing changed since the last tick)
    fields: dict[str, Any] = field(default_factory=dict)
    metadata: str = ""  # for a dispatch: the metadata to copy
    redispatch_number: int = 0  # for a dispatch: which re-dispatch of the room this is (1..cap)
