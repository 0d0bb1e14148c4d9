"""`deliver`: one transcript, journal first, then the backend within a deadline.

Rule: the final transcript is in the journal before the first byte goes to the backend; each
answer maps to one outcome (DESIGN.md "Status semantics"): acknowledged or 409 -> delivered and
removed, another 4xx -> dead letter, a configuration error -> `misconfigured` and pending,
anything else -> `deferred` and pending. Never raises but CancelledError.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from agent import metrics
from agent.backend import (
    Backend,
    BackendMisconfigured,
    BackendRejected,
    BackendResponseInvalid,
    BackendUnavailable,
    strip_echoes,
)
from agent.delivery.lease import holding_lease, release_shielded
from agent.journal import CallHeldElsewhere, Journal
from agent.log import get_logger
from agent.models import TranscriptPayload
from agent.tracing import child_span

log = get_logger(__name__)

OutcomeStatus = Literal["delivered", "already_delivered", "deferred", "rejected", "misconfigured"]
MAX_DETAIL_CHARS = 300


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What became of one transcript. `attempts` counts delivery rounds for this call so far
    (this one included; kept in the journal across processes); `detail` is a short cause, never
    transcript text."""

    call_id: str
    session_id: str
    status: OutcomeStatus
    attempts: int
    detail: str = ""


def clip(text: str) -> str:
    """A cause or reason cut to MAX_DETAIL_CHARS (outcomes, dead letters, log lines)."""
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"


def _prepare(
    journal: Journal, call_id: str, session_id: str, payload: TranscriptPayload
) -> tuple[TranscriptPayload | None, int]:
    held = journal.finish_call(call_id, payload, session_id=session_id)
    attempts = journal.begin_attempt(call_id) if held is not None else 0
    return held, attempts


async def _journal_step(
    operation: Callable[..., object], call_id: str, *args: object
) -> object | None:
    """Bookkeeping after the post: a journal failure here (disk full, I/O error) must not turn
    a delivered transcript into an exception; the row simply stays and a later recovery gets a
    409 for it."""
    try:
        return await asyncio.to_thread(operation, call_id, *args)
    except Exception as error:
        log.error(
            "journal.write_failed",
            call_id=call_id,
            operation=getattr(operation, "__name__", "?"),
            error=repr(error),
        )
        return None


async def deliver(
    journal: Journal,
    backend: Backend,
    call_id: str,
    session_id: str,
    payload: TranscriptPayload,
    *,
    deadline: float,
) -> DeliveryOutcome:
    """Journal the final transcript, then post it within `deadline` seconds (backend retries
    included). Never raises for a delivery or journal failure (only CancelledError passes): the
    outcome says what happened and the journal keeps whatever was not delivered."""
    async with child_span("voice_agent.delivery", **{"voice_agent.call_id": call_id}) as span:
        outcome = await _deliver(journal, backend, call_id, session_id, payload, deadline=deadline)
        span.set_attributes(
            {"voice_agent.outcome": outcome.status, "voice_agent.attempts": outcome.attempts}
        )
    counted = METRIC_OUTCOMES.get(outcome.status)
    if counted is not None and outcome.attempts > 0:  # 0: no round ran (held elsewhere, dead)
        metrics.delivery("retried" if counted == "delivered" and outcome.attempts > 1 else counted)
    return outcome


# The operator's words for the outcomes (voice_agent_deliveries_total, and the recordings'
# voice_agent_recordings_total, agent.recording.upload): a first-round delivery,
# a 409 (the backend had it), a later round's delivery, kept pending, kept as a dead letter.
METRIC_OUTCOMES: dict[OutcomeStatus, str] = {
    "delivered": "delivered",
    "already_delivered": "duplicate",
    "deferred": "pending",
    "misconfigured": "pending",
    "rejected": "dead",
}


