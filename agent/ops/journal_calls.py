"""The calls' part of `python -m agent journal`: a call's line in `list`, and the retry of one
call's transcript through the worker's own delivery (`agent.delivery.deliver`).

Rule: a live call is never retried (its process, or recovery, owns it); a dead letter is moved
back to pending first, then delivered as any transcript is: journal first, removed only once the
backend acknowledged it. Never transcript text in the output.
"""

from __future__ import annotations

import asyncio

from agent.backend import Backend
from agent.delivery import DeliveryOutcome, deliver
from agent.journal import Journal, JournalRow
from agent.ops.journal_text import MAX_ERROR_CHARS, MAX_ID_CHARS, human_age, one_line, outcome_line

HEADER = ("STATE", "CALL", "SESSION", "ATTEMPT", "TURNS", "ENDED", "TRIES", "AGE", "LAST ERROR")


def cells(row: JournalRow, now: float) -> tuple[str, ...]:
    return (
        row.state,
        one_line(row.call_id, MAX_ID_CHARS),
        one_line(row.session_id, MAX_ID_CHARS),
        str(row.attempt_number),
        str(row.turn_count),
        one_line(row.ended_reason, MAX_ID_CHARS),
        str(row.attempts),
        human_age(row.age_seconds(now)),
        one_line(row.last_error, MAX_ERROR_CHARS),
    )


async def retry_call(
    journal: Journal, backend: Backend, row: JournalRow, deadline: float
) -> tuple[str, str] | None:
    name = one_line(row.call_id, MAX_ID_CHARS)
    if row.state == "live":
        print(f"{name}: live (a call in progress, or not yet recovered): not retried")
        return None
    payload = await asyncio.to_thread(journal.current_payload, row.call_id)
    if payload is None:
        print(f"{name}: its stored transcript does not validate: kept as it is")
        return None
    if row.state == "dead":
        moved = await asyncio.to_thread(journal.requeue_dead, row.call_id)
        if not moved:
            print(f"{name}: no longer a dead letter (changed meanwhile): not retried")
            return None
    outcome = await deliver(
        journal, backend, row.call_id, row.session_id, payload, deadline=deadline
    )
    return describe(outcome), outcome.status


def describe(outcome: DeliveryOutcome) -> str:
    """One line per retried call: what happened and where the transcript is now."""
    return outcome_line(
        one_line(outcome.call_id, MAX_ID_CHARS),
        outcome.status,
        outcome.detail,
        delivered=f"session {one_line(outcome.session_id, MAX_ID_CHARS)}",
        already="the backend holds an equal or better transcript",
    )
