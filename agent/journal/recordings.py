"""Recordings in the journal: one row per recorded part of a call, from its first byte on disk
until the backend holds it.

Rule: a recording's row is written before its file is created and outlives it: the file is
deleted only after the row says delivered (`mark_recording_delivered`), so a file never exists
without a row and a row never claims a delivery that did not happen. Rows follow the call rows'
ownership rules (`ownership`): the recording process owns its row while the call lasts (its
lease is refreshed with the call's, `LiveCall.refresh_lease`), and any other process takes it
over only through `claim_recordings`, once the owner is gone or its lease lapsed; a row of a
dead call is sealed by its claimer from the file as it was left. Delivered rows stay (without
their file) for DELIVERED_KEPT_SECONDS so that a resumed call of the same attempt numbers its
part after them. The operator's reads of these rows are in `operator`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import cast

from agent.journal.base import JournalBase
from agent.journal.ending import MAX_REASON_CHARS
from agent.journal.schema import RecordingState
from agent.log import get_logger

log = get_logger(__name__)

# A week: long past any resumed call of the same attempt.
DELIVERED_KEPT_SECONDS = 7 * 24 * 3600.0


def recording_id(call_id: str, part: int) -> str:
    return f"{call_id}#part{part}"


@dataclass(frozen=True, slots=True)
class RecordingToSend:
    """A sealed recording owned by this process: what to upload and where it is."""

    recording_id: str
    call_id: str
    session_id: str
    attempt_number: int
    part: int
    path: Path
    size: int | None
    sha256: str | None
    # "recording": claimed from a process that died mid-call (its file is as it was left)
    previous_state: RecordingState


_TO_SEND = "recording_id, call_id, session_id, attempt_number, part, path, size, sha256, state"


def _to_send(row: tuple[object, ...]) -> RecordingToSend:
    rec_id, call_id, session_id, attempt, part, path, size, sha, state = row
    return RecordingToSend(
        recording_id=str(rec_id),
        call_id=str(call_id),
        session_id=str(session_id),
        attempt_number=int(cast(int, attempt)),
        part=int(cast(int, part)),
        path=Path(str(path)),
        size=None if size is None else int(cast(int, size)),
        sha256=None if sha is None else str(sha),
        previous_state=cast(RecordingState, state),
    )


class Recordings(JournalBase):
    """Rows of recordings: opened by the recording call, sealed at its end, claimed by recovery,
    delivered, dead-lettered or released by their owner only."""

    def next_recording_part(self, session_id: str, attempt_number: int, *, resumed: bool) -> int:
        """The part a new recording of this session attempt gets: after every part this journal
        knows of; at least 2 for a resumed call (its earlier run may have recorded elsewhere)."""
        with self._lock:
            (known,) = self._conn.execute(
                "SELECT COALESCE(MAX(part), 0) FROM recordings "
                "WHERE session_id = ? AND attempt_number = ?",
                (session_id, attempt_number),
            ).fetchone()
        return max(int(known), 1 if resumed else 0) + 1

    def open_recording(
        self,
        call_id: str,
        *,
        session_id: str,
        attempt_number: int,
        part: int,
        path: Path,
        started_at: datetime,
    ) -> str:
        """Journal a recording about to start (before its file exists), owned by this
        process with a fresh lease. Returns its id."""
        rec_id = recording_id(call_id, part)
        with self._transaction() as conn:
            conn.execute(
                f"""
                INSERT INTO recordings (recording_id, call_id, session_id, attempt_number, part,
                    path, started_at, owner_host, owner_boot_id, owner_pid, owner_start_ticks,
                    lease_until, state, updated_at)
                VALUES (:id, :call_id, :session_id, :attempt, :part, :path, :started_at,
                    :host, :boot, :pid, :ticks, :lease_until, 'recording', :wall)
                ON CONFLICT (recording_id) DO UPDATE SET
                    path = excluded.path, started_at = excluded.started_at, size = NULL,
                    sha256 = NULL, state = 'recording', {self._SET_MINE},
                    lease_until = excluded.lease_until, updated_at = excluded.updated_at
                """,
                {
                    "id": rec_id,
                    "call_id": call_id,
                    "session_id": session_id,
                    "attempt": attempt_number,
                    "part": part,
                    "path": str(path),
                    "started_at": started_at.isoformat(),
                    "lease_until": self._lease_until(),
                    "wall": self._wall(),
                }
                | self._mine(),
            )
        return rec_id

    def seal_recording(self, rec_id: str, *, size: int, sha256: str) -> RecordingToSend | None:
        """The file is final: record its size and digest (state pending, still ours, a fresh
        lease). None when the row is not ours any more (recovery took it over)."""
        with self._transaction() as conn:
            row = conn.execute(
                f"UPDATE recordings SET state = 'pending', size = :size, sha256 = :sha, "
                f"lease_until = :lease_until, lease_generation = lease_generation + 1, "
                f"updated_at = :wall "
                f"WHERE recording_id = :id AND state IN ('recording', 'pending') "
                f"AND {self._IS_MINE} RETURNING {_TO_SEND}",
                {
                    "id": rec_id,
                    "size": size,
                    "sha": sha256,
                    "lease_until": self._lease_until(),
                    "wall": self._wall(),
                }
                | self._mine(),
            ).fetchone()
        if row is None:
            log.warning("journal.not_owner", recording_id=rec_id, operation="seal_recording")
            return None
        return _to_send(row)

    def begin_recording_attempt(self, rec_id: str) -> int:
        """One more upload round (kept across processes); refreshes our lease."""
        with self._transaction() as conn:
            row = conn.execute(
                f"UPDATE recordings SET attempts = attempts + 1, lease_until = :lease_until, "
                f"lease_generation = lease_generation + 1, updated_at = :wall "
                f"WHERE recording_id = :id AND {self._IS_MINE} RETURNING attempts",
                {"id": rec_id, "lease_until": self._lease_until(), "wall": self._wall()}
                | self._mine(),
            ).fetchone()
        return int(row[0]) if row is not None else 0

    def refresh_recording_lease(self, rec_id: str) -> bool:
        """Extend our lease while an upload runs (the call's own refresh has stopped by then).
        False: the row is not ours any more."""
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE recordings SET lease_until = :lease_until, "
                f"lease_generation = lease_generation + 1 "
                f"WHERE recording_id = :id AND state IN ('recording', 'pending') "
                f"AND {self._IS_MINE}",
                {"id": rec_id, "lease_until": self._lease_until()} | self._mine(),
            )
            return cursor.rowcount == 1

    def mark_recording_delivered(self, rec_id: str) -> bool:
        """The backend holds it: the row becomes a tombstone (the caller deletes the file
        after this returned True). Only the owner may."""
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE recordings SET state = 'delivered', dead_reason = NULL, "
                f"{self._SET_NOBODY}, updated_at = :wall "
                f"WHERE recording_id = :id AND state = 'pending' AND {self._IS_MINE}",
                {"id": rec_id, "wall": self._wall()} | self._mine(),
            )
            conn.execute("DELETE FROM lease_watch WHERE call_id = ?", (_watch_key(rec_id),))
        if cursor.rowcount != 1:
            log.warning("journal.not_owner", recording_id=rec_id, operation="mark_delivered")
            return False
        return True

    def drop_empty_recording(self, rec_id: str) -> bool:
        """A recording that holds nothing (its process died before the encoder's first write):
        its row goes, there being nothing to deliver or keep. Only the owner may."""
        with self._transaction() as conn:
            cursor = conn.execute(
                f"DELETE FROM recordings WHERE recording_id = :id AND {self._IS_MINE}",
                {"id": rec_id} | self._mine(),
            )
            return cursor.rowcount == 1

    def mark_recording_dead(self, rec_id: str, reason: str) -> bool:
        """Keep it as a dead letter (file and row): never claimed again automatically."""
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE recordings SET state = 'dead', dead_reason = :reason, "
                f"{self._SET_NOBODY}, updated_at = :wall "
                f"WHERE recording_id = :id AND {self._IS_MINE}",
                {"id": rec_id, "reason": reason[:MAX_REASON_CHARS], "wall": self._wall()}
                | self._mine(),
            )
        if cursor.rowcount != 1:
            log.warning("journal.not_owner", recording_id=rec_id, operation="mark_dead")
            return False
        return True

    def release_recording(self, rec_id: str) -> bool:
        """Give up ownership (upload deferred): any recovery may claim it. Never called by the
        recording process on its own live recording."""
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE recordings SET {self._SET_NOBODY}, updated_at = :wall "
                f"WHERE recording_id = :id AND state IN ('recording', 'pending') "
                f"AND {self._IS_MINE}",
                {"id": rec_id, "wall": self._wall()} | self._mine(),
            )
            return cursor.rowcount == 1

    def claim_recordings(self, only: str | None = None) -> list[RecordingToSend]:
        """Take over every recording or pending row (or only the one `only` names) whose owner
        is gone or whose lease lapsed (the call rows' rule), in one UPDATE under BEGIN
        IMMEDIATE. A `recording` row comes from a process that died mid-call: its claimer seals
        it from the file as it is."""
        now = self._clock()
        with self._transaction() as conn:
            self._alive_memo.clear()
            candidates = conn.execute(
                f"SELECT recording_id, {self._OWNER_COLUMNS} FROM recordings "
                f"WHERE state IN ('recording', 'pending') AND NOT ({self._IS_MINE}) "
                f"AND (:only IS NULL OR recording_id = :only) ORDER BY updated_at",
                {"only": only} | self._mine(),
            ).fetchall()
            chosen = [
                row[0]
                for row in candidates
                if self._lapsed(conn, _watch_key(row[0]), row[1:], now, watch=True)
            ]
            ids = json.dumps(chosen)
            rows = conn.execute(
                f"""
                UPDATE recordings SET {self._SET_MINE}, lease_until = :lease_until,
                    lease_generation = lease_generation + 1
                WHERE recording_id IN (SELECT value FROM json_each(:ids))
                RETURNING {_TO_SEND}
                """,
                {"ids": ids, "lease_until": now + self.lease_seconds} | self._mine(),
            ).fetchall()
            conn.execute(
                "DELETE FROM lease_watch WHERE call_id IN (SELECT value FROM json_each(?))",
                (json.dumps([_watch_key(c) for c in chosen]),),
            )
        claimed = [_to_send(row) for row in rows]
        claimed.sort(key=lambda item: chosen.index(item.recording_id))
        return claimed

    def recording_paths(self) -> set[Path]:
        """The files rows still stand for (every state but delivered): the spool's sweep keeps
        these and nothing else."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT path FROM recordings WHERE state != 'delivered'"
            ).fetchall()
        return {Path(str(row[0])) for row in rows}

    def prune_delivered_recordings(self, *, older_than: float = DELIVERED_KEPT_SECONDS) -> int:
        with self._transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM recordings WHERE state = 'delivered' AND updated_at < ?",
                (self._wall() - older_than,),
            )
            return cursor.rowcount


def _watch_key(rec_id: str) -> str:
    # lease_watch is keyed by call id; a recording's key cannot collide with one ("#part")
    return f"recording:{rec_id}"
