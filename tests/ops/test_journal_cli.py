"""`python -m agent journal`: the operator's command, run as a real subprocess against journals
written with the Journal API exactly as the worker writes them.

Expected values are written here by hand from DESIGN.md ("Contracts", "Journal", "Operations"),
never produced by agent.models or the command under test."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.backend import LocalBackend
from agent.journal import Journal
from agent.models import Session, SessionCreate, TranscriptPayload, Turn, Usage
from tests.support import journal_probe
from tests.support.backend_stub import BackendStub, Fault

ROOT = Path(__file__).resolve().parents[2]
STUB_KEY = "stub-internal-key"
JOURNAL_FILE = "journal.sqlite3"  # DESIGN: SQLite in AGENT_DATA_DIR


def _env(data_dir: Path, extra: dict[str, str] | None) -> dict[str, str]:
    # No LiveKit or OpenAI settings: the journal command must not need them.
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return {**base, "AGENT_DATA_DIR": str(data_dir), **(extra or {})}


def run_journal(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "journal", *args],
        cwd=ROOT,
        env=_env(data_dir, env),
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


async def run_journal_async(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    # The backend stub serves on this test's event loop: the command must not block it.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "journal",
        *args,
        cwd=ROOT,
        env=_env(data_dir, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def text(result: subprocess.CompletedProcess[bytes]) -> tuple[str, str]:
    return result.stdout.decode(), result.stderr.decode()


# ---------------------------------------------------------------------- journals, as the worker
# writes them

T0 = datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)
T0_WIRE = "2026-01-02T03:04:05.123Z"


def two_turns() -> list[Turn]:
    return [
        Turn(
            seq=1,
            role="user",
            text="private words one",
            started_at=T0,
            ended_at=T0 + timedelta(seconds=2, milliseconds=333),
        ),
        Turn(
            seq=2,
            role="assistant",
            text="private words two",
            started_at=T0 + timedelta(seconds=2, milliseconds=333),
            ended_at=T0 + timedelta(seconds=4, milliseconds=666),
            interrupted=True,
        ),
    ]


def final_payload(*, attempt: int, ended_at: datetime) -> TranscriptPayload:
    return TranscriptPayload(
        attempt_number=attempt,
        complete=True,
        ended_reason="caller_hangup",
        started_at=T0,
        ended_at=ended_at,
        turn_count=2,
        turns=two_turns(),
        usage=[Usage(kind="llm", provider="openai", model="gpt-4.1-mini", input_tokens=12)],
    )


def expected_body(*, attempt: int, ended_at: str) -> dict[str, Any]:
    """The POST body of `final_payload`, written by hand from DESIGN.md's contract."""
    return {
        "attemptNumber": attempt,
        "source": "agent",
        "complete": True,
        "endedReason": "caller_hangup",
        "startedAt": T0_WIRE,
        "endedAt": ended_at,
        "turnCount": 2,
        "turns": [
            {
                "seq": 1,
                "role": "user",
                "text": "private words one",
                "startedAt": T0_WIRE,
                "endedAt": "2026-01-02T03:04:07.456Z",
                "interrupted": False,
            },
            {
                "seq": 2,
                "role": "assistant",
                "text": "private words two",
                "startedAt": "2026-01-02T03:04:07.456Z",
                "endedAt": "2026-01-02T03:04:09.789Z",
                "interrupted": True,
            },
        ],
        "usage": [
            {"kind": "llm", "provider": "openai", "model": "gpt-4.1-mini", "inputTokens": 12}
        ],
        "latency": {},
    }


def add_live(journal: Journal, call_id: str = "call-live") -> None:
    journal.open_call(call_id, session_id="session-live", attempt_number=1, started_at=T0)
    for turn in two_turns():
        journal.append_turn(call_id, turn)


def add_pending(journal: Journal, ended_at: datetime) -> None:
    journal.open_call("call-pending", session_id="session-pending", attempt_number=2, started_at=T0)
    for turn in two_turns():
        journal.append_turn("call-pending", turn)
    journal.finish_call("call-pending", final_payload(attempt=2, ended_at=ended_at))
    journal.release("call-pending")  # a deferred delivery, as the worker leaves it


