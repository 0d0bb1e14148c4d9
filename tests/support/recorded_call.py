"""A session-level call as the worker runs one, recorded or not, for the recording tests: a real
AgentSession, the worker's own wiring (`open_journal`, `attach_transcript`, the persona's
`before_speaking` hook from `recording_hook`, `finish`), a caller that plays a tone without end
and the agent's TTS another tone, delivering to the loopback backend stub.

Also runnable as a script (`python recorded_call.py DATA_DIR FSIZE_BYTES`): the same recorded
call under RLIMIT_FSIZE, so that every write past FSIZE_BYTES fails as on a full disk; prints
one JSON line with what the backend stub then holds.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script: make the project importable without relying on the caller's environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from livekit.agents import AgentSession
from pydantic import SecretStr

from agent.backend import HttpBackend
from agent.call.finish import finish
from agent.call.recording import recording_hook
from agent.call.session import attach_transcript
from agent.call.state import Call
from agent.journal import Journal
from agent.persona import PersonaAgent
from agent.prompts import load_scenario
from tests.support.backend_stub import BackendStub, RecordedRequest
from tests.support.calls import SESSION, open_default_call
from tests.support.fakes import CaptureAudioOutput, CaptureRoom, FakeLLM, FakeTTS, WavAudioInput
from tests.support.ogg import write_tone_wav
from tests.support.settings import make_settings

KEY = "internal-service-key-for-tests"
CALLER_HZ = 440.0
AGENT_HZ = 1250.0


def caller_wav(data_dir: Path) -> Path:
    """The caller's minute of tone, beside the data directory (written once)."""
    wav = data_dir.parent / f"{data_dir.name}-caller.wav"
    return wav if wav.exists() else write_tone_wav(wav, 60.0, CALLER_HZ)


@dataclass
class RecordedCall:
    started: float
    ended: float
    recording: bytes | None  # what the stub holds for S1, attempt 1, part 1 (2 when resumed)
    uploads: list[RecordedRequest]
    transcript_turns: int | None  # the best transcript the stub holds (None: none)
    spool_file: Path | None  # where the recording was written
    call: Call


async def run_call(
    data_dir: Path,
    *,
    record: bool,
    seconds: float,
    once_speaking: Callable[[], None] | None = None,
    resumed: bool = False,
    **settings_env: str,
) -> RecordedCall:
    """One call of about `seconds`, hung up by the caller, then `finish` as the worker does.
    `once_speaking` runs when the persona is about to speak (the recording has started);
    `resumed`: the call continues an earlier run's (held by the backend, as after a re-dispatch)."""
    scenario = load_scenario("default")
    settings = make_settings(AGENT_DATA_DIR=str(data_dir), **settings_env)
    wav = caller_wav(data_dir)
    async with BackendStub(key=KEY) as stub:
        stub.add_session(SESSION)
        backend = HttpBackend(stub.url, SecretStr(KEY))
        journal = Journal.in_dir(data_dir)
        room = CaptureRoom()
        call = await open_default_call(backend, journal, room, record=record)
        if resumed:
            call.resumed_from = "backend"
        session: AgentSession[None] = AgentSession(
            llm=FakeLLM("unused"),
            tts=FakeTTS(frequency=AGENT_HZ, amplitude=0.3, max_duration=10.0),
            turn_handling={"turn_detection": None},
        )
        session.input.audio = WavAudioInput(wav, lead_silence=0.0)
        session.output.audio = CaptureAudioOutput()
        call.agent_session = session
        attach_transcript(call, session, room.as_room())
        started = time.time()
        hook = recording_hook(call, settings)
        entered = asyncio.Event()

        async def before_speaking(agent_session: AgentSession[Any]) -> None:
            if hook is not None:
                await hook(agent_session)  # the worker's own hook, then a signal for the test
            entered.set()

        await session.start(PersonaAgent(scenario, before_speaking=before_speaking))
        await asyncio.wait_for(entered.wait(), 5)  # the persona's on_enter runs it
        if once_speaking is not None:
            once_speaking()
        spool_file = call.recording.path if call.recording is not None else None
        await asyncio.sleep(seconds - (time.time() - started))
        await session.aclose()
        call.end_reason("caller_hangup")
        ended = time.time()
        await finish(call, settings)
        await backend.aclose()
        journal.close()
        best = stub.best_transcript(SESSION.id)
        return RecordedCall(
            started=started,
            ended=ended,
            recording=stub.recording(SESSION.id, 1, 2 if resumed else 1),
            uploads=stub.requests_for("put_recording"),
            transcript_turns=None if best is None else int(best.body["turnCount"]),
            spool_file=spool_file,
            call=call,
        )


def _full_disk_main(data_dir: Path, limit: int) -> None:
    """The disk fills once the call is under way: from then on every write that would take a
    file past `limit` bytes fails with EFBIG (SIGXFSZ ignored), for the recording's file and
    for the journal's (its WAL) alike."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    data_dir.mkdir(parents=True, exist_ok=True)
    caller_wav(data_dir)

    def fill_the_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    result = asyncio.run(run_call(data_dir, record=True, seconds=6.0, once_speaking=fill_the_disk))
    spool = result.spool_file
    size = spool.stat().st_size if spool is not None and spool.exists() else None
    print(
        json.dumps(
            {
                "transcript_turns": result.transcript_turns,
                "uploaded": None if result.recording is None else len(result.recording),
                "spool_size": size,
                "ended_reason": result.call.ended_reason,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    _full_disk_main(Path(sys.argv[1]), int(sys.argv[2]))
