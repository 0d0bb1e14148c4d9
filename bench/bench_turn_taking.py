"""Turn taking (issue 21): does the persona cut off a caller who pauses to think, how soon does it
answer one who has finished, how fast does it stop for a caller who talks over it (the greeting
included), and does a backchannel ("mm-hm") derail it; per utterance kind and per turn-taking
shape (`agent.turn_taking.TurnTaking`), side by side in one run.

Rule: prints figures and writes JSON; never asserts. Real time, in-process, no room: the session
is `agent.pipeline.build_session(settings, vad, scenario=default, turn_taking=<arm>,
turn_detector=<the local turn-detector-v1-mini, loaded once>)` with the real Silero VAD (loaded
once), the real `livekit.plugins.openai` classes (realtime STT, LLM, TTS) against the in-process
OpenAI stub on its `typical` timing profile, and the project's `PersonaAgent` on the bundled
default scenario. The caller's corpus (tests/audio/turns/, `--corpus`) is played in real time in
10 ms frames by a microphone (`bench._turns.CallerMic`); the agent's audio goes through the
library's normal output path into a real-time speaker (`bench._turns.SpeakerOutput`: played in
10 ms chunks against a clock, pausable, cleared by an interruption) that records when each
audible chunk was heard. The stub's transcript is the utterance's text, one part per stretch of
speech its pause separates.

Scenarios, per utterance kind:
- statement / question / pause ("listening"): after the greeting (and every earlier reply) has
  finished, the caller says the utterance; the stub's reply is short. End-of-turn delay = first
  agent audio heard after the caller began - the utterance's true end of speech (manifest
  `end_of_speech`, as played). A FALSE CUT-OFF is any of: a user turn committed before the true
  end (the agent took the turn: a user message in the history), agent audio heard before the
  true end, or the utterance split into more than one user turn. (A preemptive LLM request
  during a pause is not a cut-off: the caller cannot hear it; it is counted as an extra LLM
  request.)
- backchannel: the agent speaks a long reply (`generate_reply`, ~45 words, ~14 s); the caller's
  backchannel starts `--into-reply` s (1.5) after its first audio. Outcome: carried on (never
  stopped), resumed (stopped, then the same reply went on within 2 s: the library's
  false-interruption resume), or DERAILED (stopped and did not resume within 2 s).
- bargein: (a) mid-reply as for the backchannel; (b) the greeting: a fresh session per case, the
  barge-in's speech onset `--into-greeting` s (0.8) after the greeting's first audio, once per
  AEC warm-up value in `--greeting-aec` (the library's 3.0 s and a short one). Barge-in stop =
  the caller's speech onset (manifest speech[0][0], as played) -> the end of the last audible
  agent chunk before the agent's audio fell silent (paused or cleared).
Arms (`ARMS`): `shipped` (`agent.turn_taking.from_settings` on default settings: whatever the
worker ships), `vad` (the shape before issue 21: the VAD's silence and the library's delays),
`model` (turn-detector-v1-mini, the library's streaming endpointing), `model-dynamic`,
`vad-long` (min_delay 1.6 s), and two PROPOSALS the bench sets up
itself because `TurnTaking` has no field for them yet, run on the backchannel and barge-in kinds
only: `model-words2` / `model-words3` (the library's `interruption.min_words`). `model-max2` is
there to be asked for.

Per arm also: extra LLM requests per answered turn (the stub's chat requests during the
listening cases, minus the replies heard, over the replies heard; preemptive generation is on as
shipped), CPU per call-second (this process's CPU time / wall time while the arm ran: session,
VAD, turn detector, and the in-process stub too) and the process's RSS/PSS at the end of the arm.

    uv run python bench/bench_turn_taking.py [--arms vad,model,model-dynamic,vad-long,...]
        [--kinds statement,question,pause,backchannel,bargein] [--repeat 1] [--per-kind N]
        [--greeting-aec 3.0,0.5] [--env KEY=VALUE] [--corpus DIR] [--json PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from livekit.agents import AgentSession, inference, utils, vad

from agent.config import Settings
from agent.models import Scenario
from agent.persona import PersonaAgent
from agent.pipeline import build_session, load_vad
from agent.prompts import load_scenario
from agent.turn_taking import (
    LIBRARY_AEC_WARMUP_SECONDS,
    TurnTaking,
    from_settings,
    load_turn_detector,
)
from bench._common import (
    OtherLoad,
    RecordCounter,
    add_output_args,
    bench_settings,
    env_overrides,
    machine_info,
    percentile,
    quiet_logging,
    write_result,
)
from bench._project_call import close_session_fast
from bench._turns import (
    DEFAULT_CORPUS,
    KINDS,
    CallerMic,
    Corpus,
    LibraryLogProbe,
    SessionLog,
    SpeakerOutput,
    Stop,
    Utterance,
    load_corpus,
    make_synthetic_corpus,
    ms,
)
from tests.support.openai_stub import PROFILES, OpenAIStub


@dataclass(frozen=True)
class Arm:
    """One turn-taking shape to measure."""

    shape: TurnTaking
    description: str
    min_interruption_words: int | None = None
    """A PROPOSAL, not a TurnTaking field yet: the library's `interruption.min_words` (talking
    over the agent counts only once the STT has this many words, and a user turn of fewer words
    is not committed while the agent speaks), set by the bench on the built session."""
    kinds: tuple[str, ...] | None = None
    """Only these kinds (None: all). `min_words` acts only while the agent speaks, so the
    listening kinds would repeat the base shape's figures."""


