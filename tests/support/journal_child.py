"""A separate process for the journal's cross-process tests (run with `sys.executable`).

Rule: it talks to the test over stdin/stdout, one line per message, and never exits on its own
before stdin closes, because a process that exits gives up its journal rows (its owner is gone)
and the tests need to decide when that happens.

    journal_child.py live  DB CALL_ID N   open a call, append N turns, print "ready", wait forever
    journal_child.py claim DB             print "ready"; per "go T" line, wait until time T, claim
                                          one row at a time until none is left, print the claimed
                                          ids as JSON
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

# Run as a script: make the project importable without relying on the caller's environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import structlog

from agent.journal import Journal
from agent.models import Turn, utc_now

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


def main(argv: list[str]) -> None:
    if argv[0] == "live":
        live(argv[1], argv[2], int(argv[3]))
    elif argv[0] == "claim":
        claim(argv[1])
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
