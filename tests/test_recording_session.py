"""Session level, a recorded call: a real AgentSession with the worker's recording wiring (the
persona's hook, `finish`), a caller playing one test tone and the agent's TTS another, and the
backend stub holding what was uploaded. The file is decoded with PyAV, never with our code."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import wave
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from livekit.agents import AgentSession
from pydantic import SecretStr

from agent.backend import HttpBackend
from agent.call.finish import finish
from agent.call.recording import recording_hook
from agent.call.session import attach_transcript
from agent.journal import Journal
from agent.persona import PersonaAgent
from agent.prompts import load_scenario
from tests.support.backend_stub import BackendStub
from tests.support.calls import SESSION, open_default_call
from tests.support.fakes import (
    CaptureAudioOutput,
    CaptureRoom,
    FakeLLM,
    FakeTTS,
    WavAudioInput,
    tone_pcm16,
)
from tests.support.settings import make_settings

KEY = "internal-service-key-for-tests"
CALLER_HZ = 440.0
AGENT_HZ = 1250.0
CALL_SECONDS = 4.0


def decode_stereo(data: bytes) -> tuple[npt.NDArray[np.float32], int, str]:
    """(samples as [2, n] float32, sample rate, codec name) of an Ogg stream, by PyAV."""
    with av.open(io.BytesIO(data), format="ogg") as container:
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        chunks = []
        rate = stream.rate
        for frame in container.decode(stream):
            assert frame.layout.name == "stereo"
            array = frame.to_ndarray()
            # planar [2, n] or packed [1, 2n]
            chunks.append(array if array.shape[0] == 2 else array.reshape(-1, 2).T)
    samples = np.concatenate(chunks, axis=1).astype(np.float32)
    return samples, rate, codec


def tone_power(channel: npt.NDArray[np.float32], rate: int, hz: float) -> float:
    """Spectral power within 20 Hz of `hz`."""
    spectrum = np.abs(np.fft.rfft(channel)) ** 2
    freqs = np.fft.rfftfreq(len(channel), 1 / rate)
    return float(spectrum[(freqs > hz - 20) & (freqs < hz + 20)].sum())


def write_tone_wav(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(24000)
        pcm = tone_pcm16(seconds, sample_rate=24000, frequency=CALLER_HZ, amplitude=0.3)
        handle.writeframes(pcm.tobytes())
    return path


async def test_a_recorded_call_is_stereo_ogg_opus_caller_left_agent_right(
    tmp_path: Path,
) -> None:
    scenario = load_scenario("default")
    settings = make_settings(AGENT_DATA_DIR=str(tmp_path))
    async with BackendStub(key=KEY) as stub:
        stub.add_session(SESSION)
        backend = HttpBackend(stub.url, SecretStr(KEY))
        journal = Journal.in_dir(tmp_path)
        room = CaptureRoom()
        call = await open_default_call(backend, journal, room, record=True)
        session: AgentSession[None] = AgentSession(
            llm=FakeLLM("unused"),
            tts=FakeTTS(frequency=AGENT_HZ, amplitude=0.3, max_duration=10.0),
            turn_handling={"turn_detection": None},
        )
        session.input.audio = WavAudioInput(
            write_tone_wav(tmp_path / "caller.wav", 30.0), lead_silence=0.0
        )
        session.output.audio = CaptureAudioOutput()
        call.agent_session = session
        attach_transcript(call, session, room.as_room())
        started = time.time()
        await session.start(PersonaAgent(scenario, before_speaking=recording_hook(call, settings)))
        async with asyncio.timeout(2):  # the persona's on_enter starts it
            while call.recording is None:
                await asyncio.sleep(0.01)
        spool_file = call.recording.path
        assert spool_file.stat().st_mode & 0o777 == 0o600  # the caller's voice: private
        await asyncio.sleep(CALL_SECONDS - (time.time() - started))
        await session.aclose()
        call.end_reason("caller_hangup")
        ended = time.time()
        await finish(call, settings)
        await backend.aclose()

        uploads = stub.requests_for("put_recording")
        body = stub.recording(SESSION.id, 1, 1)
        assert body is not None and len(uploads) == 1
    request = uploads[0]
    assert request.header("Content-Type") == "audio/ogg"
    assert request.header("Idempotency-Key") == hashlib.sha256(body).hexdigest()
    assert request.path == "/api/internal/sessions/S1/recording?attemptNumber=1&part=1"
    samples, rate, codec = decode_stereo(body)
    assert codec == "opus" and samples.shape[0] == 2
    duration = samples.shape[1] / rate
    assert abs(duration - (ended - started)) <= 0.5, (duration, ended - started)
    left, right = samples
    # the caller's tone on the left only, the agent's on the right only
    assert tone_power(left, rate, CALLER_HZ) > 100 * tone_power(right, rate, CALLER_HZ)
    assert tone_power(right, rate, AGENT_HZ) > 100 * tone_power(left, rate, AGENT_HZ)
    # delivered: the journal row is a tombstone and the spool file is gone
    assert not spool_file.exists()
    assert journal.recording_rows() == []
    assert stub.best_transcript("S1") is not None  # the transcript went first, as ever
    journal.close()
