"""End to end: recordings for replay (issue 24) through the real worker (`python -m agent start`)
against the stand-in, the OpenAI stub and the backend stub, with a caller on the real rtc SDK.

* One worker, two calls in a row: a call whose metadata does not say `record` ends with the
  transcript held and no recording (no PUT, no journal row, no spool file: nothing written);
  then a call with `record: true` ends with the transcript AND one recording (attempt 1, part 1)
  held, uploaded after the transcript, whose Ogg PyAV decodes as stereo Opus as long as the call,
  the caller on the left and the agent on the right; the spool is empty afterwards.
* A recorded call whose worker's process group is SIGKILLed after the greeting and one caller
  turn; a fresh worker on the same AGENT_DATA_DIR seals the file as the killed process left it
  and uploads it at start (after the crashed transcript). Printed: `recording_kept_s` (seconds
  PyAV decodes from it) against `call_before_kill_s` (the recorder's start to the kill).

Times: the caller's clock (`Caller.now()`, monotonic) is brought onto the wall clock to place
the caller's windows in the file, whose zero is the worker's `recording.started` record (logged
right after the library's RecorderIO took its `time.time()` origin).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pytest

from agent.journal import JOURNAL_FILENAME
from agent.recording import SPOOL_DIRNAME
from tests.e2e import test_worker_e2e
from tests.e2e.caller import Caller
from tests.e2e.test_worker_e2e import (
    HEARD,
    REPLY,
    TEST_BUDGET,
    WAV,
    Call,
    Stack,
    accepted_transcripts,
    assert_seq_continuous,
    assert_transcript_matches,
    find_records,
    hang_up,
    poll,
    start_call,
    turns_of,
    wait_for_record,
)
from tests.support.ogg import decode_stereo

pytestmark = pytest.mark.e2e

stack = test_worker_e2e.stack  # the same stack fixture as the worker's scenarios

# the recording's length against the call as the caller lived it (first agent audio heard ->
# hang-up sent): the recorder starts before the greeting is synthesized and stops once the
# hang-up reached the worker, so the file is a little longer, never much
DURATION_TOLERANCE: Final = 1.5
# the windows compared: caller (left) vs agent (right) energy, at least this ratio apart
CHANNEL_RATIO: Final = 10.0
# a window's edges are pulled in by this much (network, jitter buffer, playout reporting)
EDGE: Final = 0.25
# the OpenAI stub's TTS: a tone of at most --tts-max-seconds (1.5 s in these stacks)
AGENT_WINDOW: Final = 0.8
# what a SIGKILL may cost at most: the library's recorder writes every 2.5 s (WRITE_INTERVAL),
# never past an agent line still playing, and the Ogg muxer writes whole pages of up to 1 s
# (seen: 1.5-4.5 s lost); three write intervals leave room for a loaded machine
KILL_LOSS_BOUND: Final = 7.5

Samples = npt.NDArray[np.float32]


# ------------------------------------------------------------------------------- helpers
def call_metadata(identity: str, user_id: str, *, record: bool | None = None) -> str:
    """One user per call: each session is then its user's attempt 1 at the scenario."""
    fields: dict[str, Any] = {
        "scenarioId": "default",
        "userId": user_id,
        "participantIdentity": identity,
    }
    if record is not None:
        fields["record"] = record
    return json.dumps(fields)


def in_file(caller: Caller, origin: float) -> Callable[[float], float]:
    """The caller's times (monotonic, since the caller was made) as seconds into the recording
    whose zero is the wall-clock time `origin`."""
    offset = time.time() - time.monotonic()
    return lambda t: caller.t0 + t + offset - origin


def record_time(record: dict[str, Any]) -> float:
    """A worker JSON log record's `timestamp` as a `time.time()` value."""
    return datetime.fromisoformat(record["timestamp"]).timestamp()


@dataclass(frozen=True)
class Spoken:
    """A caller turn, on the caller's clock: speech sent [start, end], the reply first heard."""

    start: float
    end: float
    reply_at: float


