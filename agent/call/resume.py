"""Resume: a job that starts in a room whose call already has turns continues that call.

Rule: a job re-dispatched into the same room (LiveKit Cloud after a worker died, or `python -m
agent watch` on self-hosted LiveKit) finds the same session and attempt (the create key is the
room's), and before its persona speaks it looks back for that attempt's earlier turns: first the
local journal (a job process of this container that died; any call id, since a re-dispatched job
has a new one), then, only when the journal has none, the backend's best transcript (a checkpoint
of a container that died). An incomplete one with turns is resumed (`agent.call.session`: the
turns become the chat context, the resume line replaces the greeting, `seq` continues); a
complete one means the call is already over: the job says nothing, delivers nothing and ends.
The look-back never fails the call: a backend error on the GET is one log line and the job
starts as a new call. Transcript text is never logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from agent import metrics
from agent.backend import Backend
from agent.journal import Journal
from agent.log import get_logger
from agent.models import Session, Turn

if TYPE_CHECKING:
    from agent.call.state import Call

log = get_logger(__name__)

Source = Literal["journal", "backend"]


@dataclass(frozen=True, slots=True)
class Earlier:
    """What the look-back found for the call's session attempt."""

    source: Source
    complete: bool
    started_at: datetime
    turns: tuple[Turn, ...]  # seq 1..k, in order
    # the journal row it came from (None: the backend); the new call's row adopts it
    call_id: str | None = None


async def look_back(backend: Backend, journal: Journal | None, session: Session) -> Earlier | None:
    """The earlier turns of `session`'s attempt: the journal's, else the backend's; None for a
    new call (nothing held, or the lookup failed)."""
    if journal is not None:
        try:
            found = await asyncio.to_thread(
                journal.earlier_call, session.id, session.attempt_number
            )
        except Exception as error:  # the journal's own problems surface when the row is opened
            log.error("call.look_back_failed", source="journal", error_type=type(error).__name__)
            found = None
        if found is not None:
            return Earlier(
                "journal",
                found.payload.complete,
                found.payload.started_at,
                tuple(found.payload.turns),
                found.call_id,
            )
    try:
        held = await backend.get_transcript(session.id, session.attempt_number)
    except Exception as error:  # never fails the call: it starts as a new one
        log.warning("call.look_back_failed", source="backend", error_type=type(error).__name__)
        return None
    if held is None or (not held.complete and not held.turns):
        return None
    return Earlier("backend", held.complete, held.started_at, numbered(held.turns))


def numbered(turns: Sequence[Turn]) -> tuple[Turn, ...]:
    """Received turns as our own `Turn`s in `seq` order, numbered 1..k: the recorder numbers
    the next turn k+1. The backend stores what the worker sent (1..k already); a gap (a browser
    copy) is renumbered and logged, not trusted."""
    ordered = sorted(turns, key=lambda turn: turn.seq)
    if [turn.seq for turn in ordered] != list(range(1, len(ordered) + 1)):
        log.warning("call.earlier_seq_gap", turns=len(ordered))
    return tuple(
        Turn(
            seq=index,
            role=turn.role,
            text=turn.text,
            started_at=turn.started_at,
            ended_at=turn.ended_at,
            interrupted=turn.interrupted,
        )
        for index, turn in enumerate(ordered, start=1)
    )


def log_resumed(call: Call) -> None:
    """One line and one count per resumed call (ids and counts only, never text)."""
    assert call.resumed_from is not None
    metrics.call_resumed(call.resumed_from)
    log.info(
        "call.resumed",
        source=call.resumed_from,
        earlier_turns=len(call.earlier_turns),
        attempt_number=call.session.attempt_number if call.session else None,
    )


def log_already_ended(call: Call) -> None:
    assert call.earlier is not None
    log.info(
        "call.already_ended",
        source=call.earlier.source,
        earlier_turns=len(call.earlier.turns),
        attempt_number=call.session.attempt_number if call.session else None,
    )


async def settle_already_ended(call: Call, timeout: float) -> None:
    """`on_session_end` of a job whose call was already over: no session ran and nothing is
    delivered. What the job started in the background (recovery, which may be delivering the
    earlier run's journaled transcript) gets up to `timeout`, then the call's span ends."""
    await call.settle_tasks(timeout)
    if call.span is not None:
        call.span.set_attribute("voice_agent.already_ended", True)
        call.span.end()
