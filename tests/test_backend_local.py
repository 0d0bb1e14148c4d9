"""LocalBackend: the embedded default that runs without BACKEND_URL, on files under a temp dir."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.backend import (
    BackendRejected,
    BackendUnavailable,
    LocalBackend,
    transcript_idempotency_key,
)
from agent.models import SessionCreate, TranscriptPayload, Turn
from agent.prompts import DEFAULT_SCENARIO_ID, load_scenario

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def body(user: str = "u1", scenario: str = "default") -> SessionCreate:
    return SessionCreate(scenario_id=scenario, user_id=user, room_name="room")


def transcript(turns: int, *, complete: bool = True, attempt: int = 1) -> TranscriptPayload:
    return TranscriptPayload(
        attempt_number=attempt,
        complete=complete,
        ended_reason="caller_left" if complete else "crashed",  # complete: false only so
        started_at=T0,
        ended_at=T0,
        turn_count=turns,
        turns=[
            Turn(seq=n, role="user", text=f"turn {n}", started_at=T0, ended_at=T0)
            for n in range(1, turns + 1)
        ],
    )


@pytest.fixture
def local(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "data")


def written(local: LocalBackend) -> list[dict[str, Any]]:
    return [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(local.transcripts_dir.iterdir())
    ]


async def test_scenario_comes_from_the_bundled_prompts(local: LocalBackend) -> None:
    assert await local.get_scenario(DEFAULT_SCENARIO_ID) == load_scenario(DEFAULT_SCENARIO_ID)


async def test_unknown_scenario_is_rejected_with_404(local: LocalBackend) -> None:
    with pytest.raises(BackendRejected) as caught:
        await local.get_scenario("no-such-scenario")
    assert caught.value.status == 404 and "no-such-scenario" in caught.value.reason


async def test_attempts_are_numbered_per_user_and_scenario(local: LocalBackend) -> None:
    first = await local.create_session(body(), room_sid="RM_1")
    second = await local.create_session(body(), room_sid="RM_2")
    other_user = await local.create_session(body(user="u2"), room_sid="RM_3")
    other_scenario = await local.create_session(body(scenario="s2"), room_sid="RM_4")
    numbers = [s.attempt_number for s in (first, second, other_user, other_scenario)]
    assert numbers == [1, 2, 1, 1]
    assert first.id != second.id


async def test_numbering_survives_a_restart(tmp_path: Path) -> None:
    await LocalBackend(tmp_path).create_session(body(), room_sid="RM_1")
    again = await LocalBackend(tmp_path).create_session(body(), room_sid="RM_2")
    assert again.attempt_number == 2


async def test_create_session_is_idempotent_by_room_sid(local: LocalBackend) -> None:
    first = await local.create_session(body(), room_sid="RM_1")
    # a job re-dispatched into the same room finds the same session and attempt
    assert await local.create_session(body(), room_sid="RM_1") == first
    assert (await local.create_session(body(), room_sid="RM_2")).attempt_number == 2


OLD_SCHEMA = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    assignment_id TEXT,
    room_name TEXT NOT NULL,
    attempt_number INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX sessions_by_owner ON sessions (user_id, scenario_id);
INSERT INTO sessions VALUES
    ('local-old', 'AJ_old', 'u1', 'default', NULL, 'room', 1, '2026-11-01T10:00:00+00:00');
"""


async def test_a_data_dir_of_the_job_keyed_version_keeps_working(tmp_path: Path) -> None:
    # A data dir written by the version that keyed sessions by job id (column job_id).
    data = tmp_path / "data"
    data.mkdir()
    with closing(sqlite3.connect(data / "local_backend.sqlite3")) as db:
        db.executescript(OLD_SCHEMA)
    local = LocalBackend(data)
    old = await local.get_session("local-old")
    assert (old.user_id, old.attempt_number) == ("u1", 1)
    first = await local.create_session(body(), room_sid="RM_1")
    assert first.attempt_number == 2  # numbering continues after the old session
    assert await LocalBackend(data).create_session(body(), room_sid="RM_1") == first
    await local.post_transcript(old.id, transcript(1), deadline=5)  # old sessions still take one


async def test_get_transcript_reads_the_best_held_one(local: LocalBackend) -> None:
    session = await local.create_session(body(), room_sid="RM_1")
    assert await local.get_transcript(session.id, 1) is None
    await local.post_transcript(session.id, transcript(2, complete=False), deadline=5)
    await local.post_transcript(session.id, transcript(4, complete=False), deadline=5)
    await local.post_transcript(session.id, transcript(3, complete=False), deadline=5)  # 409
    held = await local.get_transcript(session.id, 1)
    assert held is not None
    assert (held.source, held.complete, held.ended_reason, held.turn_count) == (
        "agent",
        False,
        "crashed",
        4,
    )
    assert [t.text for t in held.turns] == ["turn 1", "turn 2", "turn 3", "turn 4"]
    await local.post_transcript(session.id, transcript(3), deadline=5)  # complete wins
    final = await LocalBackend(local.data_dir).get_transcript(session.id, 1)
    assert final is not None and (final.complete, final.turn_count) == (True, 3)


