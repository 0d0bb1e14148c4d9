"""Checkpoints: the transcript so far, sent to the backend while the call is live.

Rule: a checkpoint never delays the call and never blocks the event loop. `trigger()` (after an
assistant turn) only sets a flag and, when none runs, spawns the call's one checkpoint task; that
task sends at most one request at a time and at most one per `interval` seconds (a trigger inside
the window is deferred to the window's end, never dropped). The payload (`complete: false`,
`endedReason: "in_progress"`) is built on the loop right before the post, and not sent when it
holds no turn beyond the last acknowledged checkpoint (a 409 acknowledges too). A failure is one
`checkpoint.failed` line and a count, nothing else: no retry beyond the backend's own within the
short deadline, and no journal write (the journal already holds every turn). Nothing is sent
once the call ended (`is_live` false); the call's end cancels the task (`Call.cancel_tasks`)
before the final transcript's delivery begins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from agent import metrics
from agent.backend import Backend
from agent.log import get_logger
from agent.models import TranscriptPayload

log = get_logger(__name__)

# A checkpoint's post gives up within this (backend retries included): a newer checkpoint
# supersedes it at the next window anyway, and a short post frees the one in-flight slot sooner.
MAX_DEADLINE = 5.0
MIN_DEADLINE = 1.0

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[Any]"]


def checkpoint_deadline(interval: float) -> float:
    """A post lasts at most one window (the next checkpoint supersedes it), within 1..5 s."""
    return min(max(interval, MIN_DEADLINE), MAX_DEADLINE)


def _always_live() -> bool:
    return True


class Checkpointer:
    """Coalesced checkpoints of one call (see the module rule). `spawn` owns the task (the
    call's `Call.spawn`, so the call's end cancels it); `clock` and `sleep` are injectable so
    tests move time by hand; `interval` 0 turns checkpoints off."""

    def __init__(
        self,
        backend: Backend,
        session_id: str,
        build: Callable[[], TranscriptPayload],
        *,
        interval: float,
        spawn: Spawn,
        is_live: Callable[[], bool] = _always_live,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._backend = backend
        self._session_id = session_id
        self._build = build
        self._interval = interval
        self._spawn = spawn
        self._is_live = is_live
        self._deadline = checkpoint_deadline(interval) if deadline is None else deadline
        self._clock = clock
        self._sleep = sleep
        self._wanted = False
        self._task: asyncio.Task[Any] | None = None
        self._next_at = float("-inf")  # the earliest start of the next post
        self._acknowledged = 0  # turns in the last checkpoint the backend acknowledged

    @property
    def enabled(self) -> bool:
        return self._interval > 0

    def trigger(self) -> None:
        """An assistant turn ended: checkpoint soon. Synchronous and cheap (a flag, at most one
        task created); never raises into the recorder."""
        if not self.enabled or not self._is_live():
            return
        self._wanted = True
        # a task cancelled before its first step never ran `_run`'s `finally`
        if self._task is None or self._task.done():
            self._task = self._spawn(self._run(), "call.checkpoint")

    async def _run(self) -> None:
        try:
            while self._wanted and self._is_live():
                wait = self._next_at - self._clock()
                if wait > 0:
                    await self._sleep(wait)
                    continue  # the call may have ended meanwhile: look again
                self._wanted = False
                await self._send_once()
        finally:
            self._task = None

    async def _send_once(self) -> None:
        turn_count = self._acknowledged
        try:
            payload = self._build()
            turn_count = payload.turn_count
            if turn_count <= self._acknowledged:
                return  # nothing new since the last acknowledged checkpoint
            self._next_at = self._clock() + self._interval
            # The backend bounds its own retries by the deadline; the timeout makes it a hard
            # bound even for a backend that overruns it. The context field marks the backend
            # client's own lines (retries) as a checkpoint's, not the final delivery's; it is
            # this task's context only.
            with structlog.contextvars.bound_contextvars(checkpoint=True):
                async with asyncio.timeout(self._deadline):
                    await self._backend.post_transcript(
                        self._session_id, payload, deadline=self._deadline
                    )
        except Exception as error:  # a background task: one line, the call goes on
            log.warning(
                "checkpoint.failed",
                session_id=self._session_id,
                turn_count=turn_count,
                error_type=type(error).__name__,
            )
            metrics.checkpoint("failed")
            return
        # delivered or 409 (the backend holds an equal or better one): both acknowledge
        self._acknowledged = max(self._acknowledged, turn_count)
        metrics.checkpoint("sent")
