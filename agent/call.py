"""Per-call state and how a call ends.

Rule: one `Call` per job, stored in `ctx.proc.userdata["call"]` (one job per process) so that
`on_session_end` finds it. The first reason recorded is the call's `endedReason`; every
background task of the call is created through `Call.spawn` so it has an owner that cancels and
awaits it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from livekit.agents.voice.events import CloseEvent, CloseReason

from agent.log import get_logger
from agent.models import EndedReason, JobMetadata, Scenario, Session, utc_now

log = get_logger(__name__)

CALL_KEY = "call"


@dataclass
class Call:
    job_id: str
    room_name: str
    metadata: JobMetadata
    started_at: datetime = field(default_factory=utc_now)
    scenario: Scenario | None = None
    session: Session | None = None
    ended_at: datetime | None = None
    ended_reason: EndedReason | None = None
    session_started: bool = False
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

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
            # the parent asked this job to stop: a JobTermination or the drain timed out
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
            log.error("call.task_failed", task=task.get_name(), error=repr(error))

    async def cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
