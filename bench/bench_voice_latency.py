"""Voice-to-voice latency under a realistic provider timing model: the caller's end of speech ->
the first audible agent audio frame, three session shapes side by side in one run.

Rule: prints figures and writes JSON; never asserts. Every arm hears the same caller:
`tests/audio/hello_16k.wav` (real speech) played in real time, 10 ms frames, through the real
Silero VAD, `--turns` times with a gap for the reply. Every provider is a real
`livekit.plugins.openai` class pointed at the OpenAI-compatible stub (tests/support/openai_stub.py)
in the `--profile` timing profile (`typical` by default: batch STT 0.25 s + 0.1 s per audio
second, LLM first token 0.35 s then 50 tokens/s, TTS first byte 0.25 s, realtime transcription
final 0.15 s after the commit).

- A: LiveKit's default session shape with the same plugins: `AgentSession(stt, llm, tts, vad)`
  (batch STT through the library's VAD adapter, default endpointing, default preemptive
  generation) and a plain `Agent`; only the end of turn is the VAD's, as in B, because the
  library's default turn detector is a LiveKit Cloud service that cannot be reached offline.
- B: this worker's shipped configuration: `agent.pipeline.build_session(settings, vad)` with the
  settings' defaults (or `--b-env KEY=VALUE` overrides, to measure one lever at a time) and the
  project's `PersonaAgent` on the bundled default scenario.
- C: the floor, measured: B with an instant STT (a zero-latency fake batch STT), so only the
  end-of-turn silence, the LLM's first token and the TTS's first byte remain. `floor_ms` is the
  same floor computed from the profile: Silero's `min_silence_duration` (the session cannot end a
  turn sooner) + LLM first token + TTS first byte.

Measured in-process, from the caller's side: the end of the caller's last voiced sample (the
time the microphone handed over the frame that holds it) -> the first frame with audible
content (RMS > 100) that reached the session's audio output. There is no room and no WebRTC:
the session's audio input/output are a real-time WAV microphone and a capturing sink, so codec
and network time are not included. The per-turn timeline is taken from the stub's own clocks
(request arrival, first token/byte sent) and the session's events.

    uv run python bench/bench_voice_latency.py [--turns 10] [--profile typical] [--arms ABC]
        [--b-env STT_MODE=batch] [--json PATH] [--plot PATH] [--smoke]
    uv run python bench/bench_voice_latency.py --replot JSON --plot PNG
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from livekit.agents import Agent, AgentSession, utils, vad

from agent.config import Settings
from agent.persona import PersonaAgent
from agent.pipeline import build_llm, build_session, build_stt, build_tts, load_vad
from agent.prompts import load_scenario
from bench._audio_in import LoopingWavInput
from bench._common import (
    AGENT_REPLY,
    STARTER_INSTRUCTIONS,
    USER_TRANSCRIPT,
    add_output_args,
    bench_settings,
    env_overrides,
    machine_info,
    percentile,
    quiet_logging,
    write_result,
)
from bench._project_call import close_session_fast
from bench._voice import AudibleOutput
from tests.support.fakes import FakeSTT
from tests.support.openai_stub import PROFILES, OpenAIStub, RecordedRequest

ARMS = {
    "A": "LiveKit default shape (batch STT, default endpointing), same plugins",
    "B": "this worker's shipped configuration (agent.pipeline.build_session)",
    "C": "floor, measured: B with an instant STT",
}
# short replies, so the reply is over before the caller's next turn
TTS_MAX_SECONDS = 0.8
SILERO_MIN_SILENCE = 0.55  # silero.VAD.load()'s default min_silence_duration (plugin source)


@dataclass
class SessionEvents:
    """Wall-clock times of the session's own events, for the timeline."""

    finals: list[float] = field(default_factory=list)
    user_items: list[float] = field(default_factory=list)

    def attach(self, session: AgentSession[Any]) -> None:
        session.on("user_input_transcribed", self._on_transcribed)
        session.on("conversation_item_added", self._on_item)

    def _on_transcribed(self, event: Any) -> None:
        if getattr(event, "is_final", False):
            self.finals.append(time.time())

    def _on_item(self, event: Any) -> None:
        if getattr(event.item, "role", None) == "user":
            self.user_items.append(time.time())


def _first_after(values: list[float], start: float, end: float) -> float | None:
    return next((v for v in sorted(values) if start <= v < end), None)


