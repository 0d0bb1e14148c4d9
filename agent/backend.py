"""The backend boundary: a small Protocol, the real httpx client and the embedded local default.

Rule: every byte that leaves for the backend or comes back goes through here; callers see our
models and our `BackendError` family only, never httpx exceptions or raw JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from agent.models import Scenario, Session, SessionCreate, TranscriptPayload


class BackendError(Exception):
    """Base of every backend failure the rest of the worker sees."""


class BackendUnavailable(BackendError):
    """Transient failures (425/429/5xx/timeouts/connection errors) outlasted the deadline."""


class BackendAuthError(BackendError):
    """401/403: a configuration error (wrong INTERNAL_SERVICE_KEY) or a forbidden resource."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"backend answered {status}: {reason}")


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

    async def create_session(self, body: SessionCreate, *, job_id: str) -> Session: ...

    async def get_session(self, session_id: str) -> Session: ...

    async def post_transcript(
        self, session_id: str, payload: TranscriptPayload, *, deadline: float
    ) -> DeliveryReceipt:
        """Deliver within `deadline` seconds. 2xx -> delivered, 409 -> already_delivered;
        otherwise raises BackendUnavailable / BackendAuthError / BackendRejected."""
        ...

    async def aclose(self) -> None: ...
