"""The benchmarks' caller side and clocks: a looping real-time WAV microphone, where the voice in
a WAV ends, the event loop's lag, and per-turn timing from session events.

Rule: everything paces against the monotonic clock (an absolute schedule, never sleep-after-
work), so a busy loop shows up as lag in the figures rather than as slower speech.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice import io

from bench._common import HELLO_16K, VOICED_ABS, percentile
from tests.support.fakes import (
    CaptureAudioOutput,
    Int16Array,
    read_wav_mono16,
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
