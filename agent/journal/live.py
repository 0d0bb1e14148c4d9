"""The live call: opening its row, journaling each final turn, refreshing its lease.

Rule: `append_turn` runs on the event loop, so it is one committed INSERT on its own connection
and never fsyncs (the WAL checkpoint runs from the off-loop calls, see `JournalBase.checkpoint`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from agent.journal.base import JournalBase
from agent.journal.ownership import AttemptHeldElsewhere, CallHeldElsewhere
from agent.journal.payloads import parse_payload, turn_from_row, turn_row
from agent.log import get_logger
from agent.models import Turn

log = get_logger(__name__)

# A safety net for a caller that appends but never refreshes a lease: the WAL stays bounded.
APPENDS_PER_FORCED_CHECKPOINT = 2_000


class LiveCall(JournalBase):
    """Writes while a call is live: the row, its turns and its lease."""

    def open_call(
        self,
        call_id: str,
        *,
        session_id: str,
        attempt_number: int,
        started_at: datetime,
        continue_from: str | None = None,
        adopt: bool = False,
        seed: Sequence[Turn] = (),
    ) -> list[Turn]:
        """Start journaling a call, owned by this process with a fresh lease, and return the
        turns an earlier run of it journaled (seq 1..k; empty for a new call). The caller
        continues `seq` after them and its final transcript includes them: an id opened again
        (LiveKit running the same job in a new process) never overwrites the first run's
        turns. `continue_from`: start this row from another call's turns instead (its row held
        elsewhere). `adopt` (with `continue_from`, a dead run of the same session attempt
        under another job id: a re-dispatched job): that row is superseded in this same
        transaction, deleted with its turns once they are this row's, so no recovery ever
        delivers it as a separate `crashed` transcript; a row another live process holds is
        never superseded (its turns are still copied). `seed`: turns known from elsewhere (the
        backend's checkpoint), used when the journal has fewer.

        The journal is the lock on a session attempt: raises AttemptHeldElsewhere, writing
        nothing, while another live process holds a live call of the same attempt (this one
        included: two jobs in one room). Raises CallHeldElsewhere, writing nothing, while
        another live process holds this row after its call ended (delivering it)."""
        now = self._clock()
        with self._transaction() as conn:
            for other, *owner in conn.execute(
                f"SELECT call_id, {self._OWNER_COLUMNS} FROM calls "
                f"WHERE session_id = ? AND attempt_number = ? AND state = 'live'",
                (session_id, attempt_number),
            ).fetchall():
                if self._held_by_other(conn, other, tuple(owner), now):
                    raise AttemptHeldElsewhere(other)
            row = conn.execute(
                f"SELECT {self._OWNER_COLUMNS} FROM calls WHERE call_id = ?", (call_id,)
            ).fetchone()
            if row is not None and self._held_by_other(conn, call_id, row, now):
                raise CallHeldElsewhere(call_id)
            earlier = self._earlier_turns(conn, continue_from or call_id)
            if len(seed) > len(earlier):
                earlier = list(seed)
            adopted = (
                adopt
                and continue_from is not None
                and continue_from != call_id
                and self._supersede(conn, continue_from, now)
            )
            conn.execute(
                f"""
                INSERT INTO calls (call_id, session_id, attempt_number, started_at, owner_host,
                    owner_boot_id, owner_pid, owner_start_ticks, lease_until, state, updated_at)
                VALUES (:call_id, :session_id, :attempt, :started_at, :host, :boot, :pid, :ticks,
                        :lease_until, 'live', :wall)
                ON CONFLICT (call_id) DO UPDATE SET
                    session_id = excluded.session_id, attempt_number = excluded.attempt_number,
                    {self._SET_MINE}, lease_until = excluded.lease_until,
                    lease_generation = lease_generation + 1, state = 'live',
                    updated_at = excluded.updated_at
                """,
                {
                    "call_id": call_id,
                    "session_id": session_id,
                    "attempt": attempt_number,
                    "started_at": started_at.isoformat(),
                    "lease_until": now + self.lease_seconds,
                    "wall": self._wall(),
                    **self._mine(),
                },
            )
            rewrite = [t.seq for t in earlier] != [
                r[0]
                for r in conn.execute(
                    "SELECT seq FROM turns WHERE call_id = ? ORDER BY seq", (call_id,)
                )
            ]
            if rewrite:
                # The row's turns become exactly 1..k (renumbered after a gap, copied from
                # `continue_from`, or taken from a stored transcript whose turns were deleted),
                # so the next run's seq k+1.. never lands on an earlier turn.
                conn.execute("DELETE FROM turns WHERE call_id = ?", (call_id,))
                conn.executemany(
                    "INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [turn_row(call_id, turn) for turn in earlier],
                )
        if adopted:
            log.info("journal.adopted", call_id=call_id, adopted_call_id=continue_from)
        elif adopt and continue_from is not None and continue_from != call_id:
            log.warning("journal.adopt_refused", call_id=call_id, held_call_id=continue_from)
        if earlier:
            log.info("journal.call_reopened", call_id=call_id, earlier_turns=len(earlier))
        return earlier

    def _supersede(self, conn: sqlite3.Connection, call_id: str, now: float) -> bool:
        """Delete a dead run's row and its turns (inside the caller's transaction, after their
        turns were read); False, touching nothing, while another live process holds it."""
        row = conn.execute(
            f"SELECT {self._OWNER_COLUMNS} FROM calls "
            f"WHERE call_id = ? AND state IN ('live', 'pending')",
            (call_id,),
        ).fetchone()
        if row is None or self._held_by_other(conn, call_id, row, now):
            return False
        conn.execute("DELETE FROM calls WHERE call_id = ?", (call_id,))
        conn.execute("DELETE FROM turns WHERE call_id = ?", (call_id,))
        conn.execute("DELETE FROM lease_watch WHERE call_id = ?", (call_id,))
        return True

    def _earlier_turns(self, conn: sqlite3.Connection, call_id: str) -> list[Turn]:
        """The most turns journaled for a call: its per-turn rows, or its stored transcript's
        turns when that has more (a v1 journal deleted the rows once it stored the transcript)."""
        rows = conn.execute(
            "SELECT seq, role, text, started_at, ended_at, interrupted FROM turns "
            "WHERE call_id = ? ORDER BY seq",
            (call_id,),
        ).fetchall()
        turns = [turn_from_row(index, row) for index, row in enumerate(rows, start=1)]
        stored = conn.execute("SELECT payload FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        payload = parse_payload(call_id, stored[0]) if stored is not None else None
        if payload is not None and payload.turn_count > len(turns):
            return list(payload.turns)
        return turns

    def append_turn(self, call_id: str, turn: Turn) -> None:
        """One committed INSERT per final turn: on disk (in the WAL) before this returns, so a
        SIGKILL right after loses nothing. Cheap enough to call from the event loop."""
        row = turn_row(call_id, turn)
        assert self._append_conn is not None
        with self._append_lock:
            # A single statement in autocommit mode is its own transaction: no BEGIN needed.
            self._append_conn.execute(
                "INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?, ?, ?, ?)", row
            )
            self._appends_since_checkpoint += 1
            overdue = self._appends_since_checkpoint >= APPENDS_PER_FORCED_CHECKPOINT
        if overdue:
            # Nobody refreshed a lease for a long while: bound the WAL here after all.
            self.checkpoint()

    def refresh_lease(self, call_id: str) -> bool:
        """Extend this process's lease. False: the row is not ours any more (claimed after our
        lease ran out, or delivered and gone)."""
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE calls SET lease_until = :lease_until, "
                f"lease_generation = lease_generation + 1, updated_at = :wall "
                f"WHERE call_id = :call_id AND state != 'dead' AND {self._IS_MINE}",
                {"call_id": call_id, "lease_until": self._lease_until(), "wall": self._wall()}
                | self._mine(),
            )
            held = cursor.rowcount == 1
            # the call's recordings (agent.journal.recordings) live as long as the call
            conn.execute(
                f"UPDATE recordings SET lease_until = :lease_until, "
                f"lease_generation = lease_generation + 1 "
                f"WHERE call_id = :call_id AND state = 'recording' AND {self._IS_MINE}",
                {"call_id": call_id, "lease_until": self._lease_until()} | self._mine(),
            )
        self.checkpoint()
        return held
