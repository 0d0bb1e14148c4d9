"""Step 5 of a call: after it ended, the transcript on its way, in one direction only.

Rule: the end-of-call path flows one way: the call ended -> the final turns flushed to the data
channel (then `end`) -> the transcript built -> journal -> delivery -> the recording's upload
(when the call was recorded; its recorder stops beside the delivery) -> the one `call.ended`
line.
`finish` runs from `on_session_end`, within the library's `session_end_timeout`; `backstop` is
the shutdown callback's last attempt, only while the journal still says undelivered.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime

from opentelemetry import trace

from agent import metrics
from agent.call.recording import stop_recording, upload_after_transcript
from agent.call.state import Call
from agent.config import Settings
from agent.delivery import DeliveryOutcome, backstop, deliver
from agent.log import get_logger
from agent.models import EndedReason, Latency, TranscriptPayload, utc_now
from agent.transcript import merge_usage, usage_from_session

log = get_logger(__name__)

# Room left in session_end_timeout for the journal steps around the post and `call.ended`.
SESSION_END_MARGIN = 6.0


async def finish(call: Call, settings: Settings) -> None:
    """The call ended: name the reason if nothing did, stop its tasks, flush the turns and
    `end`, deliver the transcript, log `call.ended`."""
    started = time.monotonic()
    if call.ended_reason is None:
        call.end_reason("job_terminated" if call.room_connected() else "room_closed")
    await call.cancel_tasks()
    stopping = stop_recording(call)  # beside the delivery: the transcript never waits for it
    # counted before the delivery, which the library may cut short at session_end_timeout
    metrics.call_ended(call.ended_reason, was_live=call.counted_live)
    call.counted_live = False
    if call.publisher is not None:
        await call.publisher.finish(send_end=call.room_connected())
    # The library cancels this hook at session_end_timeout: leave room for the journal steps
    # around the post and for the call.ended line.
    left = settings.session_end_timeout - (time.monotonic() - started) - SESSION_END_MARGIN
    # the delivery's span is a child of the call's, which ends with it (agent.tracing)
    in_call = trace.use_span(call.span, end_on_exit=True) if call.span else contextlib.nullcontext()
    with in_call:
        await deliver_transcript(call, deadline=max(1.0, min(settings.delivery_deadline, left)))
        # what is left of the hook's time; a recording not uploaded by then stays journaled
        left = settings.session_end_timeout - (time.monotonic() - started) - SESSION_END_MARGIN
        await upload_after_transcript(
            call, stopping, deadline=min(settings.delivery_deadline, left)
        )
        if call.span is not None:
            call.span.set_attributes(
                {
                    "voice_agent.ended_reason": call.ended_reason or "",
                    "voice_agent.turn_count": call.recorder.turn_count if call.recorder else 0,
                    "voice_agent.delivery": call.outcome.status if call.outcome else "none",
                }
            )
    log_call_ended(call)


def build_transcript(call: Call) -> TranscriptPayload:
    return _build(
        call,
        complete=True,
        ended_reason=call.ended_reason or "job_terminated",
        ended_at=call.ended_at or utc_now(),
    )


def build_checkpoint(call: Call) -> TranscriptPayload:
    """The transcript so far of a live call (agent.delivery.checkpoint): the same turns, usage
    and latency as the final one would hold now, `complete: false`, `in_progress`, ended now."""
    return _build(call, complete=False, ended_reason="in_progress", ended_at=utc_now())


def _build(
    call: Call, *, complete: bool, ended_reason: EndedReason, ended_at: datetime
) -> TranscriptPayload:
    assert call.session is not None
    turns = call.recorder.turns if call.recorder else []
    usage = []
    if call.agent_session is not None:
        try:
            usage = usage_from_session(call.agent_session)
        except Exception as error:  # usage is a nice-to-have; the transcript is not
            log.warning("call.usage_failed", error_type=type(error).__name__)
    # a resumed call bills its earlier runs too (their checkpoint's usage)
    usage = merge_usage(call.earlier_usage, usage)
    return TranscriptPayload(
        attempt_number=call.session.attempt_number,
        complete=complete,
        ended_reason=ended_reason,
        started_at=call.started_at,
        ended_at=ended_at,
        turn_count=len(turns),
        turns=turns,
        usage=usage,
        latency=call.recorder.latency() if call.recorder else Latency(),
    )


async def deliver_transcript(call: Call, *, deadline: float) -> DeliveryOutcome | None:
    """Build the final transcript and deliver it (journal first). None when the call never had
    a backend session (bad metadata, backend down at start): nothing to deliver."""
    if not call.journaled or call.backend is None:
        return None
    assert call.session is not None and call.journal is not None
    if call.recorder is not None:
        call.recorder.mark_ended(call.ended_at)
    call.outcome = await deliver(
        journal=call.journal,
        backend=call.backend,
        call_id=call.job_id,
        session_id=call.session.id,
        payload=build_transcript(call),
        deadline=deadline,
    )
    return call.outcome


async def backstop_call(call: Call, settings: Settings) -> None:
    """Shutdown callback: runs after the room disconnected, bounded by the parent's kill timer.
    Only if the journal still says undelivered (on_session_end timed out or was skipped)."""
    if call.backend is None:
        return
    try:
        if call.journaled:
            assert call.session is not None and call.journal is not None
            await backstop(
                journal=call.journal,
                backend=call.backend,
                call_id=call.job_id,
                session_id=call.session.id,
                timeout=settings.backstop_timeout,
                ended_reason=call.ended_reason or "job_terminated",
            )
    finally:
        await call.backend.aclose()


def log_call_ended(call: Call) -> None:
    ended = call.ended_at or call.started_at
    latency = call.recorder.latency() if call.recorder else None
    log.info(
        "call.ended",
        session_id=call.session.id if call.session else None,
        ended_reason=call.ended_reason,
        turn_count=call.recorder.turn_count if call.recorder else 0,
        duration_s=round((ended - call.started_at).total_seconds(), 3),
        delivery=call.outcome.status if call.outcome else "none",
        delivery_attempts=call.outcome.attempts if call.outcome else 0,
        recording=call.recording.outcome if call.recording else "none",
        e2e_p50_ms=latency.e2e_ms.p50 if latency and latency.e2e_ms else None,
        e2e_p90_ms=latency.e2e_ms.p90 if latency and latency.e2e_ms else None,
    )
