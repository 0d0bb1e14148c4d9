"""Recovery: taking over the rows whose owner is gone or whose lease lapsed.

Rule: a row is claimed by exactly one process, in one UPDATE under BEGIN IMMEDIATE, and never
while its lease is fresh (`ownership`); the claimer delivers the best transcript the row has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from agent.journal.base import JournalBase
from agent.journal.payloads import RowUnreadable, row_transcript
from agent.log import get_logger
from agent.models import TranscriptPayload

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ClaimedCall:
    """A row taken over by `claim_recoverable`, now owned by this process, and what to send."""

    call_id: str
    session_id: str
    previous_state: Literal["live", "pending"]
    payload: TranscriptPayload


class Recovery(JournalBase):
    """Claims of lapsed rows, and the sweep of what delivered rows left behind."""

    def claim_recoverable(self, *, limit: int | None = None) -> list[ClaimedCall]:
        """Take over every live or pending row (at most `limit`) whose lease lapsed or whose
        owner is provably gone (agent.journal.ownership has the rule), in one UPDATE under BEGIN
        IMMEDIATE: the claimer becomes the owner with a fresh lease, so a row is claimed by
        exactly one process, and never a row with a fresh lease. What to deliver is the best
        transcript the row has: its stored one, or one rebuilt from its turns (incomplete,
        `crashed`: the call's process died or hung past its lease). The turns stay in the journal
        until the row is delivered. Rows owned by this very process are never claimed here."""
        now = self._clock()
        claimed: list[ClaimedCall] = []
        unreadable: list[tuple[str, str]] = []  # (call id, why): set aside, the pass goes on
        with self._transaction() as conn:
            self._alive_memo.clear()  # liveness is judged afresh, inside the write lock
            candidates = conn.execute(
                f"SELECT call_id, {self._OWNER_COLUMNS} FROM calls "
                f"WHERE state IN ('live', 'pending') AND NOT ({self._IS_MINE}) "
                f"ORDER BY updated_at",
                self._mine(),
            ).fetchall()
            chosen = [
                row[0] for row in candidates if self._lapsed(conn, row[0], row[1:], now, watch=True)
            ][: len(candidates) if limit is None else limit]
            ids = json.dumps(chosen)
            rows = conn.execute(
                f"""
                UPDATE calls SET {self._SET_MINE}, lease_until = :lease_until,
                    lease_generation = lease_generation + 1
                WHERE call_id IN (SELECT value FROM json_each(:ids))
                RETURNING call_id, session_id, attempt_number, started_at, state, payload,
                    updated_at
                """,
                {"ids": ids, "lease_until": now + self.lease_seconds} | self._mine(),
            ).fetchall()
            conn.execute(
                "DELETE FROM lease_watch WHERE call_id IN (SELECT value FROM json_each(?))", (ids,)
            )
            rows.sort(key=lambda row: chosen.index(row[0]))
            for call_id, session_id, attempt, started_at, state, stored, updated in rows:
                try:
                    live = state == "live"
                    payload = row_transcript(
                        conn, call_id, attempt, started_at, stored, updated, empty_ok=live
                    )
                except RowUnreadable as error:
                    unreadable.append((call_id, f"unreadable row: {error.reason}"))
                    continue
                if payload is None:
                    unreadable.append((call_id, "unreadable row: no transcript stored"))
                    continue
                claimed.append(ClaimedCall(call_id, session_id, state, payload))
            for call_id, why in unreadable:
                # Kept as a dead letter for an operator: retrying would fail the same way.
                conn.execute(
                    f"UPDATE calls SET state = 'dead', dead_reason = ?, {self._SET_NOBODY} "
                    f"WHERE call_id = ?",
                    (why, call_id),
                )
            dead = conn.execute("SELECT count(*) FROM calls WHERE state = 'dead'").fetchone()[0]
        self.checkpoint()
        if claimed:
            log.info(
                "journal.claimed",
                count=len(claimed),
                crashed=sum(1 for c in claimed if c.previous_state == "live"),
                call_ids=[c.call_id for c in claimed],
            )
        for call_id, _why in unreadable:
            log.error("journal.row_set_aside", call_id=call_id)
        if dead:
            # Dead letters wait for an operator (`python -m agent journal`): say so on every sweep.
            log.warning("journal.dead_letters", count=int(dead))
        return claimed

    def sweep_orphan_turns(self) -> int:
        """Delete turns whose call row is gone (a hung owner that kept appending after its call
        was recovered and delivered), and lease observations of gone rows. Returns how many
        turns. Run by every recovery pass (`agent.delivery.recover_pending`)."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM turns WHERE call_id NOT IN (SELECT call_id FROM calls)"
            )
            conn.execute("DELETE FROM lease_watch WHERE call_id NOT IN (SELECT call_id FROM calls)")
            return cursor.rowcount
