"""`python -m agent journal` and recordings: `status`, `list` and `retry` cover the journal's
recordings as they cover its calls. Run as a real subprocess (another process than the one that
journaled the rows, as an operator's command is) against journals written with the Journal API
as the worker writes them, each recording with a small file at its row's path.

Expected values are written here by hand from the issue ("Recordings for replay") and the
transcripts' rules, never produced by the command under test."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from agent.backend import LocalBackend
from agent.journal import Journal
from agent.models import Session, SessionCreate
from tests.ops.test_journal_cli import (
    JOURNAL_FILE,
    STUB_KEY,
    add_dead,
    add_live,
    add_pending,
    run_journal,
    run_journal_async,
    text,
)
from tests.support.backend_stub import BackendStub, Fault

# Ogg's capture pattern first (the backend checks it), then words that must never be printed.
AUDIO = b"OggS\x00\x02" + b"private audio bytes " * 20
SPOOL = "recording-spool"  # the issue: AGENT_DATA_DIR/recording-spool/
SESSION = "session-rec"


def add_recording(
    data_dir: Path,
    journal: Journal,
    call_id: str,
    state: Literal["recording", "pending", "dead", "held", "delivered"],
    *,
    session_id: str = SESSION,
    attempt: int = 1,
    part: int = 1,
    started_at: datetime | None = None,
    reason: str = "422: attemptNumber: not the session's attempt",
    body: bytes = AUDIO,
) -> str:
    """A recording's row as the worker leaves it in `state` (`held`: sealed, its upload still
    running in this live process), its file written after the row, as the recorder does."""
    path = data_dir / SPOOL / f"spoolfile-{call_id}-{part}.ogg"
    rec_id = journal.open_recording(
        call_id,
        session_id=session_id,
        attempt_number=attempt,
        part=part,
        path=path,
        started_at=started_at or datetime.now(UTC),
    )
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(body)
    if state == "recording":
        return rec_id  # its call still runs in this (live) process
    sealed = journal.seal_recording(rec_id, size=len(body), sha256=hashlib.sha256(body).hexdigest())
    assert sealed is not None
    if state == "pending":
        assert journal.release_recording(rec_id)  # a deferred upload, as the worker leaves it
    elif state == "dead":
        assert journal.mark_recording_dead(rec_id, reason)
    elif state == "delivered":
        assert journal.mark_recording_delivered(rec_id)
        path.unlink()
    return rec_id


def three_recordings(data_dir: Path, pending_started: datetime) -> None:
    with Journal(data_dir / JOURNAL_FILE) as journal:
        add_recording(data_dir, journal, "call-live", "recording", session_id="session-live")
        add_recording(
            data_dir,
            journal,
            "call-pending",
            "pending",
            session_id="session-pending",
            attempt=2,
            part=2,
            started_at=pending_started,
        )
        add_recording(
            data_dir,
            journal,
            "call-dead",
            "dead",
            session_id="session-dead",
            attempt=3,
            reason="422: body: not an Ogg stream\nsecond line of the reason",
        )


def recording_lines(out: str) -> dict[str, list[str]]:
    """`list`'s recordings table (after the calls and a blank line), by recording id."""
    _, _, table = out.partition("\n\n")
    lines = table.splitlines()
    assert lines and lines[0].split()[:2] == ["STATE", "RECORDING"], out
    return {line.split()[1]: line.split() for line in lines[1:]}


def rows_by_id(data_dir: Path) -> dict[str, str]:
    with Journal(data_dir / JOURNAL_FILE) as journal:
        rows = journal.recording_rows() + journal.recording_rows("delivered")
    return {row.recording_id: row.state for row in rows}


def stub_session(stub: BackendStub, session_id: str = SESSION, attempt: int = 1) -> None:
    stub.add_session(
        Session(id=session_id, user_id="user-1", scenario_id="default", attempt_number=attempt)
    )


def stub_env(stub: BackendStub, **extra: str) -> dict[str, str]:
    return {"BACKEND_URL": stub.url, "INTERNAL_SERVICE_KEY": STUB_KEY, **extra}


# ---------------------------------------------------------------------- status


def test_status_counts_recordings_per_state_and_the_oldest_pending_recordings_age(
    tmp_path: Path,
) -> None:
    # The pending recording started three hours ago: the age counts from its start.
    three_recordings(tmp_path, datetime.now(UTC) - timedelta(hours=3))
    result = run_journal(tmp_path, "status")
    out, err = text(result)
    assert result.returncode == 0, err
    lines = out.splitlines()
    # the calls' lines as before (no call here), then the recordings'
    assert lines[:4] == ["live: 0", "pending: 0", "dead: 0", "oldest pending: none"]
    assert lines[4:7] == ["recordings recording: 1", "recordings pending: 1", "recordings dead: 1"]
    oldest = lines[7]
    assert oldest.startswith("recordings oldest pending: 3h "), oldest
    seconds = int(oldest.rsplit("(", 1)[1].removesuffix(" s)"))
    assert 3 * 3600 <= seconds < 3 * 3600 + 600, oldest


