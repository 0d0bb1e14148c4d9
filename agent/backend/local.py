"""`LocalBackend`: the embedded default when no BACKEND_URL is set (DESIGN.md, "Embedded
default"): scenarios from prompts/, sessions numbered locally, transcripts as JSON files,
recordings as Ogg files under recordings/.

Rule: the same answers as the real backend for the same requests (a 409's `already_delivered`
when it holds an equal or better transcript of the attempt, 404/422 as `BackendRejected`, one
session per room sid, the best held transcript or None), and a disk or database failure is
`BackendUnavailable`, so the journal keeps the transcript.

This module answers as the backend does (the Protocol's async methods, the 404/413/422 checks);
the blocking stores beneath it are `local_sessions` (the SQLite sessions) and `local_files`
(transcripts and recordings as private files), always run in a thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agent.backend import local_files
from agent.backend.contract import MAX_RECORDING_BYTES, transcript_idempotency_key
from agent.backend.local_sessions import create_session, find_session
from agent.backend.protocol import (
    BackendRejected,
    BackendUnavailable,
    DeliveryReceipt,
    DeliveryStatus,
)
from agent.models import HeldTranscript, Scenario, Session, SessionCreate, TranscriptPayload
from agent.prompts import PROMPTS_DIR, PromptError, load_scenario

_T = TypeVar("_T")


class LocalBackend:
    """The embedded default (no BACKEND_URL): scenarios from prompts/, sessions numbered in a
    small SQLite file (`db_path`), transcripts written as JSON files (`transcripts_dir`) and
    recordings as Ogg files (`recordings_dir`), all under `data_dir`.

    Every file operation runs in a thread so the event loop (which may carry the LiveKit
    connection) never blocks on disk. Transcripts and recordings hold what the caller said:
    files are created 0600 and directories 0700, whatever the process umask.
    """

    def __init__(self, data_dir: Path, *, prompts_dir: Path = PROMPTS_DIR) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / "local_backend.sqlite3"
        self.transcripts_dir = self.data_dir / "transcripts"
        self.recordings_dir = self.data_dir / "recordings"
        self._prompts_dir = prompts_dir
        # Two deliveries of one session in this process must not both see "nothing held yet".
        self._write_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"LocalBackend(data_dir={str(self.data_dir)!r})"

    async def aclose(self) -> None:
        return None

    async def get_scenario(self, scenario_id: str) -> Scenario:
        try:
            return await asyncio.to_thread(load_scenario, scenario_id, self._prompts_dir)
        except PromptError as error:
            raise BackendRejected(404, str(error)) from None

    async def create_session(self, body: SessionCreate, *, room_sid: str) -> Session:
        session = await self._run(create_session, self.db_path, body, room_sid)
        return await self._run(self._with_held_turns, session)

    async def get_session(self, session_id: str) -> Session:
        session = await self._run(find_session, self.db_path, session_id)
        if session is None:
            raise BackendRejected(404, f"no local session {session_id!r}")
        return await self._run(self._with_held_turns, session)

    async def get_transcript(self, session_id: str, attempt_number: int) -> HeldTranscript | None:
        return await self._run(self._get_transcript_sync, session_id, attempt_number)

    async def post_transcript(
        self, session_id: str, payload: TranscriptPayload, *, deadline: float
    ) -> DeliveryReceipt:
        key = transcript_idempotency_key(session_id, payload)
        try:
            async with asyncio.timeout(deadline), self._write_lock:
                status = await self._run(self._post_transcript_sync, session_id, payload, key)
        except TimeoutError:
            raise BackendUnavailable(
                f"local transcript write did not finish within {deadline:g} s"
            ) from None
        return DeliveryReceipt(status=status, attempts=1)

    async def put_recording(
        self, session_id: str, attempt_number: int, part: int, body: bytes, *, deadline: float
    ) -> DeliveryReceipt:
        try:
            async with asyncio.timeout(deadline):
                status = await self._run(
                    self._put_recording_sync, session_id, attempt_number, part, body
                )
        except TimeoutError:
            raise BackendUnavailable(
                f"local recording write did not finish within {deadline:g} s"
            ) from None
        return DeliveryReceipt(status=status, attempts=1)

    def recording_paths(self, session_id: str, attempt_number: int | None = None) -> list[Path]:
        """The parts the embedded default holds for a session (or one attempt of it), in order
        of attempt and part: what the playground plays back."""
        return local_files.recording_paths(self.recordings_dir, session_id, attempt_number)

    # ------------------------------------------------------------------ blocking parts

    async def _run(self, func: Callable[..., _T], *args: Any) -> _T:
        try:
            return await asyncio.to_thread(func, *args)
        except (OSError, sqlite3.Error) as error:
            # A full disk or a locked database is the local analogue of an unreachable backend:
            # the journal keeps the transcript and recovery tries again later.
            raise BackendUnavailable(f"local store failed: {type(error).__name__}: {error}") from (
                error
            )

    def _with_held_turns(self, session: Session) -> Session:
        """The session as the backend answers it: with `heldTurns`, the turns held now for its
        attempt (never a cached count: a job re-dispatched into the room reads back only when
        it is above 0)."""
        held = local_files.held_turns(self.transcripts_dir, session.id, session.attempt_number)
        return session.model_copy(update={"held_turns": held})

    def _get_transcript_sync(self, session_id: str, attempt_number: int) -> HeldTranscript | None:
        best = local_files.best_transcript(self.transcripts_dir, session_id, attempt_number)
        return None if best is None else HeldTranscript.model_validate(best.to_wire())

    def _post_transcript_sync(
        self, session_id: str, payload: TranscriptPayload, key: str
    ) -> DeliveryStatus:
        session = find_session(self.db_path, session_id)
        if session is None:
            raise BackendRejected(404, f"no local session {session_id!r}")
        if payload.attempt_number != session.attempt_number:
            raise BackendRejected(
                422,
                f"attemptNumber: {payload.attempt_number} is not the session's attempt "
                f"{session.attempt_number}",
            )
        return local_files.write_transcript(self.transcripts_dir, session_id, payload, key)

    def _put_recording_sync(
        self, session_id: str, attempt_number: int, part: int, body: bytes
    ) -> DeliveryStatus:
        if len(body) > MAX_RECORDING_BYTES:
            raise BackendRejected(413, f"recording of {len(body)} bytes exceeds 64 MiB")
        session = find_session(self.db_path, session_id)
        if session is None:
            raise BackendRejected(404, f"no local session {session_id!r}")
        if attempt_number != session.attempt_number or part < 1:
            raise BackendRejected(
                422, f"attemptNumber {attempt_number} / part {part} do not fit the session"
            )
        return local_files.write_recording(
            self.recordings_dir, session_id, attempt_number, part, body
        )
