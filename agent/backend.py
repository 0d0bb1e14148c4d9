"""The backend boundary: a small Protocol, the real httpx client and the embedded local default.

Rule: every byte that leaves for the backend or comes back goes through here; callers see our
models and our `BackendError` family only, never httpx exceptions or raw JSON. The service key
travels only in the `X-Internal-Service-Key` header: it is never logged, never put in an
exception's text and never sent over plain http except to localhost.

Status semantics (DESIGN.md, "Status semantics"):
- a transcript POST is done on a 2xx that acknowledges it (a JSON object body, or 204 No
  Content) and on 409 whatever its body (the backend already holds an equal or better one). A 2xx
  with any other body (an HTML login page from a proxy, an empty 200, a JSON array, invalid JSON)
  acknowledges nothing: it is transient like the next item.
- 408/425/429/5xx, timeouts and connection errors are transient: retried with exponential backoff
  and full jitter, honouring Retry-After, until the call's deadline, then `BackendUnavailable`.
- 401/403, 3xx (never followed), 404 and 405 are configuration errors (wrong key, URL or route):
  `BackendMisconfigured` at once (`BackendAuthError` for 401/403), never retried within the call,
  logged once at error level naming the cause.
- any other 4xx raises `BackendRejected` with the server's reason, capped, the key redacted and,
  for a transcript, any echo of its turns' text replaced (see `strip_echoes`).
For the other routes a 2xx body that is not JSON, is too large or does not match its model raises
`BackendResponseInvalid` naming the field.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import random as _random
import re
import sqlite3
import stat
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import quote

import httpx
import structlog
from pydantic import BaseModel, SecretStr, ValidationError

from agent.config import Settings, check_backend_url, check_header_secret
from agent.models import Scenario, Session, SessionCreate, TranscriptPayload, utc_now
from agent.prompts import PROMPTS_DIR, PromptError, load_scenario


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

    async def create_session(self, body: SessionCreate, *, job_id: str) -> Session: ...

    async def get_session(self, session_id: str) -> Session: ...

    async def post_transcript(
        self, session_id: str, payload: TranscriptPayload, *, deadline: float
    ) -> DeliveryReceipt:
        """Deliver within `deadline` seconds. An acknowledging 2xx -> delivered, 409 ->
        already_delivered; otherwise raises BackendUnavailable / BackendMisconfigured /
        BackendRejected (the reason free of the payload's turn text)."""
        ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- contract constants

KEY_HEADER = "X-Internal-Service-Key"
IDEMPOTENCY_HEADER = "Idempotency-Key"

SCENARIO_PATH = "/api/internal/scenarios/{scenarioId}"
SESSIONS_PATH = "/api/internal/sessions"
SESSION_PATH = "/api/internal/sessions/{sessionId}"
TRANSCRIPT_PATH = "/api/internal/sessions/{sessionId}/transcript"

DEFAULT_TIMEOUT = 5.0  # one attempt (connect, read, write, pool)
DEFAULT_DEADLINE = 10.0  # a whole get/create call, retries included
MAX_RESPONSE_BYTES = 1 << 20  # the largest legitimate body (a scenario) is ~50 kB
REASON_LIMIT = 500  # characters of the server's reason kept in exceptions and logs
MAX_ERRORS_SHOWN = 5

# Transient statuses (and every 5xx): retried within the deadline. Every other status is final,
# sorted by `HttpBackend._classify`.
_TRANSIENT_4XX = frozenset({408, 425, 429})
_AUTH = frozenset({401, 403})
# Configuration errors besides 3xx: no retry helps until someone fixes the key, URL or route.
_MISCONFIGURED_4XX = frozenset({401, 403, 404, 405})

# Echo stripping (see `strip_echoes`): runs this long are hidden; shorter whole texts from
# ECHO_MIN_TEXT characters on are hidden too.
ECHO_MIN_RUN = 8
ECHO_MIN_TEXT = 4
ECHO_MARK = "[transcript text]"


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


def create_idempotency_key(job_id: str) -> str:
    """The `Idempotency-Key` of a session creation: one session per LiveKit job."""
    return f"create:{job_id}"


def _segment(value: str) -> str:
    # An id is one path segment: `/`, `?`, `#`, `..` and spaces must not change the route.
    return quote(value, safe="")


def _one_line(text: str, limit: int = REASON_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def strip_echoes(reason: str, texts: Iterable[str]) -> str:
    """`reason` with every echo of `texts` (a transcript's turn texts) replaced by ECHO_MARK, so a
    server that quotes the body it refused never puts the caller's words in a log or a journal.

    An echo is any run of at least ECHO_MIN_RUN consecutive characters of `reason` that also
    occurs in one of the texts, and any whole text of ECHO_MIN_TEXT to ECHO_MIN_RUN - 1
    characters. Both sides are compared with whitespace collapsed (as `_one_line` does), each text
    raw and as the inside of a JSON string literal (how a validator quotes it: `\"`, `\n`,
    `\u00e9`). Overlapping echoes merge into one mark. Texts under ECHO_MIN_TEXT characters ("ok")
    are not looked for: hiding them would mangle reasons and hide nothing. A false match only
    shortens the reason.
    """
    grams: dict[int, set[str]] = {}
    for text in texts:
        variants = {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
        for variant in variants:
            variant = " ".join(variant.split())
            if len(variant) < ECHO_MIN_TEXT:
                continue
            size = min(ECHO_MIN_RUN, len(variant))
            found = grams.setdefault(size, set())
            found.update(variant[i : i + size] for i in range(len(variant) - size + 1))
    hidden = [False] * len(reason)
    for size, found in grams.items():
        for start in range(len(reason) - size + 1):
            if reason[start : start + size] in found:
                hidden[start : start + size] = [True] * size
    if not any(hidden):
        return reason
    parts: list[str] = []
    for index, char in enumerate(reason):
        if not hidden[index]:
            parts.append(char)
        elif index == 0 or not hidden[index - 1]:
            parts.append(ECHO_MARK)
    return "".join(parts)


def acknowledgement_problem(
    status: int, body: bytes, oversized: bool, content_type: str = ""
) -> str | None:
    """None when a 2xx acknowledges a stored transcript (204, or a JSON object body); otherwise
    what is wrong with it, without quoting the body (a proxy's page may carry anything)."""
    if status == 204:
        return None
    prefix = f"{status} is not an acknowledgement:"
    if oversized:
        return f"{prefix} body too large"
    if not body.strip():
        return f"{prefix} empty body"
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError):
        return f"{prefix} body is not JSON ({content_type or 'no Content-Type'})"
    if not isinstance(data, dict):
        return f"{prefix} JSON {_json_kind(data)}, not an object"
    return None


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def describe_validation_error(error: ValidationError) -> str:
    """`field.path: message` per problem (wire names, never the offending values)."""
    problems = error.errors(include_input=False, include_url=False)
    parts = [
        f"{'.'.join(str(p) for p in item['loc']) or '(root)'}: {item['msg']}"
        for item in problems[:MAX_ERRORS_SHOWN]
    ]
    if len(problems) > MAX_ERRORS_SHOWN:
        parts.append(f"(+{len(problems) - MAX_ERRORS_SHOWN} more)")
    return "; ".join(parts)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date); None when absent
    or unreadable (then our own backoff applies)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is unreadable
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


# --------------------------------------------------------------------------- the http client


@dataclass(frozen=True, slots=True)
class _Reply:
    """A final (non-transient) answer: the body is capped, `oversized` says it was cut."""

    status: int
    body: bytes
    oversized: bool
    attempts: int
    location: str | None = None  # the Location header of a 3xx (never followed)


class _Transient(Exception):
    """One attempt failed in a way worth retrying (internal to the retry loop)."""

    def __init__(self, cause: str, status: int | None = None, retry_after: float | None = None):
        self.cause = cause
        self.status = status
        self.retry_after = retry_after
        super().__init__(cause)


_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")


class HttpBackend:
    """The platform's internal API over httpx: authenticated, validated, bounded and retried.

    `sleep`, `random` and `clock` are injectable so tests can run retries without waiting: the
    deadline is measured on `clock`, backoff waits go through `sleep`, jitter draws from `random`.
    """

    def __init__(
        self,
        base_url: str,
        key: SecretStr,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        default_deadline: float = DEFAULT_DEADLINE,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        backoff_base: float = 0.25,
        backoff_cap: float = 4.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Settings validated both already, with these same functions; checked again because
        # this is where the key leaves, and a value that passed boot must pass here too.
        origin = check_backend_url(base_url, "BACKEND_URL")
        check_header_secret(key.get_secret_value(), "INTERNAL_SERVICE_KEY")
        if timeout <= 0 or default_deadline <= 0 or max_response_bytes <= 0:
            raise ValueError("timeout, default_deadline and max_response_bytes must be positive")
        self._origin = origin
        self._key = key
        self._timeout = timeout
        self._default_deadline = default_deadline
        self._max_bytes = max_response_bytes
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._random = random
        self._clock = clock
        # No redirects: a redirect would carry the key to wherever it points (httpx strips only
        # Authorization across origins, not our header).
        self._client = httpx.AsyncClient(
            base_url=self._origin,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "voice-agent-worker"},
        )
        # One lazy logger per client (not per module) so a structlog reconfiguration, such as
        # capture_logs in tests, applies to clients made after it even with logger caching.
        self._log: structlog.stdlib.BoundLogger = structlog.get_logger(__name__)

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

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ endpoints

    async def get_scenario(self, scenario_id: str, *, deadline: float | None = None) -> Scenario:
        path = SCENARIO_PATH.format(scenarioId=_segment(scenario_id))
        reply = await self._call("GET", SCENARIO_PATH, path, deadline=deadline)
        return self._parse(reply, Scenario, "GET", SCENARIO_PATH)

    async def create_session(
        self, body: SessionCreate, *, job_id: str, deadline: float | None = None
    ) -> Session:
        # Retries reuse one key, so a create whose answer was lost is replayed, not duplicated.
        reply = await self._call(
            "POST",
            SESSIONS_PATH,
            SESSIONS_PATH,
            content=body.to_json_bytes(),
            idempotency_key=create_idempotency_key(job_id),
            deadline=deadline,
        )
        return self._parse(reply, Session, "POST", SESSIONS_PATH)

    async def get_session(self, session_id: str, *, deadline: float | None = None) -> Session:
        path = SESSION_PATH.format(sessionId=_segment(session_id))
        reply = await self._call("GET", SESSION_PATH, path, deadline=deadline)
        return self._parse(reply, Session, "GET", SESSION_PATH)

    async def post_transcript(
        self, session_id: str, payload: TranscriptPayload, *, deadline: float
    ) -> DeliveryReceipt:
        path = TRANSCRIPT_PATH.format(sessionId=_segment(session_id))
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
        )
        status: DeliveryStatus = "already_delivered" if reply.status == 409 else "delivered"
        return DeliveryReceipt(status=status, attempts=reply.attempts)

    # ------------------------------------------------------------------ machinery

    async def _call(
        self,
        method: str,
        template: str,
        path: str,
        *,
        content: bytes | None = None,
        idempotency_key: str | None = None,
        deadline: float | None,
        done_statuses: frozenset[int] = frozenset(),
        require_ack: bool = False,
        echoes: Iterable[str] = (),
    ) -> _Reply:
        """One logical call: retries transient failures until the deadline, then classifies
        the final status. Returns a 2xx (or a `done_statuses`) reply; raises otherwise.
        `require_ack`: a 2xx counts only when it acknowledges (`acknowledgement_problem`), else
        it is transient. `echoes`: texts no reason may quote (`strip_echoes`)."""
        budget = self._default_deadline if deadline is None else deadline
        headers = {KEY_HEADER: self._key.get_secret_value()}
        if content is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        started = self._clock()
        ends = started + budget
        attempt = 0
        last = "deadline elapsed before the first attempt"
        while True:
            remaining = ends - self._clock()
            if remaining <= 0:
                break
            attempt += 1
            try:
                reply = await self._attempt(
                    method, path, content, headers, remaining, attempt, require_ack=require_ack
                )
            except _Transient as failure:
                last = failure.cause
                delay = self._backoff(attempt)
                if failure.retry_after is not None:
                    delay = max(delay, failure.retry_after)
                left = ends - self._clock()
                if delay >= left:
                    # Sleeping past the deadline only to give up then helps nobody.
                    if failure.retry_after is not None and failure.retry_after >= left:
                        last += f" (Retry-After {failure.retry_after:g} s exceeds the deadline)"
                    break
                self._log.warning(
                    "backend.retrying",
                    method=method,
                    path=template,
                    status=failure.status,
                    error=None if failure.cause == str(failure.status) else failure.cause,
                    attempt=attempt,
                    delay=round(delay, 3),
                )
                await self._sleep(delay)
                continue
            self._classify(reply, method, template, done_statuses, echoes)
            self._log.debug(
                "backend.request_done",
                method=method,
                path=template,
                status=reply.status,
                attempts=attempt,
                elapsed_ms=round((self._clock() - started) * 1000),
            )
            return reply
        self._log.error(
            "backend.request_failed",
            failure="unavailable",
            method=method,
            path=template,
            attempts=attempt,
            last=last,
            deadline=budget,
        )
        raise BackendUnavailable(
            f"{method} {template}: backend unavailable after {attempt} attempt(s) "
            f"within {budget:g} s (last: {last})"
        )

    async def _attempt(
        self,
        method: str,
        path: str,
        content: bytes | None,
        headers: Mapping[str, str],
        remaining: float,
        attempt: int,
        *,
        require_ack: bool = False,
    ) -> _Reply:
        # httpx's timeout bounds each phase; asyncio.timeout bounds the whole attempt (a body
        # trickled byte by byte must not outlive the call's deadline).
        per_phase = httpx.Timeout(min(self._timeout, remaining))
        try:
            async with asyncio.timeout(remaining):
                async with self._client.stream(
                    method, path, content=content, headers=headers, timeout=per_phase
                ) as response:
                    status = response.status_code
                    if status in _TRANSIENT_4XX or status >= 500:
                        raise _Transient(
                            str(status),
                            status=status,
                            retry_after=parse_retry_after(response.headers.get("Retry-After")),
                        )
                    body, oversized = await self._read_capped(response)
                    content_type = response.headers.get("Content-Type", "").split(";")[0]
                    location = response.headers.get("Location")
        except (TimeoutError, httpx.TimeoutException):
            raise _Transient("timeout") from None
        except httpx.DecodingError:
            # A body that claims a content encoding it does not have.
            if require_ack:
                raise _Transient("response body could not be decoded") from None
            raise BackendResponseInvalid(f"{method}: response body could not be decoded") from None
        except httpx.TransportError as error:
            raise _Transient(type(error).__name__) from None
        if require_ack and 200 <= status < 300:
            # A 2xx that is not the backend's acknowledgement (a proxy's login page, an empty
            # 200) stored nothing we know of: treating it as done would lose the transcript.
            problem = acknowledgement_problem(status, body, oversized, content_type.strip()[:100])
            if problem is not None:
                raise _Transient(problem, status=status)
        return _Reply(
            status=status, body=body, oversized=oversized, attempts=attempt, location=location
        )

    async def _read_capped(self, response: httpx.Response) -> tuple[bytes, bool]:
        """The body, stopping once past the cap (a runaway body is never held in memory)."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            return b"", True
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                chunks.append(chunk[: self._max_bytes - (size - len(chunk))])
                return b"".join(chunks), True
            chunks.append(chunk)
        return b"".join(chunks), False

    def _backoff(self, attempt: int) -> float:
        # Full jitter: uniform in [0, min(cap, base * 2^(n-1))], so retrying workers spread out.
        # The exponent is clamped: thousands of fast refusals must not overflow the float.
        ceiling = min(self._backoff_cap, self._backoff_base * 2.0 ** min(attempt - 1, 30))
        return self._random() * ceiling

    def _reason(self, reply: _Reply, echoes: Iterable[str] = ()) -> str:
        text = reply.body.decode("utf-8", errors="replace")
        # Defensive: a server that echoes request headers must not put the key in our logs.
        text = text.replace(self._key.get_secret_value(), "[redacted]")
        # Echoes are stripped before the cap (a quote cut by the cap is still found), on a prefix
        # only: a reason is capped anyway and a 1 MB body must not cost a long search.
        text = strip_echoes(" ".join(text.split())[: 4 * REASON_LIMIT], echoes)
        return _one_line(text) or httpx.codes.get_reason_phrase(reply.status) or "no reason given"

    def _location_host(self, location: str | None) -> str:
        # Only the host: the rest of a login redirect may carry a token or a return URL.
        if not location:
            return "nowhere (no Location header)"
        try:
            host = httpx.URL(self._origin + "/").join(location.strip()).host
        except (httpx.InvalidURL, ValueError, TypeError):
            host = ""
        return host[:253] or "an unreadable Location"

    def _classify(
        self,
        reply: _Reply,
        method: str,
        template: str,
        done_statuses: frozenset[int],
        echoes: Iterable[str] = (),
    ) -> None:
        status = reply.status
        if 200 <= status < 300 or status in done_statuses:
            return
        if 300 <= status < 400 or status in _MISCONFIGURED_4XX:
            # A configuration error: the one loud line an operator needs, naming what to fix.
            error: BackendError
            if status < 400:
                # Never followed (the key would go wherever it points); its body only repeats
                # the target, so the host is all we keep.
                cause = f"redirect to {self._location_host(reply.location)} (not followed)"
                reason = ""
                error = BackendMisconfigured(status, reason, cause=cause)
            else:
                reason = self._reason(reply, echoes)
                kind = BackendAuthError if status in _AUTH else BackendMisconfigured
                error = kind(status, reason)
                cause = misconfiguration_cause(status)
            self._log.error(
                "backend.request_failed",
                failure="misconfigured",
                method=method,
                path=template,
                status=status,
                attempts=reply.attempts,
                cause=cause,
                reason=reason,
            )
            raise error
        reason = self._reason(reply, echoes)
        self._log.error(
            "backend.request_failed",
            failure="rejected",
            method=method,
            path=template,
            status=status,
            attempts=reply.attempts,
            reason=reason,
        )
        raise BackendRejected(status, reason)

    def _parse(self, reply: _Reply, model: type[_M], method: str, template: str) -> _M:
        problem: str | None = None
        result: _M | None = None
        if reply.oversized:
            problem = f"response body exceeds {self._max_bytes} bytes"
        else:
            try:
                data: Any = json.loads(reply.body)
            except (ValueError, RecursionError) as error:
                # An HTML page (a proxy's login) on a 2xx lands here: an error, not a crash.
                problem = f"response is not JSON ({type(error).__name__})"
            else:
                try:
                    result = model.model_validate(data)
                except ValidationError as error:
                    problem = describe_validation_error(error)
        if result is not None:
            return result
        self._log.error(
            "backend.request_failed",
            failure="invalid",
            method=method,
            path=template,
            status=reply.status,
            model=model.__name__,
            problem=problem,
        )
        raise BackendResponseInvalid(f"{method} {template}: {model.__name__}: {problem}")


# --------------------------------------------------------------------------- the local default

_SAFE_STEM = re.compile(r"^[A-Za-z0-9_-]{1,100}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    assignment_id TEXT,
    room_name TEXT NOT NULL,
    attempt_number INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions (user_id, scenario_id);
"""


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
        self._prompts_dir = prompts_dir
        # Two deliveries of one session in this process must not both see "nothing held yet".
        self._write_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"LocalBackend(data_dir={str(self.data_dir)!r})"

    async def aclose(self) -> None:
        return None

    async def get_scenario(self, scenario_id: str, *, deadline: float | None = None) -> Scenario:
        try:
            return await asyncio.to_thread(load_scenario, scenario_id, self._prompts_dir)
        except PromptError as error:
            raise BackendRejected(404, str(error)) from None

    async def create_session(
        self, body: SessionCreate, *, job_id: str, deadline: float | None = None
    ) -> Session:
        return await self._run(self._create_session_sync, body, job_id)

    async def get_session(self, session_id: str, *, deadline: float | None = None) -> Session:
        session = await self._run(self._find_session_sync, session_id)
        if session is None:
            raise BackendRejected(404, f"no local session {session_id!r}")
        return session

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
        db.executescript(_SCHEMA)
        return db

    def _private_transcripts_dir(self) -> None:
        """The transcripts directory, 0700: made so, or closed if an older version left it open
        (the directory's mode guards every file in it, whatever mode those files have)."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.transcripts_dir.mkdir(exist_ok=True, mode=0o700)
        if stat.S_IMODE(self.transcripts_dir.stat().st_mode) & 0o077:
            self.transcripts_dir.chmod(0o700)

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

    def _create_session_sync(self, body: SessionCreate, job_id: str) -> Session:
        columns = "id, user_id, scenario_id, assignment_id, attempt_number"
        with closing(self._connect()) as db:
            # IMMEDIATE takes the write lock before reading the count: two processes creating
            # sessions for the same user and scenario get consecutive numbers, never the same.
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    f"SELECT {columns} FROM sessions WHERE job_id = ?", (job_id,)
                ).fetchone()
                if row is None:
                    (number,) = db.execute(
                        "SELECT COALESCE(MAX(attempt_number), 0) + 1 FROM sessions "
                        "WHERE user_id = ? AND scenario_id = ?",
                        (body.user_id, body.scenario_id),
                    ).fetchone()
                    session_id = f"local-{uuid.uuid4().hex}"
                    db.execute(
                        "INSERT INTO sessions (id, job_id, user_id, scenario_id, assignment_id,"
                        " room_name, attempt_number, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            session_id,
                            job_id,
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

    def _held_ranks(self, stem: str, attempt_number: int) -> list[tuple[bool, int]]:
        ranks: list[tuple[bool, int]] = []
        for path in self.transcripts_dir.glob(f"{stem}.*.json"):
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                held = TranscriptPayload.model_validate(stored["transcript"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not ours or unreadable: it cannot outrank a valid transcript
            if held.attempt_number == attempt_number:
                ranks.append(_rank(held))
        return ranks

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
        if any(held >= _rank(payload) for held in self._held_ranks(stem, payload.attempt_number)):
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
        return "delivered"


# --------------------------------------------------------------------------- choice


def make_backend(settings: Settings) -> Backend:
    """The real client when BACKEND_URL is set, otherwise the embedded local default."""
    if settings.has_backend:
        return HttpBackend.from_settings(settings)
    return LocalBackend(settings.agent_data_dir)
