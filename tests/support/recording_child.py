"""A process that records a call and is then killed (run with `sys.executable`).

    recording_child.py DATA_DIR WAV

Journals call AJ_K (session S1, attempt 1), starts its recording through the worker's own
`CallRecording.start` around a session whose caller plays WAV in real time (the agent's side
stays silent), and prints one JSON line `{"started": t, "path": p}` once the first audio has
been placed; then it records until it is killed (the test sends SIGKILL: no hook runs).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

# Run as a script: make the project importable without relying on the caller's environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from livekit.agents import AgentSession

from agent.journal import Journal
from agent.models import utc_now
from agent.recording import CallRecording
from tests.support.fakes import CaptureAudioOutput, WavAudioInput


async def main(data_dir: Path, wav: Path) -> None:
    journal = Journal.in_dir(data_dir)
    journal.open_call("AJ_K", session_id="S1", attempt_number=1, started_at=utc_now())
    session: AgentSession[None] = AgentSession()
    session.input.audio = WavAudioInput(wav, lead_silence=0.0)
    session.output.audio = CaptureAudioOutput()
    recording = await CallRecording.start(
        session,
        journal,
        call_id="AJ_K",
        session_id="S1",
        attempt_number=1,
        resumed=False,
        data_dir=data_dir,
        max_bytes=64 << 20,
    )
    # what the session's audio forwarding would do: pull the caller's frames through the IO
    audio = session.input.audio
    assert audio is not None
    first = True
    async for _frame in audio:
        if first:
            first = False
            started = recording.started_at.timestamp()
            print(json.dumps({"started": started, "path": str(recording.path)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
