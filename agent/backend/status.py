"""What each answer of the backend means, and what of it may be kept.

Rule: the status semantics of DESIGN.md ("Status semantics"):
- a transcript POST is done on a 2xx that acknowledges it (a JSON object body, or 204 No
  Content) and on 409 whatever its body (the backend already holds an equal or better one). A 2xx
  with any other body (an HTML login page from a proxy, an empty 200, a JSON array, invalid JSON)
  acknowledges nothing: it is transient like the next item.
- 408/425/429/5xx, timeouts and connection errors are transient: retried with exponential backoff
  and full jitter, honouring Retry-After, until the call's deadline, then `BackendUnavailable`.
- 401/403, 3xx (never followed), 404 and 405 are configuration errors (wrong key, URL or route):
  `BackendMisconfigured` at once (`BackendAuthError` for 401/403), never retried within the call,
  logged once at error level naming the cause. Except on the held-transcript GET, where 404
  is the answer "none held" (None), not an error.
- any other 4xx raises `BackendRejected` with the server's reason, capped, the key redacted and,
  for a transcript, any echo of its turns' text replaced (see `strip_echoes`).
For the other routes a 2xx body that is not JSON, is too large or does not match its model raises
`BackendResponseInvalid` naming the field.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from agent.backend.protocol import (
    BackendAuthError,
    BackendError,
    BackendMisconfigured,
    BackendRejected,
    BackendResponseInvalid,
    misconfiguration_cause,
)
from agent.log import get_logger

log = get_logger(__name__)

REASON_LIMIT = 500  # characters of the server's reason kept in exceptions and logs
MAX_ERRORS_SHOWN = 5

# Transient statuses (and every 5xx): retried within the deadline. Every other status is final,
# sorted by `HttpBackend._classify`.
TRANSIENT_4XX = frozenset({408, 425, 429})
_AUTH = frozenset({401, 403})
# Configuration errors besides 3xx: no retry helps until someone fixes the key, URL or route.
_MISCONFIGURED_4XX = frozenset({401, 403, 404, 405})

# Echo stripping (see `strip_echoes`): runs this long are hidden; shorter whole texts from
# ECHO_MIN_TEXT characters on are hidden too.
ECHO_MIN_RUN = 8
ECHO_MIN_TEXT = 4
ECHO_MARK = "[transcript text]"


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


@dataclass(frozen=True, slots=True)
class Reply:
    """A final (non-transient) answer: the body is capped, `oversized` says it was cut."""

    status: int
    body: bytes
    oversized: bool
    attempts: int
    location: str | None = None  # the Location header of a 3xx (never followed)


_M = TypeVar("_M", bound=BaseModel)


class StatusRules:
    """How `HttpBackend` sorts a final answer (`_classify`) and reads a 2xx body (`_parse`)."""

    _key: SecretStr
    _origin: str
    _max_bytes: int

    def _reason(self, reply: Reply, echoes: Iterable[str] = ()) -> str:
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
        reply: Reply,
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
            log.error(
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
        log.error(
            "backend.request_failed",
            failure="rejected",
            method=method,
            path=template,
            status=status,
            attempts=reply.attempts,
            reason=reason,
        )
        raise BackendRejected(status, reason)

    def _parse(self, reply: Reply, model: type[_M], method: str, template: str) -> _M:
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
        log.error(
            "backend.request_failed",
            failure="invalid",
            method=method,
            path=template,
            status=reply.status,
            model=model.__name__,
            problem=problem,
        )
        raise BackendResponseInvalid(f"{method} {template}: {model.__name__}: {problem}")