async def test_get_transcript_of_another_attempt_or_session_is_none(local: LocalBackend) -> None:
    session = await local.create_session(body(), room_sid="RM_1")
    await local.post_transcript(session.id, transcript(2), deadline=5)
    assert await local.get_transcript(session.id, 2) is None
    assert await local.get_transcript("no-such-session", 1) is None


async def test_concurrent_creates_get_distinct_attempt_numbers(local: LocalBackend) -> None:
    sessions = await asyncio.gather(
        *(local.create_session(body(), room_sid=f"RM_{n}") for n in range(8))
    )
    assert sorted(s.attempt_number for s in sessions) == list(range(1, 9))


async def test_get_session_returns_a_session_it_created(local: LocalBackend) -> None:
    created = await local.create_session(body(), room_sid="RM_1")
    assert await local.get_session(created.id) == created


async def test_get_session_of_an_unknown_id_is_rejected_with_404(local: LocalBackend) -> None:
    with pytest.raises(BackendRejected) as caught:
        await local.get_session("local-unknown")
    assert caught.value.status == 404


async def test_transcript_is_written_as_json_named_by_session_and_key(
    local: LocalBackend,
) -> None:
    session = await local.create_session(body(), room_sid="RM_1")
    receipt = await local.post_transcript(session.id, transcript(2), deadline=5)
    assert (receipt.status, receipt.attempts) == ("delivered", 1)
    key = transcript_idempotency_key(session.id, transcript(2))
    (path,) = local.transcripts_dir.iterdir()
    assert path.name == f"{session.id}.{key}.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["sessionId"] == session.id and document["idempotencyKey"] == key
    assert TranscriptPayload.model_validate(document["transcript"]) == transcript(2)


async def test_a_better_transcript_replaces_the_worse_files_of_its_attempt(
    local: LocalBackend,
) -> None:
    """Checkpoints every few seconds must not leave a file each: like the backend's ranking,
    each longer checkpoint replaces the last and the final one replaces them all; another
    attempt's file is not touched."""
    session = await local.create_session(body(), room_sid="RM_1")
    other = await local.create_session(body(), room_sid="RM_2")  # attempt 2 of u1/default
    await local.post_transcript(other.id, transcript(1, attempt=2), deadline=5)
    for turns in (1, 3, 5):
        await local.post_transcript(session.id, transcript(turns, complete=False), deadline=5)
    assert [
        d["transcript"]["turnCount"] for d in written(local) if d["sessionId"] == session.id
    ] == [5]
    await local.post_transcript(session.id, transcript(5), deadline=5)
    mine = [d["transcript"] for d in written(local) if d["sessionId"] == session.id]
    assert [(t["complete"], t["turnCount"]) for t in mine] == [(True, 5)]
    assert [d["sessionId"] for d in written(local) if d["sessionId"] != session.id] == [other.id]


async def test_no_temporary_file_is_left_behind(local: LocalBackend) -> None:
    session = await local.create_session(body(), room_sid="RM_1")
    await local.post_transcript(session.id, transcript(1), deadline=5)
    await local.post_transcript(session.id, transcript(2), deadline=5)
    assert all(p.suffix == ".json" for p in local.transcripts_dir.iterdir())


async def test_an_equal_transcript_is_already_delivered(local: LocalBackend) -> None:
    session = await local.create_session(body(), room_sid="RM_1")
    await local.post_transcript(session.id, transcript(3), deadline=5)
    receipt = await local.post_transcript(session.id, transcript(3), deadline=5)
    assert receipt.status == "already_delivered"
    assert len(written(local)) == 1


async def test_a_longer_transcript_is_delivered_and_a_shorter_one_is_not(
    local: LocalBackend,
) -> None:
    session = await local.create_session(body(), room_sid="RM_1")
    statuses = [
        (await local.post_transcript(session.id, transcript(n, complete=False), deadline=5)).status
        for n in (2, 4, 3)
    ]
    assert statuses == ["delivered", "delivered", "already_delivered"]


async def test_complete_beats_a_longer_incomplete_transcript(local: LocalBackend) -> None:
    session = await local.create_session(body(), room_sid="RM_1")
    await local.post_transcript(session.id, transcript(9, complete=False), deadline=5)
    complete = await local.post_transcript(session.id, transcript(2), deadline=5)
    later_incomplete = await local.post_transcript(
        session.id, transcript(12, complete=False), deadline=5
    )
    assert (complete.status, later_incomplete.status) == ("delivered", "already_delivered")


async def test_ranking_survives_a_restart(tmp_path: Path) -> None:
    session = await LocalBackend(tmp_path).create_session(body(), room_sid="RM_1")
    await LocalBackend(tmp_path).post_transcript(session.id, transcript(3), deadline=5)
    again = await LocalBackend(tmp_path).post_transcript(session.id, transcript(3), deadline=5)
    assert again.status == "already_delivered"