def add_dead(journal: Journal, *, session_id: str = "session-dead", attempt: int = 3) -> None:
    journal.open_call("call-dead", session_id=session_id, attempt_number=attempt, started_at=T0)
    journal.finish_call(
        "call-dead", final_payload(attempt=attempt, ended_at=T0 + timedelta(days=5))
    )
    journal.mark_dead("call-dead", "422: turns.0.text: too short\nsecond line of the reason")


def three_calls(data_dir: Path, pending_ended: datetime) -> None:
    with Journal(data_dir / JOURNAL_FILE) as journal:
        add_live(journal)
        add_pending(journal, pending_ended)
        add_dead(journal)


# ---------------------------------------------------------------------- empty and missing


def test_help_lists_the_four_commands(tmp_path: Path) -> None:
    result = run_journal(tmp_path, "--help")
    out, _ = text(result)
    assert result.returncode == 0
    for command in ("status", "list", "retry", "export"):
        assert command in out


def test_status_on_a_directory_without_a_journal_prints_zeros_and_creates_nothing(
    tmp_path: Path,
) -> None:
    # Broken worker settings must not matter: the command reads AGENT_DATA_DIR only.
    result = run_journal(
        tmp_path, "status", env={"LIVEKIT_URL": "not a url", "LLM_TIMEOUT": "soon"}
    )
    out, err = text(result)
    assert result.returncode == 0, err
    lines = out.splitlines()
    assert "live: 0" in lines and "pending: 0" in lines and "dead: 0" in lines
    assert "oldest pending: none" in lines
    assert list(tmp_path.iterdir()) == [], "a read-only command created files"
    listed = run_journal(tmp_path, "list")
    assert listed.returncode == 0 and list(tmp_path.iterdir()) == []


def test_status_on_an_empty_journal_exits_0(tmp_path: Path) -> None:
    Journal(tmp_path / JOURNAL_FILE).close()
    result = run_journal(tmp_path, "status")
    assert result.returncode == 0
    assert "pending: 0" in text(result)[0].splitlines()


def test_missing_directory_exits_2_with_one_line_naming_agent_data_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for args in (["status"], ["list", "--dead"], ["export", "x"], ["retry", "--all-dead"]):
        result = run_journal(missing, *args)
        out, err = text(result)
        assert result.returncode == 2, (args, err)
        assert "AGENT_DATA_DIR" in err
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in out + err
    assert not missing.exists()


def test_unknown_call_id_exits_1_with_one_line(tmp_path: Path) -> None:
    three_calls(tmp_path, datetime.now(UTC))
    for args in (["export", "no-such-call"], ["retry", "no-such-call"]):
        result = run_journal(tmp_path, *args)
        out, err = text(result)
        assert result.returncode == 1, (args, out, err)
        assert "no-such-call" in err and len(err.strip().splitlines()) == 1
        assert "Traceback" not in err


# ---------------------------------------------------------------------- status and list


def test_status_counts_each_state_and_the_oldest_pending_age(tmp_path: Path) -> None:
    # The pending transcript's call ended two hours ago: that is how long it has waited.
    three_calls(tmp_path, datetime.now(UTC) - timedelta(hours=2))
    result = run_journal(tmp_path, "status")
    out, err = text(result)
    assert result.returncode == 0, err
    lines = out.splitlines()
    assert "live: 1" in lines and "pending: 1" in lines and "dead: 1" in lines
    oldest = next(line for line in lines if line.startswith("oldest pending: "))
    assert oldest.startswith("oldest pending: 2h "), oldest
    seconds = int(oldest.rsplit("(", 1)[1].removesuffix(" s)"))
    assert 7200 <= seconds < 7200 + 600, oldest


