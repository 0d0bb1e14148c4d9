"""Resume: a job that starts in a room whose call already has turns continues that call.

Rule: a job re-dispatched into the same room (LiveKit Cloud after a worker died, or `python -m
agent watch` on self-hosted LiveKit) finds the same session and attempt (the create key is the
room's), and before its persona speaks it looks back for that attempt's earlier turns: the local
journal (a job process of this container that died; any call id, since a re-dispatched job has
a new one) and, when the session says the backend holds turns (`heldTurns` above 0, or absent
from an older backend), the backend's best transcript (a checkpoint of a container that died).
The better of the two wins, as the backend ranks them (complete over incomplete, then more
turns). An incomplete one with turns is resumed (`agent.call.session`: the turns become the chat
context, the resume line replaces the greeting, `seq` continues, and what the earlier runs spent
is billed again in the final transcript's usage); only the agent's own complete transcript means
the call is already over: the job says nothing, delivers nothing and ends.
A held body is input like any other: one that is not this attempt's, whose seq does not run
1..n, or whose times lie in the future is a log line and a fresh start. The look-back never
fails the call: a backend error on the GET is one log line and the job starts as a new call.
Transcript text is never logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta

from agent import metrics
from agent.backend import Backend
from agent.call.earlier import Earlier
from agent.call.state import Call
from agent.journal import Journal
from agent.log import get_logger
from agent.models import INCOMPLETE_REASONS, HeldTranscript, Session, Turn, utc_now
from agent.transcript import merge_usage

log = get_logger(__name__)

# How far ahead of this worker's clock a held time may be (another worker's clock): beyond it
# the body is not believed (a final transcript must never start after it ends).
MAX_CLOCK_SKEW = timedelta(seconds=60)


async def look_back(backend: Backend, journal: Journal | None, session: Session) -> Earlier | None:
    """The earlier turns of `session`'s attempt: the better of the journal's and the backend's
    (read only when the session says it holds turns); None for a new call."""
    local = await _from_journal(journal, session)
    if local is not None and local.complete:
        return local  # the call is over: nothing the backend holds changes that
    held: Earlier | None = None
    if session.held_turns is None or session.held_turns > 0:
        held = await _from_backend(backend, session)
    if local is None or held is None:
        return local or held
    winner = held if held.rank() > local.rank() else local
    return dataclasses.replace(
        winner,
        call_id=local.call_id,  # the dead run's row is adopted whichever turns win
        started_at=min(local.started_at, held.started_at),
        usage=held.usage,  # the journal keeps no usage; the checkpoint's is the best known
    )


async def _from_journal(journal: Journal | None, session: Session) -> Earlier | None:
    if journal is None:
        return None
    try:
        found = await asyncio.to_thread(journal.earlier_call, session.id, session.attempt_number)
    except Exception as error:  # the journal's own problems surface when the row is opened
        log.error("call.look_back_failed", source="journal", error_type=type(error).__name__)
        return None
    if found is None:
        return None
    payload = found.payload
    return Earlier(
        "journal", payload.complete, payload.started_at, tuple(payload.turns), found.call_id
    )


async def _from_backend(backend: Backend, session: Session) -> Earlier | None:
    try:
        held = await backend.get_transcript(session.id, session.attempt_number)
    except Exception as error:  # never fails the call: it starts as a new one
        log.warning("call.look_back_failed", source="backend", error_type=type(error).__name__)
        return None
    if held is None:
        return None
    problem = held_problem(held, session)
    if problem is not None:
        log.warning("call.held_transcript_refused", problem=problem, turns=len(held.turns))
        return None
    ours = held.source == "agent"
    # Only the agent's own complete transcript ends the call: a browser's copy, or a body that
    # says complete beside an incomplete reason, is resumed from.
    complete = ours and held.complete and held.ended_reason not in INCOMPLETE_REASONS
    if not complete and not held.turns:
        return None
    turns = tuple(
        Turn(
            seq=turn.seq,
            role=turn.role,
            text=turn.text,
            started_at=turn.started_at,
            ended_at=turn.ended_at,
            interrupted=turn.interrupted,
        )
        for turn in held.turns
    )
    usage = tuple(merge_usage(held.usage)) if ours else ()
    return Earlier("backend", complete, held.started_at, turns, usage=usage)


def held_problem(held: HeldTranscript, session: Session, now: datetime | None = None) -> str | None:
    """Why a held body cannot be resumed from (field and rule, never text); None: usable."""
    if held.attempt_number != session.attempt_number:
        return f"attemptNumber {held.attempt_number} is not the session's {session.attempt_number}"
    if [turn.seq for turn in held.turns] != list(range(1, len(held.turns) + 1)):
        return "turns: seq does not run 1..n in order"
    if held.started_at > held.ended_at:
        return "startedAt is after endedAt"
    latest = (now or utc_now()) + MAX_CLOCK_SKEW
    times = [("startedAt", held.started_at), ("endedAt", held.ended_at)] + [
        (f"turns.{index}.{name}", at)
        for index, turn in enumerate(held.turns)
        for name, at in (("startedAt", turn.started_at), ("endedAt", turn.ended_at))
    ]
    for name, at in times:
        if at > latest:
            return f"{name} is in the future"
    return None


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


async def settle_stood_down(call: Call, timeout: float) -> None:
    """`on_session_end` of a job that ran no call (it was already over, or another live job
    holds it): no session ran and nothing is delivered. What the job started in the background
    (recovery, which may be delivering the earlier run's journaled transcript) gets up to
    `timeout`, then the call's span ends."""
    await call.settle_tasks(timeout)
    if call.span is not None:
        call.span.set_attribute("voice_agent.already_ended", call.already_ended)
        call.span.set_attribute("voice_agent.held_elsewhere", call.held_by is not None)
        call.span.end()