def _timeline(
    end: float,
    next_end: float,
    *,
    stub: OpenAIStub,
    events: SessionEvents,
    output: AudibleOutput,
) -> dict[str, float | None]:
    """Milliseconds after the end of speech at which each step of this turn happened."""

    def arrivals(endpoint: str) -> list[RecordedRequest]:
        return [r for r in stub.requests_to(endpoint) if end <= r.at < next_end]

    stt_request: float | None = None
    uploads = arrivals("transcriptions")
    if uploads:
        stt_request = uploads[0].at
    else:
        commits = [
            e["at"]
            for e in stub.realtime_events
            if e["dir"] == "out" and e["event"]["type"] == "input_audio_buffer.committed"
        ]
        stt_request = _first_after(commits, end, next_end)
    chats = arrivals("chat")
    chat = chats[0] if chats else None
    speech = next((r for r in arrivals("speech") if chat is None or r.at >= chat.at), None)
    steps = {
        "stt_request": stt_request,
        "stt_final": _first_after(events.finals, end, next_end),
        "turn_committed": _first_after(events.user_items, end, next_end),
        "llm_request": chat.at if chat else None,
        "llm_first_token": chat.first_byte_at if chat else None,
        "tts_request": speech.at if speech else None,
        "tts_first_byte": speech.first_byte_at if speech else None,
        "first_audio_out": _first_after(output.audible_at, end, next_end),
    }
    return {k: None if v is None else round((v - end) * 1000, 1) for k, v in steps.items()}


async def run_arm(
    arm: str,
    *,
    stub: OpenAIStub,
    settings: Settings,
    vad_model: vad.VAD,
    turns: int,
    lead: float,
    gap: float,
) -> dict[str, Any]:
    stub.reset()
    stub.realtime_events.clear()
    mic = LoopingWavInput(lead_silence=lead, gap=gap, loops=turns)
    output = AudibleOutput()
    scenario = load_scenario("default")
    session: AgentSession[Any]
    agent: Agent
    if arm == "A":
        batch = settings.model_copy(update={"stt_mode": "batch"})
        # end of turn on the VAD as in B: the library's default turn detector
        # (inference.TurnDetector) is a LiveKit Cloud service, unreachable offline, and its
        # timeout would be charged to A (docs/performance.md has that figure too)
        session = AgentSession(
            stt=build_stt(batch),
            llm=build_llm(settings),
            tts=build_tts(settings),
            vad=vad_model,
            turn_handling={"turn_detection": "vad", "interruption": {"mode": "vad"}},
        )
        agent = Agent(instructions=STARTER_INSTRUCTIONS)
    elif arm == "B":
        session = build_session(settings, vad_model, scenario=scenario)
        agent = PersonaAgent(scenario)
    else:
        instant = FakeSTT(USER_TRANSCRIPT, delay=0.0)
        session = build_session(settings, vad_model, scenario=scenario, stt_model=instant)
        agent = PersonaAgent(scenario)
    session.input.audio = mic
    session.output.audio = output
    events = SessionEvents()
    events.attach(session)
    load_before = os.getloadavg()
    try:
        await session.start(agent=agent)
        await asyncio.sleep(mic.duration + 0.5)
    finally:
        await close_session_fast(session)
        await output.aclose()
    ends = mic.voiced_end_times()
    bounds = [*ends[1:], ends[-1] + mic.period] if ends else []
    latencies: list[float] = []
    timeline: list[dict[str, float | None]] = []
    for end, next_end in zip(ends, bounds, strict=True):
        steps = _timeline(end, next_end, stub=stub, events=events, output=output)
        timeline.append(steps)
        if steps["first_audio_out"] is not None:
            latencies.append(steps["first_audio_out"])
    return {
        "description": ARMS[arm],
        "samples_ms": latencies,
        "missing_turns": turns - len(latencies),
        "timeline_ms": timeline,
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }


def _summary(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"median_ms": None, "p90_ms": None, "max_ms": None, "n": 0}
    return {
        "median_ms": round(statistics.median(samples), 1),
        "p90_ms": round(percentile(samples, 0.9), 1),
        "max_ms": round(max(samples), 1),
        "n": len(samples),
    }


def _median_timeline(rows: list[dict[str, float | None]]) -> dict[str, float | None]:
    keys = rows[0].keys() if rows else []
    result: dict[str, float | None] = {}
    for key in keys:
        values = [v for row in rows if (v := row[key]) is not None]
        result[key] = round(statistics.median(values), 1) if values else None
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    profile = PROFILES[args.profile]
    overrides = args.b_env
    vad_model = load_vad(bench_settings(**overrides))  # VAD_ENGINE as the arm's settings
    arms: dict[str, Any] = {}
    async with OpenAIStub(profile=profile, reply=AGENT_REPLY) as stub, utils.http_context.open():
        stub.transcript = USER_TRANSCRIPT
        stub.tts_max_seconds = TTS_MAX_SECONDS
        settings = bench_settings(OPENAI_BASE_URL=stub.base_url, **overrides)
        for arm in args.arms:
            print(f"  arm {arm}: {ARMS[arm]} ...", flush=True)
            result = await run_arm(
                arm,
                stub=stub,
                settings=settings,
                vad_model=vad_model,
                turns=args.turns,
                lead=args.lead,
                gap=args.gap,
            )
            result.update(_summary(result["samples_ms"]))
            result["timeline_median_ms"] = _median_timeline(result["timeline_ms"])
            arms[arm] = result
    floor_ms = round((SILERO_MIN_SILENCE + profile.llm_first_token + profile.tts_first_byte) * 1000)
    comparison: dict[str, Any] = {}
    a, b = arms.get("A", {}).get("median_ms"), arms.get("B", {}).get("median_ms")
    if a and b:
        comparison = {
            "b_over_a": round(b / a, 3),
            "b_minus_floor_ms": round(b - floor_ms, 1),
            "meets_target": b / a <= 0.6 and b - floor_ms <= 150,
        }
    return {
        "bench": "voice_latency",
        "definition": (
            "end of the caller's last voiced sample (as the microphone hands over its frame) -> "
            "first audible frame (RMS > 100) at the session's audio output; in-process, no WebRTC"
        ),
        "machine": machine_info(),
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "smoke": args.smoke,
        "profile": args.profile,
        "profile_figures": {
            k: (None if isinstance(v, float) and v == float("inf") else v)
            for k, v in vars(profile).items()
        },
        "floor_ms": floor_ms,
        "floor_parts_ms": {
            "silero_min_silence": SILERO_MIN_SILENCE * 1000,
            "llm_first_token": profile.llm_first_token * 1000,
            "tts_first_byte": profile.tts_first_byte * 1000,
        },
        "b_overrides": overrides,
        "settings_b": {"stt_mode": settings.stt_mode, "stt_model": settings.stt_model},
        "turns_per_arm": args.turns,
        "targets": {"b_over_a_max": 0.6, "b_minus_floor_max_ms": 150},
        "arms": arms,
        "comparison": comparison,
    }


