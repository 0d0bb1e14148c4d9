"""Recordings from the journal to the backend: the row written before the file, kept until the
backend acknowledged it, every status class of the contract, recovery of what a dead process
left, and the spool's sweep.

Uploads go through the real HttpBackend to the loopback backend stub; what the wire must carry
(route, query, headers, body) is written here from DESIGN.md's contract, and the key is computed
with hashlib, never with agent.backend.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from livekit.agents import AgentSession
from pydantic import SecretStr

from agent.backend import HttpBackend, LocalBackend
from agent.call.recover import recover_in_main
from agent.journal import Journal, Owner, RecordingToSend
from agent.models import SessionCreate
from agent.recording import (
    CallRecording,
    RecordingUnavailable,
    recover_recordings,
    spool_dir,
    sweep_spool,
    upload_recording,
)
from tests.support.backend_stub import BackendStub, Fault
from tests.support.calls import SESSION
from tests.support.fakes import CaptureAudioOutput, WavAudioInput
from tests.support.ogg import write_tone_wav
from tests.support.settings import make_settings

KEY = "internal-service-key-for-tests"
# Not a real Opus stream, but what the stub checks of one: its capture pattern.
BODY = b"OggS" + bytes(range(256)) * 64
STARTED = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def dead_owner() -> Owner:
    """This process under another start: an owner provably gone (pid reused)."""
    me = Owner.current()
    return Owner(me.host, me.boot_id, me.pid, me.start_ticks - 1)


def journaled_file(journal: Journal, call_id: str = "AJ_1", part: int = 1) -> tuple[str, Path]:
    """A recording row, then its file (in that order, as the recorder does)."""
    path = spool_dir(journal.path.parent) / f"{call_id}-{part}.ogg"
    rec_id = journal.open_recording(
        call_id, session_id="S1", attempt_number=1, part=part, path=path, started_at=STARTED
    )
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(BODY)
    return rec_id, path


def sealed(journal: Journal, rec_id: str, path: Path) -> RecordingToSend:
    item = journal.seal_recording(
        rec_id, size=path.stat().st_size, sha256=hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert item is not None
    return item


def state_of(journal: Journal, rec_id: str) -> str | None:
    with journal._lock:
        row = journal._conn.execute(
            "SELECT state FROM recordings WHERE recording_id = ?", (rec_id,)
        ).fetchone()
    return None if row is None else str(row[0])


async def upload_once(
    tmp_path: Path, *faults: Fault, deadline: float = 5.0
) -> tuple[str, str | None, Path, BackendStub]:
    """One sealed recording uploaded to a stub answering `faults` first: (status, row state
    after, the spool file, the stub)."""
    async with BackendStub(key=KEY) as stub:
        stub.add_session(SESSION)
        stub.queue("put_recording", *faults)
        with Journal.in_dir(tmp_path) as journal:
            rec_id, path = journaled_file(journal)
            async with HttpBackend(
                stub.url, SecretStr(KEY), backoff_base=0.01, backoff_cap=0.05
            ) as backend:
                outcome = await upload_recording(
                    journal, backend, sealed(journal, rec_id, path), deadline=deadline
                )
            return outcome.status, state_of(journal, rec_id), path, stub


async def test_the_upload_is_a_put_of_the_bytes_with_the_contracts_route_and_headers(
    tmp_path: Path,
) -> None:
    status, _state, _path, stub = await upload_once(tmp_path)
    assert status == "delivered"
    (request,) = stub.requests_for("put_recording")
    assert request.method == "PUT"
    assert request.path == "/api/internal/sessions/S1/recording?attemptNumber=1&part=1"
    assert request.header("Content-Type") == "audio/ogg"
    assert request.header("Idempotency-Key") == hashlib.sha256(BODY).hexdigest()
    assert request.key_ok and request.size == len(BODY)
    assert stub.recording("S1", 1, 1) == BODY


async def test_an_acknowledged_recording_leaves_a_tombstone_and_no_file(tmp_path: Path) -> None:
    status, state, path, _stub = await upload_once(tmp_path)
    assert status == "delivered" and state == "delivered" and not path.exists()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault(status=204, text=""), "delivered"),
        (Fault(status=200, json={"ok": True}), "delivered"),
        (Fault(status=409), "already_delivered"),
    ],
)
async def test_a_2xx_acknowledgement_or_a_409_is_done(
    tmp_path: Path, fault: Fault, expected: str
) -> None:
    status, state, path, _stub = await upload_once(tmp_path, fault)
    assert (status, state, path.exists()) == (expected, "delivered", False)


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=503),
        Fault(status=429, headers={"Retry-After": "0"}),
        Fault(status=200, text="<html>login</html>", content_type="text/html"),
    ],
)
async def test_a_transient_answer_is_retried_within_the_deadline(
    tmp_path: Path, fault: Fault
) -> None:
    status, _state, _path, stub = await upload_once(tmp_path, fault)
    assert status == "delivered" and len(stub.requests_for("put_recording")) == 2


async def test_a_backend_down_for_the_whole_deadline_keeps_it_pending_and_unowned(
    tmp_path: Path,
) -> None:
    status, state, path, _stub = await upload_once(
        tmp_path, *[Fault(status=503)] * 50, deadline=0.5
    )
    assert (status, state, path.exists()) == ("deferred", "pending", True)
    with Journal.in_dir(tmp_path) as journal:
        (row,) = journal.recording_rows()
        assert row.attempts == 1 and row.state == "pending"
        # released: any other process may claim it at once
        with Journal.in_dir(tmp_path, owner=Owner("elsewhere", "boot-x", 1, 1)) as other:
            assert [c.recording_id for c in other.claim_recordings()] == [row.recording_id]


@pytest.mark.parametrize("status_code", [401, 403, 404, 405])
async def test_a_configuration_error_keeps_it_pending_not_dead(
    tmp_path: Path, status_code: int
) -> None:
    status, state, path, stub = await upload_once(tmp_path, Fault(status=status_code))
    assert (status, state, path.exists()) == ("misconfigured", "pending", True)
    assert len(stub.requests_for("put_recording")) == 1  # never retried within the call


@pytest.mark.parametrize("status_code", [400, 413, 422])
async def test_a_rejection_is_a_dead_letter_with_its_file_and_reason(
    tmp_path: Path, status_code: int
) -> None:
    fault = Fault(status=status_code, json={"error": "nope", "message": "too long a call"})
    status, state, path, _stub = await upload_once(tmp_path, fault)
    assert (status, state, path.exists()) == ("rejected", "dead", True)
    with Journal.in_dir(tmp_path) as journal:
        (row,) = journal.recording_rows("dead")
        assert row.last_error is not None and row.last_error.startswith(f"{status_code}: ")
        assert "too long a call" in row.last_error


async def test_a_dead_process_s_recording_is_sealed_from_its_file_and_uploaded_by_recovery(
    tmp_path: Path,
) -> None:
    async with BackendStub(key=KEY) as stub:
        stub.add_session(SESSION)
        with Journal.in_dir(tmp_path, owner=dead_owner()) as gone:
            rec_id, path = journaled_file(gone)  # still 'recording': the process died mid-call
        with Journal.in_dir(tmp_path) as journal:
            async with HttpBackend(stub.url, SecretStr(KEY)) as backend:
                outcomes = await recover_recordings(journal, backend, deadline=5)
            assert [(o.recording_id, o.status) for o in outcomes] == [(rec_id, "delivered")]
            assert state_of(journal, rec_id) == "delivered"
        assert stub.recording("S1", 1, 1) == BODY and not path.exists()


async def test_a_live_call_s_recording_is_never_claimed(tmp_path: Path) -> None:
    with Journal.in_dir(tmp_path) as live, Journal.in_dir(tmp_path) as other_view:
        journaled_file(live)
        # this process is alive and its lease fresh: another claimer on this host leaves it
        other = Journal.in_dir(tmp_path, owner=Owner(live.owner.host, live.owner.boot_id, 1, 1))
        try:
            assert other.claim_recordings() == []
        finally:
            other.close()
        assert other_view.recording_rows()[0].state == "recording"


async def test_the_call_s_lease_refresh_keeps_its_recording_s_lease(tmp_path: Path) -> None:
    now = [1000.0]
    with Journal.in_dir(tmp_path, clock=lambda: now[0]) as journal:
        journal.open_call("AJ_1", session_id="S1", attempt_number=1, started_at=STARTED)
        rec_id, _path = journaled_file(journal)
        now[0] += journal.lease_seconds - 1
        assert journal.refresh_lease("AJ_1")
        with journal._lock:
            (lease,) = journal._conn.execute(
                "SELECT lease_until FROM recordings WHERE recording_id = ?", (rec_id,)
            ).fetchone()
        assert lease == now[0] + journal.lease_seconds


def test_a_resumed_call_numbers_its_part_after_every_known_part(tmp_path: Path) -> None:
    with Journal.in_dir(tmp_path) as journal:
        assert journal.next_recording_part("S1", 1, resumed=False) == 1
        # a resumed call whose earlier run recorded elsewhere: at least part 2
        assert journal.next_recording_part("S1", 1, resumed=True) == 2
        rec_id, path = journaled_file(journal, "AJ_1", 1)
        sealed(journal, rec_id, path)
        assert journal.mark_recording_delivered(rec_id)  # a tombstone still counts
        assert journal.next_recording_part("S1", 1, resumed=True) == 2
        journaled_file(journal, "AJ_2", 2)
        assert journal.next_recording_part("S1", 1, resumed=True) == 3
        assert journal.next_recording_part("S1", 2, resumed=False) == 1  # another attempt


def test_the_sweep_deletes_only_files_no_row_stands_for(tmp_path: Path) -> None:
    with Journal.in_dir(tmp_path) as journal:
        _rec_id, kept = journaled_file(journal)
        stray = spool_dir(tmp_path) / "0123abcd.ogg"  # its upload acknowledged, then a crash
        stray.write_bytes(BODY)
        assert sweep_spool(journal) == 1
        assert kept.exists() and not stray.exists()


def test_a_dead_letter_goes_back_to_pending_on_the_operator_s_word(tmp_path: Path) -> None:
    with Journal.in_dir(tmp_path) as journal:
        rec_id, path = journaled_file(journal)
        sealed(journal, rec_id, path)
        assert journal.mark_recording_dead(rec_id, "413: too large")
        with Journal.in_dir(tmp_path, owner=Owner("elsewhere", "boot-x", 1, 1)) as other:
            assert other.claim_recordings() == []  # a dead letter is never claimed by itself
            assert journal.requeue_dead_recordings() == [rec_id]
            assert [c.recording_id for c in other.claim_recordings()] == [rec_id]


def test_tombstones_are_pruned_after_a_week(tmp_path: Path) -> None:
    wall = [2_000_000.0]
    with Journal.in_dir(tmp_path, wall=lambda: wall[0]) as journal:
        rec_id, path = journaled_file(journal)
        sealed(journal, rec_id, path)
        journal.mark_recording_delivered(rec_id)
        wall[0] += 6 * 24 * 3600
        assert journal.prune_delivered_recordings() == 0
        wall[0] += 2 * 24 * 3600
        assert journal.prune_delivered_recordings() == 1
        assert state_of(journal, rec_id) is None


def test_a_version_2_journal_gains_the_recordings_table_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    with Journal.in_dir(tmp_path) as journal:
        journal.open_call("AJ_1", session_id="S1", attempt_number=1, started_at=STARTED)
        with journal._transaction() as conn:
            conn.execute("DROP TABLE recordings")
            conn.execute("PRAGMA user_version = 2")
    with Journal.in_dir(tmp_path) as journal:
        assert journal.state("AJ_1") == "live"
        assert journal.recording_rows() == []
        with journal._lock:
            assert journal._conn.execute("PRAGMA user_version").fetchone()[0] == 3


def test_a_missing_file_is_a_dead_letter_said_loudly(tmp_path: Path) -> None:
    import asyncio

    async def run() -> str:
        with Journal.in_dir(tmp_path) as journal:
            rec_id, path = journaled_file(journal)
            item = sealed(journal, rec_id, path)
            os.unlink(path)
            async with HttpBackend("http://127.0.0.1:9", SecretStr(KEY)) as backend:
                outcome = await upload_recording(journal, backend, item, deadline=1)
            return f"{outcome.status}/{state_of(journal, rec_id)}"

    assert asyncio.run(run()) == "rejected/dead"


async def test_the_main_process_recovery_uploads_to_the_embedded_default(tmp_path: Path) -> None:
    # what the worker runs at start and after a drain (agent.call.recover.recover_in_main),
    # with no BACKEND_URL: the recording lands under AGENT_DATA_DIR/recordings/
    local = LocalBackend(tmp_path)
    session = await local.create_session(
        SessionCreate(scenario_id="default", user_id="u1", room_name="room"), room_sid="RM_1"
    )
    with Journal.in_dir(tmp_path, owner=dead_owner()) as gone:
        path = spool_dir(tmp_path) / "left.ogg"
        gone.open_recording(
            "AJ_1",
            session_id=session.id,
            attempt_number=1,
            part=1,
            path=path,
            started_at=STARTED,
        )
        path.parent.mkdir()
        path.write_bytes(BODY)
    await recover_in_main(make_settings(AGENT_DATA_DIR=str(tmp_path)))
    (held,) = local.recording_paths(session.id)
    assert held.read_bytes() == BODY and not path.exists()


async def test_an_empty_file_left_by_a_dead_process_is_dropped_not_sent(tmp_path: Path) -> None:
    # killed before the encoder's first write: nothing to deliver, and nothing to refuse for ever
    async with BackendStub(key=KEY) as stub:
        stub.add_session(SESSION)
        with Journal.in_dir(tmp_path, owner=dead_owner()) as gone:
            rec_id, path = journaled_file(gone)
            path.write_bytes(b"")
        with Journal.in_dir(tmp_path) as journal:
            async with HttpBackend(stub.url, SecretStr(KEY)) as backend:
                outcomes = await recover_recordings(journal, backend, deadline=5)
            assert [o.detail for o in outcomes] == ["empty: nothing was recorded"]
            assert state_of(journal, rec_id) is None
        assert stub.requests_for("put_recording") == [] and not path.exists()


async def test_a_recording_whose_file_cannot_be_created_leaves_no_row(tmp_path: Path) -> None:
    # the spool is not writable (a full disk, a read-only mount): the call goes on unrecorded
    spool_dir(tmp_path).write_text("not a directory")
    session: AgentSession[None] = AgentSession()
    session.input.audio = WavAudioInput(write_tone_wav(tmp_path / "c.wav", 1.0, 440.0))
    session.output.audio = CaptureAudioOutput()
    with Journal.in_dir(tmp_path) as journal:
        with pytest.raises(RecordingUnavailable):
            await CallRecording.start(
                session,
                journal,
                call_id="AJ_1",
                session_id="S1",
                attempt_number=1,
                resumed=False,
                data_dir=tmp_path,
                max_bytes=64 << 20,
            )
        assert journal.recording_rows() == [] and journal.recording_paths() == set()
