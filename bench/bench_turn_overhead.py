"""Turn overhead: user end of speech (the user message's `stopped_speaking_at`) -> first agent
audio frame at the output, for this project's agent and for a bare AgentSession shaped like
LiveKit's starter, side by side in one run (design target: ratio <= 1.05 or <= 10 ms).

Rule: prints figures and writes JSON; never asserts. Both arms get the same zero-latency fake
providers, the same prewarmed Silero VAD, the same `turn_handling` (`turn_detection="vad"`,
VAD interruption, the default endpointing; checked at run time on the resolved options) and
the same caller: `tests/audio/hello_16k.wav` played in real time through a looping microphone
(lead silence, then WAV + gap, `--loops` times). The arms differ only in what the project adds:

- ours: the entrypoint's own `agent.call.session` functions with injected fakes: the journal row
  and lease task, `build_session` + the transcript wiring (`TurnRecorder` whose sink is
  `Journal.append_turn` in a temp dir, `TranscriptPublisher` on a capturing data sink) + the
  end-of-call handlers, then `PersonaAgent` (greets from `on_enter`) and the call's timers;
- bare: `AgentSession(stt, llm, tts, vad, turn_handling)` +
  `Agent(instructions="You are a helpful voice AI assistant.")`.

Sessions alternate arms (ABBA order), one session at a time. The greeting of ours plays during
the lead silence, before the caller speaks.

Then checkpoints (issue 15), on vs off in the same run (bench/_checkpoint_cost.py): the turn
handler's cost per assistant turn and a checkpoint's on-loop preparation at 10/50/200 turns, and
the loop's lag while checkpoints post to a loopback server (`--no-checkpoints` skips it).

    uv run python bench/bench_turn_overhead.py [--sessions 3] [--loops 2] [--json PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import psutil
from livekit.agents import Agent, AgentSession, vad
from livekit.agents.voice.turn import TurnHandlingOptions
from livekit.plugins import silero

from agent.config import Settings
from agent.journal import Journal
from bench import _checkpoint_cost
from bench._audio_in import LoopingWavInput, TurnTimer
from bench._common import (
    STARTER_INSTRUCTIONS,
    OtherLoad,
    add_output_args,
    bench_settings,
    fmt,
    machine_info,
    quiet_logging,
    summarize,
    write_result,
    zero_latency_providers,
)
from bench._project_call import close_session_fast, start_default_call
from tests.support.fakes import CaptureAudioOutput

Arm = Literal["ours", "bare"]
# What `agent.pipeline.build_session` passes when it has a VAD; compared with the project
# session's resolved options at run time, so a change there shows up as a warning.
TURN_HANDLING: TurnHandlingOptions = {"turn_detection": "vad", "interruption": {"mode": "vad"}}
SETTLE_SECONDS = 0.5


def _resolved_turn_handling(session: AgentSession[Any]) -> dict[str, Any]:
    options = dict(session._opts.turn_handling)
    options["turn_detection"] = repr(options.get("turn_detection"))
    return options


async def run_session(
    arm: Arm,
    index: int,
    *,
    settings: Settings,
    vad_model: vad.VAD,
    data_dir: Path,
    lead: float,
    gap: float,
    loops: int,
    speech_seconds: float | None,
) -> dict[str, Any]:
    providers = zero_latency_providers()
    mic = LoopingWavInput(lead_silence=lead, gap=gap, loops=loops, speech_seconds=speech_seconds)
    process = psutil.Process()
    cpu_before = sum(process.cpu_times()[:2])
    wall_before = time.monotonic()
    journal: Journal | None = None
    if arm == "ours":
        journal = Journal.in_dir(data_dir / f"{arm}-{index}")
        project = await start_default_call(
            index,
            str(index),
            settings=settings,
            vad_model=vad_model,
            journal=journal,
            providers=providers,
            audio_input=mic,
        )
        session: AgentSession[Any] = project.session
        output = project.output
    else:
        session = AgentSession(
            stt=providers.stt,
            llm=providers.llm,
            tts=providers.tts,
            vad=vad_model,
            turn_handling=TURN_HANDLING,
        )
        output = CaptureAudioOutput()
        session.input.audio = mic
        session.output.audio = output
        await session.start(agent=Agent(instructions=STARTER_INSTRUCTIONS))
    timer = TurnTimer(output)
    timer.attach(session)
    turn_handling = _resolved_turn_handling(session)
    try:
        await asyncio.sleep(mic.duration + SETTLE_SECONDS)
    finally:
        cpu = sum(process.cpu_times()[:2]) - cpu_before
        wall = time.monotonic() - wall_before
        if arm == "ours":
            await project.aclose()
        else:
            await close_session_fast(session)
            await output.aclose()
        if journal is not None:
            journal.close()
    latencies = timer.latencies()
    return {
        "arm": arm,
        "session": index,
        "latencies_s": latencies,
        "e2e_s": timer.e2e,
        "user_turns": len(timer.stopped),
        "expected_turns": loops,
        "cpu_s": cpu,
        "wall_s": wall,
        "turn_handling": turn_handling,
    }


def _bootstrap_median_diff(
    ours: list[float], bare: list[float], rounds: int = 2000
) -> dict[str, float]:
    """A 90 % bootstrap interval of median(ours) - median(bare), in ms."""
    if not ours or not bare:
        return {}
    rng = np.random.default_rng(7)
    a, b = np.asarray(ours), np.asarray(bare)
    diffs = [
        float(np.median(rng.choice(a, a.size)) - np.median(rng.choice(b, b.size)))
        for _ in range(rounds)
    ]
    return {
        "p5_ms": round(float(np.percentile(diffs, 5)) * 1000, 1),
        "p95_ms": round(float(np.percentile(diffs, 95)) * 1000, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = bench_settings()
    vad_model = silero.VAD.load()  # prewarmed once, shared by both arms
    sessions: list[dict[str, Any]] = []
    other = OtherLoad()
    order: list[Arm] = []
    for i in range(args.sessions):
        order.extend(["ours", "bare"] if i % 2 == 0 else ["bare", "ours"])
    with tempfile.TemporaryDirectory(prefix="bench-turn-") as tmp:
        for index, arm in enumerate(order, start=1):
            result = await run_session(
                arm,
                index,
                settings=settings,
                vad_model=vad_model,
                data_dir=Path(tmp),
                lead=args.lead,
                gap=args.gap,
                loops=args.loops,
                speech_seconds=args.speech_seconds,
            )
            sessions.append(result)
            got = ", ".join(f"{v * 1000:.0f}" for v in result["latencies_s"])
            print(f"  session {index:2d} {arm:4s}: turns {got} ms", flush=True)

    arms: dict[str, Any] = {}
    per_arm: dict[str, list[float]] = {}
    for arm in ("ours", "bare"):
        mine = [s for s in sessions if s["arm"] == arm]
        values = [v for s in mine for v in s["latencies_s"]]
        per_arm[arm] = values
        arms[arm] = {
            "latency_ms": summarize(values, scale=1000.0, digits=1),
            "library_e2e_ms": summarize([v for s in mine for v in s["e2e_s"]], scale=1000.0),
            "samples_ms": [round(v * 1000, 2) for v in values],
            "session_of_sample": [s["session"] for s in mine for _ in s["latencies_s"]],
            "missing_turns": sum(s["expected_turns"] - len(s["latencies_s"]) for s in mine),
            "cpu_s_per_s": round(
                sum(s["cpu_s"] for s in mine) / max(1e-9, sum(s["wall_s"] for s in mine)), 4
            ),
        }
    ours, bare = per_arm["ours"], per_arm["bare"]
    comparison: dict[str, Any] = {}
    if ours and bare:
        m_ours, m_bare = statistics.median(ours), statistics.median(bare)
        diff_ms = (m_ours - m_bare) * 1000
        ratio = m_ours / m_bare
        comparison = {
            "ratio": round(ratio, 4),
            "diff_ms": round(diff_ms, 1),
            "diff_ms_bootstrap_90": _bootstrap_median_diff(ours, bare),
            "meets_target": ratio <= 1.05 or diff_ms <= 10.0,
        }
    handling = {s["arm"]: s["turn_handling"] for s in sessions}
    other_cores = other.cores_busy()
    checkpoints = await _checkpoint_cost.measure(smoke=args.smoke) if args.checkpoints else None
    return {
        "bench": "turn_overhead",
        "definition": (
            "user ChatMessage.metrics['stopped_speaking_at'] -> first frame of the next agent "
            "audio segment at session.output.audio (CaptureAudioOutput)"
        ),
        "machine": machine_info(),
        "smoke": args.smoke,
        "audio": "tests/audio/hello_16k.wav, real time, 10 ms frames",
        "sessions_per_arm": args.sessions,
        "turns_per_session": args.loops,
        "turn_handling": handling.get("ours"),
        "turn_handling_equal": handling.get("ours") == handling.get("bare"),
        "targets": {"ratio": 1.05, "diff_ms": 10.0},
        "other_processes_cores_busy": other_cores,
        "arms": arms,
        "comparison": comparison,
        "sessions": [{k: v for k, v in s.items() if k != "turn_handling"} for s in sessions],
        "checkpoints": checkpoints,
    }


def report(result: dict[str, Any]) -> None:
    print(
        "turn overhead: user stopped_speaking_at -> first agent audio frame "
        f"({result['sessions_per_arm']} sessions x {result['turns_per_session']} turns per arm)"
    )
    for arm, label in (("ours", "ours (project)"), ("bare", "bare starter")):
        figures = result["arms"][arm]
        print(f"  {label:15s} {fmt(figures['latency_ms'])}")
        print(
            f"  {'':15s} library e2e_latency median {figures['library_e2e_ms'].get('median')} ms;"
            f" CPU {figures['cpu_s_per_s']:.3f} s/s; missing turns {figures['missing_turns']}"
        )
    comparison = result["comparison"]
    if comparison:
        interval = comparison["diff_ms_bootstrap_90"]
        print(
            f"  ours/bare = {comparison['ratio']:.3f}, ours - bare = {comparison['diff_ms']:+.1f} "
            f"ms (90% bootstrap {interval.get('p5_ms')}..{interval.get('p95_ms')} ms); "
            "target ratio <= 1.05 or <= 10 ms: "
            + ("met" if comparison["meets_target"] else "NOT met")
        )
    print(f"  other processes kept {result['other_processes_cores_busy']:.2f} cores busy meanwhile")
    if not result["turn_handling_equal"]:
        print("  WARNING: the arms' resolved turn_handling differ; see the JSON")
    if result.get("checkpoints"):
        _checkpoint_cost.report(result["checkpoints"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3, help="sessions per arm")
    parser.add_argument("--loops", type=int, default=2, help="caller turns per session")
    parser.add_argument("--lead", type=float, default=2.0, help="silence before the first turn")
    parser.add_argument("--gap", type=float, default=2.5, help="silence after each turn")
    parser.add_argument("--speech-seconds", type=float, default=None, help="trim the WAV")
    parser.add_argument(
        "--no-checkpoints",
        dest="checkpoints",
        action="store_false",
        help="skip the checkpoint cost figures",
    )
    add_output_args(parser, __file__)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sessions, args.loops, args.lead, args.speech_seconds = 1, 1, 1.5, 2.0
    quiet_logging()
    result = asyncio.run(run(args))
    report(result)
    write_result(args.json, result)


if __name__ == "__main__":
    main()
