"""Step 3 of a call: journal it, then run the persona's session with the transcript wired in.

Rule: the real worker, the benchmarks and the tests build a call's session through these
functions (providers and audio IO may be injected; the shape may not differ). Session, room and
RPC handlers only call into the `Call` (its reason, its shutdown, its tasks) and catch and log
every exception: a handler that raises breaks the library's speech task.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession, inference, llm, stt, tts, vad
from livekit.agents.telemetry import loop_monitor
from livekit.agents.types import NOT_GIVEN
from livekit.agents.voice import SpeechHandle, room_io
from livekit.agents.voice.events import CloseEvent, ErrorEvent, SpeechCreatedEvent

from agent import metrics
from agent.call.ending import (
    end_after_no_show,
    end_at_max_duration,
    hang_up,
    register_end_call_rpc,
)
from agent.call.finish import build_checkpoint
from agent.call.recording import recording_hook
from agent.call.resume import log_resumed
from agent.call.state import Call
from agent.config import Settings
from agent.delivery import Checkpointer, keep_lease
from agent.journal import AttemptHeldElsewhere, CallHeldElsewhere
from agent.log import get_logger
from agent.models import JobMetadata, Turn
from agent.persona import ApologyAgent, PersonaAgent
from agent.pipeline import build_apology_session, build_session
from agent.prompts import load_prompt
from agent.transcript import TranscriptPublisher, TurnRecorder, room_data_sink
from agent.turn_taking import TurnTaking, from_settings, load_turn_detector

log = get_logger(__name__)


async def open_journal(call: Call) -> None:
    """Journal the call (its row, owned by this process) and keep its lease for as long as the
    call lasts. A call that resumes (`call.earlier`, the look-back of `agent.call.resume`)
    continues the earlier turns: from a dead run's journal row, which the new row adopts and
    supersedes in one transaction (never delivered apart as `crashed`), or from the backend's
    checkpoint, copied into the new row. The same job id run again (LiveKit re-running a job in
    a new process) continues its own row the same way. The recorder numbers new turns after
    them and the final transcript holds them all, once. While another live process still holds
    the row (the first run delivering its transcript), that row and its turns stay its own: this
    run journals under its own id, starting from a copy of those turns. While another live job
    of this container runs the same session attempt (two dispatches into one room), this job
    journals nothing and records who holds it (`call.held_by`): it must stand down unheard."""
    assert call.session is not None and call.journal is not None
    journal = call.journal
    earlier = call.earlier if call.earlier is not None and not call.earlier.complete else None
    adopt = None
    if earlier is not None and earlier.call_id not in (None, call.job_id):
        adopt = earlier.call_id
    open_call = functools.partial(
        journal.open_call,
        session_id=call.session.id,
        attempt_number=call.session.attempt_number,
        started_at=call.started_at,
        seed=earlier.turns if earlier is not None and earlier.source == "backend" else (),
    )
    try:
        call.earlier_turns = await asyncio.to_thread(
            open_call, call.job_id, continue_from=adopt, adopt=adopt is not None
        )
    except AttemptHeldElsewhere as held:
        call.held_by = held.call_id
        log.warning("call.attempt_held_elsewhere", held_call_id=held.call_id)
        return
    except CallHeldElsewhere:
        first_run = call.job_id
        call.job_id = f"{first_run}/run-{os.getpid()}"  # the key of this run's journal row
        log.warning("journal.call_held_elsewhere", call_id=first_run, journal_id=call.job_id)
        call.earlier_turns = await asyncio.to_thread(
            open_call, call.job_id, continue_from=first_run
        )
    if call.earlier_turns:
        call.resumed_from = earlier.source if earlier is not None else "journal"
        log_resumed(call)
    call.spawn(keep_lease(journal, call.job_id), "journal.lease")


def build_conversation(
    call: Call,
    settings: Settings,
    vad_model: vad.VAD | None,
    room: rtc.Room,
    *,
    stt_model: stt.STT[Any] | None = None,
    llm_model: llm.LLM[Any] | None = None,
    tts_model: tts.TTS[Any] | None = None,
    turn_taking: TurnTaking | None = None,
    turn_detector: inference.TurnDetector | None = None,
) -> AgentSession[Call]:
    """The persona's session with all that must be attached before it starts: the transcript
    wiring (from `room`: data channel, hang-up RPC) and the end-of-call handlers. Providers
    default to the OpenAI plugins (`build_session`), the turn taking to the settings' shape
    (TURN_DETECTION; `turn_detector` is the process's end-of-turn model)."""
    assert call.scenario is not None
    shape = turn_taking or from_settings(settings)
    # the call is also the session's typed userdata, so tools and agents reach it directly
    session: AgentSession[Call] = build_session(
        settings,
        vad_model,
        scenario=call.scenario,
        userdata=call,
        stt_model=stt_model,
        llm_model=llm_model,
        tts_model=tts_model,
        turn_taking=shape,
        # the process's model (prewarm); a session built elsewhere (a test, console without
        # prewarm) loads its own
        turn_detector=turn_detector
        or (load_turn_detector() if shape.detection == "model" else None),
    )
    call.agent_session = session
    attach_transcript(call, session, room, checkpoint_seconds=settings.checkpoint_seconds)
    session.on("close", functools.partial(_on_close, call))
    attach_error_apology(call, session)
    return session


async def start_conversation(
    call: Call, session: AgentSession[Call], settings: Settings, room: rtc.Room | None
) -> None:
    """Start the persona (in `room`; without one, the session's IO is whatever was set on it),
    then the no-show and max-duration timers. A resumed call's persona has the earlier turns as
    its chat context and opens with the resume line instead of the greeting. A call whose
    metadata says `record: true` is recorded from before the persona's first word."""
    assert call.scenario is not None and call.session is not None
    persona = PersonaAgent(
        call.scenario,
        earlier_turns=call.earlier_turns,
        before_speaking=recording_hook(call, settings),  # only with the platform's consent
        hold_unfinished=settings.preemptive_hold,
        language=settings.language,
        finished_max_delay=settings.finished_max_delay_seconds,
    )
    await session.start(
        agent=persona,
        room=room if room is not None else NOT_GIVEN,
        room_options=_room_options(call.metadata, settings),
        session_host=False,
        record=settings.livekit_recording,
    )
    call.spawn(end_after_no_show(call, settings.no_show_seconds), "call.no_show")
    call.spawn(end_at_max_duration(call, settings.max_call_seconds), "call.max_duration")
    count_started(call)
    loop = asyncio.get_running_loop()
    monitor = loop_monitor.get_monitor(loop)  # LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS, 0 under start
    log.info(
        "call.started",
        attempt_number=call.session.attempt_number,
        event_loop=f"{type(loop).__module__}.{type(loop).__qualname__}",  # uvloop (prewarm)
        vad=session.vad.provider if session.vad is not None else None,
        loop_block_warn_ms=None if monitor is None else round(monitor.warn_threshold * 1000),
    )


def count_started(call: Call) -> None:
    """The call's session runs: counted as started and live until `finish` counts it ended."""
    if not call.counted_live:
        call.counted_live = True
        metrics.call_started()


def attach_transcript(
    call: Call, session: AgentSession[Any], room: rtc.Room, *, checkpoint_seconds: float = 0.0
) -> None:
    """Every final turn: journaled at once, then queued for the data channel; after an
    assistant turn, a checkpoint to the backend (at most one per `checkpoint_seconds`; 0: none;
    the worker passes CHECKPOINT_SECONDS)."""
    assert call.session is not None and call.journal is not None
    journal = call.journal
    checkpoints = _checkpointer(call, checkpoint_seconds)

    def on_turn(turn: Turn) -> None:
        try:
            journal.append_turn(call.job_id, turn)  # first: the journal is what survives
        finally:
            # even when the append failed: the checkpoint may then be the only copy elsewhere
            if checkpoints is not None and turn.role == "assistant":
                checkpoints.trigger()

    call.publisher = TranscriptPublisher(
        room_data_sink(room), session_id=call.session.id, is_connected=room.isconnected
    )
    call.recorder = TurnRecorder(
        on_turn=on_turn,
        publisher=call.publisher,
        started_at=call.started_at,
        earlier_turns=call.earlier_turns,
    )
    call.recorder.attach(session)
    register_end_call_rpc(
        room.local_participant,
        functools.partial(hang_up, call),
        allowed_identity=call.linked_identity,
        spawn=call.spawn,
    )


def _checkpointer(call: Call, seconds: float) -> Checkpointer | None:
    """The call's checkpoints, when it has a backend (HTTP or the embedded one) and they are on.
    The post runs in a task the call owns; it stops for good once the call has an end reason,
    which `finish` records before it cancels the call's tasks and delivers."""
    if call.backend is None or call.session is None or seconds <= 0:
        return None
    return Checkpointer(
        call.backend,
        call.session.id,
        functools.partial(build_checkpoint, call),
        interval=seconds,
        spawn=call.spawn,
        is_live=lambda: call.ended_reason is None,
    )


async def start_apology(
    call: Call, settings: Settings, vad_model: vad.VAD | None, room: rtc.Room
) -> None:
    """The backend is unreachable or refused us: the caller hears a short apology, not silence,
    and the job ends. There is no backend session, so nothing is journaled."""
    call.end_reason("backend_unavailable")
    session = build_apology_session(settings, vad_model)
    call.agent_session = session
    await session.start(
        agent=ApologyAgent(on_done=lambda: call.shutdown("backend_unavailable")),
        room=room,
        room_options=_room_options(call.metadata, settings),
        session_host=False,
        record=False,
    )
    count_started(call)


def _room_options(metadata: JobMetadata, settings: Settings) -> room_io.RoomOptions:
    kwargs: dict[str, Any] = {
        # the agent speaks first; a pre-connect buffer would only delay the connection
        "audio_input": room_io.AudioInputOptions(
            pre_connect_audio=False,
            auto_gain_control=settings.auto_gain_control,
            frame_size_ms=settings.input_frame_ms,
        ),
    }
    if metadata.participant_identity:
        kwargs["participant_identity"] = metadata.participant_identity
    return room_io.RoomOptions(**kwargs)


def _on_close(call: Call, event: CloseEvent) -> None:
    try:
        call.on_session_close(event)
    except Exception as error:  # a handler that raises breaks the library's task
        log.error("call.close_handler_failed", error_type=type(error).__name__)


def attach_error_apology(call: Call, session: AgentSession[Any]) -> None:
    """Provider errors are logged and counted; a failed LLM reply gets the llm_error line.

    With preemptive generation (PREEMPTIVE_GENERATION) the reply's LLM request starts before the
    caller's turn has ended, so its failure can surface while the caller is still speaking: the
    line said then is cut by the caller's own speech, and at the end of the turn the library
    adopts the failed early reply (which says nothing). So a failure while an early reply is
    still waiting for the turn to end is apologised for only once that reply has had its turn:
    if the library adopted it, the apology follows it, whole; if it discarded it (the transcript
    changed), the reply generated anew answers the turn, or fails and apologises itself."""
    replies: list[SpeechHandle] = []

    def on_speech_created(event: SpeechCreatedEvent) -> None:
        try:
            replies[:] = [r for r in replies if not r.done()]
            if event.source == "generate_reply":
                replies.append(event.speech_handle)
        except Exception as handler_error:  # a handler that raises breaks the library's task
            log.error("call.speech_handler_failed", error_type=type(handler_error).__name__)

    def on_error(event: ErrorEvent) -> None:
        # an early reply is one created but not yet scheduled (the caller's turn is still open);
        # `done`/`scheduled` only read futures, and `_on_error` catches everything itself
        early = next((r for r in replies if not r.done() and not r.scheduled), None)
        _on_error(call, event, early_reply=early)

    session.on("speech_created", on_speech_created)
    session.on("error", on_error)


def _on_error(call: Call, event: ErrorEvent, *, early_reply: SpeechHandle | None = None) -> None:
    try:
        error = event.error
        recoverable = bool(getattr(error, "recoverable", True))
        log.warning("call.provider_error", error_type=type(error).__name__, recoverable=recoverable)
        # kind from the error's type (llm_error, stt_error, tts_error, realtime_model_error)
        kind = str(getattr(error, "type", "")).removesuffix("_error").removesuffix("_model")
        metrics.provider_error(str(getattr(event.source, "provider", "") or ""), kind)
        if not recoverable and getattr(error, "type", None) == "llm_error":
            assert call.agent_session is not None
            if early_reply is None:
                call.agent_session.say(load_prompt("llm_error"))
            else:
                log.info("call.apology_deferred", speech_id=early_reply.id)
                call.spawn(
                    _apologise_after(call.agent_session, early_reply), "call.deferred_apology"
                )
    except Exception as handler_error:
        log.error("call.error_handler_failed", error_type=type(handler_error).__name__)


async def _apologise_after(session: AgentSession[Any], early_reply: SpeechHandle) -> None:
    """Say the llm_error line once the failed early reply is over, if it answered the turn."""
    try:
        await early_reply.wait_for_playout()
        # interrupted: discarded for a reply generated anew, or the caller spoke again
        if early_reply.scheduled and not early_reply.interrupted:
            session.say(load_prompt("llm_error"))
        else:
            log.info("call.apology_dropped", speech_id=early_reply.id)
    except Exception as error:  # a background task: log, never raise into the loop
        log.error("call.deferred_apology_failed", error_type=type(error).__name__)
