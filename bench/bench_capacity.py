"""Capacity: CPU-seconds per second of call and how many concurrent calls stay real-time, with
the real Silero VAD on real speech and zero-latency fake providers; plus the PSS of the real
worker's prewarmed job processes.

Rule: prints figures and writes JSON; never asserts.

Part 1, in this process: N = 1, 2, 4, 8, 16 concurrent calls of this project's agent (each set
up through `agent.worker.entrypoint`'s own `agent.call.session` functions: journal, session,
transcript wiring, `PersonaAgent`, with its own Silero VAD as a job process's prewarm gives
it). Each caller is a real-time looping microphone playing `tests/audio/hello_16k.wav` then a
gap, the callers' phases spread evenly over one period. After a warm-up, for `--seconds` it
measures process CPU time / wall time / N, and whether every call stayed real-time:
- no Silero "VAD inference is slower than realtime" warning,
- every microphone's p99 lateness (frame handed over after its schedule) <= 50 ms,
- every caller turn answered, with the median end-of-speech -> first-frame latency no more than
  100 ms above N = 1's.
One process has one event loop and one GIL, so the largest real-time N here is a floor for a
machine's capacity; in production each call has a job process of its own, so sessions per core
is 1 / (CPU-s per s of one call alone, N = 1). The harness's own microphone pacing (a 10 ms
timer per call) is included in the CPU figures.

Part 2, the real worker: `python -m agent start` in its own process group against a closed
loopback port (it keeps retrying to connect; nothing leaves the machine), waits for its
NUM_IDLE_PROCESSES prewarmed job processes ("process initialized"), reads their PSS with
psutil's `memory_full_info()`, then kills the group. Once with the project's environment as is,
once with LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE=0 for comparison.

    uv run python bench/bench_capacity.py [--levels 1,2,4,8,16] [--seconds 20] [--skip-worker]
                                          [--json PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from agent.config import Settings
from agent.journal import Journal
from agent.pipeline import load_vad
from bench._audio_in import LoopingWavInput, LoopLagProbe, TurnTimer
from bench._common import (
    REPO_ROOT,
    OtherLoad,
    RecordCounter,
    add_output_args,
    bench_settings,
    machine_info,
    quiet_logging,
    summarize,
    write_result,
    zero_latency_providers,
)
from bench._project_call import ProjectCall, start_default_call

GAP_SECONDS = 2.5
WARMUP_SECONDS = 2.0
LATE_P99_LIMIT_MS = 50.0
LATENCY_SLACK_MS = 100.0
SLOW_VAD_MESSAGE = "slower than realtime"
MB = 1024 * 1024


# --------------------------------------------------------------------------- part 1


async def run_level(n: int, seconds: float, settings: Settings, data_dir: Path) -> dict[str, Any]:
    slow_vad = RecordCounter(SLOW_VAD_MESSAGE)
    silero_logger = logging.getLogger("livekit.plugins.silero")
    silero_logger.addHandler(slow_vad)
    propagate, silero_logger.propagate = silero_logger.propagate, False  # counted, not printed
    process = psutil.Process()
    probe_mic = LoopingWavInput(gap=GAP_SECONDS)
    period = probe_mic.period
    loops = math.ceil((seconds + WARMUP_SECONDS + period + 2.0) / period) + 1
    calls: list[ProjectCall] = []
    mics: list[LoopingWavInput] = []
    timers: list[TurnTimer] = []
    journals: list[Journal] = []
    try:
        for i in range(n):
            vad_model = load_vad(bench_settings())  # one per call, as each job process prewarms
            mic = LoopingWavInput(lead_silence=1.0 + i * period / n, gap=GAP_SECONDS, loops=loops)
            journal = Journal.in_dir(data_dir / f"n{n}")
            journals.append(journal)
            project = await start_default_call(
                n * 100 + i,
                f"{n}-{i}",
                settings=settings,
                vad_model=vad_model,
                journal=journal,
                providers=zero_latency_providers(),
                audio_input=mic,
            )
            timer = TurnTimer(project.output)
            timer.attach(project.session)
            calls.append(project)
            mics.append(mic)
            timers.append(timer)
        await asyncio.sleep(WARMUP_SECONDS)
        window_start_wall = time.time()
        window_start = time.monotonic()
        for mic in mics:
            mic.measure_from = window_start
        cpu_before = sum(process.cpu_times()[:2])
        other = OtherLoad()
        probe = LoopLagProbe()
        probe.start()
        await asyncio.sleep(seconds)
        cpu = sum(process.cpu_times()[:2]) - cpu_before
        wall = time.monotonic() - window_start
        window_end_wall = time.time()
        other_cores = other.cores_busy()
        loop_lag = await probe.stop()
        # let the last turns of the window be answered before reading latencies
        await asyncio.sleep(1.5)
    finally:
        await asyncio.gather(*(c.aclose() for c in calls), return_exceptions=True)
        for journal in journals:
            journal.close()
        silero_logger.removeHandler(slow_vad)
        silero_logger.propagate = propagate

    per_call: list[dict[str, Any]] = []
    all_latencies: list[float] = []
    missing = 0
    for mic, timer in zip(mics, timers, strict=True):
        # turns whose speech ended inside the window (the end of speech is known from the WAV)
        ends = [t for t in mic.speech_end_times() if window_start_wall <= t <= window_end_wall]
        answered = [
            latency
            for stopped, latency in timer.pairs()
            if latency is not None and window_start_wall - 1.0 <= stopped <= window_end_wall + 1.0
        ]
        missing += max(0, len(ends) - len(answered))
        all_latencies.extend(answered)
        per_call.append(
            {
                "mic_lateness": mic.late_stats(),
                "turns_in_window": len(ends),
                "turns_answered": len(answered),
                "latency_ms": [round(v * 1000, 1) for v in answered],
            }
        )
    worst_p99 = max(c["mic_lateness"]["p99_ms"] for c in per_call)
    return {
        "n": n,
        "seconds": round(wall, 2),
        "cpu_s": round(cpu, 3),
        "cores_busy": round(cpu / wall, 3),
        "cpu_s_per_s_per_call": round(cpu / wall / n, 4),
        "other_processes_cores_busy": other_cores,
        "slow_vad_warnings": slow_vad.count_since(window_start_wall),
        "slow_vad_warnings_total": len(slow_vad.times),
        "worst_mic_p99_late_ms": worst_p99,
        "worst_mic_max_late_ms": max(c["mic_lateness"]["max_ms"] for c in per_call),
        "loop_lag": loop_lag,
        "turn_latency_ms": summarize(all_latencies, scale=1000.0, digits=1),
        "missing_turns": missing,
        "calls": per_call,
    }


def judge(levels: list[dict[str, Any]]) -> None:
    """Mark each level real-time or not, against N = 1's latency."""
    base = levels[0]["turn_latency_ms"].get("median") if levels else None
    for level in levels:
        median = level["turn_latency_ms"].get("median")
        reasons = []
        if level["slow_vad_warnings"]:
            reasons.append(f"{level['slow_vad_warnings']} slow-VAD warnings")
        if level["worst_mic_p99_late_ms"] > LATE_P99_LIMIT_MS:
            reasons.append(f"mic p99 lateness {level['worst_mic_p99_late_ms']} ms")
        if level["missing_turns"]:
            reasons.append(f"{level['missing_turns']} turns unanswered")
        if median is None:
            reasons.append("no turns")
        elif base is not None and median > base + LATENCY_SLACK_MS:
            reasons.append(f"latency median {median} ms vs {base} ms at N=1")
        level["realtime"] = not reasons
        level["not_realtime_because"] = reasons


