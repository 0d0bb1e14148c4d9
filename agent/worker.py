"""The composition root: `build_server(settings)` and the job's lifecycle hooks.

Rule: `prewarm`, `entrypoint` and `on_session_end` are module-level functions, because the
library pickles them by reference into job processes (no closures). Nothing happens at import
time. The entrypoint reads as a table of contents; behaviour lives in the modules it calls.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Any

from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess, vad
from livekit.agents.voice import room_io
from livekit.agents.voice.events import CloseEvent, ErrorEvent
from livekit.agents.worker import ServerEnvOption
from livekit.plugins import silero
from pydantic import ValidationError

from agent.call import CALL_KEY, Call
from agent.config import Settings, load_settings
from agent.log import configure_logging, get_logger
from agent.models import JobMetadata
from agent.persona import PersonaAgent
from agent.pipeline import build_session
from agent.prompts import DEFAULT_SCENARIO_ID, load_prompt, load_scenario

log = get_logger(__name__)

PROCESS_KEY = "process"


@dataclass(frozen=True)
class ProcessState:
    """Per-process objects, made once by prewarm and shared by the job that process runs."""

    settings: Settings
    vad: vad.VAD


class MetadataError(ValueError):
    def __init__(self, fields: list[str]) -> None:
        self.fields = fields
        super().__init__(f"invalid job metadata: {', '.join(fields)}")


def parse_job_metadata(raw: str, settings: Settings) -> JobMetadata:
    """Only `ctx.job.metadata` is trusted (room metadata and attributes are client-writable).
    Empty metadata is a local run (console, dev without a backend): the default scenario."""
    if not raw.strip():
        if settings.has_backend:
            raise MetadataError(["(empty): scenarioId and userId are required"])
        return JobMetadata(scenario_id=DEFAULT_SCENARIO_ID, user_id="local")
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as error:
        raise MetadataError([f"(not JSON: {error.msg} at position {error.pos})"]) from None
    try:
        return JobMetadata.model_validate(data)
    except ValidationError as error:
        fields = [
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in error.errors()
        ]
        raise MetadataError(fields) from None


class WorkerServer(AgentServer):
    """AgentServer that remembers why `run` failed: the LiveKit CLI logs the failure and exits
    0, so `__main__` reads `failure` to exit non-zero and let a supervisor restart us."""

    failure: BaseException | None = None

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        try:
            await super().run(devmode=devmode, unregistered=unregistered)
        except Exception as error:
            self.failure = error
            raise


def prewarm(proc: JobProcess) -> None:
    # Job processes do not run __main__: configure logging and read settings again here.
    settings = load_settings()
    configure_logging(settings.log_level)
    proc.userdata[PROCESS_KEY] = ProcessState(settings=settings, vad=silero.VAD.load())


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
    server.rtc_session(
        entrypoint, agent_name=settings.agent_name_or_default, on_session_end=on_session_end
    )
    return server


def process_state(ctx: JobContext) -> ProcessState:
    state = ctx.proc.userdata.get(PROCESS_KEY)
    if not isinstance(state, ProcessState):
        # console/thread executors may skip prewarm: make the same objects lazily
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
    call = Call(job_id=ctx.job.id, room_name=ctx.job.room.name, metadata=metadata)
    ctx.proc.userdata[CALL_KEY] = call

    scenario, _ = await asyncio.gather(
        asyncio.to_thread(load_scenario, metadata.scenario_id), ctx.connect()
    )
    call.scenario = scenario

    session: AgentSession[None] = build_session(settings, proc.vad, scenario=scenario)
    session.on("close", lambda event: _on_close(ctx, call, event))
    session.on("error", lambda event: _on_error(call, session, event))
    await session.start(
        agent=PersonaAgent(scenario),
        room=ctx.room,
        room_options=_room_options(metadata),
        session_host=False,
        record=settings.livekit_recording,
    )
    call.session_started = True
    log.info("call.started", job_id=ctx.job.id)


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
        log.error("call.close_handler_failed", error=repr(error))


def _on_error(call: Call, session: Any, event: ErrorEvent) -> None:
    try:
        error = event.error
        recoverable = bool(getattr(error, "recoverable", True))
        log.warning("call.provider_error", error_type=type(error).__name__, recoverable=recoverable)
        if not recoverable and getattr(error, "type", None) == "llm_error":
            session.say(load_prompt("llm_error"))
    except Exception as handler_error:
        log.error("call.error_handler_failed", error=repr(handler_error))


async def on_session_end(ctx: JobContext) -> None:
    call = ctx.proc.userdata.get(CALL_KEY)
    if not isinstance(call, Call):
        log.info("call.ended_without_session")
        return
    await call.cancel_tasks()
    if call.ended_reason is None:
        call.end_reason("room_closed" if not ctx.room.isconnected() else "job_terminated")
    log.info(
        "call.ended",
        ended_reason=call.ended_reason,
        duration_s=round(((call.ended_at or call.started_at) - call.started_at).total_seconds(), 3),
    )
