"""The transport under `HttpBackend`: one logical call to the backend, as attempts retried within
its deadline.

Rule: the service key travels only in the `X-Internal-Service-Key` header: it is never logged,
never put in an exception's text and never sent over plain http except to localhost. Redirects
are never followed (a redirect would carry the key); every call is bounded by its deadline,
retries included. A transient failure (agent.backend.status) is retried with full-jitter
exponential backoff, honouring Retry-After; a body is read up to a cap, never held whole. The
final answer is sorted by `StatusRules`; callers see our `BackendError` family only, never
httpx exceptions.
"""

from __future__ import annotations

import asyncio
import random as _random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import httpx
from pydantic import SecretStr

from agent import metrics
from agent.backend.contract import IDEMPOTENCY_HEADER, KEY_HEADER
from agent.backend.protocol import BackendResponseInvalid, BackendUnavailable
from agent.backend.status import (
    TRANSIENT_4XX,
    Reply,
    StatusRules,
    acknowledgement_problem,
    parse_retry_after,
)
from agent.endpoints import check_backend_url, check_header_secret
from agent.log import get_logger

log = get_logger(__name__)

DEFAULT_TIMEOUT = 5.0  # one attempt (connect, read, write, pool)
DEFAULT_DEADLINE = 10.0  # a whole get/create call, retries included
# The largest legitimate body: a scenario is ~50 kB; a held transcript of an hour's call is a
# few hundred kB of JSON.
MAX_RESPONSE_BYTES = 1 << 20


class _Transient(Exception):
    """One attempt failed in a way worth retrying (internal to the retry loop)."""

    def __init__(self, cause: str, status: int | None = None, retry_after: float | None = None):
        self.cause = cause
        self.status = status
        self.retry_after = retry_after
        super().__init__(cause)


class Transport(StatusRules):
    """An authenticated httpx client to one origin and the retry loop over it (`_call`).

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

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self,
        method: str,
        template: str,
        path: str,
        *,
        content: bytes | None = None,
        content_type: str = "application/json",
        idempotency_key: str | None = None,
        deadline: float | None = None,
        max_attempts: int | None = None,
        done_statuses: frozenset[int] = frozenset(),
        require_ack: bool = False,
        echoes: Iterable[str] = (),
        quiet: bool = False,
    ) -> Reply:
        """One logical call: retries transient failures until the deadline, then classifies
        the final status. Returns a 2xx (or a `done_statuses`) reply; raises otherwise.
        `require_ack`: a 2xx counts only when it acknowledges (`acknowledgement_problem`), else
        it is transient. `echoes`: texts no reason may quote (`strip_echoes`). `max_attempts`
        caps the attempts as well as the deadline. `quiet`: the retry and give-up lines are
        debug, for a caller that logs the failure itself."""
        emit = log.debug if quiet else log.warning
        emit_failure = log.debug if quiet else log.error
        budget = self._default_deadline if deadline is None else deadline
        headers = {KEY_HEADER: self._key.get_secret_value()}
        if content is not None:
            headers["Content-Type"] = content_type
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
                    method,
                    path,
                    content,
                    headers,
                    remaining,
                    attempt,
                    require_ack=require_ack,
                    template=template,
                )
            except _Transient as failure:
                last = failure.cause
                if max_attempts is not None and attempt >= max_attempts:
                    break
                delay = self._backoff(attempt)
                if failure.retry_after is not None:
                    delay = max(delay, failure.retry_after)
                left = ends - self._clock()
                if delay >= left:
                    # Sleeping past the deadline only to give up then helps nobody.
                    if failure.retry_after is not None and failure.retry_after >= left:
                        last += f" (Retry-After {failure.retry_after:g} s exceeds the deadline)"
                    break
                emit(
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
            log.debug(
                "backend.request_done",
                method=method,
                path=template,
                status=reply.status,
                attempts=attempt,
                elapsed_ms=round((self._clock() - started) * 1000),
            )
            return reply
        emit_failure(
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
        template: str = "",
    ) -> Reply:
        # httpx's timeout bounds each phase; asyncio.timeout bounds the whole attempt (a body
        # trickled byte by byte must not outlive the call's deadline).
        per_phase = httpx.Timeout(min(self._timeout, remaining))
        # every attempt is counted once, by the route's template (never the ids in `path`)
        result = "error"
        try:
            async with asyncio.timeout(remaining):
                async with self._client.stream(
                    method, path, content=content, headers=headers, timeout=per_phase
                ) as response:
                    status = response.status_code
                    result = metrics.status_class(status)
                    if status in TRANSIENT_4XX or status >= 500:
                        raise _Transient(
                            str(status),
                            status=status,
                            retry_after=parse_retry_after(response.headers.get("Retry-After")),
                        )
                    body, oversized = await self._read_capped(response)
                    content_type = response.headers.get("Content-Type", "").split(";")[0]
                    location = response.headers.get("Location")
        except (TimeoutError, httpx.TimeoutException):
            if result == "error":  # no status yet: the answer never came
                result = "timeout"
            raise _Transient("timeout") from None
        except httpx.DecodingError:
            # A body that claims a content encoding it does not have.
            if require_ack:
                raise _Transient("response body could not be decoded") from None
            raise BackendResponseInvalid(f"{method}: response body could not be decoded") from None
        except httpx.TransportError as error:
            raise _Transient(type(error).__name__) from None
        finally:
            metrics.backend_request(template, result)
        if require_ack and 200 <= status < 300:
            # A 2xx that is not the backend's acknowledgement (a proxy's login page, an empty
            # 200) stored nothing we know of: treating it as done would lose the transcript.
            problem = acknowledgement_problem(status, body, oversized, content_type.strip()[:100])
            if problem is not None:
                raise _Transient(problem, status=status)
        return Reply(
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
