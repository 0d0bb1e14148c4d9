"""The worker's reads of the journal: a call's state, holder and current transcript.

Rule: reads only, each under the journal's lock; none changes a row or its lease.
"""

from __future__ import annotations

from typing import cast

from agent.journal.base import JournalBase
from agent.journal.ownership import Owner
from agent.journal.payloads import parse_payload, row_transcript
from agent.journal.schema import CallState
from agent.models import EndedReason, TranscriptPayload


class Queries(JournalBase):
    """The worker's reads."""

    def state(self, call_id: str) -> CallState | None:
        """None: no row (delivered, or never journaled)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT state FROM calls WHERE call_id = ?", (call_id,)
            ).fetchone()
        return None if row is None else cast(CallState, row[0])

    def holder(self, call_id: str) -> Owner | None:
        """The process that owns the row now; None when nobody does (released, dead letter,
        delivered)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT owner_host, owner_boot_id, owner_pid, owner_start_ticks FROM calls "
                "WHERE call_id = ?",
                (call_id,),
            ).fetchone()
        if row is None or row[2] is None:
            return None
        return Owner(row[0] or "", row[1] or "", int(row[2]), int(row[3] or 0))

    def is_undelivered(self, call_id: str) -> bool:
        """True while the call is live or pending; a dead letter counts as settled (its retry is
        an operator's decision), and no row means delivered."""
        return self.state(call_id) in ("live", "pending")

    def current_payload(
        self, call_id: str, *, ended_reason: EndedReason = "crashed"
    ) -> TranscriptPayload | None:
        """The transcript the journal would deliver for this call now: the stored final one, or
        (for a live row) the better of that and one rebuilt from its turns with `ended_reason`
        (complete unless that is `crashed` or `in_progress`). Raises RowUnreadable when the row
        holds something and none of it builds."""
        with self._lock:
            row = self._conn.execute(
                "SELECT state, payload, attempt_number, started_at, updated_at FROM calls "
                "WHERE call_id = ?",
                (call_id,),
            ).fetchone()
            if row is None:
                return None
            state, stored, attempt, started_at, updated_at = row
            if state == "live":
                return row_transcript(
                    self._conn,
                    call_id,
                    attempt,
                    started_at,
                    stored,
                    updated_at,
                    ended_reason=ended_reason,
                )
        return parse_payload(call_id, stored)

    def journal_mode(self) -> str:
        with self._lock:
            return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])
