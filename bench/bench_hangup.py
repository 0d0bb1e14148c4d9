"""Hang-up as deployed: how soon a call ends once the caller hangs up (issue 14, part 3; DESIGN.md
"When a call ends": the close waits only for words in flight).

Rule: prints figures and writes JSON; never asserts. The stack is the e2e layer's, built with
the helpers of tests/e2e/test_worker_e2e.py (the same `Stack`, `start_call`, `metadata`): the
LiveKit stand-in and the callers (real `livekit` rtc SDK) in this process, the OpenAI and
backend stubs (zero latency) and the real worker (`python -m agent start`,
`NUM_IDLE_PROCESSES=1`) as processes of their own, all in a network namespace of its own
(WebRTC media skips loopback; tests/e2e/netns.py): started outside one, the script re-executes
itself through `unshare --net` (root, `unshare` and `ip` needed; otherwise it exits with
"not run: <reason>" and writes nothing).

One call after the other, each in a fresh room, the greeting heard first (nobody speaking):

- `--calls` calls hung up with the `agent.end_call` RPC: RPC answer -> `end` packet received on
  the `transcript` topic (the caller's clock, as tests/e2e/test_hangup_e2e.py measures it) and
  RPC answer -> the agent participant gone from the room (the stand-in's `left` event);
- `--calls` calls the caller simply leaves: caller gone -> agent gone (both the stand-in's
  `left` events). The stand-in would close the room only after 30 s here, so what ends the
  call is the worker.

Between calls the job's end is awaited (its JS_SUCCESS status), so that calls do not overlap. A
call that fails (no `end` within 10 s, an RPC error, ...) is listed in `failed_calls` with the
stand-in's events in its room, and the run goes on with the next.

    uv run python bench/bench_hangup.py [--calls 5] [--json PATH] [--keep-logs] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest
from livekit.protocol import agent as agentpb

from bench._common import add_output_args, machine_info, quiet_logging, summarize, write_result
from bench._e2e import run_in_test_netns, stop_stack, stopped
from tests.e2e.conftest import Callers
from tests.e2e.harness import ProcessGroup, free_port
from tests.e2e.standin import StandIn
from tests.e2e.stubs import start_backend_stub, start_openai_stub
from tests.e2e.test_hangup_e2e import AT_ONCE
from tests.e2e.test_worker_e2e import (
    HEARD,
    SERVICE_KEY,
    Call,
    Stack,
    metadata,
    start_call,
)

DESIGN_BOUND: Final = 1.0  # DESIGN.md / issue 14: `end` and the agent's leave within 1 s
DEPARTURE_TIMEOUT: Final = 30.0  # the stand-in closes an agents-only room only after this
MEASURES: Final = {
    "rpc_to_end_s": "RPC answer -> `end` received",
    "rpc_to_agent_left_s": "RPC answer -> agent left",
    "leave_to_agent_left_s": "caller left -> agent left",
}


def missing_end(stack: Stack, call: Call, room: str, agent: str, after: float) -> str:
    """Why the caller holds no `end`: whether the agent sent a data packet on the transcript
    topic after the answer (the stand-in's `data` event, with its receivers) and whether the
    caller dropped an `end` as coming from a non-agent (the agent already gone on its side)."""
    sent = [
        e.detail.get("to", "")
        for e in stack.standin.events_of("data", room=room)
        if e.identity == agent and e.at >= after and e.detail.get("topic") == "transcript"
    ]
    dropped = sum(1 for m in call.caller.rejected if m.payload.get("type") == "end")
    return (
        f"{room}: no `end` within 10 s; the agent sent {len(sent)} transcript packet(s) after "
        f"the answer (to: {sent}); the caller rejected {dropped} `end` as from a non-agent"
    )


def room_events(standin: StandIn, room: str) -> str:
    """The stand-in's events in `room` (seconds from the first), to tell what went wrong."""
    events = [e for e in standin.events if e.room == room and e.kind != "data"]
    t0 = events[0].at if events else 0.0
    return "; ".join(
        f"{e.at - t0:.2f} {e.kind} {e.identity} {e.detail.get('reason', '')}".rstrip()
        for e in events
    )


async def hang_up_call(
    stack: Stack, room: str, identity: str
) -> tuple[dict[str, float], str | None]:
    call = await start_call(stack, room, identity, metadata(participantIdentity=identity))
    agent_identity = stack.standin.jobs[call.job_id].participant_identity
    answer = await call.caller.end_call(timeout=10)
    answered, answered_mono = call.caller.now(), time.monotonic()
    if answer != "ok":
        raise RuntimeError(f"agent.end_call answered {answer!r}")
    measured: dict[str, float] = {}
    missing: str | None = None
    try:
        await call.caller.wait_for_message(
            lambda m: m["type"] == "end", timeout=10, what="the end message"
        )
        end = next(m for m in call.caller.transcript if m.payload["type"] == "end")
        measured["rpc_to_end_s"] = end.t - answered
    except TimeoutError:
        missing = missing_end(stack, call, room, agent_identity, answered_mono)
    left = await stack.standin.wait_for_event(
        "left", room=room, identity=agent_identity, timeout=10
    )
    measured["rpc_to_agent_left_s"] = left.at - answered_mono
    await call.caller.leave()
    await stack.standin.wait_for_job_status(call.job_id, agentpb.JobStatus.JS_SUCCESS, timeout=20)
    return measured, missing


async def leave_call(stack: Stack, room: str, identity: str) -> tuple[dict[str, float], str | None]:
    call = await start_call(stack, room, identity, metadata(participantIdentity=identity))
    agent_identity = stack.standin.jobs[call.job_id].participant_identity
    await call.caller.leave()
    gone = await stack.standin.wait_for_event("left", room=room, identity=identity, timeout=5)
    left = await stack.standin.wait_for_event(
        "left", room=room, identity=agent_identity, timeout=15
    )
    await stack.standin.wait_for_job_status(call.job_id, agentpb.JobStatus.JS_SUCCESS, timeout=20)
    return {"leave_to_agent_left_s": left.at - gone.at}, None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-hangup-"))
    processes = ProcessGroup(work / "logs")
    standin = StandIn(port=free_port(), departure_timeout=DEPARTURE_TIMEOUT)
    await standin.start()
    callers = Callers(standin)
    samples: dict[str, list[float]] = {name: [] for name in MEASURES}
    failed_calls: list[str] = []
    problem: str | None = None
    load_before = os.getloadavg()
    try:
        openai, backend = await asyncio.gather(
            start_openai_stub(processes, transcript=HEARD),
            start_backend_stub(processes, key=SERVICE_KEY),
        )
        stack = Stack(standin, processes, callers, openai, backend, work / "data")
        await stack.start_worker()
        for kind, one_call in (("hang-up", hang_up_call), ("leave", leave_call)):
            for i in range(args.calls):
                print(f"  {kind} call {i + 1}/{args.calls} ...", flush=True)
                room, identity = f"room-{kind}-{i}", f"caller-{kind}-{i}"
                try:
                    measured, missing = await one_call(stack, room, identity)
                except Exception as error:  # one call failed: say how, go on with the next
                    measured = {}
                    missing = f"{room}: {type(error).__name__}: {error}"
                    missing += f"; room events: {room_events(standin, room)}"
                    with contextlib.suppress(Exception):  # its caller leaves, its job ends
                        await callers.callers[-1].leave()
                        await asyncio.sleep(2.0)
                for name, value in measured.items():
                    samples[name].append(value)
                if missing is not None:
                    print(f"  {missing}", flush=True)
                    failed_calls.append(missing)
    except (Exception, pytest.fail.Exception) as error:  # report what we got and why it stopped
        problem = stopped(error, processes)
    finally:
        await callers.leave_all()
        await stop_stack(processes, standin, work, keep_logs=args.keep_logs)
    return {
        "bench": "hangup",
        "definition": (
            "per call, after the greeting with nobody speaking: agent.end_call RPC answer -> "
            "`end` packet received on the transcript topic (caller's clock) and -> the agent "
            "participant's `left` event at the stand-in; caller leaves -> agent `left` "
            "(stand-in events); real worker, WebRTC through the e2e stand-in"
        ),
        "machine": machine_info(),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "smoke": args.smoke,
        "calls_per_kind": args.calls,
        "bounds_s": {"design": DESIGN_BOUND, "e2e_test": AT_ONCE},
        "samples_s": {name: [round(v, 4) for v in values] for name, values in samples.items()},
        "summary_ms": {
            name: summarize(values, scale=1000.0, digits=1) for name, values in samples.items()
        },
        "failed_calls": failed_calls,  # no `end`, or an error (the call's figures are missing)
        "problem": problem,
    }


def report(result: dict[str, Any]) -> None:
    print("hang-up as deployed (python -m agent start, WebRTC via the stand-in)")
    print(f"{'measure':<28} {'n':>3} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}")
    for name, label in MEASURES.items():
        s = result["summary_ms"][name]
        if not s.get("n"):
            print(f"{label:<28} {0:>3} {'-':>10} {'-':>8} {'-':>8}")
            continue
        print(f"{label:<28} {s['n']:>3} {s['median']:>10.1f} {s['p90']:>8.1f} {s['max']:>8.1f}")
    print(
        f"  design bound {DESIGN_BOUND * 1000:.0f} ms, e2e test bound {AT_ONCE * 1000:.0f} ms; "
        f"load average before {result['loadavg_before']}, at the end {result['loadavg_end']}"
    )
    for failed in result["failed_calls"]:
        print(f"  failed call: {failed}")
    if result["problem"]:
        print(f"  stopped early: {result['problem']}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=5, help="calls per kind (hang-up, leave)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    add_output_args(parser, __file__)  # --json PATH, --smoke (one call of each kind)
    args = parser.parse_args(argv)
    if args.smoke:
        args.calls = 1
    run_in_test_netns(__file__, argv)  # WebRTC media skips loopback
    quiet_logging()
    result = asyncio.run(run(args))
    report(result)
    write_result(args.json, result)


if __name__ == "__main__":
    main()