# --------------------------------------------------------------------------- part 2


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connecting to it is refused


def _log_events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
    return events


def _memory(pid: int) -> dict[str, float]:
    info = psutil.Process(pid).memory_full_info()
    return {
        "pss_mb": round(info.pss / MB, 1),
        "uss_mb": round(info.uss / MB, 1),
        "rss_mb": round(info.rss / MB, 1),
    }


def measure_worker(
    idle: int, extra_env: dict[str, str], timeout: float = 90.0, settle: float = 3.0
) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    log_path = data_dir / "worker.log"
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "TZ")}
    env.update(
        {
            "LIVEKIT_URL": f"ws://127.0.0.1:{_closed_port()}",
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "secret_secret_secret_secret_secret_",
            "OPENAI_API_KEY": "sk-x",
            "AGENT_NAME": "bench",
            "NUM_IDLE_PROCESSES": str(idle),
            "PORT": "0",
            "LIVEKIT_MAX_RETRY": "20",
            "AGENT_DATA_DIR": str(data_dir / "data"),
            **extra_env,
        }
    )
    started = time.monotonic()
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "agent", "start"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as a whole below
        )
    try:
        ready: list[int] = []
        inference: list[int] = []
        while time.monotonic() - started < timeout:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}; see {log_path}")
            initialized = [
                e
                for e in _log_events(log_path)
                if e.get("message") == "process initialized" and "pid" in e
            ]
            # the inference process (the end-of-turn model, once per worker) reports too
            pids = {int(e["pid"]) for e in initialized if not e.get("inference")}
            inference = sorted({int(e["pid"]) for e in initialized if e.get("inference")})
            ready = sorted(p for p in pids if psutil.pid_exists(p))
            if len(ready) >= idle:
                break
            time.sleep(0.25)
        else:
            raise RuntimeError(f"only {len(ready)} of {idle} job processes ready; see {log_path}")
        ready_after = time.monotonic() - started
        time.sleep(settle)
        jobs = [{"pid": pid, **_memory(pid)} for pid in ready[:idle]]
        parents = {psutil.Process(pid).ppid() for pid in ready}
        forkservers = [{"pid": pid, **_memory(pid)} for pid in sorted(parents)]
        events = _log_events(log_path)
        return {
            "env": extra_env,
            "idle_processes": idle,
            "ready_after_s": round(ready_after, 1),
            "job_processes": jobs,
            "job_pss_mb": summarize([j["pss_mb"] for j in jobs], digits=1),
            "main": _memory(worker.pid),
            "inference_process": [{"pid": pid, **_memory(pid)} for pid in inference],
            "forkserver": forkservers,
            "init_errors": [
                str(e.get("exc_info", ""))[-160:]
                for e in events
                if e.get("message") == "error initializing process"
            ],
        }
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


