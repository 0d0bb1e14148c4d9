"""What the playground's page shows after the call: what the embedded local backend (no
BACKEND_URL) holds for the session.

Rule: only what `LocalBackend` wrote, found by the session id alone (a plain id, as the local
backend names its sessions): never a path from the request. The delivered transcript is the
highest ranked of the session's JSON files under AGENT_DATA_DIR/transcripts (a live call's
`in_progress` checkpoint is not one); the delivered recording, for a call dispatched with
`record: true`, is its parts in LocalBackend's recordings directory, in order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

from agent.backend.local import LocalBackend

# the local backend's session ids are plain; anything else is not a file name we wrote
PLAIN_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def delivered_transcript(data_dir: Path, session_id: str) -> dict[str, Any] | None:
    """The transcript the embedded local backend holds for `session_id` (its JSON files under
    AGENT_DATA_DIR/transcripts), the highest ranked of them; None if none is there yet. A live
    call's checkpoint (`in_progress`) is not a delivered transcript: the page waits on."""
    if not PLAIN_ID.match(session_id):
        return None
    best: tuple[tuple[bool, int], dict[str, Any]] | None = None
    for path in (data_dir / "transcripts").glob(f"{session_id}.*.json"):
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            body = stored["transcript"]
            rank = (bool(body["complete"]), int(body["turnCount"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half written or not ours
        if body.get("endedReason") == "in_progress":
            continue
        if best is None or rank > best[0]:
            best = (rank, body)
    return None if best is None else best[1]


def delivered_recording(data_dir: Path, session_id: str) -> list[tuple[Path, int]]:
    """The recording parts the embedded local backend holds for `session_id` (plain ids only,
    as `delivered_transcript`) and their sizes, in order of attempt and part; [] when none is
    there (the call was not recorded, or its upload has not arrived yet)."""
    if not PLAIN_ID.match(session_id):
        return []
    parts: list[tuple[Path, int]] = []
    for path in LocalBackend(data_dir).recording_paths(session_id):
        try:
            parts.append((path, path.stat().st_size))
        except OSError:
            continue  # gone since the listing
    return parts
