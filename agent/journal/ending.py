"""The end of a call: the final transcript, delivery rounds, delivered rows, dead letters.

Rule: only the row's owner may delete (delivered), dead-letter or release it; a better transcript
than the stored one is never overwritten, and one written while another process holds the row is
left in it for that process to deliver.
"""

from __future__ import annotations

from agent.journal.base import JournalBase
from agent.journal.ownership import CallHeldElsewhere
from agent.journal.payloads import parse_payload, rank
from agent.log import get_logger
from agent.models import TranscriptPayload

log = get_logger(__name__)

MAX_REASON_CHARS = 1_000


class CallEnd(JournalBase):
    """Writes at the end of a call; deleting, dead-lettering and releasing a row are its
    owner's alone."""

    def finish_call(
        self,
        call_id: str,
        payload: TranscriptPayload,
        *,
        session_id: str | None = None,
    ) -> TranscriptPayload | None:
        """Store the final transcript (state pending, owned by this process) and return the one
        to deliver. The journal keeps the best transcript it has seen for a call (complete over
        incomplete, then more turns), so a late rebuild never overwrites a fuller one. A call
        that was never opened, or was already delivered, is written anew: that needs
        `session_id`. None: the call is a dead letter whose transcript ranks at least as high
        as this one (it was rejected already; retrying is an operator's decision).

        Raises CallHeldElsewhere when another live process holds the row (it claimed it for
        recovery): the row stays that process's, but a better transcript than the one stored
        is left in it first, so that whoever delivers the row delivers the best one."""
        now = self._clock()
        held_elsewhere = False
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT state, payload, complete, turn_count, {self._OWNER_COLUMNS} "
                f"FROM calls WHERE call_id = ?",
                (call_id,),
            ).fetchone()
            chosen = payload
            if row is not None and row[1] is not None:
                stored_rank = rank(bool(row[2]), int(row[3]))
                new_rank = rank(payload.complete, payload.turn_count)
                if row[0] == "dead" and stored_rank >= new_rank:
                    return None
                if stored_rank > new_rank:
                    chosen = parse_payload(call_id, row[1]) or payload
            params = {
                "call_id": call_id,
                "payload": chosen.to_json_bytes().decode(),
                "complete": int(chosen.complete),
                "turn_count": chosen.turn_count,
                "ended_reason": chosen.ended_reason,
                "lease_until": now + self.lease_seconds,
                "wall": self._wall(),
            } | self._mine()
            if row is not None and self._held_by_other(conn, call_id, row[4:], now):
                held_elsewhere = True
                if chosen is payload:
                    conn.execute(
                        "UPDATE calls SET payload = :payload, complete = :complete, "
                        "turn_count = :turn_count, ended_reason = :ended_reason, "
                        "updated_at = :wall WHERE call_id = :call_id",
                        params,
                    )
            elif row is None:
                if session_id is None:
                    raise LookupError(f"journal: no call {call_id!r} and no session_id given")
                conn.execute(
                    """
                    INSERT INTO calls (call_id, session_id, attempt_number, started_at,
                        owner_host, owner_boot_id, owner_pid, owner_start_ticks, lease_until,
                        state, ended_reason, payload, complete, turn_count, updated_at)
                    VALUES (:call_id, :session_id, :attempt, :started_at, :host, :boot, :pid,
                        :ticks, :lease_until, 'pending', :ended_reason, :payload, :complete,
                        :turn_count, :wall)
                    """,
                    params
                    | {
                        "session_id": session_id,
                        "attempt": chosen.attempt_number,
                        "started_at": chosen.started_at.isoformat(),
                    },
                )
            else:
                conn.execute(
                    f"""
                    UPDATE calls SET state = 'pending', payload = :payload,
                        complete = :complete, turn_count = :turn_count,
                        ended_reason = :ended_reason, dead_reason = NULL, {self._SET_MINE},
                        lease_until = :lease_until, lease_generation = lease_generation + 1,
                        updated_at = :wall
                    WHERE call_id = :call_id
                    """,
                    params,
                )
            # The per-turn rows stay until the row is delivered: a process that lost this row
            # (or a run of the same job) may still need them, and they cost little.
        if held_elsewhere:
            raise CallHeldElsewhere(call_id)
        return chosen

    def begin_attempt(self, call_id: str) -> int:
        """Count one delivery round of a row this process owns (refreshing its lease) and return
        the count so far; 0 when the row is not ours."""
        with self._transaction() as conn:
            row = conn.execute(
                f"UPDATE calls SET attempts = attempts + 1, lease_until = :lease_until, "
                f"lease_generation = lease_generation + 1, updated_at = :wall "
                f"WHERE call_id = :call_id AND {self._IS_MINE} RETURNING attempts",
                {"call_id": call_id, "lease_until": self._lease_until(), "wall": self._wall()}
                | self._mine(),
            ).fetchone()
            return int(row[0]) if row is not None else 0

    def mark_delivered(self, call_id: str, delivered: TranscriptPayload | None = None) -> bool:
        """The backend holds the transcript: drop the row and its turns. Only the owner may;
        False (and a log line) when another process took the row over meanwhile. With
        `delivered` (what was posted): when the journal meanwhile holds a better transcript
        (the call's owner finished while this process was delivering a rebuild, or kept
        appending turns), the row is kept pending and released instead, so the next recovery
        delivers the better one; False then too."""
        superseded = False
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT complete, turn_count, "
                f"(SELECT count(*) FROM turns t WHERE t.call_id = c.call_id) "
                f"FROM calls c WHERE call_id = :call_id AND {self._IS_MINE}",
                {"call_id": call_id} | self._mine(),
            ).fetchone()
            if row is not None and delivered is not None:
                sent = rank(delivered.complete, delivered.turn_count)
                stored = rank(bool(row[0]), int(row[1] or 0))
                rebuilt = rank(False, int(row[2]))
                superseded = max(stored, rebuilt) > sent
            if row is not None and superseded:
                conn.execute(
                    f"UPDATE calls SET state = 'pending', {self._SET_NOBODY}, updated_at = ? "
                    f"WHERE call_id = ?",
                    (self._wall(), call_id),
                )
            elif row is not None:
                conn.execute("DELETE FROM calls WHERE call_id = ?", (call_id,))
                conn.execute("DELETE FROM turns WHERE call_id = ?", (call_id,))
                conn.execute("DELETE FROM lease_watch WHERE call_id = ?", (call_id,))
        if row is None:
            log.warning("journal.not_owner", call_id=call_id, operation="mark_delivered")
        elif superseded:
            sent_turns = delivered.turn_count if delivered is not None else None
            log.info("journal.superseded", call_id=call_id, delivered_turns=sent_turns)
        self.checkpoint()
        return row is not None and not superseded

    def mark_dead(self, call_id: str, reason: str) -> bool:
        """Keep the row as a dead letter: never dropped, never claimed again automatically."""
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE calls SET state = 'dead', dead_reason = :reason, {self._SET_NOBODY}, "
                f"updated_at = :wall WHERE call_id = :call_id AND {self._IS_MINE}",
                {"call_id": call_id, "reason": reason[:MAX_REASON_CHARS], "wall": self._wall()}
                | self._mine(),
            )
            if cursor.rowcount == 1:
                return True
        log.warning("journal.not_owner", call_id=call_id, operation="mark_dead")
        return False

    def release(self, call_id: str) -> bool:
        """Give up ownership (delivery deferred) so that any process's recovery may claim it."""
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE calls SET {self._SET_NOBODY}, updated_at = :wall "
                f"WHERE call_id = :call_id AND state != 'dead' AND {self._IS_MINE}",
                {"call_id": call_id, "wall": self._wall()} | self._mine(),
            )
            return cursor.rowcount == 1
