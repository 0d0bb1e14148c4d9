"""The backend contract's names (DESIGN.md, "Backend"): headers, routes, idempotency keys.

Rule: a route's ids are always one escaped path segment; an idempotency key depends only on what
identifies the request, so a retry reuses it and a better transcript gets a new one.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from agent.models import TranscriptPayload

KEY_HEADER = "X-Internal-Service-Key"
IDEMPOTENCY_HEADER = "Idempotency-Key"

SCENARIO_PATH = "/api/internal/scenarios/{scenarioId}"
SESSIONS_PATH = "/api/internal/sessions"
SESSION_PATH = "/api/internal/sessions/{sessionId}"
TRANSCRIPT_PATH = "/api/internal/sessions/{sessionId}/transcript"
# GET: the best transcript held for one attempt (404: none). Same path as the POST, its own name
# so metrics and logs tell a resume's read from a delivery.
HELD_TRANSCRIPT_PATH = "/api/internal/sessions/{sessionId}/transcript?attemptNumber={attemptNumber}"
# PUT: one recorded part of an attempt (Ogg/Opus, stereo: caller left, agent right).
RECORDING_PATH = "/api/internal/sessions/{sessionId}/recording"
RECORDING_QUERY = "?attemptNumber={attemptNumber}&part={part}"
RECORDING_CONTENT_TYPE = "audio/ogg"
MAX_RECORDING_BYTES = 64 * 1024 * 1024


def transcript_idempotency_key(session_id: str, payload: TranscriptPayload) -> str:
    """The `Idempotency-Key` of a transcript POST: the sha256 hex digest of the UTF-8 string
    `f"{sessionId}|{attemptNumber}|{source}|{complete}|{turnCount}"`, with `complete` written as
    JSON writes booleans (`true`/`false`, lowercase).

    A retry of the same body reuses the key (so the backend can replay its answer), while a longer
    or more complete transcript of the same attempt gets a new one (so the backend ranks it). Every
    field but the session id is an int, a literal or a bool, so the string parses unambiguously
    from the right even when the session id contains `|`.
    """
    complete = "true" if payload.complete else "false"
    material = (
        f"{session_id}|{payload.attempt_number}|{payload.source}|{complete}|{payload.turn_count}"
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def recording_idempotency_key(body: bytes) -> str:
    """The `Idempotency-Key` of a recording PUT: the sha256 hex digest of the bytes sent, so a
    retry of the same file reuses it and a different file (another part) never does."""
    return hashlib.sha256(body).hexdigest()


def create_idempotency_key(room_sid: str) -> str:
    """The `Idempotency-Key` of a session creation: `create:{roomSid}`, one session per LiveKit
    room, so a job re-dispatched into the same room (its worker died) finds the same session and
    attempt instead of starting a new one."""
    return f"create:{room_sid}"


def segment(value: str) -> str:
    # An id is one path segment: `/`, `?`, `#`, `..` and spaces must not change the route.
    return quote(value, safe="")
