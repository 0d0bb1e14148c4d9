"""Recovery: delivering what any process left undelivered, and the shutdown backstop.

Rule: a transcript is recovered only through the journal's claim (one process per row, never a
row with a fresh lease); on the first deferred or misconfigured outcome the rest are released
untouched, and nothing stays leased to this process when it is cancelled.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from agent.backend import Backend
from agent.delivery.lease import release_shielded
from agent.delivery.post import DeliveryOutcome, deliver
from agent.journal import ClaimedCall, Journal, RowUnreadable
from agent.log import get_logger
from agent.models import EndedReason, TranscriptPayload

log = get_logger(__name__)


class _Outcome(Protocol):
    @property
    def status(self) -> str: ...


_Item = TypeVar("_Item")
_Sent = TypeVar("_Sent", bound=_Outcome)


async def in_turn(
    claimed: Sequence[_Item],
    send: Callable[[_Item], Awaitable[_Sent]],
    release: Callable[[_Item], Awaitable[None]],
) -> tuple[list[_Sent], int]:
    """Send each claimed item in order. On the first deferred or misconfigured outcome the rest
    are released untouched: the backend is down or misconfigured, and trying each in turn would
    only spend the deadline N times. Released also when cancelled (a drain, a job ending), so
    nothing stays claimed by this process. Returns the outcomes and how many were not tried.
    Transcripts (`recover_pending`) and recordings (agent.recording) recover through it."""
    outcomes: list[_Sent] = []
    remaining = list(claimed)
    try:
        while remaining:
            outcome = await send(remaining.pop(0))
            outcomes.append(outcome)
            if outcome.status in ("deferred", "misconfigured"):
                break
    finally:
        for item in remaining:
            await release(item)
    return outcomes, len(remaining)


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
        log.info("recovery.orphan_turns_swept", count=swept)
    claimed = await asyncio.to_thread(journal.claim_recoverable)
    if not claimed:
        log.debug("recovery.nothing_to_do")
        return []
    log.info("recovery.claimed", count=len(claimed))

    async def send(item: ClaimedCall) -> DeliveryOutcome:
        return await deliver(
            journal, backend, item.call_id, item.session_id, item.payload, deadline=deadline
        )

    async def release(item: ClaimedCall) -> None:
        await release_shielded(journal, item.call_id)

    outcomes, remaining = await in_turn(claimed, send, release)
    counts = Counter(outcome.status for outcome in outcomes)
    summary = {
        "claimed": len(claimed),
        "delivered": counts["delivered"],
        "already_delivered": counts["already_delivered"],
        "deferred": counts["deferred"],
        "rejected": counts["rejected"],
        "misconfigured": counts["misconfigured"],
        "not_attempted": remaining,
    }
    if all(outcome.status in ("delivered", "already_delivered") for outcome in outcomes) and (
        not remaining
    ):
        log.info("recovery.delivered", **summary)
    else:
        log.warning("recovery.incomplete", **summary)
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
        log.warning("delivery.backstop_skipped", call_id=call_id, cause="journal_timeout")
        return None
    except RowUnreadable:
        # left to recovery, which sets the row aside as a dead letter with the reason
        log.error("delivery.backstop_skipped", call_id=call_id, cause="row_unreadable")
        return None
    if to_send is None:
        log.debug("delivery.backstop_not_needed", call_id=call_id)
        return None
    log.info("delivery.backstop", call_id=call_id, session_id=session_id)
    return await deliver(
        journal,
        backend,
        call_id,
        session_id,
        to_send,
        deadline=max(0.0, timeout - (loop.time() - started)),
    )
