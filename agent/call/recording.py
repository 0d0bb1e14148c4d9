"""The call's recording, when the platform consented (`record: true` in the job metadata): begun
before the persona's first word, stopped when the call ends, uploaded after the transcript.

Rule: a recording never costs the call anything: every failure here is one log line and the
call goes on unrecorded; the transcript is delivered first and never waits for the upload (the
recorder is stopped in a task beside the delivery). What the upload does not finish within the
time left stays journaled for recovery.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from livekit.agents import AgentSession

from agent.call.state import Call
from agent.config import Settings
from agent.journal import RecordingToSend
from agent.log import get_logger
from agent.recording import CallRecording, RecordingUnavailable, upload_recording

log = get_logger(__name__)


def recording_hook(
    call: Call, settings: Settings
) -> Callable[[AgentSession[Any]], Awaitable[None]] | None:
    """What the persona runs before its first word: the recording's start, only with consent."""
    if not call.metadata.record:
        return None
    return functools.partial(start_recording, call, settings)


async def start_recording(call: Call, settings: Settings, session: AgentSession[Any]) -> None:
    if call.recording is not None or call.journal is None or call.session is None:
        return
    try:
        call.recording = await CallRecording.start(
            session,
            call.journal,
            call_id=call.job_id,
            session_id=call.session.id,
            attempt_number=call.session.attempt_number,
            resumed=call.resumed_from is not None,
            data_dir=settings.agent_data_dir,
            max_bytes=settings.recording_max_mb * 1024 * 1024,
        )
    except RecordingUnavailable as error:
        log.error("recording.unavailable", cause=str(error)[:200])
        return
    except Exception as error:  # the persona's on_enter must go on to greet
        log.exception("recording.start_failed", error_type=type(error).__name__)
        return
    call.spawn(call.recording.watch_size(), "recording.cap")


def stop_recording(call: Call) -> asyncio.Task[RecordingToSend | None] | None:
    """Stop the recorder now (the call is over), in a task the call owns, beside the
    transcript's delivery. Call it after the call's other tasks were cancelled."""
    if call.recording is None:
        return None
    return call.spawn(call.recording.stop(), "recording.stop")


async def upload_after_transcript(
    call: Call, stopping: asyncio.Task[RecordingToSend | None] | None, *, deadline: float
) -> None:
    """Once the transcript is delivered (or not): the sealed recording, within `deadline`."""
    if stopping is None or call.recording is None:
        return
    try:
        sealed = await stopping
        if sealed is None or call.journal is None or call.backend is None:
            return  # journaled as it is: recovery seals and uploads it
        if deadline <= 0:
            log.info("recording.left_for_recovery", recording_id=sealed.recording_id)
            await asyncio.to_thread(call.journal.release_recording, sealed.recording_id)
            return
        outcome = await upload_recording(call.journal, call.backend, sealed, deadline=deadline)
        call.recording.outcome = outcome.status
    except Exception as error:  # the call's end must still be logged; the journal keeps it
        log.exception("recording.finish_failed", error_type=type(error).__name__)