def test_list_shows_one_line_per_call_and_never_transcript_text(tmp_path: Path) -> None:
    three_calls(tmp_path, datetime.now(UTC))
    result = run_journal(tmp_path, "list")
    out, err = text(result)
    assert result.returncode == 0, err
    assert "private words" not in out + err
    lines = out.splitlines()
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert set(rows) == {"call-live", "call-pending", "call-dead"}
    # state, call, session, attempt, turns, ended reason (- while live), tries, ...
    assert rows["call-live"][:6] == ["live", "call-live", "session-live", "1", "2", "-"]
    assert rows["call-pending"][:6] == [
        "pending",
        "call-pending",
        "session-pending",
        "2",
        "2",
        "caller_hangup",
    ]
    dead_line = next(line for line in lines if "call-dead" in line)
    assert dead_line.split()[:6] == ["dead", "call-dead", "session-dead", "3", "2", "caller_hangup"]
    # the last error, on one line
    assert "422: turns.0.text: too short second line" in dead_line

    only_dead = run_journal(tmp_path, "list", "--dead")
    dead_lines = text(only_dead)[0].splitlines()[1:]
    assert [line.split()[1] for line in dead_lines] == ["call-dead"]
    only_live = run_journal(tmp_path, "list", "--live")
    assert [line.split()[1] for line in text(only_live)[0].splitlines()[1:]] == ["call-live"]
    only_pending = run_journal(tmp_path, "list", "--pending")
    pending_lines = text(only_pending)[0].splitlines()[1:]
    assert [line.split()[1] for line in pending_lines] == ["call-pending"]


# ---------------------------------------------------------------------- export


def test_export_prints_the_exact_body_delivery_would_post(tmp_path: Path) -> None:
    three_calls(tmp_path, T0 + timedelta(seconds=4, milliseconds=666))
    result = run_journal(tmp_path, "export", "call-pending")
    assert result.returncode == 0, result.stderr
    assert not result.stdout.endswith(b"\n"), "the body's own bytes, nothing added"
    body = json.loads(result.stdout.decode("utf-8"))
    assert body == expected_body(attempt=2, ended_at="2026-01-02T03:04:09.789Z")
    assert "null" not in result.stdout.decode()


def test_export_of_a_live_call_is_the_transcript_rebuilt_from_its_turns(tmp_path: Path) -> None:
    three_calls(tmp_path, datetime.now(UTC))
    result = run_journal(tmp_path, "export", "call-live")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    # DESIGN ("Journal"): a live call that recovery rebuilds is incomplete and `crashed`.
    assert body["complete"] is False
    assert body["endedReason"] == "crashed"
    assert body["attemptNumber"] == 1
    assert body["turnCount"] == 2
    assert [turn["text"] for turn in body["turns"]] == ["private words one", "private words two"]
    assert body["startedAt"] == T0_WIRE


# ---------------------------------------------------------------------- retry


def _stub_session(stub: BackendStub) -> None:
    stub.add_session(
        Session(id="session-dead", user_id="user-1", scenario_id="default", attempt_number=3)
    )


