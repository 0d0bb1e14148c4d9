"""What the benchmarks share: output (JSON + machine facts), statistics, quiet logging, settings
and zero-latency providers. The caller's side and clocks are in `bench._audio_in`, the project's
call in `bench._project_call`.

Rule: every bench writes its figures through `write_result` with the machine's facts beside
them, and builds its settings through `bench_settings` (the worker's own Settings, validated).
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import structlog

from agent.config import Settings
from tests.support.fakes import (
    FakeLLM,
    FakeSTT,
    FakeTTS,
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