def report(result: dict[str, Any]) -> None:
    print(
        f"voice-to-voice, profile {result['profile']}: caller's end of speech -> first audible "
        f"agent audio (floor computed {result['floor_ms']} ms)"
    )
    for arm, figures in result["arms"].items():
        print(
            f"  {arm}  median {figures['median_ms']} ms  p90 {figures['p90_ms']}  "
            f"max {figures['max_ms']}  n={figures['n']}  (missing {figures['missing_turns']})"
            f"  {figures['description']}"
        )
        line = ", ".join(f"{k} {v}" for k, v in figures["timeline_median_ms"].items())
        print(f"     timeline (median ms after end of speech): {line}")
    comparison = result["comparison"]
    if comparison:
        print(
            f"  B/A = {comparison['b_over_a']}, B - floor = {comparison['b_minus_floor_ms']} ms; "
            "target B <= 0.6 A and <= floor + 150 ms: "
            + ("met" if comparison["meets_target"] else "NOT met")
        )
    print(f"  load average at the end: {result['loadavg_end']} (2 shared cores: figures are noisy)")


def plot(result: dict[str, Any], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(result["arms"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.2), dpi=120)
    samples = [result["arms"][arm]["samples_ms"] for arm in arms]
    left.boxplot(samples, positions=range(1, len(arms) + 1), widths=0.45, showfliers=False)
    rng = np.random.default_rng(3)
    for i, values in enumerate(samples, start=1):
        left.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=12, alpha=0.7)
    left.axhline(result["floor_ms"], color="green", linestyle="--", label="floor (computed)")
    left.set_xticks(range(1, len(arms) + 1), arms)
    left.set_ylabel("ms, end of caller speech -> first agent audio")
    left.set_title(f"voice-to-voice, profile {result['profile']}")
    left.legend(loc="upper right")
    steps = [
        "stt_request",
        "stt_final",
        "turn_committed",
        "llm_request",
        "llm_first_token",
        "tts_first_byte",
        "first_audio_out",
    ]
    for index, arm in enumerate(arms):
        medians = result["arms"][arm]["timeline_median_ms"]
        xs = [medians.get(step) for step in steps]
        points = [(x, s) for x, s in zip(xs, steps, strict=True) if x is not None]
        right.plot(
            [x for x, _ in points],
            [steps.index(s) + index * 0.15 for _, s in points],
            marker="o",
            label=arm,
        )
    right.set_yticks(range(len(steps)), steps)
    right.invert_yaxis()
    right.set_xlabel("median ms after the end of the caller's speech")
    right.set_title("per-turn timeline")
    right.legend(loc="upper right")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    print(f"wrote {output}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=10, help="caller turns per arm")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="typical")
    parser.add_argument("--arms", default="ABC", help="which arms, in order (e.g. AB)")
    parser.add_argument("--lead", type=float, default=3.0, help="silence before the first turn")
    parser.add_argument("--gap", type=float, default=3.5, help="silence after each turn")
    parser.add_argument(
        "--b-env", action="append", default=[], metavar="KEY=VALUE", help="settings for B and C"
    )
    parser.add_argument("--plot", type=Path, default=None, help="draw a PNG here")
    parser.add_argument(
        "--replot", type=Path, default=None, metavar="JSON", help="only draw --plot from a JSON"
    )
    add_output_args(parser, __file__)
    args = parser.parse_args(argv)
    args.b_env = env_overrides(args.b_env, parser)
    if set(args.arms) - set(ARMS):
        parser.error(f"--arms takes letters of {''.join(ARMS)}")
    if args.smoke:
        args.turns, args.arms, args.lead = 1, "AB", 2.5
    if args.replot is not None:
        plot(json.loads(args.replot.read_text()), args.plot or Path("voice_latency.png"))
        return
    quiet_logging()
    result = asyncio.run(run(args))
    report(result)
    write_result(args.json, result)
    if args.plot is not None:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
