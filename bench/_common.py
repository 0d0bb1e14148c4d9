"""What the benchmarks share: output (JSON + machine facts), statistics, quiet logging, a looping
real-time WAV microphone, zero-latency providers, and the project's call set up the way
`agent.worker.entrypoint` does it, minus the room.

Rule: a benchmark builds the call through the same functions the entrypoint calls
(`agent.call.start.start_in_parallel`, `agent.call.session.open_journal`, `build_conversation`,
`start_conversation`), with fakes injected, so that a change to the wiring cannot leave a bench
measuring another shape; only the LiveKit room is replaced (no WebRTC here: a `CaptureRoom`
for the data channel and `session.output.audio` is a `CaptureAudioOutput`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, cast

import numpy as np
import psutil
import structlog
from livekit import rtc
from livekit.agents import AgentSession, JobContext, vad
from livekit.agents.voice import io

from agent.backend import Backend
from agent.call import Call
from agent.call.session import build_conversation, open_journal, start_conversation
from agent.config import Settings
from agent.journal import Journal
from agent.models import JobMetadata, Scenario, Session
from agent.prompts import load_scenario
from tests.support.fake_job import FakeJob, FakeJobContext, FakeProc, FakeRoomInfo
from tests.support.fakes import (
    CaptureAudioOutput,
    CaptureRoom,
    FakeLLM,
    FakeSTT,
    FakeTTS,
    Int16Array,
    read_wav_mono16,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
HELLO_16K = REPO_ROOT / "tests" / "audio" / "hello_16k.wav"
STARTER_INSTRUCTIONS = "You are a helpful voice AI assistant."
USER_TRANSCRIPT = "Hi, I'm here to listen. What's going on?"
AGENT_REPLY = "I hear you. Tell me more."
# Replies and greetings are short so a looping caller never talks over them.
TTS_MAX_SECONDS = 1.0
VOICED_ABS = 64
"""A caller sample is voiced above this magnitude (the test WAVs are digitally silent between
words)."""

BENCH_ENV: dict[str, str] = {
    "LIVEKIT_URL": "ws://127.0.0.1:9",
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "secret_secret_secret_secret_secret_",
    "OPENAI_API_KEY": "sk-bench",
}


# --------------------------------------------------------------------------- output


def add_output_args(parser: argparse.ArgumentParser, script: str) -> None:
    default = RESULTS_DIR / f"{Path(script).stem}.json"
    parser.add_argument(
        "--json",
        type=Path,
        default=default,
        metavar="PATH",
        help=f"write the figures here (default: {default.relative_to(REPO_ROOT)})",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny input, to check it runs")


def livekit_agents_version() -> str:
    try:
        return importlib_metadata.version("livekit-agents")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def machine_info() -> dict[str, Any]:
    """Where and when the figures were taken; the load average says whether the machine was
    busy with other work at the time (nothing else is controlled)."""
    load = os.getloadavg()
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": [round(value, 2) for value in load],
        "livekit_agents": livekit_agents_version(),
    }


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")


class OtherLoad:
    """How busy the rest of the machine was while we measured: system-wide busy CPU time minus
    this process's, per wall second ("cores busy with other processes")."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        times = psutil.cpu_times()
        busy = times.user + times.system + getattr(times, "nice", 0.0)
        busy += getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
        busy += getattr(times, "steal", 0.0)
        own = sum(self._process.cpu_times()[:2])
        return time.monotonic(), busy, own

    def cores_busy(self) -> float:
        """Other processes' CPU-seconds per second since this object was made."""
        now, busy, own = self._sample()
        start, busy0, own0 = self._start
        wall = max(1e-9, now - start)
        return round(max(0.0, (busy - busy0) - (own - own0)) / wall, 3)


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=np.float64), fraction * 100.0))


def summarize(values: Sequence[float], *, scale: float = 1.0, digits: int = 2) -> dict[str, Any]:
    """median with p10/p90 and min/max; `scale` converts units (1000.0: seconds -> ms)."""
    if not values:
        return {"n": 0}
    scaled = [v * scale for v in values]
    return {
        "n": len(scaled),
        "median": round(statistics.median(scaled), digits),
        "p10": round(percentile(scaled, 0.10), digits),
        "p90": round(percentile(scaled, 0.90), digits),
        "min": round(min(scaled), digits),
        "max": round(max(scaled), digits),
        "mean": round(statistics.fmean(scaled), digits),
    }