async def speak_and_hear_reply(call: Call, *, reply_seq: int) -> Spoken:
    """As `test_worker_e2e.spoken_turn`, keeping the times: the caller speaks the WAV, the
    reply is heard after the end of speech and its final turn arrives."""
    start, end = await call.caller.speak(WAV, timeout=15)
    reply_at = await call.caller.wait_for_audio(after=end, timeout=25)
    await call.caller.wait_for_message(
        lambda m: m["type"] == "turn" and m["seq"] == reply_seq,
        timeout=25,
        what=f"turn {reply_seq}",
    )
    return Spoken(start, end, reply_at)


def channel_rms(samples: Samples, rate: int, start: float, end: float) -> tuple[float, float]:
    """(left, right) RMS over [start + EDGE, end - EDGE] seconds of the recording."""
    lo, hi = max(0, round((start + EDGE) * rate)), max(0, round((end - EDGE) * rate))
    segment = samples[:, lo:hi].astype(np.float64)
    if segment.shape[1] == 0:
        return 0.0, 0.0
    left, right = np.sqrt(np.mean(segment**2, axis=1))
    return float(left), float(right)


def agent_window(heard_at: float) -> tuple[float, float]:
    """Where the agent's line first heard at `heard_at` (in the file's time) surely sounds."""
    return heard_at, heard_at + AGENT_WINDOW + 2 * EDGE


def spool_files(data_dir: Path) -> list[Path]:
    directory = data_dir / SPOOL_DIRNAME
    return sorted(directory.iterdir()) if directory.exists() else []


def journal_recordings(data_dir: Path) -> list[tuple[str, int, str]]:
    """(session_id, part, state) of every recording row, read-only from the worker's journal."""
    uri = f"file:{data_dir / JOURNAL_FILENAME}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        rows = conn.execute(
            "SELECT session_id, part, state FROM recordings ORDER BY session_id, part"
        ).fetchall()
    return [(str(s), int(p), str(state)) for s, p, state in rows]


async def held_recording(stack: Stack, session_id: str, *, timeout: float) -> bytes:
    """Part 1 of attempt 1 of `session_id`, once the backend stub holds it."""
    held = await poll(
        stack.backend.recordings,
        lambda held: bool(held.get(session_id)),
        timeout=timeout,
        what=f"a recording of {session_id}",
    )
    assert [(r["attemptNumber"], r["part"]) for r in held[session_id]] == [(1, 1)], held
    body = await stack.backend.recording(session_id, 1, 1)
    assert hashlib.sha256(body).hexdigest() == held[session_id][0]["sha256"]
    return body


def decoded(body: bytes) -> tuple[Samples, int]:
    """PyAV's reading of the upload: Opus, stereo (decode_stereo checks every frame's layout)."""
    samples, rate, codec = decode_stereo(body)
    assert codec == "opus", codec
    assert samples.shape[0] == 2, samples.shape
    return samples, rate


def header(request: dict[str, Any], name: str) -> str | None:
    """A header of a request the backend stub recorded, whatever its case."""
    return next((v for k, v in request["headers"].items() if k.lower() == name.lower()), None)


def seconds_held(body: bytes) -> float:
    """Seconds of audio PyAV decodes from `body` (0 for a file with no Ogg page)."""
    if not body.startswith(b"OggS"):
        return 0.0
    samples, rate = decoded(body)
    return float(samples.shape[1] / rate)


async def session_routes(stack: Stack, session_id: str) -> list[str]:
    """The routes of the backend requests about one session, in order."""
    requests = await stack.backend.requests()
    return [r["route"] for r in requests if f"/sessions/{session_id}/" in r["path"]]


