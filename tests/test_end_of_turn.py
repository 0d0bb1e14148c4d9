"""agent/end_of_turn.py: the end-of-turn model predicting in the worker's inference process.

The oracle is the library's own in-process model (`livekit.local_inference.EOT`) on the same
audio: the shared process must give the same P(end) the job process would have computed itself.
The IPC is the library's real one (`InferenceProcExecutor`, a real child process); the transport
is driven through the library's real turn-detector stream.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import struct
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit import local_inference, rtc
from livekit.agents.ipc.inference_proc_executor import InferenceProcExecutor
from structlog.testing import capture_logs

from agent import end_of_turn
from agent.end_of_turn import (
    METHOD,
    EndOfTurnRunner,
    SharedTurnDetector,
    decode_probability,
    no_executor,
)

TURNS = Path(__file__).parent / "audio" / "turns"
WINDOW = 19200  # the model's receptive field: 1.2 s at 16 kHz (local_inference.EOT_MAX_SAMPLES)


def pcm_of(name: str) -> np.ndarray:
    with wave.open(str(TURNS / name)) as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)


def frames_of(pcm: np.ndarray, ms: int = 10) -> list[rtc.AudioFrame]:
    step = 16 * ms
    return [
        rtc.AudioFrame(pcm[i : i + step].tobytes(), 16000, 1, len(pcm[i : i + step]))
        for i in range(0, len(pcm) - step + 1, step)
    ]


def last_window(pcm: np.ndarray) -> np.ndarray:
    """What the stream holds after `frames_of(pcm)`: the last 1.2 s of the whole frames."""
    return pcm[: len(pcm) // 160 * 160][-WINDOW:]


async def predict_after(detector: SharedTurnDetector, pcm: np.ndarray) -> float:
    """A stream of `detector` fed `pcm` frame by frame, then asked for P(end) once."""
    stream = detector.stream()
    try:
        for frame in frames_of(pcm):
            stream.push_audio(frame)
        await asyncio.sleep(0.05)  # the stream's task hands the frames to the transport
        event = await asyncio.wait_for(stream.predict(), 5)
    finally:
        await stream.aclose()
    return event.end_of_turn_probability


@pytest.fixture(scope="module")
def local_model() -> Any:
    local_inference.init_eot()
    return local_inference.EOT()


class RecordingExecutor:
    """The job's inference executor as the transport sees it: records requests, answers with a
    fixed P(end) (or an error, or never)."""

    def __init__(self, answer: float | BaseException | None) -> None:
        self.answer = answer
        self.requests: list[tuple[str, bytes]] = []

    async def do_inference(self, method: str, data: bytes) -> bytes | None:
        self.requests.append((method, data))
        if self.answer is None:
            await asyncio.Event().wait()  # a stuck inference process
        if isinstance(self.answer, BaseException):
            raise self.answer
        return struct.pack("<d", self.answer)


def test_the_runner_gives_the_in_process_models_probability(local_model: Any) -> None:
    runner = EndOfTurnRunner()
    runner.initialize()
    for name in ("statement_frustrating.wav", "pause_um_1p5.wav"):
        window = pcm_of(name)[-WINDOW:]
        shared = decode_probability(runner.run(window.tobytes()))
        assert shared == pytest.approx(float(local_model.predict(window)), abs=1e-6)
        assert 0.0 <= shared <= 1.0


def test_a_malformed_answer_is_an_error_not_a_probability() -> None:
    with pytest.raises(ValueError, match="P\\(end\\)"):
        decode_probability(b"\x00\x01")
    with pytest.raises(ValueError):
        decode_probability(None)


async def test_the_stream_sends_the_last_1_2_s_and_takes_the_processes_answer() -> None:
    executor = RecordingExecutor(0.73)
    pcm = pcm_of("statement_frustrating.wav")
    probability = await predict_after(SharedTurnDetector(executor=lambda: executor), pcm)
    assert probability == pytest.approx(0.73)
    [(method, data)] = executor.requests
    assert method == METHOD
    sent = np.frombuffer(data, dtype=np.int16)
    assert len(sent) == WINDOW
    assert np.array_equal(sent, last_window(pcm))


async def test_a_failed_prediction_holds_the_turn_and_warns_once() -> None:
    executor = RecordingExecutor(RuntimeError("inference of roleplay.end_of_turn failed: boom"))
    stream = SharedTurnDetector(executor=lambda: executor).stream()
    try:
        for frame in frames_of(pcm_of("statement_frustrating.wav")[:16000]):
            stream.push_audio(frame)
        with capture_logs() as logs:
            first = await asyncio.wait_for(stream.predict(), 2)
            second = await asyncio.wait_for(stream.predict(), 2)
    finally:
        await stream.aclose()
    assert first.end_of_turn_probability == 0.0  # not finished: the max delay ends the turn
    assert second.end_of_turn_probability == 0.0
    warned = [e for e in logs if e["event"] == "end_of_turn.prediction_failed"]
    assert len(warned) == 1
    assert warned[0]["log_level"] == "warning"
    assert warned[0]["error_type"] == "RuntimeError"


async def test_a_closed_stream_counts_its_predictions_once() -> None:
    executor = RecordingExecutor(0.5)
    stream = SharedTurnDetector(executor=lambda: executor).stream()
    with capture_logs() as logs:
        stream.push_audio(frames_of(pcm_of("statement_frustrating.wav")[:1600])[0])
        await asyncio.wait_for(stream.predict(), 2)
        await asyncio.wait_for(stream.predict(), 2)
        await stream.aclose()
        await stream.aclose()
    closed = [e for e in logs if e["event"] == "end_of_turn.stream_closed"]
    assert len(closed) == 1
    assert closed[0]["predictions"] == 2 and closed[0]["failed"] == 0
    assert closed[0]["where"] == "inference_process"


async def test_a_stuck_inference_process_times_out_as_not_finished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(end_of_turn, "PREDICTION_TIMEOUT", 0.1)
    executor = RecordingExecutor(None)
    stream = SharedTurnDetector(executor=lambda: executor).stream()
    try:
        stream.push_audio(frames_of(pcm_of("statement_frustrating.wav")[:1600])[0])
        event = await asyncio.wait_for(stream.predict(), 2)
    finally:
        await stream.aclose()
    assert event.end_of_turn_probability == 0.0


async def test_without_a_worker_the_stream_predicts_in_this_process(local_model: Any) -> None:
    pcm = pcm_of("statement_frustrating.wav")
    probability = await predict_after(SharedTurnDetector(executor=no_executor), pcm)
    expected = float(local_model.predict(last_window(pcm)))
    assert probability == pytest.approx(expected, abs=1e-6)


async def test_the_worker_inference_process_answers_as_the_local_model(local_model: Any) -> None:
    # the library's real inference process (spawned: the test process is not a forkserver) with
    # the runner the worker registers; the job side of the IPC is the library's `_InfClient`,
    # which forwards the same request through the main process
    executor = InferenceProcExecutor(
        runners={METHOD: EndOfTurnRunner},
        initialize_timeout=60,
        close_timeout=5,
        memory_warn_mb=2000,
        memory_limit_mb=0,
        ping_interval=5,
        ping_timeout=60,
        high_ping_threshold=2.5,
        mp_ctx=multiprocessing.get_context("spawn"),
        loop=asyncio.get_running_loop(),
        http_proxy=None,
    )
    await executor.start()
    try:
        await executor.initialize()
        pcm = pcm_of("question_pain.wav")
        probability = await predict_after(SharedTurnDetector(executor=lambda: executor), pcm)
    finally:
        await executor.aclose()
    expected = float(local_model.predict(last_window(pcm)))
    assert probability == pytest.approx(expected, abs=1e-6)
