"""The recordings' side of `python -m agent journal`: their counts (`status`), their lines
(`list`) and their upload now (`retry CALL#partN`, `retry --all-dead`).

Rule: as for the calls (journal_cli): ids, states, sizes and the backend's reasons are printed,
never audio and never a file's path. `retry` uploads through the worker's own code,
`agent.recording.upload_recording` with the backend `make_backend` chose, so a retried recording
follows the same rules as any other: only its row's owner uploads it, its file is deleted only
once the journal says delivered, a rejection is kept as a dead letter. To own the row, the
command claims that one row as any recovery may (`Journal.claim_recordings(only=...)`: never
a row a live process holds).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC

from agent.backend import Backend
from agent.journal import CallState, Journal, RecordingRow, RecordingState, RecordingToSend
from agent.ops.journal_text import (
    MAX_ERROR_CHARS,
    MAX_ID_CHARS,
    human_age,
    one_line,
    outcome_line,
)

STATES: tuple[RecordingState, ...] = ("recording", "pending", "dead")
# `list --live|--pending|--dead`: a recording still being written belongs to a live call.
FOR_CALL_STATE: dict[CallState, RecordingState] = {
    "live": "recording",
    "pending": "pending",
    "dead": "dead",
}
HEADER = ("STATE", "RECORDING", "SESSION", "ATTEMPT", "PART", "BYTES", "TRIES", "AGE", "LAST ERROR")


def is_recording_id(text: str) -> bool:
    """A recording's id is `{call_id}#part{N}` (Journal.open_recording)."""
    return "#part" in text


def age_seconds(row: RecordingRow, now: float) -> float:
    """Since the recording started (the journal keeps no time of its sealing); the row's last
    update when the start is unreadable."""
    started = row.started_at
    if started is None:
        return max(0.0, now - row.updated_at)
    # A naive time would be read as local time; everything stored here is UTC.
    started = started if started.tzinfo is not None else started.replace(tzinfo=UTC)
    return max(0.0, now - started.timestamp())


def status_lines(rows: list[RecordingRow], now: float) -> list[str]:
    """`recordings STATE: N` per state, then how long the oldest pending one has waited."""
    counts = Counter(row.state for row in rows)
    lines = [f"recordings {state}: {counts[state]}" for state in STATES]
    ages = [age_seconds(row, now) for row in rows if row.state == "pending"]
    if ages:
        oldest = max(ages)
        lines.append(f"recordings oldest pending: {human_age(oldest)} ({oldest:.0f} s)")
    else:
        lines.append("recordings oldest pending: none")
    return lines


def cells(row: RecordingRow, now: float) -> tuple[str, ...]:
    return (
        row.state,
        one_line(row.recording_id, MAX_ID_CHARS),
        one_line(row.session_id, MAX_ID_CHARS),
        str(row.attempt_number),
        str(row.part),
        "-" if row.size is None else str(row.size),  # not sealed yet
        str(row.attempts),
        human_age(age_seconds(row, now)),
        one_line(row.last_error, MAX_ERROR_CHARS),
    )


def find(journal: Journal, rec_id: str) -> list[RecordingRow]:
    """The recording with this id, in any state (a delivered one is a tombstone for a week)."""
    rows = journal.recording_rows() + journal.recording_rows("delivered")
    return [row for row in rows if row.recording_id == rec_id]


async def retry_recording(
    journal: Journal, backend: Backend, row: RecordingRow, *, deadline: float
) -> tuple[str, str] | None:
    """Upload one recording now (a dead letter moved back to pending first). Returns the line
    to print and the outcome's status; None when nothing was attempted (its line printed)."""
    name = one_line(row.recording_id, MAX_ID_CHARS)
    if row.state == "recording":
        print(f"{name}: recording (a call in progress, or not yet recovered): not retried")
        return None
    if row.state == "delivered":
        return describe(row, "already_delivered", ""), "already_delivered"
    if row.state == "dead":
        moved = await asyncio.to_thread(journal.requeue_dead_recordings, row.recording_id)
        if not moved:
            print(f"{name}: no longer a dead letter (changed meanwhile): not retried")
            return None
    item = await asyncio.to_thread(_claim, journal, row.recording_id)
    if item is None:
        # a live process holds it (its call's upload, or a recovery): that one uploads it
        return describe(row, "deferred", "held by another process"), "deferred"
    # Here only: agent.recording imports the LiveKit agents library (its recorder), seconds
    # that `status` and `list` must not pay.
    from agent.recording import upload_recording

    outcome = await upload_recording(journal, backend, item, deadline=deadline)
    return describe(row, outcome.status, outcome.detail), outcome.status


def _claim(journal: Journal, rec_id: str) -> RecordingToSend | None:
    """Own this one recording the way recovery would (never a row a live process holds)."""
    claimed = journal.claim_recordings(only=rec_id)
    return claimed[0] if claimed else None


def describe(row: RecordingRow, status: str, detail: str) -> str:
    session = one_line(row.session_id, MAX_ID_CHARS)
    return outcome_line(
        one_line(row.recording_id, MAX_ID_CHARS),
        status,
        detail,
        delivered=f"session {session}, attempt {row.attempt_number}, part {row.part}",
        already="the backend holds this part",
    )
