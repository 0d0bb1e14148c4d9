"""Cold start: T(d) = entrypoint start -> first greeting audio frame at the session's audio
output, in-process, zero-latency fake providers, every backend request delayed by d. Reports
(T(d) - T(0)) / d for a new call and for a resumed one (design target for a new call <= 1.25;
calls made one after the other would give about 2).

Rule: prints figures and writes JSON; never asserts. The timed path is the project's: job
metadata parsed, `make_backend` (the real `HttpBackend` against the loopback `BackendStub`, whose
answers to `get_scenario`, `create_session` and, when it is asked, `get_transcript` are each
delayed by d with `Fault(delay=d)`), the background recovery task (`recover_alongside`),
`start_in_parallel` (one gather of the scenario fetch, the session then its look-back for
earlier turns, and `FakeJobContext.connect()`), then the entrypoint's own `resume_from`,
`open_journal`, `build_conversation` (with injected zero-latency fakes and the prewarmed Silero
VAD) and `start_conversation`, with the persona's `on_enter` greeting (a resumed call: the resume
line), up to the first frame `CaptureAudioOutput` receives. `ctx.connect()` takes 0 s by default
(`--connect-delay-ms` to change it).

Two kinds of call: a new one (the session answer says `heldTurns: 0`, so no transcript is read
back: the start costs about the slower of the scenario and the session, d) and a resumed one
(the room's session already holds a checkpoint of two turns, written before the timing: the
look-back's GET needs the session's id, so it follows the session and the start costs about 2d).
The "sequential" arm is a control: the same path with the backend calls, the look-back and the
connect awaited one after the other instead of `start_in_parallel`. Kinds, arms and delays are
interleaved in a shuffled order in every round, after unmeasured warm-up rounds.

    uv run python bench/bench_cold_start.py [--runs 15] [--delay-ms 200] [--connect-delay-ms 0]
                                            [--json PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from livekit.agents import vad
from pydantic import SecretStr

from agent.backend import Backend, make_backend
from agent.call.recover import recover_alongside
from agent.call.resume import look_back
from agent.call.start import Started, open_session, parse_job_metadata, start_in_parallel
from agent.config import Settings
from agent.journal import Journal
from agent.models import JobMetadata, TranscriptPayload, Turn, utc_now
from agent.pipeline import load_vad
from bench._common import (
    OtherLoad,
    add_output_args,
    bench_settings,
    machine_info,
    quiet_logging,
    summarize,
    write_result,
    zero_latency_providers,
)
from bench._project_call import (
    BenchJobContext,
    ProjectCall,
    make_job_context,
    new_call,
    start_project_session,
)
from tests.support.backend_stub import BackendStub, Fault

Arm = Literal["gather", "sequential"]
ARMS: tuple[Arm, ...] = ("gather", "sequential")
Kind = Literal["new", "resumed"]
KINDS: tuple[Kind, ...] = ("new", "resumed")
STUB_KEY = "bench-internal-service-key"
FIRST_FRAME_TIMEOUT = 15.0


async def sequential(
    ctx: BenchJobContext, backend: Backend, metadata: JobMetadata, journal: Journal
) -> Started:
    """The control: what `start_in_parallel` must not be."""
    scenario = await backend.get_scenario(metadata.scenario_id)
    record = await open_session(backend, metadata, room_sid=ctx.job.id, room_name=ctx.job.room.name)
    earlier = await look_back(backend, journal, record)
    await ctx.connect()
    return Started(scenario, record, earlier)


async def hold_a_checkpoint(
    settings: Settings, ctx: BenchJobContext, metadata: JobMetadata
) -> None:
    """Before the timing: the room's session, and a checkpoint of two turns of its call (a
    container died mid-call; this start is the re-dispatched job)."""
    backend = make_backend(settings)
    try:
        session = await open_session(
            backend, metadata, room_sid=ctx.job.id, room_name=ctx.job.room.name
        )
        at = utc_now()
        turns = [
            Turn(seq=1, role="assistant", text="Hello?", started_at=at, ended_at=at),
            Turn(seq=2, role="user", text="Hi, it's me.", started_at=at, ended_at=at),
        ]
        checkpoint = TranscriptPayload(
            attempt_number=session.attempt_number,
            complete=False,
            ended_reason="in_progress",
            started_at=at,
            ended_at=at,
            turn_count=2,
            turns=turns,
        )
        await backend.post_transcript(session.id, checkpoint, deadline=5.0)
    finally:
        await backend.aclose()


async def cold_start(
    kind: Kind,
    arm: Arm,
    delay: float,
    index: int,
    *,
    stub: BackendStub,
    settings: Settings,
    vad_model: vad.VAD,
    data_dir: Path,
    connect_delay: float,
) -> float:
    """One job start; seconds from the entrypoint's start to the first greeting frame."""
    metadata_in = JobMetadata(scenario_id="default", user_id=f"user-{index}")
    ctx = make_job_context(index, metadata_in, connect_delay=connect_delay)
    if kind == "resumed":
        await hold_a_checkpoint(settings, ctx, metadata_in)
        stub.queue("get_transcript", Fault(delay=delay))  # asked only when turns are held
    stub.queue("get_scenario", Fault(delay=delay))
    stub.queue("create_session", Fault(delay=delay))
    # A fresh journal per start, as a fresh deployment has: recovery finds nothing to do.
    journal = Journal.in_dir(data_dir / f"job-{index}")
    providers = zero_latency_providers()
    project: ProjectCall | None = None
    started = time.time()
    # ---- from here on: what `agent.worker.entrypoint` does, minus the room
    metadata = parse_job_metadata(ctx.job.metadata, settings)
    backend = make_backend(settings)
    call = new_call(ctx, metadata, backend=backend, journal=journal)
    recover_alongside(call, settings)
    try:
        if arm == "gather":
            begun = await start_in_parallel(
                ctx.as_job_context(), backend, metadata, journal=journal
            )
        else:
            begun = await sequential(ctx, backend, metadata, journal)
        call.resume_from(begun.earlier)
        if (begun.earlier is not None) != (kind == "resumed"):
            raise RuntimeError(f"a {kind} call's look-back found {begun.earlier!r}")
        project = await start_project_session(
            ctx,
            call,
            scenario=begun.scenario,
            session_record=begun.session,
            settings=settings,
            vad_model=vad_model,
            providers=providers,
            realtime_output=False,
        )
        await asyncio.wait_for(project.output.first_frame.wait(), FIRST_FRAME_TIMEOUT)
        first = project.output.first_frame_at
        assert first is not None
        return first - started
    finally:
        if project is not None:
            await project.aclose()
        else:
            await call.cancel_tasks()
        await backend.aclose()
        journal.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    delay = args.delay_ms / 1000.0
    connect_delay = args.connect_delay_ms / 1000.0
    vad_model = load_vad(bench_settings())  # prewarm: once per process, outside the timing
    samples: dict[tuple[Kind, Arm, float], list[float]] = {
        (k, a, d): [] for k in KINDS for a in ARMS for d in (0.0, delay)
    }
    other = OtherLoad()
    order_rng = random.Random(20251122)
    index = 0
    starts = dict.fromkeys(KINDS, 0)
    with tempfile.TemporaryDirectory(prefix="bench-cold-start-") as tmp:
        async with BackendStub(STUB_KEY) as stub:
            settings = bench_settings(BACKEND_URL=stub.url, INTERNAL_SERVICE_KEY=STUB_KEY)
            assert settings.internal_service_key == SecretStr(STUB_KEY)
            for round_ in range(args.warmup + args.runs):
                combos = list(samples)
                order_rng.shuffle(combos)
                for kind, arm, d in combos:
                    index += 1
                    starts[kind] += 1
                    elapsed = await cold_start(
                        kind,
                        arm,
                        d,
                        index,
                        stub=stub,
                        settings=settings,
                        vad_model=vad_model,
                        data_dir=Path(tmp),
                        connect_delay=connect_delay,
                    )
                    if round_ >= args.warmup:
                        samples[(kind, arm, d)].append(elapsed)
            requests = len(stub.requests)
            read_backs = len(stub.requests_for("get_transcript"))

    calls: dict[str, Any] = {}
    for kind in KINDS:
        arms: dict[str, Any] = {}
        for arm in ARMS:
            t0, td = samples[(kind, arm, 0.0)], samples[(kind, arm, delay)]
            paired = [(b - a) / delay for a, b in zip(t0, td, strict=True)]
            arms[arm] = {
                "t0_ms": summarize(t0, scale=1000.0),
                "td_ms": summarize(td, scale=1000.0),
                "ratio_of_medians": round(
                    (statistics.median(td) - statistics.median(t0)) / delay, 3
                ),
                "ratio_per_round": summarize(paired, digits=3),
                "t0_samples_ms": [round(v * 1000, 2) for v in t0],
                "td_samples_ms": [round(v * 1000, 2) for v in td],
            }
        calls[kind] = arms
    return {
        "bench": "cold_start",
        "definition": (
            "T(d) = entrypoint start -> first greeting audio frame at session.output.audio; "
            "ratio = (T(d) - T(0)) / d"
        ),
        "machine": machine_info(),
        "smoke": args.smoke,
        "delay_ms": args.delay_ms,
        "connect_delay_ms": args.connect_delay_ms,
        "delayed": ["GET scenario", "POST session", "GET transcript (only when asked)"],
        "runs": args.runs,
        "warmup_rounds": args.warmup,
        "target_ratio": 1.25,
        "backend_requests": requests,
        # every start of each kind; a new call reads nothing back, a resumed one once
        "starts_per_kind": starts,
        "transcript_read_backs": read_backs,
        "other_processes_cores_busy": other.cores_busy(),
        "calls": calls,
    }


