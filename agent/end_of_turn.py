"""The end-of-turn model runs once per worker, in the library's inference process, not in every
job process.

Rule: the model's weights (~244 MB RSS) live in one process per worker: the inference process
the library starts when a runner is registered (`register_runner`, in the main process before the
worker starts; the library's health check fails while that process is down). A job process keeps
only its own 1.2 s audio buffer and, when its turn-detector stream asks for a prediction (about
once per end of the caller's speech), sends that buffer's snapshot (38 kB of 16 kHz PCM) over the
job's IPC and gets P(end) back. A job process therefore neither maps the weights nor pays the
model's working memory; with the weights preloaded in the forkserver instead (the library's
default) each job process counted a share of them and of the model's arena in its PSS, 179-212 MB
against a goal of 150 (docs/performance.md).

Where no worker hosts the model (the in-process benches and tests, which build sessions without a
job), `SharedTurnDetector` runs the library's own in-process transport: same model, same
thresholds, same predictions.

The transport follows the library's `_LocalTransport` (livekit-agents 1.8.9): the stream, the
buffer and the prediction hand-back are the library's private API, pinned by the lock and by
tests/test_end_of_turn.py. A failed or late prediction counts as "not finished" (P = 0), as the
library's local transport does: the turn then ends at the endpointing max delay, never early.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from livekit import local_inference, rtc
from livekit.agents import inference, utils
from livekit.agents.inference.eot.base import (
    DEFAULT_PREDICTION_TIMEOUT,
    DEFAULT_SAMPLE_RATE,
    _BaseStreamingTurnDetectorStream,
)
from livekit.agents.inference.eot.transports import _CLIENT_BUFFER_SAMPLES
from livekit.agents.inference_runner import _InferenceRunner
from livekit.agents.ipc.inference_executor import InferenceExecutor
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

from agent.log import get_logger

log = get_logger(__name__)

METHOD = "roleplay.end_of_turn"
# the library stops waiting for a prediction after this (P = 0 then); the request is dropped too
PREDICTION_TIMEOUT = DEFAULT_PREDICTION_TIMEOUT
_PROBABILITY = struct.Struct("<d")


class EndOfTurnRunner(_InferenceRunner):
    """The model in the inference process: int16 PCM (at most 1.2 s at 16 kHz) in, P(end) out."""

    INFERENCE_METHOD: ClassVar[str] = METHOD

    def initialize(self) -> None:
        # Nothing is logged here: the library gives the inference process no log forwarding
        # (its records would reach stderr unformatted). A failure reaches each job instead, as
        # the error of its prediction (`end_of_turn.prediction_failed`).
        local_inference.init_eot()
        self._local = threading.local()  # one EOT handle per executor thread

    def run(self, data: bytes) -> bytes:
        eot = getattr(self._local, "eot", None)
        if eot is None:
            eot = self._local.eot = local_inference.EOT()
        probability = float(eot.predict(np.frombuffer(data, dtype=np.int16)))
        return _PROBABILITY.pack(probability)


def register_runner() -> None:
    """In the main process, before the worker starts: the worker then starts the inference
    process, and job processes reach the model through their job's inference executor."""
    if METHOD not in _InferenceRunner.registered_runners:
        _InferenceRunner.register_runner(EndOfTurnRunner)


def decode_probability(data: bytes | None) -> float:
    if data is None or len(data) != _PROBABILITY.size:
        raise ValueError(f"expected {_PROBABILITY.size} bytes of P(end), got {data!r:.40}")
    return float(_PROBABILITY.unpack(data)[0])


class ProcessTransport:
    """A turn-detector stream's transport that predicts in the inference process."""

    def __init__(self, executor: InferenceExecutor) -> None:
        self._executor = executor
        self._buf = utils.AudioArrayBuffer(
            buffer_size=_CLIENT_BUFFER_SAMPLES, sample_rate=DEFAULT_SAMPLE_RATE
        )
        self._stream_ref: weakref.ref[_BaseStreamingTurnDetectorStream] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned = False
        self._predictions = 0
        self._failed = 0
        self._closed = False

    @property
    def session_id(self) -> str | None:
        return None

    def attach(self, stream: _BaseStreamingTurnDetectorStream) -> None:
        self._stream_ref = weakref.ref(stream)

    def run_inference(self, request_id: str) -> None:
        task = asyncio.create_task(self._predict(request_id, self._buf.read()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _predict(self, request_id: str, pcm: np.ndarray) -> None:
        probability = 0.0
        started = time.monotonic()
        self._predictions += 1
        try:
            data = await asyncio.wait_for(
                self._executor.do_inference(METHOD, pcm.tobytes()),  # int16 already
                PREDICTION_TIMEOUT,
            )
            probability = decode_probability(data)
        except Exception as error:  # the boundary with the inference process
            self._failed += 1
            if not self._warned:  # once per stream: a dead process would repeat it every turn
                self._warned = True
                log.warning(
                    "end_of_turn.prediction_failed",
                    error_type=type(error).__name__,
                    error=str(error)[:200],
                )
        stream = self._stream_ref() if self._stream_ref is not None else None
        if stream is not None:
            stream._resolve_prediction(
                request_id, probability, inference_duration=time.monotonic() - started
            )

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        self._buf.push_frame(frame)

    def flush(self) -> None:
        if len(self._buf) > 0:
            self._buf.shift(len(self._buf))

    def detach(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        if not self._closed:  # the stream detaches on close (and again on a second close)
            self._closed = True
            log.info(
                "end_of_turn.stream_closed",
                where="inference_process",
                predictions=self._predictions,
                failed=self._failed,
            )

    async def run(self) -> None:
        stream = self._stream_ref() if self._stream_ref is not None else None
        if stream is not None:
            await stream._drain_audio_channel()


class SharedTurnDetector(inference.TurnDetector):
    """`turn-detector-v1-mini` predicting in the worker's inference process when `executor`
    gives one (a job process of a worker that registered the runner), in this process
    otherwise."""

    def __init__(
        self,
        *,
        executor: Callable[[], InferenceExecutor | None],
        **kwargs: Any,
    ) -> None:
        super().__init__(version="v1-mini", **kwargs)
        self._executor = executor

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> _BaseStreamingTurnDetectorStream:
        executor = self._executor()
        if executor is None:
            return super().stream(conn_options=conn_options)
        return _BaseStreamingTurnDetectorStream(
            detector=self,
            opts=self._opts,
            transport=ProcessTransport(executor),
            model=self.model,
            local_fallback=False,  # nothing to fall back from: this is the local model
        )


def no_executor() -> None:
    """Outside a worker: predict in this process."""
    return None


def job_inference_executor() -> InferenceExecutor | None:
    """The running job's inference executor, None outside a job (benches, tests)."""
    from livekit.agents import get_job_context

    try:
        return get_job_context().inference_executor
    except RuntimeError:
        return None


__all__ = [
    "METHOD",
    "EndOfTurnRunner",
    "ProcessTransport",
    "SharedTurnDetector",
    "decode_probability",
    "job_inference_executor",
    "no_executor",
    "register_runner",
]
