"""Journaled rows as transcripts, and which of several transcripts of one call is best.

Rule: the journal keeps and delivers the best transcript it has seen for a call (complete over
incomplete, then more turns, as the backend ranks them); a transcript rebuilt from turns is
`complete` exactly when its ended reason is not one of INCOMPLETE_REASONS (DESIGN.md). A row from
which no valid transcript can be built is that row's problem only (`RowUnreadable`, with a reason
that names fields and rules, never text): its caller sets it aside and goes on with the others.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from agent.log import get_logger
from agent.models import (
    INCOMPLETE_REASONS,
    EndedReason,
    TranscriptPayload,
    Turn,
    utc_from_timestamp,
)

log = get_logger(__name__)

MAX_PROBLEM_CHARS = 500


class RowUnreadable(Exception):
    """No valid transcript can be built from a journaled row; `reason` says why (field paths
    and rules only, never transcript text), for its dead letter and the operator."""

    def __init__(self, call_id: str, reason: str) -> None:
        self.call_id = call_id
        self.reason = reason[:MAX_PROBLEM_CHARS]
        super().__init__(f"call {call_id!r}: {self.reason}")


def describe_problem(error: Exception) -> str:
    """What is wrong, by field and rule (pydantic's messages never quote the input; the other
    errors that building a row can raise are about its times and numbers, never its text)."""
    if isinstance(error, ValidationError):
        found = error.errors(include_url=False, include_input=False)
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in found]
        more = f" (+{len(parts) - 3} more)" if len(parts) > 3 else ""
        return "; ".join(parts[:3]) + more
    return f"{type(error).__name__}: {error}"[:200]


def rank(complete: bool, turn_count: int) -> tuple[bool, int]:
    # The backend's ranking within one attempt (source is always agent here): complete first,
    # then more turns. The journal keeps the best transcript it has seen for a call.
    return (complete, turn_count)


def best(*candidates: TranscriptPayload | None) -> TranscriptPayload | None:
    """The best of several transcripts of one call (the first of equals), None if none."""
    winner: TranscriptPayload | None = None
    for candidate in candidates:
        if candidate is not None and (
            winner is None
            or rank(candidate.complete, candidate.turn_count)
            > rank(winner.complete, winner.turn_count)
        ):
            winner = candidate
    return winner


def turn_row(call_id: str, turn: Turn) -> tuple[str, int, str, str, str, str, int]:
    return (
        call_id,
        turn.seq,
        turn.role,
        turn.text,
        turn.started_at.isoformat(),
        turn.ended_at.isoformat(),
        int(turn.interrupted),
    )


def turn_from_row(seq: int, row: tuple[Any, ...]) -> Turn:
    """A `turns` row (seq, role, text, started_at, ended_at, interrupted) as turn number `seq`."""
    _, role, text, started_at, ended_at, interrupted = row
    return Turn(
        seq=seq,
        role=role,
        text=text,
        started_at=datetime.fromisoformat(started_at),
        ended_at=datetime.fromisoformat(ended_at),
        interrupted=bool(interrupted),
    )


def parse_payload(call_id: str, stored: str | None) -> TranscriptPayload | None:
    if stored is None:
        return None
    try:
        return TranscriptPayload.model_validate_json(stored)
    except ValidationError as error:
        log.error("journal.payload_invalid", call_id=call_id, errors=error.error_count())
        return None


def row_transcript(
    conn: sqlite3.Connection,
    call_id: str,
    attempt_number: int,
    started_at: str,
    stored: str | None,
    last_sign_of_life: float,
    *,
    ended_reason: EndedReason = "crashed",
    empty_ok: bool = True,
) -> TranscriptPayload | None:
    """The best transcript a row holds: its stored one, or one rebuilt from its turns (see
    `rebuild`). None when it holds neither (no stored transcript, no turns and not `empty_ok`).
    Raises RowUnreadable, naming each problem, when it holds something and none of it builds."""
    problems: list[str] = []
    payload: TranscriptPayload | None = None
    if stored is not None:
        try:
            payload = TranscriptPayload.model_validate_json(stored)
        except ValidationError as error:
            problems.append(f"stored transcript: {describe_problem(error)}")
    try:
        rebuilt = rebuild(
            conn,
            call_id,
            attempt_number,
            started_at,
            last_sign_of_life,
            ended_reason=ended_reason,
            empty_ok=empty_ok,
        )
    except RowUnreadable as error:
        problems.append(f"journaled turns: {error.reason}")
        rebuilt = None
    chosen = best(payload, rebuilt)
    if chosen is None and problems:
        raise RowUnreadable(call_id, "; ".join(problems))
    return chosen


def rebuild(
    conn: sqlite3.Connection,
    call_id: str,
    attempt_number: int,
    started_at: str,
    last_sign_of_life: float,
    *,
    ended_reason: EndedReason = "crashed",
    empty_ok: bool = True,
) -> TranscriptPayload | None:
    """The transcript of a call from its journaled turns. `complete` follows the design rule
    (false exactly for `crashed` and `in_progress`): a live process that ends its call for
    another reason (the backstop's `job_terminated`) journaled every final turn it saw.
    None when it has no turns and not `empty_ok`; RowUnreadable when it cannot be built
    (whatever the cause: one row's problem must never stop the caller's pass over the others)."""
    rows = conn.execute(
        "SELECT seq, role, text, started_at, ended_at, interrupted FROM turns "
        "WHERE call_id = ? ORDER BY seq",
        (call_id,),
    ).fetchall()
    if not rows and not empty_ok:
        return None
    if any(row[0] != index for index, row in enumerate(rows, start=1)):
        # A lost turn (an append that failed) must not make the rest undeliverable: the
        # wire format wants seq 1..n, so renumber and say so.
        log.warning("journal.seq_gap", call_id=call_id, turns=len(rows))
    try:
        turns = [turn_from_row(index, row) for index, row in enumerate(rows, start=1)]
        started = datetime.fromisoformat(started_at)
        # The call ended somewhere between its last turn and its last lease refresh.
        ended = max([started, utc_from_timestamp(last_sign_of_life)] + [t.ended_at for t in turns])
        return TranscriptPayload(
            attempt_number=attempt_number,
            complete=ended_reason not in INCOMPLETE_REASONS,
            ended_reason=ended_reason,
            started_at=started,
            ended_at=ended,
            turn_count=len(turns),
            turns=turns,
        )
    except Exception as error:
        log.error("journal.rebuild_failed", call_id=call_id, error_type=type(error).__name__)
        raise RowUnreadable(call_id, describe_problem(error)) from None