SHIPPED = from_settings(bench_settings())
ARMS: dict[str, Arm] = {
    "shipped": Arm(
        SHIPPED,
        "what the worker ships, agent.turn_taking.from_settings(default settings): "
        f"detection {SHIPPED.detection}, max delay {SHIPPED.max_delay}, "
        f"AEC warm-up {SHIPPED.aec_warmup}, "
        f"false-interruption timeout {SHIPPED.false_interruption_timeout}",
    ),
    "vad": Arm(
        TurnTaking(),
        "the shape before issue 21: the VAD's silence ends the turn, the library's delays "
        "(endpointing min_delay 0.5 s, AEC warm-up 3 s, false-interruption timeout 2 s)",
    ),
    "model": Arm(
        TurnTaking(detection="model"),
        "turn-detector-v1-mini, the library's streaming endpointing (min 0.3 s / max 2.5 s)",
    ),
    "model-dynamic": Arm(
        TurnTaking(detection="model", endpointing="dynamic"),
        "turn-detector-v1-mini, dynamic endpointing (learned min from 0.3 s, max 2.5 s)",
    ),
    "vad-long": Arm(
        TurnTaking(min_delay=1.6),
        "the VAD's silence, waiting 1.6 s (endpointing min_delay 1.6 s)",
    ),
    "model-words2": Arm(
        TurnTaking(detection="model"),
        "PROPOSAL: model + interruption min_words 2 (set by the bench; needs a TurnTaking field)",
        min_interruption_words=2,
        kinds=("backchannel", "bargein"),
    ),
    "model-words3": Arm(
        TurnTaking(detection="model"),
        "PROPOSAL: model + interruption min_words 3 (set by the bench; needs a TurnTaking field)",
        min_interruption_words=3,
        kinds=("backchannel", "bargein"),
    ),
    # not run by default: the shipped shape with the false-interruption timeout it had before
    # 0.5 s (a backchannel's reply resumed 1.4 s after it paused)
    "shipped-fi1.0": Arm(
        dataclasses.replace(SHIPPED, false_interruption_timeout=1.0),
        "the shipped shape with a 1.0 s false-interruption timeout",
        kinds=("backchannel", "bargein"),
    ),
    # not run by default: the model with a shorter ceiling for "probably not finished"
    "model-max2": Arm(
        TurnTaking(detection="model", max_delay=2.0),
        "turn-detector-v1-mini, streaming endpointing with max_delay 2.0 s",
    ),
}
DEFAULT_ARMS = (
    "shipped",
    "vad",
    "model",
    "model-dynamic",
    "vad-long",
    "model-words2",
    "model-words3",
)
LISTENING = ("statement", "question", "pause", "continuation")
PROFILE = "typical"
SHORT_REPLY = "I see. Tell me more."
LONG_REPLY = (
    "That is a lot to carry on your own, and I can hear how tired you are. These last two "
    "weeks sound really hard for you. I keep wondering what it would be like to tell someone "
    "close to you, and what makes that feel so difficult right now."
)
REPLY_INSTRUCTIONS = "Say at some length how the last two weeks have felt."
TTS_MAX_SECONDS = 8.0  # per sentence: the long reply's sentences are 4-6 s at 0.06 s/char
RESUME_WINDOW = 2.0  # a stopped reply that resumes within this is not derailed
SWITCH_AFTER_ONSET = 0.15  # the stub's transcript moves to the next part this long into it
SMOKE_TTS_MAX_SECONDS = 1.5  # a shorter greeting and long reply: the smoke run stays < 60 s


def _ms_list(values: Sequence[float]) -> list[float]:
    return [round(v * 1000, 1) for v in values]


def _stats(values_ms: Sequence[float]) -> dict[str, Any]:
    if not values_ms:
        return {"n": 0, "median_ms": None, "p90_ms": None}
    return {
        "n": len(values_ms),
        "median_ms": round(statistics.median(values_ms), 1),
        "p90_ms": round(percentile(values_ms, 0.9), 1),
        "min_ms": round(min(values_ms), 1),
        "max_ms": round(max(values_ms), 1),
    }


def memory() -> dict[str, float]:
    info = psutil.Process().memory_full_info()
    return {
        "rss_mb": round(info.rss / 2**20, 1),
        "pss_mb": round(getattr(info, "pss", 0) / 2**20, 1),
        "uss_mb": round(getattr(info, "uss", 0) / 2**20, 1),
    }


def cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


# --------------------------------------------------------------------------- one call


@dataclass
class Bench:
    """What every case shares: the stub, the models, the settings, the log probe."""

    stub: OpenAIStub
    settings: Settings
    vad_model: vad.VAD
    detector: inference.TurnDetector | None
    scenario: Scenario
    probe: LibraryLogProbe
    sample_rate: int
    into_reply: float
    into_greeting: float
    quiet_hold: float = 0.5
    frame_ms: int = 10  # the caller's audio frames (the worker's room input: INPUT_FRAME_MS)


@dataclass
class Call:
    session: AgentSession[None]
    mic: CallerMic
    speaker: SpeakerOutput
    log: SessionLog
    started_at: float
    quiet_hold: float = 0.5

    def quiet(self) -> bool:
        """Nobody is talking and nothing is pending: the speaker is idle, the session listens,
        no final transcript waits for its turn, and the last user turn has had its reply (or
        has waited 8 s for one)."""
        now = time.time()
        if not self.speaker.idle or self.mic.playing:
            return False
        if self.session.agent_state not in ("listening", "idle"):
            return False
        if self.session.user_state == "speaking":
            return False
        last_user = self.log.last("user")
        if self.log.finals:
            final_at = self.log.finals[-1][0]
            if (last_user is None or final_at > last_user.at) and now - final_at < 4.0:
                return False
        if last_user is not None and now - last_user.at < 8.0:
            replied = any(
                s.first_played_at is not None and s.first_played_at > last_user.at
                for s in self.speaker.segments
            )
            if not replied:
                return False
        return True

    async def until_quiet(self, *, not_before: float = 0.0, timeout: float = 30.0) -> bool:
        deadline = time.time() + timeout
        since: float | None = None
        while time.time() < deadline:
            now = time.time()
            if now >= not_before and self.quiet():
                since = since or now
                if now - since >= self.quiet_hold:
                    return True
            else:
                since = None
            await asyncio.sleep(0.05)
        return False

    async def aclose(self) -> None:
        await close_session_fast(self.session)
        await self.speaker.aclose()
        # AgentSession.aclose() leaves the realtime STT's pooled WebSocket open: the process's
        # shared HTTP session allows 50 connections a host, so without this the 51st call of a
        # run could not connect its STT
        if (stt := self.session.stt) is not None:
            await stt.aclose()