def test_status_without_recordings_prints_zero_recording_counts(tmp_path: Path) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        add_dead(journal)
    result = run_journal(tmp_path, "status")
    out, err = text(result)
    assert result.returncode == 0, err
    lines = out.splitlines()
    assert "dead: 1" in lines
    for line in ("recordings recording: 0", "recordings pending: 0", "recordings dead: 0"):
        assert line in lines
    assert "recordings oldest pending: none" in lines


# ---------------------------------------------------------------------- list


def test_list_shows_one_line_per_recording_after_the_calls(tmp_path: Path) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        add_live(journal)
    three_recordings(tmp_path, datetime.now(UTC) - timedelta(minutes=5))
    result = run_journal(tmp_path, "list")
    out, err = text(result)
    assert result.returncode == 0, err
    calls, _, _ = out.partition("\n\n")
    assert [line.split()[1] for line in calls.splitlines()[1:]] == ["call-live"]
    rows = recording_lines(out)
    assert set(rows) == {"call-live#part1", "call-pending#part2", "call-dead#part1"}
    size = str(len(AUDIO))
    # state, recording, session, attempt, part, bytes (- until sealed), tries, age ...
    live = ["recording", "call-live#part1", "session-live", "1", "1", "-", "0"]
    assert rows["call-live#part1"][:7] == live
    assert rows["call-pending#part2"][:8] == [
        "pending",
        "call-pending#part2",
        "session-pending",
        "2",
        "2",
        size,
        "0",
        "5m",
    ]
    dead = ["dead", "call-dead#part1", "session-dead", "3", "1", size, "0"]
    assert rows["call-dead#part1"][:7] == dead
    dead_line = next(line for line in out.splitlines() if "call-dead#part1" in line)
    # the last error, on one line
    assert dead_line.endswith("422: body: not an Ogg stream second line of the reason"), dead_line


def test_list_prints_a_dead_recordings_reason_on_one_capped_line(tmp_path: Path) -> None:
    reason = "422: part: " + "x" * 200
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        add_recording(tmp_path, journal, "call-a", "dead", reason="422: body\nnot Ogg\tat all")
        add_recording(tmp_path, journal, "call-b", "dead", reason=reason)
    result = run_journal(tmp_path, "list")
    out, err = text(result)
    assert result.returncode == 0, err
    line_a = next(line for line in out.splitlines() if "call-a#part1" in line)
    assert line_a.endswith("422: body not Ogg at all"), line_a
    line_b = next(line for line in out.splitlines() if "call-b#part1" in line)
    shown = line_b[line_b.index("422: part: ") :]
    assert len(shown) == 80 and shown.endswith("…"), shown  # capped as the calls' errors


def test_status_and_list_show_recordings_but_never_their_audio_or_file_paths(
    tmp_path: Path,
) -> None:
    three_recordings(tmp_path, datetime.now(UTC))
    shown = {
        ("status",): "recordings dead: 1",
        ("list",): "call-pending#part2",
        ("list", "--dead"): "call-dead#part1",
    }
    for args, expected in shown.items():
        result = run_journal(tmp_path, *args)
        out, err = text(result)
        assert result.returncode == 0, err
        assert expected in out, (args, out)
        for secret in ("private audio", "OggS", SPOOL, "spoolfile", str(tmp_path)):
            assert secret not in out + err, (args, secret)


def test_list_filters_apply_to_recordings_and_live_shows_those_still_recording(
    tmp_path: Path,
) -> None:
    three_recordings(tmp_path, datetime.now(UTC))
    expected = {
        "--live": ["call-live#part1"],
        "--pending": ["call-pending#part2"],
        "--dead": ["call-dead#part1"],
    }
    for flag, ids in expected.items():
        result = run_journal(tmp_path, "list", flag)
        out, err = text(result)
        assert result.returncode == 0, err
        assert out.startswith(f"no {flag.removeprefix('--')} calls\n"), out
        assert list(recording_lines(out)) == ids, (flag, out)


# ---------------------------------------------------------------------- retry one recording


