"""A separate process for the journal's cross-process tests (run with `sys.executable`).

Rule: it talks to the test over stdin/stdout, one line per message, and never exits on its own
before stdin closes, because a process that exits gives up its journal rows (its owner is gone)
and the tests need to decide when that happens.

    journal_child.py live  DB CALL_ID N   open a call, append N turns, print "ready", wait forever
    journal_child.py claim DB             print "ready"; per "go T" line, wait until time T, claim
                                          one row at a time until none is left, print the claimed
                                          ids as JSON
    journal_child.py owner DB CALL_ID SESSION_ID URL KEY [LEASE_SECONDS]
                                          a live call driven line by line, one answer per line:
        open          open the call; prints how many turns an earlier run had journaled
        turns A B     append turns A..B; prints "ok"
        refresh       refresh the lease; prints "true" or "false"
        wall S        step this process's wall clock by S seconds, forward or backward (what
                      NTP does to every process at once); prints "ok"
        deliver N     deliver the final transcript (turns 1..N, complete, caller_left) through
                      agent.delivery.deliver and the real HttpBackend; prints the outcome status
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

# Run as a script: make the project importable without relying on the caller's environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psutil
import structlog
from pydantic import SecretStr

from agent.backend import HttpBackend
from agent.delivery import deliver
from agent.journal import LEASE_SECONDS, Journal
from agent.models import TranscriptPayload, Turn, utc_now

# stdout is the channel to the test: log lines go to stderr.
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def live(db: str, call_id: str, turns: int) -> None:
    journal = Journal(db)
    started = utc_now()
    journal.open_call(
        call_id, session_id=f"session-{call_id}", attempt_number=1, started_at=started
    )
    for seq in range(1, turns + 1):
        at = started + timedelta(seconds=seq)
        journal.append_turn(
            call_id,
            Turn(
                seq=seq,
                role="user" if seq % 2 else "assistant",
                text=f"turn {seq}: ünïcode and 'quotes'",
                started_at=at,
                ended_at=at + timedelta(milliseconds=500),
                interrupted=seq == turns,
            ),
        )
    print("ready", flush=True)
    while True:  # a live call: the test SIGKILLs us mid-call
        time.sleep(3600)


def claim(db: str) -> None:
    journal = Journal(db)
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, start_at = line.partition(" ")
        if command != "go":
            continue
        # Every racer starts at the same wall-clock instant, so the claims really collide.
        time.sleep(max(0.0, float(start_at) - time.time()))
        claimed: list[str] = []
        while batch := journal.claim_recoverable(limit=1):
            claimed.extend(item.call_id for item in batch)
        print(json.dumps(claimed), flush=True)
    # stdin closed: the test has every answer, so giving up our rows is harmless now.
    journal.close()


def owner_turn(started: datetime, seq: int) -> Turn:
    """Turn `seq` of an owner's call: the same text and times every time it is built."""
    at = started + timedelta(seconds=seq)
    return Turn(
        seq=seq,
        role="user" if seq % 2 else "assistant",
        text=f"turn {seq}",
        started_at=at,
        ended_at=at + timedelta(milliseconds=500),
    )


def step_wall_clock(seconds: float) -> None:
    """A wall-clock step as NTP makes it: `time.time` and the boot time the kernel reports
    (from which process creation times in wall-clock terms are derived) both move."""
    real_time = time.time
    time.time = lambda: real_time() + seconds
    pslinux = getattr(psutil, "_pslinux", None)
    if pslinux is not None:
        real_boot = pslinux.boot_time
        pslinux.boot_time = lambda: real_boot() + seconds


def owner(argv: list[str]) -> None:
    db, call_id, session_id, url, key = argv[:5]
    journal = Journal(db, lease_seconds=float(argv[5]) if len(argv) > 5 else LEASE_SECONDS)
    started = utc_now().replace(microsecond=0)
    print("ready", flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "open":
            earlier = journal.open_call(
                call_id, session_id=session_id, attempt_number=1, started_at=started
            )
            print(len(earlier) if isinstance(earlier, list) else 0, flush=True)
        elif command == "turns":
            for seq in range(int(args[0]), int(args[1]) + 1):
                journal.append_turn(call_id, owner_turn(started, seq))
            print("ok", flush=True)
        elif command == "refresh":
            print(json.dumps(journal.refresh_lease(call_id)), flush=True)
        elif command == "wall":
            step_wall_clock(float(args[0]))
            print("ok", flush=True)
        elif command == "deliver":
            turns = [owner_turn(started, seq) for seq in range(1, int(args[0]) + 1)]
            payload = TranscriptPayload(
                attempt_number=1,
                complete=True,
                ended_reason="caller_left",
                started_at=started,
                ended_at=started + timedelta(seconds=len(turns) + 1),
                turn_count=len(turns),
                turns=turns,
            )
            outcome = asyncio.run(_deliver(journal, url, key, call_id, session_id, payload))
            print(outcome, flush=True)
    journal.close()


async def _deliver(
    journal: Journal, url: str, key: str, call_id: str, session_id: str, payload: TranscriptPayload
) -> str:
    backend = HttpBackend(url, SecretStr(key))
    try:
        outcome = await deliver(journal, backend, call_id, session_id, payload, deadline=10)
    finally:
        await backend.aclose()
    return outcome.status


def main(argv: list[str]) -> None:
    if argv[0] == "live":
        live(argv[1], argv[2], int(argv[3]))
    elif argv[0] == "claim":
        claim(argv[1])
    elif argv[0] == "owner":
        owner(argv[1:])
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
