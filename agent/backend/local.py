"""`LocalBackend`: the embedded default when no BACKEND_URL is set (DESIGN.md, "Embedded
default"): scenarios from prompts/, sessions numbered locally, transcripts as JSON files,
recordings as Ogg files under recordings/.

Rule: the same answers as the real backend for the same requests (a 409's `already_delivered`
when it holds an equal or better transcript of the attempt, 404/422 as `BackendRejected`, one
session per room sid, the best held transcript or None), and a disk or database failure is
`BackendUnavailable`, so the journal keeps the transcript.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sqlite3
import stat
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

from agent.backend.contract import (
    MAX_RECORDING_BYTES,
    recording_idempotency_key,
    transcript_idempotency_key,
)
from agent.backend.protocol import (
    BackendRejected,
    BackendUnavailable,
    DeliveryReceipt,
    DeliveryStatus,
)
from agent.models import (
    HeldTranscript,
    Scenario,
    Session,
    SessionCreate,
    TranscriptPayload,
    utc_now,
)
from agent.prompts import PROMPTS_DIR, PromptError, load_scenario

_T = TypeVar("_T")

_SAFE_STEM = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_RECORDING_NAME = re.compile(
    r"[^.]+\.attempt(?P<attempt>[0-9]+)\.part(?P<part>[0-9]+)\.[0-9a-f]{16}\.ogg"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    room_sid TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    assignment_id TEXT,
    room_name TEXT NOT NULL,
    attempt_number INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions (user_id, scenario_id);
"""
# Versions before resume keyed sessions by LiveKit job (`job_id`). Their rows keep their ids
# and attempt numbers; the old job ids in the renamed column never match a room sid, so those
# finished calls are simply never found again by a create.
_MIGRATE_JOB_KEY = "ALTER TABLE sessions RENAME COLUMN job_id TO room_sid"


def _transcript_stem(session_id: str) -> str:
    # File names stay portable: a plain id is used as is, anything else by its digest.
    if _SAFE_STEM.match(session_id):
        return session_id
    return "h" + hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:40]


def _rank(payload: TranscriptPayload) -> tuple[bool, int]:
    # The backend's ranking within one attempt (source is always "agent" here).
    return (payload.complete, payload.turn_count)


