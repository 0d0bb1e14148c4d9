"""`python -m agent journal status|list|retry|export`: the operator's view of the journal in
AGENT_DATA_DIR (its calls here, its recordings in journal_recordings), safe while a worker runs
on the same directory.

Rule: looking never disturbs a live call and never creates a journal where there is none: every
read is one short WAL read (a writer, such as a live call's appends, is never blocked by it) and
only `retry` writes (a dead letter back to pending, then its delivery). `retry` sends through the
worker's own code, `agent.delivery.deliver` with the backend `make_backend` chooses, so a
retried transcript follows the same rules as any other: journal first, delete only once the
backend acknowledged it, a rejection kept as a dead letter. Only the settings a command uses are
read (no LiveKit or OpenAI keys). Human output goes to stdout; problems go to stderr as one line,
never a traceback. Transcript text is printed only by `export`, whose job it is.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import structlog

from agent.backend import make_backend
from agent.config import (
    JOURNAL_COMMAND,
    JOURNAL_RETRY_COMMAND,
    Settings,
    SettingsError,
    load_settings,
)
from agent.journal import (
    JOURNAL_FILENAME,
    CallState,
    Journal,
    JournalRow,
    RecordingRow,
    RowUnreadable,
)
from agent.ops import journal_calls as calls_part
from agent.ops import journal_recordings as recordings
from agent.ops.journal_text import (
    MAX_ID_CHARS,
    human_age,
    one_line,
    print_table,
)

EXIT_OK = 0
EXIT_FAILED = 1  # an unknown call or recording id, or a retry that did not end delivered
EXIT_CONFIG = 2  # AGENT_DATA_DIR missing or unusable, or a bad setting (argparse uses 2 too)

STATES: tuple[CallState, ...] = ("live", "pending", "dead")
# Outcomes after which the backend holds the transcript or recording.
DELIVERED = frozenset({"delivered", "already_delivered"})
# One retry: the line it printed and its outcome's status, or None when none was attempted.
Retry = Callable[[], Awaitable[tuple[str, str] | None]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agent journal",
        description="Inspect and repair the journal of transcripts and recordings in "
        "AGENT_DATA_DIR (safe while a worker runs on the same directory).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "status",
        help="counts of live, pending and dead calls and of recordings; the oldest pending ages",
    )
    listing = commands.add_parser(
        "list",
        help="one line per call (session, attempt, turns, ended reason, last error, age), "
        "then one per recording",
    )
    which = listing.add_mutually_exclusive_group()
    for state in STATES:
        which.add_argument(
            f"--{state}",
            dest="state",
            action="store_const",
            const=state,
            help=f"only {state} calls and recordings (live: still being written)",
        )
    retry = commands.add_parser(
        "retry",
        help="move dead letters back to pending and deliver them now, printing each outcome",
    )
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "call_id", nargs="?", help="the call, or the recording (CALL_ID#partN), to send again"
    )
    target.add_argument(
        "--all-dead",
        action="store_true",
        help="every dead letter, oldest first: the transcripts, then the recordings",
    )
    export = commands.add_parser(
        "export", help="print the exact JSON body that delivery would POST for a call"
    )
    export.add_argument("call_id")
    return parser


def main(argv: list[str]) -> int:
    """`argv`: the arguments after `journal`. Returns the exit code."""
    args = build_parser().parse_args(argv)
    command = JOURNAL_RETRY_COMMAND if args.command == "retry" else JOURNAL_COMMAND
    try:
        settings = load_settings(command)
    except SettingsError as error:
        problems = "; ".join(f"{name}: {why}" for name, why in error.problems.items())
        return _fail(f"configuration error: {problems}", EXIT_CONFIG)
    data_dir = settings.agent_data_dir
    if not data_dir.is_dir():
        return _fail(
            f"AGENT_DATA_DIR={data_dir} is not a directory: set AGENT_DATA_DIR to the worker's "
            "data directory",
            EXIT_CONFIG,
        )
    _configure_logging()
    path = data_dir / JOURNAL_FILENAME
    journal: Journal | None = None
    try:
        # No journal file yet (no call ever ran here): an empty journal, and none is created.
        if path.exists():
            journal = Journal(path)
    except (sqlite3.Error, OSError, RuntimeError) as error:
        cause = f"{type(error).__name__}: {error}"
        return _fail(f"cannot open the journal {path}: {cause}", EXIT_CONFIG)
    try:
        if args.command == "status":
            return _status(journal)
        if args.command == "list":
            return _list(journal, args.state)
        if args.command == "export":
            return _export(journal, path, args.call_id)
        return asyncio.run(_retry(journal, path, settings, args.call_id, args.all_dead))
    except sqlite3.Error as error:
        # A damaged file, or a lock held far beyond any worker's (the busy timeout ran out).
        return _fail(f"journal error at {path}: {type(error).__name__}: {error}", EXIT_FAILED)
    finally:
        if journal is not None:
            journal.close()


# ---------------------------------------------------------------------- commands


def _status(journal: Journal | None) -> int:
    # One query per table: each table's counts and age come from the same snapshot.
    rows = journal.rows() if journal is not None else []
    recorded = journal.recording_rows() if journal is not None else []
    counts = Counter(row.state for row in rows)
    now = time.time()
    ages = [row.age_seconds(now) for row in rows if row.state == "pending"]
    for state in STATES:
        print(f"{state}: {counts[state]}")
    if ages:
        oldest = max(ages)
        print(f"oldest pending: {human_age(oldest)} ({oldest:.0f} s)")
    else:
        print("oldest pending: none")
    for line in recordings.status_lines(recorded, now):
        print(line)
    return EXIT_OK


def _list(journal: Journal | None, state: CallState | None) -> int:
    rows = journal.rows(state) if journal is not None else []
    recorded: list[RecordingRow] = []
    if journal is not None:
        recorded = journal.recording_rows(recordings.FOR_CALL_STATE[state] if state else None)
    now = time.time()
    if rows:
        print_table(calls_part.HEADER, [calls_part.cells(row, now) for row in rows])
    else:
        print(f"no {state} calls" if state else "no calls")
    if recorded:  # after the calls, apart: a journal without recordings lists as it did
        print()
        print_table(recordings.HEADER, [recordings.cells(row, now) for row in recorded])
    return EXIT_OK


def _export(journal: Journal | None, path: Path, call_id: str) -> int:
    state = journal.state(call_id) if journal is not None else None
    if journal is None or state is None:
        return _unknown(call_id, path)
    # The stored final transcript; for a live row, the one recovery would rebuild from its
    # turns if the call's process died now (incomplete, `crashed`).
    try:
        payload = journal.current_payload(call_id)
    except RowUnreadable as error:
        return _fail(f"call {call_id!r}: no transcript can be built: {error.reason}", EXIT_FAILED)
    if payload is None:
        return _fail(f"call {call_id!r}: its stored transcript does not validate", EXIT_FAILED)
    sys.stdout.flush()
    # The very bytes HttpBackend.post_transcript sends, with no newline added.
    sys.stdout.buffer.write(payload.to_json_bytes())
    sys.stdout.buffer.flush()
    return EXIT_OK


async def _retry(
    journal: Journal | None,
    path: Path,
    settings: Settings,
    target_id: str | None,
    all_dead: bool,
) -> int:
    calls: list[JournalRow] = []
    recorded: list[RecordingRow] = []
    if journal is not None and all_dead:
        calls = [row for row in await asyncio.to_thread(journal.rows) if row.state == "dead"]
        recorded = await asyncio.to_thread(journal.recording_rows, "dead")
    elif journal is not None and recordings.is_recording_id(str(target_id)):
        recorded = await asyncio.to_thread(recordings.find, journal, str(target_id))
    elif journal is not None:
        calls = [row for row in await asyncio.to_thread(journal.rows) if row.call_id == target_id]
    if not calls and not recorded:
        if all_dead:
            print("no dead letters")
            return EXIT_OK
        return _unknown(str(target_id), path)
    assert journal is not None  # there are rows
    deadline = settings.delivery_deadline
    backend = make_backend(settings)
    # The transcripts first, as the worker delivers them, then the recordings.
    retries: list[Retry] = [
        partial(calls_part.retry_call, journal, backend, row, deadline) for row in calls
    ]
    retries += [
        partial(recordings.retry_recording, journal, backend, row, deadline=deadline)
        for row in recorded
    ]
    code = EXIT_OK
    try:
        for index, retry in enumerate(retries):
            result = await retry()
            if result is None:
                code = EXIT_FAILED
                continue
            line, status = result
            print(line)
            if status not in DELIVERED:
                code = EXIT_FAILED
            if status in ("deferred", "misconfigured") and index + 1 < len(retries):
                # The backend is down or misconfigured: each further try would only spend the
                # delivery deadline again (as recovery does, stop at the first).
                left = len(retries) - index - 1
                print(f"not attempted: {left} more (left as they were; retry later)")
                break
    finally:
        await backend.aclose()
    return code


# ---------------------------------------------------------------------- output


def _unknown(item_id: str, path: Path) -> int:
    kind = "recording" if recordings.is_recording_id(item_id) else "call"
    return _fail(f"no {kind} {one_line(item_id, MAX_ID_CHARS)!r} in {path}", EXIT_FAILED)


def _fail(message: str, code: int) -> int:
    print(f"journal: {message}", file=sys.stderr)
    return code


def _configure_logging() -> None:
    # The delivery and journal modules log through structlog; here their warnings and errors
    # go to stderr (stdout is the command's output, `export` writes a body there).
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=False,
    )