# ------------------------------------------------------------------------------- scenarios
async def test_unrecorded_then_recorded_call_on_one_worker(stack: Stack) -> None:
    """Without `record`: transcript, no recording, nothing written. With `record: true`: the
    transcript, then one recording PUT (attempt 1, part 1) of the whole call, caller left and
    agent right; the spool empty once acknowledged."""
    async with asyncio.timeout(TEST_BUDGET):
        started = time.monotonic()
        worker = await stack.start_worker()
        data_dir = stack.data_dir

        # 1. no `record` in the metadata
        plain = await start_call(stack, "room-plain", "caller-1", call_metadata("caller-1", "u1"))
        await speak_and_hear_reply(plain, reply_seq=3)
        await hang_up(plain)
        [held_plain] = await accepted_transcripts(stack, plain.session_id)
        assert_transcript_matches(
            held_plain, turns_of(plain.caller), complete=True, ended_reason="caller_hangup"
        )
        await wait_for_record(worker, "call.ended", timeout=10, job_id=plain.job_id)
        assert await stack.backend.requests("put_recording") == [], "no PUT at all"
        assert await stack.backend.recordings() == {}
        assert not (data_dir / SPOOL_DIRNAME).exists(), spool_files(data_dir)
        assert journal_recordings(data_dir) == [], "not even journaled"
        assert find_records(worker, "recording.started", job_id=plain.job_id) == []
        plain_s = time.monotonic() - started

        # 2. `record: true`
        recorded = await start_call(
            stack, "room-rec", "caller-2", call_metadata("caller-2", "u2", record=True)
        )
        rec_started = await wait_for_record(
            worker, "recording.started", timeout=5, job_id=recorded.job_id
        )
        origin = record_time(rec_started)  # the file's zero, on the wall clock
        at = in_file(recorded.caller, origin)
        spoken = await speak_and_hear_reply(recorded, reply_seq=3)
        hung_up_at = recorded.caller.now()
        await hang_up(recorded)
        turns = turns_of(recorded.caller)
        assert_seq_continuous(turns)
        assert [t["text"] for t in turns][1:] == [HEARD, REPLY]
        [held_transcript] = await accepted_transcripts(stack, recorded.session_id)
        assert_transcript_matches(
            held_transcript, turns, complete=True, ended_reason="caller_hangup"
        )
        body = await held_recording(stack, recorded.session_id, timeout=20)
        delivered = await wait_for_record(
            worker, "recording.delivered", timeout=10, job_id=recorded.job_id
        )
        sealed = find_records(worker, "recording.sealed", job_id=recorded.job_id)

        # the transcript first, then one PUT of the file as the contract says
        routes = await session_routes(stack, recorded.session_id)
        assert routes == ["post_transcript", "put_recording"], routes
        [put] = await stack.backend.requests("put_recording")
        assert put["path"] == (
            f"/api/internal/sessions/{recorded.session_id}/recording?attemptNumber=1&part=1"
        )
        assert header(put, "Content-Type") == "audio/ogg"
        assert header(put, "Idempotency-Key") == hashlib.sha256(body).hexdigest()
        assert put["keyOk"] and put["size"] == len(body) == delivered["size"]

        # PyAV: stereo Opus, as long as the call
        samples, rate = decoded(body)
        duration = samples.shape[1] / rate
        lived = hung_up_at - recorded.greeting_at  # first agent audio heard -> hang-up sent
        worker_span = record_time(sealed[0]) - origin if sealed else float("nan")
        print(
            f"recorded call: file {duration:.2f}s, caller's call (greeting heard -> hang-up) "
            f"{lived:.2f}s, worker's recording.started -> recording.sealed {worker_span:.2f}s, "
            f"{len(body)} bytes"
        )
        assert lived <= duration <= lived + DURATION_TOLERANCE, (duration, lived)

        # caller left, agent right: the windows as the caller lived them, in the file's time
        greeting = channel_rms(samples, rate, *agent_window(at(recorded.greeting_at)))
        utterance = channel_rms(samples, rate, at(spoken.start), at(spoken.end))
        reply = channel_rms(samples, rate, *agent_window(at(spoken.reply_at)))
        print(f"rms (left, right): greeting {greeting}, caller {utterance}, reply {reply}")
        assert greeting[1] > 0.01 and greeting[1] > CHANNEL_RATIO * greeting[0], greeting
        assert utterance[0] > 0.01 and utterance[0] > CHANNEL_RATIO * utterance[1], utterance
        assert reply[1] > 0.01 and reply[1] > CHANNEL_RATIO * reply[0], reply

        # acknowledged: the file is gone, the journal row a tombstone; the first call's none
        assert spool_files(data_dir) == []
        assert journal_recordings(data_dir) == [(recorded.session_id, 1, "delivered")]
        print(
            f"recording e2e: unrecorded call {plain_s:.1f}s, "
            f"whole scenario {time.monotonic() - started:.1f}s"
        )


