"""The embedded default's transcripts and recordings (`LocalBackend`), as private files.

Rule: a session's files are named by its id (a plain id as is, anything else by its digest,
so names stay portable), transcripts as `<stem>.<idempotency key>.json` under transcripts/,
recording parts as `<stem>.attempt<n>.part<m>.<digest>.ogg` under recordings/. Within an
attempt the backend's ranking holds: the best transcript is kept and worse ones are never
written, while a recording part is named by its digest, so the same part again is held already
and a different one is kept apart, never lost. Every write is atomic (a temp file, fsync,
os.replace: a reader or a crash sees the old state or the whole new file), and these files hold
what the caller said: files 0600 and directories 0700 whatever the process umask. Blocking:
`LocalBackend` runs these in a thread; an `OSError` is its `BackendUnavailable`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import uuid
from pathlib import Path

from agent.backend.contract import recording_idempotency_key
from agent.backend.protocol import DeliveryStatus
from agent.models import TranscriptPayload, utc_now

_SAFE_STEM = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_RECORDING_NAME = re.compile(
    r"[^.]+\.attempt(?P<attempt>[0-9]+)\.part(?P<part>[0-9]+)\.[0-9a-f]{16}\.ogg"
)


def file_stem(session_id: str) -> str:
    """What a session's file names start with."""
    # File names stay portable: a plain id is used as is, anything else by its digest.
    if _SAFE_STEM.match(session_id):
        return session_id
    return "h" + hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:40]


def rank(payload: TranscriptPayload) -> tuple[bool, int]:
    """The backend's ranking within one attempt (source is always "agent" here)."""
    return (payload.complete, payload.turn_count)


def private_dir(directory: Path) -> None:
    """`directory` (in the data dir, its parent), both 0700: made so, or closed if an older
    version left it open (the directory's mode guards every file in it, whatever mode those
    files have)."""
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.mkdir(exist_ok=True, mode=0o700)
    if stat.S_IMODE(directory.stat().st_mode) & 0o077:
        directory.chmod(0o700)


def _write_private(temp: Path, final: Path, content: bytes) -> None:
    """`content` as `final`, whole or not at all: written to `temp` (a dot name, out of every
    listing), fsynced, then moved over. 0600 from the start (os.replace keeps it)."""
    try:
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)


# ------------------------------------------------------------------ transcripts


def held_transcripts(
    directory: Path, session_id: str, attempt_number: int
) -> list[tuple[Path, TranscriptPayload]]:
    """The transcript files held for one attempt of a session, with what each holds."""
    held: list[tuple[Path, TranscriptPayload]] = []
    for path in directory.glob(f"{file_stem(session_id)}.*.json"):
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            payload = TranscriptPayload.model_validate(stored["transcript"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours or unreadable: it cannot outrank a valid transcript
        if payload.attempt_number == attempt_number:
            held.append((path, payload))
    return held


def best_transcript(
    directory: Path, session_id: str, attempt_number: int
) -> TranscriptPayload | None:
    """The best transcript held for the attempt, None when none is (or no directory yet)."""
    # A better transcript replaces the worse files (worse ones are never written): the best
    # is the highest-ranked file of the attempt. No directory yet: nothing held.
    if not directory.is_dir():
        return None
    held = held_transcripts(directory, session_id, attempt_number)
    return max((payload for _path, payload in held), key=rank, default=None)


def held_turns(directory: Path, session_id: str, attempt_number: int) -> int:
    """The turns held now for the attempt (0 when nothing is)."""
    if not directory.is_dir():
        return 0
    held = held_transcripts(directory, session_id, attempt_number)
    return max((payload.turn_count for _path, payload in held), default=0)


def write_transcript(
    directory: Path, session_id: str, payload: TranscriptPayload, key: str
) -> DeliveryStatus:
    """`payload` kept as the attempt's transcript if it outranks every held one, which it then
    replaces; "already_delivered" when an equal or better one is held."""
    private_dir(directory)
    stem = file_stem(session_id)
    held = held_transcripts(directory, session_id, payload.attempt_number)
    if any(rank(earlier) >= rank(payload) for _path, earlier in held):
        return "already_delivered"
    document = {
        "sessionId": session_id,
        "idempotencyKey": key,
        "writtenAt": utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "transcript": payload.to_wire(),
    }
    # The dot prefix keeps temp files out of the glob of held_transcripts.
    _write_private(
        directory / f".{stem}.{key}.{uuid.uuid4().hex}.tmp",
        directory / f"{stem}.{key}.json",
        json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8"),
    )
    # The new file outranks every held one (checked above): as the backend's ranking
    # replaces them, so does this directory, or a call's checkpoints would leave a file
    # each. Only after the better file is whole, so the attempt is never without one.
    for path, _worse in held:
        path.unlink(missing_ok=True)
    return "delivered"


# ------------------------------------------------------------------ recordings


def recording_paths(
    directory: Path, session_id: str, attempt_number: int | None = None
) -> list[Path]:
    """The parts held for a session (or one attempt of it), in order of attempt and part."""
    stem = file_stem(session_id)
    attempt = "*" if attempt_number is None else str(int(attempt_number))
    held: list[tuple[int, int, Path]] = []
    for path in directory.glob(f"{stem}.attempt{attempt}.part*.ogg"):
        # only files named as write_recording names them (a hand-placed one is not a part)
        named = _RECORDING_NAME.fullmatch(path.name)
        if named is not None:
            held.append((int(named["attempt"]), int(named["part"]), path))
    return [path for _attempt, _part, path in sorted(held)]


def write_recording(
    directory: Path, session_id: str, attempt_number: int, part: int, body: bytes
) -> DeliveryStatus:
    """Part `part` of the attempt's recording kept; "already_delivered" when this very file
    is held already."""
    private_dir(directory)
    digest = recording_idempotency_key(body)
    # named by its digest too: the same part sent again is held already (a 409), while a
    # different file for the same part number (two runs that numbered alike) is kept apart,
    # never lost
    stem = file_stem(session_id)
    final = directory / f"{stem}.attempt{attempt_number}.part{part}.{digest[:16]}.ogg"
    if final.exists():
        return "already_delivered"
    _write_private(directory / f".{final.name}.{uuid.uuid4().hex}.tmp", final, body)
    return "delivered"
