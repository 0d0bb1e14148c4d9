"""Transcript delivery with nothing lost: journal first, backend second, delete last.

Rule: a transcript is written to the journal (`finish_call`) before the first byte goes to the
backend, and removed only after the backend acknowledged it (a 2xx with a JSON object body or 204,
or 409: it already holds an equal or better one). Every failure keeps it: a rejection (other 4xx)
as a dead letter with the server's reason (capped, no turn text in it), anything else as pending,
released so that a later recovery (worker start, next job, drain) can claim it. That includes a
configuration error (401/403, 3xx, 404, 405: outcome `misconfigured`), which recovery retries
once the key, URL or route is fixed. While a delivery is in flight its process holds the row's
lease, so no other process posts the same transcript. All SQLite work goes through
`asyncio.to_thread`: the worker's main loop also carries the LiveKit connection. Logs carry ids
and counts, never transcript text or secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

import structlog

from agent.backend import (
    Backend,
    BackendMisconfigured,
    BackendRejected,
    BackendResponseInvalid,
    BackendUnavailable,
    strip_echoes,
)
from agent.journal import LEASE_REFRESH_SECONDS, LEASE_SECONDS, CallHeldElsewhere, Journal
from agent.models import EndedReason, TranscriptPayload


def _log() -> structlog.stdlib.BoundLogger:
    # Looked up per use, not once per module: with `cache_logger_on_first_use` a module-level
    # logger would keep the processors of whichever configuration came first (and miss a later
    # reconfiguration such as tests' capture_logs). Logging here is rare, so the lookup is free.
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(__name__)
    return logger


OutcomeStatus = Literal["delivered", "already_delivered", "deferred", "rejected", "misconfigured"]
# Outcomes after which the journal no longer holds the transcript as undelivered.
SETTLED: frozenset[OutcomeStatus] = frozenset({"delivered", "already_delivered", "rejected"})
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

    @property
    def settled(self) -> bool:
        return self.status in SETTLED


async def keep_lease(journal: Journal, call_id: str, *, interval: float | None = None) -> None:
    """Refresh this process's lease on a call every `interval` seconds (default: a third of the
    lease, 10 s for the 30 s lease) until cancelled; the live job runs it for the whole call.
    Returns when the row is no longer ours."""
    if interval is None:
        interval = journal.lease_seconds * LEASE_REFRESH_SECONDS / LEASE_SECONDS
    while True:
        await asyncio.sleep(interval)
        try:
            held = await asyncio.to_thread(journal.refresh_lease, call_id)
        except Exception as error:  # a busy or full disk must not end the call
            _log().warning("journal.lease_refresh_failed", call_id=call_id, error=repr(error))
            continue
        if not held:
            # Not ours any more. Delivered, dead-lettered or released by our own delivery is the
            # normal end of a call; taken over by another process means our lease ran out.
            try:
                holder = await asyncio.to_thread(journal.holder, call_id)
            except Exception:
                holder = None
            if holder is not None and holder != journal.owner:
                _log().warning("journal.lease_lost", call_id=call_id, claimed_by_pid=holder.pid)
            else:
                _log().debug("journal.lease_ended", call_id=call_id)
            return


@contextlib.asynccontextmanager
async def _holding_lease(journal: Journal, call_id: str) -> AsyncIterator[None]:
    # A delivery may outlast one lease (deadline 30 s, lease 30 s): keep it fresh meanwhile.
    keeper = asyncio.create_task(keep_lease(journal, call_id), name=f"lease:{call_id}")
    try:
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper


def _clip(text: str) -> str:
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
        _log().error(
            "journal.write_failed",
            call_id=call_id,
            operation=getattr(operation, "__name__", "?"),
            error=repr(error),
        )
        return None


async def _release_shielded(journal: Journal, call_id: str) -> None:
    # Used when cancelled mid-delivery (session_end_timeout, shutdown): hand the row back now
    # rather than leave it leased until this process dies; shielded so the release completes.
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.shield(asyncio.to_thread(journal.release, call_id))


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
    loop = asyncio.get_running_loop()
    started = loop.time()
    fields: dict[str, object] = {"call_id": call_id, "session_id": session_id}
    journaled = True
    try:
        held, attempts = await asyncio.to_thread(_prepare, journal, call_id, session_id, payload)
    except CallHeldElsewhere:
        # another process claimed this call for recovery and is delivering it right now
        _log().info("delivery.held_elsewhere", **fields)
        return DeliveryOutcome(call_id, session_id, "deferred", 0, "held by another process")
    except Exception as error:
        # The journal cannot write (disk full, I/O error): posting now is this transcript's
        # only chance, so go ahead without the journal rather than give up.
        _log().error("journal.write_failed", operation="finish_call", error=repr(error), **fields)
        journaled, held, attempts = False, payload, 1
    if held is None:
        _log().error("delivery.dead_letter_kept", **fields)
        return DeliveryOutcome(call_id, session_id, "rejected", 0, "already a dead letter")
    fields |= {"turn_count": held.turn_count, "complete": held.complete, "attempts": attempts}

    try:
        async with contextlib.AsyncExitStack() as stack:
            if journaled:
                await stack.enter_async_context(_holding_lease(journal, call_id))
            remaining = deadline - (loop.time() - started)
            if remaining <= 0:
                raise TimeoutError
            # The backend bounds its own retries by `deadline`; the timeout makes it a hard
            # bound even for a backend that overruns it.
            async with asyncio.timeout(remaining):
                receipt = await backend.post_transcript(session_id, held, deadline=remaining)
    except asyncio.CancelledError:
        if journaled:
            await _release_shielded(journal, call_id)
        raise
    except BackendRejected as error:
        # The server may quote the body it refused: no turn text goes into the dead letter or
        # the log (HttpBackend strips it already; this holds for any Backend).
        echo_free = strip_echoes(error.reason, [turn.text for turn in held.turns])
        reason = _clip(f"{error.status}: {echo_free}")
        if journaled:
            await _journal_step(journal.mark_dead, call_id, reason)
        _log().error("delivery.rejected", status=error.status, reason=reason, **fields)
        return DeliveryOutcome(call_id, session_id, "rejected", attempts, reason)
    except BackendMisconfigured as error:
        # Pending, not dead: nothing is wrong with the transcript, and once the key, URL or route
        # is fixed a recovery delivers it. The backend logged the loud line naming the cause.
        if journaled:
            await _journal_step(journal.release, call_id)
        _log().warning("delivery.misconfigured", status=error.status, cause=error.cause, **fields)
        detail = _clip(f"{error.status}: {error.cause}")
        return DeliveryOutcome(call_id, session_id, "misconfigured", attempts, detail)
    except (BackendUnavailable, BackendResponseInvalid, TimeoutError) as error:
        if journaled:
            await _journal_step(journal.release, call_id)
        cause = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
        _log().warning("delivery.deferred", cause=cause, error=_clip(str(error)), **fields)
        return DeliveryOutcome(call_id, session_id, "deferred", attempts, cause)
    except Exception as error:
        # Not one of the backend's documented errors (a bug): keep the transcript, say so.
        if journaled:
            await _journal_step(journal.release, call_id)
        _log().exception("delivery.failed", error_type=type(error).__name__, **fields)
        return DeliveryOutcome(call_id, session_id, "deferred", attempts, type(error).__name__)

    # With what was posted: if the journal meanwhile got a better transcript for this call (its
    # owner finished while we delivered a rebuild), the row stays pending for the next recovery.
    removed = await _journal_step(journal.mark_delivered, call_id, held) if journaled else False
    _log().info(
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


async def recover_pending(
    journal: Journal, backend: Backend, *, deadline: float
) -> list[DeliveryOutcome]:
    """Claim every recoverable transcript (dead calls and deferred deliveries of any process)
    and deliver each within `deadline` seconds. On the first deferred or misconfigured outcome
    the rest are released untouched: the backend is down or misconfigured, and trying each
    in turn would only spend the deadline N times. Safe to run from several processes at once.
    Turns whose call row is gone (a hung owner's late appends) are swept first."""
    swept = await asyncio.to_thread(journal.sweep_orphan_turns)
    if swept:
        _log().info("recovery.orphan_turns_swept", count=swept)
    claimed = await asyncio.to_thread(journal.claim_recoverable)
    if not claimed:
        _log().debug("recovery.nothing_to_do")
        return []
    _log().info("recovery.claimed", count=len(claimed))
    outcomes: list[DeliveryOutcome] = []
    remaining = list(claimed)
    try:
        while remaining:
            item = remaining.pop(0)
            outcome = await deliver(
                journal, backend, item.call_id, item.session_id, item.payload, deadline=deadline
            )
            outcomes.append(outcome)
            if outcome.status in ("deferred", "misconfigured"):
                break
    finally:
        # Released also when cancelled (a drain, a job ending), so nothing stays leased to us.
        for item in remaining:
            await _release_shielded(journal, item.call_id)
    counts = Counter(outcome.status for outcome in outcomes)
    summary = {
        "claimed": len(claimed),
        "delivered": counts["delivered"],
        "already_delivered": counts["already_delivered"],
        "deferred": counts["deferred"],
        "rejected": counts["rejected"],
        "misconfigured": counts["misconfigured"],
        "not_attempted": len(remaining),
    }
    if all(outcome.status in ("delivered", "already_delivered") for outcome in outcomes) and (
        not remaining
    ):
        _log().info("recovery.delivered", **summary)
    else:
        _log().warning("recovery.incomplete", **summary)
    return outcomes


async def backstop(
    journal: Journal,
    backend: Backend,
    call_id: str,
    session_id: str,
    *,
    timeout: float,
    payload: TranscriptPayload | None = None,
    ended_reason: EndedReason = "job_terminated",
) -> DeliveryOutcome | None:
    """The shutdown-callback safety net: only if the journal says the call is undelivered, one
    delivery bounded by `timeout` (shutdown_process_timeout - 2 s). Without a `payload` it sends
    what the journal holds: the stored final transcript, or one rebuilt from the journaled turns
    (incomplete, with `ended_reason`). None: nothing to do (delivered, dead letter, or never
    journaled)."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    def _look() -> TranscriptPayload | None:
        if not journal.is_undelivered(call_id):
            return None
        if payload is not None:
            return payload
        return journal.current_payload(call_id, ended_reason=ended_reason)

    try:
        async with asyncio.timeout(timeout):
            to_send = await asyncio.to_thread(_look)
    except TimeoutError:
        _log().warning("delivery.backstop_skipped", call_id=call_id, cause="journal_timeout")
        return None
    if to_send is None:
        _log().debug("delivery.backstop_not_needed", call_id=call_id)
        return None
    _log().info("delivery.backstop", call_id=call_id, session_id=session_id)
    return await deliver(
        journal,
        backend,
        call_id,
        session_id,
        to_send,
        deadline=max(0.0, timeout - (loop.time() - started)),
    )
