"""Delivery costs: the journal's cost per appended turn, and a 500-turn transcript delivered on
loopback.

Rule: prints figures (and writes JSON with --json); never asserts. The journal runs as in
production: WAL, synchronous=NORMAL, in a temporary directory. Delivery goes through the real
`agent.delivery.deliver` (journal first, post, delete) with the real `HttpBackend` against the
loopback `tests.support.backend_stub.BackendStub`, which validates every body and key.

    uv run python bench/bench_journal.py [--turns N] [--transcript-turns N] [--rounds N]
                                         [--json PATH] [--smoke]

The JSON goes to bench/results/bench_journal.json unless --json says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

# Run as a script from anywhere: make the project importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog
from pydantic import SecretStr

from agent.backend import HttpBackend
from agent.delivery import deliver
from agent.journal import APPENDS_PER_FORCED_CHECKPOINT, Journal
from agent.models import Session, TranscriptPayload, Turn, utc_now
from bench._common import OtherLoad, add_output_args, machine_info, write_result
from tests.support.backend_stub import BackendStub

STUB_KEY = "bench-internal-key"
# Spoken English with the odd accented word and emoji (the journal stores UTF-8 as is).
SENTENCE = (
    "I just feel like nobody listens when I try to explain what happened at work today and "
    "honestly it has been building up for weeks now so I do not know where to start maybe "
    "with the phone call from my sister or the thing with the landlord — ça m'énerve, "
    "naïve résumé façade 🙂 okay"
)
WORDS = tuple(SENTENCE.split(" "))


def realistic_text(rng: random.Random) -> str:
    """Spoken turns: mostly a sentence or two, sometimes a long monologue."""
    length = int(rng.lognormvariate(3.0, 0.8)) + 1  # median about 20 words, long tail
    return " ".join(rng.choice(WORDS) for _ in range(min(length, 400)))


def make_turns(count: int, seed: int = 7) -> list[Turn]:
    rng = random.Random(seed)
    at = utc_now()
    turns = []
    for seq in range(1, count + 1):
        started = at + timedelta(seconds=seq * 4)
        turns.append(
            Turn(
                seq=seq,
                role="user" if seq % 2 else "assistant",
                text=realistic_text(rng),
                started_at=started,
                ended_at=started + timedelta(seconds=3),
                interrupted=rng.random() < 0.05,
            )
        )
    return turns


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(samples_ns: list[int]) -> dict[str, float]:
    ms = [s / 1e6 for s in samples_ns]
    return {
        "median_ms": round(statistics.median(ms), 4),
        "min_ms": round(min(ms), 4),
        "p10_ms": round(percentile(ms, 0.10), 4),
        "p90_ms": round(percentile(ms, 0.90), 4),
        "p99_ms": round(percentile(ms, 0.99), 4),
        "max_ms": round(max(ms), 4),
        "mean_ms": round(statistics.fmean(ms), 4),
        "over_1ms": sum(1 for value in ms if value > 1.0),
    }


def bench_append(turns: int, data_dir: Path) -> dict[str, Any]:
    items = make_turns(turns)
    with Journal.in_dir(data_dir) as journal:
        journal.open_call("bench-call", session_id="s", attempt_number=1, started_at=utc_now())
        samples: list[int] = []
        for turn in items:
            start = time.perf_counter_ns()
            journal.append_turn("bench-call", turn)
            samples.append(time.perf_counter_ns() - start)
        lease: list[int] = []
        for _ in range(min(200, turns)):
            start = time.perf_counter_ns()
            journal.refresh_lease("bench-call")
            lease.append(time.perf_counter_ns() - start)
        mode = journal.journal_mode()
    return {
        "turns": turns,
        "mean_text_chars": round(statistics.fmean(len(t.text) for t in items), 1),
        "journal_mode": mode,
        "synchronous": "NORMAL",
        "append_turn": summary_ms(samples),
        "refresh_lease": summary_ms(lease),
    }


async def bench_delivery(transcript_turns: int, rounds: int, data_dir: Path) -> dict[str, Any]:
    turns = make_turns(transcript_turns, seed=11)
    at = turns[0].started_at
    payload = TranscriptPayload(
        attempt_number=1,
        complete=True,
        ended_reason="caller_left",
        started_at=at,
        ended_at=turns[-1].ended_at,
        turn_count=len(turns),
        turns=turns,
    )
    body_bytes = len(payload.to_json_bytes())
    totals: list[int] = []
    with Journal.in_dir(data_dir) as journal:
        async with (
            BackendStub(STUB_KEY) as stub,
            HttpBackend(stub.url, SecretStr(STUB_KEY), timeout=10.0) as backend,
        ):
            # Round 0 warms the connection pool and the code paths; it is not counted.
            for index in range(rounds + 1):
                session_id = f"bench-session-{index}"
                stub.add_session(
                    Session(id=session_id, user_id="u", scenario_id="default", attempt_number=1)
                )
                call_id = f"bench-job-{index}"
                journal.open_call(call_id, session_id=session_id, attempt_number=1, started_at=at)
                for turn in turns:
                    journal.append_turn(call_id, turn)
                start = time.perf_counter_ns()
                outcome = await deliver(journal, backend, call_id, session_id, payload, deadline=30)
                elapsed = time.perf_counter_ns() - start
                if outcome.status != "delivered":
                    raise SystemExit(f"bench: delivery failed: {outcome}")
                if index:
                    totals.append(elapsed)
            accepted = sum(len(v) for v in stub.transcripts.values())
    return {
        "transcript_turns": transcript_turns,
        "body_bytes": body_bytes,
        "rounds": rounds,
        "backend": "HttpBackend -> tests.support.backend_stub.BackendStub on 127.0.0.1",
        "accepted_by_stub": accepted,
        "deliver": summary_ms(totals),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=2000, help="turns appended (default 2000)")
    parser.add_argument("--transcript-turns", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10, help="timed deliveries (default 10)")
    add_output_args(parser, __file__)
    args = parser.parse_args(argv)
    if args.smoke:
        args.turns, args.transcript_turns, args.rounds = 50, 20, 2

    # Quiet: the delivery path logs each delivery at info level.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    other = OtherLoad()
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        append = bench_append(args.turns, Path(tmp) / "append")
        delivery = asyncio.run(
            bench_delivery(args.transcript_turns, args.rounds, Path(tmp) / "deliver")
        )
    result = {
        "bench": "journal",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "machine": machine_info(),
        "other_processes_cores_busy": other.cores_busy(),
        "smoke": args.smoke,
        "journal": append,
        "delivery": delivery,
    }

    a, d = append["append_turn"], delivery["deliver"]
    print(f"journal: {append['turns']} turns appended (mean {append['mean_text_chars']} chars),")
    print(f"  WAL + synchronous=NORMAL, SQLite {sqlite3.sqlite_version}")
    print(
        f"  append_turn   median {a['median_ms']:.3f} ms  p10 {a['p10_ms']:.3f} ms  "
        f"p90 {a['p90_ms']:.3f} ms  "
        f"p99 {a['p99_ms']:.3f} ms  max {a['max_ms']:.3f} ms   (target: median <= 2 ms)"
    )
    print(
        f"  ({a['over_1ms']} of {append['turns']} appends over 1 ms; append_turn never "
        f"checkpoints except as a safety net every {APPENDS_PER_FORCED_CHECKPOINT} appends "
        f"without a lease refresh, which fsyncs)"
    )
    lease = append["refresh_lease"]
    print(
        f"  refresh_lease median {lease['median_ms']:.3f} ms  max {lease['max_ms']:.3f} ms "
        f"(includes the WAL checkpoint; runs in a thread every 10 s)"
    )
    print(
        f"delivery: {delivery['transcript_turns']}-turn transcript ({delivery['body_bytes']} "
        f"bytes) via {delivery['backend']}"
    )
    print(
        f"  deliver (finish_call + POST + mark_delivered) over {delivery['rounds']} rounds: "
        f"median {d['median_ms']:.1f} ms  min {d['min_ms']:.1f} ms  p90 {d['p90_ms']:.1f} ms  "
        f"max {d['max_ms']:.1f} ms"
    )
    write_result(args.json, result)


if __name__ == "__main__":
    main()
