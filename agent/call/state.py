"""The call's state: one `Call` per job, from job start to delivered transcript.

Rule: one `Call` per job, stored in `ctx.proc.userdata["call"]` (one job per process) so that
`on_session_end` finds it. The first reason recorded is the call's `endedReason`; every
background task of the call is created through `Call.spawn`, so it has an owner that cancels and
awaits it when the call ends. The call holds the two things it needs of its job (ending it and
asking whether its room is still connected), so nothing passes the job context along for them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from livekit.agents import AgentSession, JobContext
from livekit.agents.voice.events import CloseEvent, CloseReason
from opentelemetry import trace

from agent.backend import Backend
from agent.call.earlier import Earlier, Source
from agent.delivery import DeliveryOutcome
from agent.journal import Journal
from agent.log import get_logger
from agent.models import EndedReason, JobMetadata, Scenario, Session, Turn, Usage, utc_now
from agent.recording import CallRecording
from agent.transcript import TranscriptPublisher, TurnRecorder

log = get_logger(__name__)

CALL_KEY = "call"


def _no_shutdown(reason: str) -> None:
    """A call made outside a job (a unit test) has no job to end."""


def _not_connected() -> bool:
    return False


@dataclass
class Call:
    job_id: str
    room_name: str
    metadata: JobMetadata
    backend: Backend | None = None
    journal: Journal | None = None
    # The job's `ctx.shutdown` and `ctx.room.isconnected` (see `for_job`).
    shutdown: Callable[[str], None] = _no_shutdown
    room_connected: Callable[[], bool] = _not_connected
    started_at: datetime = field(default_factory=utc_now)
    scenario: Scenario | None = None
    session: Session | None = None
    agent_session: AgentSession[Any] | None = None
    recorder: TurnRecorder | None = None
    publisher: TranscriptPublisher | None = None
    # the call's recording, when its metadata says `record: true` (agent.call.recording)
    recording: CallRecording | None = None
    ended_at: datetime | None = None
    ended_reason: EndedReason | None = None
    outcome: DeliveryOutcome | None = None
    # counted in voice_agent_calls_live (agent.metrics) until the call is counted as ended
    counted_live: bool = False
    # the call's root span (agent.tracing): ended by `finish` after the delivery
    span: trace.Span | None = None
    # Turns an earlier run of this call journaled or checkpointed (LiveKit ran the job again,
    # or re-dispatched it after a worker died): the recorder continues after them, the persona
    # has them as its chat context (see agent.call.session.open_journal).
    earlier_turns: list[Turn] = field(default_factory=list)
    # What the look-back at job start found for the session attempt (agent.call.resume).
    earlier: Earlier | None = None
    # Where a resumed call's earlier turns came from; None: a new call (set by open_journal).
    resumed_from: Source | None = None
    # Another live job of this container holds the session attempt (the journal's row is the
    # lock): this job stands down without a word (set by open_journal).
    held_by: str | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @classmethod
    def for_job(
        cls,
        ctx: JobContext,
        metadata: JobMetadata,
        *,
        backend: Backend | None,
        journal: Journal | None,
    ) -> Call:
        return cls(
            ctx.job.id,
            ctx.job.room.name,
            metadata,
            backend=backend,
            journal=journal,
            shutdown=ctx.shutdown,
            room_connected=ctx.room.isconnected,
        )

    @property
    def journaled(self) -> bool:
        return self.session is not None and self.journal is not None and not self.stands_down

    @property
    def stands_down(self) -> bool:
        """This job runs no call: the call is over, or another live job holds it."""
        return self.already_ended or self.held_by is not None

    @property
    def already_ended(self) -> bool:
        """The look-back found this attempt's complete transcript: the call is over (this job
        was dispatched into a room whose call ended), so nothing runs and nothing is delivered."""
        return self.earlier is not None and self.earlier.complete

    def resume_from(self, earlier: Earlier | None) -> None:
        """Record the look-back's finding; a call resumed keeps the earlier call's start (never
        one after now: a final transcript must not start after it ends)."""
        self.earlier = earlier
        if earlier is not None and not earlier.complete:
            self.started_at = min(earlier.started_at, self.started_at)

    @property
    def earlier_usage(self) -> tuple[Usage, ...]:
        """What the earlier runs of a resumed call spent, billed again in its transcript."""
        return self.earlier.usage if self.earlier is not None else ()

    def end_reason(self, reason: EndedReason) -> None:
        """Record why the call ends; the first reason wins (later ones are consequences)."""
        if self.ended_reason is None:
            self.ended_reason = reason
            self.ended_at = utc_now()
            log.info("call.ending", ended_reason=reason)

    def on_session_close(self, event: CloseEvent) -> None:
        """The session closed: map the library's close reason when nothing of ours set a reason
        first, and end the job. Nothing in the library ends the job when the session closes:
        without this the job would linger in the room until the server closes it."""
        if event.reason == CloseReason.PARTICIPANT_DISCONNECTED:
            self.end_reason("caller_left")
        elif event.reason == CloseReason.ERROR:
            self.end_reason("agent_error")
        elif self.room_connected():
            # the parent asked this job to stop: a JobTermination, or the drain timed out
            self.end_reason("job_terminated")
        else:
            self.end_reason("room_closed")
        self.shutdown(f"session_closed:{event.reason.value}")

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("call.task_failed", task=task.get_name(), error_type=type(error).__name__)

    async def settle_tasks(self, timeout: float) -> None:
        """Let the call's tasks finish within `timeout` seconds, then cancel what is left."""
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        await self.cancel_tasks()

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
