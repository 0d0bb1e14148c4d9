"""`HttpBackend`: the platform's internal API over httpx, one method per route.

Rule: every byte that leaves for the backend or comes back goes through here; callers see our
models and our `BackendError` family only, never httpx exceptions or raw JSON. Each method names
its route's template (never the ids in the path) for logs and metrics, its idempotency key and
the statuses that end it besides a 2xx (agent.backend.status). The key, the redirects, the
retries and the deadline are the transport's (agent.backend.transport): every call is bounded by
its deadline, retries included.
"""

from __future__ import annotations

from agent.backend.contract import (
    HELD_TRANSCRIPT_PATH,
    MAX_RECORDING_BYTES,
    RECORDING_CONTENT_TYPE,
    RECORDING_PATH,
    RECORDING_QUERY,
    SCENARIO_PATH,
    SESSION_PATH,
    SESSIONS_PATH,
    TRANSCRIPT_PATH,
    create_idempotency_key,
    recording_idempotency_key,
    segment,
    transcript_idempotency_key,
)
from agent.backend.protocol import BackendRejected, DeliveryReceipt, DeliveryStatus
from agent.backend.transport import Transport
from agent.config import Settings
from agent.models import HeldTranscript, Scenario, Session, SessionCreate, TranscriptPayload

# A held-transcript read is on the call's start path (the caller is waiting to be greeted):
# one attempt plus at most one quick retry, both within BACKEND_TIMEOUT, never the longer
# default deadline of the other reads.
HELD_TRANSCRIPT_ATTEMPTS = 2


class HttpBackend(Transport):
    """The platform's internal API over httpx: authenticated, validated, bounded and retried.

    `sleep`, `random` and `clock` are injectable so tests can run retries without waiting
    (agent.backend.transport.Transport).
    """

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpBackend:
        if settings.backend_url is None or settings.internal_service_key is None:
            raise ValueError("HttpBackend needs BACKEND_URL and INTERNAL_SERVICE_KEY")
        return cls(
            settings.backend_url, settings.internal_service_key, timeout=settings.backend_timeout
        )

    def __repr__(self) -> str:
        return f"HttpBackend(base_url={self._origin!r})"

    async def __aenter__(self) -> HttpBackend:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ endpoints

    async def get_scenario(self, scenario_id: str) -> Scenario:
        path = SCENARIO_PATH.format(scenarioId=segment(scenario_id))
        reply = await self._call("GET", SCENARIO_PATH, path)
        return self._parse(reply, Scenario, "GET", SCENARIO_PATH)

    async def create_session(self, body: SessionCreate, *, room_sid: str) -> Session:
        # Retries reuse one key, so a create whose answer was lost is replayed, not duplicated;
        # the key is the room's, so a job re-dispatched into the room finds the same session.
        reply = await self._call(
            "POST",
            SESSIONS_PATH,
            SESSIONS_PATH,
            content=body.to_json_bytes(),
            idempotency_key=create_idempotency_key(room_sid),
        )
        return self._parse(reply, Session, "POST", SESSIONS_PATH)

    async def get_session(self, session_id: str) -> Session:
        path = SESSION_PATH.format(sessionId=segment(session_id))
        reply = await self._call("GET", SESSION_PATH, path)
        return self._parse(reply, Session, "GET", SESSION_PATH)

    async def get_transcript(self, session_id: str, attempt_number: int) -> HeldTranscript | None:
        path = HELD_TRANSCRIPT_PATH.format(
            sessionId=segment(session_id), attemptNumber=int(attempt_number)
        )
        # 404 is the answer "none held", not a wrong route: the other calls at job start (the
        # session's GET or create) already tell a wrong BACKEND_URL loudly. Logged and counted
        # under the transcript route's template; the method tells a read from a delivery.
        reply = await self._call(
            "GET",
            TRANSCRIPT_PATH,
            path,
            deadline=self._timeout,
            max_attempts=HELD_TRANSCRIPT_ATTEMPTS,
            done_statuses=frozenset({404}),
        )
        if reply.status == 404:
            return None
        return self._parse(reply, HeldTranscript, "GET", TRANSCRIPT_PATH)

    async def post_transcript(
        self, session_id: str, payload: TranscriptPayload, *, deadline: float
    ) -> DeliveryReceipt:
        path = TRANSCRIPT_PATH.format(sessionId=segment(session_id))
        # 409 is done whatever its body: only the backend's ranking answers it (a proxy's page
        # comes as 2xx or 3xx), and refusing it would keep a held transcript pending for ever.
        reply = await self._call(
            "POST",
            TRANSCRIPT_PATH,
            path,
            content=payload.to_json_bytes(),
            idempotency_key=transcript_idempotency_key(session_id, payload),
            deadline=deadline,
            done_statuses=frozenset({409}),
            require_ack=True,
            echoes=[turn.text for turn in payload.turns],
            # A checkpoint's failure is its caller's one line (`checkpoint.failed`); retries
            # of a transcript the next checkpoint supersedes are not worth a warning each.
            quiet=payload.ended_reason == "in_progress",
        )
        status: DeliveryStatus = "already_delivered" if reply.status == 409 else "delivered"
        return DeliveryReceipt(status=status, attempts=reply.attempts)

    async def put_recording(
        self, session_id: str, attempt_number: int, part: int, body: bytes, *, deadline: float
    ) -> DeliveryReceipt:
        if len(body) > MAX_RECORDING_BYTES:
            # the contract's bound: refused here as the backend would (413), never sent
            raise BackendRejected(413, f"recording of {len(body)} bytes exceeds 64 MiB")
        path = RECORDING_PATH.format(sessionId=segment(session_id)) + RECORDING_QUERY.format(
            attemptNumber=int(attempt_number), part=int(part)
        )
        # the same status semantics as a transcript: 409 (already held) is done, a 2xx must
        # acknowledge; the body is audio, so no reason can echo turn text
        reply = await self._call(
            "PUT",
            RECORDING_PATH,
            path,
            content=body,
            content_type=RECORDING_CONTENT_TYPE,
            idempotency_key=recording_idempotency_key(body),
            deadline=deadline,
            done_statuses=frozenset({409}),
            require_ack=True,
        )
        status: DeliveryStatus = "already_delivered" if reply.status == 409 else "delivered"
        return DeliveryReceipt(status=status, attempts=reply.attempts)
