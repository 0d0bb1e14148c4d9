"""Per-call state and how a call ends.

Rule: one `Call` per job, stored in `ctx.proc.userdata["call"]` (one job per process) so that
`on_session_end` finds it. The first reason recorded is the call's `endedReason`; every
background task of the call is created through `Call.spawn`, so it has an owner that cancels and
awaits it when the call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from livekit.agents import AgentSession, JobContext
from livekit.agents.voice.events import CloseEvent, CloseReason

from agent.backend import Backend
from agent.delivery import DeliveryOutcome, deliver
from agent.journal import Journal
from agent.log import get_logger
from agent.models import (
    EndedReason,
    JobMetadata,
    Latency,
    Scenario,
    Session,
    TranscriptPayload,
    Turn,
    utc_now,
)
from agent.persona import wait_until_listening
from agent.prompts import load_prompt
from agent.transcript import TranscriptPublisher, TurnRecorder, usage_from_session

log = get_logger(__name__)

CALL_KEY = "call"
HANGUP_INTERRUPT_TIMEOUT = 2.0
CLOSING_PLAYOUT_TIMEOUT = 20.0


@dataclass
class Call:
    job_id: str
    room_name: str
    metadata: JobMetadata
    backend: Backend | None = None
    journal: Journal | None = None
    started_at: datetime = field(default_factory=utc_now)
    scenario: Scenario | None = None
    session: Session | None = None
    agent_session: AgentSession[Any] | None = None
    recorder: TurnRecorder | None = None
    publisher: TranscriptPublisher | None = None
    ended_at: datetime | None = None
    ended_reason: EndedReason | None = None
    outcome: DeliveryOutcome | None = None
    # Turns an earlier run of this job journaled (LiveKit ran the job again): the recorder
    # continues after them (see agent.worker.open_journal).
    earlier_turns: list[Turn] = field(default_factory=list)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def journaled(self) -> bool:
        return self.session is not None and self.journal is not None

    def end_reason(self, reason: EndedReason) -> None:
        """Record why the call ends; the first reason wins (later ones are consequences)."""
        if self.ended_reason is None:
            self.ended_reason = reason
            self.ended_at = utc_now()
            log.info("call.ending", ended_reason=reason)

    def on_session_close(self, event: CloseEvent, *, room_connected: bool) -> None:
        """Map the library's close reason when nothing of ours set a reason first."""
        if event.reason == CloseReason.PARTICIPANT_DISCONNECTED:
            self.end_reason("caller_left")
        elif event.reason == CloseReason.ERROR:
            self.end_reason("agent_error")
        elif room_connected:
            # the parent asked this job to stop: a JobTermination, or the drain timed out
            self.end_reason("job_terminated")
        else:
            self.end_reason("room_closed")

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("call.task_failed", task=task.get_name(), error_type=type(error).__name__)

    async def cancel_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    def linked_identity(self) -> str | None:
        """Who may hang up: the linked participant, else the one the metadata names."""
        if self.agent_session is not None:
            with contextlib.suppress(RuntimeError):
                participant = self.agent_session.room_io.linked_participant
                if participant is not None:
                    return participant.identity
        return self.metadata.participant_identity

    def payload(self) -> TranscriptPayload:
        assert self.session is not None
        turns = self.recorder.turns if self.recorder else []
        usage = []
        if self.agent_session is not None:
            try:
                usage = usage_from_session(self.agent_session)
            except Exception as error:  # usage is a nice-to-have; the transcript is not
                log.warning("call.usage_failed", error_type=type(error).__name__)
        return TranscriptPayload(
            attempt_number=self.session.attempt_number,
            complete=True,
            ended_reason=self.ended_reason or "job_terminated",
            started_at=self.started_at,
            ended_at=self.ended_at or utc_now(),
            turn_count=len(turns),
            turns=turns,
            usage=usage,
            latency=self.recorder.latency() if self.recorder else Latency(),
        )


async def hang_up(ctx: JobContext, call: Call, caller_identity: str) -> None:
    """The caller asked to end the call (RPC `agent.end_call`): stop speaking and end the job.
    The queued turns and `end` are published by on_session_end, after the session closed (so
    the turns the close itself commits are among them) and before the job leaves the room."""
    call.end_reason("caller_hangup")
    if call.agent_session is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call.agent_session.interrupt(), HANGUP_INTERRUPT_TIMEOUT)
    ctx.shutdown("caller_hangup")


async def end_after_no_show(ctx: JobContext, call: Call, seconds: float) -> None:
    """Nobody joined (or nobody became audible) within NO_SHOW_SECONDS: end the call; a
    zero-turn transcript is still delivered."""
    assert call.agent_session is not None
    if not await wait_until_listening(call.agent_session, seconds):
        call.end_reason("no_show")
        ctx.shutdown("no_show")


async def end_at_max_duration(ctx: JobContext, call: Call, seconds: float) -> None:
    """MAX_CALL_SECONDS: say the closing line (uninterruptible), let it play, end the call."""
    await asyncio.sleep(seconds)
    call.end_reason("max_duration")
    if call.agent_session is not None:
        with contextlib.suppress(Exception):
            call.agent_session.interrupt()
            handle = call.agent_session.say(load_prompt("closing"), allow_interruptions=False)
            await asyncio.wait_for(handle.wait_for_playout(), CLOSING_PLAYOUT_TIMEOUT)
    ctx.shutdown("max_duration")


async def deliver_transcript(call: Call, *, deadline: float) -> DeliveryOutcome | None:
    """Build the final transcript and deliver it (journal first). None when the call never had
    a backend session (bad metadata, backend down at start): nothing to deliver."""
    if not call.journaled or call.backend is None:
        return None
    assert call.session is not None and call.journal is not None
    if call.recorder is not None:
        call.recorder.mark_ended(call.ended_at)
    call.outcome = await deliver(
        call.journal, call.backend, call.job_id, call.session.id, call.payload(), deadline=deadline
    )
    return call.outcome