async def wait_for(check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (value := check()) is not None:
            return value
        await asyncio.sleep(0.01)
    return None


async def open_call(bench: Bench, arm: Arm, shape: TurnTaking | None = None) -> Call:
    """The worker's session for `arm` (its shape, or `shape`), greeting at once."""
    shape = shape or arm.shape
    session: AgentSession[None] = build_session(
        bench.settings,
        bench.vad_model,
        scenario=bench.scenario,
        turn_taking=shape,
        turn_detector=bench.detector if shape.detection == "model" else None,
    )
    if arm.min_interruption_words is not None:
        session.options.turn_handling["interruption"]["min_words"] = arm.min_interruption_words
    mic = CallerMic(bench.sample_rate, frame_ms=bench.frame_ms)
    speaker = SpeakerOutput()
    log = SessionLog()
    log.attach(session)
    session.input.audio = mic
    session.output.audio = speaker
    started_at = time.time()
    persona = PersonaAgent(
        bench.scenario,
        hold_unfinished=bench.settings.preemptive_hold,
        language=bench.settings.language,
        finished_max_delay=bench.settings.finished_max_delay_seconds,
    )
    await session.start(agent=persona)  # greets at once: no room to wait on
    return Call(session, mic, speaker, log, started_at, bench.quiet_hold)


def resolved_options(session: AgentSession[Any]) -> dict[str, Any]:
    options = session.options
    handling = options.turn_handling
    detection = handling.get("turn_detection")
    endpointing = handling["endpointing"]
    interruption = handling["interruption"]
    return {
        "turn_detection": detection
        if isinstance(detection, str) or detection is None
        else (getattr(detection, "model", type(detection).__name__)),
        "endpointing": {k: endpointing.get(k) for k in ("mode", "min_delay", "max_delay")},
        "interruption": {
            k: interruption.get(k)
            for k in (
                "mode",
                "min_duration",
                "resume_false_interruption",
                "false_interruption_timeout",
            )
        },
        "min_words": interruption.get("min_words"),
        "preemptive_generation": handling["preemptive_generation"].get("enabled"),
        "aec_warmup_duration": options.aec_warmup_duration,
    }


def _chat_requests(stub: OpenAIStub, start: float, end: float) -> list[Any]:
    return [r for r in stub.requests_to("chat") if start <= r.at < end]


def _at(moment: float, action: Callable[[], None]) -> asyncio.Task[None]:
    """Run `action` at `moment` (`time.time()`), in a task."""

    async def later() -> None:
        await asyncio.sleep(max(0.0, moment - time.time()))
        action()

    return asyncio.create_task(later(), name="bench.at")


def _set_transcript(stub: OpenAIStub, text: str) -> Callable[[], None]:
    return lambda: setattr(stub, "transcript", text)


def _set_reply(stub: OpenAIStub, text: str) -> Callable[[], None]:
    return lambda: setattr(stub, "reply", text)


def _common_timeline(
    bench: Bench, call: Call, start: float, end: float, origin: float
) -> dict[str, Any]:
    """Everything the session, the stub and the speaker did in [start, end), in ms from
    `origin`."""
    chats = _chat_requests(bench.stub, start, end)
    return {
        "user_turns": [
            {
                "at_ms": ms(m.at, origin),
                "text": m.text,
                "end_of_turn_delay_ms": _metric_ms(m.metrics, "end_of_turn_delay"),
                "transcription_delay_ms": _metric_ms(m.metrics, "transcription_delay"),
                "stopped_speaking_at_ms": ms(m.metrics.get("stopped_speaking_at"), origin),
            }
            for m in call.log.role_between("user", start, end)
        ],
        "assistant_turns": [
            {"at_ms": ms(m.at, origin), "interrupted": m.interrupted, "chars": len(m.text)}
            for m in call.log.role_between("assistant", start, end)
        ],
        "finals_ms": [ms(at, origin) for at, _ in call.log.finals if start <= at < end],
        "llm_request_times": [
            {"at_ms": ms(r.at, origin), "disconnected": r.disconnected} for r in chats
        ],
        "eot_predictions": [
            {
                "at_ms": ms(p["at"], origin),
                "probability": _round(p["probability"], 3),
                "threshold": p["threshold"],
                "delay_s": p["endpointing_delay"],
                "trigger": p["trigger"],
            }
            for p in bench.probe.predictions
            if start <= p["at"] < end
        ],
        "min_delay_updates": [
            {"at_ms": ms(u["at"], origin), "min_delay": _round(u["min_delay"], 3)}
            for u in bench.probe.delay_updates
            if start <= u["at"] < end
        ],
        "agent_audio_ms": [
            [ms(a, origin), ms(b, origin), segment]
            for a, b, segment in call.speaker.runs(start, end)
        ],
        "speaker_events_ms": [
            [ms(at, origin), kind, segment]
            for at, kind, segment in call.speaker.events_between(start, end)
            if kind in ("pause", "resume", "clear")
        ],
        "agent_states_ms": [
            [ms(at, origin), state] for at, state in call.log.agent_states if start <= at < end
        ],
        "false_interruptions_ms": [
            [ms(at, origin), resumed]
            for at, resumed in call.log.false_interruptions
            if start <= at < end
        ],
    }


def _metric_ms(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else round(float(value) * 1000, 1)


def _round(value: Any, digits: int) -> Any:
    return round(value, digits) if isinstance(value, float) else value


# --------------------------------------------------------------------------- the cases


async def listening_case(bench: Bench, call: Call, utt: Utterance) -> dict[str, Any]:
    """The caller says a statement, a question or a pause utterance while the agent listens."""
    await call.until_quiet(timeout=30.0)
    parts = utt.transcript_parts()
    bench.stub.transcript, bench.stub.reply = parts[0], SHORT_REPLY
    started = await call.mic.play(utt.pcm)
    switch = None
    if len(parts) > 1 and utt.resumes_at is not None:
        moment = started + utt.resumes_at + SWITCH_AFTER_ONSET
        switch = _at(moment, _set_transcript(bench.stub, parts[1]))
    onset, true_end = started + utt.onset, started + utt.end_of_speech
    settled = await call.until_quiet(not_before=started + utt.duration, timeout=30.0)
    if switch is not None:
        await switch
    end = time.time()

    users = call.log.role_between("user", started, end)
    first = call.speaker.first_heard_after(onset, end)
    replies = {
        s.index
        for s in call.speaker.segments
        if s.first_played_at is not None
        and started <= s.first_played_at < end
        and any(h.segment == s.index for h in call.speaker.heard_between(started, end))
    }
    chats = _chat_requests(bench.stub, started, end)
    commit_early = any(m.at < true_end for m in users)
    llm_early = sum(1 for r in chats if r.at < true_end)
    audio_early = first is not None and first.start < true_end
    split = len(users) > 1
    eot = first.start - true_end if first is not None and not audio_early else None
    library_eot = [v for m in users if (v := m.metrics.get("end_of_turn_delay")) is not None]
    return {
        "scenario": "listening",
        "kind": utt.kind,
        "id": utt.id,
        "pause_s": utt.pause_seconds,
        "settled": settled,
        "false_cutoff": commit_early or audio_early or split,
        "committed_before_end": commit_early,
        "audio_before_end": audio_early,
        "split": split,
        "user_turn_count": len(users),
        "end_of_turn_delay_ms": None if eot is None else round(eot * 1000, 1),
        "library_end_of_turn_delay_ms": _ms_list(library_eot),
        "first_agent_audio_ms": ms(first.start if first else None, true_end),
        "llm_requests": len(chats),
        "llm_requests_before_end": llm_early,
        "replies_heard": len(replies),
        "timeline_origin": "the utterance's true end of speech (manifest end_of_speech, as played)",
        "caller_ms": {
            "clip_start": ms(started, true_end),
            "speech_onset": ms(onset, true_end),
            "pause": None
            if utt.pause is None
            else [
                ms(started + utt.pause["start"], true_end),
                ms(started + utt.pause["end"], true_end),
            ],
            "clip_end": ms(started + utt.duration, true_end),
        },
        **_common_timeline(bench, call, started, end, true_end),
    }


def _outcome(stop: Stop, kind: str) -> str:
    """A backchannel's reply should carry on or resume; a barge-in should stop it."""
    if not stop.speaking:
        return "not_speaking"
    resumed = (
        stop.stopped_at is not None
        and stop.resumed_at is not None
        and stop.resumed_at - stop.stopped_at <= RESUME_WINDOW
    )
    if kind == "backchannel":
        if stop.stopped_at is None:
            return "carried_on"
        return "resumed" if resumed else "derailed"
    if stop.stopped_at is None:
        return "not_stopped"
    return "resumed_over_caller" if resumed else "stopped"


def _stop_fields(stop: Stop, onset: float, kind: str) -> dict[str, Any]:
    end = stop.stopped_at if stop.stopped_at is not None else stop.natural_end_at
    return {
        "agent_speaking_at_onset": stop.speaking,
        "stopped": stop.stopped_at is not None,
        "stop_ms": ms(end, onset) if stop.speaking else None,
        "played_to_natural_end": stop.natural_end_at is not None,
        "resumed_after_ms": None
        if stop.resumed_at is None or stop.stopped_at is None
        else round((stop.resumed_at - stop.stopped_at) * 1000, 1),
        "next_reply_ms": ms(stop.next_segment_at, onset),
        "outcome": _outcome(stop, kind),
    }


async def mid_reply_case(bench: Bench, call: Call, utt: Utterance) -> dict[str, Any]:
    """The agent speaks a long reply; the caller's backchannel or barge-in starts
    `into_reply` s into its audio."""
    await call.until_quiet(timeout=30.0)
    bench.stub.transcript, bench.stub.reply = utt.transcript, LONG_REPLY
    asked = time.time()
    handle = call.session.generate_reply(instructions=REPLY_INSTRUCTIONS)
    first = await wait_for(lambda: call.speaker.first_heard_after(asked), timeout=15.0)
    if first is None:
        await call.until_quiet(timeout=30.0)
        return {"scenario": "mid_reply", "kind": utt.kind, "id": utt.id, "error": "no reply"}
    started = await call.mic.play(utt.pcm, at=first.start + bench.into_reply - utt.onset)
    onset = started + utt.onset
    # whatever answers the caller's words (a barge-in, a backchannel that got through) is short
    switch = _at(onset, _set_reply(bench.stub, SHORT_REPLY))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(handle.wait_for_playout(), 60.0)  # shielded inside
    settled = await call.until_quiet(not_before=started + utt.duration, timeout=40.0)
    await switch
    end = time.time()

    stop = call.speaker.stop_after(onset)
    reply_item = next((m for m in call.log.role_between("assistant", asked, end)), None)
    return {
        "scenario": "mid_reply",
        "kind": utt.kind,
        "id": utt.id,
        "settled": settled,
        "into_reply_ms": ms(onset, first.start),
        **_stop_fields(stop, onset, utt.kind),
        "reply_interrupted": handle.interrupted,
        "reply_item_interrupted": None if reply_item is None else reply_item.interrupted,
        "assistant_turn_count": len(call.log.role_between("assistant", asked, end)),
        "user_turn_count": len(call.log.role_between("user", started, end)),
        "llm_requests": len(_chat_requests(bench.stub, asked, end)),
        "timeline_origin": "the caller's speech onset (manifest speech[0][0], as played)",
        "caller_ms": {
            "clip_start": ms(started, onset),
            "speech_end": ms(started + utt.end_of_speech, onset),
            "reply_first_audio": ms(first.start, onset),
        },
        **_common_timeline(bench, call, asked, end, onset),
    }


async def greeting_case(
    bench: Bench, arm: Arm, utt: Utterance, aec: float | None
) -> dict[str, Any]:
    """A fresh call; the caller's barge-in starts `into_greeting` s into the greeting."""
    bench.stub.transcript, bench.stub.reply = utt.transcript, SHORT_REPLY
    call = await open_call(bench, arm, dataclasses.replace(arm.shape, aec_warmup=aec))
    try:
        first = await wait_for(lambda: call.speaker.first_heard_after(call.started_at), 15.0)
        if first is None:
            return {"scenario": "greeting", "kind": utt.kind, "id": utt.id, "error": "no greeting"}
        started = await call.mic.play(utt.pcm, at=first.start + bench.into_greeting - utt.onset)
        onset = started + utt.onset
        greeting = call.speaker.segments[first.segment]
        await wait_for(
            lambda: (
                True
                if greeting.finished_at is not None and time.time() >= started + utt.duration
                else None
            ),
            30.0,
        )
        await asyncio.sleep(0.3)
        end = time.time()
        stop = call.speaker.stop_after(onset)
        greeting_item = next(iter(call.log.role_between("assistant", call.started_at, end)), None)
        return {
            "scenario": "greeting",
            "kind": utt.kind,
            "id": utt.id,
            "aec_warmup": aec,
            "into_greeting_ms": ms(onset, first.start),
            **_stop_fields(stop, onset, utt.kind),
            "greeting_captured_s": round(greeting.captured, 2),
            "greeting_played_s": round(greeting.played, 2),
            "greeting_item_interrupted": None
            if greeting_item is None
            else greeting_item.interrupted,
            "timeline_origin": "the caller's speech onset (manifest speech[0][0], as played)",
            "caller_ms": {
                "clip_start": ms(started, onset),
                "speech_end": ms(started + utt.end_of_speech, onset),
                "greeting_first_audio": ms(first.start, onset),
            },
            **_common_timeline(bench, call, call.started_at, end, onset),
        }
    finally:
        await call.aclose()


# --------------------------------------------------------------------------- an arm


async def run_arm(
    bench: Bench,
    name: str,
    arm: Arm,
    cases: dict[str, list[Utterance]],
    *,
    greeting_aecs: Sequence[float | None],
    repeat: int,
) -> dict[str, Any]:
    other = OtherLoad()
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    rows: list[dict[str, Any]] = []
    listening = [u for kind in LISTENING for u in cases.get(kind, [])]
    random.Random(repeat).shuffle(listening)
    mid = cases.get("backchannel", []) + cases.get("bargein", [])
    resolved: dict[str, Any] = {}
    lateness: dict[str, Any] = {}
    if listening or mid:
        call = await open_call(bench, arm)
        resolved = resolved_options(call.session)
        try:
            await wait_for(lambda: call.speaker.first_heard_after(call.started_at), 15.0)
            await call.until_quiet(timeout=30.0)  # the greeting
            for index, utt in enumerate(listening):
                print(f"    [{name} r{repeat}] {index + 1}/{len(listening)} {utt.id}", flush=True)
                rows.append(await listening_case(bench, call, utt))
            for utt in mid:
                print(f"    [{name} r{repeat}] mid-reply {utt.id}", flush=True)
                rows.append(await mid_reply_case(bench, call, utt))
        finally:
            lateness = call.mic.late_stats()
            await call.aclose()
    for aec in greeting_aecs:
        for utt in cases.get("bargein", []):
            print(f"    [{name} r{repeat}] greeting aec={aec} {utt.id}", flush=True)
            rows.append(await greeting_case(bench, arm, utt, aec))
    wall = time.monotonic() - wall0
    for row in rows:
        row["arm"], row["repeat"] = name, repeat
    return {
        "rows": rows,
        "resolved": resolved,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu_seconds() - cpu0, 2),
        "memory_end": memory(),
        "mic_lateness": lateness,
        "other_processes_cores_busy": other.cores_busy(),
    }


# --------------------------------------------------------------------------- summaries


def summarize_arm(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind in LISTENING:
        kind_rows = [r for r in rows if r["scenario"] == "listening" and r["kind"] == kind]
        if not kind_rows:
            continue
        cut = [r for r in kind_rows if r["false_cutoff"]]
        entry: dict[str, Any] = {
            "n": len(kind_rows),
            "false_cutoffs": len(cut),
            "false_cutoff_rate": round(len(cut) / len(kind_rows), 3),
            "committed_before_end": sum(r["committed_before_end"] for r in kind_rows),
            "audio_before_end": sum(r["audio_before_end"] for r in kind_rows),
            "split": sum(r["split"] for r in kind_rows),
            "unsettled": sum(not r["settled"] for r in kind_rows),
            "no_reply": sum(r["first_agent_audio_ms"] is None for r in kind_rows),
            "end_of_turn_delay": _stats(
                [v for r in kind_rows if (v := r["end_of_turn_delay_ms"]) is not None]
            ),
            "library_end_of_turn_delay": _stats(
                [
                    r["library_end_of_turn_delay_ms"][-1]
                    for r in kind_rows
                    if r["library_end_of_turn_delay_ms"]
                ]
            ),
            "llm_requests": sum(r["llm_requests"] for r in kind_rows),
            "with_llm_request_before_end": sum(r["llm_requests_before_end"] > 0 for r in kind_rows),
            "replies_heard": sum(r["replies_heard"] for r in kind_rows),
        }
        if kind in ("pause", "continuation"):
            by_pause: dict[str, Any] = {}
            for seconds in sorted({r["pause_s"] for r in kind_rows if r["pause_s"] is not None}):
                group = [r for r in kind_rows if r["pause_s"] == seconds]
                by_pause[f"{seconds:g}"] = {
                    "n": len(group),
                    "false_cutoffs": sum(r["false_cutoff"] for r in group),
                }
            entry["by_pause_seconds"] = by_pause
            upto = [r for r in kind_rows if (r["pause_s"] or 0) <= 1.5]
            entry["pauses_up_to_1p5s"] = {
                "n": len(upto),
                "false_cutoffs": sum(r["false_cutoff"] for r in upto),
            }
        summary[kind] = entry
    listening = [r for r in rows if r["scenario"] == "listening"]
    heard = sum(r["replies_heard"] for r in listening)
    requests = sum(r["llm_requests"] for r in listening)
    summary["llm"] = {
        "requests": requests,
        "replies_heard": heard,
        "extra_requests_per_answered_turn": round((requests - heard) / heard, 3) if heard else None,
    }
    backchannels = [r for r in rows if r["scenario"] == "mid_reply" and r["kind"] == "backchannel"]
    if backchannels:
        outcomes = [r.get("outcome", "error") for r in backchannels]
        summary["backchannel"] = {
            "n": len(backchannels),
            "derailed": outcomes.count("derailed"),
            "derailed_but_resumed_later": sum(
                1
                for r in backchannels
                if r.get("outcome") == "derailed" and r.get("resumed_after_ms") is not None
            ),
            "resumed": outcomes.count("resumed"),
            "carried_on": outcomes.count("carried_on"),
            "not_speaking_or_error": len(outcomes)
            - sum(outcomes.count(k) for k in ("derailed", "resumed", "carried_on")),
            "reply_interrupted": sum(bool(r.get("reply_item_interrupted")) for r in backchannels),
            "assistant_turns_per_case": _mean(
                [r.get("assistant_turn_count") for r in backchannels]
            ),
            "user_turns_per_case": _mean([r.get("user_turn_count") for r in backchannels]),
            "pause_before_resume": _stats(
                [v for r in backchannels if (v := r.get("resumed_after_ms")) is not None]
            ),
        }
    for scenario, key in (("mid_reply", "bargein_mid_reply"), ("greeting", "bargein_greeting")):
        group = [r for r in rows if r["scenario"] == scenario and r["kind"] == "bargein"]
        if not group:
            continue
        if scenario == "greeting":
            per_aec: dict[str, Any] = {}
            for aec in dict.fromkeys(r.get("aec_warmup") for r in group):  # in run order
                subset = [r for r in group if r.get("aec_warmup") == aec]
                per_aec[_aec_label(aec)] = _bargein_stats(subset)
            summary[key] = per_aec
        else:
            summary[key] = _bargein_stats(group)
    wall = sum(run["wall_s"] for run in runs)
    cpu = sum(run["cpu_s"] for run in runs)
    summary["cpu_per_call_second"] = round(cpu / wall, 4) if wall else None
    summary["memory_end"] = runs[-1]["memory_end"] if runs else {}
    summary["other_processes_cores_busy"] = [run["other_processes_cores_busy"] for run in runs]
    return summary


def _bargein_stats(group: list[dict[str, Any]]) -> dict[str, Any]:
    # how long the caller heard the agent after starting to speak: to its stop, or to its
    # natural end when it never stopped (counted in not_stopped too)
    stops = [v for r in group if (v := r.get("stop_ms")) is not None]
    return {
        "n": len(group),
        "stop": _stats(stops),
        "not_stopped": sum(
            1 for r in group if r.get("agent_speaking_at_onset") and not r.get("stopped")
        ),
        "resumed_over_caller": sum(1 for r in group if r.get("outcome") == "resumed_over_caller"),
        "not_speaking_or_error": sum(1 for r in group if not r.get("agent_speaking_at_onset")),
        "all_stop_or_end_ms": [r.get("stop_ms") for r in group],
    }


def _aec_label(aec: float | None) -> str:
    return "none" if aec is None else f"{aec:g}"


def _mean(values: Sequence[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, int | float)]
    return round(statistics.fmean(numbers), 2) if numbers else None


# --------------------------------------------------------------------------- run, report


def select_cases(
    corpus: Corpus, kinds: Sequence[str], per_kind: int | None, smoke: bool
) -> dict[str, list[Utterance]]:
    cases: dict[str, list[Utterance]] = {}
    for kind in kinds:
        found = corpus.of_kind(kind)
        if smoke:  # the shortest (for a pause: the one nearest 1.2 s), to stay under a minute
            found = sorted(found, key=lambda u: (abs((u.pause_seconds or 0) - 1.2), u.duration))
        limit = 1 if smoke else per_kind
        cases[kind] = found[:limit] if limit is not None else found
    return cases


def resolve_corpus(path: Path) -> Corpus:
    if (path / "manifest.json").exists():
        return load_corpus(path)
    if path.resolve() != DEFAULT_CORPUS.resolve():
        raise SystemExit(f"no manifest.json in {path}")
    print(f"  {path} has no manifest yet: using a stand-in spliced from hello_16k.wav")
    with tempfile.TemporaryDirectory(prefix="turn-corpus-") as scratch:
        return load_corpus(make_synthetic_corpus(Path(scratch)), synthetic=True)


def parse_aec(text: str) -> list[float | None]:
    values: list[float | None] = []
    for item in text.split(","):
        item = item.strip().lower()
        if item:
            values.append(None if item in ("none", "off") else float(item))
    return values


async def run(args: argparse.Namespace) -> dict[str, Any]:
    corpus = resolve_corpus(args.corpus)
    cases = select_cases(corpus, args.kinds, args.per_kind, args.smoke)
    memory_start = memory()
    vad_model = load_vad(bench_settings(**args.env))  # VAD_ENGINE as --env says
    memory_vad = memory()
    detector = load_turn_detector()
    loaded_weights = False
    try:
        from livekit import local_inference

        local_inference.init_eot()  # the weights load lazily otherwise, on the first turn
        loaded_weights = True
    except Exception as exc:  # pragma: no cover - reported, not fatal
        print(f"  could not preload the end-of-turn weights: {exc}")
    memory_detector = memory()
    probe = LibraryLogProbe()
    probe.install()
    slow_vad = RecordCounter("slower than realtime")
    logging.getLogger("livekit").addHandler(slow_vad)
    other = OtherLoad()
    started = time.time()
    arms_out: dict[str, Any] = {}
    all_rows: list[dict[str, Any]] = []
    async with OpenAIStub(profile=PROFILE, reply=SHORT_REPLY) as stub, utils.http_context.open():
        stub.tts_max_seconds = SMOKE_TTS_MAX_SECONDS if args.smoke else TTS_MAX_SECONDS
        bench = Bench(
            stub=stub,
            settings=bench_settings(OPENAI_BASE_URL=stub.base_url, **args.env),
            vad_model=vad_model,
            detector=detector,
            scenario=load_scenario("default"),
            probe=probe,
            sample_rate=corpus.sample_rate,
            into_reply=args.into_reply,
            into_greeting=args.into_greeting,
            quiet_hold=0.3 if args.smoke else 0.5,
            frame_ms=args.frame_ms,
        )
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.arms}
        for repeat in range(args.repeat):
            order = list(args.arms) if repeat % 2 == 0 else list(reversed(args.arms))
            for name in order:
                arm = ARMS[name]
                arm_cases = {
                    kind: utts
                    for kind, utts in cases.items()
                    if arm.kinds is None or kind in arm.kinds
                }
                aecs = [arm.shape.aec_warmup] if args.smoke else args.greeting_aec
                print(f"  arm {name} (repeat {repeat + 1}/{args.repeat}): {arm.description}")
                result = await run_arm(
                    bench, name, arm, arm_cases, greeting_aecs=aecs, repeat=repeat
                )
                runs[name].append(result)
        for name in args.arms:
            rows = [row for run in runs[name] for row in run.pop("rows")]
            all_rows.extend(rows)
            arm = ARMS[name]
            arm_runs = runs[name]
            arms_out[name] = {
                "description": arm.description,
                "turn_taking": dataclasses.asdict(arm.shape),
                "proposal_min_interruption_words": arm.min_interruption_words,
                "kinds": list(arm.kinds) if arm.kinds is not None else None,
                "resolved": next((r["resolved"] for r in arm_runs if r["resolved"]), {}),
                "runs": arm_runs,
                "summary": summarize_arm(rows, arm_runs),
            }
        settings_used = {
            "stt_mode": bench.settings.stt_mode,
            "preemptive_generation": bench.settings.preemptive_generation,
            "preemptive_hold": bench.settings.preemptive_hold,
            "finished_max_delay_seconds": bench.settings.finished_max_delay_seconds,
            "env": args.env,
        }
    return {
        "bench": "turn_taking",
        "smoke": args.smoke,
        "machine": machine_info(),
        "duration_s": round(time.time() - started, 1),
        "other_processes_cores_busy": other.cores_busy(),
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "slow_vad_warnings": len(slow_vad.times),
        "profile": PROFILE,
        "profile_figures": {
            k: (None if isinstance(v, float) and v == float("inf") else v)
            for k, v in vars(PROFILES[PROFILE]).items()
        },
        "settings": settings_used,
        "corpus": corpus.describe(),
        "cases_per_kind": {kind: [u.id for u in utts] for kind, utts in cases.items()},
        "repeat": args.repeat,
        "into_reply_s": args.into_reply,
        "into_greeting_s": args.into_greeting,
        "frame_ms": args.frame_ms,
        "greeting_aec_values": [_aec_label(v) for v in args.greeting_aec],
        "library_aec_warmup_s": LIBRARY_AEC_WARMUP_SECONDS,
        "replies": {
            "short": SHORT_REPLY,
            "long": LONG_REPLY,
            "tts_max_seconds": stub.tts_max_seconds,
        },
        "memory": {
            "start": memory_start,
            "after_vad": memory_vad,
            "after_turn_detector": memory_detector,
            "turn_detector_weights_preloaded": loaded_weights,
            "note": "one process holds everything: the bench, the stub, Silero and the model",
        },
        "definitions": {
            "false_cutoff": (
                "a user turn committed (user message added) before the utterance's true end of "
                "speech, or agent audio heard before it, or more than one user turn for the "
                "utterance"
            ),
            "end_of_turn_delay": "first agent audio heard - true end of speech (as played)",
            "barge_in_stop": (
                "caller speech onset -> end of the last audible agent chunk before the agent's "
                "audio fell silent; when it never stopped, its natural end (the median and p90 "
                "include those; not_stopped counts them)"
            ),
            "derailed": "backchannel: the reply stopped and did not resume within 2 s",
            "extra_llm_requests_per_answered_turn": (
                "(chat requests during listening cases - replies heard) / replies heard"
            ),
            "cpu_per_call_second": "process CPU time / wall time over the arm (incl. the stub)",
        },
        "arms": arms_out,
        "cases": all_rows,
    }


def _fmt_stats(stats: dict[str, Any]) -> str:
    if not stats.get("n"):
        return "-"
    return f"{stats['median_ms']:.0f} / {stats['p90_ms']:.0f}"


def report(result: dict[str, Any]) -> None:
    corpus = result["corpus"]
    print(
        f"\nturn taking, profile {result['profile']}, corpus {corpus['path']} "
        f"({corpus['utterances']} utterances{', STAND-IN' if corpus['synthetic_stand_in'] else ''})"
        f", repeat {result['repeat']}"
    )
    arms = result["arms"]
    for kind in LISTENING:
        if not any(kind in a["summary"] for a in arms.values()):
            continue
        print(
            f"\n  {kind}: n, false cut-offs (commit early / audio early / split), "
            "end-of-turn delay ms median / p90 (library's), no reply"
        )
        for name, arm in arms.items():
            s = arm["summary"].get(kind)
            if not s:
                continue
            line = (
                f"    {name:<14} n={s['n']:<3} cut-offs {s['false_cutoffs']} "
                f"({s['false_cutoff_rate']:.0%}; {s['committed_before_end']}/"
                f"{s['audio_before_end']}/{s['split']})  eot {_fmt_stats(s['end_of_turn_delay'])}"
                f" ({_fmt_stats(s['library_end_of_turn_delay'])})  no reply {s['no_reply']}"
            )
            if kind in ("pause", "continuation"):
                by = ", ".join(
                    f"{k}s {v['false_cutoffs']}/{v['n']}" for k, v in s["by_pause_seconds"].items()
                )
                line += f"\n{'':<20}cut-offs by pause: {by}"
            print(line)
    if any("backchannel" in a["summary"] for a in arms.values()):
        print(
            "\n  backchannel: n, derailed (stopped, no resume within 2 s), resumed, carried on, "
            "reply interrupted, assistant turns per case, user turns per case; pause before "
            "the resume ms median / p90"
        )
        for name, arm in arms.items():
            s = arm["summary"].get("backchannel")
            if s:
                print(
                    f"    {name:<14} n={s['n']:<3} derailed {s['derailed']} (of which resumed "
                    f"later {s['derailed_but_resumed_later']})  resumed "
                    f"{s['resumed']}  carried on {s['carried_on']}  interrupted "
                    f"{s['reply_interrupted']}  turns {s['assistant_turns_per_case']} / "
                    f"{s['user_turns_per_case']}  pause {_fmt_stats(s['pause_before_resume'])}"
                )
    if any(
        "bargein_mid_reply" in a["summary"] or "bargein_greeting" in a["summary"]
        for a in arms.values()
    ):
        print(
            "\n  barge-in stop ms median / p90 (not stopped): mid-reply; greeting per AEC warm-up"
        )
        for name, arm in arms.items():
            s = arm["summary"]
            mid = s.get("bargein_mid_reply")
            parts = []
            if mid:
                parts.append(
                    f"mid-reply {_fmt_stats(mid['stop'])} ({mid['not_stopped']}) n={mid['n']}"
                )
            for aec, g in (s.get("bargein_greeting") or {}).items():
                parts.append(
                    f"greeting aec {aec}: {_fmt_stats(g['stop'])} ({g['not_stopped']}) n={g['n']}"
                )
            if parts:
                print(f"    {name:<14} " + "  |  ".join(parts))
    print("\n  per arm: extra LLM requests per answered turn, CPU per call-second, memory at end")
    for name, arm in arms.items():
        s = arm["summary"]
        mem = s["memory_end"]
        print(
            f"    {name:<14} extra LLM {s['llm']['extra_requests_per_answered_turn']} "
            f"({s['llm']['requests']} requests / {s['llm']['replies_heard']} replies)  "
            f"CPU {s['cpu_per_call_second']} CPU-s/s  RSS {mem.get('rss_mb')} MB  "
            f"PSS {mem.get('pss_mb')} MB  other load {s['other_processes_cores_busy']}"
        )
    m = result["memory"]
    print(
        f"\n  memory: start PSS {m['start']['pss_mb']} MB, "
        f"after Silero {m['after_vad']['pss_mb']} MB"
        f", after the turn detector {m['after_turn_detector']['pss_mb']} MB "
        f"(RSS {m['after_turn_detector']['rss_mb']} MB)"
    )
    print(
        f"  other processes kept {result['other_processes_cores_busy']} cores busy on average "
        f"(load average at the end {result['loadavg_end']}); slow-VAD warnings "
        f"{result['slow_vad_warnings']}; took {result['duration_s']} s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"of {', '.join(ARMS)}")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    parser.add_argument("--repeat", type=int, default=1, help="every case this many times")
    parser.add_argument("--per-kind", type=int, default=None, help="at most N utterances a kind")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, metavar="DIR")
    parser.add_argument(
        "--greeting-aec", default="3.0,0.5", help="AEC warm-ups for greeting barge-ins (none: off)"
    )
    parser.add_argument("--into-reply", type=float, default=1.5, help="s into a reply's audio")
    parser.add_argument("--into-greeting", type=float, default=0.8, help="s into the greeting")
    parser.add_argument(
        "--frame-ms",
        type=int,
        default=10,
        help="the caller's audio frame length, each handed over once its last sample is due "
        "(the worker's room input delivers INPUT_FRAME_MS frames; runs before 2026-12-07 used "
        "10 ms frames handed over at their first sample)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a worker setting for every arm's session (STT_SILENCE_MS=200, PREEMPTIVE_TTS=true)",
    )
    add_output_args(parser, __file__)
    args = parser.parse_args(argv)
    args.arms = [a for a in args.arms.split(",") if a]
    args.kinds = [k for k in args.kinds.split(",") if k]
    if unknown := set(args.arms) - set(ARMS):
        parser.error(f"unknown arms: {', '.join(sorted(unknown))}")
    if unknown := set(args.kinds) - set(KINDS):
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    args.greeting_aec = parse_aec(args.greeting_aec)
    args.env = env_overrides(args.env, parser)
    if args.smoke:
        args.arms, args.repeat = args.arms[:1], 1
    quiet_logging()
    result = asyncio.run(run(args))
    report(result)
    write_result(args.json, result)


if __name__ == "__main__":
    main()