# --------------------------------------------------------------------------- main


async def run_levels(levels: list[int], seconds: float) -> list[dict[str, Any]]:
    settings = bench_settings()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp:
        for n in levels:
            level = await run_level(n, seconds, settings, Path(tmp))
            print(
                f"  N={n:2d}: {level['cpu_s_per_s_per_call']:.3f} CPU-s/s per call "
                f"({level['cores_busy']:.2f} cores busy; others "
                f"{level['other_processes_cores_busy']:.2f}), mic p99 late "
                f"{level['worst_mic_p99_late_ms']:.1f} ms, loop lag p99 "
                f"{level['loop_lag']['p99_ms']:.1f} ms, slow-VAD {level['slow_vad_warnings']}, "
                f"turn latency median {level['turn_latency_ms'].get('median')} ms "
                f"(n={level['turn_latency_ms'].get('n')}, missing {level['missing_turns']})",
                flush=True,
            )
            results.append(level)
    return results


def report(result: dict[str, Any]) -> None:
    summary = result["summary"]
    print("capacity (one process, fake providers, real Silero VAD on real speech):")
    for level in result["levels"]:
        verdict = (
            "real-time"
            if level["realtime"]
            else "NOT real-time: " + "; ".join(level["not_realtime_because"])
        )
        print(
            f"  N={level['n']:2d}  {level['cpu_s_per_s_per_call']:.3f} CPU-s/s per call  "
            f"turn median {level['turn_latency_ms'].get('median')} ms  {verdict}"
        )
    print(
        f"  one call alone: {summary['cpu_s_per_s_per_call']} CPU-s/s -> "
        f"{summary['sessions_per_core']} sessions per core (goal >= 10; production runs one "
        "call per job process)"
    )
    print(
        f"  largest real-time N in one process: {summary['largest_realtime_n']} "
        f"({summary['cpu_s_per_s_per_call_at_largest']} CPU-s/s per call there -> "
        f"{summary['sessions_per_core_in_one_process']} per core when calls share a loop)"
    )
    for worker in result["worker"]:
        pss = worker["job_pss_mb"]
        label = ", ".join(f"{k}={v}" for k, v in worker["env"].items()) or "project env"
        print(
            f"  worker ({label}): {worker['idle_processes']} idle job processes, PSS median "
            f"{pss.get('median')} MB (min {pss.get('min')}, max {pss.get('max')}); main PSS "
            f"{worker['main']['pss_mb']} MB; init errors {len(worker['init_errors'])} "
            "(goal <= 150 MB per job process)"
        )
        for proc in worker.get("inference_process", []):
            print(f"    its inference process (end-of-turn model): PSS {proc['pss_mb']} MB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--levels", default="1,2,4,8,16", help="concurrent calls to try")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per level")
    parser.add_argument("--idle", type=int, default=2, help="NUM_IDLE_PROCESSES of the worker")
    parser.add_argument("--skip-worker", action="store_true", help="skip the worker PSS part")
    add_output_args(parser, __file__)
    args = parser.parse_args(argv)
    if args.smoke:
        args.levels, args.seconds, args.skip_worker = "1", 3.0, True
    levels = [int(v) for v in args.levels.split(",") if v.strip()]
    quiet_logging()
    machine = machine_info()
    print(f"capacity: levels {levels}, {args.seconds:.0f} s measured per level", flush=True)
    level_results = asyncio.run(run_levels(levels, args.seconds))
    judge(level_results)
    realtime = [lvl for lvl in level_results if lvl["realtime"]]
    best = max(realtime, key=lambda lvl: lvl["n"]) if realtime else None
    single = next((lvl for lvl in level_results if lvl["n"] == 1), level_results[0])
    # In production each call has a job process (and an event loop) of its own: the cost of
    # one call alone is the per-call figure; sharing one loop amortizes some of it.
    per_call = single["cpu_s_per_s_per_call"]
    per_call_shared = best["cpu_s_per_s_per_call"] if best else None
    workers: list[dict[str, Any]] = []
    if not args.skip_worker:
        for extra in ({}, {"LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE": "0"}):
            print(f"  worker PSS ({extra or 'project env'}) ...", flush=True)
            workers.append(measure_worker(args.idle, extra))
    result = {
        "bench": "capacity",
        "machine": machine,
        "smoke": args.smoke,
        "seconds_per_level": args.seconds,
        "criteria": {
            "slow_vad_warnings": 0,
            "mic_p99_late_ms_max": LATE_P99_LIMIT_MS,
            "turn_latency_median_slack_ms": LATENCY_SLACK_MS,
            "missing_turns": 0,
        },
        "levels": level_results,
        "summary": {
            "largest_realtime_n": best["n"] if best else 0,
            "cpu_s_per_s_per_call": per_call,
            "sessions_per_core": round(1.0 / per_call, 1) if per_call > 0 else None,
            "cpu_s_per_s_per_call_at_largest": per_call_shared,
            "sessions_per_core_in_one_process": (
                round(1.0 / per_call_shared, 1) if per_call_shared else None
            ),
            "median_cpu_s_per_s_per_call_all_levels": round(
                statistics.median(lvl["cpu_s_per_s_per_call"] for lvl in level_results), 4
            ),
            "p90_turn_latency_ms_at_largest": (
                best["turn_latency_ms"].get("p90") if best else None
            ),
        },
        "worker": workers,
        "goals": {"sessions_per_core": 10, "job_pss_mb": 150},
    }
    report(result)
    write_result(args.json, result)


if __name__ == "__main__":
    main()
