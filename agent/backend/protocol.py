"""What the rest of the worker sees of the backend: the `Backend` Protocol, a delivery's
receipt, and the `BackendError` family.

Rule: callers see our models and our `BackendError` family only, never httpx exceptions or raw
JSON; each error says whether a retry, a fix of the configuration or nothing can help.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from agent.models import HeldTranscript, Scenario, Session, SessionCreate, TranscriptPayload


class BackendError(Exception):
    """Base of every backend failure the rest of the worker sees."""


class BackendUnavailable(BackendError):
    """Transient failures (408/425/429/5xx, timeouts, connection errors, a 2xx that does not
    acknowledge a transcript) outlasted the deadline."""


def misconfiguration_cause(status: int) -> str:
    """What an operator has to fix for a status that no retry can cure (see `_classify`)."""
    if status == 401:
        return "wrong INTERNAL_SERVICE_KEY"
    if status == 403:
        return "forbidden: wrong INTERNAL_SERVICE_KEY or not allowed"
    if status in (404, 405):
        return "BACKEND_URL or route wrong"
    return f"{status} not expected (BACKEND_URL wrong?)"


class BackendMisconfigured(BackendError):
    """401/403, 3xx (never followed), 404, 405: nothing succeeds until the configuration (the
    key, BACKEND_URL or the backend's routes) is fixed. Not retried within a call; a transcript
    stays pending for a later recovery, never a dead letter. `cause` names what to fix."""

    def __init__(self, status: int, reason: str, *, cause: str | None = None) -> None:
        self.status = status
        self.reason = reason
        self.cause = cause or misconfiguration_cause(status)
        text = f"backend answered {status}: {self.cause}"
        super().__init__(f"{text} ({reason})" if reason and reason != self.cause else text)


class BackendAuthError(BackendMisconfigured):
    """401/403: a wrong INTERNAL_SERVICE_KEY, or a resource this caller may not use."""


class BackendRejected(BackendError):
    """Another 4xx: the backend refused this request; the server's reason is kept."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"backend rejected the request with {status}: {reason}")


class BackendResponseInvalid(BackendError):
    """The response did not match its model (names the field) or was not JSON / too large."""


DeliveryStatus = Literal["delivered", "already_delivered"]


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    status: DeliveryStatus
    attempts: int


class Backend(Protocol):
    async def get_scenario(self, scenario_id: str) -> Scenario: ...

    async def create_session(self, body: SessionCreate, *, room_sid: str) -> Session:
        """Create (or, under the same `room_sid`, find again) the room's session: the key is
        `create:{room_sid}`, so a job re-dispatched into the room gets the same attempt."""
        ...

    async def get_session(self, session_id: str) -> Session: ...

    async def get_transcript(self, session_id: str, attempt_number: int) -> HeldTranscript | None:
        """The best transcript held for the attempt (agent over browser, complete over
        incomplete, more turns), None when none is held. On the call's start path, so bounded
        short (HttpBackend: at most two attempts within BACKEND_TIMEOUT); raises the
        `BackendError` family otherwise."""
        ...

    async def post_transcript(
        self, session_id: str, payload: TranscriptPayload, *, deadline: float
    ) -> DeliveryReceipt:
        """Deliver within `deadline` seconds. An acknowledging 2xx -> delivered, 409 ->
        already_delivered; otherwise raises BackendUnavailable / BackendMisconfigured /
        BackendRejected (the reason free of the payload's turn text)."""
        ...

    async def put_recording(
        self, session_id: str, attempt_number: int, part: int, body: bytes, *, deadline: float
    ) -> DeliveryReceipt:
        """Upload one recorded part (Ogg/Opus, at most 64 MiB) within `deadline` seconds, with
        the transcript's status semantics: an acknowledging 2xx -> delivered, 409 ->
        already_delivered; otherwise raises BackendUnavailable / BackendMisconfigured /
        BackendRejected."""
        ...

    async def aclose(self) -> None: ...