async def test_retry_of_a_dead_recording_puts_its_file_to_the_http_backend(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        rec_id = add_recording(tmp_path, journal, "call-rec", "dead", attempt=2, part=3)
    file = tmp_path / SPOOL / "spoolfile-call-rec-3.ogg"
    async with BackendStub(STUB_KEY) as stub:
        stub_session(stub, attempt=2)
        code, out, err = await run_journal_async(tmp_path, "retry", rec_id, env=stub_env(stub))
        assert code == 0, out + err
        assert out.splitlines() == [
            "call-rec#part3: delivered (session session-rec, attempt 2, part 3)"
        ]
        assert stub.recording(SESSION, 2, 3) == AUDIO
        assert [request.route for request in stub.requests] == ["put_recording"]
        assert stub.requests[0].key_ok
    assert rows_by_id(tmp_path) == {rec_id: "delivered"}
    assert not file.exists(), "delivered: the spool file is deleted"
    code, out, _ = await run_journal_async(tmp_path, "status")
    assert "recordings dead: 0" in out.splitlines()


def test_retry_of_a_recording_without_a_backend_url_writes_it_with_the_local_backend(
    tmp_path: Path,
) -> None:
    local = LocalBackend(tmp_path)
    create = SessionCreate(scenario_id="default", user_id="user-1", room_name="room-1")
    session = asyncio.run(local.create_session(create, room_sid="RM_1"))
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        rec_id = add_recording(
            tmp_path,
            journal,
            "call-rec",
            "dead",
            session_id=session.id,
            attempt=session.attempt_number,
        )

    result = run_journal(tmp_path, "retry", rec_id)
    out, err = text(result)

    assert result.returncode == 0, out + err
    assert out.startswith(f"{rec_id}: delivered"), out
    held = LocalBackend(tmp_path).recording_paths(session.id)
    assert [path.read_bytes() for path in held] == [AUDIO]
    assert rows_by_id(tmp_path) == {rec_id: "delivered"}


async def test_retry_of_a_recording_rejected_again_stays_a_dead_letter_with_the_new_reason(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        rec_id = add_recording(tmp_path, journal, "call-rec", "dead")
    async with BackendStub(STUB_KEY) as stub:
        stub_session(stub)
        fault = Fault(status=422, json={"error": "invalid_body", "message": "part: odd"})
        stub.queue("put_recording", fault)
        code, out, err = await run_journal_async(tmp_path, "retry", rec_id, env=stub_env(stub))
        assert stub.recording(SESSION, 1, 1) is None
    assert code == 1, out + err
    assert out.startswith(f"{rec_id}: rejected ("), out
    assert out.rstrip().endswith("kept as a dead letter"), out
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        (row,) = journal.recording_rows("dead")
    assert "part: odd" in str(row.last_error)
    assert (tmp_path / SPOOL / "spoolfile-call-rec-1.ogg").read_bytes() == AUDIO, "file kept"


async def test_retry_of_a_recording_with_the_backend_down_is_deferred_and_kept_pending(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        rec_id = add_recording(tmp_path, journal, "call-rec", "dead")
    async with BackendStub(STUB_KEY) as stub:
        env = stub_env(stub, DELIVERY_DEADLINE="1")
        await stub.stop()  # connection refused
        code, out, err = await run_journal_async(tmp_path, "retry", rec_id, env=env)
    assert code == 1, out + err
    assert out.startswith(f"{rec_id}: deferred"), out
    assert "Traceback" not in err
    assert rows_by_id(tmp_path) == {rec_id: "pending"}, "kept for the worker's recovery"
    assert (tmp_path / SPOOL / "spoolfile-call-rec-1.ogg").exists()


async def test_retry_of_one_recording_uploads_only_that_one(tmp_path: Path) -> None:
    # Two other recordings a recovery may take (released by a deferred upload): the retry's
    # claim must leave them for it, unsent and pending.
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        add_recording(tmp_path, journal, "call-other", "pending")
        rec_id = add_recording(tmp_path, journal, "call-rec", "dead", part=2)
        add_recording(tmp_path, journal, "call-other", "pending", part=3)
    async with BackendStub(STUB_KEY) as stub:
        stub_session(stub)
        code, out, err = await run_journal_async(tmp_path, "retry", rec_id, env=stub_env(stub))
        assert code == 0, out + err
        assert [request.route for request in stub.requests] == ["put_recording"]
        assert stub.recording(SESSION, 1, 2) == AUDIO
    assert rows_by_id(tmp_path) == {
        "call-other#part1": "pending",
        rec_id: "delivered",
        "call-other#part3": "pending",
    }
    with closing(sqlite3.connect(tmp_path / JOURNAL_FILE)) as db:
        owners = db.execute(
            "SELECT recording_id, owner_pid FROM recordings WHERE state = 'pending'"
        ).fetchall()
    assert sorted(owners) == [("call-other#part1", None), ("call-other#part3", None)], (
        "given back by the command, as free as before for any recovery"
    )


async def test_retry_does_not_take_a_recording_a_live_process_is_uploading(
    tmp_path: Path,
) -> None:
    async with BackendStub(STUB_KEY) as stub:
        stub_session(stub)
        with Journal(tmp_path / JOURNAL_FILE) as journal:
            # sealed and held by this (live) process, its lease fresh: its upload is running
            rec_id = add_recording(tmp_path, journal, "call-rec", "held")
            code, out, err = await run_journal_async(tmp_path, "retry", rec_id, env=stub_env(stub))
            assert code == 1, out + err
            assert out.splitlines() == [
                f"{rec_id}: deferred (held by another process): kept pending; the worker's "
                "recovery retries it"
            ]
            assert stub.requests == []
            # still ours: the command did not take it over
            assert journal.mark_recording_delivered(rec_id)


def test_retry_of_a_recording_still_being_written_is_refused(tmp_path: Path) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        rec_id = add_recording(tmp_path, journal, "call-rec", "recording")
        result = run_journal(tmp_path, "retry", rec_id)
        out, err = text(result)
        assert result.returncode == 1, out + err
        assert out.startswith(f"{rec_id}: recording (a call in progress"), out
        assert out.rstrip().endswith("not retried"), out
        assert rows_by_id(tmp_path) == {rec_id: "recording"}


def test_retry_of_a_delivered_recording_says_so_and_exits_0(tmp_path: Path) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        rec_id = add_recording(tmp_path, journal, "call-rec", "delivered")
    result = run_journal(tmp_path, "retry", rec_id)
    out, err = text(result)
    assert result.returncode == 0, out + err
    assert out.startswith(f"{rec_id}: already delivered"), out


def test_retry_of_an_unknown_recording_id_exits_1_with_one_line(tmp_path: Path) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        add_recording(tmp_path, journal, "call-rec", "dead")
    result = run_journal(tmp_path, "retry", "call-rec#part9")
    out, err = text(result)
    assert result.returncode == 1, out + err
    assert err.strip().splitlines() == [
        f"journal: no recording 'call-rec#part9' in {tmp_path / JOURNAL_FILE}"
    ]
    assert rows_by_id(tmp_path) == {"call-rec#part1": "dead"}


# ---------------------------------------------------------------------- retry --all-dead


async def test_retry_all_dead_sends_the_dead_transcripts_first_then_the_dead_recordings(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        rec_id = add_recording(
            tmp_path, journal, "call-rec", "dead", session_id="session-dead", attempt=3
        )
        add_dead(journal)  # call-dead, session-dead, attempt 3
        add_recording(tmp_path, journal, "call-other", "pending")  # not a dead letter
    async with BackendStub(STUB_KEY) as stub:
        stub_session(stub, "session-dead", 3)
        code, out, err = await run_journal_async(
            tmp_path, "retry", "--all-dead", env=stub_env(stub)
        )
        assert code == 0, out + err
        assert out.splitlines() == [
            "call-dead: delivered (session session-dead)",
            f"{rec_id}: delivered (session session-dead, attempt 3, part 1)",
        ]
        assert [r.route for r in stub.requests] == ["post_transcript", "put_recording"]
        assert stub.recording("session-dead", 3, 1) == AUDIO
    assert rows_by_id(tmp_path) == {rec_id: "delivered", "call-other#part1": "pending"}


async def test_retry_all_dead_with_the_backend_down_leaves_the_dead_recordings_untried(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        add_dead(journal)
        rec_id = add_recording(tmp_path, journal, "call-rec", "dead")
    async with BackendStub(STUB_KEY) as stub:
        env = stub_env(stub, DELIVERY_DEADLINE="1")
        await stub.stop()
        code, out, err = await run_journal_async(tmp_path, "retry", "--all-dead", env=env)
    assert code == 1, out + err
    lines = out.splitlines()
    assert lines[0].startswith("call-dead: deferred"), out
    assert lines[1:] == ["not attempted: 1 more (left as they were; retry later)"]
    assert rows_by_id(tmp_path) == {rec_id: "dead"}, "left as it was"


def test_retry_all_dead_with_only_dead_recordings_retries_them(tmp_path: Path) -> None:
    local = LocalBackend(tmp_path)
    create = SessionCreate(scenario_id="default", user_id="user-1", room_name="room-1")
    session = asyncio.run(local.create_session(create, room_sid="RM_1"))
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        add_pending(journal, datetime.now(UTC))  # a pending transcript is no dead letter
        rec_id = add_recording(
            tmp_path, journal, "call-rec", "dead", session_id=session.id, attempt=1
        )
    result = run_journal(tmp_path, "retry", "--all-dead")
    out, err = text(result)
    assert result.returncode == 0, out + err
    assert out.splitlines() == [f"{rec_id}: delivered (session {session.id}, attempt 1, part 1)"]
    assert rows_by_id(tmp_path) == {rec_id: "delivered"}
