"""The backend boundary: a small Protocol, the real httpx client and the embedded local default.

Rule: every byte that leaves for the backend or comes back goes through here; callers see our
models and our `BackendError` family only, never httpx exceptions or raw JSON. The service key
travels only in the `X-Internal-Service-Key` header: it is never logged, never put in an
exception's text and never sent over plain http except to localhost.

Modules: protocol (the `Backend` Protocol, its receipt and the `BackendError` family), contract
(headers, routes, idempotency keys), status (what each answer means: DESIGN.md "Status
semantics"), transport (the httpx client under `HttpBackend`: the key, retries within a
deadline, capped reads), http (`HttpBackend`: one method per route), local (`LocalBackend`: the
embedded default, over `local_sessions`, its SQLite sessions, and `local_files`, its transcripts
and recordings as private files). `make_backend` chooses between the last two.
"""

from __future__ import annotations

from agent.backend.contract import (
    HELD_TRANSCRIPT_PATH,
    MAX_RECORDING_BYTES,
    RECORDING_PATH,
    SESSION_PATH,
    TRANSCRIPT_PATH,
    create_idempotency_key,
    recording_idempotency_key,
    transcript_idempotency_key,
)
from agent.backend.http import HttpBackend
from agent.backend.local import LocalBackend
from agent.backend.protocol import (
    Backend,
    BackendAuthError,
    BackendError,
    BackendMisconfigured,
    BackendRejected,
    BackendResponseInvalid,
    BackendUnavailable,
    DeliveryReceipt,
)
from agent.backend.status import strip_echoes
from agent.config import Settings

__all__ = [
    "HELD_TRANSCRIPT_PATH",
    "MAX_RECORDING_BYTES",
    "RECORDING_PATH",
    "SESSION_PATH",
    "TRANSCRIPT_PATH",
    "Backend",
    "BackendAuthError",
    "BackendError",
    "BackendMisconfigured",
    "BackendRejected",
    "BackendResponseInvalid",
    "BackendUnavailable",
    "DeliveryReceipt",
    "HttpBackend",
    "LocalBackend",
    "create_idempotency_key",
    "make_backend",
    "recording_idempotency_key",
    "strip_echoes",
    "transcript_idempotency_key",
]


def make_backend(settings: Settings) -> Backend:
    """The real client when BACKEND_URL is set, otherwise the embedded local default."""
    if settings.has_backend:
        return HttpBackend.from_settings(settings)
    return LocalBackend(settings.agent_data_dir)