async def test_retry_all_dead_delivers_through_the_http_backend_and_removes_the_row(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        add_dead(journal)
    async with BackendStub(STUB_KEY) as stub:
        _stub_session(stub)
        code, exported, _ = await run_journal_async(tmp_path, "export", "call-dead")
        assert code == 0
        backend_env = {"BACKEND_URL": stub.url, "INTERNAL_SERVICE_KEY": STUB_KEY}
        code, out, err = await run_journal_async(tmp_path, "retry", "--all-dead", env=backend_env)

        assert code == 0, out + err
        assert "call-dead: delivered" in out
        posted = stub.requests_for("post_transcript")
        assert len(posted) == 1
        assert posted[0].key_ok
        assert posted[0].json == json.loads(exported)
        assert posted[0].json == expected_body(attempt=3, ended_at="2026-01-07T03:04:05.123Z")
        assert len(stub.transcripts["session-dead"]) == 1
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        assert journal.state("call-dead") is None, "delivered: the row is gone"
    code, out, _ = await run_journal_async(tmp_path, "status")
    assert "dead: 0" in out.splitlines()


async def test_retry_with_the_backend_down_is_deferred_and_kept_pending(tmp_path: Path) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        add_dead(journal)
    async with BackendStub(STUB_KEY) as stub:
        url = stub.url
        await stub.stop()  # connection refused
        env = {"BACKEND_URL": url, "INTERNAL_SERVICE_KEY": STUB_KEY, "DELIVERY_DEADLINE": "1"}
        code, out, err = await run_journal_async(tmp_path, "retry", "call-dead", env=env)
    assert code == 1, out + err
    assert "call-dead: deferred" in out
    assert "Traceback" not in err
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        assert journal.state("call-dead") == "pending", "kept for the worker's recovery"


async def test_retry_rejected_again_stays_a_dead_letter_with_the_new_reason(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        add_dead(journal)
    async with BackendStub(STUB_KEY) as stub:
        _stub_session(stub)
        stub.queue(
            "post_transcript",
            Fault(status=422, json={"error": "invalid_body", "message": "usage.0: odd"}),
        )
        env = {"BACKEND_URL": stub.url, "INTERNAL_SERVICE_KEY": STUB_KEY}
        code, out, err = await run_journal_async(tmp_path, "retry", "call-dead", env=env)
    assert code == 1, out + err
    assert "call-dead: rejected" in out
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        assert journal.state("call-dead") == "dead"
        assert "usage.0: odd" in str(journal.rows("dead")[0].last_error)


def test_retry_without_a_backend_url_uses_the_embedded_default(tmp_path: Path) -> None:
    # DESIGN ("Embedded default"): with no BACKEND_URL, sessions are numbered locally and
    # transcripts written as JSON files under AGENT_DATA_DIR, through the same delivery path.
    local = LocalBackend(tmp_path)
    create = SessionCreate(scenario_id="default", user_id="user-1", room_name="room-1")
    session = asyncio.run(local.create_session(create, room_sid="RM_1"))
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        add_dead(journal, session_id=session.id, attempt=session.attempt_number)

    result = run_journal(tmp_path, "retry", "--all-dead")
    out, err = text(result)

    assert result.returncode == 0, out + err
    assert "call-dead: delivered" in out
    documents = [json.loads(path.read_text(encoding="utf-8")) for path in tmp_path.rglob("*.json")]
    assert [document["sessionId"] for document in documents] == [session.id]
    turns = documents[0]["transcript"]["turns"]
    assert [turn["text"] for turn in turns] == ["private words one", "private words two"]
    with Journal(tmp_path / JOURNAL_FILE) as journal:
        assert journal.state("call-dead") is None


# ---------------------------------------------------------------------- beside a live worker

APPENDER = """
import sys, time
from pathlib import Path
from agent.backend import LocalBackend
from agent.journal import Journal
from agent.models import Turn, utc_now

journal = Journal(sys.argv[1])
stop = Path(sys.argv[2])
at = utc_now()
journal.open_call("call-busy", session_id="session-busy", attempt_number=1, started_at=at)
seq = 0
while not (stop.exists() and seq >= 20):
    seq += 1
    turn = Turn(seq=seq, role="user", text=f"turn {seq}", started_at=at, ended_at=at)
    journal.append_turn("call-busy", turn)  # raises "database is locked" if blocked too long
    if seq == 1:
        print("ready", flush=True)
    time.sleep(0.002)
print(seq, flush=True)
journal.close()
"""


def test_status_and_list_run_while_another_process_appends_to_a_live_call(
    tmp_path: Path,
) -> None:
    db = tmp_path / JOURNAL_FILE
    stop = tmp_path / "stop"
    appender = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(db), str(stop)],
        cwd=ROOT,
        env=_env(tmp_path, None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert appender.stdout is not None
        assert appender.stdout.readline().strip() == "ready"
        for _ in range(3):
            status = run_journal(tmp_path, "status")
            assert status.returncode == 0, status.stderr
            assert "live: 1" in text(status)[0].splitlines()
            listed = run_journal(tmp_path, "list", "--live")
            assert listed.returncode == 0, listed.stderr
            assert "call-busy" in text(listed)[0]
        stop.touch()
        out, err = appender.communicate(timeout=120)
    finally:
        if appender.poll() is None:
            appender.kill()
            appender.wait()
    assert appender.returncode == 0, err
    appended = int(out.split()[-1])
    with Journal(db) as journal:
        assert len(journal_probe.turns(journal, "call-busy")) == appended, "every append kept"
