"""The journal's look-back for a job that starts in a room whose call may already have turns.

Rule: a job re-dispatched into the same room (by LiveKit or by `python -m agent watch`) has a new
job id, so the earlier call is found by its session and attempt, never by the call id. Only a row
that no other live process holds can be continued (its turns adopted, the row superseded by
`LiveCall.open_call`); a row held elsewhere counts only when it holds a complete transcript (that
call is over: its holder is delivering it). Reads only: nothing here changes a row or a lease.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.journal.base import JournalBase
from agent.journal.payloads import RowUnreadable, rank, row_transcript
from agent.log import get_logger
from agent.models import TranscriptPayload

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class EarlierCall:
    """The best transcript the journal holds for a session attempt, and the row it came from."""

    call_id: str
    payload: TranscriptPayload
    # another live process owns the row: it may not be adopted (only complete ones are returned)
    held_elsewhere: bool


class EarlierCalls(JournalBase):
    """Which journaled call, if any, a new job of the same session attempt continues."""

    def earlier_call(self, session_id: str, attempt_number: int) -> EarlierCall | None:
        """The best (complete over incomplete, then more turns) live or pending row of this
        session attempt, under any call id: a row no other live process holds (its owner died,
        or its lease lapsed, or it is this process's own), or a complete one held elsewhere.
        None when there is none, or the best has no turns and is not complete (nothing to
        continue from). Dead letters are an operator's, never continued."""
        now = self._clock()
        found: EarlierCall | None = None
        with self._lock:
            # one read transaction: the rows and their turns from one snapshot
            self._conn.execute("BEGIN")
            try:
                rows = self._conn.execute(
                    f"SELECT call_id, payload, started_at, updated_at, "
                    f"{self._OWNER_COLUMNS} FROM calls "
                    f"WHERE session_id = ? AND attempt_number = ? AND state IN ('live', 'pending') "
                    f"ORDER BY updated_at",
                    (session_id, attempt_number),
                ).fetchall()
                for call_id, stored, started_at, updated_at, *owner in rows:
                    held = self._held_by_other(self._conn, call_id, tuple(owner), now)
                    try:
                        payload = row_transcript(
                            self._conn,
                            call_id,
                            attempt_number,
                            started_at,
                            stored,
                            updated_at,
                            empty_ok=False,
                        )
                    except RowUnreadable:
                        # never continued; recovery sets it aside as a dead letter
                        log.warning("journal.earlier_row_unreadable", call_id=call_id)
                        continue
                    if payload is None or (held and not payload.complete):
                        continue
                    if found is None or rank(payload.complete, payload.turn_count) > rank(
                        found.payload.complete, found.payload.turn_count
                    ):
                        found = EarlierCall(call_id, payload, held)
            finally:
                self._conn.execute("COMMIT")
        if found is not None and not found.payload.complete and not found.payload.turns:
            return None
        return found