class LocalBackend:
    """The embedded default (no BACKEND_URL): scenarios from prompts/, sessions numbered in a
    small SQLite file and transcripts written as JSON files, all under `data_dir`.

    SQLite rather than JSON for the sessions because job processes run side by side and the
    attempt numbering must not race; every file operation runs in a thread so the event loop
    (which may carry the LiveKit connection) never blocks on disk. Transcripts hold what the
    caller said: files are created 0600 and directories 0700, whatever the process umask.
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
        session = await self._run(self._create_session_sync, body, room_sid)
        return await self._run(self._with_held_turns, session)

    async def get_session(self, session_id: str) -> Session:
        session = await self._run(self._find_session_sync, session_id)
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
        stem = _transcript_stem(session_id)
        attempt = "*" if attempt_number is None else str(int(attempt_number))
        held: list[tuple[int, int, Path]] = []
        for path in self.recordings_dir.glob(f"{stem}.attempt{attempt}.part*.ogg"):
            # only files named as put_recording names them (a hand-placed one is not a part)
            named = _RECORDING_NAME.fullmatch(path.name)
            if named is not None:
                held.append((int(named["attempt"]), int(named["part"]), path))
        return [path for _attempt, _part, path in sorted(held)]

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

    def _connect(self) -> sqlite3.Connection:
        # Private to the worker's user whatever the umask: a new data dir 0700 and the database
        # created 0600 before SQLite opens it (its -journal/-wal files copy the file's mode).
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.db_path, timeout=10, isolation_level=None)
        try:
            db.executescript(_SCHEMA)
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        """An existing data dir of the job-keyed version keeps working (see _MIGRATE_JOB_KEY)."""

        def columns() -> set[str]:
            return {row[1] for row in db.execute("PRAGMA table_info(sessions)")}

        if "job_id" not in columns():
            return
        # Checked again under the write lock: two processes opening an old file at once must
        # not both rename.
        db.execute("BEGIN IMMEDIATE")
        try:
            if "job_id" in columns():
                db.execute(_MIGRATE_JOB_KEY)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _private_transcripts_dir(self) -> None:
        """The transcripts directory, 0700: made so, or closed if an older version left it open
        (the directory's mode guards every file in it, whatever mode those files have)."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.transcripts_dir.mkdir(exist_ok=True, mode=0o700)
        if stat.S_IMODE(self.transcripts_dir.stat().st_mode) & 0o077:
            self.transcripts_dir.chmod(0o700)

    def _put_recording_sync(
        self, session_id: str, attempt_number: int, part: int, body: bytes
    ) -> DeliveryStatus:
        if len(body) > MAX_RECORDING_BYTES:
            raise BackendRejected(413, f"recording of {len(body)} bytes exceeds 64 MiB")
        session = self._find_session_sync(session_id)
        if session is None:
            raise BackendRejected(404, f"no local session {session_id!r}")
        if attempt_number != session.attempt_number or part < 1:
            raise BackendRejected(
                422, f"attemptNumber {attempt_number} / part {part} do not fit the session"
            )
        # the recordings directory 0700, made so or closed (as the transcripts' one)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.recordings_dir.mkdir(exist_ok=True, mode=0o700)
        if stat.S_IMODE(self.recordings_dir.stat().st_mode) & 0o077:
            self.recordings_dir.chmod(0o700)
        digest = recording_idempotency_key(body)
        # named by its digest too: the same part sent again is held already (a 409), while a
        # different file for the same part number (two runs that numbered alike) is kept apart,
        # never lost
        stem = _transcript_stem(session_id)
        final = self.recordings_dir / f"{stem}.attempt{attempt_number}.part{part}.{digest[:16]}.ogg"
        if final.exists():
            return "already_delivered"
        temp = self.recordings_dir / f".{final.name}.{uuid.uuid4().hex}.tmp"
        try:
            # 0600 from the start (os.replace keeps it): a recording is the caller's voice
            descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(descriptor, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)
        return "delivered"

    @staticmethod
    def _session_from_row(row: tuple[Any, ...]) -> Session:
        session_id, user_id, scenario_id, assignment_id, attempt_number = row
        return Session(
            id=session_id,
            user_id=user_id,
            scenario_id=scenario_id,
            assignment_id=assignment_id,
            attempt_number=attempt_number,
        )

    def _create_session_sync(self, body: SessionCreate, room_sid: str) -> Session:
        columns = "id, user_id, scenario_id, assignment_id, attempt_number"
        with closing(self._connect()) as db:
            # IMMEDIATE takes the write lock before reading the count: two processes creating
            # sessions for the same user and scenario get consecutive numbers, never the same.
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    f"SELECT {columns} FROM sessions WHERE room_sid = ?", (room_sid,)
                ).fetchone()
                if row is None:
                    (number,) = db.execute(
                        "SELECT COALESCE(MAX(attempt_number), 0) + 1 FROM sessions "
                        "WHERE user_id = ? AND scenario_id = ?",
                        (body.user_id, body.scenario_id),
                    ).fetchone()
                    session_id = f"local-{uuid.uuid4().hex}"
                    db.execute(
                        "INSERT INTO sessions (id, room_sid, user_id, scenario_id, assignment_id,"
                        " room_name, attempt_number, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            session_id,
                            room_sid,
                            body.user_id,
                            body.scenario_id,
                            body.assignment_id,
                            body.room_name,
                            number,
                            utc_now().isoformat(),
                        ),
                    )
                    row = (session_id, body.user_id, body.scenario_id, body.assignment_id, number)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return self._session_from_row(row)

    def _find_session_sync(self, session_id: str) -> Session | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT id, user_id, scenario_id, assignment_id, attempt_number "
                "FROM sessions WHERE id = ?",
                (session_id,),
            ).fetchone()
        return None if row is None else self._session_from_row(row)

    def _held_files(self, stem: str, attempt_number: int) -> list[tuple[Path, TranscriptPayload]]:
        held: list[tuple[Path, TranscriptPayload]] = []
        for path in self.transcripts_dir.glob(f"{stem}.*.json"):
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                payload = TranscriptPayload.model_validate(stored["transcript"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not ours or unreadable: it cannot outrank a valid transcript
            if payload.attempt_number == attempt_number:
                held.append((path, payload))
        return held

    def _with_held_turns(self, session: Session) -> Session:
        """The session as the backend answers it: with `heldTurns`, the turns held now for its
        attempt (never a cached count: a job re-dispatched into the room reads back only when
        it is above 0)."""
        held = 0
        if self.transcripts_dir.is_dir():
            stem = _transcript_stem(session.id)
            held = max((p.turn_count for p in self._held(stem, session.attempt_number)), default=0)
        return session.model_copy(update={"held_turns": held})

    def _held(self, stem: str, attempt_number: int) -> list[TranscriptPayload]:
        return [payload for _path, payload in self._held_files(stem, attempt_number)]

    def _get_transcript_sync(self, session_id: str, attempt_number: int) -> HeldTranscript | None:
        # A better transcript replaces the worse files (worse ones are never written): the best
        # is the highest-ranked file of the attempt. No directory yet: nothing held.
        if not self.transcripts_dir.is_dir():
            return None
        best = max(
            self._held(_transcript_stem(session_id), attempt_number), key=_rank, default=None
        )
        return None if best is None else HeldTranscript.model_validate(best.to_wire())

    def _post_transcript_sync(
        self, session_id: str, payload: TranscriptPayload, key: str
    ) -> DeliveryStatus:
        session = self._find_session_sync(session_id)
        if session is None:
            raise BackendRejected(404, f"no local session {session_id!r}")
        if payload.attempt_number != session.attempt_number:
            raise BackendRejected(
                422,
                f"attemptNumber: {payload.attempt_number} is not the session's attempt "
                f"{session.attempt_number}",
            )
        self._private_transcripts_dir()
        stem = _transcript_stem(session_id)
        held = self._held_files(stem, payload.attempt_number)
        if any(_rank(earlier) >= _rank(payload) for _path, earlier in held):
            return "already_delivered"
        document = {
            "sessionId": session_id,
            "idempotencyKey": key,
            "writtenAt": utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "transcript": payload.to_wire(),
        }
        final = self.transcripts_dir / f"{stem}.{key}.json"
        # Temp file + fsync + os.replace: a reader (or a crash) sees the old state or the whole
        # new file, never half of it. The dot prefix keeps temp files out of the glob above.
        temp = self.transcripts_dir / f".{stem}.{key}.{uuid.uuid4().hex}.tmp"
        try:
            # 0600 from the start (os.replace keeps it): transcripts hold what the caller said
            descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(descriptor, "w", encoding="utf-8") as handle:
                json.dump(document, handle, ensure_ascii=False, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        finally:
            temp.unlink(missing_ok=True)
        # The new file outranks every held one (checked above): as the backend's ranking
        # replaces them, so does this directory, or a call's checkpoints would leave a file
        # each. Only after the better file is whole, so the attempt is never without one.
        for path, _worse in held:
            path.unlink(missing_ok=True)
        return "delivered"