def report(result: dict[str, Any]) -> None:
    d = result["delay_ms"]
    print(
        f"cold start: entrypoint start -> first greeting frame; d = {d} ms on each backend "
        f"request (GET scenario, POST session, GET transcript when asked), ctx.connect() "
        f"{result['connect_delay_ms']} ms; {result['runs']} runs per cell, interleaved, after "
        f"{result['warmup_rounds']} warm-up rounds"
    )
    for kind, arms in result["calls"].items():
        print(f"  {kind} call")
        for arm, figures in arms.items():
            label = "gather (project)" if arm == "gather" else "sequential (control)"
            per_round = figures["ratio_per_round"]
            print(
                f"    {label:22s} T(0) median {figures['t0_ms']['median']:.1f} ms, T(d) median "
                f"{figures['td_ms']['median']:.1f} ms, (T(d) - T(0)) / d = "
                f"{figures['ratio_of_medians']:.2f} (per round: median {per_round['median']:.2f}"
                f", p10 {per_round['p10']:.2f}, p90 {per_round['p90']:.2f})"
            )
    print(
        f"  held transcripts read back: {result['transcript_read_backs']} in "
        f"{result['starts_per_kind']['resumed']} resumed and "
        f"{result['starts_per_kind']['new']} new starts (a new call reads nothing back)"
    )
    print(
        f"  target for a new call: <= {result['target_ratio']} (sequential would be ~2); a "
        "resumed call's look-back follows its session (~2 gathered, ~3 sequential)"
    )
    print(f"  other processes kept {result['other_processes_cores_busy']:.2f} cores busy meanwhile")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="measured runs per cell")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first")
    parser.add_argument("--delay-ms", type=float, default=200.0, help="d, per backend call")
    parser.add_argument("--connect-delay-ms", type=float, default=0.0, help="ctx.connect() time")
    add_output_args(parser, __file__)
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.warmup, args.delay_ms = 2, 1, 50.0
    quiet_logging()
    result = asyncio.run(run(args))
    report(result)
    write_result(args.json, result)


if __name__ == "__main__":
    main()