async def _deliver(
    journal: Journal,
    backend: Backend,
    call_id: str,
    session_id: str,
    payload: TranscriptPayload,
    *,
    deadline: float,
) -> DeliveryOutcome:
    loop = asyncio.get_running_loop()
    started = loop.time()
    fields: dict[str, object] = {"call_id": call_id, "session_id": session_id}
    journaled = True
    try:
        held, attempts = await asyncio.to_thread(_prepare, journal, call_id, session_id, payload)
    except CallHeldElsewhere:
        # another process claimed this call for recovery and is delivering it right now
        log.info("delivery.held_elsewhere", **fields)
        return DeliveryOutcome(call_id, session_id, "deferred", 0, "held by another process")
    except Exception as error:
        # The journal cannot write (disk full, I/O error): posting now is this transcript's
        # only chance, so go ahead without the journal rather than give up.
        log.error("journal.write_failed", operation="finish_call", error=repr(error), **fields)
        journaled, held, attempts = False, payload, 1
    if held is None:
        log.error("delivery.dead_letter_kept", **fields)
        return DeliveryOutcome(call_id, session_id, "rejected", 0, "already a dead letter")
    fields |= {"turn_count": held.turn_count, "complete": held.complete, "attempts": attempts}

    try:
        async with contextlib.AsyncExitStack() as stack:
            if journaled:
                await stack.enter_async_context(holding_lease(journal, call_id))
            remaining = deadline - (loop.time() - started)
            if remaining <= 0:
                raise TimeoutError
            # The backend bounds its own retries by `deadline`; the timeout makes it a hard
            # bound even for a backend that overruns it.
            async with asyncio.timeout(remaining):
                receipt = await backend.post_transcript(session_id, held, deadline=remaining)
    except asyncio.CancelledError:
        if journaled:
            await release_shielded(journal, call_id)
        raise
    except BackendRejected as error:
        # The server may quote the body it refused: no turn text goes into the dead letter or
        # the log (HttpBackend strips it already; this holds for any Backend).
        echo_free = strip_echoes(error.reason, [turn.text for turn in held.turns])
        reason = clip(f"{error.status}: {echo_free}")
        if journaled:
            await _journal_step(journal.mark_dead, call_id, reason)
        log.error("delivery.rejected", status=error.status, reason=reason, **fields)
        return DeliveryOutcome(call_id, session_id, "rejected", attempts, reason)
    except BackendMisconfigured as error:
        # Pending, not dead: nothing is wrong with the transcript, and once the key, URL or route
        # is fixed a recovery delivers it. The backend logged the loud line naming the cause.
        if journaled:
            await _journal_step(journal.release, call_id)
        log.warning("delivery.misconfigured", status=error.status, cause=error.cause, **fields)
        detail = clip(f"{error.status}: {error.cause}")
        return DeliveryOutcome(call_id, session_id, "misconfigured", attempts, detail)
    except (BackendUnavailable, BackendResponseInvalid, TimeoutError) as error:
        if journaled:
            await _journal_step(journal.release, call_id)
        cause = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
        log.warning("delivery.deferred", cause=cause, error=clip(str(error)), **fields)
        return DeliveryOutcome(call_id, session_id, "deferred", attempts, cause)
    except Exception as error:
        # Not one of the backend's documented errors (a bug): keep the transcript, say so.
        if journaled:
            await _journal_step(journal.release, call_id)
        log.exception("delivery.failed", error_type=type(error).__name__, **fields)
        return DeliveryOutcome(call_id, session_id, "deferred", attempts, type(error).__name__)

    # With what was posted: if the journal meanwhile got a better transcript for this call (its
    # owner finished while we delivered a rebuild), the row stays pending for the next recovery.
    removed = await _journal_step(journal.mark_delivered, call_id, held) if journaled else False
    log.info(
        "delivery.delivered",
        status=receipt.status,
        http_attempts=receipt.attempts,
        elapsed_ms=round((loop.time() - started) * 1000, 1),
        journal_row_removed=bool(removed),
        **fields,
    )
    return DeliveryOutcome(
        call_id, session_id, receipt.status, attempts, f"http_attempts={receipt.attempts}"
    )