async def test_sigkill_mid_call_the_restarted_worker_uploads_what_was_recorded(
    stack: Stack,
) -> None:
    """A recorded call's container dies (SIGKILL of the worker's process group) after the
    greeting and one caller turn; a fresh worker on the same AGENT_DATA_DIR delivers the
    crashed transcript and then the recording as the killed process left it, at start: the
    stub holds part 1, PyAV decodes it, the greeting is in it (agent on the right)."""
    async with asyncio.timeout(TEST_BUDGET):
        started = time.monotonic()
        worker = await stack.start_worker()
        call = await start_call(
            stack, "room-rec-crash", "caller-1", call_metadata("caller-1", "u1", record=True)
        )
        rec_started = await wait_for_record(
            worker, "recording.started", timeout=5, job_id=call.job_id
        )
        origin = record_time(rec_started)
        at = in_file(call.caller, origin)
        await speak_and_hear_reply(call, reply_seq=3)
        turns = turns_of(call.caller)
        assert_seq_continuous(turns)

        killed_at = time.time()
        worker.kill_group()  # the container dies: no hook of any process runs
        assert not worker.alive()
        ran = killed_at - origin  # the recorder's start -> the kill
        assert await stack.backend.recordings() == {}
        assert journal_recordings(stack.data_dir) == [(call.session_id, 1, "recording")]
        # what the killed process left on disk, as PyAV reads it (the figure for the docs)
        [left_behind] = spool_files(stack.data_dir)
        left = left_behind.read_bytes()
        kept = seconds_held(left)
        print("recording_kept_s", round(kept, 2))
        print("call_before_kill_s", round(ran, 2))
        print(f"recording left at the kill: {len(left)} bytes, {ran - kept:.2f}s lost")

        restarted = await stack.start_worker(name="worker-restarted")
        [held] = await accepted_transcripts(stack, call.session_id, timeout=25)
        assert_transcript_matches(held, turns, complete=False, ended_reason="crashed")
        # recovery's summary comes after its upload, whatever the backend answered
        recovered = await wait_for_record(restarted, "recording.recovered", timeout=15)
        assert "job_id" not in recovered, "by the main process, at worker start"
        outcome = {k: recovered[k] for k in ("claimed", "delivered", "rejected", "deferred")}
        assert outcome == {"claimed": 1, "delivered": 1, "rejected": 0, "deferred": 0}, (
            f"{outcome}; the killed process left {len(left)} bytes: "
            + str(find_records(restarted, "recording.rejected"))
        )
        body = await held_recording(stack, call.session_id, timeout=5)
        assert body == left, "the file as the killed process left it"
        routes = await session_routes(stack, call.session_id)
        assert routes == ["post_transcript", "put_recording"], routes

        samples, rate = decoded(body)
        assert ran - KILL_LOSS_BOUND <= kept <= ran + 0.2, (kept, ran)
        greeting = channel_rms(samples, rate, *agent_window(at(call.greeting_at)))
        print(f"rms (left, right) of the greeting kept: {greeting}")
        assert greeting[1] > 0.01 and greeting[1] > CHANNEL_RATIO * greeting[0], greeting

        assert spool_files(stack.data_dir) == []
        assert journal_recordings(stack.data_dir) == [(call.session_id, 1, "delivered")]
        print(f"recording SIGKILL + restart took {time.monotonic() - started:.1f}s")
