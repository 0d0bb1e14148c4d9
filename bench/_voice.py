"""Helpers of the voice-latency benchmark: a real-time looping WAV microphone, a capturing sink
that timestamps audible frames, settings, quiet logging and the JSON output.

Rule: self-contained (it does not import bench/_common.py, which is being restructured), and it
never reads the environment for settings: everything a benchmark measures is stated in its JSON.
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
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice import io

from agent.config import Settings
from tests.support.fakes import CaptureAudioOutput, Int16Array, read_wav_mono16

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
HELLO_16K = REPO_ROOT / "tests" / "audio" / "hello_16k.wav"
AUDIBLE_RMS = 100.0
"""A frame is audible above this RMS (s16 units, about -50 dBFS)."""
VOICED_ABS = 64
"""A caller sample is voiced above this magnitude (the test WAVs are digitally silent between
words)."""

BENCH_ENV: dict[str, str] = {
    "LIVEKIT_URL": "ws://127.0.0.1:9",
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "secret_secret_secret_secret_secret_",
    "OPENAI_API_KEY": "sk-bench",
}


def bench_settings(**overrides: str) -> Settings:
    """Validated like the environment would be, never reading the environment or a .env."""
    return Settings.model_validate({**BENCH_ENV, **overrides})


def last_voiced_offset(path: Path = HELLO_16K) -> float:
    """Seconds from the start of the WAV to the end of its last voiced sample."""
    data, rate = read_wav_mono16(path)
    voiced = np.flatnonzero(np.abs(data.astype(np.int32)) > VOICED_ABS)
    return float(voiced[-1] + 1) / rate if voiced.size else 0.0


class CallerMic(io.AudioInput):
    """A real-time microphone: `lead` seconds of silence, then `turns` times the WAV followed by
    `gap` seconds of silence, then silence for ever; 10 ms frames on an absolute schedule."""

    def __init__(self, path: Path = HELLO_16K, *, lead: float, gap: float, turns: int) -> None:
        super().__init__(label="CallerMic")
        data, rate = read_wav_mono16(path)
        self.sample_rate = rate
        self.lead = lead
        self.period = len(data) / rate + gap
        self.turns = turns
        self.voiced_end = last_voiced_offset(path)
        self._spf = rate // 100
        parts: list[Int16Array] = [np.zeros(round(lead * rate), dtype=np.int16)]
        for _ in range(turns):
            parts.extend([data, np.zeros(round(gap * rate), dtype=np.int16)])
        self._pcm: Int16Array = np.concatenate(parts)
        self._pos = 0
        self._sent = 0
        self._t0: float | None = None
        self.started_at: float | None = None

    @property
    def duration(self) -> float:
        return self.lead + self.turns * self.period

    def speech_ends(self) -> list[float]:
        """`time.time()` at which each turn's last voiced sample was handed over."""
        if self.started_at is None:
            return []
        return [
            self.started_at + self.lead + i * self.period + self.voiced_end
            for i in range(self.turns)
        ]

    async def __anext__(self) -> rtc.AudioFrame:
        now = time.perf_counter()
        if self._t0 is None:
            self._t0, self.started_at = now, time.time()
        delay = self._t0 + self._sent * 0.01 - now
        if delay > 0:
            await asyncio.sleep(delay)
        self._sent += 1
        chunk = self._pcm[self._pos : self._pos + self._spf]
        self._pos += len(chunk)
        if len(chunk) < self._spf:
            chunk = np.pad(chunk, (0, self._spf - len(chunk)))
        return rtc.AudioFrame(
            data=chunk.tobytes(),
            sample_rate=self.sample_rate,
            num_channels=1,
            samples_per_channel=self._spf,
        )


class AudibleOutput(CaptureAudioOutput):
    """The capturing sink (simulated real-time playout), plus the time of every audible frame."""

    def __init__(self) -> None:
        super().__init__()
        self.audible_at: list[float] = []

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float64)
        if samples.size and float(np.sqrt(np.mean(samples * samples))) > AUDIBLE_RMS:
            self.audible_at.append(time.time())


async def close_session_fast(session: AgentSession[Any]) -> None:
    """Teardown after the measurement: the project's close waits up to 5 s for a final user
    transcript that never comes when nobody is mid-utterance; a benchmark need not."""
    with contextlib.suppress(Exception):
        session._opts.session_close_transcript_timeout = 0.0
    with contextlib.suppress(Exception):
        await session.aclose()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=np.float64), fraction * 100.0))


def quiet_logging() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("livekit", "livekit.agents", "livekit.plugins", "agent", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)


def machine_info() -> dict[str, Any]:
    try:
        version = importlib_metadata.version("livekit-agents")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover
        version = "unknown"
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": [round(value, 2) for value in os.getloadavg()],
        "livekit_agents": version,
    }


def add_output_args(parser: argparse.ArgumentParser, script: str) -> None:
    default = RESULTS_DIR / f"{Path(script).stem}.json"
    parser.add_argument("--json", type=Path, default=default, metavar="PATH")
    parser.add_argument("--smoke", action="store_true", help="tiny input, to check it runs")


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
