"""Step 4 of a call: how it ends, besides the session closing (`Call.on_session_close`): the
hang-up RPC `agent.end_call`, the no-show and the max-duration timers.

Rule: each end records the call's ended reason first (the first reason wins), then ends the job
through `call.shutdown`; the turns and `end` are flushed later, by `finish`, once the session
has closed. Only the linked participant may hang up; the RPC handler answers at once, never
raises into the library (every exception is caught and logged) and runs the end once, in a task
the call owns. The handler and the timers call in here; nothing in here calls back into them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from livekit import rtc

from agent.call.state import Call
from agent.log import get_logger
from agent.persona import wait_until_listening
from agent.prompts import load_prompt

log = get_logger(__name__)

HANGUP_INTERRUPT_TIMEOUT = 2.0
CLOSING_PLAYOUT_TIMEOUT = 20.0

END_CALL_RPC_METHOD = "agent.end_call"
# Application error codes outside the library's reserved 1001-1999 range.
RPC_ERROR_FORBIDDEN = 403
RPC_ERROR_FAILED = 500


async def hang_up(call: Call, caller_identity: str) -> None:
    """The caller asked to end the call (RPC `agent.end_call`): stop speaking and end the job.
    The queued turns and `end` are published by on_session_end, after the session closed (so
    the turns the close itself commits are among them) and before the job leaves the room."""
    call.end_reason("caller_hangup")
    if call.agent_session is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call.agent_session.interrupt(), HANGUP_INTERRUPT_TIMEOUT)
    call.shutdown("caller_hangup")


async def end_after_no_show(call: Call, seconds: float) -> None:
    """Nobody joined (or nobody became audible) within NO_SHOW_SECONDS: end the call; a
    zero-turn transcript is still delivered."""
    assert call.agent_session is not None
    if not await wait_until_listening(call.agent_session, seconds):
        call.end_reason("no_show")
        call.shutdown("no_show")


async def end_at_max_duration(call: Call, seconds: float) -> None:
    """MAX_CALL_SECONDS: say the closing line (uninterruptible), let it play, end the call."""
    await asyncio.sleep(seconds)
    call.end_reason("max_duration")
    if call.agent_session is not None:
        with contextlib.suppress(Exception):
            call.agent_session.interrupt()
            handle = call.agent_session.say(load_prompt("closing"), allow_interruptions=False)
            await asyncio.wait_for(handle.wait_for_playout(), CLOSING_PLAYOUT_TIMEOUT)
    call.shutdown("max_duration")


class RpcRegistrar(Protocol):
    """The part of `rtc.LocalParticipant` the hang-up RPC needs."""

    def register_rpc_method(
        self,
        method_name: str,
        handler: Callable[[rtc.RpcInvocationData], Awaitable[str]],
    ) -> Any: ...


Spawn = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[Any]]


class _EndCallHandler:
    """Answers `agent.end_call` at once and runs the end in an owned task, once per call."""

    def __init__(
        self,
        on_end_call: Callable[[str], Awaitable[None]],
        allowed_identity: Callable[[], str | None],
        spawn: Spawn | None,
    ) -> None:
        self._on_end_call = on_end_call
        self._allowed_identity = allowed_identity
        self._spawn = spawn
        self._tasks: set[asyncio.Task[Any]] = set()
        self.requested = False

    async def __call__(self, data: rtc.RpcInvocationData) -> str:
        try:
            allowed = self._allowed_identity()
            # Before anyone is linked there is no caller to speak for: anyone in the room (an
            # observer, a second tab) could otherwise end somebody else's call.
            if allowed is None or data.caller_identity != allowed:
                log.warning("transcript.end_call_refused", caller_identity=data.caller_identity)
                raise rtc.RpcError(RPC_ERROR_FORBIDDEN, "only the linked participant may end it")
            if not self.requested:
                self.requested = True
                log.info("transcript.end_call_requested", caller_identity=data.caller_identity)
                self._start(data.caller_identity)
            return "ok"
        except rtc.RpcError:
            raise
        except Exception as error:
            _handler_failed("rpc:" + END_CALL_RPC_METHOD, error)
            raise rtc.RpcError(RPC_ERROR_FAILED, "end_call failed") from None

    def _start(self, caller_identity: str) -> None:
        coro = self._run(caller_identity)
        if self._spawn is not None:
            self._spawn(coro, "transcript.end_call")
            return
        task = asyncio.get_running_loop().create_task(coro, name="transcript.end_call")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, caller_identity: str) -> None:
        try:
            await self._on_end_call(caller_identity)
        except Exception as error:
            log.error("transcript.end_call_failed", error_type=_name(error))


def register_end_call_rpc(
    local_participant: RpcRegistrar,
    on_end_call: Callable[[str], Awaitable[None]],
    *,
    allowed_identity: Callable[[], str | None],
    spawn: Spawn | None = None,
) -> None:
    """Register `agent.end_call`: only the linked participant hangs up (`allowed_identity()`;
    while it is None, nobody is linked and every request is refused with RpcError 403). The
    handler answers "ok" at once and runs `on_end_call(caller_identity)` once, in a task owned
    by `spawn` (e.g. `Call.spawn`) or by the registration; a second request answers "ok"
    without ending twice."""
    handler = _EndCallHandler(on_end_call, allowed_identity, spawn)
    local_participant.register_rpc_method(END_CALL_RPC_METHOD, handler)


def _name(error: BaseException) -> str:
    return type(error).__name__


def _handler_failed(event: str, error: Exception) -> None:
    # error_type only at error level: exception texts (pydantic's) may quote transcript text
    log.error("transcript.handler_failed", event_name=event, error_type=_name(error))
    log.debug("transcript.handler_failed_detail", event_name=event, error=repr(error))
