"""The composition root: `build_server(settings)` and the job's lifecycle hooks.

Rule: `prewarm`, `entrypoint` and `on_session_end` are module-level functions, because the
library pickles them by reference into job processes (no closures). Nothing happens at import
time. The entrypoint reads as a table of contents of `agent.call`, in the order a call happens
(metadata, the parallel start and look-back, journal, recovery, session; `on_session_end`:
finish and deliver; the shutdown callback: backstop); behaviour lives in the modules it calls.
Per-process objects (settings, VAD, journal) come from prewarm.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

import uvloop
from livekit.agents import JobContext, JobProcess, get_job_context, inference, vad
from livekit.agents.worker import ServerEnvOption
from opentelemetry import trace

from agent.backend import BackendError, make_backend
from agent.call import CALL_KEY, Call
from agent.call.finish import backstop_call, finish
from agent.call.recover import recover_alongside
from agent.call.resume import log_already_ended, settle_stood_down
from agent.call.session import build_conversation, open_journal, start_apology, start_conversation
from agent.call.start import MetadataError, parse_job_metadata, start_in_parallel
from agent.config import Settings, load_settings
from agent.end_of_turn import register_runner
from agent.journal import Journal
from agent.log import configure_logging, get_logger
from agent.models import JobMetadata
from agent.pipeline import load_vad
from agent.server import WorkerServer
from agent.tracing import setup_tracing, start_call_span
from agent.turn_taking import load_turn_detector

log = get_logger(__name__)

PROCESS_KEY = "process"

# Imported once in the forkserver (the library's `preload_modules`; its gc.freeze then keeps
# them shared copy-on-write) rather than in every job process: our code, and what the provider
# clients import lazily on a call's first turns (seen as "event loop blocked ... importing" for
# 100-650 ms in job processes). -8 MB of PSS per job process (docs/performance.md, capacity).
FORKSERVER_PRELOAD = (
    "agent.worker",
    # what a job process imported during its first turns (sys.modules at the call's end, less
    # the forkserver's): the OpenAI client's chat, audio and streaming parts and their transport
    "openai.lib.streaming.chat",
    "openai.lib._chat_completion_resources",
    "openai.lib._parsing._audio",
    "openai.resources.chat.chat",  # openai.resources' packages import their parts lazily
    "openai.resources.chat.completions.completions",
    "openai.resources.audio.audio",
    "openai.resources.models",
    "openai.types.chat.completions.message_list_params",
    "openai.pagination",
    "httpcore",
    "anyio._backends._asyncio",
    "jiter",
    "numpy.fft",
    "livekit.agents.llm.async_toolset",
)


@dataclass(frozen=True)
class ProcessState:
    """Per-process objects, made once by prewarm and used by the one job the process runs."""

    settings: Settings
    vad: vad.VAD
    journal: Journal
    # the local end-of-turn model, when TURN_DETECTION=model (it predicts in the worker's
    # inference process: agent.end_of_turn)
    turn_detector: inference.TurnDetector | None = None


def prewarm(proc: JobProcess) -> None:
    # Job processes do not run __main__: configure logging and read settings again here.
    settings = load_settings()
    # the job's event loop is made after prewarm (the library's process client), so this policy
    # gives every call uvloop: 14-18 % less CPU on the job's Python thread (docs/performance.md)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    configure_logging(settings.log_level)
    setup_tracing(settings)  # each process sets its own provider (no-op unless configured)
    proc.userdata[PROCESS_KEY] = ProcessState(
        settings=settings,
        vad=load_vad(settings),
        journal=Journal.in_dir(settings.agent_data_dir),
        turn_detector=(
            load_turn_detector(shared=True) if settings.turn_detection == "model" else None
        ),
    )


def build_server(settings: Settings) -> WorkerServer:
    if settings.turn_detection == "model":
        register_runner()  # before the server exists: it starts the inference process then
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
        preload_modules=list(FORKSERVER_PRELOAD),
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
    call = Call.for_job(ctx, metadata, backend=backend, journal=proc.journal)
    ctx.proc.userdata[CALL_KEY] = call
    ctx.add_shutdown_callback(_backstop)
    call.span = start_call_span(ctx.job.id, metadata.scenario_id)
    # what the call starts from here (the session's tasks too) is traced under its span;
    # `finish` ends it after the delivery
    with trace.use_span(call.span, end_on_exit=False):
        await _start_call(ctx, call, proc, metadata)


async def _start_call(
    ctx: JobContext, call: Call, proc: ProcessState, metadata: JobMetadata
) -> None:
    settings = proc.settings
    assert call.backend is not None
    # Recovery (in the background, never delaying the call) starts only once this call's own
    # journal row is open, or it has none: a dead run's row that this call adopts must not be
    # claimed and delivered apart as `crashed` first.
    try:
        started = await start_in_parallel(ctx, call.backend, metadata, journal=call.journal)
    except BackendError as error:
        log.error("job.backend_unavailable", error_type=type(error).__name__, cause=str(error))
        recover_alongside(call, settings)
        await start_apology(call, settings, proc.vad, ctx.room)
        return
    call.scenario, call.session = started.scenario, started.session
    call.resume_from(started.earlier)
    ctx.log_context_fields = {"session_id": call.session.id, "scenario_id": metadata.scenario_id}
    if call.already_ended:
        # dispatched into a room whose call is over: say nothing, deliver nothing, end the job
        # (on_session_end lets the recovery finish first: it may deliver the earlier run's row)
        log_already_ended(call)
        recover_alongside(call, settings)
        ctx.shutdown("already_ended")
        return
    await open_journal(call)
    recover_alongside(call, settings)
    if call.held_by is not None:
        # another live job of this container runs this room's call: stand down unheard
        ctx.shutdown("attempt_held_elsewhere")
        return
    try:
        session = build_conversation(
            call, settings, proc.vad, ctx.room, turn_detector=proc.turn_detector
        )
        await start_conversation(call, session, settings, ctx.room)
    except Exception:
        # the call is journaled: it ends as an agent error and its transcript is still delivered
        log.exception("call.start_failed")
        call.end_reason("agent_error")
        ctx.shutdown("agent_error")


async def on_session_end(ctx: JobContext) -> None:
    call = ctx.proc.userdata.get(CALL_KEY)
    if not isinstance(call, Call):
        log.info("call.ended_without_session")
        return
    if call.stands_down:
        await settle_stood_down(call, process_state(ctx).settings.delivery_deadline)
        return
    await finish(call, process_state(ctx).settings)


async def _backstop(reason: str) -> None:
    """Shutdown callback (agent.call.finish.backstop_call)."""
    ctx = get_job_context()
    call = ctx.proc.userdata.get(CALL_KEY)
    if isinstance(call, Call):
        await backstop_call(call, process_state(ctx).settings)
