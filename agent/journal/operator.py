"""The operator's side of the journal, for `python -m agent journal` (agent/ops/journal_cli.py).

Rule: used often while a worker runs on the same file. The reads are single autocommit SELECTs:
in WAL mode each is a short read transaction that never blocks a writer (a live call's appends).
The writes, `requeue_dead` and `requeue_dead_recordings`, are single UPDATEs under the write
lock. Only non-ownership
columns are read here, so these stay valid whatever the ownership scheme.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from agent.journal.base import JournalBase
from agent.journal.schema import CallState, RecordingState


class OperatorQueries(JournalBase):
    """The operator's reads (calls and recordings) and the dead letters' requeues."""

    def rows(self, state: CallState | None = None) -> list[JournalRow]:
        """Every call (or those in `state`), oldest first, as the operator sees them: ids,
        counts, reasons and times, never transcript text."""
        with self._lock:
            rows = self._conn.execute(
                """
                SELECT call_id, session_id, attempt_number, state,
                    COALESCE(turn_count,
                             (SELECT count(*) FROM turns t WHERE t.call_id = c.call_id)),
                    ended_reason, dead_reason, attempts, started_at,
                    CASE WHEN json_valid(payload) THEN json_extract(payload, '$.endedAt') END,
                    updated_at
                FROM calls c WHERE :state IS NULL OR state = :state
                ORDER BY started_at, call_id
                """,
                {"state": state},
            ).fetchall()
        return [
            JournalRow(
                call_id=str(call_id),
                session_id=str(session_id),
                attempt_number=int(attempt),
                state=cast(CallState, row_state),
                turn_count=int(turns or 0),
                ended_reason=ended_reason,
                last_error=dead_reason,
                attempts=int(attempts or 0),
                started_at=_parse_time(started_at),
                ended_at=_parse_time(ended_at),
                updated_at=float(updated_at),
            )
            for (
                call_id,
                session_id,
                attempt,
                row_state,
                turns,
                ended_reason,
                dead_reason,
                attempts,
                started_at,
                ended_at,
                updated_at,
            ) in rows
        ]

    def requeue_dead(self, call_id: str | None = None, *, now: float | None = None) -> list[str]:
        """Move dead letters (one, or all when `call_id` is None) back to pending, unowned, so
        that a delivery (the operator's retry, or any recovery) may take them. The last error
        stays on the row until a delivery replaces the transcript. Returns the ids moved."""
        now = time.time() if now is None else now
        with self._transaction() as conn:
            rows = conn.execute(
                "UPDATE calls SET state = 'pending', updated_at = :now "
                "WHERE state = 'dead' AND (:call_id IS NULL OR call_id = :call_id) "
                "RETURNING call_id",
                {"call_id": call_id, "now": now},
            ).fetchall()
        return sorted(str(row[0]) for row in rows)

    def recording_rows(self, state: RecordingState | None = None) -> list[RecordingRow]:
        """Every recording not yet delivered (or those in `state`), oldest first."""
        with self._lock:
            rows = self._conn.execute(
                """
                SELECT recording_id, call_id, session_id, attempt_number, part, state, size,
                    dead_reason, attempts, started_at, updated_at
                FROM recordings
                WHERE (:state IS NULL AND state != 'delivered') OR state = :state
                ORDER BY started_at, recording_id
                """,
                {"state": state},
            ).fetchall()
        return [
            RecordingRow(
                recording_id=str(rec_id),
                call_id=str(call_id),
                session_id=str(session_id),
                attempt_number=int(attempt),
                part=int(part),
                state=cast(RecordingState, row_state),
                size=None if size is None else int(size),
                last_error=reason,
                attempts=int(attempts or 0),
                started_at=_parse_time(started_at),
                updated_at=float(updated),
            )
            for (
                rec_id,
                call_id,
                session_id,
                attempt,
                part,
                row_state,
                size,
                reason,
                attempts,
                started_at,
                updated,
            ) in rows
        ]

    def requeue_dead_recordings(self, rec_id: str | None = None) -> list[str]:
        """Dead recordings (one, or all) back to pending, unowned: the next delivery takes
        them. Returns the ids moved."""
        with self._transaction() as conn:
            rows = conn.execute(
                f"UPDATE recordings SET state = 'pending', {self._SET_NOBODY}, "
                f"updated_at = :wall "
                f"WHERE state = 'dead' AND (:id IS NULL OR recording_id = :id) "
                f"RETURNING recording_id",
                {"id": rec_id, "wall": self._wall()},
            ).fetchall()
        return sorted(str(row[0]) for row in rows)


@dataclass(frozen=True, slots=True)
class RecordingRow:
    """One recording as the operator sees it: ids, size, state and last error; never audio."""

    recording_id: str
    call_id: str
    session_id: str
    attempt_number: int
    part: int
    state: RecordingState
    size: int | None
    last_error: str | None
    attempts: int
    started_at: datetime | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class JournalRow:
    """One call as `Journal.rows` reports it. `last_error` is the dead letter's reason (the
    server's, capped when it was stored)."""

    call_id: str
    session_id: str
    attempt_number: int
    state: CallState
    turn_count: int
    ended_reason: str | None
    last_error: str | None
    attempts: int
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: float

    def age_seconds(self, now: float) -> float:
        """A live call's age since it started; a transcript's since its call ended (the time it
        has waited for the backend). Falls back to the row's last update."""
        mark = self.started_at if self.state == "live" else self.ended_at
        since = mark.timestamp() if mark is not None else self.updated_at
        return max(0.0, now - since)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # A naive time would be read as local time; everything stored here is UTC.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