def fmt(summary: dict[str, Any], unit: str = "ms") -> str:
    if not summary.get("n"):
        return "(no samples)"
    return (
        f"median {summary['median']:.1f} {unit}  p10 {summary['p10']:.1f}  "
        f"p90 {summary['p90']:.1f}  min {summary['min']:.1f}  max {summary['max']:.1f}  "
        f"(n={summary['n']})"
    )


# --------------------------------------------------------------------------- logging


def quiet_logging() -> None:
    """Warnings and errors only: the project logs every call at info level, the library every
    process at info; neither belongs in a benchmark's output (or its timing)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("livekit", "livekit.agents", "livekit.plugins", "agent", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)


class RecordCounter(logging.Handler):
    """Counts log records whose message contains `needle` (e.g. Silero's "slower than
    realtime" warning), with the time of each."""

    def __init__(self, needle: str) -> None:
        super().__init__(level=logging.DEBUG)
        self.needle = needle
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            if self.needle in record.getMessage():
                self.times.append(record.created)

    def count_since(self, since: float) -> int:
        return sum(1 for at in self.times if at >= since)


# --------------------------------------------------------------------------- settings, providers


def env_overrides(specs: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    """`--env` values (each `KEY=VALUE`, or several joined with commas) as one dict of worker
    settings; anything else is a usage error naming it."""
    overrides: dict[str, str] = {}
    for spec in specs:
        for item in (part.strip() for part in spec.split(",")):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                parser.error(f"--env {spec!r}: expected KEY=VALUE[,KEY=VALUE]")
            overrides[key.strip()] = value.strip()
    return overrides


def bench_settings(**overrides: str) -> Settings:
    """Validated like the environment would be, never reading the environment or a .env."""
    return Settings.model_validate({**BENCH_ENV, **overrides})


@dataclass
class Providers:
    stt: FakeSTT
    llm: FakeLLM
    tts: FakeTTS


def zero_latency_providers() -> Providers:
    """The fakes with every artificial delay at zero: what is left is the framework's and the
    project's own work."""
    return Providers(
        stt=FakeSTT(USER_TRANSCRIPT, delay=0.0),
        llm=FakeLLM(AGENT_REPLY, token_delay=0.0, first_token_delay=0.0),
        tts=FakeTTS(delay=0.0, max_duration=TTS_MAX_SECONDS),
    )


# --------------------------------------------------------------------------- audio input


def last_voiced_offset(data: Int16Array, rate: int) -> float:
    """Seconds from the start of `data` to the end of its last voiced sample (0 if none)."""
    voiced = np.flatnonzero(np.abs(data.astype(np.int32)) > VOICED_ABS)
    return float(voiced[-1] + 1) / rate if voiced.size else 0.0


class LoopingWavInput(io.AudioInput):
    """A real-time microphone: `lead_silence` seconds of silence, then `loops` times the WAV
    (optionally only its first `speech_seconds`) followed by `gap` seconds of silence, then
    silence for ever. Frames of `frame_ms` are paced against an absolute monotonic schedule, so
    a consumer (or event loop) that falls behind shows up as lateness, which is recorded from
    `measure_from` (a `time.monotonic()` value) on."""

    def __init__(
        self,
        path: str | os.PathLike[str] = HELLO_16K,
        *,
        lead_silence: float = 1.0,
        gap: float = 2.5,
        loops: int = 1,
        speech_seconds: float | None = None,
        frame_ms: int = 10,
    ) -> None:
        super().__init__(label="LoopingWavInput")
        data, rate = read_wav_mono16(path)
        if speech_seconds is not None:
            data = data[: round(speech_seconds * rate)]
        self.sample_rate = rate
        self.speech_seconds = len(data) / rate
        self.voiced_end = last_voiced_offset(data, rate)
        """Seconds from the start of the (possibly cut) WAV to the end of its last voiced sample."""
        self.period = self.speech_seconds + gap
        self.lead_silence = lead_silence
        self.loops = loops
        self._samples_per_frame = rate * frame_ms // 1000
        self._frame_interval = frame_ms / 1000
        lead = np.zeros(round(lead_silence * rate), dtype=np.int16)
        gap_pcm = np.zeros(round(gap * rate), dtype=np.int16)
        parts: list[Int16Array] = [lead]
        for _ in range(loops):
            parts.extend([data, gap_pcm])
        self._pcm: Int16Array = np.concatenate(parts)
        self._silence: Int16Array = np.zeros(self._samples_per_frame, dtype=np.int16)
        self._pos = 0
        self._frames_sent = 0
        self._t0: float | None = None
        self.started_at: float | None = None
        """`time.time()` of the first frame."""
        self.measure_from: float = math.inf
        self.lateness: list[float] = []
        """Seconds each frame was handed over after its schedule (from `measure_from` on)."""

    @property
    def duration(self) -> float:
        """Seconds until the last loop's gap ends."""
        return self.lead_silence + self.loops * self.period

    def speech_end_times(self) -> list[float]:
        """`time.time()` at which each loop's speech ended (once started): the end of the WAV,
        trailing silence included."""
        return self._loop_times(self.speech_seconds)

    def voiced_end_times(self) -> list[float]:
        """`time.time()` at which each loop's last voiced sample was handed over (once started):
        the end of the WAV's speech as a listener hears it, without its trailing silence."""
        return self._loop_times(self.voiced_end)

    def _loop_times(self, offset: float) -> list[float]:
        if self.started_at is None:
            return []
        return [
            self.started_at + self.lead_silence + i * self.period + offset
            for i in range(self.loops)
        ]

    async def __anext__(self) -> rtc.AudioFrame:
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
            self.started_at = time.time()
        due = self._t0 + self._frames_sent * self._frame_interval
        delay = due - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif time.monotonic() >= self.measure_from:
            self.lateness.append(-delay)
        self._frames_sent += 1
        spf = self._samples_per_frame
        if self._pos < len(self._pcm):
            chunk = self._pcm[self._pos : self._pos + spf]
            self._pos += len(chunk)
            if len(chunk) < spf:
                chunk = np.pad(chunk, (0, spf - len(chunk)))
        else:
            chunk = self._silence
        return rtc.AudioFrame(
            data=chunk.tobytes(),
            sample_rate=self.sample_rate,
            num_channels=1,
            samples_per_channel=spf,
        )

    def late_stats(self) -> dict[str, Any]:
        """Lateness in ms: frames on time count as 0."""
        frames = max(1, self._frames_sent)
        values = self.lateness + [0.0] * max(0, frames - len(self.lateness))
        return {
            "frames": self._frames_sent,
            "p99_ms": round(percentile(values, 0.99) * 1000, 2),
            "max_ms": round(max(values) * 1000, 2),
            "over_50ms": sum(1 for v in self.lateness if v > 0.05),
        }


class LoopLagProbe:
    """How late the event loop wakes a task that sleeps `interval` seconds: a loop that cannot
    keep up (GIL, blocking calls) shows up here first."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bench.lag_probe")

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, time.perf_counter() - before - self.interval))

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return {
            "p50_ms": round(percentile(self.samples, 0.5) * 1000, 2),
            "p99_ms": round(percentile(self.samples, 0.99) * 1000, 2),
            "max_ms": round(max(self.samples, default=0.0) * 1000, 2),
        }


# --------------------------------------------------------------------------- turn timing


@dataclass
class TurnTimer:
    """Per user turn: the user message's `stopped_speaking_at` -> the first frame of the next
    agent audio segment at the output. Also keeps the library's own `e2e_latency`."""

    output: CaptureAudioOutput
    stopped: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)

    def attach(self, session: AgentSession[Any]) -> None:
        session.on("conversation_item_added", self._on_item)

    def _on_item(self, event: Any) -> None:
        item = event.item
        if getattr(item, "type", None) != "message":
            return
        metrics = getattr(item, "metrics", None) or {}
        if item.role == "user":
            stopped = metrics.get("stopped_speaking_at")
            if isinstance(stopped, int | float):
                self.stopped.append(float(stopped))
        elif item.role == "assistant":
            e2e = metrics.get("e2e_latency")
            if isinstance(e2e, int | float):
                self.e2e.append(float(e2e))

    def pairs(self) -> list[tuple[float, float | None]]:
        """(stopped_speaking_at, seconds to the reply's first frame or None) per user turn."""
        starts = sorted(segment.started_at for segment in self.output.segments)
        result: list[tuple[float, float | None]] = []
        for stopped in self.stopped:
            reply = next((s for s in starts if s > stopped), None)
            result.append((stopped, None if reply is None else reply - stopped))
        return result

    def latencies(self) -> list[float]:
        """Seconds, one per user turn that got a reply."""
        return [latency for _, latency in self.pairs() if latency is not None]


# --------------------------------------------------------------------------- the project's call


async def close_session_fast(session: AgentSession[Any]) -> None:
    """Teardown after the measurement. `AgentSession.aclose()` waits up to
    `session_close_transcript_timeout` (the project sets 5 s) for a final user transcript that
    never comes when nobody is mid-utterance; a benchmark does not need to wait for it, so the
    timeout is zeroed first (a private option, touched only here, after the figures are taken)."""
    with contextlib.suppress(Exception):
        session._opts.session_close_transcript_timeout = 0.0
    with contextlib.suppress(Exception):
        await session.aclose()


@dataclass
class BenchJobContext(FakeJobContext):
    """`FakeJobContext` (ids, `connect()` with `connect_delay`, shutdown) plus the room parts the
    transcript wiring reads; there is no real room, so `session.start` gets none."""

    proc: FakeProc = field(default_factory=FakeProc)
    room: CaptureRoom = field(default_factory=CaptureRoom)

    def as_job_context(self) -> JobContext:
        return cast(JobContext, self)


def make_job_context(
    index: int, metadata: JobMetadata | None = None, *, connect_delay: float = 0.0
) -> BenchJobContext:
    raw = json.dumps(metadata.to_wire()) if metadata is not None else ""
    job = FakeJob(id=f"AJ_bench{index}", metadata=raw, room=FakeRoomInfo(name=f"room-{index}"))
    return BenchJobContext(job=job, connect_delay=connect_delay)


@dataclass
class ProjectCall:
    """A call of this project's agent, set up like `entrypoint` after `start_in_parallel`."""

    ctx: BenchJobContext
    call: Call
    session: AgentSession[Call]
    output: CaptureAudioOutput

    async def aclose(self) -> None:
        await self.call.cancel_tasks()
        await close_session_fast(self.session)
        if self.call.publisher is not None:
            await self.call.publisher.finish(send_end=False, timeout=2.0)
        await self.output.aclose()


def new_call(
    ctx: BenchJobContext, metadata: JobMetadata, *, backend: Backend | None, journal: Journal
) -> Call:
    return Call.for_job(ctx.as_job_context(), metadata, backend=backend, journal=journal)


async def start_project_session(
    ctx: BenchJobContext,
    call: Call,
    *,
    scenario: Scenario,
    session_record: Session,
    settings: Settings,
    vad_model: vad.VAD | None,
    providers: Providers,
    audio_input: io.AudioInput | None = None,
    realtime_output: bool = True,
) -> ProjectCall:
    """`entrypoint` from "the scenario and session are known" on, through the same functions:
    `open_journal` (row, lease task), `build_conversation` (providers injected, the transcript
    wiring, the end-of-call handlers), `start_conversation` (the persona, the no-show and
    max-duration timers). Only the room differs: no WebRTC, so the session's audio IO is set
    here and `session.start` gets no room."""
    call.scenario, call.session = scenario, session_record
    await open_journal(call)
    session = build_conversation(
        call,
        settings,
        vad_model,
        ctx.room.as_room(),
        stt_model=providers.stt,
        llm_model=providers.llm,
        tts_model=providers.tts,
    )
    output = CaptureAudioOutput(realtime=realtime_output)
    session.output.audio = output
    if audio_input is not None:
        session.input.audio = audio_input
    await start_conversation(call, session, settings, room=None)
    return ProjectCall(ctx=ctx, call=call, session=session, output=output)


async def start_default_call(
    index: int,
    tag: str,
    *,
    settings: Settings,
    vad_model: vad.VAD | None,
    journal: Journal,
    providers: Providers,
    audio_input: io.AudioInput | None = None,
) -> ProjectCall:
    """A call of the bundled default scenario with session `sess-{tag}` (user `user-{tag}`),
    started by `start_project_session`."""
    metadata = JobMetadata(scenario_id="default", user_id=f"user-{tag}")
    ctx = make_job_context(index, metadata)
    call = new_call(ctx, metadata, backend=None, journal=journal)
    record = Session(
        id=f"sess-{tag}", user_id=metadata.user_id, scenario_id="default", attempt_number=1
    )
    return await start_project_session(
        ctx,
        call,
        scenario=load_scenario("default"),
        session_record=record,
        settings=settings,
        vad_model=vad_model,
        providers=providers,
        audio_input=audio_input,
    )
