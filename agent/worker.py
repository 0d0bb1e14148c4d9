"""The composition root: `build_server(settings)` and the job's lifecycle hooks.

Rule: `prewarm`, `entrypoint` and `on_session_end` are module-level functions, because the
library pickles them by reference into job processes (no closures). Nothing happens at import
time. The entrypoint reads as a table of contents; behaviour lives in the modules it calls.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import time
from dataclasses import dataclass
from typing import Any

from livekit.agents import (
    AgentServer,
    AgentSession,
    JobContext,
    JobProcess,
    get_job_context,
    vad,
)
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.voice import room_io
from livekit.agents.voice.events import CloseEvent, ErrorEvent
from livekit.agents.worker import ServerEnvOption
from livekit.plugins import silero

from agent.backend import BackendError, make_backend
from agent.call import (
    CALL_KEY,
    Call,
    deliver_transcript,
    end_after_no_show,
    end_at_max_duration,
    hang_up,
)
from agent.config import Settings, load_settings
from agent.delivery import backstop, keep_lease, recover_pending
from agent.journal import LEASE_SECONDS, CallHeldElsewhere, Journal
from agent.log import configure_logging, get_logger
from agent.models import JobMetadata
from agent.persona import ApologyAgent, PersonaAgent
from agent.pipeline import build_apology_session, build_session
from agent.prompts import load_prompt
from agent.startup import MetadataError, fetch_and_connect, parse_job_metadata
from agent.transcript import (
    TranscriptPublisher,
    TurnRecorder,
    register_end_call_rpc,
    room_data_sink,
)

log = get_logger(__name__)

PROCESS_KEY = "process"
SESSION_END_MARGIN = 6.0


@dataclass(frozen=True)
class ProcessState:
    """Per-process objects, made once by prewarm and used by the one job the process runs."""

    settings: Settings
    vad: vad.VAD
    journal: Journal


class WorkerServer(AgentServer):
    """AgentServer that (a) remembers why `run` failed: the LiveKit CLI logs the failure and
    exits 0, so `__main__` reads `failure` to exit non-zero; (b) delivers journaled transcripts
    when the worker starts and once more after a drain, from the main process."""

    failure: BaseException | None = None
    settings: Settings | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recovery: set[asyncio.Task[Any]] = set()
        self._drained = False
        self.on("worker_started", self._on_started)

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        try:
            await super().run(devmode=devmode, unregistered=unregistered)
        except Exception as error:
            self.failure = error
            raise

    def _on_started(self) -> None:
        if self.settings is not None:
            task = asyncio.create_task(startup_recovery(self.settings), name="recovery.startup")
            self._recovery.add(task)
            task.add_done_callback(self._recovery.discard)

    async def drain(self, timeout: NotGivenOr[int | None] = NOT_GIVEN) -> None:
        self._drained = True
        await super().drain(timeout)

    async def aclose(self) -> None:
        for task in list(self._recovery):
            task.cancel()
        await asyncio.gather(*self._recovery, return_exceptions=True)
        await super().aclose()
        # After a drain every job process has exited (a timed-out drain's jobs were told to stop
        # by super().aclose()): whatever they could not deliver is in the journal now.
        if self._drained and self.settings is not None:
            await recover_in_main(self.settings)


async def startup_recovery(settings: Settings) -> None:
    """At worker start, and once more when the leases of a just-died container's rows have run
    out (a live lease protects a row until then). A container is another host to the journal:
    the first pass notes each of its leases, the second, a lease later, claims those that were
    not refreshed in between (agent.journal's module docstring)."""
    await recover_in_main(settings)
    await asyncio.sleep(LEASE_SECONDS + 1)
    await recover_in_main(settings)


async def recover_in_main(settings: Settings) -> None:
    """Deliver what earlier processes left undelivered. This loop also carries the LiveKit
    connection: every SQLite and file operation runs in a thread."""
    try:
        journal = await asyncio.to_thread(Journal.in_dir, settings.agent_data_dir)
    except Exception as error:
        log.error("recovery.journal_unavailable", error_type=type(error).__name__)
        return
    backend = make_backend(settings)
    try:
        await recover_pending(journal, backend, deadline=settings.delivery_deadline)
    finally:
        await backend.aclose()
        await asyncio.to_thread(journal.close)


def prewarm(proc: JobProcess) -> None:
    # Job processes do not run __main__: configure logging and read settings again here.
    settings = load_settings()
    configure_logging(settings.log_level)
    proc.userdata[PROCESS_KEY] = ProcessState(
        settings=settings,
        vad=silero.VAD.load(),
        journal=Journal.in_dir(settings.agent_data_dir),
    )


def build_server(settings: Settings) -> WorkerServer:
    idle: dict[str, Any] = {}
    if settings.num_idle_processes is not None:
        idle["num_idle_processes"] = ServerEnvOption(
            dev_default=0, prod_default=settings.num_idle_processes
        )
    server = WorkerServer(
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret.get_secret_value(),
        port=settings.port,
        log_level=settings.log_level,
        drain_timeout=settings.effective_drain_timeout,
        shutdown_process_timeout=settings.shutdown_process_timeout,
        session_end_timeout=settings.session_end_timeout,
        initialize_process_timeout=settings.initialize_process_timeout,
        load_threshold=ServerEnvOption(dev_default=math.inf, prod_default=settings.load_threshold),
        job_memory_warn_mb=settings.job_memory_warn_mb,
        job_memory_limit_mb=settings.job_memory_limit_mb,
        max_retry=settings.livekit_max_retry,
        setup_fnc=prewarm,
        **idle,
    )
    server.settings = settings
    server.rtc_session(
        entrypoint, agent_name=settings.agent_name_or_default, on_session_end=on_session_end
    )
    return server


def process_state(ctx: JobContext) -> ProcessState:
    state = ctx.proc.userdata.get(PROCESS_KEY)
    if not isinstance(state, ProcessState):
        # console's thread executor may skip prewarm: make the same objects lazily
        prewarm(ctx.proc)
        state = ctx.proc.userdata[PROCESS_KEY]
    assert isinstance(state, ProcessState)
    return state


async def entrypoint(ctx: JobContext) -> None:
    proc = process_state(ctx)
    settings = proc.settings
    try:
        metadata = parse_job_metadata(ctx.job.metadata, settings)
    except MetadataError as error:
        log.error("job.metadata_invalid", fields=error.fields)
        ctx.shutdown("invalid_metadata")
        return
    ctx.log_context_fields = {"scenario_id": metadata.scenario_id}
    backend = make_backend(settings)
    call = Call(ctx.job.id, ctx.job.room.name, metadata, backend=backend, journal=proc.journal)
    ctx.proc.userdata[CALL_KEY] = call
    ctx.add_shutdown_callback(_backstop)
    call.spawn(recover_pending(proc.journal, backend, deadline=settings.delivery_deadline), "rec")

    try:
        call.scenario, call.session = await fetch_and_connect(ctx, backend, metadata)
    except BackendError as error:
        log.error("job.backend_unavailable", error_type=type(error).__name__, cause=str(error))
        await start_apology(ctx, call, proc)
        return
    ctx.log_context_fields = {"session_id": call.session.id, "scenario_id": metadata.scenario_id}
    await open_journal(call, proc.journal)
    try:
        await start_conversation(ctx, call, proc)
    except Exception:
        # the call is journaled: it ends as an agent error and its transcript is still delivered
        log.exception("call.start_failed")
        call.end_reason("agent_error")
        ctx.shutdown("agent_error")


async def open_journal(call: Call, journal: Journal) -> None:
    """Journal the call (its row, owned by this process) and keep its lease for as long as the
    call lasts. The same job id run again (LiveKit re-running a job in a new process) continues
    the earlier run's turns: they come back from `open_call`, the recorder numbers new turns
    after them, and the final transcript holds them all, once. While another live process still
    holds the row (the first run delivering its transcript), that row and its turns stay its
    own: this run journals under its own id, starting from a copy of those turns."""
    assert call.session is not None
    open_call = functools.partial(
        journal.open_call,
        session_id=call.session.id,
        attempt_number=call.session.attempt_number,
        started_at=call.started_at,
    )
    try:
        call.earlier_turns = await asyncio.to_thread(open_call, call.job_id)
    except CallHeldElsewhere:
        first_run = call.job_id
        call.job_id = f"{first_run}/run-{os.getpid()}"  # the key of this run's journal row
        log.warning("journal.call_held_elsewhere", call_id=first_run, journal_id=call.job_id)
        call.earlier_turns = await asyncio.to_thread(
            open_call, call.job_id, continue_from=first_run
        )
    if call.earlier_turns:
        log.info("call.continued", earlier_turns=len(call.earlier_turns))
    call.spawn(keep_lease(journal, call.job_id), "journal.lease")


async def start_conversation(ctx: JobContext, call: Call, proc: ProcessState) -> None:
    """The persona's session: transcript wiring, end-of-call handlers, then the two timers."""
    assert call.scenario is not None and call.session is not None
    settings = proc.settings
    # the call is also the session's typed userdata, so tools and agents reach it directly
    session: AgentSession[Call] = build_session(
        settings, proc.vad, scenario=call.scenario, userdata=call
    )
    call.agent_session = session
    attach_transcript(ctx, call, session, proc.journal)
    session.on("close", lambda event: _on_close(ctx, call, event))
    session.on("error", lambda event: _on_error(session, event))
    await session.start(
        agent=PersonaAgent(call.scenario),
        room=ctx.room,
        room_options=_room_options(call.metadata),
        session_host=False,
        record=settings.livekit_recording,
    )
    call.spawn(end_after_no_show(ctx, call, settings.no_show_seconds), "call.no_show")
    call.spawn(end_at_max_duration(ctx, call, settings.max_call_seconds), "call.max_duration")
    log.info("call.started", attempt_number=call.session.attempt_number)


def attach_transcript(
    ctx: JobContext, call: Call, session: AgentSession[Call], journal: Journal
) -> None:
    """Every final turn: journaled at once, then queued for the data channel."""
    assert call.session is not None
    call.publisher = TranscriptPublisher(
        room_data_sink(ctx.room), session_id=call.session.id, is_connected=ctx.room.isconnected
    )
    call.recorder = TurnRecorder(
        on_turn=lambda turn: journal.append_turn(call.job_id, turn),
        publisher=call.publisher,
        started_at=call.started_at,
        earlier_turns=call.earlier_turns,
    )
    call.recorder.attach(session)
    register_end_call_rpc(
        ctx.room.local_participant,
        lambda caller: hang_up(ctx, call, caller),
        allowed_identity=call.linked_identity,
        spawn=call.spawn,
    )


async def start_apology(ctx: JobContext, call: Call, proc: ProcessState) -> None:
    """The backend is unreachable or refused us: the caller hears a short apology, not silence,
    and the job ends. There is no backend session, so nothing is journaled."""
    call.end_reason("backend_unavailable")
    session = build_apology_session(proc.settings, proc.vad)
    call.agent_session = session
    await session.start(
        agent=ApologyAgent(on_done=lambda: ctx.shutdown("backend_unavailable")),
        room=ctx.room,
        room_options=_room_options(call.metadata),
        session_host=False,
        record=False,
    )


def _room_options(metadata: JobMetadata) -> room_io.RoomOptions:
    kwargs: dict[str, Any] = {
        # the agent speaks first; a pre-connect buffer would only delay the connection
        "audio_input": room_io.AudioInputOptions(pre_connect_audio=False),
    }
    if metadata.participant_identity:
        kwargs["participant_identity"] = metadata.participant_identity
    return room_io.RoomOptions(**kwargs)


def _on_close(ctx: JobContext, call: Call, event: CloseEvent) -> None:
    # Nothing in the library ends the job when the session closes: without this the job would
    # linger in the room until the server closes it.
    try:
        call.on_session_close(event, room_connected=ctx.room.isconnected())
        ctx.shutdown(f"session_closed:{event.reason.value}")
    except Exception as error:  # a handler that raises breaks the library's task
        log.error("call.close_handler_failed", error_type=type(error).__name__)


def _on_error(session: AgentSession[Call], event: ErrorEvent) -> None:
    try:
        error = event.error
        recoverable = bool(getattr(error, "recoverable", True))
        log.warning("call.provider_error", error_type=type(error).__name__, recoverable=recoverable)
        if not recoverable and getattr(error, "type", None) == "llm_error":
            session.say(load_prompt("llm_error"))
    except Exception as handler_error:
        log.error("call.error_handler_failed", error_type=type(handler_error).__name__)


async def on_session_end(ctx: JobContext) -> None:
    call = ctx.proc.userdata.get(CALL_KEY)
    if not isinstance(call, Call):
        log.info("call.ended_without_session")
        return
    settings = process_state(ctx).settings
    started = time.monotonic()
    if call.ended_reason is None:
        call.end_reason("job_terminated" if ctx.room.isconnected() else "room_closed")
    await call.cancel_tasks()
    if call.publisher is not None:
        await call.publisher.finish(send_end=ctx.room.isconnected())
    # The library cancels this hook at session_end_timeout: leave room for the journal steps
    # around the post and for the call.ended line.
    left = settings.session_end_timeout - (time.monotonic() - started) - SESSION_END_MARGIN
    await deliver_transcript(call, deadline=max(1.0, min(settings.delivery_deadline, left)))
    _log_call_ended(call)


async def _backstop(reason: str) -> None:
    """Shutdown callback: runs after the room disconnected, bounded by the parent's kill timer.
    Only if the journal still says undelivered (on_session_end timed out or was skipped)."""
    ctx = get_job_context()
    call = ctx.proc.userdata.get(CALL_KEY)
    if not isinstance(call, Call) or call.backend is None:
        return
    try:
        if call.journaled:
            assert call.session is not None and call.journal is not None
            await backstop(
                call.journal,
                call.backend,
                call.job_id,
                call.session.id,
                timeout=process_state(ctx).settings.backstop_timeout,
                ended_reason=call.ended_reason or "job_terminated",
            )
    finally:
        await call.backend.aclose()


def _log_call_ended(call: Call) -> None:
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
        e2e_p50_ms=latency.e2e_ms.p50 if latency and latency.e2e_ms else None,
        e2e_p90_ms=latency.e2e_ms.p90 if latency and latency.e2e_ms else None,
    )
