"""A process killed mid-call (SIGKILL: no hook runs) leaves its recording on disk, playable up
to shortly before the kill, and the next recovery uploads it: the journal row the dead process
wrote before its file is what finds it."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from pydantic import SecretStr

from agent.backend import HttpBackend
from agent.journal import Journal
from agent.recording import recover_recordings
from tests.support.backend_stub import BackendStub
from tests.support.calls import SESSION
from tests.support.ogg import decode_stereo, tone_power, write_tone_wav

KEY = "internal-service-key-for-tests"
CHILD = Path(__file__).parent / "support" / "recording_child.py"
PROJECT = Path(__file__).resolve().parents[1]
CALLER_HZ = 440.0
RECORD_SECONDS = 6.0
# What a kill may cost at the end: the encoder writes every 2.5 s (the library's
# WRITE_INTERVAL) and the Ogg muxer holds up to a page; measured here ~2.5-4 s.
MAX_LOST_SECONDS = 5.0


async def test_a_killed_process_s_recording_plays_up_to_the_kill_and_recovery_uploads_it(
    tmp_path: Path,
) -> None:
    wav = write_tone_wav(tmp_path / "caller.wav", 60.0, CALLER_HZ)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(tmp_path),
        str(wav),
        stdout=asyncio.subprocess.PIPE,
        cwd=PROJECT,
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(60):
            line = b""
            while not line.startswith(b"{"):  # log lines may come first
                line = await child.stdout.readline()
                assert line, "the recording child exited early"
        info = json.loads(line)
        await asyncio.sleep(RECORD_SECONDS)
    finally:
        killed_at = time.time()
        child.kill()
        await child.wait()
    path = Path(info["path"])
    left_behind = await asyncio.to_thread(path.read_bytes)
    samples, rate, codec = decode_stereo(left_behind)
    kept = samples.shape[1] / rate
    ran = killed_at - info["started"]
    print(f"recording_kept_s={kept:.2f} of {ran:.2f} s before the kill")
    assert codec == "opus"
    assert ran - MAX_LOST_SECONDS <= kept <= ran + 0.5
    left, right = samples
    assert tone_power(left, rate, CALLER_HZ) > 100 * tone_power(right, rate, CALLER_HZ)

    async with BackendStub(key=KEY) as stub:
        stub.add_session(SESSION)
        with Journal.in_dir(tmp_path) as journal:
            assert [r.state for r in journal.recording_rows()] == ["recording"]
            async with HttpBackend(stub.url, SecretStr(KEY)) as backend:
                outcomes = await recover_recordings(journal, backend, deadline=10)
            assert [o.status for o in outcomes] == ["delivered"]
            assert journal.recording_rows() == []
        assert stub.recording("S1", 1, 1) == left_behind  # the file as the process left it
    assert not await asyncio.to_thread(path.exists)