async def test_a_transcript_for_an_unknown_session_is_rejected_with_404(
    local: LocalBackend,
) -> None:
    with pytest.raises(BackendRejected) as caught:
        await local.post_transcript("local-unknown", transcript(1), deadline=5)
    assert caught.value.status == 404


async def test_a_transcript_with_the_wrong_attempt_is_rejected_with_422(
    local: LocalBackend,
) -> None:
    session = await local.create_session(body(), room_sid="RM_1")
    with pytest.raises(BackendRejected) as caught:
        await local.post_transcript(session.id, transcript(1, attempt=2), deadline=5)
    assert caught.value.status == 422 and "attemptNumber" in caught.value.reason


async def test_an_unwritable_data_dir_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(BackendUnavailable, match="local store failed"):
        await LocalBackend(blocker / "data").create_session(body(), room_sid="RM_1")


async def test_aclose_is_harmless(local: LocalBackend) -> None:
    await local.aclose()
    assert await local.get_scenario(DEFAULT_SCENARIO_ID)


@pytest.fixture
def umask_022() -> Iterator[None]:
    # the usual default umask: what the process would otherwise give new files (0644, 0755)
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
async def test_local_transcripts_and_sessions_are_private_to_the_worker_user(
    tmp_path: Path,
) -> None:
    # Issue 10 section 6: transcripts hold what the caller said; nobody else on the host may
    # read them. Files 0600, directories 0700, the sessions database included.
    local = LocalBackend(tmp_path / "data")
    session = await local.create_session(body(), room_sid="RM_1")
    await local.post_transcript(session.id, transcript(2), deadline=5)
    other = await local.create_session(body(user="u2"), room_sid="RM_2")
    await local.post_transcript(other.id, transcript(3), deadline=5)

    assert mode(tmp_path / "data") == 0o700
    assert mode(local.transcripts_dir) == 0o700
    files = sorted(local.transcripts_dir.iterdir())
    assert len(files) == 2
    assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
    assert mode(local.db_path) == 0o600


@pytest.mark.usefixtures("umask_022")
async def test_a_transcripts_dir_left_open_by_an_older_version_is_closed(tmp_path: Path) -> None:
    local = LocalBackend(tmp_path / "data")
    local.transcripts_dir.mkdir(parents=True, mode=0o755)
    session = await local.create_session(body(), room_sid="RM_1")
    await local.post_transcript(session.id, transcript(1), deadline=5)
    assert mode(local.transcripts_dir) == 0o700


# --------------------------------------------------------------------------- recordings

OGG = b"OggS" + b"\x00" * 100


@pytest.mark.usefixtures("umask_022")
async def test_a_recording_is_kept_under_recordings_private_to_the_worker_user(
    tmp_path: Path,
) -> None:
    local = LocalBackend(tmp_path / "data")
    session = await local.create_session(body(), room_sid="RM_1")
    receipt = await local.put_recording(session.id, 1, 1, OGG, deadline=5)
    assert receipt.status == "delivered"
    (held,) = local.recording_paths(session.id)
    assert held.parent == tmp_path / "data" / "recordings"
    assert held.read_bytes() == OGG
    assert mode(held) == 0o600 and mode(held.parent) == 0o700


async def test_the_same_recording_again_is_already_delivered(local: LocalBackend) -> None:
    session = await local.create_session(body(), room_sid="RM_1")
    await local.put_recording(session.id, 1, 1, OGG, deadline=5)
    again = await local.put_recording(session.id, 1, 1, OGG, deadline=5)
    assert again.status == "already_delivered"
    assert len(local.recording_paths(session.id)) == 1


async def test_parts_are_listed_in_order_and_a_different_file_for_one_part_is_kept_too(
    local: LocalBackend,
) -> None:
    session = await local.create_session(body(), room_sid="RM_1")
    await local.put_recording(session.id, 1, 2, OGG + b"2", deadline=5)
    await local.put_recording(session.id, 1, 1, OGG, deadline=5)
    await local.put_recording(session.id, 1, 2, OGG + b"other", deadline=5)
    parts = [path.name.split(".")[2] for path in local.recording_paths(session.id)]
    assert parts == ["part1", "part2", "part2"]


async def test_a_recording_of_an_unknown_session_or_attempt_is_rejected(
    local: LocalBackend,
) -> None:
    session = await local.create_session(body(), room_sid="RM_1")
    with pytest.raises(BackendRejected) as unknown:
        await local.put_recording("local-nope", 1, 1, OGG, deadline=5)
    with pytest.raises(BackendRejected) as wrong_attempt:
        await local.put_recording(session.id, 2, 1, OGG, deadline=5)
    assert (unknown.value.status, wrong_attempt.value.status) == (404, 422)


async def test_a_hand_placed_file_in_recordings_is_not_taken_for_a_part(
    local: LocalBackend,
) -> None:
    session = await local.create_session(body(), room_sid="RM_1")
    await local.put_recording(session.id, 1, 1, OGG, deadline=5)
    (local.recordings_dir / f"{session.id}.attemptA.part1.ogg").write_bytes(OGG)
    assert [p.name.split(".")[2] for p in local.recording_paths(session.id)] == ["part1"]
