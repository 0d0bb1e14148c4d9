"""Session level, a recorded call: a real AgentSession with the worker's recording wiring (the
persona's hook, `finish`), a caller playing one test tone and the agent's TTS another, and the
backend stub holding what was uploaded. The file is decoded with PyAV, never with our code."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from agent.backend import HttpBackend
from agent.journal import Journal, Owner
from agent.journal.ownership import current_boot_id, current_host
from agent.recording import recorder, recover_recordings
from tests.support.backend_stub import BackendStub
from tests.support.calls import SESSION
from tests.support.ogg import decode_stereo, tone_power
from tests.support.recorded_call import AGENT_HZ, CALLER_HZ, run_call

KEY = "internal-service-key-for-tests"
PROJECT = Path(__file__).resolve().parents[1]
FULL_DISK_CHILD = PROJECT / "tests" / "support" / "recorded_call.py"


async def test_a_recorded_call_is_stereo_ogg_opus_caller_left_agent_right(
    tmp_path: Path,
) -> None:
    result = await run_call(tmp_path / "data", record=True, seconds=4.0)
    body = result.recording
    assert body is not None and len(result.uploads) == 1
    request = result.uploads[0]
    assert request.header("Content-Type") == "audio/ogg"
    assert request.header("Idempotency-Key") == hashlib.sha256(body).hexdigest()
    assert request.path == "/api/internal/sessions/S1/recording?attemptNumber=1&part=1"
    samples, rate, codec = decode_stereo(body)
    assert codec == "opus" and samples.shape[0] == 2
    duration = samples.shape[1] / rate
    assert abs(duration - (result.ended - result.started)) <= 0.5
    left, right = samples
    # the caller's tone on the left only, the agent's on the right only
    assert tone_power(left, rate, CALLER_HZ) > 100 * tone_power(right, rate, CALLER_HZ)
    assert tone_power(right, rate, AGENT_HZ) > 100 * tone_power(left, rate, AGENT_HZ)
    # delivered after the transcript: the spool file is gone
    assert result.transcript_turns == 1
    assert result.spool_file is not None and not result.spool_file.exists()


async def test_the_spool_file_is_private_while_the_call_records(tmp_path: Path) -> None:
    modes: list[int] = []
    original = recorder.CallRecording.watch_size

    async def watch_size(self: recorder.CallRecording) -> None:
        modes.append(self.path.stat().st_mode & 0o777)
        modes.append(self.path.parent.stat().st_mode & 0o777)
        await original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recorder.CallRecording, "watch_size", watch_size)
        await run_call(tmp_path / "data", record=True, seconds=1.0)
    assert modes == [0o600, 0o700]


async def test_a_resumed_call_records_its_own_part(tmp_path: Path) -> None:
    result = await run_call(tmp_path / "data", record=True, seconds=1.5, resumed=True)
    assert [request.path for request in result.uploads] == [
        "/api/internal/sessions/S1/recording?attemptNumber=1&part=2"
    ]
    assert result.recording is not None


async def test_without_consent_nothing_is_recorded_written_or_sent(tmp_path: Path) -> None:
    result = await run_call(tmp_path / "data", record=False, seconds=2.0)
    assert result.recording is None and result.uploads == []
    assert result.spool_file is None
    assert not (tmp_path / "data" / recorder.SPOOL_DIRNAME).exists()
    assert result.transcript_turns == 1


async def test_a_call_over_the_cap_is_cut_there_and_still_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RECORDING_MAX_MB=2 with all but 15 kB of it as headroom: the cut comes a few seconds in
    monkeypatch.setattr(recorder, "CAP_HEADROOM_BYTES", 2 * 1024 * 1024 - 15_000)
    with capture_logs() as logs:
        result = await run_call(tmp_path / "data", record=True, seconds=6.0, RECORDING_MAX_MB="2")
    cuts = [entry for entry in logs if entry["event"] == "recording.cut_at_cap"]
    assert len(cuts) == 1 and cuts[0]["max_bytes"] == 2 * 1024 * 1024
    assert result.recording is not None and result.transcript_turns == 1
    samples, rate, _codec = decode_stereo(result.recording)
    assert 1.0 <= samples.shape[1] / rate <= 4.5  # cut, not the whole 6 s


async def test_a_full_disk_costs_the_recording_never_the_call_or_the_transcript(
    tmp_path: Path,
) -> None:
    # A child process whose disk fills once the call is under way: every file write past
    # 50 kB fails from then on, the recording's and the journal's alike.
    data_dir = tmp_path / "data"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FULL_DISK_CHILD),
        str(data_dir),
        str(50_000),
        stdout=asyncio.subprocess.PIPE,
        cwd=PROJECT,
    )
    output, _ = await asyncio.wait_for(child.communicate(), 120)
    assert child.returncode == 0
    line = next(row for row in output.decode().splitlines() if row.startswith("{"))
    result = json.loads(line)
    # the call ended as the caller ended it and its transcript was delivered
    assert result["transcript_turns"] == 1 and result["ended_reason"] == "caller_hangup"
    # the recording could not be sealed (the journal could not write either): it waits for
    # recovery, its file as far as the disk took it, and is delivered once there is room
    assert result["uploaded"] is None and result["spool_size"] == 50_000
    async with BackendStub(key=KEY) as stub:
        stub.add_session(SESSION)
        with Journal.in_dir(data_dir, owner=gone_owner()) as journal:
            async with HttpBackend(stub.url, SecretStr(KEY)) as backend:
                outcomes = await recover_recordings(journal, backend, deadline=10)
        assert [o.status for o in outcomes] == ["delivered"]
        held = stub.recording("S1", 1, 1)
    assert held is not None and len(held) == 50_000
    samples, rate, _codec = decode_stereo(held)
    assert samples.shape[1] / rate > 1.0  # playable up to the last whole page written


def gone_owner() -> Owner:
    """Recovery runs in another process than the dead child: a claimer that is not it."""
    return Owner(current_host(), current_boot_id(), 1, 1)
